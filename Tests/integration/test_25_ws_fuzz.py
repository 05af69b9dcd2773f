"""Hostile WebSocket input, at the frame level (a raw socket to a relay, so frames can
break RFC 6455 on purpose): malformed, oversized, binary, out-of-order and random frames.
The relay answers with error frames (socket stays open) or the documented close codes
(docs/websocket.md: 1002, 1007, 1009, 4401), never crashes, and a bystander socket on the
same relay keeps receiving its events throughout."""

from __future__ import annotations

import base64
import json
import os
import random
import socket
import struct
import time
import urllib.request

import pika
import pytest

from helpers import make_session
from test_20_websocket import publish_event

DOCUMENTED_CLOSE = {1002, 1007, 1009, 4401}


class RawSocket:
    """A WebSocket client that writes whatever bytes it is told to."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            assert chunk, "handshake: connection closed"
            buf += chunk
        assert b" 101 " in buf.split(b"\r\n", 1)[0], buf
        self.buf = buf.split(b"\r\n\r\n", 1)[1]
        self.close_code = None
        self.closed = False

    @staticmethod
    def frame(opcode: int, payload: bytes, fin: bool = True, mask: bool = True, rsv: int = 0) -> bytes:
        head = bytes([(0x80 if fin else 0) | rsv | opcode])
        bit = 0x80 if mask else 0
        n = len(payload)
        if n < 126:
            head += bytes([bit | n])
        elif n < 65536:
            head += bytes([bit | 126]) + struct.pack("!H", n)
        else:
            head += bytes([bit | 127]) + struct.pack("!Q", n)
        if mask:
            key = os.urandom(4)
            head += key
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return head + payload

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_text(self, text: str | bytes) -> None:
        self.send(self.frame(1, text.encode() if isinstance(text, str) else text))

    def read_frame(self, timeout: float = 5.0):
        """(opcode, payload) of the next server frame, or None when nothing came in time."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                b0, b1 = self.buf[0], self.buf[1]
                n, offset = b1 & 0x7F, 2
                if n == 126 and len(self.buf) >= 4:
                    n, offset = struct.unpack("!H", self.buf[2:4])[0], 4
                elif n == 127 and len(self.buf) >= 10:
                    n, offset = struct.unpack("!Q", self.buf[2:10])[0], 10
                if n < 126 or offset > 2:
                    if len(self.buf) >= offset + n:
                        payload, self.buf = self.buf[offset:offset + n], self.buf[offset + n:]
                        opcode = b0 & 0x0F
                        if opcode == 8:
                            self.closed = True
                            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                        return opcode, payload
            if time.monotonic() >= deadline:
                return None
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
                return None
            self.buf += chunk

    def next_text(self, timeout: float = 5.0) -> dict:
        while True:
            got = self.read_frame(timeout)
            assert got is not None, "no frame in time"
            opcode, payload = got
            if opcode == 1:
                return json.loads(payload)
            assert opcode != 8, f"closed with {self.close_code}: {payload[2:]!r}"

    def wait_close(self, timeout: float = 5.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.closed:
            self.read_frame(max(0.05, deadline - time.monotonic()))
        assert self.close_code is not None, "dropped without a close frame" if self.closed else "not closed"
        return self.close_code

    def auth(self, token: str) -> dict:
        self.send_text(json.dumps({"type": "auth", "token": token}))
        frame = self.next_text(10)
        assert frame["type"] == "ready", frame
        return frame

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


@pytest.fixture
def relay_port(stack) -> int:
    return int(stack["RELAY_PORTS"].split(",")[0])


@pytest.fixture
def bystander(stack, redis_client, relay_port):
    """An authenticated socket on the same relay; check() proves it still gets its events."""
    user_id, _, token = make_session(stack, redis_client)
    sock = RawSocket(relay_port)
    sock.auth(token)
    connection = pika.BlockingConnection(pika.URLParameters(stack["AMQP_URL"]))
    channel = connection.channel()

    class Bystander:
        count = 0

        def check(self) -> None:
            Bystander.count += 1
            marker = f"still-here-{Bystander.count}"
            publish_event(channel, f"user.{user_id}", {"type": "presence", "user_id": marker, "status": "online"})
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                frame = sock.next_text(10)
                if frame.get("user_id") == marker:
                    return
            raise AssertionError("the bystander socket stopped receiving events")

    yield Bystander()
    sock.close()
    connection.close()


def relay_is_healthy(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
        return json.load(r)["status"] == "ok"


PROTOCOL_BREAKS = {
    "unmasked frame": lambda: RawSocket.frame(1, b'{"type":"ping"}', mask=False),
    "reserved bit set": lambda: RawSocket.frame(1, b'{"type":"ping"}', rsv=0x40),
    "unknown opcode": lambda: RawSocket.frame(3, b"x"),
    "continuation without a start": lambda: RawSocket.frame(0, b"x"),
    "control frame over 125 bytes": lambda: RawSocket.frame(9, b"x" * 126),
    "fragmented ping": lambda: RawSocket.frame(9, b"x", fin=False),
    "new message inside a fragmented one": lambda: RawSocket.frame(1, b'{"ty', fin=False) + RawSocket.frame(1, b"x"),
    "close code 999": lambda: RawSocket.frame(8, struct.pack("!H", 999)),
    "close frame of one byte": lambda: RawSocket.frame(8, b"\x03"),
}


@pytest.mark.parametrize("case", sorted(PROTOCOL_BREAKS))
def test_frames_that_break_rfc6455_close_with_1002(case, stack, redis_client, relay_port, bystander):
    _, _, token = make_session(stack, redis_client)
    sock = RawSocket(relay_port)
    try:
        sock.auth(token)
        sock.send(PROTOCOL_BREAKS[case]())
        assert sock.wait_close() == 1002
    finally:
        sock.close()
    bystander.check()


def test_text_that_is_not_utf8_closes_with_1007(stack, redis_client, relay_port, bystander):
    _, _, token = make_session(stack, redis_client)
    for before_auth in (True, False):
        sock = RawSocket(relay_port)
        try:
            if not before_auth:
                sock.auth(token)
            sock.send_text(b'{"type":"ping","x":"\xff\xfe"}')
            assert sock.wait_close() == 1007
        finally:
            sock.close()
    bystander.check()


def test_out_of_order_and_malformed_frames_get_error_frames(stack, redis_client, relay_port, bystander):
    _, _, token = make_session(stack, redis_client)
    # Before auth: anything but auth is 4401.
    for first in ('{"type":"ping"}', '{"type":"typing","room_id":"x"}', "[]", "not json", '{"type":"auth"}',
                  '{"type":"auth","token":123}'):
        sock = RawSocket(relay_port)
        try:
            sock.send_text(first)
            assert sock.wait_close() == 4401, first
        finally:
            sock.close()
    # After ready: error frames, and the socket keeps working.
    sock = RawSocket(relay_port)
    try:
        sock.auth(token)
        cases = [
            (json.dumps({"type": "auth", "token": token}), "already_authenticated"),
            ('{"type":"nope"}', "unknown_type"),
            ("{", "malformed_frame"),
            ("[" * 15000, "malformed_frame"),          # deep nesting, within 16 KiB
            ('{"type":' * 1500 + "1" + "}" * 1500, None),
            ("null", "malformed_frame"),
            ('"just a string"', "malformed_frame"),
            ('{"type":"typing"}', None),
            ('{"type":"typing","room_id":123}', None),
            ('{"type":"ping","type":"typing"}', None),
            ("\u0000" * 100, "malformed_frame"),
        ]
        for text, code in cases:
            sock.send_text(text)
            frame = sock.next_text()
            assert frame["type"] == "error", (text[:40], frame)
            assert set(frame) >= {"code", "message"}, frame
            if code:
                assert frame["code"] == code, (text[:40], frame)
        sock.send(RawSocket.frame(2, b"\x00\x01binary"))
        assert sock.next_text()["code"] == "unsupported_frame"
        sock.send_text('{"type":"ping"}')
        assert sock.next_text() == {"type": "pong"}
    finally:
        sock.close()
    bystander.check()


def test_random_frames_never_crash_the_relay_or_disturb_others(stack, redis_client, relay_port, bystander):
    """500 random frames over 25 authenticated sockets: random opcodes (valid and not),
    FIN and RSV bits, masks, and payloads (random bytes, mutated JSON, oversized). Every
    socket either stays usable (answers a ping) or was closed with a documented code."""
    seed = int(os.environ.get("WS_FUZZ_SEED") or random.randrange(2**31))
    rng = random.Random(seed)
    seed_note = f"replay with WS_FUZZ_SEED={seed}"
    _, _, token = make_session(stack, redis_client)
    samples = [b'{"type":"ping"}', b'{"type":"typing","room_id":"00000000-0000-0000-0000-000000000000"}',
               json.dumps({"type": "auth", "token": token}).encode(), b'{"type":"x"}']
    closes: dict[int, int] = {}
    for _ in range(25):
        sock = RawSocket(relay_port)
        sent_close = False  # a close frame of ours is echoed with our (random) code
        try:
            sock.auth(token)
            for _ in range(20):
                kind = rng.random()
                if kind < 0.35:
                    payload = bytearray(rng.choice(samples))
                    for _ in range(rng.randint(1, 4)):
                        if payload:
                            payload[rng.randrange(len(payload))] = rng.randrange(256)
                    data = RawSocket.frame(1, bytes(payload))
                elif kind < 0.55:
                    data = RawSocket.frame(rng.choice([0, 1, 2, 3, 7, 8, 9, 10, 11, 15]),
                                           rng.randbytes(rng.choice([0, 1, 2, 10, 125, 126, 200])),
                                           fin=rng.random() < 0.8, mask=rng.random() < 0.9,
                                           rsv=rng.choice([0, 0, 0, 0x10, 0x20, 0x40]))
                    sent_close = sent_close or (data[0] & 0x0F) == 8
                elif kind < 0.6:
                    data = RawSocket.frame(1, b"x" * rng.choice([16 * 1024, 16 * 1024 + 1, 70000]))
                else:
                    data = RawSocket.frame(1, rng.choice(samples))
                sock.send(data)
                # Drain what came back; stop at a close.
                while (got := sock.read_frame(0.02)) is not None:
                    if got[0] == 8:
                        break
                if sock.closed:
                    break
            if not sock.closed:
                # Still open: it must answer a ping (a random frame may have started a
                # fragmented message, so finish it first with a continuation, or be closed).
                sock.send(RawSocket.frame(0, b"", fin=True))
                sock.send(RawSocket.frame(1, b'{"type":"ping"}'))
                deadline = time.monotonic() + 5
                answered = False
                while time.monotonic() < deadline and not sock.closed:
                    got = sock.read_frame(0.5)
                    if got and got[0] == 1 and json.loads(got[1]).get("type") == "pong":
                        answered = True
                        break
                assert answered or sock.closed, f"an open socket stopped answering ({seed_note})"
            if sock.closed:
                assert sock.close_code is not None, f"dropped without a close frame ({seed_note})"
                assert sent_close or sock.close_code in DOCUMENTED_CLOSE, \
                    f"closed with {sock.close_code} ({seed_note})"
                closes[sock.close_code] = closes.get(sock.close_code, 0) + 1
        finally:
            sock.close()
    assert relay_is_healthy(relay_port)
    bystander.check()
