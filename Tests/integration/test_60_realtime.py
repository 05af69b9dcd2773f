"""The realtime side (API.md "WebSocket" and "Precise rules"): the ready frame's rooms,
message events reaching every socket of every member exactly once and nobody else,
membership changes followed on live sockets, member/edit/delete/read/typing/presence
events, logout closing the session's sockets, resuming by seq after a disconnect, and
fan-out across relays. The relay-kill case is in test_92_chat_faults.py."""

import time
import uuid

from accounts import login
from chat import (add_member_ok, any_created, chat_ws, create_room, created, delete_message, direct,  # noqa: F401
                  edit, history_ok, is_type, join_ok, leave, mark_read, new_user, relay_ports,
                  remove_member, same_message, send, send_ok)


def check_created(frame: dict, posted: dict) -> None:
    assert frame["type"] == "message.created" and frame["room_id"] == posted["room_id"], frame
    assert same_message(frame["message"], posted), f"event {frame['message']} != POST answer {posted}"


# --- ready -------------------------------------------------------------------------------

def test_ready_lists_every_room_of_the_user_with_its_last_seq(https, new_user, chat_ws):
    alice, bob, carol = new_user("Alice"), new_user("Bob"), new_user("Carol")
    public = create_room(https, alice, kind="public")
    private = create_room(https, alice, kind="private")
    bobs = create_room(https, bob, kind="public")
    left = create_room(https, bob, kind="public")
    carols = create_room(https, carol, kind="public")
    for i in range(2):
        send_ok(https, alice, public["id"], f"p{i}")
    for i in range(3):
        send_ok(https, bob, bobs["id"], f"b{i}")
    join_ok(https, alice, bobs["id"])
    join_ok(https, alice, left["id"])
    assert leave(https, alice, left["id"]).status_code == 204
    send_ok(https, carol, carols["id"], "not alice's")
    r = direct(https, alice, bob.id)
    assert r.status_code in (200, 201), r.text
    dm = r.json()
    send_ok(https, bob, dm["id"], "psst")
    client = chat_ws(alice)
    assert client.ready["type"] == "ready" and client.ready["user_id"] == alice.id
    assert all({"room_id", "last_seq"} <= set(entry) for entry in client.ready["rooms"]), client.ready
    assert len(client.ready["rooms"]) == len(client.ready_rooms), f"a room listed twice: {client.ready}"
    assert client.ready_rooms == {public["id"]: 2, private["id"]: 0, bobs["id"]: 3, dm["id"]: 1}


# --- message.created ---------------------------------------------------------------------

def test_a_message_reaches_every_socket_of_every_member_exactly_once(https, new_user, chat_ws):
    alice, bob, carol = new_user("Alice"), new_user("Bob"), new_user("Carol")
    room = create_room(https, alice, kind="public")
    join_ok(https, bob, room["id"])
    elsewhere = create_room(https, carol, kind="public")  # carol is in another room only
    alice1, alice2 = chat_ws(alice, label="alice-tab1"), chat_ws(alice, label="alice-tab2")
    bob1, bob2 = chat_ws(bob, label="bob-tab1"), chat_ws(bob, label="bob-tab2")
    outsider = chat_ws(carol, label="carol")
    posted = send_ok(https, alice, room["id"], "hello everyone")
    for client in (alice1, alice2, bob1, bob2):
        check_created(client.wait_for(created(posted["id"])), posted)
    second = send_ok(https, bob, room["id"], "hi alice")
    for client in (alice1, alice2, bob1, bob2):
        check_created(client.wait_for(created(second["id"])), second)
    for client in (alice1, alice2, bob1, bob2):
        client.pump(0.3)
        client.sync()
        assert client.count(created(posted["id"])) == 1, client.frames
        assert client.count(created(second["id"])) == 1, client.frames
    outsider.assert_none(any_created(room["id"]), settle=0)
    send_ok(https, carol, elsewhere["id"], "carol's own room")
    for client in (alice1, bob1):
        client.assert_none(any_created(elsewhere["id"]))


def test_a_retried_send_with_the_same_client_id_is_one_event(https, new_user, chat_ws):
    alice, bob = new_user("Alice"), new_user("Bob")
    room = create_room(https, alice)
    join_ok(https, bob, room["id"])
    alice_ws, bob_ws = chat_ws(alice), chat_ws(bob)
    cid = "retry-" + uuid.uuid4().hex
    first = send(https, alice, room["id"], "once", client_id=cid)
    assert first.status_code == 201, first.text
    again = send(https, alice, room["id"], "once", client_id=cid)
    assert again.status_code == 200, again.text
    message = first.json()
    for client in (alice_ws, bob_ws):
        client.wait_for(created(message["id"]))
        client.pump(0.3)
        client.sync()
        assert client.count(any_created(room["id"])) == 1, client.frames


# --- membership on live sockets ----------------------------------------------------------

def test_join_and_leave_are_followed_without_a_reconnect(https, new_user, chat_ws):
    alice, bob = new_user("Alice"), new_user("Bob")
    room = create_room(https, alice, kind="public")
    alice_ws = chat_ws(alice)
    bob_ws = chat_ws(bob)  # connected before joining
    assert room["id"] not in bob_ws.ready_rooms
    before = send_ok(https, alice, room["id"], "before bob joins")
    alice_ws.wait_for(created(before["id"]))
    bob_ws.assert_none(any_created(room["id"]))
    join_ok(https, bob, room["id"])
    alice_ws.wait_for(is_type("member.joined", room_id=room["id"], user_id=bob.id))
    mark = bob_ws.mark()
    welcome = send_ok(https, alice, room["id"], "welcome bob")
    check_created(bob_ws.wait_for(created(welcome["id"]), start=mark), welcome)
    # The very next event of that room is the message: nothing of the room was lost.
    assert [f for f in bob_ws.frames[mark:] if f.get("room_id") == room["id"]
            and f.get("type") == "message.created"][0]["message"]["id"] == welcome["id"]
    assert leave(https, bob, room["id"]).status_code == 204
    left = alice_ws.wait_for(is_type("member.left", room_id=room["id"], user_id=bob.id))
    assert {"type", "room_id", "user_id"} <= set(left)
    mark = bob_ws.mark()
    after = send_ok(https, alice, room["id"], "bob is gone")
    alice_ws.wait_for(created(after["id"]))
    bob_ws.assert_none(any_created(room["id"]), start=mark)


def test_an_added_member_gets_the_next_message_and_a_removed_one_does_not(https, new_user, chat_ws):
    alice, carol = new_user("Alice"), new_user("Carol")
    room = create_room(https, alice, kind="private")
    alice_ws, carol_ws = chat_ws(alice), chat_ws(carol)
    add_member_ok(https, alice, room["id"], carol.id)
    posted = send_ok(https, alice, room["id"], "welcome carol")
    check_created(carol_ws.wait_for(created(posted["id"])), posted)
    assert remove_member(https, alice, room["id"], carol.id).status_code == 204
    mark = carol_ws.mark()
    secret = send_ok(https, alice, room["id"], "carol is gone")
    alice_ws.wait_for(created(secret["id"]))
    carol_ws.assert_none(any_created(room["id"]), start=mark)
    # Her later typing in that room is refused too.
    carol_ws.send({"type": "typing", "room_id": room["id"]})
    error = carol_ws.wait_for(is_type("error"), start=mark)
    assert isinstance(error.get("code"), str) and isinstance(error.get("message"), str), error
    alice_ws.assert_none(is_type("typing", room_id=room["id"], user_id=carol.id))


# --- updated, deleted, read ----------------------------------------------------------------

def test_edit_and_delete_events_reach_the_members(https, new_user, chat_ws):
    alice, bob, carol = new_user("Alice"), new_user("Bob"), new_user("Carol")
    room = create_room(https, alice)
    join_ok(https, bob, room["id"])
    alice_ws, bob_ws, carol_ws = chat_ws(alice), chat_ws(bob), chat_ws(carol)
    posted = send_ok(https, alice, room["id"], "tpyo")
    r = edit(https, alice, room["id"], posted["id"], "typo")
    assert r.status_code == 200, r.text
    edited = r.json()
    for client in (alice_ws, bob_ws):
        frame = client.wait_for(is_type("message.updated", room_id=room["id"]))
        assert same_message(frame["message"], edited), (frame, edited)
        assert frame["message"]["seq"] == posted["seq"] and frame["message"]["body"] == "typo"
        assert frame["message"]["edited_at"] is not None
    assert delete_message(https, alice, room["id"], posted["id"]).status_code == 204
    for client in (alice_ws, bob_ws):
        frame = client.wait_for(is_type("message.deleted", room_id=room["id"]))
        assert frame["message_id"] == posted["id"] and frame["seq"] == posted["seq"], frame
    carol_ws.assert_none(lambda f: f.get("room_id") == room["id"], settle=0)


def test_room_read_syncs_the_callers_tabs_only(https, new_user, chat_ws):
    alice, bob = new_user("Alice"), new_user("Bob")
    room = create_room(https, alice)
    join_ok(https, bob, room["id"])
    for i in range(3):
        send_ok(https, alice, room["id"], f"m{i}")
    bob1, bob2, alice_ws = chat_ws(bob), chat_ws(bob), chat_ws(alice)
    marks = {c: c.mark() for c in (bob1, bob2, alice_ws)}
    assert mark_read(https, bob, room["id"], 2).status_code == 204
    for client in (bob1, bob2):
        frame = client.wait_for(is_type("room.read", room_id=room["id"]), start=marks[client])
        assert frame["seq"] == 2, frame
    alice_ws.assert_none(is_type("room.read"), start=marks[alice_ws])


# --- typing ------------------------------------------------------------------------------

def test_typing_reaches_the_other_members_but_none_of_the_senders_sockets(https, new_user, chat_ws):
    alice, bob, carol = new_user("Alice"), new_user("Bob"), new_user("Carol")
    room = create_room(https, alice)
    join_ok(https, bob, room["id"])
    alice1, alice2, bob_ws, carol_ws = chat_ws(alice), chat_ws(alice), chat_ws(bob), chat_ws(carol)
    alice1.send({"type": "typing", "room_id": room["id"]})
    frame = bob_ws.wait_for(is_type("typing", room_id=room["id"]))
    assert frame["user_id"] == alice.id, frame
    for client in (alice1, alice2, carol_ws):
        client.assert_none(is_type("typing"), settle=0)
    bob_ws.send({"type": "typing", "room_id": room["id"]})
    for client in (alice1, alice2):
        assert client.wait_for(is_type("typing", room_id=room["id"]))["user_id"] == bob.id
    bob_ws.assert_none(lambda f: f.get("type") == "typing" and f.get("user_id") == bob.id, settle=0)


def test_typing_in_a_room_you_are_not_in_gets_an_error_frame(https, new_user, chat_ws):
    alice, carol = new_user("Alice"), new_user("Carol")
    public = create_room(https, alice, kind="public")
    private = create_room(https, alice, kind="private")
    alice_ws, carol_ws = chat_ws(alice), chat_ws(carol)
    for room_id in (public["id"], private["id"], str(uuid.uuid4())):
        mark = carol_ws.mark()
        carol_ws.send({"type": "typing", "room_id": room_id})
        error = carol_ws.wait_for(is_type("error"), start=mark)
        assert isinstance(error.get("code"), str) and error["code"], error
        assert isinstance(error.get("message"), str), error
        carol_ws.sync()  # the connection stays open
    alice_ws.assert_none(is_type("typing"))


# --- presence ----------------------------------------------------------------------------

def test_presence_online_on_the_first_socket_and_offline_after_the_last(https, new_user, chat_ws):
    alice, bob, carol = new_user("Alice"), new_user("Bob"), new_user("Carol")
    room = create_room(https, alice)
    join_ok(https, bob, room["id"])
    create_room(https, carol)  # carol shares no room with alice
    bob_ws, carol_ws = chat_ws(bob), chat_ws(carol)
    is_alice = lambda status: is_type("presence", user_id=alice.id, status=status)  # noqa: E731
    tab1 = chat_ws(alice, label="alice-tab1")
    frame = bob_ws.wait_for(is_alice("online"))
    assert {"type", "user_id", "status"} <= set(frame)
    tab2 = chat_ws(alice, label="alice-tab2")
    tab2.close()
    # Alice still has a socket: no offline.
    mark = bob_ws.mark()
    bob_ws.pump(1.5)
    bob_ws.assert_none(is_alice("offline"), settle=0, start=mark)
    tab1.close()
    bob_ws.wait_for(is_alice("offline"), timeout=10, start=mark)
    carol_ws.assert_none(lambda f: f.get("type") == "presence" and f.get("user_id") == alice.id, settle=0)


def test_presence_reaches_each_socket_once_however_many_rooms_are_shared(https, new_user, chat_ws, stack):
    # Alice shares three rooms with Bob (public, private, direct) and one each with Carol,
    # Dave and Erin. A presence change is one broker message whatever the number of rooms
    # (the other room keys ride in its CC header), so every socket gets it once, on either
    # relay, and whichever of Alice's rooms carries the routing key.
    alice, bob, carol, dave, erin = (new_user(n) for n in ("Alice", "Bob", "Carol", "Dave", "Erin"))
    public = create_room(https, alice)
    private = create_room(https, alice, kind="private")
    for r in (direct(https, alice, bob.id), direct(https, alice, erin.id)):
        assert r.status_code == 201, r.text
    join_ok(https, bob, public["id"])
    join_ok(https, carol, public["id"])
    add_member_ok(https, alice, private["id"], bob.id)
    add_member_ok(https, alice, private["id"], dave.id)
    last = len(relay_ports(stack)) - 1
    watchers = [chat_ws(bob, relay=i, label=f"bob-relay{i}") for i in range(last + 1)]
    watchers += [chat_ws(carol, relay=0, label="carol"), chat_ws(dave, relay=last, label="dave"),
                 chat_ws(erin, relay=0, label="erin")]
    is_alice = lambda status: is_type("presence", user_id=alice.id, status=status)  # noqa: E731
    tab = chat_ws(alice, relay=0, label="alice")
    for w in watchers:
        w.wait_for(is_alice("online"))
    tab.close()
    for w in watchers:
        w.wait_for(is_alice("offline"), timeout=10)
        w.pump(0.5)
        w.sync()
        assert (w.count(is_alice("online")), w.count(is_alice("offline"))) == (1, 1), (w.label, w.frames)


def test_members_list_carries_a_presence_snapshot(https, new_user, chat_ws, wait_until):
    from chat import members_ok
    alice, bob = new_user("Alice"), new_user("Bob")
    room = create_room(https, alice)
    join_ok(https, bob, room["id"])

    def online():
        return {uid: m["online"] for uid, m in members_ok(https, alice, room["id"]).items()}

    assert online() == {alice.id: False, bob.id: False}
    bob_ws = chat_ws(bob)
    assert online() == {alice.id: False, bob.id: True}
    bob_ws.close()
    wait_until(lambda: online() == {alice.id: False, bob.id: False}, timeout=10)


# --- logout ------------------------------------------------------------------------------

def test_logout_closes_that_sessions_sockets_with_4401(https, new_user, chat_ws):
    alice = new_user("Alice")
    r = login(https, alice.email)
    assert r.status_code == 200, r.text
    other_session = r.json()["token"]
    tab1, tab2 = chat_ws(alice, label="session1-tab1"), chat_ws(alice, label="session1-tab2")
    other = chat_ws(other_session, label="session2")
    tab1.sync()
    tab2.sync()
    r = https.post("/api/auth/logout", headers=alice.headers)
    assert r.status_code == 204, r.text
    answered = time.monotonic()
    for client in (tab1, tab2):
        code = client.wait_closed(timeout=max(0.05, answered + 1.0 - time.monotonic()))
        assert code == 4401, f"{client.label} closed with {code}"
        revoked = [i for i, f in enumerate(client.frames) if f.get("type") == "session.revoked"]
        if revoked:
            assert revoked == [len(client.frames) - 1], f"session.revoked is not the last frame: {client.frames}"
    other.sync()  # the other session's socket stays
    assert not other.closed


# --- resume ------------------------------------------------------------------------------

def test_resume_after_a_disconnect_fetches_exactly_the_missed_messages(https, new_user, chat_ws):
    alice, bob = new_user("Alice"), new_user("Bob")
    room = create_room(https, alice)
    join_ok(https, bob, room["id"])
    for i in range(5):
        send_ok(https, alice, room["id"], f"seen {i}")
    first = chat_ws(alice)
    old = first.ready_rooms[room["id"]]
    assert old == 5
    first.close()
    missed = [send_ok(https, bob, room["id"], f"missed {i}") for i in range(20)]
    again = chat_ws(alice)
    assert again.ready_rooms[room["id"]] == old + 20
    page = history_ok(https, alice, room["id"], after_seq=old)
    assert page["has_more"] is False
    assert [m["seq"] for m in page["messages"]] == list(range(old + 1, old + 21))
    assert [m["id"] for m in page["messages"]] == [m["id"] for m in missed]
    assert all(same_message(a, b) for a, b in zip(page["messages"], missed))


# --- scale-out ---------------------------------------------------------------------------

def test_users_on_different_relays_all_receive_a_message(https, new_user, chat_ws, stack):
    import pytest
    if len(relay_ports(stack)) < 2:
        pytest.skip("needs two relays")
    alice, bob, carol = new_user("Alice"), new_user("Bob"), new_user("Carol")
    room = create_room(https, carol)
    join_ok(https, alice, room["id"])
    join_ok(https, bob, room["id"])
    alice_ws = chat_ws(alice, relay=0)
    bob_ws = chat_ws(bob, relay=1)
    alice_also = chat_ws(alice, relay=1)
    posted = send_ok(https, carol, room["id"], "to both relays")  # through nginx
    for client in (alice_ws, bob_ws, alice_also):
        check_created(client.wait_for(created(posted["id"])), posted)
    # Typing crosses relays too, and still skips the sender's sockets on both.
    alice_ws.send({"type": "typing", "room_id": room["id"]})
    assert bob_ws.wait_for(is_type("typing", room_id=room["id"]))["user_id"] == alice.id
    alice_also.assert_none(is_type("typing"))
    alice_ws.assert_none(is_type("typing"), settle=0)
