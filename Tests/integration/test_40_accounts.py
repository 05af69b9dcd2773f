"""Accounts and sessions (API.md "Accounts and sessions"): registration and its input
rules, email verification with single-use hashed tokens, login and its rate limit, JWT
tampering, logout closing the session's WebSockets, the session list, password reset,
resending the verification mail, and the profile."""

import json
import secrets
import time
import uuid

import pytest

from accounts import (PASSWORD, bearer, check_login, check_user, error_code, expect_error, html_text, is_time,
                      jwt_parts, login, mails_to, public_url, register, register_and_get_mail, register_verified,
                      reset_link, sha256_hex, to, token_of, unique_email, verify, verify_link)
from helpers import b64url, recv_close, recv_json, sign_jwt


def me(https, token):
    return https.get("/api/me", headers=bearer(token))


# --- registration ------------------------------------------------------------------------

def test_register_returns_the_unverified_user_and_mails_a_link(https, stack, wait_for_mail):
    email = unique_email("reg")
    r = register(https, email, PASSWORD, "  Alice Example  ")
    assert r.status_code == 201, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert isinstance(body.get("message"), str) and body["message"], body
    user = check_user(body["user"], email=email, verified=False)
    assert user["display_name"] == "Alice Example"  # trimmed

    msg = wait_for_mail(to(email, "/verify-email?token="))
    assert "verify" in str(msg["Subject"]).lower(), msg["Subject"]
    link = verify_link(msg, public_url(stack))  # <PUBLIC_URL>/verify-email?token=...
    assert token_of(link)
    assert link in html_text(msg), "the HTML part carries the same link"


def test_register_without_display_name_gets_a_default(https):
    r = register(https, unique_email("noname"))
    assert r.status_code == 201, r.text
    check_user(r.json()["user"], verified=False)


@pytest.mark.parametrize("ctype", ["application/json; charset=utf-8", "Application/JSON ; charset=UTF-8"])
def test_register_accepts_json_with_a_charset(https, ctype):
    # Media types are case-insensitive, and space may come before the parameter.
    r = https.post("/api/auth/register", data=json.dumps({"email": unique_email("cs"), "password": PASSWORD}),
                   headers={"Content-Type": ctype})
    assert r.status_code == 201, r.text


def test_duplicate_registration_is_409_also_when_only_the_case_differs(https):
    email = unique_email("dup")
    assert register(https, email).status_code == 201
    expect_error(register(https, email, "another password"), 409, "email_taken")
    local, domain = email.split("@")
    expect_error(register(https, local.upper() + "@" + domain.upper()), 409, "email_taken")


@pytest.mark.parametrize("bad", [
    "not-an-email", "missing-at.example.test", "@example.test", "user@", "two@@example.test",
    "spaces in@example.test", "", " ",
])
def test_register_rejects_an_invalid_email(https, bad):
    expect_error(register(https, bad), 400, "invalid_email")


def test_email_length_limit_is_254(https):
    tag = uuid.uuid4().hex[:16]
    # local part <= 64 and labels <= 63, as a real address must have
    domain_labels = ["d" * 60, "e" * 60, "f" * 60]
    base = "@" + ".".join(domain_labels) + ".example.test"          # 1 + 183 + 13 = 197
    ok = (tag + "x" * (254 - len(base) - len(tag))) + base
    assert len(ok) == 254 and len(ok.split("@")[0]) <= 64
    r = register(https, ok)
    assert r.status_code == 201, r.text
    too_long = "y" + ok[1:].replace("@", "z@", 1)
    assert len(too_long) == 255
    expect_error(register(https, too_long), 400, "invalid_email")


@pytest.mark.parametrize("password", ["", "short", "7chars!", "x" * 257])
def test_register_rejects_a_weak_password(https, password):
    expect_error(register(https, unique_email("weak"), password), 400, "weak_password")


@pytest.mark.parametrize("password", ["8chars!!", "p" * 256])
def test_password_length_bounds_are_inclusive(https, password):
    r = register(https, unique_email("pwok"), password)
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("name", ["", "   ", "\t\n", "n" * 65])
def test_register_rejects_a_bad_display_name(https, name):
    expect_error(register(https, unique_email("dn"), PASSWORD, name), 400, "invalid_display_name")


@pytest.mark.parametrize("name,stored", [
    ("n" * 64, "n" * 64),
    ("  " + "m" * 64 + "  ", "m" * 64),         # the limit applies after trimming
    ("é" * 64, "é" * 64),                        # characters, not bytes
    ("e\u0301" * 64, "e\u0301" * 64),            # 64 characters of 2 scalars each
    ("🏳️‍🌈" * 16, "🏳️‍🌈" * 16),                    # 16 characters of 4 scalars each
])
def test_display_name_bounds(https, name, stored):
    r = register(https, unique_email("dnok"), PASSWORD, name)
    assert r.status_code == 201, r.text
    assert r.json()["user"]["display_name"] == stored


@pytest.mark.parametrize("name", [
    "a" + "\u0301" * 300,          # one character, 301 scalars: over 4 per character (256)
    "Zalgo" + "\u0336" * 252,      # 5 characters, 257 scalars
    " " * 200 + "n" + " " * 56,    # 1 character after trimming, 257 scalars before
])
def test_display_name_raw_length_is_bounded_too(https, name):
    r = register(https, unique_email("dnraw"), PASSWORD, name)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_display_name", r.text


@pytest.mark.parametrize("path", ["/api/auth/register", "/api/auth/login"])
@pytest.mark.parametrize("raw", [
    b"{not json", b"", b"null", b"[]", b'"a string"', b"\xff\xfe\x00",
    b'{"email": 123, "password": "correct horse battery"}',
    b'{"email": "EMAIL", "password": 12345678}',
    b'{"email": ["EMAIL"], "password": "correct horse battery"}',
    b'{"email": "EMAIL", "password": null}',
    b'{"email": "EMAIL"}',
    b'{"password": "correct horse battery"}',
])
def test_malformed_bodies_are_400(https, path, raw):
    raw = raw.replace(b"EMAIL", unique_email("wt").encode())
    r = https.post(path, data=raw, headers={"Content-Type": "application/json"})
    expect_error(r, 400)


def test_display_name_of_the_wrong_type_is_400(https):
    r = https.post("/api/auth/register", json={"email": unique_email("wt"), "password": PASSWORD, "display_name": 5})
    expect_error(r, 400)


@pytest.mark.parametrize("path", ["/api/auth/register", "/api/auth/login", "/api/auth/resend-verification",
                                  "/api/auth/password-reset", "/api/auth/password-reset/confirm"])
def test_wrong_content_type_is_415(https, path):
    body = json.dumps({"email": unique_email("ct"), "password": PASSWORD, "token": "x"})
    for ctype in ("text/plain", "application/x-www-form-urlencoded"):
        expect_error(https.post(path, data=body, headers={"Content-Type": ctype}), 415)


def test_body_over_64_kib_is_413(https):
    body = json.dumps({"email": unique_email("big"), "password": PASSWORD, "display_name": "x" * (64 * 1024)})
    expect_error(https.post("/api/auth/register", data=body, headers={"Content-Type": "application/json"}), 413)


def test_fixed_auth_paths_win_over_provider_and_unknown_methods_are_405(https):
    # /api/auth/login is a fixed path, not a provider named "login".
    r = https.get("/api/auth/login")
    expect_error(r, 405)
    assert "POST" in r.headers["Allow"]
    r = https.put("/api/auth/register", json={})
    expect_error(r, 405)
    assert "POST" in r.headers["Allow"]
    r = https.post("/api/auth/sessions", json={})
    expect_error(r, 405)
    assert "GET" in r.headers["Allow"]


# --- verification --------------------------------------------------------------------------

def test_verification_token_is_stored_hashed_and_logs_in_once(https, stack, wait_for_mail, pg_conn):
    email = unique_email("ver")
    user, msg = register_and_get_mail(https, wait_for_mail, email)
    token = token_of(verify_link(msg, public_url(stack)))
    with pg_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM email_tokens WHERE token_hash = %s", (token,))
        assert cur.fetchone()[0] == 0, "the raw token must not be stored"
        cur.execute("SELECT user_id::text, purpose, used_at FROM email_tokens WHERE token_hash = %s",
                    (sha256_hex(token),))
        row = cur.fetchone()
    assert row is not None, "the token's SHA-256 (hex) is stored"
    assert row[0] == user["id"] and row[1] == "verify" and row[2] is None, row

    # Not verified yet: the right password is refused with 403.
    expect_error(login(https, email), 403, "email_not_verified")

    r = verify(https, token)
    assert r.status_code == 200, r.text
    body = check_login(r.json(), email)
    assert body["user"]["id"] == user["id"]
    r = me(https, body["token"])
    assert r.status_code == 200, r.text
    check_user(r.json(), email=email, verified=True)
    assert r.json()["id"] == user["id"]

    # Single use.
    expect_error(verify(https, token), 400, "invalid_token")
    # And now the password logs in.
    r = login(https, email)
    assert r.status_code == 200, r.text
    check_login(r.json(), email)


def test_expired_verification_token_is_refused(https, wait_for_mail, pg_conn):
    email = unique_email("exp")
    _, msg = register_and_get_mail(https, wait_for_mail, email)
    token = token_of(verify_link(msg))
    with pg_conn.cursor() as cur:
        cur.execute("UPDATE email_tokens SET expires_at = now() - interval '1 second' WHERE token_hash = %s",
                    (sha256_hex(token),))
        assert cur.rowcount == 1
    expect_error(verify(https, token), 400, "invalid_token")
    expect_error(login(https, email), 403, "email_not_verified")


@pytest.mark.parametrize("token", ["made-up-token", "x" * 43, "' OR 1=1 --", "%00"])
def test_unknown_verification_token_is_invalid(https, token):
    expect_error(verify(https, token), 400, "invalid_token")


def test_verify_without_a_token_is_400(https):
    expect_error(https.get("/api/auth/verify-email"), 400)


def test_resend_verification_sends_a_new_link_and_reveals_nothing(https, wait_for_mail, mail_dir):
    email = unique_email("resend")
    _, first = register_and_get_mail(https, wait_for_mail, email)
    # The unknown address first: had it been mailed, that mail would be in the sink before
    # the known one's.
    unknown_email = unique_email("nobody")
    unknown = https.post("/api/auth/resend-verification", json={"email": unknown_email})
    assert unknown.status_code == 202, unknown.text
    known = https.post("/api/auth/resend-verification", json={"email": email})
    assert known.status_code == 202, known.text
    assert unknown.content == known.content, "the answer must not reveal whether the account exists"

    second = wait_for_mail(to(email, "/verify-email?token="))
    token = token_of(verify_link(second))
    assert token != token_of(verify_link(first))
    r = verify(https, token)
    assert r.status_code == 200, r.text
    check_login(r.json(), email)
    assert mails_to(mail_dir, unknown_email) == []


# --- login ---------------------------------------------------------------------------------

def test_login_returns_a_working_token(https, wait_for_mail):
    email = unique_email("login")
    user, _ = register_verified(https, wait_for_mail, email)
    r = login(https, email)
    assert r.status_code == 200, r.text
    body = check_login(r.json(), email)
    assert body["user"]["id"] == user["id"]
    header, claims = jwt_parts(body["token"])
    assert header["alg"] == "HS256"
    assert claims["sub"] == user["id"] and claims["sid"]
    assert claims["exp"] > time.time() > claims["iat"] - 5
    r = me(https, body["token"])
    assert r.status_code == 200 and r.json()["id"] == user["id"], r.text


def test_wrong_password_and_unknown_email_get_the_same_401(https, wait_for_mail):
    email = unique_email("wrong")
    register_verified(https, wait_for_mail, email)
    wrong = login(https, email, "not the password")
    expect_error(wrong, 401, "invalid_credentials")
    unknown = login(https, unique_email("unknown"), "not the password")
    expect_error(unknown, 401, "invalid_credentials")
    assert unknown.json() == wrong.json()


def test_wrong_password_on_an_unverified_account_is_401_not_403(https):
    email = unique_email("unvwrong")
    assert register(https, email).status_code == 201
    expect_error(login(https, email, "not the password"), 401, "invalid_credentials")
    expect_error(login(https, email), 403, "email_not_verified")


def _config_value(stack, key):
    if key in stack:
        return stack[key]
    path = stack.get("CONFIG_FILE")
    try:
        for line in open(path, encoding="utf-8"):
            if line.startswith(key + "="):
                return line.split("=", 1)[1].strip()
    except (OSError, TypeError):
        pass
    return None


def test_failed_logins_are_rate_limited_per_email(https, stack, wait_for_mail):
    limit = int(_config_value(stack, "RATE_LIMIT_LOGIN_PER_EMAIL") or 5)
    window = _config_value(stack, "RATE_LIMIT_WINDOW_SECONDS")
    if window is not None and int(window) > 30:
        pytest.skip(f"the stack's login window is {window}s (the test stack uses 8s)")
    email = unique_email("limited")
    other = unique_email("bystander")
    register_verified(https, wait_for_mail, email)
    register_verified(https, wait_for_mail, other)

    for i in range(limit):
        expect_error(login(https, email, f"wrong password {i}"), 401, "invalid_credentials")
    r = login(https, email)  # the right password, too late
    expect_error(r, 429, "too_many_attempts")
    retry_after = int(r.headers["Retry-After"])
    if retry_after > 30:
        pytest.skip(f"Retry-After is {retry_after}s: the stack's login window is not the test one")
    assert retry_after >= 1
    limited_at = time.monotonic()

    # Per email: another account from the same client is not affected.
    r = login(https, other)
    assert r.status_code == 200, r.text

    time.sleep(max(0.0, limited_at + retry_after + 0.5 - time.monotonic()))
    r = login(https, email)
    assert r.status_code == 200, f"after Retry-After ({retry_after}s): {r.status_code} {r.text}"
    check_login(r.json(), email)


# --- tokens --------------------------------------------------------------------------------

def test_tampered_tokens_are_refused(https, stack, wait_for_mail):
    user, token = register_verified(https, wait_for_mail)
    assert me(https, token).status_code == 200
    header, claims = jwt_parts(token)
    secret = stack["JWT_SECRET"]
    head_b64, body_b64, sig_b64 = token.split(".")

    # Control: the same claims signed the API's way with the stack's key are accepted.
    assert me(https, sign_jwt(secret, claims)).status_code == 200

    now = int(time.time())
    other_claims = dict(claims, sub=str(uuid.uuid4()))
    forged_body = b64url(json.dumps(other_claims, separators=(",", ":")).encode())
    longer = dict(claims, exp=claims["exp"] + 3600)
    none_head = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    bad = {
        "payload changed, signature kept": f"{head_b64}.{forged_body}.{sig_b64}",
        "exp extended, signature kept":
            f"{head_b64}.{b64url(json.dumps(longer, separators=(',', ':')).encode())}.{sig_b64}",
        "alg none, no signature": f"{none_head}.{body_b64}.",
        "alg none, old signature": f"{none_head}.{body_b64}.{sig_b64}",
        "signed with another key": sign_jwt(secrets.token_hex(32), claims),
        "expired": sign_jwt(secret, dict(claims, iat=now - 7200, exp=now - 60)),
        "unknown session": sign_jwt(secret, dict(claims, sid=b64url(secrets.token_bytes(16)))),
        "signature truncated": token[:-4],
        "not a JWT": "garbage",
        "empty": "",
    }
    for what, forged in bad.items():
        r = me(https, forged)
        assert r.status_code == 401, f"{what}: {r.status_code} {r.text}"
        assert error_code(r) == "unauthorized", what
    for header_value in (f"Basic {token}", token, f"Bearer{token}"):
        r = https.get("/api/me", headers={"Authorization": header_value})
        expect_error(r, 401, "unauthorized")
    expect_error(https.get("/api/me"), 401, "unauthorized")
    # The genuine token still works after all that.
    assert me(https, token).status_code == 200


@pytest.mark.parametrize("method,path", [
    ("GET", "/api/me"), ("PATCH", "/api/me"), ("POST", "/api/auth/logout"), ("GET", "/api/auth/sessions"),
    ("DELETE", "/api/auth/sessions/abc"),
])
def test_endpoints_need_a_token(https, method, path):
    kwargs = {"json": {"display_name": "x"}} if method == "PATCH" else {}
    expect_error(https.request(method, path, **kwargs), 401, "unauthorized")


# --- logout and sessions ---------------------------------------------------------------------

def test_logout_revokes_the_token_and_only_that_session(https, wait_for_mail):
    email = unique_email("logout")
    _, first = register_verified(https, wait_for_mail, email)
    r = login(https, email)
    assert r.status_code == 200, r.text
    second = r.json()["token"]

    r = https.post("/api/auth/logout", headers=bearer(first))
    assert r.status_code == 204, r.text
    assert r.content == b""
    expect_error(me(https, first), 401, "unauthorized")
    expect_error(https.post("/api/auth/logout", headers=bearer(first)), 401)
    assert me(https, second).status_code == 200


def test_logout_closes_the_sessions_websockets_with_4401(https, wait_for_mail, ws_connect):
    email = unique_email("wslogout")
    _, token = register_verified(https, wait_for_mail, email)
    r = login(https, email)
    assert r.status_code == 200, r.text
    other = r.json()["token"]
    ws = ws_connect(token, wait_ready=True)
    ws_other = ws_connect(other, wait_ready=True)

    assert https.post("/api/auth/logout", headers=bearer(token)).status_code == 204
    code, frames = recv_close(ws, timeout=10)
    assert code == 4401, (code, frames)
    revoked = [f for f in frames if f.get("type") == "session.revoked"]
    if revoked:
        assert frames[-1].get("type") == "session.revoked", "session.revoked is the last frame before the close"

    # The user's other session keeps its socket.
    ws_other.send(json.dumps({"type": "ping"}))
    deadline = time.monotonic() + 5
    while True:
        frame = recv_json(ws_other)
        if frame.get("type") == "pong":
            break
        assert time.monotonic() < deadline, "no pong on the other session's socket"


def _sessions(https, token):
    r = https.get("/api/auth/sessions", headers=bearer(token))
    assert r.status_code == 200, r.text
    sessions = r.json()["sessions"]
    assert isinstance(sessions, list)
    for s in sessions:
        assert {"id", "created_at", "last_seen_at", "user_agent", "current"} <= set(s), s
        assert isinstance(s["id"], str) and s["id"], s
        assert is_time(s["created_at"]) and is_time(s["last_seen_at"]), s
        assert isinstance(s["current"], bool), s
    return sessions


def test_sessions_list_and_revoke(https, wait_for_mail):
    email = unique_email("sess")
    tag = uuid.uuid4().hex[:8]
    ua = {k: f"pytest-{k}-{tag}" for k in ("a", "b", "c")}
    _, token_a = register_verified(https, wait_for_mail, email, headers={"User-Agent": ua["a"]})
    tokens = {"a": token_a}
    for k in ("b", "c"):
        r = login(https, email, headers={"User-Agent": ua[k]})
        assert r.status_code == 200, r.text
        tokens[k] = r.json()["token"]

    sessions = _sessions(https, tokens["b"])
    by_ua = {s["user_agent"]: s for s in sessions}
    assert set(ua.values()) <= set(by_ua), sessions
    current = [s for s in sessions if s["current"]]
    assert len(current) == 1 and current[0]["user_agent"] == ua["b"], sessions
    assert len({s["id"] for s in sessions}) == len(sessions)

    # Revoke c from b.
    r = https.delete(f"/api/auth/sessions/{by_ua[ua['c']]['id']}", headers=bearer(tokens["b"]))
    assert r.status_code == 204, r.text
    expect_error(me(https, tokens["c"]), 401, "unauthorized")
    assert me(https, tokens["b"]).status_code == 200
    assert me(https, tokens["a"]).status_code == 200
    left = {s["user_agent"] for s in _sessions(https, tokens["a"])}
    assert ua["c"] not in left and {ua["a"], ua["b"]} <= left
    # Gone is gone.
    expect_error(https.delete(f"/api/auth/sessions/{by_ua[ua['c']]['id']}", headers=bearer(tokens["b"])), 404)


def test_someone_elses_session_is_404_and_survives(https, wait_for_mail):
    _, mine = register_verified(https, wait_for_mail)
    _, theirs = register_verified(https, wait_for_mail)
    their_ids = [s["id"] for s in _sessions(https, theirs)]
    assert their_ids
    for sid in their_ids:
        expect_error(https.delete(f"/api/auth/sessions/{sid}", headers=bearer(mine)), 404)
    assert me(https, theirs).status_code == 200
    expect_error(https.delete("/api/auth/sessions/no-such-session", headers=bearer(mine)), 404)


# --- password reset ------------------------------------------------------------------------

def test_password_reset_end_to_end(https, stack, wait_for_mail, mail_dir, pg_conn):
    email = unique_email("reset")
    _, token_a = register_verified(https, wait_for_mail, email)
    r = login(https, email)
    assert r.status_code == 200, r.text
    token_b = r.json()["token"]

    nobody = unique_email("nobody")
    unknown = https.post("/api/auth/password-reset", json={"email": nobody})
    assert unknown.status_code == 202, unknown.text
    known = https.post("/api/auth/password-reset", json={"email": email})
    assert known.status_code == 202, known.text
    assert unknown.content == known.content, "the answer must not reveal whether the account exists"

    msg = wait_for_mail(to(email, "/reset-password?token="))
    link = reset_link(msg, public_url(stack))
    reset_token = token_of(link)
    with pg_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM email_tokens WHERE token_hash = %s", (reset_token,))
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT purpose FROM email_tokens WHERE token_hash = %s", (sha256_hex(reset_token),))
        assert cur.fetchone() == ("reset",)
    # The request for the unknown address (made first) sent nothing.
    assert mails_to(mail_dir, nobody) == []

    # A made-up token is refused.
    expect_error(https.post("/api/auth/password-reset/confirm", json={"token": "made-up", "password": "whatever12"}),
                 400, "invalid_token")

    confirm = "/api/auth/password-reset/confirm"
    expect_error(https.post(confirm, json={"token": reset_token, "password": "short"}), 400, "weak_password")
    new_password = "a brand new password " + uuid.uuid4().hex[:6]
    r = https.post(confirm, json={"token": reset_token, "password": new_password})
    assert r.status_code == 204, r.text

    for old in (token_a, token_b):
        expect_error(me(https, old), 401, "unauthorized")
    expect_error(login(https, email, PASSWORD), 401, "invalid_credentials")
    r = login(https, email, new_password)
    assert r.status_code == 200, r.text
    check_login(r.json(), email)
    # Single use.
    expect_error(https.post(confirm, json={"token": reset_token, "password": "yet another password"}),
                 400, "invalid_token")


def test_expired_reset_token_is_refused(https, wait_for_mail, pg_conn):
    email = unique_email("resetexp")
    register_verified(https, wait_for_mail, email)
    assert https.post("/api/auth/password-reset", json={"email": email}).status_code == 202
    token = token_of(reset_link(wait_for_mail(to(email, "/reset-password?token="))))
    with pg_conn.cursor() as cur:
        cur.execute("UPDATE email_tokens SET expires_at = now() - interval '1 second' WHERE token_hash = %s",
                    (sha256_hex(token),))
        assert cur.rowcount == 1
    r = https.post("/api/auth/password-reset/confirm", json={"token": token, "password": "a fine new password"})
    expect_error(r, 400, "invalid_token")
    assert login(https, email).status_code == 200


def test_verification_token_does_not_reset_a_password(https, wait_for_mail):
    email = unique_email("crossuse")
    _, msg = register_and_get_mail(https, wait_for_mail, email)
    token = token_of(verify_link(msg))
    r = https.post("/api/auth/password-reset/confirm", json={"token": token, "password": "a fine new password"})
    expect_error(r, 400, "invalid_token")


# --- profile -------------------------------------------------------------------------------

def test_me_and_patch_display_name(https, wait_for_mail):
    email = unique_email("me")
    user, token = register_verified(https, wait_for_mail, email, name="Before")
    r = me(https, token)
    assert r.status_code == 200, r.text
    assert check_user(r.json(), email=email, verified=True)["display_name"] == "Before"

    r = https.patch("/api/me", json={"display_name": "  After Ünïcode  "}, headers=bearer(token))
    assert r.status_code == 200, r.text
    updated = check_user(r.json(), email=email, verified=True)
    assert updated["display_name"] == "After Ünïcode" and updated["id"] == user["id"]
    assert me(https, token).json()["display_name"] == "After Ünïcode"

    for bad in ("", "   ", "n" * 65):
        expect_error(https.patch("/api/me", json={"display_name": bad}, headers=bearer(token)),
                     400, "invalid_display_name")
    expect_error(https.patch("/api/me", json={"display_name": 42}, headers=bearer(token)), 400)
    expect_error(https.patch("/api/me", data="{", headers={**bearer(token), "Content-Type": "application/json"}), 400)
    assert me(https, token).json()["display_name"] == "After Ünïcode"
