#!/usr/bin/env python3
"""WebSocket load generator (run by hand, prints numbers): N WebSocket clients in K rooms,
senders over REST, and send->deliver latency from the POST start to each client's receipt,
with a broker-only baseline in the same run (the same event published straight to RabbitMQ
and delivered by the relay to the same clients), so the REST/DB share of the latency shows.

    # a stack of its own; the per-user send limit is raised through the generated config
    # (scripts/stack.sh starts the Swift processes with a clean environment, so a plain
    # RATE_LIMIT_SENDS_PER_USER=... in the environment does not reach them)
    STACK_DIR=.run/bench FCGI_PROCESSES=2 WS_RELAYS=1 \\
        SWIFTCHAT_CONF_RATE_LIMIT_SENDS_PER_USER=100000 bash scripts/stack.sh start
    STACK_ENV=.run/bench/stack.env .venv/bin/python bench/ws_load.py            # all, < 3 min
    STACK_ENV=.run/bench/stack.env .venv/bin/python bench/ws_load.py latency \\
        --clients 1000 --rooms 10 --rate 200 --seconds 20                       # (1)
    STACK_ENV=.run/bench/stack.env .venv/bin/python bench/ws_load.py latency --rooms 100,50,10
                                     # (1) for each room count in turn, then a summary table
    STACK_ENV=.run/bench/stack.env .venv/bin/python bench/ws_load.py fanout \\
        --members 1000 --fanout-seconds 10                                      # (2)
    STACK_ENV=.run/bench/stack.env .venv/bin/python bench/ws_load.py idle --idle 10000 --fresh-relay  # (3)
    ... latency --wss        # the clients connect through nginx (wss://) instead of the relay
    STACK_DIR=.run/bench bash scripts/stack.sh stop

Scenarios (the default runs idle, latency, fanout in that order):
  idle     open --idle authenticated sockets (no rooms) and report the relay's RSS before
           and with them (VmRSS of PID_RELAY_1) and KiB per connection; target: 10,000 idle
           sockets under 100 MiB of relay RSS. Also prints the relay's open-files limit
           (/proc/<pid>/limits). A relay that served earlier runs reuses memory it freed, so
           the per-connection figure is only meaningful on a fresh relay: run right after
           the stack starts, or --fresh-relay (restarts relay-1 through scripts/stack.sh).
  latency  --clients users, one socket each, spread over --rooms rooms; senders POST
           /api/rooms/{id}/messages through nginx (https, keep-alive) at --rate sends/s for
           --seconds; target: p99 send->deliver under 25 ms at 200 sends/s, 1,000 clients.
           Sends the server cannot start within --grace s of the end are skipped (reported
           as BEHIND SCHEDULE) so a run stays bounded.
           What p99 costs on 2 cores depends on the host. Each delivery costs the relay
           and a client together 15 to 30 us, nearly all in the kernel's loopback TCP, so
           --rooms decides the load: 1,000 clients in 100 rooms are 2,000 deliveries/s, in
           10 rooms 20,000/s. On the Intel Xeon host of 2026-11-26 (kernel 6.18) the send
           path took about 1 ms of SecantusDB CPU per insert and 10 rooms kept the machine
           about 100 of 200 busy: 9 of 9 10-room runs met the target (p99 4.9 to 8.8 ms),
           300 sends/s still did (10 to 22 ms, 150 busy) and 400 sends/s did not (123 to
           185 ms, 175 to 187 busy). On the AMD EPYC host of earlier sessions the same code
           took about twice the CPU (SecantusDB about 1.9 ms per insert), 10 rooms at 200
           sends/s kept it 163 to 183 busy, past the knee, and most 10-room runs missed
           (p99 16 to 263 ms; 25, 50 and 100 rooms met). HostSpeed (a fixed piece of work:
           about 5 ms of CPU at the vCPUs' full speed, 8 to 9 when other tenants share the
           physical cores) is printed beside every phase, so runs can be compared. Past the
           knee the slow sends (SLOW_SEND_LOG_MS=20 in the stack's config) spend most of
           their time in the MongoDB insert, waiting for CPU. These made no difference
           there: one relay event loop (WS_EVENT_LOOPS=1), 4 instead of 16 FastCGI threads
           per process, clients reading in 1 ms batches, SecantusDB at nice -10 or with a
           0.5 ms GIL switch interval.
  fanout   one room of --members connected members; senders POST back to back over
           --fanout-conns keep-alive connections (or at --fanout-rate) for --fanout-seconds;
           the broker-only phase publishes at --fanout-broker-rate (default 50/s, i.e.
           50,000 deliveries/s asked of the relay); target: at least 50,000 deliveries/s.

Output per scenario: a table, REST column beside the broker-only column: sends, sends/s,
deliveries and deliveries/s, send->deliver p50/p95/p99/max (to the frame's arrival at the
client's socket, below), the same to the moment the client process read it, the p99 of
each second of sending (best/median/worst, and how many seconds were over the target: a
few bad seconds or a tail spread over the run), the publish call (POST or AMQP publish
with confirm) p50/p99, how far sends started behind schedule, the relay's and the clients'
CPU per delivery, and the exactly-once accounting; then the CPU each process group used
(% of one core, from /proc; "other" = machine busy minus all of them, i.e. other users of
this shared machine) and the target verdicts.

Correctness in every run: every connected client of a room must receive every message sent
to that room exactly once (counted per client and client_id). Lost, duplicated and misrouted
deliveries, sends that failed and sockets the relay dropped make the script exit 1. A message
that reaches a client after a higher seq of the same room is reported as a WARNING (the API
promises gap-free seqs, and a client seeing n+2 before n+1 will fetch n+1 over REST).

How it works: one real user (the rooms' owner) is registered, verified and logged in through
the API; every other user is inserted straight into PostgreSQL with a session in Redis made
exactly as the API makes it (HSET session:<sid>, EXPIRE, SADD user_sessions:<uid>) and a JWT
signed with JWT_SECRET: 1,000 argon2id hashes would take half a minute. Rooms are created
through the API by the owner; members are inserted in SQL before any client connects, so the
relay's ready frame subscribes them. Senders are extra members (a few per room, so a default
per-user send limit is not hit) that hold no socket, so a message is expected once at each
connected client of its room. Clients are `Bench ws-clients` (Sources/Bench/WSClients.swift:
one epoll loop per process, about 10 us of CPU per delivery, nearly all of it the kernel's) in
--client-procs processes (2), straight to the relay (ws://127.0.0.1:RELAY_PORT/ws, no TLS cost
in the client); with --wss, or --client-impl python, a minimal asyncio client (uvloop when
installed, 4 processes, about 18 us per delivery) does the same. The load generator shares
the 2 cores with the stack it measures, so its CPU shows in the stack's latency. Times are
CLOCK_REALTIME nanoseconds (time.time_ns() in Python) in every process (one host).
A delivery's time is its arrival: the kernel's receive timestamp of the segment that carried
the frame (SO_TIMESTAMPNS on the Swift clients' sockets), taken when the relay's write put it
in the client's socket. The moment the client process read it is also reported ("read by
the client"); the difference is the time the load generator waited for a CPU on the machine
it shares with the stack, which a client on its own device does not wait (1 to 2 ms at p99
in the 10-room runs of 2026-11-26). The Python clients have no kernel timestamp: both times
are their read time.
Before each scenario the script waits until a fresh socket gets its ready frame quickly and the
machine is below a quarter busy (after thousands of sockets close, the relay's unbinds hold up
new sockets' binds, and the broker works through them for a while). Everything a
scenario made (users, sessions, rooms, messages) is removed afterwards unless --keep;
--dump DIR saves each phase's raw sends and receipts (numpy .npz) for a closer look.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import hashlib
import hmac
import json
import multiprocessing as mp
import os
import re
import resource
import secrets
import shlex
import ssl
import struct
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINE_CID = 1_000_000_000  # client_ids of broker-only messages start here
LATENCY_TARGET_MS = 25  # issue 4: p99 send->deliver at 200 sends/s with 1,000 clients
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- helpers

def stack_env(path) -> dict:
    env = {}
    for line in Path(path).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = (shlex.split(v) or [""])[0]
    return env


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(secret_hex: str, claims: dict) -> str:
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    mac = hmac.new(bytes.fromhex(secret_hex), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(mac)}"


def raise_nofile(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    for new in ((max(want, hard), max(want, hard)), (min(want, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, new)
            return new[0]
        except (ValueError, OSError):
            continue
    return soft


def install_uvloop() -> str:
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return "uvloop"
    except ImportError:
        return "asyncio"


def insecure_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# ------------------------------------------------------------------- WebSocket client

RX_CREATED = re.compile(rb'"client_id":"(\d+)"[^}]*"seq":(\d+)')
CREATED = b'"type":"message.created"'


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame."""
    key = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    if n:
        mask = int.from_bytes((key * (n // 4 + 1))[:n], "big")
        payload = (int.from_bytes(payload, "big") ^ mask).to_bytes(n, "big")
    return head + key + payload


class Recorder:
    """message.created receipts of one client process: (connection, client_id, seq, time)."""

    def __init__(self):
        self.clear()
        self.dropped = 0          # sockets lost after ready
        self.close_codes: dict = {}
        self.unparsed = 0
        self.other_frames = 0

    def clear(self):
        self.conn = array.array("q")
        self.cid = array.array("q")
        self.seq = array.array("q")
        self.t = array.array("q")
        self.other_frames = 0


class WSClient(asyncio.Protocol):
    """A minimal WebSocket client: upgrade, auth frame, ready; then records message.created
    receipts and answers pings. Server frames are unmasked and unfragmented (the relay's)."""

    def __init__(self, rec: Recorder, idx: int, token: str, host: str):
        self.rec, self.idx, self.token, self.host = rec, idx, token, host
        self.state = 0  # 0 upgrading, 1 authenticating, 2 ready, 3 gone
        self.buf = b""
        self.transport = None
        self.ready = asyncio.get_running_loop().create_future()
        self.close_code = None

    def connection_made(self, transport):
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write((f"GET /ws HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())

    def _fail(self, why):
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))
        if self.transport:
            self.transport.close()

    def data_received(self, data):
        t = time.time_ns()
        buf = self.buf + data if self.buf else data
        if self.state == 0:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                self.buf = buf
                return
            status = buf[:buf.find(b"\r\n")]
            if b" 101 " not in status:
                return self._fail("upgrade refused: " + status.decode(errors="replace"))
            buf = buf[i + 4:]
            self.state = 1
            self.transport.write(ws_frame(1, json.dumps({"type": "auth", "token": self.token}).encode()))
        rec = self.rec
        pos, n = 0, len(buf)
        while n - pos >= 2:
            ln = buf[pos + 1] & 0x7F
            if ln < 126:
                hl = 2
            elif ln == 126:
                if n - pos < 4:
                    break
                ln, hl = (buf[pos + 2] << 8) | buf[pos + 3], 4
            else:
                if n - pos < 10:
                    break
                ln, hl = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            end = pos + hl + ln
            if end > n:
                break
            op = buf[pos] & 0x0F
            if op == 1:
                if self.state == 2:
                    if buf.find(CREATED, pos + hl, end) >= 0:
                        m = RX_CREATED.search(buf, pos + hl, end)
                        if m:
                            rec.conn.append(self.idx)
                            rec.cid.append(int(m[1]))
                            rec.seq.append(int(m[2]))
                            rec.t.append(t)
                        else:
                            rec.unparsed += 1
                    else:
                        rec.other_frames += 1
                elif self.state == 1:
                    payload = buf[pos + hl:end]
                    if b'"type":"ready"' in payload:
                        self.state = 2
                        if not self.ready.done():
                            self.ready.set_result(True)
                    elif b'"type":"error"' in payload:
                        return self._fail("error frame before ready: " + payload.decode(errors="replace"))
            elif op == 9:
                self.transport.write(ws_frame(10, buf[pos + hl:end]))
            elif op == 8:
                self.close_code = struct.unpack("!H", buf[pos + hl:pos + hl + 2])[0] if ln >= 2 else 1005
                why = f"{self.close_code} {bytes(buf[pos + hl + 2:end]).decode(errors='replace')}".strip()
                rec.close_codes[why] = rec.close_codes.get(why, 0) + 1
                if self.state == 2:
                    rec.dropped += 1
                self.state = 3
                self._fail(f"closed by the relay: {why}")
                return
            pos = end
        self.buf = buf[pos:] if pos < n else b""

    def connection_lost(self, exc):
        if self.state == 2:
            self.rec.dropped += 1
            self.rec.close_codes["no close frame"] = self.rec.close_codes.get("no close frame", 0) + 1
        self.state = 3
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"connection lost: {exc}"))

    def close(self):
        if self.state == 2 and self.transport:
            self.state = 3
            self.transport.write(ws_frame(8, struct.pack("!H", 1000)))
            self.transport.close()


def client_worker(pipe, cfg):
    """One client process: connects its share of sockets, then obeys the parent's commands."""
    raise_nofile(len(cfg["conns"]) + 256)
    install_uvloop()
    try:
        asyncio.run(_client_main(pipe, cfg))
    except KeyboardInterrupt:
        pass


async def _client_main(pipe, cfg):
    loop = asyncio.get_running_loop()
    rec = Recorder()
    clients: list[WSClient] = []
    errors: dict = {}
    sem = asyncio.Semaphore(cfg["concurrency"])
    tls = insecure_tls() if cfg["tls"] else None
    host_header = f"{cfg['host']}:{cfg['port']}"

    async def one(idx, token):
        async with sem:
            for attempt in range(3):
                proto = None
                try:
                    _, proto = await asyncio.wait_for(loop.create_connection(
                        lambda: WSClient(rec, idx, token, host_header), cfg["host"], cfg["port"], ssl=tls), 15)
                    await asyncio.wait_for(proto.ready, 30)
                    clients.append(proto)
                    return True
                except Exception as e:  # noqa: BLE001 - counted and retried
                    key = f"{type(e).__name__}: {str(e)[:80]}"
                    errors[key] = errors.get(key, 0) + 1
                    if proto and proto.transport:
                        proto.transport.close()
                    await asyncio.sleep(0.5 * (attempt + 1))
            return False

    t0 = time.monotonic()
    oks = await asyncio.gather(*(one(i, tok) for i, tok in cfg["conns"]))
    pipe.send(("ready", sum(oks), len(oks) - sum(oks), errors, time.monotonic() - t0))

    # The parent's commands come through a reader thread: an event-loop reader would make the
    # pipe non-blocking, and large answers must be written whole.
    commands: asyncio.Queue = asyncio.Queue()

    def read_commands():
        for _ in range(1_000_000):
            try:
                cmd = pipe.recv()
            except (EOFError, OSError):
                cmd = "quit"
            loop.call_soon_threadsafe(commands.put_nowait, cmd)
            if cmd == "quit":
                return

    threading.Thread(target=read_commands, daemon=True).start()
    deadline = time.monotonic() + cfg["max_life"]
    while time.monotonic() < deadline:
        try:
            cmd = await asyncio.wait_for(commands.get(), 5)
        except asyncio.TimeoutError:
            continue
        if cmd == "clear":
            rec.clear()
            pipe.send(("ok",))
        elif cmd == "count":
            pipe.send(("count", len(rec.t), rec.dropped))
        elif cmd == "collect":
            pipe.send(("data", rec.conn.tobytes(), rec.cid.tobytes(), rec.seq.tobytes(), rec.t.tobytes(),
                       rec.dropped, dict(rec.close_codes), rec.unparsed, rec.other_frames))
        elif cmd == "quit":
            break
    for c in clients:
        c.close()
    await asyncio.sleep(0.3)
    pipe.send(("bye",))


# ------------------------------------------------------------------------ REST senders

async def _read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    low = head.lower()
    i = low.find(b"content-length:")
    if i >= 0:
        length = int(low[i + 15:low.find(b"\r\n", i)])
        body = await reader.readexactly(length)
    elif b"transfer-encoding: chunked" in low:
        body = b""
        for _ in range(100000):
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = b""
    return status, b"connection: close" in low, body


def rest_sender(pipe, cfg):
    install_uvloop()
    asyncio.run(_rest_main(pipe, cfg))


async def _rest_main(pipe, cfg):
    """POSTs messages over keep-alive TLS connections through nginx. Paced: send i is due at
    start_at + (offset + i) / rate; unpaced (rate 0): every connection sends back to back."""
    tls = insecure_tls()
    rooms = cfg["rooms"]  # [(room_id, [tokens])]
    out = {k: array.array("q") for k in ("cid", "room", "start", "end", "due", "status")}
    stats = {"retries": 0, "reconnects": 0, "errors": {}, "skipped": 0}
    host = f"{cfg['host']}:{cfg['port']}"
    nproc, k = cfg["nproc"], cfg["index"]
    t_start = cfg["start_at"]
    t_end = t_start + cfg["seconds"]
    rate = cfg["rate"]
    queue: asyncio.Queue = asyncio.Queue()
    counter = [0]

    async def connect():
        for attempt in range(5):
            try:
                return await asyncio.wait_for(asyncio.open_connection(cfg["host"], cfg["port"], ssl=tls), 10)
            except Exception:  # noqa: BLE001
                await asyncio.sleep(0.2 * (attempt + 1))
        raise ConnectionError("cannot connect to nginx")

    async def post(conn, cid, room_i):
        room_id, tokens = rooms[room_i]
        token = tokens[(cid // len(rooms)) % len(tokens)]
        body = b'{"body":"bench %d","client_id":"%d"}' % (cid, cid)
        req = (b"POST /api/rooms/%s/messages HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
               b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
               % (room_id.encode(), host.encode(), token.encode(), len(body), body))
        start = time.time_ns()
        status = 0
        for attempt in range(3):  # a retry with the same client_id is safe (idempotent)
            try:
                if conn[0] is None:
                    conn[0], conn[1] = await connect()
                    stats["reconnects"] += 1
                conn[1].write(req)
                status, close, resp = await asyncio.wait_for(_read_response(conn[0]), 30)
                if close:
                    conn[1].close()
                    conn[0] = None
                if status in (201, 200):
                    break
                key = f"HTTP {status}: {resp[:120].decode(errors='replace')}"
                stats["errors"][key] = stats["errors"].get(key, 0) + 1
                if status not in (502, 503, 504):
                    break
            except Exception as e:  # noqa: BLE001 - the connection went stale: reconnect, retry
                stats["retries"] += 1
                key = f"{type(e).__name__}"
                stats["errors"][key] = stats["errors"].get(key, 0) + 1
                if conn[1] is not None:
                    conn[1].close()
                conn[0] = conn[1] = None
                status = 0
        return start, time.time_ns(), status

    async def worker():
        conn = [None, None]
        try:
            conn[0], conn[1] = await connect()
        except ConnectionError:
            pass
        while True:
            if rate:
                job = await queue.get()
                if job is None:
                    break
                cid, due = job
                if time.time() > t_end + cfg["grace"]:
                    stats["skipped"] += 1  # the server cannot keep the rate: bounded run time
                    continue
            else:
                if time.time() >= t_end:
                    break
                cid, due = k + nproc * counter[0], 0
                counter[0] += 1
            room_i = cid % len(rooms)
            start, end, status = await post(conn, cid, room_i)
            for key, v in (("cid", cid), ("room", room_i), ("start", start), ("end", end), ("due", due), ("status", status)):
                out[key].append(v)
        if conn[1] is not None:
            conn[1].close()

    workers = [asyncio.create_task(worker()) for _ in range(cfg["conns"])]
    await asyncio.sleep(max(0.0, t_start - time.time()))
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    if rate:
        total_rate = rate * nproc
        n = int(cfg["seconds"] * rate)
        for i in range(n):
            due = t_start + (k + nproc * i) / total_rate
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((k + nproc * i, int(due * 1e9)))
        for _ in workers:
            queue.put_nowait(None)
    await asyncio.wait_for(asyncio.gather(*workers), cfg["seconds"] + 120)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    stats["cpu_seconds"] = ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime
    pipe.send(("data", {key: a.tobytes() for key, a in out.items()}, stats))


def amqp_sender(pipe, cfg):
    """Broker-only baseline: publishes the same message.created event straight to the
    chat.events exchange (routing key room.<id>, header x-event), paced like the REST senders."""
    import pika

    out = {k: array.array("q") for k in ("cid", "room", "start", "end", "due", "status")}
    stats = {"retries": 0, "reconnects": 0, "errors": {}}
    conn = pika.BlockingConnection(pika.URLParameters(cfg["amqp_url"]))
    ch = conn.channel()
    ch.confirm_delivery()
    rooms = cfg["rooms"]  # [(room_id, author_id)]
    rate = cfg["rate"]
    n = int(cfg["seconds"] * rate)
    t0 = cfg["start_at"]
    time.sleep(max(0.0, t0 - time.time()))
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    for i in range(n):
        due = t0 + i / rate
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        cid = BASELINE_CID + i
        room_i = i % len(rooms)
        room_id, author = rooms[room_i]
        now = time.time()
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".%03dZ" % (int(now * 1000) % 1000)
        message = {"author_id": author, "body": f"bench {cid}", "client_id": str(cid), "created_at": created,
                   "deleted": False, "edited_at": None, "id": str(uuid.uuid4()), "room_id": room_id, "seq": 0}
        body = json.dumps({"message": message, "room_id": room_id, "type": "message.created"},
                          separators=(",", ":")).encode()
        props = pika.BasicProperties(content_type="application/json",
                                     headers={"x-event": "message.created", "x-user": author})
        start = time.time_ns()
        status = 201
        try:
            ch.basic_publish("chat.events", "room." + room_id, body, props)
        except Exception as e:  # noqa: BLE001
            status = 0
            stats["errors"][type(e).__name__] = stats["errors"].get(type(e).__name__, 0) + 1
        for key, v in (("cid", cid), ("room", room_i), ("start", start), ("end", time.time_ns()),
                       ("due", int(due * 1e9)), ("status", status)):
            out[key].append(v)
    conn.close()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    stats["cpu_seconds"] = ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime
    pipe.send(("data", {key: a.tobytes() for key, a in out.items()}, stats))


# ----------------------------------------------------------------------- CPU accounting

def _proc_stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return int(parts[1]), int(parts[11]), int(parts[12])  # ppid, utime, stime
    except (OSError, IndexError, ValueError):
        return None


def cpu_sample(groups: dict) -> dict:
    """CPU ticks per group (each group's processes and all their descendants), plus the
    machine's busy and total ticks."""
    table = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _proc_stat(d)
            if st:
                table[int(d)] = st
    children: dict = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out = {}
    for name, roots in groups.items():
        user = system = 0
        seen, todo = set(), list(roots)
        while todo:
            p = todo.pop()
            if p in seen or p not in table:
                continue
            seen.add(p)
            user += table[p][1]
            system += table[p][2]
            if name != "bench-main":  # its children are the clients and senders, counted apart
                todo.extend(children.get(p, []))
        out[name] = (user, system)
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    out["_total"], out["_busy"] = sum(v[:8]), sum(v[:8]) - v[3] - v[4]
    out["_time"] = time.monotonic()
    return out


class HostSpeed(threading.Thread):
    """How fast the host runs this virtual machine while a phase runs: every half second,
    the CPU time (not the wall time, so waiting for a core does not count) of one fixed
    piece of pure-Python work. On this 2-core VM it reads about 5 ms when the host gives the
    vCPUs full speed and 8 to 9 ms when it does not (the host's other tenants share the
    physical cores), and it switches between the two within seconds, idle or not. Every
    process of the stack and of the bench slows down alike, so a phase's latency is only
    comparable with another phase's at a similar reading. Costs about 1% of one core."""

    UNIT = 150_000  # loop iterations of one sample

    def __init__(self):
        super().__init__(daemon=True, name="host-speed")
        self.samples: list[tuple[float, float]] = []  # (time.monotonic(), ms of CPU)

    @classmethod
    def sample(cls) -> float:
        c = time.thread_time()
        s = 0
        for i in range(cls.UNIT):
            s += i
        return (time.thread_time() - c) * 1000

    def run(self):
        while True:
            time.sleep(0.5)
            self.samples.append((time.monotonic(), self.sample()))

    def between(self, t0: float, t1: float) -> tuple[float, float, float]:
        """(median, fastest, slowest) ms of the samples taken between two monotonic times."""
        ms = sorted(v for t, v in self.samples if t0 <= t <= t1) or [float("nan")]
        return ms[len(ms) // 2], ms[0], ms[-1]


def _machine_busy() -> tuple[int, int]:
    """(total, busy) jiffies of all cores since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v[:8]), sum(v[:8]) - v[3] - v[4]


def machine_busy(a: dict, b: dict, ncpu: int) -> float:
    """How busy all cores were between two cpu_sample()s, in % of one core."""
    return 100.0 * ncpu * (b["_busy"] - a["_busy"]) / max(1, b["_total"] - a["_total"])


def cpu_report(a: dict, b: dict, ncpu: int, extra_seconds: dict | None = None) -> str:
    """extra_seconds: CPU seconds of processes that ended inside the window (the senders
    measure their own, from their start time on)."""
    wall = b["_time"] - a["_time"]
    if wall <= 0:
        return "cpu: n/a"
    f = 100.0 / CLK_TCK / wall
    split = {k: ((b[k][0] - a[k][0]) * f, (b[k][1] - a[k][1]) * f) for k in a if not k.startswith("_")}
    pct = {k: u + s for k, (u, s) in split.items()}
    for k, v in (extra_seconds or {}).items():
        pct[k] = 100.0 * v / wall
    machine = machine_busy(a, b, ncpu)
    other = machine - sum(pct.values())
    parts = [f"{k} {v:.0f}" + (" (sys {:.0f})".format(split[k][1]) if k in ("relay", "clients") else "")
             for k, v in sorted(pct.items(), key=lambda kv: -kv[1]) if v >= 0.5]
    return (f"CPU % of one core over {wall:.1f} s: " + ", ".join(parts)
            + f", other (not this stack/bench) {max(0.0, other):.0f}; machine busy {machine:.0f} of {100 * ncpu}")


# ------------------------------------------------------------------------------- setup

class Stack:
    def __init__(self, env: dict):
        import psycopg2
        import redis
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self.env = env
        self.base = env["HTTPS_URL"].rstrip("/")
        self.https_port = int(env["HTTPS_PORT"])
        self.relay_port = int(env["RELAY_PORTS"].split(",")[0])
        self.db = psycopg2.connect(env["PG_DSN"])
        self.db.autocommit = True
        self.redis = redis.Redis(host="127.0.0.1", port=int(env["REDIS_PORT"]))
        self.run_tag = uuid.uuid4().hex[:8]
        self.seq = 0
        self.owner_id, self.owner_token = self._real_owner()
        self.pids = {k[4:].lower(): int(v) for k, v in env.items() if k.startswith("PID_") and v.isdigit()}

    def _api(self, method, path, token=None, body=None, expect=(200, 201)):
        import requests
        headers = {"Authorization": "Bearer " + token} if token else {}
        r = requests.request(method, self.base + path, json=body, headers=headers, verify=False, timeout=30)
        if r.status_code not in expect:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
        return r.json() if r.content else None

    def _real_owner(self):
        """The one user made through the API (register, verified in SQL, login)."""
        email, password = f"wsload-owner-{self.run_tag}@example.test", "bench-password-" + self.run_tag
        self._api("POST", "/api/auth/register", body={"email": email, "password": password, "display_name": "wsload owner"})
        with self.db.cursor() as c:
            c.execute("UPDATE users SET email_verified = true WHERE email_lower = lower(%s)", (email,))
        login = self._api("POST", "/api/auth/login", body={"email": email, "password": password})
        return login["user"]["id"], login["token"]

    def users(self, n: int, label: str) -> list[tuple[str, str]]:
        """n users straight in PostgreSQL, each with a session in Redis and a JWT: [(id, jwt)]."""
        from psycopg2.extras import execute_values

        self.seq += 1
        tag = f"{self.run_tag}-{self.seq}"
        rows = [(f"wsload-{tag}-{i}@example.test", f"wsload {label} {i}", None, True) for i in range(n)]
        with self.db.cursor() as c:
            ids = [r[0] for r in execute_values(
                c, "INSERT INTO users (email, display_name, password_hash, email_verified) VALUES %s RETURNING id::text",
                rows, page_size=1000, fetch=True)]
        now = int(time.time())
        ttl = 3600
        out = []
        self.sessions = getattr(self, "sessions", {})
        pipe = self.redis.pipeline(transaction=False)
        for i, uid in enumerate(ids):
            sid = b64url(secrets.token_bytes(16))
            pipe.hset(f"session:{sid}", mapping={"user_id": uid, "created_at": "2026-11-25T00:00:00.000Z",
                                                  "last_seen_at": "2026-11-25T00:00:00.000Z", "user_agent": "ws_load"})
            pipe.expire(f"session:{sid}", ttl)
            pipe.sadd(f"user_sessions:{uid}", sid)
            self.sessions[uid] = sid
            out.append((uid, sign_jwt(self.env["JWT_SECRET"], {"sub": uid, "sid": sid, "iat": now, "exp": now + ttl})))
            if i % 2000 == 1999:
                pipe.execute()
        pipe.execute()
        return out

    def cleanup(self, rooms: list[str], user_ids: list[str]):
        """Removes what a scenario made: its rooms' messages (MongoDB), rooms and members,
        users (PostgreSQL), sessions and relay keys (Redis). The stack does not grow from run
        to run (SecantusDB's client_id look-up scans the collection)."""
        import pymongo

        try:
            mongo = pymongo.MongoClient(self.env["MONGO_URL"], serverSelectionTimeoutMS=5000)
            mongo[self.env.get("MONGO_DB", "swiftchat")]["messages"].delete_many({"room_id": {"$in": rooms}})
            mongo.close()
        except Exception as e:  # noqa: BLE001
            print(f"  cleanup: MongoDB messages not removed: {e}")
        with self.db.cursor() as c:
            c.execute("DELETE FROM rooms WHERE id = ANY(%s::uuid[])", (rooms,))
            c.execute("DELETE FROM users WHERE id = ANY(%s::uuid[])", (user_ids,))
        pipe = self.redis.pipeline(transaction=False)
        for i, uid in enumerate(user_ids):
            sid = self.sessions.pop(uid, None)
            keys = [f"user_sessions:{uid}", f"relay_queues:{uid}", f"presence:{uid}"]
            pipe.delete(*(keys + ([f"session:{sid}"] if sid else [])))
            if i % 2000 == 1999:
                pipe.execute()
        pipe.execute()

    def close(self):
        """Logs the owner out and removes it."""
        try:
            self._api("POST", "/api/auth/logout", self.owner_token, expect=(204,))
        except Exception:  # noqa: BLE001
            pass
        with self.db.cursor() as c:
            c.execute("DELETE FROM users WHERE id = %s", (self.owner_id,))

    def mongo_kind(self) -> str:
        try:
            with open(f"/proc/{self.pids.get('mongo', 0)}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            return "SecantusDB (Python)" if "secantus" in cmd else "mongod"
        except OSError:
            return "external MongoDB" if "mongo" not in self.pids else "?"

    def room(self, name: str) -> str:
        return self._api("POST", "/api/rooms", self.owner_token, {"name": name, "kind": "private"})["id"]

    def add_members(self, room_id: str, user_ids: list[str]):
        from psycopg2.extras import execute_values

        with self.db.cursor() as c:
            execute_values(c, "INSERT INTO room_members (room_id, user_id, role, last_read_seq) VALUES %s",
                           [(room_id, u, "member", 0) for u in user_ids], page_size=1000)

    def relay_pid(self) -> int:
        return self.pids.get("relay_1", 0)

    def restart_relay(self):
        """--fresh-relay: restarts relay-1 through scripts/stack.sh (a relay that served earlier
        runs keeps freed memory, which hides the cost of new sockets). The send limit given
        through SWIFTCHAT_CONF_ is carried over, as stack.sh rewrites the config."""
        import subprocess

        env = dict(os.environ, STACK_DIR=self.env["STACK_DIR"])
        for line in Path(self.env["CONFIG_FILE"]).read_text().splitlines():
            if line.startswith("RATE_LIMIT_SENDS"):
                k, v = line.split("=", 1)
                env["SWIFTCHAT_CONF_" + k] = v
        for action in ("stop-service", "start-service"):
            subprocess.run(["bash", str(REPO / "scripts/stack.sh"), action, "relay-1"], env=env, check=True,
                           timeout=120, stdout=subprocess.DEVNULL)
        self.env = stack_env(Path(self.env["STACK_DIR"]) / "stack.env")
        self.pids = {k[4:].lower(): int(v) for k, v in self.env.items() if k.startswith("PID_") and v.isdigit()}

    def relay_age(self) -> float:
        try:
            with open(f"/proc/{self.relay_pid()}/stat") as f:
                start = int(f.read().rsplit(")", 1)[1].split()[19]) / CLK_TCK
            with open("/proc/uptime") as f:
                return float(f.read().split()[0]) - start
        except (OSError, ValueError, IndexError):
            return float("nan")

    def relay_health(self) -> dict:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.relay_port}/health", timeout=5) as r:
                return json.loads(r.read())
        except Exception as e:  # noqa: BLE001
            return {"error": str(e)}

    def cpu_groups(self, extra: dict) -> dict:
        g = {"relay": [self.pids.get("relay_1", 0)],
             "fcgi": [v for k, v in self.pids.items() if k.startswith("fcgi")],
             "nginx": [self.pids.get("nginx", 0)], "postgres": [self.pids.get("postgres", 0)],
             "rabbitmq": [self.pids.get("rabbitmq", 0)], "mongo": [self.pids.get("mongo", 0)],
             "redis": [self.pids.get("redis", 0)], "bench-main": [os.getpid()]}
        for k, v in self.pids.items():
            if k.startswith("relay_") and k != "relay_1":
                g["relay"].append(v)
        g.update(extra)
        return g


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def nofile_limit(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    return line.split()[3]
    except OSError:
        pass
    return "?"


# --------------------------------------------------------------------- client fleet

def merge_ready(answers):
    """Each client process's (connected, failed, {error: count}, seconds) -> the fleet's
    (connected, failed, errors, seconds of the slowest)."""
    ok = failed = 0
    errors: dict = {}
    took = 0.0
    for o, f, e, t in answers:
        ok, failed, took = ok + o, failed + f, max(took, t)
        for k, v in e.items():
            errors[k] = errors.get(k, 0) + v
    return ok, failed, errors, took


class Fleet:
    """Client processes holding the sockets; conns[i] = (global index, jwt)."""

    def __init__(self, ctx, conns, procs, host, port, tls, max_life):
        self.procs, self.pipes = [], []
        procs = max(1, min(procs, len(conns)))
        for k in range(procs):
            share = conns[k::procs]
            parent, child = ctx.Pipe()
            cfg = {"conns": share, "host": host, "port": port, "tls": tls, "concurrency": 64, "max_life": max_life}
            p = ctx.Process(target=client_worker, args=(child, cfg), daemon=True)
            p.start()
            self.procs.append(p)
            self.pipes.append(parent)

    def wait_ready(self, timeout: float):
        answers = []
        deadline = time.monotonic() + timeout
        for pipe in self.pipes:
            if not pipe.poll(max(0.1, deadline - time.monotonic())):
                raise RuntimeError("client processes did not connect in time")
            _, o, f, e, t = pipe.recv()
            answers.append((o, f, e, t))
        return merge_ready(answers)

    def ask(self, cmd, timeout=60):
        for pipe in self.pipes:
            pipe.send(cmd)
        out = []
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                raise RuntimeError(f"client process did not answer {cmd!r}")
            out.append(pipe.recv())
        return out

    def count(self):
        r = self.ask("count")
        return sum(x[1] for x in r), sum(x[2] for x in r)

    def collect(self):
        import numpy as np

        parts = self.ask("collect", timeout=120)
        cat = lambda i: np.concatenate([np.frombuffer(p[i], dtype=np.int64) for p in parts])  # noqa: E731
        codes: dict = {}
        for p in parts:
            for k, v in p[6].items():
                codes[k] = codes.get(k, 0) + v
        return {"conn": cat(1), "cid": cat(2), "seq": cat(3), "t": cat(4), "dropped": sum(p[5] for p in parts),
                "close_codes": codes, "unparsed": sum(p[7] for p in parts), "other_frames": sum(p[8] for p in parts)}

    def pids(self):
        return [p.pid for p in self.procs]

    def stop(self):
        for pipe in self.pipes:
            try:
                pipe.send("quit")
            except OSError:
                pass
        for pipe in self.pipes:
            try:
                if pipe.poll(10):
                    pipe.recv()
            except (OSError, EOFError):
                pass
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.terminate()
                p.join(2)


class SwiftFleet:
    """The same clients in Swift (`Bench ws-clients`, Sources/Bench/WSClients.swift): one
    epoll loop per process, the same receipts. The load generator shares the machine with
    the stack it measures; these spend a fraction of the Python clients' CPU per delivery."""

    BINARY = REPO / ".build" / "release" / "Bench"

    def __init__(self, conns, procs, host, port, max_life):
        import subprocess
        import tempfile

        self.dir = tempfile.mkdtemp(prefix="ws_load-")
        self.procs = []
        procs = max(1, min(procs, len(conns)))
        for k in range(procs):
            p = subprocess.Popen([str(self.BINARY), "ws-clients"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True, bufsize=1)
            cfg = {"conns": conns[k::procs], "host": host, "port": port, "concurrency": 64, "max_life": max_life}
            p.stdin.write(json.dumps(cfg) + "\n")
            p.stdin.flush()
            self.procs.append(p)

    def _line(self, p, timeout):
        import select

        if not select.select([p.stdout], [], [], timeout)[0]:
            raise RuntimeError("a client process did not answer in time")
        line = p.stdout.readline()
        if not line:
            raise RuntimeError(f"a client process exited ({p.poll()})")
        return line.split(" ", 6 if line.startswith("data") else 4)

    def wait_ready(self, timeout: float):
        answers = []
        deadline = time.monotonic() + timeout
        for p in self.procs:
            _, o, f, t, e = self._line(p, max(0.1, deadline - time.monotonic()))
            answers.append((int(o), int(f), json.loads(e), float(t)))
        return merge_ready(answers)

    def ask(self, cmd, timeout=60):
        for p in self.procs:
            p.stdin.write(cmd + "\n")
            p.stdin.flush()
        return [self._line(p, timeout) for p in self.procs]

    def count(self):
        r = self.ask("count")
        return sum(int(x[1]) for x in r), sum(int(x[2]) for x in r)

    def collect(self):
        import numpy as np

        parts, arrays = [], []
        for k, p in enumerate(self.procs):
            path = f"{self.dir}/receipts-{k}"
            p.stdin.write(f"collect {path}\n")
            p.stdin.flush()
            part = self._line(p, 120)
            if part[0] != "data":
                raise RuntimeError(f"a client process could not hand over its receipts: {' '.join(part)}")
            parts.append(part)
            arrays.append(np.fromfile(path, dtype=np.int64).reshape(5, -1))
            os.unlink(path)
        codes: dict = {}
        for part in parts:
            for k, v in json.loads(part[6]).items():
                codes[k] = codes.get(k, 0) + v
        cat = lambda i: np.concatenate([a[i] for a in arrays])  # noqa: E731
        return {"conn": cat(0), "cid": cat(1), "seq": cat(2), "read": cat(3), "t": cat(4), "dropped": sum(int(x[2]) for x in parts),
                "close_codes": codes, "unparsed": sum(int(x[3]) for x in parts),
                "other_frames": sum(int(x[4]) for x in parts), "unstamped": sum(int(x[5]) for x in parts)}

    def pids(self):
        return [p.pid for p in self.procs]

    def stop(self):
        import shutil

        for p in self.procs:
            try:
                p.stdin.write("quit\n")
                p.stdin.flush()
            except OSError:
                pass
        for p in self.procs:
            try:
                p.wait(10)
            except Exception:  # noqa: BLE001 - a stuck client is killed
                p.kill()
                p.wait(2)
        shutil.rmtree(self.dir, ignore_errors=True)


def run_senders(ctx, target, cfgs, timeout):
    procs, pipes = [], []
    for cfg in cfgs:
        parent, child = ctx.Pipe()
        p = ctx.Process(target=target, args=(child, cfg), daemon=True)
        p.start()
        procs.append(p)
        pipes.append(parent)
    return procs, pipes


def gather_senders(procs, pipes, timeout):
    import numpy as np

    deadline = time.monotonic() + timeout
    res, stats = [], {"retries": 0, "reconnects": 0, "errors": {}, "cpu_seconds": 0.0, "skipped": 0}
    for pipe, p in zip(pipes, procs):
        if not pipe.poll(max(0.1, deadline - time.monotonic())):
            raise RuntimeError("a sender did not finish in time")
        _, data, st = pipe.recv()
        res.append({k: np.frombuffer(v, dtype=np.int64) for k, v in data.items()})
        stats["retries"] += st["retries"]
        stats["reconnects"] += st["reconnects"]
        stats["cpu_seconds"] += st.get("cpu_seconds", 0.0)
        stats["skipped"] += st.get("skipped", 0)
        for k, v in st["errors"].items():
            stats["errors"][k] = stats["errors"].get(k, 0) + v
        p.join(5)
    sends = {k: np.concatenate([r[k] for r in res]) for k in res[0]}
    return sends, stats


# -------------------------------------------------------------------------- analysis

def analyse(sends, recv, conn_room, room_conns, cid_base):
    """Latency, throughput and exactly-once accounting of one phase."""
    import numpy as np

    ok = (sends["status"] == 200) | (sends["status"] == 201)
    n_sent = len(sends["cid"])
    idx_of = np.full(int(sends["cid"].max() - cid_base + 1) if n_sent else 1, -1, dtype=np.int64)
    idx_of[sends["cid"] - cid_base] = np.arange(n_sent)
    rc = recv["cid"] - cid_base
    in_phase = (rc >= 0) & (rc < len(idx_of))
    d_conn, d_seq, d_t = recv["conn"][in_phase], recv["seq"][in_phase], recv["t"][in_phase]
    d_read = recv.get("read", recv["t"])[in_phase]
    d_idx = idx_of[rc[in_phase]]
    known = d_idx >= 0
    foreign = int((~known).sum()) + int((~in_phase).sum())
    d_conn, d_seq, d_t, d_read, d_idx = d_conn[known], d_seq[known], d_t[known], d_read[known], d_idx[known]
    misrouted_mask = conn_room[d_conn] != sends["room"][d_idx]
    misrouted = int(misrouted_mask.sum())
    good = ~misrouted_mask
    d_conn, d_seq, d_t, d_read, d_idx = d_conn[good], d_seq[good], d_t[good], d_read[good], d_idx[good]
    key = d_conn * max(1, n_sent) + d_idx
    uniq, first = np.unique(key, return_index=True)
    duplicated = int(len(key) - len(uniq))
    expected_ok = int(room_conns[sends["room"][ok]].sum())
    received_ok = int(ok[d_idx[first]].sum())
    lost = expected_ok - received_ok
    unexpected = int(len(uniq) - received_ok)  # deliveries of sends that reported an error
    # Order: per connection, seqs must arrive increasing (REST phase only: seq > 0).
    order = np.lexsort((np.arange(len(d_conn)), d_conn))
    c_sorted, s_sorted = d_conn[order], d_seq[order]
    same = c_sorted[1:] == c_sorted[:-1]
    back = (s_sorted[1:] <= s_sorted[:-1]) & same & (s_sorted[1:] > 0)
    out_of_order = int(back.sum())
    # How far back: the highest seq seen so far at that client minus the late one.
    max_back = 0
    if out_of_order:
        starts = np.r_[0, np.flatnonzero(~same) + 1]
        seen_max = s_sorted.copy()
        for a, b in zip(starts, np.r_[starts[1:], len(s_sorted)]):
            seen_max[a:b] = np.maximum.accumulate(s_sorted[a:b])
        max_back = int((seen_max[:-1] - s_sorted[1:])[same].max())
    lat = (d_t[first] - sends["start"][d_idx[first]]) / 1e6
    lat_read = (d_read[first] - sends["start"][d_idx[first]]) / 1e6
    post = (sends["end"][ok] - sends["start"][ok]) / 1e6
    lag = (sends["start"] - sends["due"])[sends["due"] > 0] / 1e6
    span_send = (sends["start"].max() - sends["start"].min()) / 1e9 if n_sent > 1 else 0
    span_all = (d_t.max() - sends["start"].min()) / 1e9 if len(d_t) else 0
    pct = lambda a, q: float(np.percentile(a, q)) if len(a) else float("nan")  # noqa: E731
    # p99 of each second of sending (by the send's start): tells a burst of slow sends (a
    # few bad seconds) from a tail spread over the whole run. Seconds with few deliveries
    # (the last, partial one) are left out.
    sec = (sends["start"][d_idx[first]] - sends["start"].min()) // 1_000_000_000 if len(lat) else lat
    per_sec = [pct(lat[m], 99) for i in np.unique(sec) if (m := sec == i).sum() >= 100]
    return {"sent": n_sent, "ok": int(ok.sum()), "failed": int(n_sent - ok.sum()),
            "sends_per_s": int(ok.sum()) / span_send if span_send else float("nan"),
            "deliveries": int(len(d_t)), "deliveries_per_s": len(d_t) / span_all if span_all else float("nan"),
            "expected": expected_ok, "lost": lost, "duplicated": duplicated, "misrouted": misrouted,
            "foreign": foreign, "unexpected": unexpected, "out_of_order": out_of_order, "max_back": max_back,
            "lat": [pct(lat, q) for q in (50, 95, 99)] + [float(lat.max()) if len(lat) else float("nan")],
            "lat_read": [pct(lat_read, q) for q in (50, 95, 99)],
            "post": [pct(post, q) for q in (50, 99)], "lag99": pct(lag, 99) if len(lag) else 0.0,
            "per_sec": per_sec,
            "span": span_all}


def print_table(title, cols: dict):
    rows = [
        ("sends ok / failed", lambda r: f"{r['ok']} / {r['failed']}"),
        ("sends/s", lambda r: f"{r['sends_per_s']:.1f}"),
        ("deliveries (expected)", lambda r: f"{r['deliveries']} ({r['expected']})"),
        ("deliveries/s", lambda r: f"{r['deliveries_per_s']:.0f}"),
        ("send->deliver p50/p95/p99 ms", lambda r: "{:.1f} / {:.1f} / {:.1f}".format(*r["lat"][:3])),
        ("send->deliver max ms", lambda r: f"{r['lat'][3]:.1f}"),
        ("  read by the client p50/p95/p99 ms", lambda r: "{:.1f} / {:.1f} / {:.1f}".format(*r["lat_read"])),
        ("  p99 of each second: best/median/worst", lambda r: "{:.1f} / {:.1f} / {:.1f}".format(
            min(r["per_sec"]), sorted(r["per_sec"])[len(r["per_sec"]) // 2], max(r["per_sec"]))
         if r["per_sec"] else "-"),
        (f"  seconds with p99 over {LATENCY_TARGET_MS} ms", lambda r: "{} of {}".format(
            sum(x > LATENCY_TARGET_MS for x in r["per_sec"]), len(r["per_sec"]))),
        ("publish call p50/p99 ms", lambda r: "{:.1f} / {:.1f}".format(*r["post"])),
        ("start lag behind schedule p99 ms", lambda r: f"{r['lag99']:.1f}"),
        ("CPU per delivery: relay / clients us", lambda r: f"{r['relay_us']:.1f} / {r['clients_us']:.1f}"),
        ("host speed: ms per unit (min-max)", lambda r: "{:.1f} ({:.1f}-{:.1f})".format(*r["host_ms"])),
        ("lost / duplicated", lambda r: f"{r['lost']} / {r['duplicated']}"),
        ("misrouted / out of order", lambda r: f"{r['misrouted']} / {r['out_of_order']}"),
    ]
    names = list(cols)
    w0 = max(len(r[0]) for r in rows) + 2
    w = [max(len(n), 24) + 2 for n in names]
    print(title)
    print(" " * w0 + "".join(n.ljust(x) for n, x in zip(names, w)))
    for label, f in rows:
        print(label.ljust(w0) + "".join(f(cols[n]).ljust(x) for n, x in zip(names, w)))


async def _probe_ready(host, port, token, timeout):
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    proto = None
    try:
        _, proto = await asyncio.wait_for(loop.create_connection(
            lambda: WSClient(Recorder(), 0, token, f"{host}:{port}"), host, port), timeout)
        await asyncio.wait_for(proto.ready, timeout)
        return time.monotonic() - t0
    except Exception:  # noqa: BLE001
        return None
    finally:
        if proto is not None:
            proto.close()
            if proto.transport:
                proto.transport.close()


def wait_drained(fleet, expected, quiet, cap=180.0):
    """Waits until every expected delivery arrived, or none arrived for `quiet` seconds
    (then the missing ones are lost), at most `cap` seconds."""
    start = last_change = time.monotonic()
    got = last = -1
    while time.monotonic() - start < cap:
        got, _ = fleet.count()
        if got >= expected:
            break
        if got != last:
            last, last_change = got, time.monotonic()
        elif time.monotonic() - last_change > quiet:
            break
        time.sleep(0.2)
    time.sleep(0.3)  # a duplicate would arrive right behind
    return time.monotonic() - start


# ------------------------------------------------------------------------- scenarios

class Bench:
    def __init__(self, st: Stack, opts):
        self.st, self.opts = st, opts
        self.ctx = mp.get_context("spawn")
        self.failures: list[str] = []
        self.warnings: list[str] = []
        self.ncpu = os.cpu_count() or 1
        self.speed = HostSpeed()
        self.speed.start()

    def _fleet(self, conns, tls=False):
        host, port = "127.0.0.1", (self.st.https_port if tls else self.st.relay_port)
        if self.opts.client_impl == "swift" and not tls:
            return SwiftFleet(conns, self.opts.client_procs, host, port, max_life=1800)
        return Fleet(self.ctx, conns, self.opts.client_procs, host, port, tls, max_life=1800)

    def settle_relay(self, max_wait=180.0):
        """Waits until a new socket gets its ready frame within 0.5 s. After thousands of
        sockets close, the relay unbinds their routing keys one broker RPC at a time, and a
        new socket's binds (which come before its ready) wait behind them."""
        st = self.st
        if self.opts.no_settle:
            return
        users = st.users(1, "probe")
        t0 = time.monotonic()
        took = None
        try:
            for _ in range(200):
                took = asyncio.run(_probe_ready("127.0.0.1", st.relay_port, users[0][1], 30))
                if (took is not None and took < 0.5) or time.monotonic() - t0 > max_wait:
                    break
                time.sleep(1)
        finally:
            st.cleanup([], [users[0][0]])
        waited = time.monotonic() - t0
        if waited > 2 or took is None or took >= 0.5:
            print(f"  waited {waited:.0f} s for the relay to settle (a new socket's ready took "
                  f"{'no answer' if took is None else f'{took * 1000:.0f} ms'})")
        # The broker may still be working through the unbinds of a previous scenario (20,000
        # after the idle one) after the relay answers: wait (up to 60 s) until the machine
        # is below a quarter busy over 2 s, so one scenario's tail does not land in the next.
        t1 = time.monotonic()
        while time.monotonic() - t1 < 60:
            a = _machine_busy()
            time.sleep(2)
            b = _machine_busy()
            busy = (b[1] - a[1]) / max(b[0] - a[0], 1)
            if busy < 0.25:
                break
        if time.monotonic() - t1 > 3:
            print(f"  waited {time.monotonic() - t1:.0f} s for the machine to quiet down (busy {busy * 100:.0f}% of all cores)")

    def _connect(self, fleet, n):
        ok, failed, errors, took = fleet.wait_ready(timeout=120 + n / 50)
        print(f"  connected {ok} of {n} sockets in {took:.1f} s ({ok / max(took, 1e-3):.0f}/s); failed {failed}"
              + (f"; errors {errors}" if errors else ""))
        if failed:
            self.failures.append(f"{failed} sockets did not connect")
        return ok

    def traffic(self, name, n_clients, n_rooms, rate, seconds, base_seconds, tls, sender_conns, senders_per_room,
                targets, broker_rate=0.0):
        """Scenarios (1) and (2): REST phase, then broker-only baseline, same clients."""
        import numpy as np

        st, o = self.st, self.opts
        self.settle_relay()
        t_setup = time.monotonic()
        clients = st.users(n_clients, "client")
        senders = st.users(n_rooms * senders_per_room, "sender")
        rooms = [st.room(f"wsload {name} {i}") for i in range(n_rooms)]
        for r, room_id in enumerate(rooms):
            st.add_members(room_id, [u for i, (u, _) in enumerate(clients) if i % n_rooms == r]
                           + [u for u, _ in senders[r * senders_per_room:(r + 1) * senders_per_room]])
        conn_room = np.array([i % n_rooms for i in range(n_clients)], dtype=np.int64)
        fleet = self._fleet([(i, tok) for i, (_, tok) in enumerate(clients)], tls)
        try:
            ok = self._connect(fleet, n_clients)
            # Connected sockets per room; the presence storm of the connects settles first.
            room_conns = np.bincount(conn_room, minlength=n_rooms)
            time.sleep(2 + n_clients / 1000)
            print(f"  set-up {time.monotonic() - t_setup:.1f} s; relay {st.relay_health()}")
            sender_rooms = [(rooms[r], [t for _, t in senders[r * senders_per_room:(r + 1) * senders_per_room]])
                            for r in range(n_rooms)]
            results, cpu_lines = {}, {}
            fleet_pids = fleet.pids()
            for phase in ("REST (POST->deliver)", "broker only (AMQP->deliver)"):
                rest = phase.startswith("REST")
                fleet.ask("clear")
                nproc = o.sender_procs if rest else 1
                start_at = time.time() + 1.5
                if rest:
                    cfgs = [{"host": "127.0.0.1", "port": st.https_port, "rooms": sender_rooms, "nproc": nproc,
                             "index": k, "start_at": start_at, "seconds": seconds,
                             "rate": (rate / nproc) if rate else 0, "conns": max(1, sender_conns // nproc),
                             "grace": o.grace}
                            for k in range(nproc)]
                    procs, pipes = run_senders(self.ctx, rest_sender, cfgs, seconds + 120)
                else:
                    # Same rate as the REST phase achieved (or asked), so the load compares,
                    # unless a broker rate is given (to probe the relay beyond what REST feeds it).
                    b_rate = broker_rate or rate or max(1.0, results["REST (POST->deliver)"]["sends_per_s"])
                    cfgs = [{"amqp_url": st.env["AMQP_URL"], "rooms": [(rooms[r], senders[r * senders_per_room][0])
                                                                       for r in range(n_rooms)],
                             "rate": b_rate, "seconds": base_seconds, "start_at": start_at}]
                    procs, pipes = run_senders(self.ctx, amqp_sender, cfgs, base_seconds + 120)
                groups = st.cpu_groups({"clients": fleet_pids})
                time.sleep(max(0.0, start_at - time.time()))
                c0 = cpu_sample(groups)
                sends, sstats = gather_senders(procs, pipes, (seconds if rest else base_seconds) + 120)
                okm = (sends["status"] == 200) | (sends["status"] == 201)
                expected = int(room_conns[sends["room"][okm]].sum())
                wait_drained(fleet, expected, o.drain)
                c1 = cpu_sample(groups)  # the window: sending and draining
                recv = fleet.collect()
                res = analyse(sends, recv, conn_room, room_conns, 0 if rest else BASELINE_CID)
                if o.dump:
                    Path(o.dump).mkdir(parents=True, exist_ok=True)
                    np.savez_compressed(Path(o.dump) / f"{name}-{'rest' if rest else 'broker'}.npz",
                                        conn_room=conn_room, **{"send_" + k: v for k, v in sends.items()},
                                        **{"recv_" + k: recv[k] for k in ("conn", "cid", "seq", "t", "read") if k in recv})
                res["sstats"], res["recv"] = sstats, recv
                n = max(1, res["deliveries"])
                res["relay_us"] = 1e6 * sum(c1["relay"][i] - c0["relay"][i] for i in (0, 1)) / CLK_TCK / n
                res["clients_us"] = 1e6 * sum(c1["clients"][i] - c0["clients"][i] for i in (0, 1)) / CLK_TCK / n
                res["machine_busy"] = machine_busy(c0, c1, self.ncpu)
                res["host_ms"] = self.speed.between(c0["_time"], c1["_time"])
                results[phase] = res
                cpu_lines[phase] = cpu_report(c0, c1, self.ncpu, {"senders": sstats["cpu_seconds"]})
            print_table(f"  {name}: {ok} clients ({'wss via nginx' if tls else 'ws straight to the relay'}), "
                        f"{n_rooms} room(s), {'rate ' + str(rate) + ' sends/s' if rate else 'as fast as possible'}, "
                        f"{seconds} s (baseline {base_seconds} s)", results)
            for phase, r in results.items():
                extra = []
                if r["sstats"]["errors"]:
                    extra.append(f"sender errors {r['sstats']['errors']}")
                if r["sstats"]["skipped"]:
                    extra.append(f"BEHIND SCHEDULE: {r['sstats']['skipped']} scheduled sends skipped "
                                 f"(the server did not keep up with the asked rate)")
                if any(k.startswith("HTTP 429") for k in r["sstats"]["errors"]):
                    extra.append("429: raise the per-user send limit (start the stack with "
                                 "SWIFTCHAT_CONF_RATE_LIMIT_SENDS_PER_USER=100000) or use more --senders-per-room")
                if r["sstats"]["retries"]:
                    extra.append(f"retried {r['sstats']['retries']}")
                if r["recv"]["dropped"]:
                    extra.append(f"sockets dropped {r['recv']['dropped']} {r['recv']['close_codes']}")
                if r["recv"].get("unstamped"):
                    extra.append(f"{r['recv']['unstamped']} receipts without a kernel timestamp (their read time counts)")
                if r["foreign"] or r["unexpected"] or r["recv"]["unparsed"]:
                    extra.append(f"foreign {r['foreign']}, unexpected {r['unexpected']}, unparsed {r['recv']['unparsed']}")
                print(f"  {phase}: {cpu_lines[phase]}" + ("; " + "; ".join(extra) if extra else ""))
                if r["out_of_order"]:
                    self.warnings.append(f"{name} {phase}: {r['out_of_order']} deliveries arrived after a higher seq "
                                         f"of their room at the same client (max seq step back {r['max_back']})")
                bad = [k for k in ("lost", "duplicated", "misrouted") if r[k]]
                if bad or r["recv"]["dropped"]:
                    self.failures.append(f"{name} {phase}: " + ", ".join(f"{k} {r[k]}" for k in bad)
                                         + (f" dropped sockets {r['recv']['dropped']}" if r["recv"]["dropped"] else ""))
                if r["failed"]:
                    self.failures.append(f"{name} {phase}: {r['failed']} sends failed")
            rest = results["REST (POST->deliver)"]
            for label, value, limit, below in targets(rest):
                verdict = "met" if (value < limit if below else value >= limit) else (
                    f"MISSED by {abs(value - limit):.1f} ({100 * abs(value - limit) / limit:.0f}%)")
                print(f"  target {label}: {value:.1f} -> {verdict} (host speed {rest['host_ms'][0]:.1f} ms/unit)")
            return results
        finally:
            fleet.stop()
            if not o.keep:
                st.cleanup(rooms, [u for u, _ in clients + senders])

    def latency(self):
        o = self.opts
        runs = []
        for k, n_rooms in enumerate(o.rooms):
            print(f"\n== (1) latency/throughput: {o.clients} clients, {n_rooms} rooms, {o.rate} sends/s, {o.seconds} s")
            # The phase's name also names its --dump files: a repeated room count gets its
            # run's number, so `--rooms 10,10,10 --dump DIR` keeps all three runs.
            name = "latency" if len(o.rooms) == 1 else f"latency-{n_rooms}-rooms"
            if o.rooms.count(n_rooms) > 1:
                name += f"-run{k + 1}"
            results = self.traffic(name, o.clients, n_rooms,
                                   o.rate, o.seconds, o.baseline_seconds or max(5, o.seconds // 2),
                                   o.wss, o.sender_conns, o.senders_per_room,
                                   lambda r: [(f"p99 send->deliver < {LATENCY_TARGET_MS} ms at {o.rate} sends/s, "
                                               f"{o.clients} clients (ms)", r["lat"][2], LATENCY_TARGET_MS, True)],
                                   o.broker_rate)
            runs.append((n_rooms, results))
        if len(runs) > 1:
            # The room count sets the deliveries per send, so it sets the load on the machine.
            print(f"\n== (1) summary: {o.clients} clients at {o.rate} sends/s, by room count "
                  "(REST send->deliver beside the broker-only baseline of the same run)")
            print(f"  {'rooms':>5} {'members':>7} {'deliveries/s':>12} {'REST p50/p95/p99 ms':>22} "
                  f"{'read p99 ms':>11} {'broker p99 ms':>13} {'REST/broker p99':>15} {'machine busy':>12} {'host ms/unit':>12}"
                  f"  target p99 < {LATENCY_TARGET_MS} ms")
            for n_rooms, results in runs:
                rest = results["REST (POST->deliver)"]
                bp99 = results["broker only (AMQP->deliver)"]["lat"][2]
                p50, p95, p99 = rest["lat"][:3]
                print(f"  {n_rooms:>5} {o.clients // n_rooms:>7} {rest['deliveries_per_s']:>12.0f} "
                      f"{f'{p50:.1f} / {p95:.1f} / {p99:.1f}':>22} {rest['lat_read'][2]:>11.1f} {bp99:>13.1f} {p99 / bp99:>14.1f}x "
                      f"{rest['machine_busy']:>8.0f} of {100 * self.ncpu} {rest['host_ms'][0]:>12.1f}"
                      f"  {'met' if p99 < LATENCY_TARGET_MS else 'MISSED'}")

    def fanout(self):
        o = self.opts
        print(f"\n== (2) fan-out: one room of {o.members} members, senders "
              f"{'at ' + str(o.fanout_rate) + '/s' if o.fanout_rate else 'as fast as possible'}, {o.fanout_seconds} s")
        self.traffic("fanout", o.members, 1, o.fanout_rate, o.fanout_seconds,
                     o.baseline_seconds or max(5, o.fanout_seconds // 2), o.wss, o.fanout_conns,
                     max(o.senders_per_room, o.fanout_conns),
                     lambda r: [(f"deliveries/s >= 50,000 in a {o.members}-member room", r["deliveries_per_s"], 50000, False)],
                     o.fanout_broker_rate)

    def idle(self):
        o, st = self.opts, self.st
        n = o.idle
        print(f"\n== (3) idle: {n} authenticated sockets, no rooms")
        if o.fresh_relay:
            st.restart_relay()
            print("  relay-1 restarted (--fresh-relay)")
        self.settle_relay()
        pid = st.relay_pid()
        limit = nofile_limit(pid)
        note = ""
        if limit.isdigit() and int(limit) < n + 100:
            note = (f"  WARNING: the relay's open-files limit is {limit} (started from a shell): at most ~{int(limit) - 50}"
                    f" sockets; the systemd unit sets LimitNOFILE=65536")
        age = st.relay_age()
        print(f"  relay pid {pid}, running for {age:.0f} s, open-files limit {limit}"
              + (" (1024: raise it)" if limit == "1024" else ""))
        if age > 120 and not o.fresh_relay:
            print("  note: this relay has served earlier runs; memory it freed is reused by the new sockets, so the"
                  " per-connection figure reads low (use --fresh-relay, or run right after the stack starts)")
        if note:
            print(note)
        mine = raise_nofile(n + 1024)
        print(f"  this script's open-files limit raised to {mine}; client processes raise theirs for their share")
        users = st.users(n, "idle")
        rss0 = vm_rss_kib(pid)
        h0 = st.relay_health()
        fleet = self._fleet([(i, tok) for i, (_, tok) in enumerate(users)])
        try:
            c0 = cpu_sample(st.cpu_groups({"clients": fleet.pids()}))
            ok = self._connect(fleet, n)
            c1 = cpu_sample(st.cpu_groups({"clients": fleet.pids()}))
            time.sleep(3)
            rss1 = vm_rss_kib(pid)
            h1 = st.relay_health()
            _, dropped = fleet.count()
            per = (rss1 - rss0) / max(1, ok)
            print(f"  relay connections before/after: {h0.get('connections')} / {h1.get('connections')}; "
                  f"bindings {h1.get('bindings')}; sockets dropped while idle: {dropped}")
            print(f"  relay RSS before {rss0 / 1024:.1f} MiB, with {ok} idle sockets {rss1 / 1024:.1f} MiB: "
                  f"{per:.1f} KiB per connection")
            print(f"  connect phase {cpu_report(c0, c1, self.ncpu)}")
            verdict = "met" if rss1 / 1024 < 100 else f"MISSED by {rss1 / 1024 - 100:.1f} MiB"
            scaled = (rss0 + per * 10000) / 1024
            print(f"  target relay RSS with 10,000 idle sockets < 100 MiB: {rss1 / 1024:.1f} MiB at {ok} sockets"
                  + (f" (extrapolated to 10,000: {scaled:.1f} MiB)" if ok != 10000 else "") + f" -> {verdict}")
            if dropped:
                self.failures.append(f"idle: {dropped} sockets dropped")
        finally:
            fleet.stop()
            if not o.keep:
                st.cleanup([], [u for u, _ in users])
        time.sleep(2)
        print(f"  relay RSS after closing them: {vm_rss_kib(pid) / 1024:.1f} MiB; {st.relay_health()}")


def room_counts(text: str) -> list[int]:
    """--rooms: one count or a comma-separated list of them."""
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a room count or a list of them: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"room counts must be at least 1: {text!r}")
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", nargs="*", help="all (default), idle, latency, fanout")
    ap.add_argument("--stack-env", default=os.environ.get("STACK_ENV", str(REPO / ".run/dev/stack.env")))
    ap.add_argument("--clients", type=int, default=1000, help="(1) connected clients")
    ap.add_argument("--rooms", type=room_counts, default=[10],
                    help="(1) rooms the clients are spread over; a list (100,50,10) runs each in turn and ends "
                         "with a summary table")
    ap.add_argument("--rate", type=float, default=200, help="(1) target sends/s")
    ap.add_argument("--seconds", type=int, default=20, help="(1) seconds of sending")
    ap.add_argument("--members", type=int, default=1000, help="(2) members (connected clients) of the one room")
    ap.add_argument("--fanout-seconds", type=int, default=10, help="(2) seconds of sending")
    ap.add_argument("--fanout-rate", type=float, default=0, help="(2) sends/s; 0: as fast as the connections go")
    ap.add_argument("--fanout-conns", type=int, default=8, help="(2) keep-alive sender connections")
    ap.add_argument("--broker-rate", type=float, default=0, help="(1) broker-only publishes/s (default: --rate)")
    ap.add_argument("--fanout-broker-rate", type=float, default=50,
                    help="(2) broker-only publishes/s (default 50: 50,000 deliveries/s asked of the relay; "
                         "0: the rate the REST phase reached)")
    ap.add_argument("--idle", type=int, default=10000, help="(3) idle sockets")
    ap.add_argument("--fresh-relay", action="store_true",
                    help="(3) restart relay-1 (scripts/stack.sh stop-service/start-service) before measuring its RSS")
    ap.add_argument("--baseline-seconds", type=int, default=0, help="broker-only phase length (default: half)")
    ap.add_argument("--wss", action="store_true", help="clients connect through nginx (wss) instead of the relay")
    ap.add_argument("--client-procs", type=int, default=None, help="client processes (2 Swift, 4 Python)")
    ap.add_argument("--client-impl", choices=["swift", "python"], default="swift",
                    help="client implementation: swift (Bench ws-clients, the default) or python (asyncio; "
                         "always with --wss)")
    ap.add_argument("--sender-procs", type=int, default=1)
    ap.add_argument("--sender-conns", type=int, default=32, help="(1) keep-alive sender connections in all")
    ap.add_argument("--senders-per-room", type=int, default=4)
    ap.add_argument("--no-settle", action="store_true",
                    help="do not wait for the relay's broker bindings to catch up between scenarios")
    ap.add_argument("--dump", metavar="DIR", help="save every phase's raw sends and receipts (numpy .npz) here")
    ap.add_argument("--keep", action="store_true", help="keep the users, rooms and messages made (default: removed)")
    ap.add_argument("--drain", type=float, default=5,
                    help="after the last send, missing deliveries count as lost once none arrived for this long")
    ap.add_argument("--grace", type=float, default=5,
                    help="paced sends still queued this long after --seconds are skipped (reported)")
    o = ap.parse_args()
    if not Path(o.stack_env).exists():
        sys.exit(f"no stack env at {o.stack_env}: start a stack (see the docstring) or set STACK_ENV")
    scen = ["idle", "latency", "fanout"] if not o.scenario or "all" in o.scenario else o.scenario
    if set(scen) - {"idle", "latency", "fanout"}:
        ap.error(f"unknown scenario {sorted(set(scen) - {'idle', 'latency', 'fanout'})}")
    if o.client_procs is None:
        o.client_procs = 2 if o.client_impl == "swift" and not o.wss else 4
    if o.client_impl == "swift" and not SwiftFleet.BINARY.exists():
        sys.exit(f"no {SwiftFleet.BINARY}: swift build -c release (or --client-impl python)")
    t0 = time.monotonic()
    st = Stack(stack_env(o.stack_env))
    loop = "Swift, epoll" if o.client_impl == "swift" and not o.wss else f"Python, {install_uvloop()}"
    print(f"ws_load: stack {o.stack_env}; relay 127.0.0.1:{st.relay_port}, https {st.base}; "
          f"{os.cpu_count()} cores; clients {loop}; {o.client_procs} client processes")
    print(f"messages store: {st.mongo_kind()}")
    now = sorted(HostSpeed.sample() for _ in range(5))[2]
    print(f"host speed now: {now:.1f} ms of CPU per unit of work (about 5 at the vCPUs' full speed, "
          "8 to 9 when the host shares their cores; see HostSpeed)")
    b = Bench(st, o)
    try:
        for s in scen:
            getattr(b, s)()
    finally:
        if not o.keep:
            st.close()
    print(f"\nwhole run {time.monotonic() - t0:.0f} s")
    for w in b.warnings:
        print("WARNING: " + w)
    if b.failures:
        print("FAILED: " + "; ".join(b.failures))
        sys.exit(1)
    print("OK: no message lost, duplicated, misrouted or out of order")


if __name__ == "__main__":
    main()
