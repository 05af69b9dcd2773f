"""Chat under faults (after the other tests: files run in name order): MongoDB down while
sending (503, no seq burned, the next message gets exactly last_seq + 1), a seq counter
behind the stored messages (PostgreSQL lost commits: adopted by the next send), and a relay
killed with SIGKILL in the middle of a stream of messages (clients reconnect to the other
relay, resume with after_seq, and end up with every stored message exactly once)."""

import collections
import json
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import requests
import websocket

from accounts import expect_error
from chat import (chat_ws, create_room, fetch_after, fresh_session, get_room_ok,  # noqa: F401
                  history, history_ok, is_type, join_ok, members_ok, new_user, relay_ports, send, send_ok)


# --- MongoDB down ------------------------------------------------------------------------

def test_mongodb_down_send_is_503_and_burns_no_seq(https, new_user, stack_ctl, wait_until):
    alice = new_user("Alice")
    room = create_room(https, alice)
    for i in range(3):
        send_ok(https, alice, room["id"], f"before {i}")
    cid = "while-down-" + uuid.uuid4().hex
    stack_ctl("stop-service", "mongo")
    try:
        for attempt in range(2):
            r = send(https, alice, room["id"], "while mongo is down", client_id=cid, timeout=60)
            expect_error(r, 503, "mongodb_unavailable")
            assert r.headers.get("Retry-After"), dict(r.headers)
        assert get_room_ok(https, alice, room["id"])["last_seq"] == 3
    finally:
        stack_ctl("start-service", "mongo")

    # The client retries with the same client_id until it goes through.
    def retry():
        r = send(https, alice, room["id"], "while mongo is down", client_id=cid, timeout=60)
        return r if r.status_code in (200, 201) else None

    r = wait_until(retry, timeout=90, interval=0.5, message="a send after MongoDB came back")
    message = r.json()
    assert message["seq"] == 4, message
    assert message["client_id"] == cid
    assert get_room_ok(https, alice, room["id"])["last_seq"] == 4
    stored = history_ok(https, alice, room["id"])["messages"]
    assert [m["seq"] for m in stored] == [1, 2, 3, 4]
    assert [m["id"] for m in stored if m["client_id"] == cid] == [message["id"]]
    assert send_ok(https, alice, room["id"], "and on")["seq"] == 5


def test_mongodb_answering_it_cannot_serve_is_503_and_burns_no_seq(https, new_user, stack, mongo_db, wait_until):
    """A MongoDB that is up but answers that it cannot serve counts as down: its storage
    engine failed (1 InternalError: SecantusDB's answer to every command after a
    WiredTiger panic; the API used to answer that with 500 internal_error), or it is
    shutting down (91 ShutdownInProgress; one of the codes mongod's drivers treat as a
    state change). The send is 503 mongodb_unavailable with Retry-After, the seq is rolled
    back, and once MongoDB serves again the same client_id goes through with the next seq.
    The failures come from SecantusDB's failCommand failpoint (make test's stack turns test
    commands on); the FastCGI logs show that each code reached the API. 91 comes last: after
    it the driver marks the server unknown until its monitor checks it again, so until then
    that process's requests fail at server selection (503 too), whatever the server would say."""
    if stack.get("MONGO_TEST_COMMANDS") != "1":
        pytest.skip("this stack's SecantusDB runs without test commands (scripts/test.sh sets MONGO_TEST_COMMANDS=1)")
    alice = new_user("Alice")
    room = create_room(https, alice)
    for i in range(2):
        send_ok(https, alice, room["id"], f"before {i}")
    admin = mongo_db.client.admin
    logs = [Path(stack["LOG_DIR"]) / f"fcgi-{i}.log" for i in range(1, int(stack["FCGI_PROCESSES"]) + 1)]

    def logged(code):
        return sum(p.read_text(encoding="utf-8").count(f"server error {code}:") for p in logs)

    cid = "while-failing-" + uuid.uuid4().hex
    for code in (1, 91):
        before = logged(code)
        admin.command({"configureFailPoint": "failCommand", "mode": "alwaysOn",
                       "data": {"failCommands": ["insert"], "errorCode": code}})
        try:
            r = send(https, alice, room["id"], "while mongo fails", client_id=cid)
            expect_error(r, 503, "mongodb_unavailable")
            assert r.headers.get("Retry-After"), dict(r.headers)
        finally:
            admin.command({"configureFailPoint": "failCommand", "mode": "off"})
        assert logged(code) == before + 1, f"one 'server error {code}' more in the FastCGI logs"
        assert get_room_ok(https, alice, room["id"])["last_seq"] == 2, code

    # Each FastCGI process keeps its own driver state (after 91: the server unknown until
    # the monitor's next check, at most heartbeatFrequencyMS, 2 s): wait until reads spread
    # by nginx over the processes all answer, then the same client_id goes through.
    def serving_everywhere():
        return all(history(https, alice, room["id"]).status_code == 200 for _ in range(3 * len(logs)))

    wait_until(serving_everywhere, timeout=60, interval=0.5, message="every FastCGI process reads from MongoDB again")
    r = send(https, alice, room["id"], "while mongo fails", client_id=cid)
    assert r.status_code == 201, r.text
    assert r.json()["seq"] == 3, r.json()
    stored = history_ok(https, alice, room["id"])["messages"]
    assert [m["seq"] for m in stored] == [1, 2, 3]
    assert [m["client_id"] for m in stored].count(cid) == 1


# --- PostgreSQL lost its last commits ------------------------------------------------------

def test_counter_behind_stored_seqs_is_adopted_on_the_next_send(https, new_user, pg_conn):
    """The send transaction commits asynchronously (MongoDB holds the message durably), so
    a PostgreSQL crash can lose the last seq increments while their messages are stored.
    Simulated here by moving the room's counter back by 3: the next send finds the stored
    seqs, moves the counter past the highest and is stored right after it, with no 409,
    no duplicate seq and no gap."""
    alice = new_user("Alice")
    room = create_room(https, alice)
    for i in range(5):
        send_ok(https, alice, room["id"], f"before {i}")
    with pg_conn.cursor() as cur:
        cur.execute("UPDATE rooms SET last_seq = last_seq - 3 WHERE id = %s RETURNING last_seq", (room["id"],))
        assert cur.fetchone()[0] == 2
    cid = "after-lost-commits-" + uuid.uuid4().hex
    r = send(https, alice, room["id"], "after the lost commits", client_id=cid)
    assert r.status_code == 201, r.text
    assert r.json()["seq"] == 6, r.json()
    assert get_room_ok(https, alice, room["id"])["last_seq"] == 6
    assert send_ok(https, alice, room["id"], "and on")["seq"] == 7
    stored = history_ok(https, alice, room["id"])["messages"]
    assert [m["seq"] for m in stored] == [1, 2, 3, 4, 5, 6, 7]
    assert [m["client_id"] for m in stored].count(cid) == 1


# --- a relay killed mid-stream -----------------------------------------------------------

def relay_ok(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3) as r:
            return json.load(r).get("status") == "ok"
    except Exception:  # noqa: BLE001 - not up yet
        return False


class Holder:
    """What a well-behaved client holds for one room: messages by seq, from live
    message.created events and from resuming with after_seq after a reconnect."""

    def __init__(self, name, user, client, room_id):
        self.name, self.user, self.client, self.room_id = name, user, client, room_id
        self.held: dict[int, dict] = {}
        self.read_index = 0
        self.sockets = [client]
        self.reconnects = 0

    def add(self, message: dict, source: str) -> None:
        seq = message["seq"]
        previous = self.held.get(seq)
        assert previous is None or previous["id"] == message["id"], \
            f"{self.name}: seq {seq} is {previous['id']} and {message['id']} ({source})"
        self.held.setdefault(seq, message)

    def top(self) -> int:
        return max(self.held, default=0)

    def absorb(self) -> None:
        frames = self.client.frames
        while self.read_index < len(frames):
            frame = frames[self.read_index]
            self.read_index += 1
            if frame.get("type") == "message.created" and frame.get("room_id") == self.room_id:
                self.add(frame["message"], f"event on {self.client.label}")

    def resume(self, https, new_client) -> None:
        self.absorb()
        self.client = new_client
        self.read_index = 0
        self.sockets.append(new_client)
        self.reconnects += 1
        assert self.room_id in new_client.ready_rooms, new_client.ready
        for message in fetch_after(https, self.user, self.room_id, self.top()):
            self.add(message, "after_seq")

    def step(self, https, connect) -> None:
        self.client.pump(0.01)
        self.absorb()
        if self.client.closed:
            self.resume(https, connect(self.user, relay=1, label=f"{self.name}-r{self.reconnects + 1}"))


def step_all(holders, https, connect) -> None:
    for holder in holders:
        holder.step(https, connect)


def catch_up(holders, https, connect, last: int, timeout: float) -> None:
    """Steps every holder until each holds seq `last` on an open socket (or the time is
    up), then drains what is still queued for them."""
    end = time.monotonic() + timeout
    while True:
        while time.monotonic() < end and not all(h.top() >= last and not h.client.closed for h in holders):
            step_all(holders, https, connect)
        try:
            for holder in holders:
                holder.client.sync()
                holder.absorb()
            return
        except (AssertionError, OSError, websocket.WebSocketException):
            # A socket closed during its sync (a relay that reconnected to the broker tells
            # its sockets to resume): it resumes like a client, and the sync is done again.
            for holder in holders:
                holder.client.pump(0.05)  # reads a close frame that made the ping fail
            if time.monotonic() >= end or not any(h.client.closed for h in holders):
                raise


def assert_each_holds_exactly_once(holders, stored: list[dict], room_id: str) -> None:
    """Every holder holds exactly the stored messages, and no socket got one twice."""
    expected = [(m["seq"], m["id"]) for m in stored]
    for holder in holders:
        got = [(seq, holder.held[seq]["id"]) for seq in sorted(holder.held)]
        assert got == expected, f"{holder.name} (reconnects {holder.reconnects}) holds a different set: " \
                                f"missing {sorted(set(expected) - set(got))}, extra {sorted(set(got) - set(expected))}"
        for client in holder.sockets:
            counts = collections.Counter(f["message"]["id"] for f in client.frames
                                         if f.get("type") == "message.created" and f.get("room_id") == room_id)
            twice = [mid for mid, n in counts.items() if n > 1]
            assert not twice, f"{client.label} got {twice} more than once"


def test_relay_killed_mid_stream_clients_resume_on_the_other_relay(https, new_user, chat_ws, stack, stack_ctl,
                                                                  wait_until):
    ports = relay_ports(stack)
    if len(ports) < 2:
        pytest.skip("needs two relays")
    sender, alice, bob = new_user("Sender"), new_user("Alice"), new_user("Bob")
    room = create_room(https, sender)
    rid = room["id"]
    join_ok(https, alice, rid)
    join_ok(https, bob, rid)
    holders = [
        Holder("alice-relay1", alice, chat_ws(alice, relay=0, label="alice-relay1"), rid),
        Holder("bob-relay1", bob, chat_ws(bob, relay=0, label="bob-relay1"), rid),
        Holder("alice-relay2", alice, chat_ws(alice, relay=1, label="alice-relay2"), rid),
        Holder("bob-relay2", bob, chat_ws(bob, relay=1, label="bob-relay2"), rid),
    ]
    total = 60
    sent: list[dict] = []
    failures: list[str] = []
    halfway = threading.Event()

    def stream() -> None:
        session = fresh_session(https)
        try:
            for i in range(total):
                cid = f"stream-{i}"
                for _ in range(100):  # retried with the same client_id: stored once
                    try:
                        r = send(session, sender, rid, f"stream {i}", client_id=cid, timeout=10)
                    except requests.RequestException as exc:
                        failures.append(f"{cid}: {exc!r}")
                        time.sleep(0.1)
                        continue
                    if r.status_code in (200, 201):
                        sent.append(r.json())
                        break
                    failures.append(f"{cid}: {r.status_code} {r.text[:200]}")
                    time.sleep(0.1)
                if i == total // 3:
                    halfway.set()
                time.sleep(0.05)
        finally:
            halfway.set()
            session.close()

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    killed = False
    try:
        while not halfway.is_set():
            step_all(holders, https, chat_ws)
        stack_ctl("kill-service", "relay-1")
        killed = True
        deadline = time.monotonic() + 120
        while thread.is_alive() and time.monotonic() < deadline:
            step_all(holders, https, chat_ws)
        thread.join(timeout=1)
        assert not thread.is_alive(), "the sender did not finish"
        assert len(sent) == total, f"sent {len(sent)} of {total}; failures: {failures[-5:]}"
        last = max(m["seq"] for m in sent)
        # Everyone catches up from live events (the relay-1 clients resumed on relay 2).
        catch_up(holders, https, chat_ws, last, timeout=10)
    finally:
        if killed:
            stack_ctl("start-service", "relay-1")
            wait_until(lambda: relay_ok(ports[0]), timeout=60, interval=0.5, message="relay-1 back")

    stored = fetch_after(https, sender, rid, 0)
    assert [m["seq"] for m in stored] == list(range(1, total + 1)), [m["seq"] for m in stored]
    assert sorted(m["client_id"] for m in stored) == sorted(f"stream-{i}" for i in range(total)), \
        "a retried send was stored twice or lost"
    assert {m["id"] for m in sent} == {m["id"] for m in stored}
    assert_each_holds_exactly_once(holders, stored, rid)
    # The relay-1 clients did lose their relay (else this test proved nothing).
    assert holders[0].reconnects >= 1 and holders[1].reconnects >= 1, [(h.name, h.reconnects) for h in holders]


# --- presence when a relay dies ----------------------------------------------------------

def presence_ttl(stack) -> float:
    """PRESENCE_TTL_SECONDS of the stack's configuration (scripts/test.sh sets it short)."""
    for line in Path(stack["CONFIG_FILE"]).read_text().splitlines():
        if line.startswith("PRESENCE_TTL_SECONDS="):
            return float(line.split("=", 1)[1])
    pytest.fail("PRESENCE_TTL_SECONDS is not in the stack's configuration", pytrace=False)


def alice_on_relay_2_watched_from_relay_1(https, new_user, chat_ws):
    alice, bob = new_user("Alice"), new_user("Bob")
    room = create_room(https, alice)
    join_ok(https, bob, room["id"])
    bob_ws = chat_ws(bob, relay=0, label="bob")
    chat_ws(alice, relay=1, label="alice")
    is_alice = lambda status: is_type("presence", user_id=alice.id, status=status)  # noqa: E731
    bob_ws.wait_for(is_alice("online"))
    return alice, bob, room, bob_ws, is_alice


@pytest.mark.parametrize("restart", [False, True], ids=["stays-down", "restarted-at-once"])
def test_users_of_a_killed_relay_are_announced_offline_once(https, new_user, chat_ws, stack, stack_ctl, wait_until,
                                                            restart):
    # Alice's only socket is on relay 2, which is killed: nothing closes it or releases her
    # claim. Relay 1 sweeps relay 2 once its heartbeat lapses (stays-down), or relay 2
    # sweeps its own previous run as it starts (restarted-at-once, well within the TTL).
    # Either way Bob hears once that she is offline, and the members list agrees.
    ttl = presence_ttl(stack)
    alice, bob, room, bob_ws, is_alice = alice_on_relay_2_watched_from_relay_1(https, new_user, chat_ws)
    ports = relay_ports(stack)
    assert len(ports) >= 2, "the test stack runs two relays"
    mark = bob_ws.mark()
    killed = False
    try:
        stack_ctl("kill-service", "relay-2")
        killed = True
        if restart:
            stack_ctl("start-service", "relay-2")
            killed = False
        bob_ws.wait_for(is_alice("offline"), timeout=2 * ttl + 10, start=mark)
        assert members_ok(https, bob, room["id"])[alice.id]["online"] is False
    finally:
        if killed:
            stack_ctl("start-service", "relay-2")
    wait_until(lambda: relay_ok(ports[1]), timeout=60, interval=0.5, message="relay-2 back")
    # A further sweep (relay 1's ticks every ttl/3, relay 2's start) announces nothing more.
    bob_ws.pump(ttl / 3 + 1)
    bob_ws.sync()
    assert bob_ws.count(is_alice("offline"), start=mark) == 1, bob_ws.frames[mark:]
    assert bob_ws.count(is_alice("online"), start=mark) == 0, bob_ws.frames[mark:]

