#!/usr/bin/env python3
"""Load and soak test (run by hand, bounded in time): --minutes of modest mixed traffic
against the whole stack through nginx (https + wss), every answer checked; prints p50/p95/
p99/max latency per operation, send->deliver latency over WebSocket, error counts by kind
(must be 0) and the RSS of every stack process at the start (after warm-up), a few points
in between and the end, with a growth verdict.

    # a stack of its own (2 FastCGI processes, 2 relays); the limits a soak would trip are
    # raised through the generated config (stack.sh starts the Swift processes with a clean
    # environment, so only SWIFTCHAT_CONF_<KEY>=... reaches them)
    STACK_DIR=.run/soak FCGI_PROCESSES=2 WS_RELAYS=2 \\
        SWIFTCHAT_CONF_RATE_LIMIT_SENDS_PER_USER=100000 \\
        SWIFTCHAT_CONF_RATE_LIMIT_LOGIN_PER_EMAIL=100000 \\
        SWIFTCHAT_CONF_RATE_LIMIT_LOGIN_PER_ADDRESS=100000 bash scripts/stack.sh start
    STACK_ENV=.run/soak/stack.env .venv/bin/python bench/soak.py --minutes 1    # smoke run
    STACK_ENV=.run/soak/stack.env .venv/bin/python bench/soak.py                # 15 minutes
    STACK_DIR=.run/soak bash scripts/stack.sh stop

Traffic (defaults: ~25 requests/s plus ~220 WebSocket deliveries/s; on an otherwise idle
2-core box the stack answers it with send p99 ~60 ms: the point is stability over time, not
saturation; this client itself needs only a few % of a core, printed with the result):
  send       POST /api/rooms/{id}/messages with a client_id, --send-rate/s, by members; bodies
             of 5..600 characters with non-ASCII text; --retry-share of them are re-POSTed
             with the same client_id (must answer 200 with the same id and seq, no new event)
  history    GET /api/rooms/{id}/messages: newest page, before_seq or after_seq, random limit;
             checked against what was acknowledged before the read started (contiguous seqs,
             page size, has_more, bodies, client_ids, authors)
  login      POST /api/auth/login with the real password (argon2id), GET /api/me with the new
             token, POST /api/auth/logout (so sessions do not pile up in Redis)
  membership churn users join/leave public rooms themselves (POST .../join, .../leave) or are
             added/removed by the owner (POST .../members, DELETE .../members/{user_id})
  rooms      GET /api/rooms (the caller's rooms must be exactly its rooms), GET .../members
  reconnect  a live socket is closed by the client (1000), reconnected through nginx (wss),
             authenticated, and resumes: each room's last_seq in ready is compared with the
             highest seq held without a gap and the difference fetched with GET ...?after_seq=
WebSocket: every user holds a socket through nginx (some core users a second one, "another
tab"), answers pings and records every message.created.

Users: --users core users (permanent members of 2 rooms each) and --churn-users users whose
membership changes, all registered through the API (POST /api/auth/register), verified with
the link of the email the worker sends to the stack's SMTP sink (GET /api/auth/verify-email),
and logged in through the API. Rooms are public rooms made by an owner (also registered).
Everything made is removed at the end unless --keep.

Errors (each counted by kind; any error -> exit 1): a non-2xx where a 2xx was expected, a
timeout (--timeout s) or a broken connection (a send that failed so is then retried with the
same client_id, as a client would, so that a message the server stored anyway stays
accounted for; the failure still counts); a socket the server closed or dropped; and the
realtime accounting, per socket: a message whose POST started after the socket's ready (and
after the user's join answered) and answered before the socket was closed by the client
(minus 2 s in flight) must arrive exactly once (else "lost" / "duplicated"); a message posted
while the user was not a member (after the leave answered, before the next join started)
must not arrive ("after leave"); every delivered message must match what the POST answered.
A resume must leave a core socket holding every seq up to ready's last_seq ("resume gap").
At the end the whole history of every room is read back: seqs 1..last_seq, each exactly the
message acknowledged for it. Deliveries that arrive after a higher seq of the same room are
reported as a warning (the client would fetch the gap).

RSS: VmRSS from /proc of every process of the stack (pids/*.pid and their children: nginx
master and workers, postgres and its backends, rabbitmq's beam and helpers, redis, mongo
stand-in, smtp sink, fcgi-N, relay-N, worker), first after --warmup s of traffic, then every
--sample-every s, and at the end (sockets still connected). Bound: each Swift process
(fcgi-N, relay-N, worker) may grow by at most max(20 MiB, 25%) over its post-warm-up sample;
beyond it the run fails (exit 1); a Swift process whose pid changed fails too. Other processes
are reported, not judged (PostgreSQL's and MongoDB's caches and the stored messages grow by
design). The table also gives each service's CPU seconds between the start and end samples.
The p50/p99 of the first and the last 3 minutes are printed side by side ("drift").

The run is bounded: setup (< ~30 s), --minutes of traffic including the warm-up, drain and
the history audit (< ~20 s): about --minutes + 1 minute.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import email
import json
import os
import random
import resource
import re
import secrets
import shlex
import ssl
import struct
import sys
import time
import uuid
from bisect import bisect_left, bisect_right
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
SWIFT_SERVICES = ("fcgi", "relay", "worker")
CLOSE_MARGIN = 2.0  # s: a message answered this long before the client closed its socket must have arrived
BOUND_MIB, BOUND_SHARE = 20.0, 0.25
WORDS = ("soak", "message", "привет", "日本語", "ünïcødé", "emoji 🎉", "tab\tand", "quote\"s", "line", "é")


# ----------------------------------------------------------------------------- helpers

def stack_env(path) -> dict:
    env = {}
    for line in Path(path).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = (shlex.split(v) or [""])[0]
    return env


def tls_context(stack_dir: str) -> tuple[ssl.SSLContext, str]:
    cert = Path(stack_dir) / "tls" / "cert.pem"
    if cert.exists():  # the stack's self-signed certificate (SAN IP:127.0.0.1) as the CA
        return ssl.create_default_context(cafile=str(cert)), f"verified against {cert}"
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx, "not verified"


def pct(values, q):
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


class Errors:
    def __init__(self):
        self.counts: dict[str, int] = {}
        self.examples: dict[str, str] = {}

    def add(self, kind: str, example: str = "", n: int = 1):
        self.counts[kind] = self.counts.get(kind, 0) + n
        if example and kind not in self.examples:
            self.examples[kind] = example[:300]

    @property
    def total(self):
        return sum(self.counts.values())


# ------------------------------------------------------------------------ HTTP client

class HTTPError(Exception):
    pass


class Pool:
    """Keep-alive HTTP/1.1 connections to nginx over TLS (a connection idle for more than
    30 s is dropped before nginx's 65 s keepalive_timeout can race a request)."""

    def __init__(self, host, port, tls, timeout):
        self.host, self.port, self.tls, self.timeout = host, port, tls, timeout
        self.idle: list = []  # (reader, writer, last_used)
        self.stale_retries = 0
        self.opened = 0

    async def _open(self):
        r, w = await asyncio.wait_for(asyncio.open_connection(self.host, self.port, ssl=self.tls,
                                                              server_hostname=self.host), self.timeout)
        self.opened += 1
        return r, w

    async def request(self, method, path, token=None, body=None):
        """-> (status, parsed JSON or None, raw body). Raises HTTPError / asyncio.TimeoutError."""
        payload = json.dumps(body, ensure_ascii=False).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUser-Agent: swiftchat-soak\r\n"
        if token:
            head += f"Authorization: Bearer {token}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        elif method in ("POST", "PUT", "PATCH", "DELETE"):
            head += "Content-Length: 0\r\n"
        req = head.encode() + b"\r\n" + payload
        for attempt in range(2):
            reused = False
            conn = None
            now = time.monotonic()
            while self.idle:
                r, w, last = self.idle.pop()
                if now - last < 30 and not w.is_closing():
                    conn, reused = (r, w), True
                    break
                w.close()
            if conn is None:
                conn = await self._open()
            r, w = conn
            got_bytes = [False]
            try:
                w.write(req)
                status, close, raw = await asyncio.wait_for(self._read(r, got_bytes), self.timeout)
            except asyncio.TimeoutError:
                w.close()
                raise
            except (ConnectionError, asyncio.IncompleteReadError, OSError, ssl.SSLError) as e:
                w.close()
                if reused and not got_bytes[0] and attempt == 0:
                    self.stale_retries += 1  # nginx closed an idle keep-alive connection: retry once
                    continue
                raise HTTPError(f"{type(e).__name__}: {e}") from e
            if close:
                w.close()
            else:
                self.idle.append((r, w, time.monotonic()))
            data = None
            if raw:
                try:
                    data = json.loads(raw)
                except ValueError:
                    data = None
            return status, data, raw
        raise HTTPError("unreachable")

    @staticmethod
    async def _read(reader, got_bytes):
        first = await reader.readuntil(b"\r\n")
        got_bytes[0] = True
        head = first + await reader.readuntil(b"\r\n\r\n") if first != b"\r\n" else first
        status = int(head[9:12])
        low = head.lower()
        body = b""
        i = low.find(b"content-length:")
        if i >= 0:
            body = await reader.readexactly(int(low[i + 15:low.find(b"\r\n", i)]))
        elif b"transfer-encoding: chunked" in low:
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        return status, b"connection: close" in low, body

    def close(self):
        for _, w, _ in self.idle:
            w.close()
        self.idle.clear()


# ------------------------------------------------------------------- WebSocket client

def ws_frame(opcode: int, payload: bytes) -> bytes:
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


class Conn:
    """One WebSocket connection's record (a slot makes a new one at every reconnect)."""

    def __init__(self, slot, cid):
        self.slot, self.id = slot, cid
        self.t_connect = time.monotonic()
        self.t_ready = None
        self.t_close = None          # the client started closing (or the end of the run)
        self.ready_rooms: dict = {}  # room_id -> last_seq
        self.recv: list = []         # (room_id, seq, t, message dict)
        self.dropped = None          # why, when the server closed or the connection broke
        self.other = 0
        self.pongs = 0


class WSProto(asyncio.Protocol):
    """A minimal client: upgrade, auth frame, ready; records message.created, answers pings."""

    def __init__(self, conn: Conn, token: str, host: str, on_drop):
        self.c, self.token, self.host, self.on_drop = conn, token, host, on_drop
        self.state = 0  # 0 upgrading, 1 authenticating, 2 ready, 3 closing, 4 gone
        self.buf = b""
        self.transport = None
        loop = asyncio.get_running_loop()
        self.ready = loop.create_future()
        self.closed = loop.create_future()

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
        t = time.monotonic()
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
        pos, n = 0, len(buf)
        while n - pos >= 2:
            ln = buf[pos + 1] & 0x7F
            hl = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln, hl = (buf[pos + 2] << 8) | buf[pos + 3], 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln, hl = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            end = pos + hl + ln
            if end > n:
                break
            op = buf[pos] & 0x0F
            payload = buf[pos + hl:end]
            pos = end
            if op == 1:
                self._text(payload, t)
            elif op == 9:
                self.transport.write(ws_frame(10, payload))
            elif op == 8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                why = f"close {code} {bytes(payload[2:]).decode(errors='replace')}".strip()
                if self.state == 3:  # the answer to our close
                    self.state = 4
                    self.transport.close()
                    return
                self.state, prev = 4, self.state
                if prev == 2:
                    self.c.dropped = why
                    self.on_drop(self.c, why)
                self._fail(f"closed by the server: {why}")
                return
        self.buf = buf[pos:] if pos < n else b""

    def _text(self, payload, t):
        try:
            ev = json.loads(payload)
        except ValueError:
            self.c.other += 1
            return
        typ = ev.get("type")
        if self.state == 2 or self.state == 3:
            if typ == "message.created":
                m = ev.get("message") or {}
                self.c.recv.append((ev.get("room_id"), m.get("seq"), t, m))
            elif typ == "pong":
                self.c.pongs += 1
            else:
                self.c.other += 1
        elif self.state == 1:
            if typ == "ready":
                self.state = 2
                self.c.t_ready = t
                self.c.ready_rooms = {r["room_id"]: r["last_seq"] for r in ev.get("rooms", [])}
                if not self.ready.done():
                    self.ready.set_result(True)
            else:
                self._fail("before ready: " + payload[:200].decode(errors="replace"))

    def connection_lost(self, exc):
        if self.state == 2:
            why = f"connection lost without a close frame ({exc})"
            self.c.dropped = why
            self.on_drop(self.c, why)
        self.state = 4
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"connection lost: {exc}"))
        if not self.closed.done():
            self.closed.set_result(True)

    def send_json(self, obj):
        if self.state == 2 and self.transport:
            self.transport.write(ws_frame(1, json.dumps(obj).encode()))

    async def close(self):
        if self.state == 2 and self.transport:
            self.state = 3
            self.c.t_close = time.monotonic()
            self.transport.write(ws_frame(8, struct.pack("!H", 1000)))
            try:
                await asyncio.wait_for(asyncio.shield(self.closed), 3)
            except asyncio.TimeoutError:
                self.transport.close()
        elif self.transport:
            self.transport.close()


# ------------------------------------------------------------------------------- model

class User:
    def __init__(self, email, password, kind):
        self.email, self.password, self.kind = email, password, kind
        self.id = None
        self.token = None
        self.ws_token = None
        self.rooms: set = set()  # current memberships (as the soak knows them)
        self.busy = False


class Slot:
    """A socket a user keeps open; reconnects make new Conns."""

    def __init__(self, user, token, idx):
        self.user, self.token, self.idx = user, token, idx
        self.proto: WSProto | None = None
        self.conns: list[Conn] = []
        self.held: dict = {}    # room_id -> set of seqs held (WebSocket or resume)
        self.start: dict = {}   # room_id -> last_seq at the first ready (core slots)
        self.busy = False


class Room:
    def __init__(self, rid, name):
        self.id, self.name = rid, name
        self.msgs: dict = {}     # seq -> message dict as the POST answered
        self.by_cid: dict = {}   # client_id -> seq
        self.sends: list = []    # (t_start, t_end, seq), in t_start order of completion (sorted later)
        self.prefix = 0          # every seq 1..prefix has been acknowledged
        self.core: list = []     # permanent members (User)

    def ack(self, m, t0, t1):
        seq = m["seq"]
        self.msgs[seq] = m
        self.by_cid[m["client_id"]] = seq
        self.sends.append((t0, t1, seq))
        while self.prefix + 1 in self.msgs:
            self.prefix += 1


# -------------------------------------------------------------------------------- soak

class Soak:
    def __init__(self, o, env):
        self.o, self.env = o, env
        u = urlsplit(env["HTTPS_URL"])
        self.host, self.port = u.hostname, u.port or 443
        self.tls, self.tls_note = tls_context(env["STACK_DIR"])
        self.pool = Pool(self.host, self.port, self.tls, o.timeout)
        self.errors = Errors()
        self.warnings = Errors()
        self.lat: dict[str, list] = {}
        self.lat_at: dict[str, list] = {}  # when each latency was taken (monotonic), for the drift line
        self.counts: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        self.recovered: dict[int, int] = {}  # failed sends a same-client_id retry settled: status of the retry
        self.tag = uuid.uuid4().hex[:8]
        self.rng = random.Random(o.seed)
        self.users: list[User] = []
        self.core: list[User] = []
        self.churn: list[User] = []
        self.owner: User | None = None
        self.rooms: list[Room] = []
        self.room_by_id: dict = {}
        self.slots: list[Slot] = []
        self.cid_n = 0
        self.conn_n = 0
        self.membership: dict = {}  # (user_id, room_id) -> list of (kind, t_start, t_end) ops
        self.inflight: dict[str, int] = {}
        self.running = True
        self.rss: list = []  # (label, t, {service: {pid: (comm, kib)}})
        self.t0 = time.monotonic()
        self.tasks: set = set()

    # ---------------------------------------------------------------- basic operations

    async def call(self, op, method, path, token=None, body=None, expect=(200,), record=True):
        """One checked request: -> (ok, status, data, t_start, t_end)."""
        t0 = time.monotonic()
        try:
            status, data, raw = await self.pool.request(method, path, token, body)
        except asyncio.TimeoutError:
            self.errors.add(f"{op}: timeout (> {self.o.timeout:g} s)", f"{method} {path}")
            return False, 0, None, t0, time.monotonic()
        except HTTPError as e:
            self.errors.add(f"{op}: connection error", f"{method} {path}: {e}")
            return False, 0, None, t0, time.monotonic()
        t1 = time.monotonic()
        if record:
            self.lat.setdefault(op, []).append((t1 - t0) * 1000)
            self.lat_at.setdefault(op, []).append(t0)
            self.counts[op] = self.counts.get(op, 0) + 1
        if status not in expect:
            code = (data or {}).get("error", {}).get("code", "") if isinstance(data, dict) else ""
            self.errors.add(f"{op}: HTTP {status} {code}".rstrip(), f"{method} {path}: {raw[:200].decode(errors='replace')}")
            return False, status, data, t0, t1
        return True, status, data, t0, t1

    def check(self, cond, kind, example=""):
        if not cond:
            self.errors.add(kind, example)
        return cond

    # ---------------------------------------------------------------------------- setup

    async def setup(self):
        o = self.o
        pw = lambda: "soak-" + secrets.token_urlsafe(12)  # noqa: E731
        self.owner = User(f"soak-{self.tag}-owner@example.test", pw(), "owner")
        self.core = [User(f"soak-{self.tag}-core{i}@example.test", pw(), "core") for i in range(o.users)]
        self.churn = [User(f"soak-{self.tag}-churn{i}@example.test", pw(), "churn") for i in range(o.churn_users)]
        self.users = [self.owner] + self.core + self.churn
        sem = asyncio.Semaphore(4)

        async def register(u):
            async with sem:
                ok, _, data, _, _ = await self.call("setup", "POST", "/api/auth/register", body={
                    "email": u.email, "password": u.password, "display_name": u.email.split("@")[0]}, expect=(201,))
                if not ok:
                    raise RuntimeError(f"register {u.email} failed: {self.errors.examples}")
                u.id = data["user"]["id"]

        await asyncio.gather(*(register(u) for u in self.users))
        # Verification: the link in the email the worker sent to the stack's SMTP sink.
        links = await self.wait_mail({u.email for u in self.users}, timeout=60)

        async def verify_and_login(u):
            async with sem:
                ok, _, data, _, _ = await self.call("setup", "GET", "/api/auth/verify-email?token=" + links[u.email])
                if not ok or data["user"]["id"] != u.id or not data["user"]["email_verified"]:
                    raise RuntimeError(f"verify {u.email} failed: {data} {self.errors.examples}")
                u.token = data["token"]  # the session verify-email opens: the user's REST calls
                if u.kind != "owner":    # the first socket's session: a real login
                    u.ws_token = await self.login(u, "setup")

        await asyncio.gather(*(verify_and_login(u) for u in self.users))
        for i in range(o.rooms):
            ok, _, data, _, _ = await self.call("setup", "POST", "/api/rooms", self.owner.token,
                                                {"name": f"soak {self.tag} {i}", "kind": "public"}, expect=(201,))
            if not ok:
                raise RuntimeError(f"room creation failed: {self.errors.examples}")
            r = Room(data["id"], data["name"])
            self.rooms.append(r)
            self.room_by_id[r.id] = r
        per_user = min(2, o.rooms)
        for i, u in enumerate(self.core):
            for k in range(per_user):
                r = self.rooms[(i + k) % o.rooms]
                ok, _, data, _, _ = await self.call("setup", "POST", f"/api/rooms/{r.id}/join", u.token)
                if not ok:
                    raise RuntimeError(f"join failed: {self.errors.examples}")
                u.rooms.add(r.id)
                r.core.append(u)
        # Sockets: one per user (core and churn), a second one ("another tab", its own
        # session) for every --second-tab-every-th core user.
        for i, u in enumerate(self.core + self.churn):
            self.slots.append(Slot(u, u.ws_token, len(self.slots)))
            if u.kind == "core" and o.second_tab_every and i % o.second_tab_every == 0:
                self.slots.append(Slot(u, await self.login(u, "setup"), len(self.slots)))
        await asyncio.gather(*(self.connect(s, first=True) for s in self.slots))
        if self.errors.total:
            raise RuntimeError(f"setup failed: {self.errors.counts} {self.errors.examples}")

    async def wait_mail(self, emails: set, timeout: float) -> dict:
        mail_dir = Path(self.env["MAIL_DIR"])
        found: dict = {}
        seen: set = set()
        deadline = time.monotonic() + timeout
        rx = re.compile(r"/verify-email\?token=([A-Za-z0-9_\-]+)")
        while time.monotonic() < deadline:
            for f in mail_dir.iterdir():
                if f.name in seen or not f.name.endswith(".eml"):
                    continue
                seen.add(f.name)
                try:
                    msg = email.message_from_bytes(f.read_bytes())
                except OSError:
                    seen.discard(f.name)
                    continue
                to = (msg.get("To") or "").strip().lower()
                if to not in emails:
                    continue
                for part in msg.walk():
                    if part.get_content_type() == "text/plain":
                        m = rx.search(part.get_payload(decode=True).decode(errors="replace"))
                        if m:
                            found[to] = m[1]
            if len(found) == len(emails):
                return found
            await asyncio.sleep(0.3)
        raise RuntimeError(f"verification emails missing after {timeout:.0f} s: {len(emails) - len(found)} of {len(emails)}")

    async def login(self, u: User, op="login") -> str | None:
        ok, _, data, _, _ = await self.call(op, "POST", "/api/auth/login", body={"email": u.email, "password": u.password})
        if not ok:
            return None
        self.check(data.get("user", {}).get("id") == u.id and data.get("token"), f"{op}: wrong answer", str(data)[:200])
        return data.get("token")

    # ------------------------------------------------------------------------ sockets

    def on_drop(self, conn: Conn, why: str):
        self.errors.add(f"ws: socket dropped by the server ({why.split(' (')[0][:60]})",
                        f"slot {conn.slot.idx} user {conn.slot.user.email} conn {conn.id}: {why}")
        if self.running:
            self.spawn(self.reconnect_after_drop(conn.slot))

    async def reconnect_after_drop(self, slot: Slot):
        await asyncio.sleep(1)
        if self.running and not slot.busy:
            slot.busy = True
            try:
                await self.connect(slot)
            finally:
                slot.busy = False

    async def connect(self, slot: Slot, first=False) -> bool:
        loop = asyncio.get_running_loop()
        self.conn_n += 1
        c = Conn(slot, self.conn_n)
        slot.conns.append(c)
        t0 = time.monotonic()
        proto = None
        try:
            _, proto = await asyncio.wait_for(loop.create_connection(
                lambda: WSProto(c, slot.token, f"{self.host}:{self.port}", self.on_drop),
                self.host, self.port, ssl=self.tls, server_hostname=self.host), self.o.timeout)
            await asyncio.wait_for(proto.ready, self.o.timeout)
        except Exception as e:  # noqa: BLE001 - counted
            self.errors.add("ws: connect failed", f"{type(e).__name__}: {e}")
            c.t_ready = None
            c.t_close = time.monotonic()
            if proto and proto.transport:
                proto.transport.close()
            return False
        slot.proto = proto
        t1 = time.monotonic()
        if not first:
            self.lat.setdefault("ws connect+ready", []).append((t1 - t0) * 1000)
            self.counts["ws connect+ready"] = self.counts.get("ws connect+ready", 0) + 1
        # ready must list exactly the rooms the user is in (those not in flight).
        mine = set(c.ready_rooms)
        if slot.user.kind == "core":
            self.check(mine == slot.user.rooms, "ws: ready lists the wrong rooms", f"{sorted(mine)} != {sorted(slot.user.rooms)}")
        if first:
            for rid, last in c.ready_rooms.items():
                slot.start[rid] = last
                slot.held.setdefault(rid, set())
        else:
            await self.resume(slot, c)
        return True

    async def resume(self, slot: Slot, c: Conn):
        """Fetches what the slot missed: for each room of ready, after_seq = the highest seq
        held without a gap below it."""
        t0 = time.monotonic()
        self.absorb(slot, exclude=c)  # what the client held before this socket came up
        for rid, last in c.ready_rooms.items():
            held = slot.held.setdefault(rid, set())
            if slot.user.kind == "core":
                base = slot.start.get(rid, 0)
            else:  # a churn user holds nothing of a room it joined since: the newest page
                base = slot.start.setdefault(rid, max(0, last - 100) if not held else min(held) - 1)
            # Resume after the highest *contiguous* seq held, not the highest held: another
            # socket of the same user (a second tab, itself resuming) may already hold live
            # events past a seq its own fetch has not brought yet.
            have = base
            while have + 1 in held:
                have += 1
            cursor = have
            for _ in range(1000):
                if cursor >= last:
                    break
                churn = slot.user.kind != "core"
                ok, status, data, _, _ = await self.call("resume (GET after_seq)", "GET",
                                                         f"/api/rooms/{rid}/messages?after_seq={cursor}&limit=100",
                                                         slot.token, expect=(200, 403) if churn else (200,))
                if not ok:
                    break
                if status == 403:
                    # A churn user that left (or was removed from) the room after ready listed
                    # it: the leave is in flight (busy) or ended after ready. Anything else is
                    # an error.
                    code = (data or {}).get("error", {}).get("code") if isinstance(data, dict) else None
                    left = any(kind == "leave" and t1 >= (c.t_ready or 0)
                               for kind, _, t1 in self.membership.get((slot.user.id, rid), []))
                    self.check(code == "not_a_member" and (slot.user.busy or left),
                               "resume (GET after_seq): 403 without a leave", f"room {rid}: {str(data)[:200]}")
                    break
                msgs = data.get("messages", [])
                for m in msgs:
                    self.check_message(rid, m, "resume")
                    held.add(m["seq"])
                if not msgs:
                    break
                cursor = msgs[-1]["seq"]
                if not data.get("has_more"):
                    break
            if slot.user.kind == "core":
                start = slot.start.get(rid, 0)
                missing = [s for s in range(start + 1, last + 1) if s not in held]
                self.check(not missing, "resume gap (a seq <= ready's last_seq not held after resuming)",
                           f"room {rid} missing {missing[:10]}")
        self.absorb(slot)
        self.lat.setdefault("resume (all rooms)", []).append((time.monotonic() - t0) * 1000)
        self.counts["resume (all rooms)"] = self.counts.get("resume (all rooms)", 0) + 1

    def absorb(self, slot: Slot, exclude=None):
        """Moves the seqs that arrived over the slot's sockets into its held sets."""
        for c in slot.conns:
            if c is exclude:
                continue
            start = getattr(c, "_absorbed", 0)
            for rid, seq, _, _ in c.recv[start:]:
                if isinstance(seq, int):
                    slot.held.setdefault(rid, set()).add(seq)
            c._absorbed = len(c.recv)

    # ---------------------------------------------------------------------- operations

    def check_message(self, rid, m, where):
        room = self.room_by_id.get(rid)
        if room is None:
            return self.check(False, f"{where}: message of an unknown room", str(m)[:200])
        seq = m.get("seq")
        mine = room.msgs.get(seq)
        if mine is None:
            return True  # not acknowledged yet (in flight): checked in the final audit
        same = all(m.get(k) == mine.get(k) for k in ("id", "room_id", "author_id", "body", "client_id", "created_at"))
        return self.check(same and m.get("deleted") is False, f"{where}: message differs from what the POST answered",
                          f"got {str(m)[:150]} want {str(mine)[:150]}")

    def next_cid(self):
        self.cid_n += 1
        return f"soak-{self.tag}-{self.cid_n}"

    def body(self):
        n = self.rng.choice((1, 2, 5, 20, 60))
        return " ".join(self.rng.choice(WORDS) for _ in range(n)) + f" #{self.cid_n}"

    async def op_send(self):
        room = self.rng.choice(self.rooms)
        author = self.rng.choice(room.core)
        cid = self.next_cid()
        text = self.body()
        ok, status, m, t0, t1 = await self.call("send", "POST", f"/api/rooms/{room.id}/messages", author.token,
                                                {"body": text, "client_id": cid}, expect=(201,))
        if not ok and status in (0, 500, 502, 503, 504):
            # Counted as an error above. Then what a real client does (API.md: safe retry):
            # the same client_id again, so a message the server stored anyway is known by
            # its seq and the realtime/history accounting stays exact.
            for _ in range(3):
                await asyncio.sleep(1)
                ok, status, m, _, t1 = await self.call("send (retry after an error)", "POST", f"/api/rooms/{room.id}/messages",
                                                       author.token, {"body": text, "client_id": cid}, expect=(200, 201))
                if ok or status not in (0, 500, 502, 503, 504):
                    break
            if ok:
                self.recovered[status] = self.recovered.get(status, 0) + 1
        if not ok:
            return
        good = (m.get("body") == text and m.get("client_id") == cid and m.get("author_id") == author.id
                and m.get("room_id") == room.id and isinstance(m.get("seq"), int) and m["seq"] not in room.msgs)
        if not self.check(good, "send: wrong answer (body/client_id/author/room or a seq given twice)", str(m)[:200]):
            return
        room.ack(m, t0, t1)
        if self.rng.random() < self.o.retry_share:
            ok, status, m2, _, _ = await self.call("send retry (same client_id)", "POST", f"/api/rooms/{room.id}/messages",
                                                   author.token, {"body": text, "client_id": cid}, expect=(200,))
            if ok:
                self.check(m2.get("id") == m["id"] and m2.get("seq") == m["seq"],
                           "send retry: not the original message", f"{str(m2)[:150]} vs {str(m)[:150]}")

    async def op_history(self):
        u = self.rng.choice(self.core)
        room = self.room_by_id[self.rng.choice(sorted(u.rooms))]
        known = room.prefix  # every seq <= known was acknowledged before this read started
        limit = self.rng.choice((1, 10, 50, 100))
        mode = self.rng.choice(("newest", "before", "after"))
        if mode == "newest":
            q = f"limit={limit}"
        elif mode == "before":
            b = self.rng.randint(1, known + 1)
            q = f"before_seq={b}&limit={limit}"
        else:
            a = self.rng.randint(max(0, known - 300), known) if known else 0
            q = f"after_seq={a}&limit={limit}"
        ok, _, data, _, _ = await self.call("history", "GET", f"/api/rooms/{room.id}/messages?{q}", u.token)
        if not ok:
            return
        msgs = data.get("messages")
        if not self.check(isinstance(msgs, list) and isinstance(data.get("has_more"), bool), "history: bad shape", str(data)[:200]):
            return
        seqs = [m.get("seq") for m in msgs]
        bad = []
        if len(msgs) > limit:
            bad.append(f"{len(msgs)} > limit {limit}")
        if seqs and seqs != list(range(seqs[0], seqs[0] + len(seqs))):
            bad.append(f"seqs not contiguous ascending: {seqs[:12]}")
        if mode == "newest":
            if known and (not seqs or seqs[-1] < known):
                bad.append(f"newest page ends at {seqs[-1] if seqs else None} < acknowledged {known}")
            if seqs and data["has_more"] != (seqs[0] > 1):
                bad.append(f"has_more {data['has_more']} with first seq {seqs[0]}")
        elif mode == "before":
            want = list(range(max(1, b - limit), b))
            if seqs != want:
                bad.append(f"before_seq={b} limit={limit}: got {seqs[:3]}..{seqs[-3:]} want {want[:3]}..{want[-3:]}")
            if data["has_more"] != (b - limit > 1):
                bad.append(f"before_seq={b} limit={limit}: has_more {data['has_more']}")
        else:
            if seqs and seqs[0] != a + 1:
                bad.append(f"after_seq={a}: first seq {seqs[0]}")
            if a + limit <= known and len(seqs) != limit:
                bad.append(f"after_seq={a} limit={limit}: {len(seqs)} messages although {known} were acknowledged")
            if a + limit < known and not data["has_more"]:
                bad.append(f"after_seq={a} limit={limit}: has_more false although {known} were acknowledged")
            if a >= known and not seqs and data["has_more"]:
                pass  # newer messages in flight may exist
        self.check(not bad, "history: wrong page", f"room {room.id}: " + "; ".join(bad))
        for m in msgs:
            self.check_message(room.id, m, "history")

    async def op_login(self):
        u = self.rng.choice(self.core)
        token = await self.login(u)
        if not token:
            return
        ok, _, me, _, _ = await self.call("me (new session)", "GET", "/api/me", token)
        if ok:
            self.check(me.get("id") == u.id and me.get("email") == u.email.lower(), "me: wrong user", str(me)[:200])
        await self.call("logout", "POST", "/api/auth/logout", token, expect=(204,))
        ok, _, _, _, _ = await self.call("me after logout (401 expected)", "GET", "/api/me", token, expect=(401,))

    async def op_membership(self):
        free = [u for u in self.churn if not u.busy]
        if not free:
            self.skipped["membership"] = self.skipped.get("membership", 0) + 1
            return
        u = self.rng.choice(free)
        room = self.rng.choice(self.rooms)
        u.busy = True
        try:
            by_owner = self.rng.random() < 0.3
            key = (u.id, room.id)
            if room.id in u.rooms:
                if by_owner:
                    ok, _, _, t0, t1 = await self.call("remove member (owner)", "DELETE", f"/api/rooms/{room.id}/members/{u.id}",
                                                       self.owner.token, expect=(204,))
                else:
                    ok, _, _, t0, t1 = await self.call("leave", "POST", f"/api/rooms/{room.id}/leave", u.token, expect=(204,))
                self.membership.setdefault(key, []).append(("leave", t0, t1))
                if ok:
                    u.rooms.discard(room.id)
            else:
                if by_owner:
                    ok, status, data, t0, t1 = await self.call("add member (owner)", "POST", f"/api/rooms/{room.id}/members",
                                                               self.owner.token, {"user_id": u.id}, expect=(201,))
                    if ok:
                        self.check(data.get("user_id") == u.id and data.get("role") == "member", "add member: wrong answer", str(data)[:200])
                else:
                    ok, _, data, t0, t1 = await self.call("join", "POST", f"/api/rooms/{room.id}/join", u.token)
                    if ok:
                        self.check(data.get("id") == room.id, "join: wrong answer", str(data)[:200])
                self.membership.setdefault(key, []).append(("join", t0, t1))
                if ok:
                    u.rooms.add(room.id)
        finally:
            u.busy = False

    async def op_rooms(self):
        u = self.rng.choice(self.core + self.churn)
        if u.busy:
            return
        u.busy = True
        try:
            ok, _, data, _, _ = await self.call("rooms list", "GET", "/api/rooms", u.token)
            if ok:
                got = {r["id"] for r in data.get("rooms", [])}
                self.check(got == u.rooms, "rooms list: not the caller's rooms", f"{sorted(got)} != {sorted(u.rooms)}")
        finally:
            u.busy = False
        if u.kind == "core":
            room = self.room_by_id[self.rng.choice(sorted(u.rooms))]
            ok, _, data, _, _ = await self.call("members list", "GET", f"/api/rooms/{room.id}/members", u.token)
            if ok:
                got = {m["user_id"] for m in data.get("members", [])}
                want = {x.id for x in room.core} | {self.owner.id}
                self.check(want <= got, "members list: a permanent member missing", f"missing {want - got}")

    async def op_reconnect(self):
        free = [s for s in self.slots if not s.busy and s.proto is not None and s.proto.state == 2]
        if not free:
            self.skipped["reconnect"] = self.skipped.get("reconnect", 0) + 1
            return
        s = self.rng.choice(free)
        s.busy = True
        try:
            if self.rng.random() < 0.5:  # an application-level ping first
                s.proto.send_json({"type": "ping"})
                await asyncio.sleep(0.2)
            await s.proto.close()
            await asyncio.sleep(self.rng.uniform(0.0, 2.0))  # offline for a moment: messages to fetch on resume
            if self.running:
                await self.connect(s)
        finally:
            s.busy = False

    # --------------------------------------------------------------------- scheduling

    def spawn(self, coro):
        t = asyncio.ensure_future(coro)
        self.tasks.add(t)
        t.add_done_callback(self._done)
        return t

    def _done(self, t):
        self.tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            e = t.exception()
            self.errors.add(f"soak: {type(e).__name__} in an operation", repr(e)[:300])

    async def ticker(self, name, rate, fn, max_inflight, until):
        if rate <= 0:
            return
        interval = 1.0 / rate
        nxt = time.monotonic() + self.rng.uniform(0, interval)
        while self.running and time.monotonic() < until:
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            nxt += interval * self.rng.uniform(0.5, 1.5)
            if not self.running or time.monotonic() >= until:
                break
            if self.inflight.get(name, 0) >= max_inflight:
                self.skipped[name] = self.skipped.get(name, 0) + 1
                continue
            self.inflight[name] = self.inflight.get(name, 0) + 1

            async def run(fn=fn, name=name):
                try:
                    await fn()
                finally:
                    self.inflight[name] -= 1
            self.spawn(run())

    # ---------------------------------------------------------------------------- RSS

    def stack_processes(self) -> dict:
        """service -> {pid: (comm, VmRSS KiB)}: each pid file's process and its descendants."""
        children: dict = {}
        ticks: dict = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        parts = f.read().rsplit(")", 1)[1].split()
                    children.setdefault(int(parts[1]), []).append(int(d))
                    ticks[int(d)] = int(parts[11]) + int(parts[12])
                except (OSError, ValueError, IndexError):
                    pass
        out = {}
        for pf in sorted(Path(self.env["STACK_DIR"], "pids").glob("*.pid")):
            name = pf.stem
            try:
                root = int(pf.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            procs, todo = {}, [root]
            while todo:
                p = todo.pop()
                rss, comm = rss_kib(p)
                if rss is None:
                    continue
                procs[p] = (comm, rss, ticks.get(p, 0))
                todo.extend(children.get(p, []))
            if procs:
                out[name] = procs
        return out

    def sample_rss(self, label):
        self.rss.append((label, time.monotonic() - self.t0, self.stack_processes()))

    async def rss_sampler(self, until):
        while self.running and time.monotonic() + self.o.sample_every < until:
            await asyncio.sleep(self.o.sample_every)
            if self.running:
                self.sample_rss(f"t+{(time.monotonic() - self.t_traffic) / 60:.0f}m")

    # ------------------------------------------------------------------------ the run

    async def run(self):
        o = self.o
        print(f"soak: {self.env['HTTPS_URL']} (TLS {self.tls_note}); {self.env.get('FCGI_PROCESSES')} fcgi, "
              f"{self.env.get('WS_RELAYS')} relays; {os.cpu_count()} cores, load average {loadavg()}; "
              f"{o.minutes:g} min of traffic; tag {self.tag}")
        t_setup = time.monotonic()
        await self.setup()
        print(f"setup {time.monotonic() - t_setup:.1f} s: {len(self.users)} users registered, verified by email "
              f"and logged in through the API ({o.users} core, {o.churn_users} churn, 1 owner), {o.rooms} public rooms, "
              f"{len(self.slots)} sockets via wss", flush=True)
        self.sample_rss("setup")
        self.t_traffic = time.monotonic()
        self.ru0 = resource.getrusage(resource.RUSAGE_SELF)
        until = self.t_traffic + o.minutes * 60
        rates = [("send", o.send_rate, self.op_send, 16), ("history", o.history_rate, self.op_history, 8),
                 ("login", o.login_rate, self.op_login, 4), ("membership", o.membership_rate, self.op_membership, 4),
                 ("rooms", o.rooms_rate, self.op_rooms, 4), ("reconnect", o.reconnect_rate, self.op_reconnect, 4)]
        tickers = [asyncio.ensure_future(self.ticker(n, r, f, m, until)) for n, r, f, m in rates]

        async def baseline():
            await asyncio.sleep(min(o.warmup, o.minutes * 60 / 3))
            self.sample_rss("start")
            print(f"warm-up done; RSS baseline taken at t+{time.monotonic() - self.t_traffic:.0f} s; "
                  f"errors so far {self.errors.total}", flush=True)
            await self.rss_sampler(until)
        sampler = asyncio.ensure_future(baseline())

        async def progress():
            while time.monotonic() < until - 1:
                await asyncio.sleep(min(60, max(1, until - time.monotonic() - 1)))
                if time.monotonic() < until - 1:
                    print(f"  t+{(time.monotonic() - self.t_traffic) / 60:4.1f} min: {sum(len(r.msgs) for r in self.rooms)} "
                          f"messages, {sum(len(c.recv) for s in self.slots for c in s.conns)} deliveries, "
                          f"{sum(self.counts.values())} requests, errors {self.errors.total}", flush=True)
        prog = asyncio.ensure_future(progress())
        await asyncio.gather(*tickers)
        self.running = False
        sampler.cancel()
        prog.cancel()
        # In-flight operations finish (bounded), then the sockets drain.
        t_end = time.monotonic()
        while self.tasks and time.monotonic() - t_end < o.timeout + 5:
            await asyncio.sleep(0.1)
        for t in list(self.tasks):
            t.cancel()
            self.errors.add("soak: operation still running at the end", repr(t)[:200])
        await self.drain()
        self.sample_rss("end")
        traffic_s = time.monotonic() - self.t_traffic
        ru = resource.getrusage(resource.RUSAGE_SELF)
        self.client_cpu = ru.ru_utime + ru.ru_stime - self.ru0.ru_utime - self.ru0.ru_stime
        await asyncio.gather(*(s.proto.close() for s in self.slots if s.proto is not None), return_exceptions=True)
        now = time.monotonic()
        for s in self.slots:
            for c in s.conns:
                if c.t_close is None:
                    c.t_close = now
        self.account()
        await self.audit()
        return traffic_s

    async def drain(self):
        """Waits until no delivery arrived for 2 s (at most 15 s)."""
        start = last_change = time.monotonic()
        last = -1
        while time.monotonic() - start < 15:
            n = sum(len(c.recv) for s in self.slots for c in s.conns)
            if n != last:
                last, last_change = n, time.monotonic()
            elif time.monotonic() - last_change > 2:
                break
            await asyncio.sleep(0.2)

    # ----------------------------------------------------------------------- accounting

    def member_windows(self, user: User, rid: str):
        """(required, forbidden) interval lists for a user's membership of a room:
        required: [join answered, leave started]; forbidden: [leave answered, next join started]."""
        if user.kind == "core":
            return ([(-1e18, 1e18)], []) if rid in user.rooms else ([], [(-1e18, 1e18)])
        ops = self.membership.get((user.id, rid), [])
        req, forb = [], []
        member_since = None
        free_since = -1e18  # not a member before the first join
        for kind, t0, t1 in ops:
            if kind == "join":
                if free_since is not None:
                    forb.append((free_since, t0))
                free_since = None
                member_since = t1
            else:
                if member_since is not None:
                    req.append((member_since, t0))
                member_since = None
                free_since = t1
        if member_since is not None:
            req.append((member_since, 1e18))
        if free_since is not None:
            forb.append((free_since, 1e18))
        return req, forb

    def account(self):
        """Per socket: every message it should have got, exactly once; none it must not get."""
        for r in self.rooms:
            r.sends.sort()
            r.starts = [s[0] for s in r.sends]
        lats, lats_at = [], []
        expected_total = delivered_total = 0
        for slot in self.slots:
            u = slot.user
            windows = {r.id: self.member_windows(u, r.id) for r in self.rooms}
            for c in slot.conns:
                if c.t_ready is None:
                    continue
                got: dict = {}
                last_seq: dict = {}
                for rid, seq, t, m in c.recv:
                    room = self.room_by_id.get(rid)
                    if room is None or not isinstance(seq, int):
                        self.errors.add("ws: message.created of an unknown room", str(m)[:200])
                        continue
                    key = (rid, seq)
                    if key in got:
                        self.errors.add("ws: duplicated delivery", f"conn {c.id} user {u.email} room {rid} seq {seq}")
                        continue
                    got[key] = t
                    if seq < last_seq.get(rid, 0):
                        self.warnings.add("ws: delivery after a higher seq of the same room",
                                          f"conn {c.id} room {rid} seq {seq} after {last_seq[rid]}")
                    last_seq[rid] = max(last_seq.get(rid, 0), seq)
                    mine = room.msgs.get(seq)
                    if mine is None:
                        self.errors.add("ws: delivered message never acknowledged by a POST", str(m)[:200])
                        continue
                    self.check_message(rid, m, "ws")
                    delivered_total += 1
                for room in self.rooms:
                    req, forb = windows[room.id]
                    lo = bisect_right(room.starts, c.t_ready)
                    hi = bisect_left(room.starts, c.t_close)
                    for ts, te, seq in room.sends[lo:hi]:
                        k = (room.id, seq)
                        inside_req = te < c.t_close - CLOSE_MARGIN and any(a < ts and te < b for a, b in req)
                        inside_forb = any(a < ts and te < b for a, b in forb)
                        if k in got:
                            if inside_forb:
                                self.errors.add("ws: delivered although not a member (after leave / before join)",
                                                f"conn {c.id} user {u.email} room {room.id} seq {seq}")
                            else:
                                lats.append((got[k] - ts) * 1000)
                                lats_at.append(ts)
                        elif inside_req:
                            self.errors.add("ws: lost delivery (member, socket ready, not delivered)",
                                            f"conn {c.id} user {u.email} ({u.kind}) room {room.id} seq {seq}; "
                                            f"ready {c.t_ready - self.t0:.3f} close {c.t_close - self.t0:.3f} "
                                            f"post {ts - self.t0:.3f}..{te - self.t0:.3f}")
                        expected_total += inside_req
                # Deliveries outside [ready, close) of rooms the user was never in: misrouted.
                for (rid, seq) in got:
                    if u.kind == "core" and rid not in u.rooms:
                        self.errors.add("ws: misrouted (a room the user is not in)", f"conn {c.id} room {rid} seq {seq}")
        self.ws_lat = lats
        self.lat["send->deliver (WebSocket)"] = lats
        self.lat_at["send->deliver (WebSocket)"] = lats_at
        self.ws_expected = expected_total
        self.ws_delivered = delivered_total

    async def audit(self):
        """Reads every room's whole history back: seqs 1..last_seq, each the acknowledged message."""
        t0 = time.monotonic()
        total = 0
        for room in self.rooms:
            cursor, seen = 0, []
            for _ in range(100000):
                ok, _, data, _, _ = await self.call("audit", "GET", f"/api/rooms/{room.id}/messages?after_seq={cursor}&limit=100",
                                                    self.owner.token, record=False)
                if not ok:
                    break
                msgs = data.get("messages", [])
                for m in msgs:
                    seen.append(m["seq"])
                    mine = room.msgs.get(m["seq"])
                    if mine is None:
                        self.errors.add("audit: a stored message no POST acknowledged", str(m)[:200])
                    else:
                        self.check_message(room.id, m, "audit")
                if not msgs or not data.get("has_more"):
                    break
                cursor = msgs[-1]["seq"]
            total += len(seen)
            want = list(range(1, max(room.msgs, default=0) + 1))
            self.check(seen == want, "audit: history is not seqs 1..last_seq",
                       f"room {room.id}: {len(seen)} stored, {len(room.msgs)} acknowledged")
            self.check(set(room.msgs) == set(want), "audit: acknowledged seqs have gaps", f"room {room.id}")
        self.audit_info = (total, time.monotonic() - t0)

    async def cleanup(self):
        """Logs the soak's sessions out and removes its users, rooms and messages."""
        import psycopg2
        import redis

        for tok in [s.token for s in self.slots] + [u.token for u in self.users]:
            if tok:
                await self.call("cleanup", "POST", "/api/auth/logout", tok, expect=(204, 401), record=False)
        rooms = [r.id for r in self.rooms]
        try:
            import pymongo
            mongo = pymongo.MongoClient(self.env["MONGO_URL"], serverSelectionTimeoutMS=5000)
            mongo[self.env.get("MONGO_DB", "swiftchat")]["messages"].delete_many({"room_id": {"$in": rooms}})
            mongo.close()
        except Exception as e:  # noqa: BLE001
            print(f"cleanup: MongoDB messages not removed: {e}")
        db = psycopg2.connect(self.env["PG_DSN"])
        db.autocommit = True
        with db.cursor() as c:
            c.execute("DELETE FROM rooms WHERE id = ANY(%s::uuid[])", (rooms,))
            c.execute("DELETE FROM users WHERE id = ANY(%s::uuid[])", ([u.id for u in self.users if u.id],))
        db.close()
        rd = redis.Redis(host="127.0.0.1", port=int(self.env["REDIS_PORT"]))
        for u in self.users:
            if u.id:
                rd.delete(f"user_sessions:{u.id}", f"relay_queues:{u.id}", f"presence:{u.id}")
        rd.close()

    # -------------------------------------------------------------------------- report

    def report(self, traffic_s) -> int:
        o = self.o
        fail = []
        print(f"\n== soak result: {traffic_s / 60:.1f} min of traffic, {len(self.users)} users, {o.rooms} rooms, "
              f"{len(self.slots)} sockets, {self.conn_n} socket connections in all; load average now {loadavg()} "
              f"({os.cpu_count()} cores, shared with whatever else runs on the machine); this client used "
              f"{self.client_cpu:.0f} CPU s ({100 * self.client_cpu / traffic_s:.0f}% of a core)")
        total_req = sum(v for k, v in self.counts.items() if not k.startswith("ws ") and not k.startswith("resume (all"))
        print(f"requests {total_req} ({total_req / traffic_s:.1f}/s), messages sent {sum(len(r.msgs) for r in self.rooms)}, "
              f"WebSocket deliveries {self.ws_delivered} ({self.ws_expected} of them required and checked exactly-once, "
              f"the rest in join/leave/close windows); keep-alive connections opened {self.pool.opened}, "
              f"stale keep-alive retries {self.pool.stale_retries}")
        order = ["send", "send (retry after an error)", "send retry (same client_id)", "history", "login", "me (new session)", "logout",
                 "me after logout (401 expected)", "join", "leave", "add member (owner)", "remove member (owner)",
                 "rooms list", "members list", "ws connect+ready", "resume (GET after_seq)", "resume (all rooms)"]
        names = order + sorted(k for k in self.lat if k not in order and k not in ("setup", "send->deliver (WebSocket)"))
        print(f"{'operation':34} {'count':>7} {'errors':>6} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}  ms")
        for n in names:
            v = self.lat.get(n)
            if not v:
                continue
            errs = sum(c for k, c in self.errors.counts.items() if k.split(":")[0] == n)
            print(f"{n:34} {len(v):7d} {errs:6d} {pct(v, 50):7.1f} {pct(v, 95):7.1f} {pct(v, 99):7.1f} {max(v):7.1f}")
        v = self.ws_lat
        print(f"{'send->deliver (WebSocket)':34} {len(v):7d} {'':6} {pct(v, 50):7.1f} {pct(v, 95):7.1f} "
              f"{pct(v, 99):7.1f} {max(v) if v else float('nan'):7.1f}")
        # Drift: the same latencies in the first and the last minutes of the run.
        w = min(180.0, traffic_s / 3)
        a0, a1 = self.t_traffic, self.t_traffic + traffic_s
        parts = []
        for n in ("send", "history", "login", "send->deliver (WebSocket)"):
            at, v = self.lat_at.get(n, []), self.lat.get(n, [])
            first = [x for t, x in zip(at, v) if a0 <= t < a0 + w]
            last = [x for t, x in zip(at, v) if a1 - w <= t <= a1]
            parts.append(f"{n} {pct(first, 50):.1f}/{pct(first, 99):.1f} -> {pct(last, 50):.1f}/{pct(last, 99):.1f}")
        print(f"drift, p50/p99 ms in the first {w / 60:.1f} min -> the last {w / 60:.1f} min: " + "; ".join(parts))
        if self.recovered:
            print("sends that failed (counted as errors) and were settled by a retry with the same client_id: "
                  + ", ".join(f"{n} answered {st} ({'stored by the failed attempt' if st == 200 else 'stored now'})"
                              for st, n in sorted(self.recovered.items())))
        if self.skipped:
            print("not started (the same operation was still running / nothing free): "
                  + ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())))
        total, secs = self.audit_info
        print(f"history audit: {total} stored messages read back in {secs:.1f} s")
        # RSS table
        print(self.rss_table(fail))
        print(f"errors: {self.errors.total}")
        for k, n in sorted(self.errors.counts.items(), key=lambda kv: -kv[1]):
            print(f"  {n:6d}  {k}" + (f"   e.g. {self.errors.examples[k]}" if k in self.errors.examples else ""))
        for k, n in self.warnings.counts.items():
            print(f"WARNING: {n} x {k}   e.g. {self.warnings.examples.get(k, '')}")
        if self.errors.total:
            fail.append(f"{self.errors.total} errors")
        if fail:
            print("FAILED: " + "; ".join(fail))
            return 1
        print("OK: 0 errors; Swift processes' RSS within the bound")
        return 0

    def rss_table(self, fail) -> str:
        by_label = {label: procs for label, _, procs in self.rss}
        if "start" not in by_label or "end" not in by_label:
            return "RSS: no start/end sample"
        labels = [lab for lab, _, _ in self.rss if lab not in ("setup",)]
        # at most 4 columns between start and end
        mids = [lab for lab in labels if lab not in ("start", "end")]
        if len(mids) > 4:
            step = len(mids) / 4
            mids = [mids[int(round((i + 1) * step)) - 1] for i in range(4)]
        cols = ["start"] + mids + ["end"]

        def tot(label, svc):
            return sum(x[1] for x in by_label[label].get(svc, {}).values()) / 1024

        def cpu(svc):  # CPU seconds between the start and end samples (processes alive at both)
            a, b = by_label["start"].get(svc, {}), by_label["end"].get(svc, {})
            return sum(b[p][2] - a[p][2] for p in b if p in a) / os.sysconf("SC_CLK_TCK")

        services = sorted(set(by_label["start"]) | set(by_label["end"]),
                          key=lambda s: (not s.startswith(SWIFT_SERVICES), s))
        t_start = next(t for lab, t, _ in self.rss if lab == "start") - (self.t_traffic - self.t0)
        lines = [f"RSS MiB (VmRSS, process + children; start = after {t_start:.0f} s of traffic). Bound for Swift "
                 f"processes: end - start <= max({BOUND_MIB:g} MiB, {BOUND_SHARE:.0%} of start)",
                 "(services of several processes: the sum of their VmRSS, so shared pages such as PostgreSQL's "
                 "shared buffers count once per process)",
                 f"{'process':22}" + "".join(f"{c:>9}" for c in cols) + f"{'growth':>9}{'bound':>8}{'cpu s':>8}  verdict"]
        for svc in services:
            procs = by_label["end"].get(svc) or by_label["start"].get(svc, {})
            n = len(procs)
            comm = sorted({x[0] for x in procs.values()})
            name = f"{svc} ({n})" if n > 1 else svc
            vals = [tot(c, svc) for c in cols]
            growth = vals[-1] - vals[0]
            if svc.startswith(SWIFT_SERVICES):
                bound = max(BOUND_MIB, BOUND_SHARE * vals[0])
                ok = growth <= bound
                # the same pid at both ends (a restart would hide a leak)
                same = set(by_label["start"].get(svc, {})) == set(by_label["end"].get(svc, {}))
                verdict = ("ok" if ok else "EXCEEDED") + ("" if same else " (pid changed: restarted?)")
                if not ok or not same:
                    fail.append(f"{svc} RSS grew {growth:.1f} MiB (bound {bound:.1f})" + ("" if same else ", pid changed"))
                btxt = f"{bound:8.1f}"
            else:
                verdict, btxt = "(not judged)", f"{'-':>8}"
            lines.append(f"{name[:22]:22}" + "".join(f"{v:9.1f}" for v in vals) + f"{growth:+9.1f}{btxt}{cpu(svc):8.0f}  {verdict}"
                         + (f"  [{','.join(comm)}]" if n > 1 else ""))
        return "\n".join(lines)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            comm, rss = "?", 0
            for line in f:
                if line.startswith("Name:"):
                    comm = line.split()[1]
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
            return rss, comm
    except OSError:
        return None, None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stack-env", default=os.environ.get("STACK_ENV", str(REPO / ".run/soak/stack.env")))
    ap.add_argument("--minutes", type=float, default=15, help="minutes of traffic, warm-up included (default 15)")
    ap.add_argument("--warmup", type=float, default=30, help="seconds of traffic before the RSS baseline (default 30)")
    ap.add_argument("--sample-every", type=float, default=120, help="RSS sample interval, s (default 120)")
    ap.add_argument("--users", type=int, default=24, help="core users: permanent members of 2 rooms each (default 24)")
    ap.add_argument("--churn-users", type=int, default=8, help="users who join and leave rooms (default 8)")
    ap.add_argument("--rooms", type=int, default=4, help="public rooms (default 4)")
    ap.add_argument("--second-tab-every", type=int, default=3, help="every n-th core user holds a second socket (0: none)")
    ap.add_argument("--send-rate", type=float, default=12, help="message sends/s (default 12)")
    ap.add_argument("--retry-share", type=float, default=0.03, help="share of sends re-POSTed with the same client_id")
    ap.add_argument("--history-rate", type=float, default=6, help="history reads/s (default 6)")
    ap.add_argument("--login-rate", type=float, default=0.5, help="login + me + logout per s (default 0.5)")
    ap.add_argument("--membership-rate", type=float, default=1, help="joins/leaves/adds/removes per s (default 1)")
    ap.add_argument("--rooms-rate", type=float, default=0.5, help="rooms list (+ members list) per s (default 0.5)")
    ap.add_argument("--reconnect-rate", type=float, default=0.5, help="socket close+reconnect+resume per s (default 0.5)")
    ap.add_argument("--timeout", type=float, default=10, help="a request or handshake slower than this is an error (s)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the users, rooms and messages made")
    o = ap.parse_args()
    if not Path(o.stack_env).exists():
        sys.exit(f"no stack env at {o.stack_env}: start a stack (see the docstring) or set STACK_ENV")
    env = stack_env(o.stack_env)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    soak = Soak(o, env)

    async def go():
        try:
            traffic_s = await soak.run()
            return soak.report(traffic_s)
        finally:
            if not o.keep:
                try:
                    await soak.cleanup()
                except Exception as e:  # noqa: BLE001
                    print(f"cleanup failed: {e}")
            soak.pool.close()

    t0 = time.monotonic()
    rc = asyncio.run(go())
    print(f"whole run {time.monotonic() - t0:.0f} s")
    sys.exit(rc)


if __name__ == "__main__":
    main()
