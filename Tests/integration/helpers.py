"""Helpers shared by the integration tests: tokens and sessions made the way the API
makes them, WebSocket frame reading with close codes, and a minimal FastCGI client for
feeding the pool malformed input directly."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import socket
import struct
import time
import uuid
from typing import Optional


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(secret_hex: str, claims: dict, header: Optional[dict] = None) -> str:
    head = b64url(json.dumps(header or {"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    mac = hmac.new(bytes.fromhex(secret_hex), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(mac)}"


def make_session(stack: dict, redis_client, user_id: Optional[str] = None, ttl: int = 600) -> tuple[str, str, str]:
    """Creates a server-side session in Redis exactly as the API stores it and returns
    (user_id, session_id, jwt)."""
    user_id = user_id or str(uuid.uuid4())
    sid = b64url(secrets.token_bytes(16))
    now = int(time.time())
    redis_client.hset(f"session:{sid}", mapping={"user_id": user_id, "created_at": "2026-11-25T00:00:00.000Z",
                                                 "last_seen_at": "2026-11-25T00:00:00.000Z", "user_agent": "pytest"})
    redis_client.expire(f"session:{sid}", ttl)
    redis_client.sadd(f"user_sessions:{user_id}", sid)
    token = sign_jwt(stack["JWT_SECRET"], {"sub": user_id, "sid": sid, "iat": now, "exp": now + ttl})
    return user_id, sid, token


def recv_json(ws, timeout: float = 5.0) -> dict:
    """The next text frame as JSON (control frames other than close are skipped)."""
    import websocket

    ws.settimeout(timeout)
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_TEXT:
            return json.loads(data.decode())
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
            raise AssertionError(f"socket closed with {code} while waiting for a frame")


def recv_close(ws, timeout: float = 5.0) -> tuple[int, list[dict]]:
    """Reads until the server's close frame; returns (close code, text frames before it)."""
    import websocket

    ws.settimeout(timeout)
    frames = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            opcode, data = ws.recv_data(control_frame=True)
        except websocket.WebSocketConnectionClosedException:
            raise AssertionError("connection dropped without a close frame")
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return (struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005), frames
        if opcode == websocket.ABNF.OPCODE_TEXT:
            frames.append(json.loads(data.decode()))
    raise AssertionError("no close frame within %ss" % timeout)


# --- a minimal FastCGI client (FCGI_RESPONDER over a unix socket) ---------------------

FCGI_BEGIN_REQUEST, FCGI_END_REQUEST, FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT = 1, 3, 4, 5, 6


def _record(rtype: int, request_id: int, content: bytes) -> bytes:
    return struct.pack("!BBHHBx", 1, rtype, request_id, len(content), 0) + content


def _nv(name: bytes, value: bytes) -> bytes:
    def length(n: int) -> bytes:
        return bytes([n]) if n < 128 else struct.pack("!I", n | 0x80000000)
    return length(len(name)) + length(len(value)) + name + value


class FastCGIConnection:
    """One FastCGI connection to the pool's socket. `request` keeps it open the way nginx
    does (fastcgi_keep_conn on: FCGI_KEEP_CONN on every request)."""

    def __init__(self, socket_path: str, timeout: float = 5.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(socket_path)
        self.buf = b""

    def send(self, params: dict[str, str], body: bytes = b"", request_id: int = 1, keep: bool = True):
        encoded = b"".join(_nv(k.encode(), v.encode()) for k, v in params.items())
        self.sock.sendall(_record(FCGI_BEGIN_REQUEST, request_id, struct.pack("!HB5x", 1, 1 if keep else 0))
                          + (_record(FCGI_PARAMS, request_id, encoded) if encoded else b"")
                          + _record(FCGI_PARAMS, request_id, b"")
                          + (_record(FCGI_STDIN, request_id, body) if body else b"")
                          + _record(FCGI_STDIN, request_id, b""))

    def reply(self, until_closed_ok: bool = False) -> bytes:
        """The STDOUT stream up to END_REQUEST. If the application closes the connection
        first: what came so far with `until_closed_ok`, else ConnectionError."""
        out = b""
        while True:
            while len(self.buf) >= 8:
                _, rtype, _, clen, plen = struct.unpack("!BBHHBx", self.buf[:8])
                if len(self.buf) < 8 + clen + plen:
                    break
                content = self.buf[8:8 + clen]
                self.buf = self.buf[8 + clen + plen:]
                if rtype == FCGI_STDOUT:
                    out += content
                elif rtype == FCGI_END_REQUEST:
                    return out
            chunk = self.sock.recv(65536)
            if not chunk:
                if until_closed_ok:
                    return out
                raise ConnectionError("the application closed the connection")
            self.buf += chunk

    def request(self, params: dict[str, str], body: bytes = b"", request_id: int = 1) -> bytes:
        """Sends one request on the kept connection and returns its STDOUT stream."""
        self.send(params, body, request_id)
        return self.reply()

    def close(self):
        self.sock.close()


def fastcgi_request(socket_path: str, params: dict[str, str], body: bytes = b"", raw: Optional[bytes] = None,
                    timeout: float = 5.0) -> bytes:
    """Sends one request (or `raw` bytes) on a connection of its own and returns the STDOUT
    stream of the reply."""
    conn = FastCGIConnection(socket_path, timeout)
    try:
        if raw is not None:
            conn.sock.sendall(raw)
        else:
            conn.send(params, body, keep=False)
        return conn.reply(until_closed_ok=True)
    finally:
        conn.close()
