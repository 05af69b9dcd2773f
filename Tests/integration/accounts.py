"""Helpers shared by the account and OAuth tests (test_40_accounts.py, test_45_oauth.py):
unique addresses, registration with the verification mail, links out of mails, error
envelopes and the shapes of the contract's objects."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import re
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import parse_qs, urlsplit

PASSWORD = "correct horse battery staple"
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
USER_FIELDS = {"id", "email", "display_name", "email_verified", "created_at"}


def public_url(stack: dict) -> str:
    """PUBLIC_URL of the stack: its https URL without the trailing slash."""
    return stack["HTTPS_URL"].rstrip("/")


def unique_email(tag: str = "user") -> str:
    return f"{tag}-{uuid.uuid4().hex[:16]}@example.test"


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def error_code(response) -> str:
    """The `code` of a JSON error envelope (asserting the envelope's shape)."""
    assert response.headers.get("Content-Type", "").startswith("application/json"), \
        f"{response.status_code} {response.headers.get('Content-Type')}: {response.text[:300]}"
    body = response.json()
    assert isinstance(body.get("error"), dict), body
    assert isinstance(body["error"].get("code"), str) and isinstance(body["error"].get("message"), str), body
    return body["error"]["code"]


def expect_error(response, status: int, code: Optional[str] = None) -> None:
    """Asserts `status` with the JSON envelope and, when given, that exact code."""
    assert response.status_code == status, f"expected {status} {code or ''}, got {response.status_code}: {response.text[:500]}"
    got = error_code(response)
    if code is not None:
        assert got == code, f"expected code {code!r}, got {got!r}: {response.text[:500]}"


def is_time(value) -> bool:
    return isinstance(value, str) and bool(TIME_RE.match(value))


def is_uuid(value) -> bool:
    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def check_user(user: dict, email: Optional[str] = None, verified: Optional[bool] = None) -> dict:
    """Asserts the User object's shape (and email/verified when given); returns it."""
    assert isinstance(user, dict) and USER_FIELDS <= set(user), user
    assert is_uuid(user["id"]), user
    assert isinstance(user["email_verified"], bool), user
    assert isinstance(user["display_name"], str) and 1 <= len(user["display_name"].strip()) <= 64, user
    assert is_time(user["created_at"]), user
    assert "password" not in json.dumps(user).lower(), user
    if email is not None:
        assert user["email"].lower() == email.lower(), user
    if verified is not None:
        assert user["email_verified"] is verified, user
    return user


def check_login(body: dict, email: Optional[str] = None) -> dict:
    """Asserts {"token", "expires_at", "user"} (a login, verify or OAuth answer)."""
    assert {"token", "expires_at", "user"} <= set(body), body
    assert isinstance(body["token"], str) and body["token"].count(".") == 2, body
    assert is_time(body["expires_at"]), body
    check_user(body["user"], email=email, verified=True)
    return body


def jwt_parts(token: str) -> tuple[dict, dict]:
    """(header, claims) of a JWT, without checking anything."""
    def part(s: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
    head, body, _ = token.split(".")
    return part(head), part(body)


# --- mail --------------------------------------------------------------------------------

def recipients(msg: EmailMessage) -> list[str]:
    return [addr.lower() for _, addr in email.utils.getaddresses([str(msg.get("To", ""))])]


def to(address: str, contains: Optional[str] = None) -> Callable[[EmailMessage], bool]:
    """wait_for_mail predicate: addressed to `address` (and its text contains `contains`)."""
    def predicate(msg: EmailMessage) -> bool:
        if address.lower() not in recipients(msg):
            return False
        return contains is None or contains in plain_text(msg)
    return predicate


def plain_text(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    return part.get_content() if part is not None else ""


def html_text(msg: EmailMessage) -> str:
    part = msg.get_body(("html",))
    return part.get_content() if part is not None else ""


def find_link(msg: EmailMessage, route: str, base: Optional[str] = None) -> str:
    """The `<base>/<route>?token=...` link in the mail's plain-text part."""
    text = plain_text(msg)
    prefix = re.escape(base) if base else r"https?://[^\s/]+"
    match = re.search(prefix + "/" + re.escape(route) + r"\?token=[A-Za-z0-9_\-.~%]+", text)
    assert match, f"no /{route}?token= link in the plain-text part:\n{text}"
    return match.group(0)


def token_of(link: str) -> str:
    values = parse_qs(urlsplit(link).query).get("token")
    assert values and values[0], link
    return values[0]


def verify_link(msg: EmailMessage, base: Optional[str] = None) -> str:
    return find_link(msg, "verify-email", base)


def reset_link(msg: EmailMessage, base: Optional[str] = None) -> str:
    return find_link(msg, "reset-password", base)


def mails_to(mail_dir: Path, address: str) -> list[EmailMessage]:
    """Every message in the sink addressed to `address` (whenever it arrived)."""
    import email as email_pkg
    import email.policy

    found = []
    for path in sorted(Path(mail_dir).glob("*.eml")):
        msg = email_pkg.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if address.lower() in recipients(msg):
            found.append(msg)
    return found


# --- accounts ----------------------------------------------------------------------------

def register(https, email: str, password: str = PASSWORD, name: Optional[str] = None, **kwargs):
    body = {"email": email, "password": password}
    if name is not None:
        body["display_name"] = name
    return https.post("/api/auth/register", json=body, **kwargs)


def login(https, email: str, password: str = PASSWORD, **kwargs):
    return https.post("/api/auth/login", json={"email": email, "password": password}, **kwargs)


def verify(https, token: str, **kwargs):
    return https.get("/api/auth/verify-email", params={"token": token}, **kwargs)


def register_and_get_mail(https, wait_for_mail, email: Optional[str] = None, password: str = PASSWORD,
                          name: Optional[str] = "Test User") -> tuple[dict, EmailMessage]:
    """Registers (201) and returns (user, verification mail)."""
    email = email or unique_email()
    r = register(https, email, password, name)
    assert r.status_code == 201, r.text
    user = r.json()["user"]
    msg = wait_for_mail(to(email, "/verify-email?token="))
    return user, msg


def register_verified(https, wait_for_mail, email: Optional[str] = None, password: str = PASSWORD,
                      name: Optional[str] = "Test User", **kwargs) -> tuple[dict, str]:
    """Registers, follows the verification link, and returns (user, token) of the session
    that verification opened."""
    email = email or unique_email()
    _, msg = register_and_get_mail(https, wait_for_mail, email, password, name)
    r = verify(https, token_of(verify_link(msg)), **kwargs)
    assert r.status_code == 200, r.text
    body = r.json()
    check_login(body, email)
    return body["user"], body["token"]
