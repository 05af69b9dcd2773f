"""Rooms and membership (API.md "Rooms" and "Precise rules"): creation and validation, the
caller's room list, the public directory, join/leave, members, direct rooms, user search,
and the authorization matrix of every room and message endpoint for every kind of caller."""

import uuid
from dataclasses import dataclass, field

import pytest

from accounts import error_code, expect_error
from chat import (add_member, add_member_ok, call, check_room,  # noqa: F401 (new_user is a fixture)
                  create_room, create_room_r, delete_message, direct, edit, find_users, get_room,
                  get_room_ok, history, join, join_ok, leave, make_admin, mark_read, members,
                  members_ok, my_rooms, new_user, public_rooms, remove_member, search, send, send_ok,
                  unique_name)


# --- creating rooms ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["public", "private"])
def test_create_room_makes_the_creator_its_owner(https, new_user, kind):
    alice = new_user("Alice")
    name = unique_name(kind)
    r = create_room_r(https, alice, {"name": name, "kind": kind})
    assert r.status_code == 201, r.text
    room = check_room(r.json(), kind)
    assert room["name"] == name
    assert room["created_by"] == alice.id
    assert room["last_seq"] == 0 and room["member_count"] == 1
    again = get_room_ok(https, alice, room["id"])
    assert {k: again[k] for k in ("id", "name", "kind", "created_by", "created_at", "last_seq", "member_count")} \
        == {k: room[k] for k in ("id", "name", "kind", "created_by", "created_at", "last_seq", "member_count")}
    listed = members_ok(https, alice, room["id"])
    assert list(listed) == [alice.id]
    assert listed[alice.id]["role"] == "owner"
    assert listed[alice.id]["display_name"] == alice.name


@pytest.mark.parametrize("name", ["", "   ", "\t \n", "x" * 101, " " + "y" * 101 + " "],
                         ids=["empty", "blank", "whitespace", "101-chars", "101-chars-padded"])
def test_room_name_out_of_range_is_invalid_room_name(https, new_user, name):
    alice = new_user("Alice")
    expect_error(create_room_r(https, alice, {"name": name, "kind": "public"}), 400, "invalid_room_name")


def test_room_name_limits_count_after_trimming(https, new_user):
    alice = new_user("Alice")
    hundred = ("r" + uuid.uuid4().hex * 4)[:100]
    r = create_room_r(https, alice, {"name": hundred, "kind": "public"})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == hundred
    padded = "  " + unique_name("trim") + "  "
    r = create_room_r(https, alice, {"name": padded, "kind": "private"})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == padded.strip()
    one = create_room_r(https, alice, {"name": "z", "kind": "public"})
    assert one.status_code == 201, one.text


@pytest.mark.parametrize("body", [
    {"name": "ok name", "kind": "direct"},
    {"name": "ok name", "kind": "secret"},
    {"name": "ok name", "kind": ""},
    {"name": "ok name", "kind": None},
    {"name": "ok name", "kind": 1},
    {"kind": "public"},
    {"name": 42, "kind": "public"},
    ["name", "public"],
], ids=["direct", "unknown-kind", "empty-kind", "null-kind", "numeric-kind", "no-name", "numeric-name", "array"])
def test_create_room_bad_input_is_400(https, new_user, body):
    alice = new_user("Alice")
    expect_error(create_room_r(https, alice, body), 400)


def test_create_room_body_not_json_is_400(https, new_user):
    alice = new_user("Alice")
    r = call(https, "POST", "/api/rooms", alice, data=b"{name: nope",
             headers={"Content-Type": "application/json"})
    expect_error(r, 400)


# --- the caller's rooms, the public directory ---------------------------------------------

def test_my_rooms_lists_the_callers_rooms_only_with_unread_and_read_marker(https, new_user):
    alice, bob = new_user("Alice"), new_user("Bob")
    mine_public = create_room(https, alice, kind="public")
    mine_private = create_room(https, alice, kind="private")
    bobs = create_room(https, bob, kind="public")
    bobs_private = create_room(https, bob, kind="private")
    rooms = my_rooms(https, alice)
    assert set(rooms) == {mine_public["id"], mine_private["id"]}
    for room in rooms.values():
        assert room["unread"] == 0 and room["last_read_seq"] == 0, room
        assert room["member_count"] == 1 and room["last_seq"] == 0, room
    assert rooms[mine_private["id"]]["kind"] == "private"
    # Joining adds the room to the list; leaving removes it.
    join_ok(https, alice, bobs["id"])
    assert set(my_rooms(https, alice)) == {mine_public["id"], mine_private["id"], bobs["id"]}
    assert my_rooms(https, alice)[bobs["id"]]["member_count"] == 2
    r = leave(https, alice, bobs["id"])
    assert r.status_code == 204, r.text
    assert set(my_rooms(https, alice)) == {mine_public["id"], mine_private["id"]}
    assert set(my_rooms(https, bob)) == {bobs["id"], bobs_private["id"]}


def test_public_directory_finds_public_rooms_by_name_prefix_and_never_private_ones(https, new_user):
    alice, carol = new_user("Alice"), new_user("Carol")
    prefix = "dir" + uuid.uuid4().hex[:12]
    public = [create_room(https, alice, f"{prefix} {word}", "public") for word in ("alpha", "beta", "gamma")]
    private = create_room(https, alice, f"{prefix} secret", "private")
    create_room(https, alice, unique_name("unrelated"), "public")
    # Carol is in none of them and still finds the public ones.
    r = public_rooms(https, carol, q=prefix)
    assert r.status_code == 200, r.text
    found = [check_room(room) for room in r.json()["rooms"]]
    assert {room["id"] for room in found} == {room["id"] for room in public}
    assert all(room["kind"] == "public" for room in found)
    # The private room's full name finds nothing.
    r = public_rooms(https, carol, q=f"{prefix} secret")
    assert r.status_code == 200, r.text
    assert r.json()["rooms"] == []
    assert private["id"] not in {room["id"] for room in public_rooms(https, alice, q=prefix).json()["rooms"]}
    # limit
    r = public_rooms(https, carol, q=prefix, limit=2)
    assert r.status_code == 200, r.text
    limited = r.json()["rooms"]
    assert len(limited) == 2 and {room["id"] for room in limited} <= {room["id"] for room in public}
    # Without q: public rooms only.
    r = public_rooms(https, carol, limit=100)
    assert r.status_code == 200, r.text
    assert all(check_room(room)["kind"] == "public" for room in r.json()["rooms"])


def test_join_is_idempotent_and_counts_members(https, new_user):
    alice, bob = new_user("Alice"), new_user("Bob")
    room = create_room(https, alice, kind="public")
    first = join_ok(https, bob, room["id"])
    second = join_ok(https, bob, room["id"])
    assert first["id"] == second["id"] == room["id"]
    assert first["member_count"] == second["member_count"] == 2
    listed = members_ok(https, bob, room["id"])
    assert set(listed) == {alice.id, bob.id}
    assert listed[bob.id]["role"] == "member" and listed[alice.id]["role"] == "owner"
    assert listed[bob.id]["display_name"] == bob.name
    assert get_room_ok(https, alice, room["id"])["member_count"] == 2
    # Joining your own room is a no-op too.
    assert join_ok(https, alice, room["id"])["member_count"] == 2


def test_owner_adds_and_removes_members_of_a_private_room(https, new_user):
    alice, bob, carol = new_user("Alice"), new_user("Bob"), new_user("Carol")
    room = create_room(https, alice, kind="private")
    member = add_member_ok(https, alice, room["id"], bob.id)
    assert member["user_id"] == bob.id and member["role"] == "member" and member["display_name"] == bob.name
    assert get_room_ok(https, bob, room["id"])["member_count"] == 2
    assert room["id"] in my_rooms(https, bob)
    # Bob is a plain member: he can neither add nor remove anyone.
    expect_error(add_member(https, bob, room["id"], carol.id), 403)
    expect_error(remove_member(https, bob, room["id"], alice.id), 403)
    # An unknown user cannot be added.
    expect_error(add_member(https, alice, room["id"], str(uuid.uuid4())), 404)
    r = remove_member(https, alice, room["id"], bob.id)
    assert r.status_code == 204, r.text
    expect_error(get_room(https, bob, room["id"]), 404)
    assert room["id"] not in my_rooms(https, bob)
    assert set(members_ok(https, alice, room["id"])) == {alice.id}


def test_anyone_removes_themselves(https, new_user):
    alice, bob = new_user("Alice"), new_user("Bob")
    room = create_room(https, alice, kind="private")
    add_member_ok(https, alice, room["id"], bob.id)
    r = remove_member(https, bob, room["id"], bob.id)
    assert r.status_code == 204, r.text
    expect_error(get_room(https, bob, room["id"]), 404)
    assert get_room_ok(https, alice, room["id"])["member_count"] == 1


def test_leaving_a_private_room_hides_it(https, new_user):
    alice, bob = new_user("Alice"), new_user("Bob")
    room = create_room(https, alice, kind="private")
    add_member_ok(https, alice, room["id"], bob.id)
    send_ok(https, alice, room["id"], "before bob leaves")
    r = leave(https, bob, room["id"])
    assert r.status_code == 204, r.text
    expect_error(get_room(https, bob, room["id"]), 404)
    expect_error(history(https, bob, room["id"]), 404)
    expect_error(join(https, bob, room["id"]), 403, "not_invited")
    assert room["id"] not in my_rooms(https, bob)


# --- direct rooms ------------------------------------------------------------------------

def test_direct_room_is_created_once_and_shared_from_either_side(https, new_user):
    alice, bob, carol = new_user("Alice"), new_user("Bob"), new_user("Carol")
    first = direct(https, alice, bob.id)
    assert first.status_code == 201, first.text
    room = check_room(first.json(), "direct")
    assert room["member_count"] == 2
    again = direct(https, alice, bob.id)
    assert again.status_code == 200, again.text
    assert check_room(again.json(), "direct")["id"] == room["id"]
    other_side = direct(https, bob, alice.id)
    assert other_side.status_code == 200, other_side.text
    assert other_side.json()["id"] == room["id"]
    assert set(members_ok(https, bob, room["id"])) == {alice.id, bob.id}
    assert room["id"] in my_rooms(https, alice) and room["id"] in my_rooms(https, bob)
    assert my_rooms(https, alice)[room["id"]]["kind"] == "direct"
    # Both can talk in it.
    send_ok(https, alice, room["id"], "hi bob")
    send_ok(https, bob, room["id"], "hi alice")
    # A direct room is a private room of two.
    expect_error(get_room(https, carol, room["id"]), 404)
    expect_error(join(https, carol, room["id"]), 403, "not_invited")
    expect_error(history(https, carol, room["id"]), 404)
    expect_error(send(https, carol, room["id"], "let me in"), 404)
    expect_error(members(https, carol, room["id"]), 404)
    # And it is not in the public directory.
    if len(room["name"]) >= 1:
        listed = public_rooms(https, carol, q=room["name"])
        assert listed.status_code == 200, listed.text
        assert room["id"] not in {r["id"] for r in listed.json()["rooms"]}
    # Another pair gets another room.
    carols = direct(https, carol, alice.id)
    assert carols.status_code == 201, carols.text
    assert carols.json()["id"] != room["id"]


def test_direct_room_with_an_unknown_user_is_404(https, new_user):
    alice = new_user("Alice")
    expect_error(direct(https, alice, str(uuid.uuid4())), 404)


# --- user search -------------------------------------------------------------------------

def test_user_search_by_display_name_or_email_prefix_returns_id_and_name_only(https, new_user):
    tag = "Qs" + uuid.uuid4().hex[:8]
    target = new_user(tag)  # display name "<tag> <hex>", email "<tag lowercased>-<hex>@example.test"
    searcher = new_user("Searcher")
    r = find_users(https, searcher, tag)
    assert r.status_code == 200, r.text
    users = r.json()["users"]
    assert [u["id"] for u in users] == [target.id]
    assert users[0] == {"id": target.id, "display_name": target.name}
    by_email = find_users(https, searcher, target.email.split("@")[0])
    assert by_email.status_code == 200, by_email.text
    assert [u["id"] for u in by_email.json()["users"]] == [target.id]
    for user in by_email.json()["users"]:
        assert set(user) == {"id", "display_name"}, user
    # A two-character query is allowed; whatever it finds has the same two fields.
    r = find_users(https, searcher, tag[:2])
    assert r.status_code == 200, r.text
    assert all(set(u) == {"id", "display_name"} for u in r.json()["users"])


@pytest.mark.parametrize("q", [None, "", "Q"], ids=["missing", "empty", "one-char"])
def test_user_search_needs_two_characters(https, new_user, q):
    alice = new_user("Alice")
    expect_error(find_users(https, alice, q), 400)


# --- ids and authentication --------------------------------------------------------------

@pytest.mark.parametrize("method,path", [
    ("GET", "/api/rooms/not-a-uuid"),
    ("POST", "/api/rooms/not-a-uuid/join"),
    ("POST", "/api/rooms/12345/leave"),
    ("GET", "/api/rooms/not-a-uuid/members"),
    ("GET", "/api/rooms/not-a-uuid/messages"),
    ("POST", "/api/rooms/zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz/read"),
])
def test_non_uuid_room_ids_are_404(https, new_user, method, path):
    alice = new_user("Alice")
    kwargs = {"json": {"seq": 1}} if path.endswith("/read") else {}
    expect_error(call(https, method, path, alice, **kwargs), 404)


def test_non_uuid_and_unknown_ids_in_room_paths_are_404(https, new_user):
    alice = new_user("Alice")
    room = create_room(https, alice, kind="public")
    rid = room["id"]
    expect_error(remove_member(https, alice, rid, "not-a-uuid"), 404)
    expect_error(remove_member(https, alice, rid, str(uuid.uuid4())), 404)
    expect_error(edit(https, alice, rid, "no-such-message", "x"), 404)
    expect_error(delete_message(https, alice, rid, "no-such-message"), 404)
    expect_error(get_room(https, alice, str(uuid.uuid4())), 404)
    expect_error(join(https, alice, str(uuid.uuid4())), 404)
    expect_error(send(https, alice, str(uuid.uuid4()), "hello"), 404)
    expect_error(send(https, alice, "not-a-uuid", "hello"), 404)


@pytest.mark.parametrize("method,path,body", [
    ("GET", "/api/rooms", None),
    ("POST", "/api/rooms", {"name": "x", "kind": "public"}),
    ("GET", "/api/rooms/public", None),
    ("POST", "/api/direct", {"user_id": "00000000-0000-4000-8000-000000000000"}),
    ("GET", "/api/users?q=ab", None),
    ("GET", "/api/search?q=hello", None),
])
def test_room_endpoints_without_a_token_are_401(https, method, path, body):
    kwargs = {"json": body} if body is not None else {}
    expect_error(call(https, method, path, None, **kwargs), 401)


# --- the authorization matrix ------------------------------------------------------------
#
# For each caller, a fresh world: a public and a private room, each with an owner, an admin
# (promoted in PostgreSQL: the contract has no role endpoint), a member and a "victim"
# (a plain member whose message and membership the caller acts on), plus an outsider and a
# newcomer (whom the caller tries to add). Every room and message endpoint is called in an
# order where the mutating ones come last; each answer is compared with API.md.

ROLES = ("owner", "admin", "member", "victim")
CALLERS = ("anonymous", "outsider", "member", "admin", "owner")


@dataclass
class World:
    users: dict
    rooms: dict = field(default_factory=dict)   # kind -> Room
    msgs: dict = field(default_factory=dict)    # kind -> {role: Message}
    word: str = ""


def build_world(https, new_user, pg_conn) -> World:
    users = {role: new_user(role.capitalize()) for role in ROLES + ("outsider", "newcomer")}
    world = World(users=users, word="zebra" + uuid.uuid4().hex[:12])
    owner = users["owner"]
    for kind in ("public", "private"):
        room = create_room(https, owner, kind=kind)
        for role in ("admin", "member", "victim"):
            if kind == "public":
                join_ok(https, users[role], room["id"])
            else:
                add_member_ok(https, owner, room["id"], users[role].id)
        make_admin(pg_conn, room["id"], users["admin"].id)
        roles = {uid: m["role"] for uid, m in members_ok(https, owner, room["id"]).items()}
        assert roles == {users["owner"].id: "owner", users["admin"].id: "admin",
                         users["member"].id: "member", users["victim"].id: "member"}, roles
        world.rooms[kind] = room
        world.msgs[kind] = {role: send_ok(https, users[role], room["id"], f"{role} says {world.word}")
                            for role in ROLES}
    return world


def steps_for(caller: str, kind: str) -> list[str]:
    steps = ["get_room", "members", "history", "send"]
    if caller in ("member", "admin", "owner"):
        steps.append("edit_own")
    steps += ["edit_other", "read", "search", "add_member", "delete_other"]
    if caller in ("member", "admin", "owner"):
        steps.append("delete_own")
    steps.append("remove_other")
    if kind == "private" and caller in ("anonymous", "outsider"):
        steps.append("leave")
    steps.append("join")
    steps.append("leave" if kind == "public" else "remove_self")
    return steps


def perform(https, step: str, who, world: World, kind: str, caller: str, room_id: str):
    users, msgs = world.users, world.msgs[kind]
    own = msgs[caller]["id"] if caller in msgs else None
    other = msgs["victim"]["id"]
    me = world.users[caller].id if caller in world.users else str(uuid.uuid4())
    if step == "get_room":
        return get_room(https, who, room_id)
    if step == "members":
        return members(https, who, room_id)
    if step == "history":
        return history(https, who, room_id)
    if step == "send":
        return send(https, who, room_id, f"{caller} writes {world.word}")
    if step == "edit_own":
        return edit(https, who, room_id, own, f"{caller} edits {world.word}")
    if step == "edit_other":
        return edit(https, who, room_id, other, f"{caller} edits {world.word}")
    if step == "read":
        return mark_read(https, who, room_id, 1)
    if step == "search":
        return search(https, who, world.word, room_id)
    if step == "add_member":
        return add_member(https, who, room_id, users["newcomer"].id)
    if step == "delete_other":
        return delete_message(https, who, room_id, other)
    if step == "delete_own":
        return delete_message(https, who, room_id, own)
    if step == "remove_other":
        return remove_member(https, who, room_id, users["victim"].id)
    if step == "join":
        return join(https, who, room_id)
    if step == "leave":
        return leave(https, who, room_id)
    if step == "remove_self":
        return remove_member(https, who, room_id, me)
    raise AssertionError(step)


def expected(caller: str, kind: str, step: str) -> tuple[int, str]:
    """(status, check): check is an error code, "" (any code), "same_as_missing" (the 404 of
    a room that does not exist), "empty" / "found" (search results) or "" for successes."""
    if caller == "anonymous":
        return 401, ""
    if caller == "outsider":
        if step == "search":
            return 200, "empty"   # "Search with a room_id the caller is not in returns an empty list"
        if kind == "private":
            if step == "join":
                return 403, "not_invited"
            return 404, "same_as_missing"
        if step in ("get_room", "join"):
            return 200, ""
        if step == "leave":
            return 204, ""        # after the join just before
        if step in ("add_member", "remove_other"):
            return 403, ""        # needs owner or admin; the code is not fixed by API.md
        return 403, "not_a_member"
    privileged = caller in ("owner", "admin")
    return {
        "get_room": (200, ""), "members": (200, ""), "history": (200, ""), "send": (201, ""),
        "edit_own": (200, ""), "edit_other": (403, ""), "read": (204, ""), "search": (200, "found"),
        "add_member": (201 if privileged else 403, ""), "delete_other": (204 if privileged else 403, ""),
        "delete_own": (204, ""), "remove_other": (204 if privileged else 403, ""),
        "join": (200, ""), "leave": (204, ""), "remove_self": (204, ""),
    }[step]


def describe(r) -> str:
    try:
        code = r.json().get("error", {}).get("code")
    except ValueError:
        code = None
    return f"{r.status_code} {code or ''}".strip()


@pytest.mark.parametrize("caller", CALLERS)
def test_authorization_matrix(https, new_user, pg_conn, caller):
    world = build_world(https, new_user, pg_conn)
    who = None if caller == "anonymous" else world.users[caller]
    problems = []
    for kind in ("public", "private"):
        room_id = world.rooms[kind]["id"]
        for step in steps_for(caller, kind):
            status, check = expected(caller, kind, step)
            r = perform(https, step, who, world, kind, caller, room_id)
            where = f"{caller:9} {kind:7} {step:12}"
            if r.status_code != status:
                problems.append(f"{where} expected {status} {check}, got {describe(r)}: {r.text[:160]}")
                continue
            if status >= 400:
                try:
                    code = error_code(r)
                except AssertionError as exc:
                    problems.append(f"{where} error without the JSON envelope: {exc}")
                    continue
                if check == "same_as_missing":
                    missing = perform(https, step, who, world, kind, caller, str(uuid.uuid4()))
                    if missing.status_code != 404 or error_code(missing) != code:
                        problems.append(f"{where} 404 {code!r} differs from a missing room's "
                                        f"{describe(missing)} (leaks that the room exists)")
                elif check and code != check:
                    problems.append(f"{where} expected code {check!r}, got {code!r}")
            elif step == "search":
                found = r.json().get("messages")
                if check == "empty" and found != []:
                    problems.append(f"{where} expected no messages, got {found}")
                if check == "found" and not (found and all(m["room_id"] == room_id for m in found)):
                    problems.append(f"{where} expected this room's messages, got {found}")
            elif step in ("get_room", "join"):
                body = r.json()
                if body.get("id") != room_id:
                    problems.append(f"{where} answered another room: {body}")
            elif step == "add_member":
                body = r.json()
                if body.get("user_id") != world.users["newcomer"].id or body.get("role") != "member":
                    problems.append(f"{where} unexpected Member {body}")
    assert not problems, "authorization matrix mismatches:\n" + "\n".join(problems)
    if caller in ("member", "admin", "owner"):
        # The caller left both rooms at the end.
        expect_error(get_room(https, who, world.rooms["private"]["id"]), 404)
        expect_error(members(https, who, world.rooms["public"]["id"]), 403, "not_a_member")
        assert not set(my_rooms(https, who)) & {world.rooms["public"]["id"], world.rooms["private"]["id"]}
