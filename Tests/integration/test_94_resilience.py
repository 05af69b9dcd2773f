"""Fault injection across the stack, driving the real processes (scripts/stack.sh stops,
starts and SIGKILLs them). Each test ends by stating what was lost, and the answer must be
nothing that was acknowledged:

- RabbitMQ restarted during a stream of sends: every send ends acknowledged (201/200) or
  fails with 503 and a clear code (retried with the same client_id, as a client does);
  relays close their sockets with 1012 and take new ones once they re-declared; every
  acknowledged message is stored once, with gap-free seqs, and every client that resumes
  holds each of them exactly once; the Worker consumes again.
- Redis restarted: sessions are gone (Redis keeps no snapshot), so old tokens get 401 on
  REST and 4401 on a new socket; logging in again works and rooms and history are intact.
- The Worker killed with SIGKILL in the middle of a task (while the SMTP server has the
  DATA and has not answered): the task was not acked, RabbitMQ hands it to the restarted
  Worker, and the email arrives once.
- PostgreSQL too slow (a room's row held locked past the statement timeout): the send is
  503 postgresql_unavailable with Retry-After, not 500; the retry is stored once.
(MongoDB stopped and started: test_92_chat_faults; a pool process killed under load:
test_killed_pool_process_under_load_nginx_keeps_serving below.)
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from accounts import expect_error, login, register, unique_email, verify, verify_link
from chat import (chat_ws, create_room, fetch_after, fresh_session,  # noqa: F401
                  history_ok, join_ok, new_user, send, send_ok)
from test_92_chat_faults import Holder, assert_each_holds_exactly_once, catch_up, step_all

DEPENDENCY_CODES = {"rabbitmq_unavailable", "postgresql_unavailable", "mongodb_unavailable", "redis_unavailable"}


def send_until_acknowledged(session, user, room_id, body, cid, failures, deadline_s=120):
    """Sends like a careful client: the same client_id until 200/201. Every other answer is
    recorded; it must be a 503 naming a dependency (with Retry-After) or a timeout."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            r = send(session, user, room_id, body, client_id=cid, timeout=15)
        except requests.RequestException as exc:
            failures.append(("exception", repr(exc)))
            time.sleep(0.2)
            continue
        if r.status_code in (200, 201):
            return r.json()
        code = r.json().get("error", {}).get("code") if r.headers.get("Content-Type", "").startswith(
            "application/json") else None
        failures.append((r.status_code, code, r.headers.get("Retry-After")))
        time.sleep(0.2)
    raise AssertionError(f"{cid} never acknowledged; last failures {failures[-5:]}")


class Resuming(Holder):
    """A Holder whose reconnects are retried while the relays refuse (broker down)."""

    def step(self, https, connect) -> None:
        self.client.pump(0.01)
        self.absorb()
        if self.client.closed:
            self.close_codes.append(self.client.close_code)
            for _ in range(200):
                try:
                    self.resume(https, connect(self.user, label=f"{self.name}-r{self.reconnects + 1}"))
                    return
                except (AssertionError, OSError, Exception):  # noqa: BLE001 - relay not ready yet
                    time.sleep(0.25)
            raise AssertionError(f"{self.name} could not reconnect")


def test_rabbitmq_restart_during_a_stream_of_sends_loses_nothing_acknowledged(
        https, new_user, chat_ws, stack, stack_ctl, wait_until, wait_for_mail):
    sender, alice, bob = new_user("Sender"), new_user("Alice"), new_user("Bob")
    rid = create_room(https, sender)["id"]
    join_ok(https, alice, rid)
    join_ok(https, bob, rid)
    holders = [Resuming(name, user, chat_ws(user, label=name), rid)
               for name, user in (("alice", alice), ("bob", bob))]
    for holder in holders:
        holder.close_codes = []
    acknowledged: list[dict] = []
    acknowledged_at: list[float] = []
    failures: list[tuple] = []
    third = threading.Event()
    finish = threading.Event()  # set once the broker is back and a few more sends went through

    def stream() -> None:
        session = fresh_session(https)
        try:
            i = 0
            while not finish.is_set():
                acknowledged.append(send_until_acknowledged(session, sender, rid, f"amqp {i}", f"amqp-{i}",
                                                            failures))
                acknowledged_at.append(time.monotonic())
                if i == 20:
                    third.set()
                i += 1
                time.sleep(0.05)
        finally:
            third.set()
            session.close()

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    restarted = False
    try:
        while not third.is_set():
            step_all(holders, https, chat_ws)
        stack_ctl("stop-service", "rabbitmq")
        restarted = True
        down_from = time.monotonic()
        down_until = time.monotonic() + 3
        while time.monotonic() < down_until:
            step_all(holders, https, chat_ws)
    finally:
        if restarted:
            down_to = time.monotonic()  # start-service returns once the broker listens again
            stack_ctl("start-service", "rabbitmq")
    # Keep sending until 20 more sends went through after the broker came back.
    after = len(acknowledged)
    deadline = time.monotonic() + 180
    while len(acknowledged) < after + 20 and thread.is_alive() and time.monotonic() < deadline:
        step_all(holders, https, chat_ws)
    finish.set()
    deadline = time.monotonic() + 60
    while thread.is_alive() and time.monotonic() < deadline:
        step_all(holders, https, chat_ws)
    thread.join(timeout=1)
    assert not thread.is_alive(), "the sender did not finish"
    total = len(acknowledged)
    last = max(m["seq"] for m in acknowledged)
    catch_up(holders, https, chat_ws, last, timeout=15)

    # Sends went on while the broker was down (else this proved nothing). A message is
    # stored before its event is published and a failed publish does not fail the send
    # (clients catch up by resuming), so most succeed; any that failed did so with a 503
    # naming a dependency, with Retry-After (or took too long and were retried).
    during = sum(1 for t in acknowledged_at if down_from <= t <= down_to)
    assert during > 0 or failures, "nothing was sent while the broker was down"
    for failure in failures:
        if failure[0] == "exception":
            continue
        status, code, retry_after = failure
        assert status == 503 and code in DEPENDENCY_CODES and retry_after, failure
    # What was lost: nothing acknowledged. Stored once each, gap-free, same ids.
    stored = fetch_after(https, sender, rid, 0)
    assert [m["seq"] for m in stored] == list(range(1, total + 1)), [m["seq"] for m in stored]
    assert sorted(m["client_id"] for m in stored) == sorted(f"amqp-{i}" for i in range(total))
    assert {m["id"] for m in acknowledged} == {m["id"] for m in stored}
    assert_each_holds_exactly_once(holders, stored, rid)
    for holder in holders:
        # The relays told their sockets to resume (1012), or refused them while down (1013).
        assert holder.reconnects >= 1 and set(holder.close_codes) <= {1012, 1013, 1006, None}, \
            (holder.name, holder.close_codes)
    # The Worker re-declared its queue and consumes again: a registration mail arrives.
    address = unique_email("after-amqp")
    assert register(https, address).status_code == 201
    assert wait_for_mail(lambda m: address in m["To"], timeout=60)


def test_redis_restart_drops_sessions_clients_log_in_again_and_nothing_else_breaks(
        https, new_user, ws_connect, stack_ctl, wait_until):
    alice = new_user("Alice")
    rid = create_room(https, alice)["id"]
    first = send_ok(https, alice, rid, "before the restart")
    stack_ctl("stop-service", "redis")
    try:
        r = https.get("/api/me", headers={"Authorization": f"Bearer {alice.token}"}, timeout=30)
        expect_error(r, 503, "redis_unavailable")
    finally:
        stack_ctl("start-service", "redis")
    # Sessions lived only in Redis: the old token is refused, on REST and on a new socket.
    # (a Response of 4xx is falsy: wait for a list holding it)
    r = wait_until(lambda: (lambda r: [r] if r.status_code != 503 else None)(
        https.get("/api/me", headers={"Authorization": f"Bearer {alice.token}"})), timeout=30)[0]
    expect_error(r, 401, "unauthorized")
    ws = ws_connect(alice.token)
    from helpers import recv_close
    code, _ = recv_close(ws, timeout=10)
    assert code == 4401
    # Logging in again works; rooms, history and sending are intact.
    r = login(https, alice.email)
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert https.get("/api/me", headers=headers).status_code == 200
    assert rid in {room["id"] for room in https.get("/api/rooms", headers=headers).json()["rooms"]}
    history = https.get(f"/api/rooms/{rid}/messages", headers=headers).json()["messages"]
    assert [m["id"] for m in history] == [first["id"]]
    r = https.post(f"/api/rooms/{rid}/messages", headers=headers, json={"body": "after the restart"})
    assert r.status_code == 201 and r.json()["seq"] == 2, r.text
    ws = ws_connect(token, wait_ready=True)
    assert ws.ready["type"] == "ready"


def test_worker_killed_mid_task_sends_the_email_once(https, stack, stack_ctl, wait_until, mail_dir):
    # slow.test: the SMTP sink records the DATA, then waits 5 s before answering.
    address = f"slow-{uuid.uuid4().hex[:10]}@slow.test"
    attempts = Path(mail_dir) / ".attempts" / address
    assert register(https, address).status_code == 201
    wait_until(lambda: attempts.exists(), timeout=30, message="the Worker's DATA at the sink")
    stack_ctl("kill-service", "worker")  # SIGKILL while the sink holds the DATA unanswered
    stack_ctl("start-service", "worker")

    def mails():
        found = []
        for path in sorted(Path(mail_dir).glob("*.eml")):
            if address.encode() in path.read_bytes():
                found.append(path)
        return found

    wait_until(lambda: mails(), timeout=60, interval=0.2, message="the redelivered verification mail")
    time.sleep(2)
    # The killed attempt reached the SMTP server (so the kill was mid-task), the task ran
    # again, and exactly one email was delivered.
    assert len(attempts.read_text().split()) >= 2, attempts.read_text()
    delivered = mails()
    assert len(delivered) == 1, delivered
    import email as email_lib
    import email.policy
    msg = email_lib.message_from_bytes(delivered[0].read_bytes(), policy=email.policy.default)
    r = verify(https, __import__("accounts").token_of(verify_link(msg)))
    assert r.status_code == 200, r.text


def test_postgresql_lock_timeout_is_503_and_the_retry_is_stored_once(https, new_user, stack):
    alice = new_user("Alice")
    rid = create_room(https, alice)["id"]
    send_ok(https, alice, rid, "first")
    cid = "locked-" + uuid.uuid4().hex
    import psycopg2
    blocker = psycopg2.connect(stack["PG_DSN"], connect_timeout=5)
    try:
        with blocker.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT last_seq FROM rooms WHERE id = %s FOR UPDATE", (rid,))
            r = send(https, alice, rid, "while locked", client_id=cid, timeout=40)
            expect_error(r, 503, "postgresql_unavailable")
            assert r.headers.get("Retry-After"), dict(r.headers)
            cur.execute("ROLLBACK")
    finally:
        blocker.close()
    r = send(https, alice, rid, "while locked", client_id=cid)
    assert r.status_code == 201, r.text
    assert r.json()["seq"] == 2
    again = send(https, alice, rid, "while locked", client_id=cid)
    assert again.status_code == 200 and again.json()["id"] == r.json()["id"]
    assert [m["seq"] for m in history_ok(https, alice, rid)["messages"]] == [1, 2]


def test_killed_pool_process_under_load_nginx_keeps_serving(https, new_user, stack, stack_ctl, wait_until):
    if len(stack["FCGI_SOCKETS"].split(",")) < 2:
        pytest.skip("needs two pool processes")
    alice = new_user("Alice")
    rid = create_room(https, alice)["id"]
    # One sender per thread, so the per-user send limit (200 per 10 s) is not what answers.
    senders = [alice] + [new_user(f"Load{n}") for n in range(1, 4)]
    for user in senders[1:]:
        join_ok(https, user, rid)
    pings: list[int] = []
    post_failures: list = []
    acknowledged: list[dict] = []
    stop = threading.Event()

    def load(n: int) -> None:
        session = fresh_session(https)
        i = 0
        while not stop.is_set():
            message = send_until_acknowledged(session, senders[n], rid, f"load {n} {i}", f"load-{n}-{i}",
                                              post_failures, 60)
            acknowledged.append(message)
            try:
                pings.append(session.get("/api/ping", timeout=15).status_code)
            except requests.RequestException as exc:
                pings.append(repr(exc))
            i += 1
            time.sleep(0.1)  # about 8 sends/s per sender: well under the 200 per 10 s limit
        session.close()

    threads = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    stack_ctl("kill-service", "fcgi-1")
    time.sleep(3.0)
    stack_ctl("start-service", "fcgi-1")
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    # GETs never failed: nginx skipped the dead process. A POST in flight on the killed
    # process may fail with 502 (nginx never resends a POST); the client retried its
    # client_id, so it was stored once.
    assert len(pings) > 20 and all(p == 200 for p in pings), pings
    assert all(f[0] in ("exception", 502) for f in post_failures), post_failures
    stored = fetch_after(https, alice, rid, 0)
    assert [m["seq"] for m in stored] == list(range(1, len(stored) + 1))
    assert {m["id"] for m in acknowledged} <= {m["id"] for m in stored}
    assert len({m["client_id"] for m in stored}) == len(stored)
    wait_until(lambda: all(https.get("/api/ping").status_code == 200 for _ in range(6)), timeout=30)
