"""Messages over REST (API.md "Messages" and "Precise rules"): sending with per-room
gap-free seqs and idempotent client_ids, body limits in Unicode scalars, history paging and
has_more, edits, deletes, read markers and unread counts, search, and concurrent sends.
The MongoDB-down case is in test_92_chat_faults.py (fault tests run last)."""

import threading
import uuid

import pytest

from accounts import expect_error
from chat import (add_member_ok, check_message, create_room, delete_message, edit, fresh_session,  # noqa: F401
                  get_room_ok, history, history_ok, join_ok, make_admin, mark_read, my_rooms, new_user,
                  same_message, search, search_ok, send, send_ok)


# --- sending -----------------------------------------------------------------------------

def test_send_returns_the_stored_message_with_consecutive_seqs(https, new_user):
    alice = new_user("Alice")
    room = create_room(https, alice)
    r = send(https, alice, room["id"], "  hello there \n", client_id="c-1")
    assert r.status_code == 201, r.text
    first = check_message(r.json())
    assert first["seq"] == 1
    assert first["body"] == "hello there"
    assert first["client_id"] == "c-1"
    assert first["room_id"] == room["id"] and first["author_id"] == alice.id
    assert first["edited_at"] is None and first["deleted"] is False
    second = send_ok(https, alice, room["id"], "second")
    assert second["seq"] == 2 and second["client_id"] is None
    assert second["id"] != first["id"]
    assert get_room_ok(https, alice, room["id"])["last_seq"] == 2
    stored = history_ok(https, alice, room["id"])["messages"]
    assert len(stored) == 2
    assert same_message(stored[0], first) and same_message(stored[1], second)


def test_seqs_are_per_room(https, new_user):
    alice = new_user("Alice")
    one, two = create_room(https, alice), create_room(https, alice)
    assert [send_ok(https, alice, one["id"], f"a{i}")["seq"] for i in range(3)] == [1, 2, 3]
    assert send_ok(https, alice, two["id"], "b")["seq"] == 1
    assert send_ok(https, alice, one["id"], "a3")["seq"] == 4


def test_reused_client_id_answers_200_with_the_original_and_stores_one(https, new_user):
    alice = new_user("Alice")
    room = create_room(https, alice)
    cid = "retry-" + uuid.uuid4().hex
    r = send(https, alice, room["id"], "the original", client_id=cid)
    assert r.status_code == 201, r.text
    original = check_message(r.json())
    for body in ("the original", "a different body"):
        again = send(https, alice, room["id"], body, client_id=cid)
        assert again.status_code == 200, again.text
        assert same_message(check_message(again.json()), original), again.text
    stored = history_ok(https, alice, room["id"])["messages"]
    assert [m["id"] for m in stored] == [original["id"]]
    assert stored[0]["body"] == "the original"
    assert get_room_ok(https, alice, room["id"])["last_seq"] == 1
    # The retries burned no seq.
    assert send_ok(https, alice, room["id"], "next")["seq"] == 2


def test_client_id_is_scoped_to_author_and_room(https, new_user):
    alice, bob = new_user("Alice"), new_user("Bob")
    room, other = create_room(https, alice), create_room(https, alice)
    join_ok(https, bob, room["id"])
    cid = "same-" + uuid.uuid4().hex
    a = send_ok(https, alice, room["id"], "from alice", client_id=cid)
    r = send(https, bob, room["id"], "from bob", client_id=cid)
    assert r.status_code == 201, r.text
    b = r.json()
    assert b["id"] != a["id"] and b["seq"] == 2 and b["author_id"] == bob.id and b["body"] == "from bob"
    r = send(https, alice, other["id"], "other room", client_id=cid)
    assert r.status_code == 201, r.text
    assert r.json()["seq"] == 1 and r.json()["room_id"] == other["id"]


@pytest.mark.parametrize("body", ["", "   ", "\n\t \r\n", "a" * 4001, "é" * 4001, "😀" * 4001,
                                  "  " + "b" * 4001 + "  "],
                         ids=["empty", "blank", "whitespace", "4001-ascii", "4001-e-acute", "4001-emoji",
                              "4001-padded"])
def test_body_out_of_range_is_invalid_body(https, new_user, body):
    alice = new_user("Alice")
    room = create_room(https, alice)
    expect_error(send(https, alice, room["id"], body), 400, "invalid_body")
    assert get_room_ok(https, alice, room["id"])["last_seq"] == 0


@pytest.mark.parametrize("body", ["a" * 4000, "é" * 4000, "😀" * 4000, "\n " + "c" * 4000 + " \n", "x"],
                         ids=["4000-ascii", "4000-e-acute", "4000-emoji", "4000-padded", "one"])
def test_body_limit_counts_unicode_scalars_after_trimming(https, new_user, body):
    alice = new_user("Alice")
    room = create_room(https, alice)
    message = send_ok(https, alice, room["id"], body)
    assert message["body"] == body.strip()
    assert history_ok(https, alice, room["id"])["messages"][0]["body"] == body.strip()


@pytest.mark.parametrize("payload", [{}, {"body": None}, {"body": 42}, {"body": ["x"]},
                                     {"body": "ok", "client_id": 7}],
                         ids=["missing", "null", "number", "array", "numeric-client-id"])
def test_send_with_wrong_types_is_400(https, new_user, payload):
    alice = new_user("Alice")
    room = create_room(https, alice)
    r = https.post(f"/api/rooms/{room['id']}/messages", json=payload, headers=alice.headers)
    expect_error(r, 400)


# --- history -----------------------------------------------------------------------------

def page(https, who, room_id, **params):
    body = history_ok(https, who, room_id, **params)
    return [m["seq"] for m in body["messages"]], body["has_more"]


def test_history_paging_and_has_more(https, new_user):
    alice = new_user("Alice")
    room = create_room(https, alice)
    rid = room["id"]
    assert page(https, alice, rid) == ([], False)
    sent = [send_ok(https, alice, rid, f"message {i}") for i in range(1, 56)]
    assert [m["seq"] for m in sent] == list(range(1, 56))
    # No cursor: the newest page, default limit 50, ascending.
    newest = history_ok(https, alice, rid)
    assert [m["seq"] for m in newest["messages"]] == list(range(6, 56)) and newest["has_more"] is True
    assert [m["body"] for m in newest["messages"]] == [f"message {i}" for i in range(6, 56)]
    assert all(same_message(a, b) for a, b in zip(newest["messages"], sent[5:]))
    assert page(https, alice, rid, limit=1) == ([55], True)
    assert page(https, alice, rid, limit=54) == (list(range(2, 56)), True)
    assert page(https, alice, rid, limit=55) == (list(range(1, 56)), False)
    assert page(https, alice, rid, limit=100) == (list(range(1, 56)), False)
    # before_seq: older messages, has_more = still older ones exist.
    assert page(https, alice, rid, before_seq=11, limit=5) == ([6, 7, 8, 9, 10], True)
    assert page(https, alice, rid, before_seq=6, limit=5) == ([1, 2, 3, 4, 5], False)
    assert page(https, alice, rid, before_seq=3) == ([1, 2], False)
    assert page(https, alice, rid, before_seq=1) == ([], False)
    assert page(https, alice, rid, before_seq=56, limit=100) == (list(range(1, 56)), False)
    # after_seq: the oldest messages after the cursor, has_more = still newer ones exist.
    assert page(https, alice, rid, after_seq=10, limit=5) == ([11, 12, 13, 14, 15], True)
    assert page(https, alice, rid, after_seq=50) == ([51, 52, 53, 54, 55], False)
    assert page(https, alice, rid, after_seq=0) == (list(range(1, 51)), True)
    assert page(https, alice, rid, after_seq=50, limit=5) == ([51, 52, 53, 54, 55], False)
    assert page(https, alice, rid, after_seq=54, limit=1) == ([55], False)
    assert page(https, alice, rid, after_seq=55) == ([], False)


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"limit": -1}, {"limit": "abc"},
                                    {"before_seq": "abc"}, {"after_seq": "x1"}],
                         ids=["limit-0", "limit-101", "limit-negative", "limit-text", "before-text", "after-text"])
def test_history_bad_parameters_are_400(https, new_user, params):
    alice = new_user("Alice")
    room = create_room(https, alice)
    send_ok(https, alice, room["id"], "hi")
    expect_error(history(https, alice, room["id"], **params), 400)


# --- edit and delete ---------------------------------------------------------------------

def test_author_edits_and_nobody_else_does(https, new_user, pg_conn):
    alice, bob, admin = new_user("Alice"), new_user("Bob"), new_user("Admin")
    room = create_room(https, alice)
    join_ok(https, bob, room["id"])
    join_ok(https, admin, room["id"])
    make_admin(pg_conn, room["id"], admin.id)
    original = send_ok(https, bob, room["id"], "frist")
    r = edit(https, bob, room["id"], original["id"], "  first  ")
    assert r.status_code == 200, r.text
    edited = check_message(r.json())
    assert edited["id"] == original["id"] and edited["seq"] == original["seq"]
    assert edited["body"] == "first" and edited["edited_at"] is not None
    assert edited["created_at"] == original["created_at"] and edited["author_id"] == bob.id
    assert edited["deleted"] is False
    stored = history_ok(https, alice, room["id"])["messages"]
    assert len(stored) == 1 and same_message(stored[0], edited)
    # Owner and admin may delete it, but only the author may edit.
    expect_error(edit(https, alice, room["id"], original["id"], "owner's words"), 403)
    expect_error(edit(https, admin, room["id"], original["id"], "admin's words"), 403)
    expect_error(edit(https, bob, room["id"], original["id"], "   "), 400, "invalid_body")
    expect_error(edit(https, bob, room["id"], original["id"], "x" * 4001), 400, "invalid_body")
    assert history_ok(https, alice, room["id"])["messages"][0]["body"] == "first"
    # An edit does not allocate a seq.
    assert get_room_ok(https, alice, room["id"])["last_seq"] == 1


def test_author_deletes_and_the_message_stays_as_deleted(https, new_user):
    alice = new_user("Alice")
    room = create_room(https, alice)
    keep = send_ok(https, alice, room["id"], "keep me")
    gone = send_ok(https, alice, room["id"], "delete me")
    r = delete_message(https, alice, room["id"], gone["id"])
    assert r.status_code == 204, r.text
    stored = history_ok(https, alice, room["id"])["messages"]
    assert [m["seq"] for m in stored] == [1, 2]
    assert same_message(stored[0], keep)
    assert stored[1]["id"] == gone["id"] and stored[1]["deleted"] is True and stored[1]["body"] == ""
    assert stored[1]["author_id"] == alice.id
    assert get_room_ok(https, alice, room["id"])["last_seq"] == 2
    assert send_ok(https, alice, room["id"], "after")["seq"] == 3


def test_owner_and_admin_delete_others_messages_a_member_does_not(https, new_user, pg_conn):
    owner, admin, bob, carol = new_user("Owner"), new_user("Admin"), new_user("Bob"), new_user("Carol")
    room = create_room(https, owner, kind="private")
    for user in (admin, bob, carol):
        add_member_ok(https, owner, room["id"], user.id)
    make_admin(pg_conn, room["id"], admin.id)
    by_bob = send_ok(https, bob, room["id"], "bob one")
    by_bob2 = send_ok(https, bob, room["id"], "bob two")
    by_owner = send_ok(https, owner, room["id"], "owner's")
    expect_error(delete_message(https, carol, room["id"], by_bob["id"]), 403)
    expect_error(delete_message(https, bob, room["id"], by_owner["id"]), 403)
    assert delete_message(https, owner, room["id"], by_bob["id"]).status_code == 204
    assert delete_message(https, admin, room["id"], by_bob2["id"]).status_code == 204
    stored = {m["id"]: m for m in history_ok(https, carol, room["id"])["messages"]}
    assert stored[by_bob["id"]]["deleted"] and stored[by_bob["id"]]["body"] == ""
    assert stored[by_bob2["id"]]["deleted"] and stored[by_bob2["id"]]["body"] == ""
    assert not stored[by_owner["id"]]["deleted"] and stored[by_owner["id"]]["body"] == "owner's"


# --- read markers ------------------------------------------------------------------------

def marker(https, who, room_id):
    room = my_rooms(https, who)[room_id]
    assert room["unread"] == room["last_seq"] - room["last_read_seq"], room
    return room["last_read_seq"], room["unread"]


def test_read_markers_move_forward_only_and_clamp(https, new_user):
    alice, bob = new_user("Alice"), new_user("Bob")
    room = create_room(https, alice)
    rid = room["id"]
    join_ok(https, bob, rid)
    assert marker(https, bob, rid) == (0, 0)
    for i in range(3):
        send_ok(https, alice, rid, f"m{i}")
    # Sending moves the author's own marker.
    assert marker(https, alice, rid) == (3, 0)
    assert marker(https, bob, rid) == (0, 3)
    assert mark_read(https, bob, rid, 2).status_code == 204
    assert marker(https, bob, rid) == (2, 1)
    assert mark_read(https, bob, rid, 1).status_code == 204
    assert marker(https, bob, rid) == (2, 1)
    assert mark_read(https, bob, rid, 2).status_code == 204
    assert marker(https, bob, rid) == (2, 1)
    assert mark_read(https, bob, rid, 99).status_code == 204
    assert marker(https, bob, rid) == (3, 0)
    # The clamped marker is last_seq itself: the next message is unread.
    send_ok(https, alice, rid, "m3")
    assert marker(https, bob, rid) == (3, 1)
    assert marker(https, alice, rid) == (4, 0)
    sent = send_ok(https, bob, rid, "bob's reply")
    assert marker(https, bob, rid) == (sent["seq"], 0)
    assert marker(https, alice, rid) == (4, 1)


@pytest.mark.parametrize("payload", [{}, {"seq": "3"}, {"seq": None}, {"seq": 1.5}, {"seq": [1]}],
                         ids=["missing", "string", "null", "fraction", "array"])
def test_read_marker_bad_input_is_400(https, new_user, payload):
    alice = new_user("Alice")
    room = create_room(https, alice)
    send_ok(https, alice, room["id"], "hi")
    r = https.post(f"/api/rooms/{room['id']}/read", json=payload, headers=alice.headers)
    expect_error(r, 400)


def test_joining_sets_the_read_marker_to_last_seq(https, new_user):
    alice, bob = new_user("Alice"), new_user("Bob")
    room = create_room(https, alice)
    for i in range(4):
        send_ok(https, alice, room["id"], f"before bob {i}")
    join_ok(https, bob, room["id"])
    assert marker(https, bob, room["id"]) == (4, 0)
    send_ok(https, alice, room["id"], "welcome")
    assert marker(https, bob, room["id"]) == (4, 1)
    # Joining again (idempotent) does not move it.
    join_ok(https, bob, room["id"])
    assert marker(https, bob, room["id"]) == (4, 1)


def test_unread_is_last_seq_minus_last_read_seq_for_every_room(https, new_user):
    alice, bob = new_user("Alice"), new_user("Bob")
    rooms = [create_room(https, alice) for _ in range(3)]
    for room in rooms:
        join_ok(https, bob, room["id"])
    for n, room in enumerate(rooms):
        for i in range(n + 1):
            send_ok(https, alice, room["id"], f"r{n} m{i}")
    listed = my_rooms(https, bob)
    for n, room in enumerate(rooms):
        entry = listed[room["id"]]
        assert (entry["last_seq"], entry["last_read_seq"], entry["unread"]) == (n + 1, 0, n + 1), entry


# --- search ------------------------------------------------------------------------------

def test_search_finds_case_insensitively_in_the_callers_rooms_only(https, new_user):
    alice, bob = new_user("Alice"), new_user("Bob")
    word = "Quokka" + uuid.uuid4().hex[:10]
    mine = create_room(https, alice, kind="public")
    mine_private = create_room(https, alice, kind="private")
    theirs = create_room(https, bob, kind="public")
    theirs_private = create_room(https, bob, kind="private")
    hit1 = send_ok(https, alice, mine["id"], f"I saw a {word.upper()} today")
    hit2 = send_ok(https, alice, mine_private["id"], f"the {word} again")
    send_ok(https, alice, mine["id"], "nothing to see here")
    miss1 = send_ok(https, bob, theirs["id"], f"bob's {word}")
    miss2 = send_ok(https, bob, theirs_private["id"], f"bob's secret {word}")
    found = search_ok(https, alice, word.lower())
    assert {m["id"] for m in found} == {hit1["id"], hit2["id"]}
    assert not {m["id"] for m in found} & {miss1["id"], miss2["id"]}
    found = {m["id"]: m for m in search_ok(https, alice, word.lower())}
    assert same_message(found[hit1["id"]], hit1)
    # Limited to one room.
    assert [m["id"] for m in search_ok(https, alice, word, room_id=mine["id"])] == [hit1["id"]]
    # A room the caller is not in (public, private, or none at all): an empty list.
    assert search_ok(https, alice, word, room_id=theirs["id"]) == []
    assert search_ok(https, alice, word, room_id=theirs_private["id"]) == []
    assert search_ok(https, alice, word, room_id=str(uuid.uuid4())) == []
    # Bob finds his own.
    assert {m["id"] for m in search_ok(https, bob, word)} == {miss1["id"], miss2["id"]}


def test_search_without_q_is_400(https, new_user):
    alice = new_user("Alice")
    expect_error(search(https, alice), 400)


# --- concurrency -------------------------------------------------------------------------

def test_concurrent_sends_get_gap_free_seqs(https, new_user):
    users = [new_user(f"Sender{i}") for i in range(3)]
    room = create_room(https, users[0])
    for user in users[1:]:
        join_ok(https, user, room["id"])
    count = 30
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def worker(i: int) -> None:
        session = fresh_session(https)
        try:
            barrier.wait(timeout=30)
            results[i] = send_ok(session, users[i % 3], room["id"], f"concurrent {i}", client_id=f"cc-{i}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            results[i] = exc
        finally:
            session.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    errors = [r for r in results if not isinstance(r, dict)]
    assert not errors, errors
    seqs = sorted(m["seq"] for m in results)
    assert seqs == list(range(1, count + 1)), seqs
    assert len({m["id"] for m in results}) == count
    stored = history_ok(https, users[0], room["id"], limit=100)
    assert [m["seq"] for m in stored["messages"]] == list(range(1, count + 1))
    by_seq = {m["seq"]: m for m in results}
    assert all(same_message(m, by_seq[m["seq"]]) for m in stored["messages"])
    assert get_room_ok(https, users[0], room["id"])["last_seq"] == count
