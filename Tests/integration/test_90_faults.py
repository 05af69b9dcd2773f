"""Dependencies going down and coming back: /api/health names what is down (503), and
every process recovers by itself, without a restart, when it returns. The relay and the
Worker reconnect to RabbitMQ and re-declare what they need."""

import json
import re
import time
import urllib.error
import urllib.request
import uuid

import pika
import pytest

from chat import (chat_ws, create_room, is_type, join_ok, new_user,  # noqa: F401
                  relay_ports, relay_ws_url)
from helpers import fastcgi_request, make_session, recv_json
from test_20_websocket import publish_event
from test_30_worker import enqueue


def health(https):
    r = https.get("/api/health", timeout=20)
    return r.status_code, r.json()


@pytest.mark.parametrize("service,name", [("postgres", "postgresql"), ("redis", "redis"), ("rabbitmq", "rabbitmq")])
def test_dependency_down_gives_503_naming_it_and_recovers(https, stack_ctl, wait_until, service, name):
    assert health(https)[0] == 200
    stack_ctl("stop-service", service)
    try:
        status, body = wait_until(lambda: (lambda h: h if h[0] == 503 else None)(health(https)), timeout=30)
        assert body["error"]["code"] == "dependency_unavailable"
        assert name in body["error"]["message"]
        assert body["down"] == [name]
        assert body["dependencies"][name]["status"] == "down"
        r = https.get("/api/health")
        assert r.headers.get("Retry-After")
    finally:
        stack_ctl("start-service", service)
    # Every pool process and thread recovers (several requests spread over them).
    wait_until(lambda: all(health(https)[0] == 200 for _ in range(8)), timeout=60, interval=0.5)


def pool_backends(stack, pid: str) -> int:
    """PostgreSQL connections of the pool process `pid` (each names itself
    swiftchat-fcgiapp/<pid> in application_name). A connection of its own per call: the
    test stops PostgreSQL in between."""
    import psycopg2
    connection = psycopg2.connect(stack["PG_DSN"], connect_timeout=5)
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                        (f"swiftchat-fcgiapp/{pid}",))
            return cur.fetchone()[0]
    finally:
        connection.close()


def pool_get(sock: str, path: str) -> tuple[int, bytes]:
    out = fastcgi_request(sock, {"REQUEST_METHOD": "GET", "REQUEST_URI": path}, timeout=20)
    return int(out[len(b"Status: "):len(b"Status: ") + 3]), out.split(b"\r\n\r\n", 1)[-1]


def test_a_pool_process_connects_before_serving_and_starts_with_postgresql_down(stack, stack_ctl, wait_until):
    """Every thread of a pool process opens its PostgreSQL connection (the hot statements
    prepared) before it serves, so a burst right after a restart pays no connects; with
    PostgreSQL down at start the process serves at once (503 naming it where it is needed)
    and connects when PostgreSQL is back."""
    sock = stack["FCGI_SOCKETS"].split(",")[0]
    stack_ctl("kill-service", "fcgi-1")
    stack_ctl("start-service", "fcgi-1")
    pid = stack["PID_FCGI_1"]
    log = open(f"{stack['LOG_DIR']}/fcgi-1.log", encoding="utf-8").read()
    threads = int(re.findall(r'"msg":"fcgiapp listening".*?"threads":"(\d+)"', log)[-1])
    assert threads >= 2
    # No request has reached this process yet: the connections are there anyway.
    wait_until(lambda: pool_backends(stack, pid) == threads, timeout=20, interval=0.2)

    stack_ctl("stop-service", "postgres")
    try:
        stack_ctl("kill-service", "fcgi-1")
        started = time.monotonic()
        stack_ctl("start-service", "fcgi-1")
        status, body = pool_get(sock, "/api/ping")
        assert (status, body) == (200, b'{"pong":true}')
        assert time.monotonic() - started < 10, "the pool waited for PostgreSQL before serving"
        status, body = pool_get(sock, "/api/health")
        assert status == 503 and json.loads(body)["down"] == ["postgresql"], body
    finally:
        stack_ctl("start-service", "postgres")
    # Back: the threads connect on use (more requests than threads, each probing PostgreSQL).
    wait_until(lambda: all(pool_get(sock, "/api/health")[0] == 200 for _ in range(threads * 2)),
               timeout=60, interval=0.5)
    assert pool_backends(stack, stack["PID_FCGI_1"]) >= 1


def relay_health(port):
    """The relay's /health body: 200 when its consumer is up, 503 (same fields) when not."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return json.load(r)
    except urllib.error.HTTPError as exc:
        if exc.code != 503:
            raise
        return json.load(exc)


def test_pooled_mongodb_connections_do_not_sit_idle(stack, mongo_db):
    """Each pool process pings its idle MongoDB clients every MONGO_KEEPALIVE_SECONDS (2 in
    the test stack), so no pooled connection sits unused until the server or a firewall
    drops it (SecantusDB closes one after 300 s; the request that drew it got a 503). With
    no API traffic at all, the server still sees every process's clients."""
    conf = open(stack["CONFIG_FILE"], encoding="utf-8").read()
    found = re.findall(r"^MONGO_KEEPALIVE_SECONDS=(\d+)$", conf, re.M)
    if not found or not 0 < int(found[-1]) <= 3:
        pytest.skip("needs a stack with MONGO_KEEPALIVE_SECONDS <= 3 (scripts/test.sh sets 2)")
    log = open(f"{stack['LOG_DIR']}/fcgi-1.log", encoding="utf-8").read()
    threads = int(re.findall(r'"msg":"fcgiapp listening".*?"threads":"(\d+)"', log)[-1])
    processes = len(stack["FCGI_SOCKETS"].split(","))
    commands = lambda: mongo_db.client.admin.command("serverStatus")["opcounters"]["command"]  # noqa: E731
    before = commands()
    time.sleep(3 * int(found[-1]) + 0.5)
    # Three rounds of pings from every process (each client pinged once a round), less the
    # clients requests were using at the moment; this test's own serverStatus calls are 2.
    assert commands() - before >= 2 * threads * processes


def test_relay_and_worker_recover_after_rabbitmq_restart(stack, stack_ctl, wait_until, redis_client, ws_connect,
                                                         wait_for_mail):
    stack_ctl("stop-service", "rabbitmq")
    stack_ctl("start-service", "rabbitmq")
    ports = stack["RELAY_PORTS"].split(",")
    wait_until(lambda: all(relay_health(p)["rabbitmq"] == "up" for p in ports), timeout=60, interval=0.5)
    # A new socket receives events again: its binding went to a re-declared queue.
    user_id, _, token = make_session(stack, redis_client)
    ws = ws_connect(token, wait_ready=True)
    conn = pika.BlockingConnection(pika.URLParameters(stack["AMQP_URL"]))
    try:
        ch = conn.channel()
        publish_event(ch, f"user.{user_id}", {"type": "presence", "user_id": "x", "status": "online"})
        assert recv_json(ws, timeout=10)["type"] == "presence"
        # The Worker re-declared its queues and consumes again.
        task_id = str(uuid.uuid4())
        to = f"after-restart-{task_id[:8]}@example.test"
        wait_until(lambda: ch.queue_declare("tasks.email", passive=True), timeout=30)
        enqueue(ch, {"id": task_id, "to": to, "subject": "after restart", "text": "t"})
        assert wait_for_mail(lambda m: m["To"] == to, timeout=60)["Subject"] == "after restart"
    finally:
        conn.close()


def test_worker_consumes_again_after_its_queue_was_deleted(stack, wait_until, wait_for_mail):
    """An operator deletes the task queue (rabbitmqctl delete_queue, or the management UI).
    The broker cancels the Worker's consumer (the Worker asks for cancel notifications), so
    the Worker reconnects, declares the queue again and takes the next task, where before it
    waited forever on a queue that was gone."""
    conn = pika.BlockingConnection(pika.URLParameters(stack["AMQP_URL"]))
    try:
        ch = conn.channel()
        ch.queue_delete("tasks.email")

        def consumers() -> int:
            probe = conn.channel()  # a passive declare of a missing queue closes its channel
            try:
                return probe.queue_declare("tasks.email", passive=True).method.consumer_count
            finally:
                if probe.is_open:
                    probe.close()

        wait_until(lambda: consumers() >= 1, timeout=30, interval=0.2)
        task_id = str(uuid.uuid4())
        to = f"after-delete-{task_id[:8]}@example.test"
        enqueue(ch, {"id": task_id, "to": to, "subject": "after the queue was deleted", "text": "t"})
        assert wait_for_mail(lambda m: m["To"] == to, timeout=60)["Subject"] == "after the queue was deleted"
    finally:
        conn.close()


def test_relay_takes_no_socket_while_its_consumer_is_down(stack, https, new_user, chat_ws, wait_until):
    """While the relay's consumer is down and its control connection works (the broker is
    back, the consumer waits out its back-off), the relay refuses new sockets (1013): one
    that got `ready` then would miss its events and be told to resume (1012) a moment
    later, so a client that had just resumed would resume twice. A refused socket claims
    no presence: its room-mates see no online/offline flicker while it retries. Once the
    consumer is back, sockets it told to resume are closed with 1012, and new ones are
    taken and kept.

    The consumer is held down without stopping the broker: its queue is deleted (the
    broker cancels the consumer) and re-declared with an exclusive consumer of this test,
    so the relay's basic.consume is refused until this test lets go."""
    import websocket
    from helpers import recv_close
    if len(relay_ports(stack)) < 2:
        pytest.skip("needs two relays")
    port = relay_ports(stack)[0]
    queue = "relay." + relay_health(port)["relay_id"]
    alice, bob, carol = new_user("Alice"), new_user("Bob"), new_user("Carol")
    rid = create_room(https, alice)["id"]
    join_ok(https, bob, rid)
    join_ok(https, carol, rid)
    watcher = chat_ws(bob, relay=1, label="bob-relay2")  # the other relay, whose consumer stays up

    def open_socket(user):
        ws = websocket.create_connection(relay_ws_url(port), timeout=10)
        ws.send(json.dumps({"type": "auth", "token": user.token}))
        return ws

    before = open_socket(alice)
    assert recv_json(before)["type"] == "ready"
    conn = pika.BlockingConnection(pika.URLParameters(stack["AMQP_URL"]))
    try:
        ch = conn.channel()
        ch.queue_delete(queue)
        ch.queue_declare(queue, arguments={"x-expires": 60000})
        ch.basic_consume(queue, lambda *a: None, auto_ack=True, exclusive=True)
        wait_until(lambda: relay_health(port)["rabbitmq"] == "down", timeout=10, interval=0.1)
        mark = watcher.mark()
        refused = []
        for user in (alice, carol, carol):
            ws = open_socket(user)
            try:
                code, frames = recv_close(ws, timeout=10)
            finally:
                ws.close()
            refused.append((code, [f.get("type") for f in frames]))
            conn.process_data_events(time_limit=0.2)
        assert refused == [(1013, [])] * 3, refused
        watcher.assert_none(is_type("presence", user_id=carol.id), settle=1.0, start=mark)
    finally:
        conn.close()  # the exclusive consumer goes; the relay's next attempt consumes
    wait_until(lambda: relay_health(port)["rabbitmq"] == "up", timeout=30, interval=0.1)
    # The socket from before the outage is told to resume: its events may be gone.
    assert recv_close(before, timeout=10)[0] == 1012
    before.close()
    after = open_socket(carol)
    try:
        assert recv_json(after)["type"] == "ready"
        after.send(json.dumps({"type": "ping"}))
        assert recv_json(after)["type"] == "pong"
        # Taken, so announced once, and kept: no close follows the reconnect.
        watcher.wait_for(is_type("presence", user_id=carol.id, status="online"), start=mark)
        after.settimeout(1)
        with pytest.raises(websocket.WebSocketTimeoutException):
            opcode, data = after.recv_data(control_frame=True)
            raise AssertionError(f"the new socket got opcode {opcode} {data[:2]!r} after the reconnect")
    finally:
        after.close()


def test_relay_sigterm_closes_clients_with_1001(stack, stack_ctl, redis_client, wait_until):
    import websocket
    from helpers import recv_close
    port = stack["RELAY_PORTS"].split(",")[0]
    _, _, token = make_session(stack, redis_client)
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws", timeout=10)
    ws.send(json.dumps({"type": "auth", "token": token}))
    assert recv_json(ws)["type"] == "ready"
    stack_ctl("stop-service", "relay-1")
    try:
        code, _ = recv_close(ws, timeout=10)
        assert code == 1001
    finally:
        stack_ctl("start-service", "relay-1")
    wait_until(lambda: relay_health(stack["RELAY_PORTS"].split(",")[0])["status"] == "ok", timeout=30)

# A pool process killed under load: test_94_resilience.py.
