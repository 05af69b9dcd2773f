#!/usr/bin/env python3
"""A stand-in for the three OAuth providers (Google, GitHub, Yandex), for tests only.

It speaks each provider's real JSON shapes on plain HTTP, so the API can be pointed at it
through configuration and walked through the whole authorization-code flow with PKCE:

    OAUTH_GOOGLE_AUTHORIZE_URL=http://HOST:P/google/authorize
    OAUTH_GOOGLE_TOKEN_URL=http://HOST:P/google/token
    OAUTH_GOOGLE_USERINFO_URL=http://HOST:P/google/userinfo
    OAUTH_GITHUB_AUTHORIZE_URL=http://HOST:P/github/login/oauth/authorize
    OAUTH_GITHUB_TOKEN_URL=http://HOST:P/github/login/oauth/access_token
    OAUTH_GITHUB_USER_URL=http://HOST:P/github/user
    OAUTH_GITHUB_EMAILS_URL=http://HOST:P/github/user/emails
    OAUTH_YANDEX_AUTHORIZE_URL=http://HOST:P/yandex/authorize
    OAUTH_YANDEX_TOKEN_URL=http://HOST:P/yandex/token
    OAUTH_YANDEX_USERINFO_URL=http://HOST:P/yandex/info
    OAUTH_<PROVIDER>_CLIENT_ID=test-<provider>-client
    OAUTH_<PROVIDER>_CLIENT_SECRET=test-<provider>-secret

Who logs in is chosen by extra query parameters that a test appends to the authorize URL
the API handed out (there is no login page):

    sub            the provider's user id (GitHub: `id`, numeric; Yandex: `id`)
    email          the user's email; left out: the provider reveals no email
    email_verified true|false (default true). Google: the `email_verified` claim; GitHub:
                   the `verified` flag of the primary address in /user/emails; Yandex has
                   no such flag and ignores it
    name           display name
    login          GitHub / Yandex login (derived from the email or name when left out)
    deny=1         the user refuses: redirect with error=access_denied&state=...
    format=json    answer 200 {"location": "..."} instead of the 302

Codes live 60 s and are single use; access tokens live one hour. Everything is in memory.

Test helpers (not part of any provider):
    GET  /_standin/requests   the last 200 requests (method, path, query, headers, form)
    POST /_standin/reset      forgets those requests
    GET  /_standin/health     {"status": "ok"}

Run (stdlib only):
    python scripts/oauth_standin.py --host 127.0.0.1 --port 8765
--port 0 picks a free port; the first line on stderr then names it. SIGTERM or SIGINT
stops the server cleanly (exit 0).
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import hmac
import json
import secrets
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit

PROVIDERS = ("google", "github", "yandex")
CODE_TTL = 60.0
TOKEN_TTL = 3600.0
MAX_LOGGED = 200
MAX_BODY = 1024 * 1024

GITHUB_DOCS = "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors"
GITHUB_REST_DOCS = "https://docs.github.com/rest"


def client_id_of(provider: str) -> str:
    return f"test-{provider}-client"


def client_secret_of(provider: str) -> str:
    return f"test-{provider}-secret"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pkce_s256(verifier: str) -> str:
    return b64url(hashlib.sha256(verifier.encode("ascii", "replace")).digest())


def hs256_jwt(secret: str, claims: dict) -> str:
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "standin"}, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    mac = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(mac)}"


def flag(value: Optional[str], default: bool = True) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def single(values: dict[str, list[str]]) -> dict[str, Any]:
    """parse_qs output with one-element lists flattened, for logging and lookups."""
    return {k: (v[0] if len(v) == 1 else v) for k, v in values.items()}


def numeric_id(seed: str) -> int:
    return int.from_bytes(hashlib.sha256(seed.encode()).digest()[:4], "big") % 900_000_000 + 100_000_000


class Identity:
    """The user who "logged in" at the authorize endpoint."""

    def __init__(self, provider: str, q: dict[str, str]) -> None:
        self.email: Optional[str] = q.get("email") or None
        self.email_verified = flag(q.get("email_verified"), True)
        seed = q.get("sub") or q.get("id") or self.email or secrets.token_hex(8)
        if provider == "github":
            raw = q.get("id") or q.get("sub") or ""
            self.sub = raw if raw.isdigit() else str(numeric_id(seed))
        elif provider == "yandex":
            self.sub = q.get("sub") or q.get("id") or str(numeric_id(seed))
        else:
            self.sub = q.get("sub") or str(numeric_id(seed) * 1_000_000_000_000)
        local = (self.email or "").split("@")[0]
        self.name = q.get("name") or (local.replace(".", " ").title() if local else "Test User")
        base_login = q.get("login") or local or self.name.replace(" ", "-").lower()
        self.login = "".join(c for c in base_login if c.isalnum() or c == "-")[:39] or f"user{self.sub}"
        parts = self.name.split(" ", 1)
        self.given_name = parts[0]
        self.family_name = parts[1] if len(parts) > 1 else ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.codes: dict[str, dict] = {}
        self.tokens: dict[str, dict] = {}
        self.requests: collections.deque = collections.deque(maxlen=MAX_LOGGED)

    def prune(self, now: float) -> None:
        for table in (self.codes, self.tokens):
            for key in [k for k, v in table.items() if v["expires"] < now - 300]:
                del table[key]


STATE = State()


class Reply(Exception):
    """Raised by handlers to send a response."""

    def __init__(self, status: int, body: Any = b"", content_type: str = "application/json; charset=utf-8",
                 headers: Optional[dict[str, str]] = None) -> None:
        super().__init__(status)
        self.status = status
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}


def text(status: int, message: str) -> Reply:
    return Reply(status, message + "\n", "text/plain; charset=utf-8")


class Handler(BaseHTTPRequestHandler):
    server_version = "oauth-standin/1"
    protocol_version = "HTTP/1.1"

    # ------------------------------------------------------------------ plumbing

    def log_message(self, fmt: str, *args: Any) -> None:
        sys.stderr.write("%s %s %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), self.address_string(), fmt % args))
        sys.stderr.flush()

    def do_GET(self) -> None:
        self.dispatch("GET")

    def do_POST(self) -> None:
        self.dispatch("POST")

    def do_HEAD(self) -> None:
        self.dispatch("HEAD")

    def do_PUT(self) -> None:
        self.dispatch("PUT")

    def do_DELETE(self) -> None:
        self.dispatch("DELETE")

    def read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
                if len(data) > MAX_BODY:
                    raise text(413, "body too large")
        if not length:
            return b""
        try:
            n = int(length)
        except ValueError:
            raise text(400, "bad Content-Length")
        if n < 0 or n > MAX_BODY:
            raise text(413, "body too large")
        return self.rfile.read(n)

    def parse_form(self, body: bytes) -> dict[str, str]:
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            try:
                data = json.loads(body or b"{}")
            except ValueError:
                return {}
            return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        return single(parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True))

    def dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        query = single(parse_qs(parts.query, keep_blank_values=True))
        form: dict[str, Any] = {}
        try:
            try:
                body = self.read_body()
                if method == "POST":
                    form = self.parse_form(body)
            finally:
                if not path.startswith("/_standin/"):
                    with STATE.lock:
                        STATE.requests.append({
                            "time": time.time(), "method": method, "path": path, "query": query,
                            "headers": {k: v for k, v in self.headers.items()}, "form": form,
                        })
            self.route(method, path, query, form)
            raise text(404, "not found")
        except Reply as reply:
            self.send(reply, head=(method == "HEAD"))
        except Exception as exc:  # noqa: BLE001 - a stand-in must keep serving
            self.log_message("error: %r", exc)
            self.send(text(500, "stand-in error: %r" % exc))

    def send(self, reply: Reply, head: bool = False) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(reply.body)

    def route(self, method: str, path: str, query: dict, form: dict) -> None:
        if path == "/_standin/requests" and method == "GET":
            with STATE.lock:
                raise Reply(200, list(STATE.requests))
        if path == "/_standin/reset" and method == "POST":
            with STATE.lock:
                STATE.requests.clear()
            raise Reply(200, {"ok": True})
        if path == "/_standin/health" and method in ("GET", "HEAD"):
            raise Reply(200, {"status": "ok"})

        routes = {
            ("GET", "/google/authorize"): lambda: self.authorize("google", query),
            ("POST", "/google/token"): lambda: self.token("google", form),
            ("GET", "/google/userinfo"): lambda: self.google_userinfo(),
            ("POST", "/google/userinfo"): lambda: self.google_userinfo(),
            ("GET", "/github/login/oauth/authorize"): lambda: self.authorize("github", query),
            ("POST", "/github/login/oauth/access_token"): lambda: self.token("github", {**query, **form}),
            ("GET", "/github/user"): lambda: self.github_user(),
            ("GET", "/github/user/emails"): lambda: self.github_emails(),
            ("GET", "/yandex/authorize"): lambda: self.authorize("yandex", query),
            ("POST", "/yandex/token"): lambda: self.token("yandex", form),
            ("GET", "/yandex/info"): lambda: self.yandex_info(query),
        }
        handler = routes.get((method, path))
        if handler:
            handler()
        if any(p == path for (_, p) in routes):
            if path.startswith("/github/"):
                raise Reply(404, {"message": "Not Found", "documentation_url": GITHUB_REST_DOCS})
            raise text(405, "method not allowed")

    # ------------------------------------------------------------------ authorize

    def authorize(self, provider: str, q: dict) -> None:
        q = {k: (v if isinstance(v, str) else v[-1]) for k, v in q.items()}
        client_id, redirect_uri, state = q.get("client_id"), q.get("redirect_uri"), q.get("state")
        if not client_id:
            raise text(400, "Missing required parameter: client_id")
        if client_id != client_id_of(provider):
            raise text(400, f"The OAuth client was not found: {client_id}")
        if not redirect_uri:
            raise text(400, "Missing required parameter: redirect_uri")
        if not state:
            raise text(400, "Missing required parameter: state")
        if not urlsplit(redirect_uri).scheme or not urlsplit(redirect_uri).netloc:
            raise text(400, "Invalid parameter value for redirect_uri: not an absolute URI")
        response_type = q.get("response_type")
        if provider in ("google", "yandex") and response_type != "code":
            raise text(400, "Missing or unsupported response_type (expected code)")
        if provider == "github" and response_type not in (None, "code"):
            raise text(400, "Unsupported response_type")
        scope = q.get("scope", "")
        if provider == "google" and not scope:
            raise text(400, "Missing required parameter: scope")
        challenge = q.get("code_challenge") or None
        method = q.get("code_challenge_method") or ("plain" if challenge else None)
        if challenge and method not in ("S256", "plain"):
            raise text(400, "Invalid code_challenge_method")

        if flag(q.get("deny"), False):
            params = {"error": "access_denied"}
            if provider == "github":
                params["error_description"] = "The user has denied your application access."
                params["error_uri"] = GITHUB_DOCS
            params["state"] = state
            self.redirect(redirect_uri, params, q)

        code = self.new_code(provider)
        now = time.time()
        with STATE.lock:
            STATE.prune(now)
            STATE.codes[code] = {
                "provider": provider, "client_id": client_id, "redirect_uri": redirect_uri,
                "challenge": challenge, "method": method, "scope": scope, "nonce": q.get("nonce"),
                "identity": Identity(provider, q), "expires": now + CODE_TTL, "used": False,
            }
        self.redirect(redirect_uri, {"code": code, "state": state}, q)

    @staticmethod
    def new_code(provider: str) -> str:
        if provider == "github":
            return secrets.token_hex(10)
        if provider == "yandex":
            return str(secrets.randbelow(9_000_000) + 1_000_000)
        return "4/0" + b64url(secrets.token_bytes(30))

    def redirect(self, redirect_uri: str, params: dict, q: dict) -> None:
        sep = "&" if "?" in redirect_uri else "?"
        location = redirect_uri + sep + urlencode(params)
        if q.get("format") == "json":
            raise Reply(200, {"location": location})
        raise Reply(302, {"location": location}, headers={"Location": location})

    # ------------------------------------------------------------------ token

    def client_credentials(self, form: dict) -> tuple[Optional[str], Optional[str]]:
        auth = self.headers.get("Authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                raw = base64.b64decode(auth[6:].strip()).decode()
                cid, _, secret = raw.partition(":")
                return unquote_plus(cid), unquote_plus(secret)
            except ValueError:
                return None, None
        return form.get("client_id"), form.get("client_secret")

    def token(self, provider: str, form: dict) -> None:
        form = {k: (v if isinstance(v, str) else v[-1]) for k, v in form.items()}
        client_id, client_secret = self.client_credentials(form)
        if client_id != client_id_of(provider) or client_secret != client_secret_of(provider):
            self.token_error(provider, "client", "The client_id and/or client_secret passed are incorrect.")
        if provider != "github" and form.get("grant_type") != "authorization_code":
            self.token_error(provider, "grant_type", "Invalid grant_type: %s" % form.get("grant_type"))
        code = form.get("code", "")
        now = time.time()
        with STATE.lock:
            entry = STATE.codes.get(code)
            problem = None
            if entry is None or entry["provider"] != provider:
                problem = "unknown code"
            elif entry["used"]:
                problem = "code already used"
            elif entry["expires"] < now:
                problem = "code expired"
            elif entry["client_id"] != client_id:
                problem = "code issued to another client"
            else:
                sent_redirect = form.get("redirect_uri")
                if provider == "google" and sent_redirect is None:
                    problem = "redirect_uri missing"
                elif sent_redirect is not None and sent_redirect != entry["redirect_uri"]:
                    problem = "redirect_uri mismatch"
                elif entry["challenge"]:
                    verifier = form.get("code_verifier")
                    if not verifier:
                        problem = "code_verifier missing"
                    else:
                        expected = pkce_s256(verifier) if entry["method"] == "S256" else verifier
                        if not hmac.compare_digest(expected, entry["challenge"]):
                            problem = "code_verifier does not match code_challenge"
            if problem is None:
                entry["used"] = True
                access = self.new_access_token(provider)
                STATE.tokens[access] = {"provider": provider, "identity": entry["identity"], "client_id": client_id,
                                        "scope": entry["scope"], "expires": now + TOKEN_TTL}
        if problem is not None:
            self.log_message("token refused: %s", problem)
            self.token_error(provider, "grant", problem)
        self.token_success(provider, access, entry, now)

    @staticmethod
    def new_access_token(provider: str) -> str:
        if provider == "github":
            return "gho_" + secrets.token_urlsafe(27).replace("-", "a").replace("_", "b")[:36]
        if provider == "yandex":
            return "y0_" + secrets.token_urlsafe(40)
        return "ya29." + secrets.token_urlsafe(60)

    def wants_json(self) -> bool:
        return "application/json" in self.headers.get("Accept", "").lower()

    def token_error(self, provider: str, kind: str, detail: str) -> None:
        if provider == "google":
            if kind == "client":
                raise Reply(401, {"error": "invalid_client", "error_description": "Unauthorized"})
            if kind == "grant_type":
                raise Reply(400, {"error": "unsupported_grant_type", "error_description": detail})
            raise Reply(400, {"error": "invalid_grant", "error_description": "Bad Request"})
        if provider == "yandex":
            if kind == "client":
                raise Reply(401, {"error": "invalid_client", "error_description": "Client not found or wrong client secret"})
            if kind == "grant_type":
                raise Reply(400, {"error": "unsupported_grant_type", "error_description": detail})
            raise Reply(400, {"error": "invalid_grant", "error_description": "Code has expired"})
        # GitHub: errors are HTTP 200 with an error field.
        if kind == "client":
            body = {"error": "incorrect_client_credentials",
                    "error_description": "The client_id and/or client_secret passed are incorrect.",
                    "error_uri": GITHUB_DOCS + "#incorrect-client-credentials"}
        elif detail == "redirect_uri mismatch":
            body = {"error": "redirect_uri_mismatch",
                    "error_description": "The redirect_uri MUST match the registered callback URL for this application.",
                    "error_uri": GITHUB_DOCS + "#redirect-uri-mismatch2"}
        else:
            body = {"error": "bad_verification_code", "error_description": "The code passed is incorrect or expired.",
                    "error_uri": GITHUB_DOCS + "#bad-verification-code"}
        self.github_reply(body)

    def github_reply(self, body: dict) -> None:
        if self.wants_json():
            raise Reply(200, body)
        raise Reply(200, urlencode(body), "application/x-www-form-urlencoded; charset=utf-8")

    def token_success(self, provider: str, access: str, entry: dict, now: float) -> None:
        ident: Identity = entry["identity"]
        if provider == "google":
            scope = " ".join(entry["scope"].split()) or "openid email profile"
            body = {"access_token": access, "expires_in": 3599, "token_type": "Bearer", "scope": scope}
            if "openid" in scope.split():
                claims = {"iss": "https://accounts.google.com", "azp": entry["client_id"], "aud": entry["client_id"],
                          "sub": ident.sub, "at_hash": b64url(hashlib.sha256(access.encode()).digest()[:16]),
                          "iat": int(now), "exp": int(now) + 3599}
                if ident.email and "email" in scope.split():
                    claims.update(email=ident.email, email_verified=ident.email_verified)
                if "profile" in scope.split():
                    claims.update(name=ident.name, given_name=ident.given_name, family_name=ident.family_name,
                                  picture="https://lh3.googleusercontent.com/a/standin")
                if entry.get("nonce"):
                    claims["nonce"] = entry["nonce"]
                body["id_token"] = hs256_jwt(client_secret_of("google"), claims)
            raise Reply(200, body)
        if provider == "yandex":
            raise Reply(200, {"access_token": access, "expires_in": 31536000,
                              "refresh_token": "1:" + secrets.token_urlsafe(30), "token_type": "bearer"})
        self.github_reply({"access_token": access, "token_type": "bearer", "scope": entry["scope"].replace(" ", ",")})

    # ------------------------------------------------------------------ user info

    def bearer(self, provider: str, schemes: tuple[str, ...]) -> Optional[dict]:
        auth = self.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() not in schemes or not value.strip():
            return None
        with STATE.lock:
            entry = STATE.tokens.get(value.strip())
        if entry is None or entry["provider"] != provider or entry["expires"] < time.time():
            return None
        return entry

    def google_userinfo(self) -> None:
        entry = self.bearer("google", ("bearer",))
        if entry is None:
            raise Reply(401, {"error": "invalid_token", "error_description": "Invalid Credentials"},
                        headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'})
        ident: Identity = entry["identity"]
        scopes = entry["scope"].split()
        body: dict[str, Any] = {"sub": ident.sub}
        if "profile" in scopes:
            body.update(name=ident.name, given_name=ident.given_name, family_name=ident.family_name,
                        picture="https://lh3.googleusercontent.com/a/standin")
        if "email" in scopes and ident.email:
            body.update(email=ident.email, email_verified=ident.email_verified)
        body["locale"] = "en"
        raise Reply(200, body)

    def github_guard(self) -> dict:
        if not self.headers.get("User-Agent"):
            raise Reply(403, {"message": "Request forbidden by administrative rules. "
                                         "Please make sure your request has a User-Agent header "
                                         "(https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). "
                                         "Check https://developer.github.com for other possible causes."})
        entry = self.bearer("github", ("bearer", "token"))
        if entry is None:
            raise Reply(401, {"message": "Bad credentials", "documentation_url": GITHUB_REST_DOCS,
                              "status": "401"})
        return entry

    def github_user(self) -> None:
        entry = self.github_guard()
        ident: Identity = entry["identity"]
        uid = int(ident.sub)
        raise Reply(200, {
            "login": ident.login, "id": uid, "node_id": "U_kgDO" + b64url(uid.to_bytes(6, "big")),
            "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4", "gravatar_id": "",
            "url": f"https://api.github.com/users/{ident.login}", "html_url": f"https://github.com/{ident.login}",
            "type": "User", "site_admin": False, "name": ident.name, "company": None, "blog": "",
            "location": None, "email": None, "hireable": None, "bio": None, "twitter_username": None,
            "public_repos": 0, "public_gists": 0, "followers": 0, "following": 0,
            "created_at": "2020-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z",
        })

    def github_emails(self) -> None:
        entry = self.github_guard()
        scopes = {s.strip() for s in entry["scope"].replace(",", " ").split()}
        if not scopes & {"user:email", "user"}:
            raise Reply(404, {"message": "Not Found", "documentation_url": GITHUB_REST_DOCS, "status": "404"})
        ident: Identity = entry["identity"]
        emails = []
        if ident.email:
            emails.append({"email": ident.email, "primary": True, "verified": ident.email_verified,
                           "visibility": "private"})
        emails.append({"email": f"{ident.sub}+{ident.login}@users.noreply.github.com", "primary": not ident.email,
                       "verified": True, "visibility": None})
        raise Reply(200, emails)

    def yandex_info(self, query: dict) -> None:
        entry = self.bearer("yandex", ("oauth",))
        if entry is None:
            raise Reply(401, b"", "text/plain; charset=utf-8")
        ident: Identity = entry["identity"]
        body: dict[str, Any] = {
            "id": ident.sub, "login": ident.login, "client_id": entry["client_id"],
            "display_name": ident.login, "real_name": ident.name, "first_name": ident.given_name,
            "last_name": ident.family_name, "sex": None,
        }
        if ident.email:
            body["default_email"] = ident.email
            body["emails"] = [ident.email]
        else:
            body["emails"] = []
        body["psuid"] = "1.AA" + b64url(hashlib.sha256(("psuid" + ident.sub).encode()).digest()[:24])
        raise Reply(200, body)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="OAuth provider stand-in for tests (Google, GitHub, Yandex).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    args = parser.parse_args(argv)

    server = Server((args.host, args.port), Handler)
    host, port = server.server_address[:2]
    sys.stderr.write(f"oauth stand-in listening on http://{host}:{port}\n")
    sys.stderr.flush()

    def stop(signum: int, _frame: Any) -> None:
        sys.stderr.write(f"oauth stand-in: signal {signum}, stopping\n")
        sys.stderr.flush()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
