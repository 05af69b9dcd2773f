"""The HTTP edge: nginx (TLS, redirect, headers, SPA, limits) and the FastCGI pool
(health, routing, the error envelope, malformed input)."""

import json
import os
import re
import time

import pytest
import requests

from contract import CONTRACT
from helpers import FastCGIConnection, fastcgi_request


def error_code(response):
    assert response.headers["Content-Type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body["error"]) >= {"code", "message"}, body
    return body["error"]["code"]


def test_health_reports_every_dependency_up(https):
    r = https.get("/api/health")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok"
    assert set(body["dependencies"]) == {"postgresql", "redis", "mongodb", "rabbitmq"}
    for name, check in body["dependencies"].items():
        assert check["status"] == "up", name
        assert isinstance(check["latency_ms"], (int, float)) and check["latency_ms"] >= 0
    assert r.headers["Cache-Control"] == "no-store"


def test_http_redirects_to_https(stack):
    r = requests.get(stack["HTTP_URL"].rstrip("/") + "/api/health?x=1", allow_redirects=False, timeout=5)
    assert r.status_code == 301
    assert r.headers["Location"] == stack["HTTPS_URL"].rstrip("/") + "/api/health?x=1"


def test_security_headers_on_spa_and_api(https):
    for path in ("/", "/api/health"):
        r = https.get(path)
        h = r.headers
        assert h["Strict-Transport-Security"].startswith("max-age="), path
        assert h["X-Content-Type-Options"] == "nosniff", path
        assert h["Referrer-Policy"] == "no-referrer", path
        csp = h["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        assert "Server" not in h or "nginx/" not in h["Server"], path


def test_spa_is_served_with_fallback_for_client_routes(https):
    index = https.get("/")
    assert index.status_code == 200 and "text/html" in index.headers["Content-Type"]
    assert "no-cache" in index.headers.get("Cache-Control", "")
    deep = https.get("/verify-email?token=abc")
    assert deep.status_code == 200 and deep.text == index.text


def test_unknown_api_path_is_json_404(https):
    r = https.get("/api/does-not-exist")
    assert r.status_code == 404 and error_code(r) == "not_found"


def test_wrong_method_is_405_with_allow(https):
    r = https.delete("/api/health")
    assert r.status_code == 405 and error_code(r) == "method_not_allowed"
    assert r.headers["Allow"] == "GET"


def test_body_over_64_kib_is_json_413_from_nginx(https):
    r = https.post("/api/ping", data=b"x" * (64 * 1024 + 1), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and error_code(r) == "payload_too_large"


def test_nginx_errors_under_api_use_the_envelope(https):
    # A path nginx itself refuses (not passed to the pool) still answers in JSON.
    # TRACE is refused by nginx itself before any location; it still answers like the
    # router: 405 with the path's methods in Allow (the contract check compares Allow with
    # docs/openapi.yaml for every path), 404 for a path the API does not have.
    for template in CONTRACT.spec["paths"]:
        path = re.sub(r"\{[^}]+\}", "0f8fad5b-d9cb-469f-a165-70867728950e", template)
        r = https.request("TRACE", path)
        assert r.status_code == 405, (path, r.status_code, r.text)
        assert r.headers["Content-Type"].startswith("application/json"), r.text
        assert r.json()["error"]["code"] == "method_not_allowed"
    r = https.request("TRACE", "/api/no/such/path")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
    # nginx's own 405 (a POST to a static file) names the methods the SPA's files take.
    r = https.post("/index.html", data=b"x")
    assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD"


def test_trivial_route(https):
    r = https.get("/api/ping")
    assert r.status_code == 200 and r.json() == {"pong": True}


def pool_socket(stack):
    return stack["FCGI_SOCKETS"].split(",")[0]


def test_malformed_fastcgi_params_get_400_and_the_pool_keeps_serving(stack):
    sock = pool_socket(stack)
    # No method at all.
    out = fastcgi_request(sock, {"REQUEST_URI": "/api/ping"})
    assert out.startswith(b"Status: 400"), out
    # A nonsense Content-Length.
    out = fastcgi_request(sock, {"REQUEST_METHOD": "POST", "REQUEST_URI": "/api/ping", "CONTENT_LENGTH": "-5"})
    assert out.startswith(b"Status: 400"), out
    # A body shorter than announced.
    out = fastcgi_request(sock, {"REQUEST_METHOD": "POST", "REQUEST_URI": "/api/ping", "CONTENT_LENGTH": "100",
                                 "CONTENT_TYPE": "application/json"}, body=b"{}")
    assert out.startswith(b"Status: 400"), out
    # A Content-Length over the limit is refused without reading the body.
    out = fastcgi_request(sock, {"REQUEST_METHOD": "POST", "REQUEST_URI": "/api/ping", "CONTENT_LENGTH": str(10 ** 9)})
    assert out.startswith(b"Status: 413"), out
    # Binary garbage instead of records: the connection is dropped, nothing crashes.
    try:
        fastcgi_request(sock, {}, raw=os.urandom(4096), timeout=3)
    except OSError:
        pass
    # Still serving, on every thread (more requests than threads).
    for _ in range(40):
        out = fastcgi_request(sock, {"REQUEST_METHOD": "GET", "REQUEST_URI": "/api/ping"})
        assert out.startswith(b"Status: 200") and out.endswith(b'{"pong":true}'), out


def pool_threads(stack) -> int:
    log = open(f"{stack['LOG_DIR']}/fcgi-1.log", encoding="utf-8").read()
    return int(re.findall(r'"msg":"fcgiapp listening".*?"threads":"(\d+)"', log)[-1])


def ping_ok(out: bytes) -> bool:
    return out.startswith(b"Status: 200") and out.endswith(b'{"pong":true}')


def test_idle_kept_connections_hold_no_thread(stack):
    """nginx keeps idle FastCGI connections open (fastcgi_keep_conn, keepalive cache). With
    more of them than the process has threads, a new connection is still answered at once,
    and every kept connection still serves its next request."""
    sock = pool_socket(stack)
    threads = pool_threads(stack)
    kept = [FastCGIConnection(sock) for _ in range(threads + 8)]
    try:
        for conn in kept:
            assert ping_ok(conn.request({"REQUEST_METHOD": "GET", "REQUEST_URI": "/api/ping"}))
        # Every thread would be sitting on an idle connection if connections held threads.
        started = time.monotonic()
        out = fastcgi_request(sock, {"REQUEST_METHOD": "GET", "REQUEST_URI": "/api/ping"}, timeout=5)
        assert ping_ok(out), out
        assert time.monotonic() - started < 2
        for n, conn in enumerate(reversed(kept)):
            out = conn.request({"REQUEST_METHOD": "GET", "REQUEST_URI": "/api/ping"}, request_id=n + 2)
            assert ping_ok(out), out
    finally:
        for conn in kept:
            conn.close()


def test_connections_closed_by_the_web_server_are_released(stack):
    """Kept connections that nginx closes give their place back: more open-and-close cycles
    than the process accepts connections at once (1,024 by default), then it still serves."""
    sock = pool_socket(stack)
    for _ in range(1100):
        conn = FastCGIConnection(sock)
        try:
            assert ping_ok(conn.request({"REQUEST_METHOD": "GET", "REQUEST_URI": "/api/ping"}))
        finally:
            conn.close()
    # A connection closed in the middle of a request, and one that sends garbage.
    half = FastCGIConnection(sock)
    half.sock.sendall(b"\x01\x01\x00\x01\x00\x08\x00\x00\x00\x01\x01")
    half.close()
    try:
        fastcgi_request(sock, {}, raw=os.urandom(2048), timeout=3)
    except OSError:
        pass
    for _ in range(pool_threads(stack) * 2):
        assert ping_ok(fastcgi_request(sock, {"REQUEST_METHOD": "GET", "REQUEST_URI": "/api/ping"}))


def test_a_request_that_stops_half_way_frees_its_thread(stack):
    """A request whose bytes stop coming holds a thread for FCGI_IO_TIMEOUT_SECONDS (3 in
    the test stack), no longer: with more such requests than the process has threads, a
    new request is still answered, and each stalled connection is closed."""
    conf = open(stack["CONFIG_FILE"], encoding="utf-8").read()
    found = re.findall(r"^FCGI_IO_TIMEOUT_SECONDS=(\d+)$", conf, re.M)
    if not found or int(found[-1]) > 5:
        pytest.skip("needs a stack with FCGI_IO_TIMEOUT_SECONDS <= 5 (scripts/test.sh sets 3)")
    limit = int(found[-1])
    sock = pool_socket(stack)
    stalled = []
    try:
        for _ in range(pool_threads(stack) + 2):
            conn = FastCGIConnection(sock, timeout=limit + 10)
            # BEGIN_REQUEST, then a PARAMS record that announces 100 bytes and sends 10.
            conn.sock.sendall(b"\x01\x01\x00\x01\x00\x08\x00\x00\x00\x01\x01\x00\x00\x00\x00\x00"
                              + b"\x01\x04\x00\x01\x00\x64\x00\x00" + b"\x0e\x03REQUEST_")
            stalled.append(conn)
        started = time.monotonic()
        out = fastcgi_request(sock, {"REQUEST_METHOD": "GET", "REQUEST_URI": "/api/ping"}, timeout=limit + 15)
        assert ping_ok(out), out
        assert time.monotonic() - started < limit + 12
        for conn in stalled:
            assert conn.sock.recv(64) == b""  # closed by the pool, nothing answered
    finally:
        for conn in stalled:
            conn.close()


def test_undecodable_and_dot_segment_paths_are_404(stack):
    sock = pool_socket(stack)
    out = fastcgi_request(sock, {"REQUEST_METHOD": "GET", "REQUEST_URI": "/api/nope%ZZ"})
    assert out.startswith(b"Status: 404"), out
    out = fastcgi_request(sock, {"REQUEST_METHOD": "GET", "REQUEST_URI": "/api/health/../ping"})
    assert out.startswith(b"Status: 404"), out
    body = json.loads(out.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "not_found"
