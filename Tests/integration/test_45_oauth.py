"""OAuth login (API.md "Accounts and sessions" and "Precise rules"), for Google, GitHub and
Yandex, against scripts/oauth_standin.py (its base URL is OAUTH_STANDIN_URL in stack.env).

A test asks the API for the authorize URL, follows it to the stand-in with the identity it
wants appended (sub/id, email, email_verified, name), takes code and state from the
redirect, and calls the API's callback the way the SPA's /auth/{provider}/callback does."""

import base64
import hashlib
import json
import secrets
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from conftest import read_stack_env
from helpers import fastcgi_request
from accounts import (PASSWORD, bearer, check_login, check_user, expect_error, login, public_url, register,
                      register_verified, unique_email)

PROVIDERS = ["google", "github", "yandex"]
AUTHORIZE_PATH = {
    "google": "/google/authorize",
    "github": "/github/login/oauth/authorize",
    "yandex": "/yandex/authorize",
}
TOKEN_PATH = {
    "google": "/google/token",
    "github": "/github/login/oauth/access_token",
    "yandex": "/yandex/token",
}


@pytest.fixture(scope="module", autouse=True)
def standin(stack):
    url = stack.get("OAUTH_STANDIN_URL")
    if not url:
        pytest.fail("OAUTH_STANDIN_URL is not in stack.env: the stack runs without the OAuth stand-in "
                    "(scripts/oauth_standin.py)", pytrace=False)
    return url.rstrip("/")


def identity(provider, email, verified=True, name="OAuth User", sub=None):
    sub = sub or str(secrets.randbelow(10 ** 12) + 10 ** 11)
    params = {"id" if provider == "github" else "sub": sub, "email": email,
              "email_verified": "true" if verified else "false", "name": name}
    return params


def start(https, provider):
    """GET /api/auth/{provider} -> the authorize URL (asserted 200)."""
    r = https.get(f"/api/auth/{provider}")
    assert r.status_code == 200, r.text
    url = r.json()["url"]
    assert isinstance(url, str), r.text
    return url


def follow(url, ident):
    """The user logs in at the provider: returns (code, state) from the redirect."""
    r = requests.get(url + "&" + urlencode(ident), allow_redirects=False, timeout=10)
    assert r.status_code == 302, f"the stand-in refused the authorize URL {url}: {r.status_code} {r.text}"
    query = parse_qs(urlsplit(r.headers["Location"]).query)
    assert "code" in query, r.headers["Location"]
    return query["code"][0], query["state"][0]


def callback(https, provider, code, state):
    return https.get(f"/api/auth/{provider}/callback", params={"code": code, "state": state})


def oauth_login(https, provider, ident):
    """A whole login; returns (callback response, code, state)."""
    code, state = follow(start(https, provider), ident)
    return callback(https, provider, code, state), code, state


def standin_requests(standin):
    r = requests.get(standin + "/_standin/requests", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def s256(verifier):
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def user_exists(pg_conn, email):
    with pg_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM users WHERE email_lower = lower(%s)", (email,))
        return cur.fetchone()[0] > 0


# ------------------------------------------------------------------------------------------

def test_providers_lists_all_three_without_a_token(https):
    r = https.get("/api/auth/providers")
    assert r.status_code == 200, r.text
    providers = r.json()["providers"]
    assert isinstance(providers, list)
    assert sorted(providers) == sorted(PROVIDERS)


def test_unknown_provider_is_404(https):
    expect_error(https.get("/api/auth/myspace"), 404, "unknown_provider")
    expect_error(https.get("/api/auth/myspace/callback", params={"code": "x", "state": "y"}), 404, "unknown_provider")


@pytest.fixture(scope="module")
def fcgi_without_github(stack, tmp_path_factory):
    """A FastCGI process of the stack's build whose configuration has no GitHub client id
    and secret (the stack's own processes have all three providers), on a socket of its own."""
    stack_dir = Path(stack["STACK_DIR"])
    binary = Path(read_stack_env(stack_dir / "ports.env")["BIN_DIR"]) / "FCGIApp"
    lines = Path(stack["CONFIG_FILE"]).read_text().splitlines()
    kept = [line for line in lines if not line.startswith("OAUTH_GITHUB_")]
    assert len(kept) < len(lines), "the stack's configuration has no OAUTH_GITHUB_ lines to leave out"
    folder = tmp_path_factory.mktemp("fcgi-no-github")
    conf = folder / "swiftchat.conf"
    conf.write_text("\n".join(kept) + "\n")
    conf.chmod(0o600)
    sock = folder / "fcgi.sock"
    log = open(folder / "fcgi.log", "wb")
    proc = subprocess.Popen([str(binary)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
                                 "SWIFTCHAT_CONFIG": str(conf), "FCGI_SOCKET": str(sock)})
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert proc.poll() is None, f"FCGIApp exited ({proc.returncode}): {(folder / 'fcgi.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "FCGIApp did not create its socket within 20 s"
            time.sleep(0.1)
        yield str(sock)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def fcgi_get(sock, uri):
    """GET uri from a FastCGI socket: (status, headers, JSON body)."""
    out = fastcgi_request(sock, {"REQUEST_METHOD": "GET", "REQUEST_URI": uri, "HTTPS": "on",
                                 "REMOTE_ADDR": "127.0.0.1"})
    head, _, body = out.partition(b"\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
    return int(headers["Status"].split()[0]), headers, json.loads(body)


def test_a_provider_without_settings_is_503_and_left_out_of_the_list(fcgi_without_github):
    status, _, body = fcgi_get(fcgi_without_github, "/api/auth/providers")
    assert status == 200, body
    assert sorted(body["providers"]) == ["google", "yandex"], body
    status, headers, body = fcgi_get(fcgi_without_github, "/api/auth/github")
    assert (status, body["error"]["code"]) == (503, "provider_not_configured"), body
    assert int(headers["Retry-After"]) > 0, headers
    status, _, body = fcgi_get(fcgi_without_github, "/api/auth/google")
    assert status == 200 and body["url"].startswith("http"), body


def test_callback_of_a_provider_without_settings_checks_the_state_first(fcgi_without_github):
    # An unknown state is refused as on any server (API.md: 400 invalid_state): only a
    # state that this server issued could get as far as needing the provider's settings.
    status, _, body = fcgi_get(fcgi_without_github, "/api/auth/github/callback?code=x&state=" + secrets.token_urlsafe(16))
    assert (status, body["error"]["code"]) == (400, "invalid_state"), body
    status, _, body = fcgi_get(fcgi_without_github, "/api/auth/github/callback?code=x")
    assert (status, body["error"]["code"]) == (400, "invalid_state"), body
    status, _, body = fcgi_get(fcgi_without_github, "/api/auth/myspace/callback?code=x&state=y")
    assert (status, body["error"]["code"]) == (404, "unknown_provider"), body


def test_callback_with_a_state_issued_before_the_settings_went_is_503(https, fcgi_without_github):
    # The stack's own processes issue a GitHub state; this process no longer has GitHub.
    state = parse_qs(urlsplit(start(https, "github")).query)["state"][0]
    status, headers, body = fcgi_get(fcgi_without_github, "/api/auth/github/callback?code=x&state=" + state)
    assert (status, body["error"]["code"]) == (503, "provider_not_configured"), body
    assert int(headers["Retry-After"]) > 0, headers


@pytest.mark.parametrize("provider", PROVIDERS)
def test_authorize_url_carries_client_redirect_state_and_pkce(https, stack, standin, provider):
    url = start(https, provider)
    assert url.startswith(standin + AUTHORIZE_PATH[provider] + "?"), url
    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert q.get("client_id") == f"test-{provider}-client", q
    assert q.get("redirect_uri") == f"{public_url(stack)}/auth/{provider}/callback", q
    assert q.get("state") and len(q["state"]) >= 16, q
    assert q.get("code_challenge_method") == "S256", q
    challenge = q.get("code_challenge", "")
    # BASE64URL(SHA-256(verifier)) without padding is 43 characters.
    assert len(challenge) == 43 and set(challenge) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), q
    again = {k: v[0] for k, v in parse_qs(urlsplit(start(https, provider)).query).items()}
    assert again["state"] != q["state"] and again["code_challenge"] != challenge, "fresh state and PKCE each time"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_login_creates_a_verified_user_then_finds_it_again(https, standin, stack, provider):
    email = unique_email(f"oauth-{provider}")
    ident = identity(provider, email, name="Olga Auth")
    r, code, _ = oauth_login(https, provider, ident)
    assert r.status_code == 200, r.text
    body = check_login(r.json(), email)
    assert body["created"] is True, body
    user = body["user"]
    me = https.get("/api/me", headers=bearer(body["token"]))
    assert me.status_code == 200, me.text
    check_user(me.json(), email=email, verified=True)
    assert me.json()["id"] == user["id"]

    # What the API sent to the provider's token endpoint: the code, the same redirect URI
    # and the PKCE verifier of the challenge it put in the authorize URL.
    log = standin_requests(standin)
    authorize = [e for e in log if e["path"] == AUTHORIZE_PATH[provider] and e["query"].get("email") == email]
    exchange = [e for e in log if e["path"] == TOKEN_PATH[provider] and e["method"] == "POST"
                and e["form"].get("code") == code]
    assert len(authorize) == 1 and len(exchange) == 1, (authorize, exchange)
    form = exchange[0]["form"]
    assert form.get("grant_type") == "authorization_code" or provider == "github", form
    assert form.get("redirect_uri") == f"{public_url(stack)}/auth/{provider}/callback", form
    assert form.get("code_verifier") and s256(form["code_verifier"]) == authorize[0]["query"]["code_challenge"], form

    # The same identity again: the same user, not created.
    r, _, _ = oauth_login(https, provider, ident)
    assert r.status_code == 200, r.text
    again = check_login(r.json(), email)
    assert again["created"] is False and again["user"]["id"] == user["id"], again
    assert https.get("/api/me", headers=bearer(again["token"])).status_code == 200


@pytest.mark.parametrize("provider", PROVIDERS)
def test_state_is_single_use(https, provider):
    r, code, state = oauth_login(https, provider, identity(provider, unique_email("replay")))
    assert r.status_code == 200, r.text
    expect_error(callback(https, provider, code, state), 400, "invalid_state")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_made_up_or_missing_state_is_refused(https, provider):
    code, _ = follow(start(https, provider), identity(provider, unique_email("madeup")))
    expect_error(callback(https, provider, code, "made-up-" + uuid.uuid4().hex), 400, "invalid_state")
    expect_error(https.get(f"/api/auth/{provider}/callback", params={"code": code}), 400)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_state_of_another_provider_is_refused(https, provider):
    other = PROVIDERS[(PROVIDERS.index(provider) + 1) % len(PROVIDERS)]
    code, state = follow(start(https, other), identity(other, unique_email("mixup")))
    expect_error(callback(https, provider, code, state), 400, "invalid_state")


@pytest.mark.parametrize("provider", ["google", "github"])  # Yandex has no verified flag
def test_unverified_provider_email_is_refused(https, pg_conn, provider):
    email = unique_email("unverified")
    r, _, _ = oauth_login(https, provider, identity(provider, email, verified=False))
    expect_error(r, 400, "email_not_verified_by_provider")
    assert not user_exists(pg_conn, email)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_code_rejected_by_the_provider_is_502(https, provider):
    ident = identity(provider, unique_email("reused"))
    r, code, _ = oauth_login(https, provider, ident)
    assert r.status_code == 200, r.text
    # A fresh, valid state, but the code was already spent: the provider refuses it
    # (GitHub with a 200 carrying an "error" field).
    _, fresh_state = follow(start(https, provider), ident)
    expect_error(callback(https, provider, code, fresh_state), 502, "provider_error")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_squatters_unverified_account_is_taken_over(https, provider):
    victim = unique_email("victim")
    squatter_password = "squatter's password " + uuid.uuid4().hex[:6]
    r = register(https, victim, squatter_password, "Squatter")
    assert r.status_code == 201, r.text
    expect_error(login(https, victim, squatter_password), 403, "email_not_verified")

    r, _, _ = oauth_login(https, provider, identity(provider, victim, name="Real Owner"))
    assert r.status_code == 200, r.text
    body = check_login(r.json(), victim)
    assert body["user"]["email_verified"] is True
    # The squatter's password no longer opens the account.
    expect_error(login(https, victim, squatter_password), 401, "invalid_credentials")
    assert https.get("/api/me", headers=bearer(body["token"])).status_code == 200


@pytest.mark.parametrize("provider", PROVIDERS)
def test_links_to_the_verified_local_account_with_that_email(https, wait_for_mail, provider):
    email = unique_email("linked")
    user, _ = register_verified(https, wait_for_mail, email)
    r, _, _ = oauth_login(https, provider, identity(provider, email))
    assert r.status_code == 200, r.text
    body = check_login(r.json(), email)
    assert body["user"]["id"] == user["id"] and body["created"] is False, body
    # The owner's own password keeps working.
    assert login(https, email, PASSWORD).status_code == 200


def test_two_providers_with_the_same_verified_email_are_one_user(https):
    email = unique_email("both")
    r, _, _ = oauth_login(https, "google", identity("google", email))
    assert r.status_code == 200, r.text
    first = r.json()
    r, _, _ = oauth_login(https, "github", identity("github", email))
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["user"]["id"] == first["user"]["id"] and second["created"] is False, second
