"""The Worker: tasks from RabbitMQ become emails in the SMTP sink; failing tasks are
retried with back-off and end in the dead-letter queue, from which they can be replayed."""

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pika

REPO = Path(__file__).resolve().parents[2]


def enqueue(amqp_channel, task):
    amqp_channel.confirm_delivery()
    amqp_channel.basic_publish("", "tasks.email", json.dumps(task).encode(),
                               pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                                    message_id=task["id"]), mandatory=True)


def dead_letters(amqp_channel, task_id):
    """Takes the dead letters of one task out of the queue (others are put back)."""
    found, others = [], []
    while True:
        method, props, body = amqp_channel.basic_get("tasks.email.dead", auto_ack=False)
        if method is None:
            break
        if json.loads(body).get("id") == task_id:
            found.append((props, json.loads(body)))
            amqp_channel.basic_ack(method.delivery_tag)
        else:
            others.append(method.delivery_tag)
    for tag in others:
        amqp_channel.basic_nack(tag, requeue=True)
    return found


def test_email_task_reaches_the_smtp_sink(amqp_channel, wait_for_mail):
    task_id = str(uuid.uuid4())
    to = f"alice-{task_id[:8]}@example.test"
    enqueue(amqp_channel, {"id": task_id, "to": to, "subject": "Hello Ünïcode",
                           "text": "plain body line", "html": "<p>html body</p>"})
    msg = wait_for_mail(lambda m: m["To"] == to, timeout=20)
    assert msg["Subject"] == "Hello Ünïcode"
    assert msg["Message-ID"].startswith(f"<{task_id}@")
    assert msg.get_body(("plain",)).get_content().strip() == "plain body line"
    assert msg.get_body(("html",)).get_content().strip() == "<p>html body</p>"


def test_failing_task_is_retried_then_dead_lettered(amqp_channel, wait_until, stack):
    task_id = str(uuid.uuid4())
    enqueue(amqp_channel, {"id": task_id, "to": f"bounce-{task_id[:8]}@reject.test", "subject": "x", "text": "x"})
    delays = [int(x) for x in "500,1000,2000".split(",")]
    found = wait_until(lambda: dead_letters(amqp_channel, task_id), timeout=sum(delays) / 1000 + 20, interval=0.5)
    assert len(found) == 1
    props, body = found[0]
    assert body["id"] == task_id
    assert props.headers["x-attempt"] == len(delays) + 1
    assert "550" in props.headers["x-last-error"]


def test_malformed_task_goes_straight_to_dead_letters(amqp_channel, wait_until):
    amqp_channel.confirm_delivery()
    marker = str(uuid.uuid4())
    amqp_channel.basic_publish("", "tasks.email", json.dumps({"id": marker, "nonsense": True}).encode(),
                               pika.BasicProperties(delivery_mode=2))
    found = wait_until(lambda: dead_letters(amqp_channel, marker), timeout=15, interval=0.3)
    assert found[0][0].headers["x-last-error"] == "malformed email task"
    assert found[0][0].headers["x-attempt"] == 1


def test_replay_dead_moves_tasks_back(amqp_channel, wait_until, stack, wait_for_mail):
    # A good task parked in the dead letters (as an operator would find it after an SMTP outage).
    task_id = str(uuid.uuid4())
    to = f"replayed-{task_id[:8]}@example.test"
    amqp_channel.confirm_delivery()
    amqp_channel.basic_publish("", "tasks.email.dead", json.dumps({"id": task_id, "to": to, "subject": "late", "text": "t"}).encode(),
                               pika.BasicProperties(delivery_mode=2, headers={"x-attempt": 4}))
    env = dict(os.environ, SWIFTCHAT_CONFIG=stack["CONFIG_FILE"])
    out = subprocess.run([str(REPO / ".build/release/Worker"), "replay-dead"], env=env, capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert "replayed" in out.stdout
    msg = wait_for_mail(lambda m: m["To"] == to, timeout=20)
    assert msg["Subject"] == "late"
