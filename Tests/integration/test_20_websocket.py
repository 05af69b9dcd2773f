"""The WebSocket relay through nginx: auth on the first frame, ping/pong, error frames,
the 16 KiB limit, close codes, and events from RabbitMQ reaching the right sockets."""

import json
import time

import pika
import pytest

from helpers import b64url, make_session, recv_close, recv_json, sign_jwt


def publish_event(amqp_channel, routing_key, event):
    amqp_channel.confirm_delivery()
    amqp_channel.basic_publish("chat.events", routing_key, json.dumps(event).encode(),
                               pika.BasicProperties(content_type="application/json"))


def test_auth_then_ping_pong(ws_connect, stack, redis_client):
    user_id, _, token = make_session(stack, redis_client)
    ws = ws_connect(token, wait_ready=True)
    assert ws.ready == {"type": "ready", "user_id": user_id, "rooms": []}
    ws.send(json.dumps({"type": "ping"}))
    assert recv_json(ws) == {"type": "pong"}
    # Protocol-level ping is answered too.
    ws.ping(b"hi")
    import websocket
    ws.settimeout(5)
    opcode, data = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_PONG and data == b"hi"


@pytest.mark.parametrize("token_kind", ["garbage", "other_key", "alg_none", "expired", "no_session"])
def test_bad_tokens_close_with_4401(ws_connect, stack, redis_client, token_kind):
    user_id, sid, good = make_session(stack, redis_client)
    now = int(time.time())
    claims = {"sub": user_id, "sid": sid, "iat": now, "exp": now + 60}
    token = {
        "garbage": "not-a-jwt",
        "other_key": sign_jwt("11" * 32, claims),
        "alg_none": b64url(b'{"alg":"none","typ":"JWT"}') + "." + good.split(".")[1] + ".",
        "expired": sign_jwt(stack["JWT_SECRET"], dict(claims, exp=now - 1)),
        "no_session": sign_jwt(stack["JWT_SECRET"], dict(claims, sid="missing")),
    }[token_kind]
    ws = ws_connect(token)
    code, frames = recv_close(ws)
    assert code == 4401 and frames == []


def test_first_frame_must_be_auth(ws_connect):
    ws = ws_connect()
    ws.send(json.dumps({"type": "ping"}))
    code, _ = recv_close(ws)
    assert code == 4401


def test_no_auth_frame_within_10_seconds_closes_4401(ws_connect):
    ws = ws_connect(timeout=15)
    start = time.monotonic()
    code, _ = recv_close(ws, timeout=15)
    assert code == 4401
    assert 9 <= time.monotonic() - start <= 13


def test_malformed_and_binary_frames_get_error_frames_and_the_socket_stays(ws_connect, stack, redis_client):
    _, _, token = make_session(stack, redis_client)
    ws = ws_connect(token, wait_ready=True)
    ws.send("this is not json")
    err = recv_json(ws)
    assert err["type"] == "error" and err["code"] == "malformed_frame" and err["message"]
    ws.send(json.dumps({"type": "teleport"}))
    assert recv_json(ws)["code"] == "unknown_type"
    ws.send_binary(b"\x00\xff\x10garbage")
    assert recv_json(ws)["code"] == "unsupported_frame"
    ws.send(json.dumps({"type": "ping"}))
    assert recv_json(ws) == {"type": "pong"}


def test_frame_over_16_kib_closes_with_1009(ws_connect, stack, redis_client):
    _, _, token = make_session(stack, redis_client)
    ws = ws_connect(token, wait_ready=True)
    ws.send(json.dumps({"type": "ping", "pad": "x" * (16 * 1024)}))
    code, _ = recv_close(ws)
    assert code == 1009


def test_fragmented_message_over_16_kib_closes_with_1009(ws_connect, stack, redis_client):
    import websocket
    _, _, token = make_session(stack, redis_client)
    ws = ws_connect(token, wait_ready=True)
    chunk = "x" * 8000
    ws.send_frame(websocket.ABNF(fin=0, opcode=websocket.ABNF.OPCODE_TEXT, data=chunk))
    ws.send_frame(websocket.ABNF(fin=0, opcode=websocket.ABNF.OPCODE_CONT, data=chunk))
    ws.send_frame(websocket.ABNF(fin=1, opcode=websocket.ABNF.OPCODE_CONT, data=chunk))
    code, _ = recv_close(ws)
    assert code == 1009


def test_event_published_on_rabbitmq_reaches_the_users_sockets_only(ws_connect, stack, redis_client, amqp_channel):
    alice, _, alice_token = make_session(stack, redis_client)
    _, _, bob_token = make_session(stack, redis_client)
    alice_tab1 = ws_connect(alice_token, wait_ready=True)
    alice_tab2 = ws_connect(alice_token, wait_ready=True)
    bob = ws_connect(bob_token, wait_ready=True)
    event = {"type": "presence", "user_id": "someone", "status": "online", "n": 1}
    publish_event(amqp_channel, f"user.{alice}", event)
    assert recv_json(alice_tab1) == event
    assert recv_json(alice_tab2) == event
    # Bob gets nothing: prove it with a ping answered first.
    bob.send(json.dumps({"type": "ping"}))
    assert recv_json(bob) == {"type": "pong"}


def test_session_revocation_event_is_the_last_frame_before_4401(ws_connect, stack, redis_client, amqp_channel):
    _, sid, token = make_session(stack, redis_client)
    ws = ws_connect(token, wait_ready=True)
    publish_event(amqp_channel, f"session.{sid}", {"type": "session.revoked"})
    code, frames = recv_close(ws)
    assert frames == [{"type": "session.revoked"}]
    assert code == 4401


def test_relay_unbinds_when_the_last_socket_leaves(ws_connect, stack, redis_client):
    import urllib.request
    user_id, _, token = make_session(stack, redis_client)

    def bindings():
        total = 0
        for port in stack["RELAY_PORTS"].split(","):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                total += json.load(r)["bindings"]
        return total

    before = bindings()
    ws = ws_connect(token, wait_ready=True)
    assert bindings() == before + 2  # user.<id> and session.<sid>
    ws.close()
    deadline = time.monotonic() + 5
    while bindings() != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert bindings() == before


def test_relay_health_and_plain_http(stack):
    import urllib.error
    import urllib.request
    port = stack["RELAY_PORTS"].split(",")[0]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "ok" and body["rabbitmq"] == "up"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/nope", timeout=5)
    assert e.value.code == 404 and json.load(e.value)["error"]["code"] == "not_found"
