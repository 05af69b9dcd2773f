"""Helpers shared by the chat tests (test_50_rooms.py, test_55_messages.py,
test_60_realtime.py, test_92_chat_faults.py): users with tokens, thin wrappers around the
room and message endpoints of API.md, shape checks for Room / Member / Message, and a
WebSocket `Client` that collects frames so a test can wait for an event or prove that one
did not come.

Fixtures (import them into a test module: `from chat import new_user, chat_ws`):
    new_user   new_user(name="User") -> ChatUser: a fresh verified account with a token
    chat_ws    chat_ws(token, relay=None, port=None) -> Client: through nginx (wss) by
               default, or straight to one relay (relay=0/1 indexes RELAY_PORTS, or port=N)
               over plain ws://; every client is closed after the test

The request helpers take the token (a str, a ChatUser, or None for no Authorization
header) and return the `requests.Response` untouched, so a test can check any status;
the `*_ok` variants assert the success status and return the decoded body.

Client reads on demand (no background thread, so nothing races on the TLS socket):
waiting for something pumps the socket; frames arrive in `client.frames` in order.
    c.wait_for(pred, timeout=5) -> first frame (from index `start`) for which pred is true
    c.sync()                    ping/pong round trip: every event the relay had queued
                                for this socket before the pong has been read
    c.assert_none(pred)         settles briefly, syncs, asserts no frame matches
    c.events(type) / c.drain() / c.mark() / c.wait_closed(timeout)
"""

from __future__ import annotations

import json
import ssl
import struct
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Union
from urllib.parse import urlsplit

import pytest
import requests

from accounts import bearer, is_time, is_uuid, register_verified, unique_email

ROOM_FIELDS = {"id", "name", "kind", "created_by", "created_at", "last_seq", "member_count"}
MEMBER_FIELDS = {"user_id", "display_name", "role", "joined_at"}
MESSAGE_FIELDS = {"id", "room_id", "seq", "author_id", "body", "created_at", "edited_at", "deleted",
                  "client_id"}

EVENT_TIMEOUT = 5.0  # events normally arrive within 100 ms


# --- users -------------------------------------------------------------------------------

@dataclass
class ChatUser:
    id: str
    token: str
    email: str
    name: str

    @property
    def headers(self) -> dict:
        return bearer(self.token)


Who = Union[ChatUser, str, None]


def token_of(who: Who) -> Optional[str]:
    return who.token if isinstance(who, ChatUser) else who


def make_user(https, wait_for_mail, name: str = "User") -> ChatUser:
    """Registers and verifies a fresh account; its display name is `<name> <10 hex>`."""
    tag = uuid.uuid4().hex[:10]
    display = f"{name} {tag}"
    email = unique_email(name.lower().replace(" ", "-"))
    user, token = register_verified(https, wait_for_mail, email=email, name=display)
    return ChatUser(user["id"], token, email, user["display_name"])


@pytest.fixture
def new_user(https, wait_for_mail) -> Callable[..., ChatUser]:
    def make(name: str = "User") -> ChatUser:
        return make_user(https, wait_for_mail, name)
    return make


def unique_name(prefix: str = "room") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# --- requests ----------------------------------------------------------------------------

def call(https, method: str, path: str, who: Who = None, **kwargs) -> requests.Response:
    headers = dict(kwargs.pop("headers", None) or {})
    token = token_of(who)
    if token:
        headers.update(bearer(token))
    return https.request(method, path, headers=headers, **kwargs)


def fresh_session(https):
    """A new session like the `https` fixture (for threads: one session per thread)."""
    return type(https)(https.base_url)


def create_room_r(https, who: Who, body: Any) -> requests.Response:
    return call(https, "POST", "/api/rooms", who, json=body)


def create_room(https, who: Who, name: Optional[str] = None, kind: str = "public") -> dict:
    name = name or unique_name(kind)
    r = create_room_r(https, who, {"name": name, "kind": kind})
    assert r.status_code == 201, f"create room: {r.status_code} {r.text[:300]}"
    return check_room(r.json())


def get_room(https, who: Who, room_id: str) -> requests.Response:
    return call(https, "GET", f"/api/rooms/{room_id}", who)


def get_room_ok(https, who: Who, room_id: str) -> dict:
    r = get_room(https, who, room_id)
    assert r.status_code == 200, f"GET room: {r.status_code} {r.text[:300]}"
    return check_room(r.json())


def join(https, who: Who, room_id: str) -> requests.Response:
    return call(https, "POST", f"/api/rooms/{room_id}/join", who)


def join_ok(https, who: Who, room_id: str) -> dict:
    r = join(https, who, room_id)
    assert r.status_code == 200, f"join: {r.status_code} {r.text[:300]}"
    return check_room(r.json())


def leave(https, who: Who, room_id: str) -> requests.Response:
    return call(https, "POST", f"/api/rooms/{room_id}/leave", who)


def members(https, who: Who, room_id: str) -> requests.Response:
    return call(https, "GET", f"/api/rooms/{room_id}/members", who)


def members_ok(https, who: Who, room_id: str) -> dict:
    """{user_id: Member} of the room."""
    r = members(https, who, room_id)
    assert r.status_code == 200, f"members: {r.status_code} {r.text[:300]}"
    listed = r.json()["members"]
    assert isinstance(listed, list), r.text
    result = {check_member(m)["user_id"]: m for m in listed}
    assert len(result) == len(listed), f"a member listed twice: {listed}"
    return result


def add_member(https, who: Who, room_id: str, user_id: str) -> requests.Response:
    return call(https, "POST", f"/api/rooms/{room_id}/members", who, json={"user_id": user_id})


def add_member_ok(https, who: Who, room_id: str, user_id: str) -> dict:
    r = add_member(https, who, room_id, user_id)
    assert r.status_code == 201, f"add member: {r.status_code} {r.text[:300]}"
    return check_member(r.json())


def remove_member(https, who: Who, room_id: str, user_id: str) -> requests.Response:
    return call(https, "DELETE", f"/api/rooms/{room_id}/members/{user_id}", who)


def send(https, who: Who, room_id: str, body: Any, client_id: Optional[str] = None,
         **kwargs) -> requests.Response:
    payload = {"body": body}
    if client_id is not None:
        payload["client_id"] = client_id
    return call(https, "POST", f"/api/rooms/{room_id}/messages", who, json=payload, **kwargs)


def send_ok(https, who: Who, room_id: str, body: Any, client_id: Optional[str] = None) -> dict:
    """Sends and asserts 201. A 429 (sending is rate limited) is retried after Retry-After,
    as a client would: a 429 stores nothing."""
    for _ in range(20):
        r = send(https, who, room_id, body, client_id)
        if r.status_code != 429:
            break
        try:
            delay = float(r.headers.get("Retry-After") or 1)
        except ValueError:
            delay = 1.0
        time.sleep(min(max(delay, 0.1), 2.0))
    assert r.status_code == 201, f"send: {r.status_code} {r.text[:300]}"
    return check_message(r.json())


def history(https, who: Who, room_id: str, **params) -> requests.Response:
    return call(https, "GET", f"/api/rooms/{room_id}/messages", who, params=params)


def history_ok(https, who: Who, room_id: str, **params) -> dict:
    """{"messages": [...], "has_more": bool}, with the shapes and ascending order checked."""
    r = history(https, who, room_id, **params)
    assert r.status_code == 200, f"history {params}: {r.status_code} {r.text[:300]}"
    body = r.json()
    assert isinstance(body.get("messages"), list) and isinstance(body.get("has_more"), bool), body
    for m in body["messages"]:
        check_message(m)
        assert m["room_id"] == room_id, m
    seqs = [m["seq"] for m in body["messages"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), f"not ascending: {seqs}"
    return body


def fetch_after(https, who: Who, room_id: str, after_seq: int = 0) -> list[dict]:
    """Every message with seq > after_seq, paging with after_seq until has_more is false."""
    result: list[dict] = []
    cursor = after_seq
    for _ in range(1000):
        page = history_ok(https, who, room_id, after_seq=cursor, limit=100)
        result.extend(page["messages"])
        if not page["has_more"]:
            return result
        assert page["messages"], "has_more with an empty page"
        cursor = page["messages"][-1]["seq"]
    raise AssertionError("paging did not end")


def edit(https, who: Who, room_id: str, message_id: str, body: Any) -> requests.Response:
    return call(https, "PATCH", f"/api/rooms/{room_id}/messages/{message_id}", who, json={"body": body})


def delete_message(https, who: Who, room_id: str, message_id: str) -> requests.Response:
    return call(https, "DELETE", f"/api/rooms/{room_id}/messages/{message_id}", who)


def mark_read(https, who: Who, room_id: str, seq: Any) -> requests.Response:
    return call(https, "POST", f"/api/rooms/{room_id}/read", who, json={"seq": seq})


def search(https, who: Who, q: Optional[str] = None, room_id: Optional[str] = None) -> requests.Response:
    params = {}
    if q is not None:
        params["q"] = q
    if room_id is not None:
        params["room_id"] = room_id
    return call(https, "GET", "/api/search", who, params=params)


def search_ok(https, who: Who, q: str, room_id: Optional[str] = None) -> list[dict]:
    r = search(https, who, q, room_id)
    assert r.status_code == 200, f"search: {r.status_code} {r.text[:300]}"
    found = r.json()["messages"]
    assert isinstance(found, list), r.text
    return [check_message(m) for m in found]


def my_rooms(https, who: Who) -> dict:
    """{room_id: Room + unread + last_read_seq} of GET /api/rooms."""
    r = call(https, "GET", "/api/rooms", who)
    assert r.status_code == 200, f"GET /api/rooms: {r.status_code} {r.text[:300]}"
    rooms = r.json()["rooms"]
    assert isinstance(rooms, list), r.text
    result = {}
    for room in rooms:
        check_room(room)
        assert isinstance(room.get("unread"), int) and isinstance(room.get("last_read_seq"), int), room
        assert room["id"] not in result, f"room listed twice: {rooms}"
        result[room["id"]] = room
    return result


def public_rooms(https, who: Who, q: Optional[str] = None, limit: Optional[int] = None) -> requests.Response:
    params: dict[str, Any] = {}
    if q is not None:
        params["q"] = q
    if limit is not None:
        params["limit"] = limit
    return call(https, "GET", "/api/rooms/public", who, params=params)


def direct(https, who: Who, user_id: str) -> requests.Response:
    return call(https, "POST", "/api/direct", who, json={"user_id": user_id})


def find_users(https, who: Who, q: Optional[str]) -> requests.Response:
    return call(https, "GET", "/api/users", who, params={} if q is None else {"q": q})


def make_admin(pg_conn, room_id: str, user_id: str) -> None:
    """The contract has no endpoint that changes roles: promote a member in PostgreSQL
    (room_members.role), where the schema keeps roles."""
    with pg_conn.cursor() as cur:
        cur.execute("UPDATE room_members SET role = 'admin' WHERE room_id = %s AND user_id = %s",
                    (room_id, user_id))
        assert cur.rowcount == 1, f"{user_id} is not a member of {room_id}"


# --- shapes ------------------------------------------------------------------------------

def check_room(room: dict, kind: Optional[str] = None) -> dict:
    assert isinstance(room, dict) and ROOM_FIELDS <= set(room), f"not a Room: {room}"
    assert is_uuid(room["id"]) and is_uuid(room["created_by"]), room
    assert isinstance(room["name"], str), room
    assert room["kind"] in ("public", "private", "direct"), room
    assert is_time(room["created_at"]), room
    assert isinstance(room["last_seq"], int) and room["last_seq"] >= 0, room
    assert isinstance(room["member_count"], int) and room["member_count"] >= 0, room
    if kind is not None:
        assert room["kind"] == kind, room
    return room


def check_member(member: dict) -> dict:
    assert isinstance(member, dict) and MEMBER_FIELDS <= set(member), f"not a Member: {member}"
    assert is_uuid(member["user_id"]), member
    assert isinstance(member["display_name"], str) and member["display_name"], member
    assert member["role"] in ("owner", "admin", "member"), member
    assert is_time(member["joined_at"]), member
    return member


def check_message(message: dict) -> dict:
    assert isinstance(message, dict) and MESSAGE_FIELDS <= set(message), f"not a Message: {message}"
    assert isinstance(message["id"], str) and message["id"], message
    assert is_uuid(message["room_id"]) and is_uuid(message["author_id"]), message
    assert isinstance(message["seq"], int) and not isinstance(message["seq"], bool) and message["seq"] >= 1, message
    assert isinstance(message["body"], str), message
    assert is_time(message["created_at"]), message
    assert message["edited_at"] is None or is_time(message["edited_at"]), message
    assert isinstance(message["deleted"], bool), message
    assert message["client_id"] is None or isinstance(message["client_id"], str), message
    return message


def same_message(a: dict, b: dict) -> bool:
    """The same stored message (id, seq, room, author, body, flags, client_id)."""
    keys = ("id", "seq", "room_id", "author_id", "body", "created_at", "edited_at", "deleted", "client_id")
    return all(a.get(k) == b.get(k) for k in keys)


# --- WebSocket ---------------------------------------------------------------------------

def relay_ports(stack: dict) -> list[int]:
    return [int(p) for p in stack["RELAY_PORTS"].split(",") if p]


def nginx_ws_url(stack: dict) -> str:
    parts = urlsplit(stack["HTTPS_URL"])
    return f"wss://{parts.hostname}:{parts.port or 443}/ws"


def relay_ws_url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/ws"


Predicate = Callable[[dict], bool]


def is_type(kind: str, **fields: Any) -> Predicate:
    """Frame predicate: {"type": kind} with these field values."""
    def pred(frame: dict) -> bool:
        return frame.get("type") == kind and all(frame.get(k) == v for k, v in fields.items())
    pred.__name__ = f"{kind} {fields}" if fields else kind
    return pred


def created(message_id: str) -> Predicate:
    def pred(frame: dict) -> bool:
        return frame.get("type") == "message.created" and (frame.get("message") or {}).get("id") == message_id
    pred.__name__ = f"message.created {message_id}"
    return pred


def any_created(room_id: str) -> Predicate:
    def pred(frame: dict) -> bool:
        return frame.get("type") == "message.created" and frame.get("room_id") == room_id
    pred.__name__ = f"any message.created in {room_id}"
    return pred


class Client:
    """A WebSocket whose incoming JSON frames are collected in `frames` (after `ready`).
    Reads happen only inside the methods below, on the caller's thread."""

    def __init__(self, ws, label: str = "") -> None:
        self.ws = ws
        self.label = label
        self.ready: Optional[dict] = None
        self.frames: list[dict] = []
        self.closed = False
        self.close_code: Optional[int] = None  # None with closed=True: dropped without a close frame

    # connecting

    @classmethod
    def open(cls, url: str, token: Optional[str], timeout: float = 10.0, label: str = "") -> "Client":
        import websocket
        options = {"sslopt": {"cert_reqs": ssl.CERT_NONE}} if url.startswith("wss:") else {}
        ws = websocket.create_connection(url, timeout=timeout, **options)
        client = cls(ws, label or url)
        if token is not None:
            client.send({"type": "auth", "token": token})
            client.ready = client.wait_for(is_type("ready"), timeout)
            client.frames.clear()
        return client

    @classmethod
    def wrap(cls, ws, label: str = "") -> "Client":
        """Wraps a socket from the `ws_connect` fixture (opened with wait_ready=True)."""
        client = cls(ws, label)
        client.ready = getattr(ws, "ready", None)
        return client

    @property
    def ready_rooms(self) -> dict[str, int]:
        assert self.ready is not None, "no ready frame"
        return {r["room_id"]: r["last_seq"] for r in self.ready["rooms"]}

    # sending

    def send(self, frame: Union[dict, str]) -> None:
        self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    def ping(self) -> None:
        self.send({"type": "ping"})

    # reading

    def _read_one(self, timeout: float) -> Optional[dict]:
        """Reads one frame, waiting at most `timeout`; returns a text frame's JSON, else None."""
        import websocket
        from websocket import ABNF
        if self.closed:
            return None
        self.ws.settimeout(max(timeout, 0.001))
        try:
            frame = self.ws.recv_frame()
        except (websocket.WebSocketTimeoutException, TimeoutError):
            return None
        except (websocket.WebSocketException, OSError, ValueError):
            self.closed = True
            return None
        if frame.opcode in (ABNF.OPCODE_TEXT, ABNF.OPCODE_BINARY, ABNF.OPCODE_CONT):
            self.ws.cont_frame.validate(frame)
            self.ws.cont_frame.add(frame)
            if not self.ws.cont_frame.is_fire(frame):
                return None
            opcode, full = self.ws.cont_frame.extract(frame)
            if opcode != ABNF.OPCODE_TEXT:
                raise AssertionError(f"{self.label}: unexpected binary frame {full.data[:100]!r}")
            data = full.data.decode() if isinstance(full.data, bytes) else full.data
            parsed = json.loads(data)
            self.frames.append(parsed)
            return parsed
        if frame.opcode == ABNF.OPCODE_CLOSE:
            data = frame.data or b""
            self.close_code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
            self.closed = True
            try:
                self.ws.send_close()
                self.ws.shutdown()
            except Exception:  # noqa: BLE001 - the server may have gone already
                pass
            return None
        if frame.opcode == ABNF.OPCODE_PING:
            try:
                self.ws.pong(frame.data)
            except Exception:  # noqa: BLE001
                self.closed = True
        return None

    def pump(self, duration: float = 0.1) -> list[dict]:
        """Reads whatever arrives within `duration`; returns the new frames."""
        start = len(self.frames)
        deadline = time.monotonic() + duration
        while not self.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._read_one(remaining)
        return self.frames[start:]

    def mark(self) -> int:
        """Index to pass as `start` to wait for frames that arrive after this point."""
        return len(self.frames)

    def wait_for(self, predicate: Predicate, timeout: float = EVENT_TIMEOUT, start: int = 0) -> dict:
        deadline = time.monotonic() + timeout
        index = start
        while True:
            while index < len(self.frames):
                frame = self.frames[index]
                index += 1
                if predicate(frame):
                    return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed:
                what = getattr(predicate, "__name__", "frame")
                state = f"closed with {self.close_code}" if self.closed else "open"
                raise AssertionError(f"{self.label}: no {what} within {timeout}s (socket {state}); "
                                     f"frames since {start}: {self.frames[start:][-15:]}")
            self._read_one(remaining)

    def sync(self, timeout: float = EVENT_TIMEOUT) -> None:
        """A ping/pong round trip: whatever the relay queued for this socket before it
        answered the ping has now been read."""
        start = self.mark()
        self.ping()
        self.wait_for(is_type("pong"), timeout, start=start)

    def assert_none(self, predicate: Predicate, settle: float = 0.3, start: int = 0) -> None:
        """Gives stray events `settle` seconds, syncs, and asserts none matches."""
        self.pump(settle)
        self.sync()
        bad = [f for f in self.frames[start:] if predicate(f)]
        assert not bad, f"{self.label}: unexpected {getattr(predicate, '__name__', 'frames')}: {bad}"

    def events(self, kind: Optional[str] = None, start: int = 0) -> list[dict]:
        return [f for f in self.frames[start:] if kind is None or f.get("type") == kind]

    def count(self, predicate: Predicate, start: int = 0) -> int:
        return sum(1 for f in self.frames[start:] if predicate(f))

    def drain(self) -> list[dict]:
        frames, self.frames = self.frames, []
        return frames

    def wait_closed(self, timeout: float = EVENT_TIMEOUT) -> Optional[int]:
        """Reads until the server closes; returns the close code (None: dropped, no close frame)."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.label}: still open after {timeout}s; "
                                     f"last frames: {self.frames[-10:]}")
            self._read_one(remaining)
        return self.close_code

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.ws.close(timeout=1)
            except Exception:  # noqa: BLE001
                pass

    def abort(self) -> None:
        """Drops the TCP connection without a close handshake."""
        self.closed = True
        try:
            self.ws.shutdown()
        except Exception:  # noqa: BLE001
            pass


@pytest.fixture
def chat_ws(stack):
    """chat_ws(token_or_user, relay=None, port=None, label=None) -> Client after `ready`."""
    opened: list[Client] = []

    def connect(who: Who, relay: Optional[int] = None, port: Optional[int] = None,
                label: Optional[str] = None, timeout: float = 10.0) -> Client:
        if port is None and relay is not None:
            ports = relay_ports(stack)
            if relay >= len(ports):
                pytest.skip(f"needs {relay + 1} relays, the stack has {len(ports)}")
            port = ports[relay]
        url = nginx_ws_url(stack) if port is None else relay_ws_url(port)
        name = label or (who.name if isinstance(who, ChatUser) else "client")
        client = Client.open(url, token_of(who), timeout=timeout, label=f"{name}@{port or 'nginx'}")
        opened.append(client)
        return client

    yield connect
    for client in opened:
        client.close()


def sync_all(clients: Iterable[Client]) -> None:
    for client in clients:
        client.sync()

