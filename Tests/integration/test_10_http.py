"""The HTTP edge: nginx (TLS, redirect, headers, SPA, limits) and the FastCGI pool
(health, routing, the error envelope, malformed input)."""

import re
import json
import os

import requests

from contract import CONTRACT
from helpers import fastcgi_request


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


def test_undecodable_and_dot_segment_paths_are_404(stack):
    sock = pool_socket(stack)
    out = fastcgi_request(sock, {"REQUEST_METHOD": "GET", "REQUEST_URI": "/api/nope%ZZ"})
    assert out.startswith(b"Status: 404"), out
    out = fastcgi_request(sock, {"REQUEST_METHOD": "GET", "REQUEST_URI": "/api/health/../ping"})
    assert out.startswith(b"Status: 404"), out
    body = json.loads(out.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "not_found"
