"""Fixtures for the integration suite, which runs against a live local stack.

`make test` starts a stack in .run/test and runs pytest with STACK_ENV pointing at that
stack's stack.env (written by scripts/stack.sh). To run the suite by hand against a
running stack:

    STACK_ENV=$PWD/.run/dev/stack.env .venv/bin/python -m pytest -q Tests/integration

Fixtures:
    stack          dict of stack.env (URLs, ports, MAIL_DIR, PG_DSN, AMQP_URL, JWT_SECRET...)
    https          requests.Session against the stack's https URL (self-signed: not verified);
                   relative paths work: https.get("/api/health"); https.url("/x") -> absolute
    ws_connect     ws_connect(token=None, timeout=10, wait_ready=False) -> websocket over wss://
    mail_dir       pathlib.Path of the SMTP sink's folder
    wait_for_mail  wait_for_mail(predicate=None, timeout=20) -> EmailMessage new in this test
    amqp_channel   pika channel on the stack's RabbitMQ (BlockingConnection)
    redis_client   redis.Redis on the stack's Redis (str replies)
    pg_conn        psycopg2 connection to the swiftchat database (autocommit)
    mongo_db       pymongo Database of the stack
    stack_ctl      stack_ctl("kill-service", "relay-1"): runs scripts/stack.sh on this stack
    wait_until     wait_until(fn, timeout=10, interval=0.1) -> fn's first truthy result
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import shlex
import ssl
import subprocess
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urljoin, urlsplit

import pytest
import requests
import urllib3

from contract import CONTRACT

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_SCRIPT = REPO_ROOT / "scripts" / "stack.sh"

# The local stack's certificate is self-signed; tests talk to it on purpose.
urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


def pytest_configure(config: pytest.Config) -> None:
    # pytest resets warning filters for each test: silence the same warning there too.
    config.addinivalue_line("filterwarnings",
                            "ignore::urllib3.exceptions.InsecureRequestWarning")


def pytest_terminal_summary(terminalreporter) -> None:
    if CONTRACT.counts:
        terminalreporter.write_line(CONTRACT.summary())
    for line in CONTRACT.notes:
        terminalreporter.write_line(line)


def read_stack_env(path: Path) -> dict[str, str]:
    """Parse stack.env: KEY=VALUE lines, values possibly shell-quoted."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, raw = line.split("=", 1)
        parts = shlex.split(raw) if raw else [""]
        values[key] = parts[0] if parts else ""
    return values


def _stack_env_path() -> Path:
    value = os.environ.get("STACK_ENV")
    if not value:
        pytest.fail("STACK_ENV is not set: run `make test`, or point it at a stack's "
                    "stack.env (e.g. STACK_ENV=$PWD/.run/dev/stack.env)", pytrace=False)
    path = Path(value)
    if not path.is_file():
        pytest.fail(f"STACK_ENV={value} does not exist: is the stack running?", pytrace=False)
    return path


@pytest.fixture(scope="session")
def stack() -> dict[str, str]:
    """The stack's facts from stack.env. stack_ctl refreshes it in place (pids change)."""
    return read_stack_env(_stack_env_path())


def wait_until(fn: Callable[[], Any], timeout: float = 10.0, interval: float = 0.1,
               message: str = "") -> Any:
    """Call fn until it returns something truthy, and return that. Exceptions raised by
    fn count as "not yet"; on timeout the last one (or the last value) is reported."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            result = fn()
            if result:
                return result
            last = result
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last = exc
        if time.monotonic() >= deadline:
            what = message or getattr(fn, "__name__", "condition")
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


@pytest.fixture(name="wait_until", scope="session")
def wait_until_fixture() -> Callable[..., Any]:
    return wait_until


class StackSession(requests.Session):
    """requests.Session bound to the stack's https URL: relative paths are joined onto it,
    TLS is not verified (self-signed), and every request has a timeout unless given one.
    Every response under /api/ is checked against docs/openapi.yaml (contract.py) unless
    the request passes validate=False (only for requests that break HTTP on purpose)."""

    def __init__(self, base_url: str, timeout: float = 15.0) -> None:
        super().__init__()
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.verify = False
        self.default_timeout = timeout

    def url(self, path: str) -> str:
        return urljoin(self.base_url, path)

    def request(self, method, url, *args, **kwargs):  # type: ignore[override]
        kwargs.setdefault("timeout", self.default_timeout)
        # Per request too: requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE override a
        # session-level verify=False.
        kwargs.setdefault("verify", False)
        validate = kwargs.pop("validate", True)
        response = super().request(method, self.url(url), *args, **kwargs)
        if validate:
            CONTRACT.check(method, response.url, response)
        return response


@pytest.fixture
def https(stack: dict[str, str]) -> StackSession:
    with StackSession(stack["HTTPS_URL"]) as session:
        yield session


@pytest.fixture
def ws_connect(stack: dict[str, str]):
    """ws_connect(token=None, timeout=10, wait_ready=False, **options) opens wss://HOST/ws
    through nginx. With a token it sends the auth frame; with wait_ready=True it also reads
    frames until {"type": "ready"} and keeps that frame as ws.ready. Every socket is closed
    after the test."""
    import websocket  # websocket-client

    parts = urlsplit(stack["HTTPS_URL"])
    url = f"wss://{parts.hostname}:{parts.port or 443}/ws"
    opened: list[websocket.WebSocket] = []

    def connect(token: Optional[str] = None, timeout: float = 10.0, wait_ready: bool = False,
                **options: Any) -> websocket.WebSocket:
        ws = websocket.create_connection(url, timeout=timeout,
                                         sslopt={"cert_reqs": ssl.CERT_NONE}, **options)
        opened.append(ws)
        ws.ready = None
        if token is not None:
            ws.send(json.dumps({"type": "auth", "token": token}))
            if wait_ready:
                ws.ready = _wait_ready(ws, timeout)
        return ws

    def _wait_ready(ws: websocket.WebSocket, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
                reason = data[2:].decode("utf-8", "replace")
                raise AssertionError(f"socket closed with {code} {reason!r} before ready")
            if opcode == websocket.ABNF.OPCODE_TEXT:
                frame = json.loads(data.decode())
                if frame.get("type") == "ready":
                    return frame
        raise AssertionError("no ready frame within %ss" % timeout)

    yield connect
    for ws in opened:
        try:
            ws.close()
        except Exception:  # noqa: BLE001 - already closed by the server
            pass


@pytest.fixture
def mail_dir(stack: dict[str, str]) -> Path:
    return Path(stack["MAIL_DIR"])


@pytest.fixture
def wait_for_mail(mail_dir: Path):
    """wait_for_mail(predicate=None, timeout=20) -> EmailMessage.

    Waits for a message that arrived in the SMTP sink's folder after this test started (and
    that this helper has not returned before) and for which predicate(msg) is true. The
    message is parsed with email.policy.default; msg.path is its .eml file. Example:
        msg = wait_for_mail(lambda m: m["To"] == "alice@example.test")
        body = msg.get_body(("plain",)).get_content()
    """
    seen = {p.name for p in mail_dir.glob("*.eml")}

    def wait(predicate: Optional[Callable[[EmailMessage], bool]] = None,
             timeout: float = 20.0) -> EmailMessage:
        def find() -> Optional[EmailMessage]:
            for path in sorted(mail_dir.glob("*.eml")):
                if path.name in seen:
                    continue
                msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
                if predicate is None or predicate(msg):
                    seen.add(path.name)
                    msg.path = path
                    return msg
            return None

        return wait_until(find, timeout=timeout, interval=0.1, message=f"mail in {mail_dir}")

    return wait


@pytest.fixture
def amqp_channel(stack: dict[str, str]):
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(stack["AMQP_URL"]))
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


@pytest.fixture
def redis_client(stack: dict[str, str]):
    import redis

    client = redis.Redis(host="127.0.0.1", port=int(stack["REDIS_PORT"]), decode_responses=True,
                         socket_timeout=5, socket_connect_timeout=3)
    yield client
    client.close()


@pytest.fixture
def pg_conn(stack: dict[str, str]):
    import psycopg2

    connection = psycopg2.connect(stack["PG_DSN"], connect_timeout=5)
    connection.autocommit = True
    yield connection
    connection.close()


@pytest.fixture
def mongo_db(stack: dict[str, str]):
    import pymongo

    client = pymongo.MongoClient(stack["MONGO_URL"])
    yield client[stack["MONGO_DB"]]
    client.close()


@pytest.fixture(scope="session")
def stack_ctl(stack: dict[str, str]):
    """stack_ctl(subcommand, service=None, timeout=120) runs scripts/stack.sh on this stack
    (e.g. stack_ctl("kill-service", "relay-1"), stack_ctl("start-service", "rabbitmq")),
    waits for it, fails the test if it fails, refreshes `stack`, and returns its output."""

    def run(subcommand: str, service: Optional[str] = None, timeout: float = 120.0) -> str:
        args = ["bash", str(STACK_SCRIPT), subcommand] + ([service] if service else [])
        env = dict(os.environ, STACK_DIR=stack["STACK_DIR"])
        done = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(args[1:])} failed ({done.returncode}):\n"
                                 f"{done.stdout}{done.stderr}")
        stack.update(read_stack_env(_stack_env_path()))
        return done.stdout

    return run
