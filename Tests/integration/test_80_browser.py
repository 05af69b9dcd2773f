"""The SPA in a real browser: two headless Chromiums (Debian chromium + chromedriver, driven
by selenium) talk to the stack through nginx over TLS.

One scenario, step by step: both register and follow the verification link from the SMTP
sink, create and join a room, exchange messages and see each other's messages and typing
live, edit and delete; a reload keeps the session; both relays are stopped mid-conversation
(messages are sent meanwhile) and restarted: both browsers reconnect and show every message
exactly once; logout returns to the login screen and the old token is refused; a wrong
password is explained in plain words; the page fits a phone's width; no CSP violation.

Screenshots of the main screens are written to .run/screenshots/ (not committed).
"""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import pytest

from accounts import PASSWORD, bearer, to, unique_email, verify_link

pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
SHOTS = REPO_ROOT / ".run" / "screenshots"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WAIT = 20.0

pytestmark = pytest.mark.timeout(180)


def _need_browser() -> None:
    if not Path(CHROMEDRIVER).exists():
        pytest.skip("chromedriver is not installed (apt-get install chromium chromium-driver)")
    if not (REPO_ROOT / "web" / "dist" / "index.html").exists():
        pytest.fail("web/dist is not built: run `make build` (bash web/build.sh)", pytrace=False)


def make_driver(width: int = 1280, height: int = 900) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--ignore-certificate-errors", "--disable-gpu",
                "--disable-dev-shm-usage", f"--window-size={width},{height}", "--lang=en-US"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver


@pytest.fixture
def browsers():
    _need_browser()
    SHOTS.mkdir(parents=True, exist_ok=True)
    drivers = []
    try:
        drivers.append(make_driver())
        drivers.append(make_driver())
        yield drivers
    finally:
        for d in drivers:
            try:
                d.quit()
            except Exception:  # noqa: BLE001
                pass


# --- helpers -------------------------------------------------------------------------------

def wait(driver, fn, timeout: float = WAIT, message: str = ""):
    """fn(driver) until truthy; on timeout a screenshot fail-*.png and the page's text."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=(Exception,)).until(
            lambda d: fn(d))
    except TimeoutException:
        what = message or getattr(fn, "__name__", "condition")
        try:
            driver.save_screenshot(str(SHOTS / f"fail-{int(time.time())}.png"))
            page = driver.find_element(By.TAG_NAME, "body").text[-1500:]
        except Exception:  # noqa: BLE001
            page = "?"
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; page text:\n{page}") from None


def tid(driver, testid: str):
    return driver.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]')


def tids(driver, testid: str):
    return driver.find_elements(By.CSS_SELECTOR, f'[data-testid="{testid}"]')


def shot(driver, name: str) -> None:
    time.sleep(0.15)  # let the last render paint
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def shown_messages(driver) -> list[list]:
    """[[seq, body or None (deleted)], ...] of the confirmed messages, in page order."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('[data-testid=message]')).map(e => {"
        " const b = e.querySelector('[data-testid=message-body]');"
        " return [Number(e.dataset.seq), b ? b.innerText : null]; })")


def bodies(driver) -> list:
    return [b for _, b in shown_messages(driver)]


def conn_state(driver) -> str:
    return tid(driver, "conn-state").get_attribute("data-state")


def wait_connected(driver, timeout: float = WAIT) -> None:
    wait(driver, lambda d: conn_state(d) == "connected", timeout, "connection state: connected")


def token_in(driver) -> str:
    return driver.execute_script("return sessionStorage.getItem('swiftchat.token')")


def register_and_verify(driver, base: str, wait_for_mail, name: str, shots: bool) -> str:
    email = unique_email(name.lower())
    driver.get(base + "/register")
    wait(driver, lambda d: d.find_element(By.ID, "register-email"), message="register form")
    driver.find_element(By.ID, "register-email").send_keys(email)
    driver.find_element(By.ID, "register-name").send_keys(name)
    driver.find_element(By.ID, "register-password").send_keys(PASSWORD)
    if shots:
        shot(driver, "01-register")
    tid(driver, "register-submit").click()
    wait(driver, lambda d: "Check your email" in d.find_element(By.TAG_NAME, "h1").text, message="check your email")
    if shots:
        shot(driver, "02-check-your-email")
    link = verify_link(wait_for_mail(to(email, "/verify-email?token=")))
    assert link.startswith(base + "/verify-email?token="), link
    driver.get(link)
    wait(driver, lambda d: tid(d, "me").text == name, message="signed in after verification")
    wait_connected(driver)
    return email


def open_room(driver, room_name: str) -> None:
    wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, f'[data-testid="room-item"][data-room-name="{room_name}"]'), message=f"room {room_name} listed").click()
    wait(driver, lambda d: tid(d, "chat-title").text == room_name, message=f"room {room_name} open")


def type_message(driver, text: str, enter: bool = True) -> None:
    box = tid(driver, "composer")
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if i:
            box.send_keys(Keys.SHIFT, Keys.ENTER)
        box.send_keys(line)
    if enter:
        box.send_keys(Keys.ENTER)


def wait_body(driver, body: str, timeout: float = WAIT) -> None:
    wait(driver, lambda d: body in bodies(d), timeout, f"message {body!r} shown")


def server_history(https, token: str, room_id: str) -> list[list]:
    result, cursor = [], 0
    while True:
        r = https.get(f"/api/rooms/{room_id}/messages", params={"after_seq": cursor, "limit": 100},
                      headers=bearer(token))
        assert r.status_code == 200, r.text
        page = r.json()
        result += [[m["seq"], None if m["deleted"] else m["body"]] for m in page["messages"]]
        if not page["has_more"]:
            return result
        cursor = page["messages"][-1]["seq"]


def csp_violations(driver) -> list:
    try:
        logs = driver.get_log("browser")
    except Exception:  # noqa: BLE001 - logging not supported by this driver
        return []
    return [e["message"] for e in logs if "Content Security Policy" in e.get("message", "")
            or "Refused to" in e.get("message", "")]


# --- the scenario --------------------------------------------------------------------------

def test_two_browsers_chat_reconnect_logout(browsers, stack, https, wait_for_mail, stack_ctl):
    a, b = browsers
    base = stack["HTTPS_URL"].rstrip("/")
    tag = uuid.uuid4().hex[:6]
    name_a, name_b = f"Alice{tag}", f"Bob{tag}"

    # Register both; each follows its own verification link, which signs it in.
    email_a = register_and_verify(a, base, wait_for_mail, name_a, shots=True)
    register_and_verify(b, base, wait_for_mail, name_b, shots=False)
    shot(a, "03-home-empty")

    # A creates a public room; B finds it in the directory and joins.
    room_name = f"Room {tag}"
    tid(a, "tab-new").click()
    a.find_element(By.ID, "new-room-name").send_keys(room_name)
    tid(a, "create-room-submit").click()
    wait(a, lambda d: tid(d, "chat-title").text == room_name, message="created room open")
    room_id = tid(a, "chat").get_attribute("data-room-id")

    tid(b, "tab-directory").click()
    b.find_element(By.ID, "directory-q").send_keys(tag, Keys.ENTER)

    def listed(d):
        found = d.find_elements(By.CSS_SELECTOR, f'[data-testid="directory-room"][data-room-name="{room_name}"]')
        if not found:  # search again: the directory may lag behind the creation a moment
            d.find_element(By.ID, "directory-q").send_keys(Keys.ENTER)
            time.sleep(0.3)
        return found
    wait(b, listed, message="the new room in the directory")
    shot(b, "04-directory")
    b.find_element(By.CSS_SELECTOR, f'[data-testid="directory-room"][data-room-name="{room_name}"] [data-testid="join-room"]').click()
    wait(b, lambda d: tid(d, "chat-title").text == room_name, message="joined room open")

    # Live messages both ways; Shift+Enter makes a new line, Enter sends.
    type_message(a, f"hello from {name_a}")
    wait_body(b, f"hello from {name_a}")
    type_message(b, "line one\nline two")
    wait_body(a, "line one\nline two")
    wait_body(b, "line one\nline two")

    # Typing indicator: B types without sending, A sees it.
    type_message(b, "about to say something", enter=False)
    wait(a, lambda d: f"{name_b} is typing" in tid(d, "typing").text, message="typing indicator")
    shot(a, "05-chat-typing")
    tid(b, "composer").send_keys(Keys.ENTER)
    wait_body(a, "about to say something")

    # Edit and delete one's own message; the other browser follows.
    mine = a.find_element(By.XPATH, f'//li[@data-testid="message"][.//p[text()="hello from {name_a}"]]')
    mine.find_element(By.CSS_SELECTOR, '[aria-label="Edit your message"]').click()
    editor = wait(a, lambda d: d.find_element(By.CSS_SELECTOR, ".msg .edit textarea"), message="editor")
    editor.send_keys(Keys.CONTROL, "a")
    editor.send_keys(f"hello from {name_a} (edited)", Keys.ENTER)
    wait_body(b, f"hello from {name_a} (edited)")
    type_message(a, "a message to delete")
    wait_body(b, "a message to delete")
    doomed = a.find_element(By.XPATH, '//li[@data-testid="message"][.//p[text()="a message to delete"]]')
    doomed.find_element(By.CSS_SELECTOR, '[aria-label="Delete your message"]').click()
    WebDriverWait(a, 5).until(lambda d: d.switch_to.alert).accept()
    wait(b, lambda d: "a message to delete" not in bodies(d) and None in bodies(d), message="deletion shown")

    # A reload keeps the session (and the room's history).
    b.refresh()
    wait(b, lambda d: tid(d, "me").text == name_b, message="still signed in after reload")
    open_room(b, room_name)
    wait_body(b, "about to say something")
    wait_connected(b)

    # Both relays go away mid-conversation; messages are written meanwhile.
    token_a, token_b = token_in(a), token_in(b)
    assert token_a and token_b
    relays = [f"relay-{i + 1}" for i in range(int(stack.get("WS_RELAYS", "1") or 1))]
    stopped = []
    try:
        for relay in relays:
            stack_ctl("stop-service", relay)
            stopped.append(relay)
        for d in (a, b):
            wait(d, lambda d: conn_state(d) != "connected", message="connection lost shown")
        shot(b, "06-offline")
        type_message(a, "sent while the relays were down")
        wait_body(a, "sent while the relays were down")  # the POST itself works without relays
        for i in range(3):
            r = https.post(f"/api/rooms/{room_id}/messages", headers=bearer(token_b),
                           json={"body": f"from elsewhere {i}", "client_id": f"py-{tag}-{i}"})
            assert r.status_code == 201, r.text
    finally:
        for relay in stopped:
            stack_ctl("start-service", relay)

    expected = server_history(https, token_a, room_id)
    assert [s for s, _ in expected] == list(range(1, len(expected) + 1))
    for d in (a, b):
        wait_connected(d, timeout=40)
        wait(d, lambda d: shown_messages(d) == expected, message="every message exactly once after resume")
        assert not tids(d, "pending-message")

    # Live again after the reconnect.
    type_message(b, "back online")
    wait_body(a, "back online")
    for d in (a, b):
        seqs = [s for s, _ in shown_messages(d)]
        assert len(seqs) == len(set(seqs)) and seqs == sorted(seqs), seqs
    shot(a, "07-chat-after-reconnect")

    # Sessions screen.
    tid(b, "open-sessions").click()
    wait(b, lambda d: tids(d, "session"), message="sessions listed")
    assert "This browser" in tid(b, "session-list").text
    shot(b, "08-sessions")

    # Unread count: B is not looking at the room while A writes.
    type_message(a, "while you were away")
    wait(b, lambda d: d.find_element(By.CSS_SELECTOR, f'[data-testid="room-item"][data-room-name="{room_name}"] [data-testid="unread"]').text == "1",
         message="unread count 1")

    # Phone width: the room list or the open room, nothing wider than the screen.
    b.set_window_size(390, 844)
    b.refresh()
    wait(b, lambda d: tids(d, "room-item"), message="room list at phone width")
    shot(b, "09-phone-rooms")
    open_room(b, room_name)
    wait_body(b, "while you were away")
    assert not tids(b, "unread")
    shot(b, "10-phone-chat")
    assert b.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")

    # Logout: back to the login screen, and the old token is refused.
    tid(a, "logout").click()
    wait(a, lambda d: tid(d, "login-form"), message="login screen after logout")
    assert token_in(a) is None
    assert https.get("/api/me", headers=bearer(token_a)).status_code == 401

    # A wrong password is explained in plain words; the right one signs in again.
    a.find_element(By.ID, "login-email").send_keys(email_a)
    a.find_element(By.ID, "login-password").send_keys("not the password")
    tid(a, "login-submit").click()
    wait(a, lambda d: "email or password is wrong" in tid(d, "error").text, message="plain-words login error")
    shot(a, "11-login-error")
    a.find_element(By.ID, "login-password").clear()
    a.find_element(By.ID, "login-password").send_keys(PASSWORD, Keys.ENTER)
    wait(a, lambda d: tid(d, "me").text == name_a, message="signed in again")
    wait_connected(a)

    # A direct message, found by the user search.
    tid(a, "tab-new").click()
    tid(a, "dm-search").send_keys(name_b)
    wait(a, lambda d: d.find_element(By.XPATH, f'//div[@class="dm-search"]//button[text()="{name_b}"]'), message="user search result").click()
    wait(a, lambda d: tid(d, "chat-title").text == name_b, message="direct room opened")
    type_message(a, "a direct hello")
    wait(a, lambda d: "a direct hello" in bodies(d) and not tids(d, "pending-message"), message="direct message sent")
    shot(a, "15-direct-message")

    # History loads upward on scroll: a room with 70 messages, the newest page first.
    token_a2 = token_in(a)
    r = https.post("/api/rooms", headers=bearer(token_a2), json={"name": f"History {tag}", "kind": "public"})
    assert r.status_code == 201, r.text
    history_id = r.json()["id"]
    for i in range(70):
        r = https.post(f"/api/rooms/{history_id}/messages", headers=bearer(token_a2), json={"body": f"old {i + 1}"})
        assert r.status_code == 201, r.text
    a.refresh()
    open_room(a, f"History {tag}")
    wait_body(a, "old 70")
    assert len(shown_messages(a)) < 70

    def scrolled_to_start(d):
        d.execute_script("document.querySelector('[data-testid=messages]').scrollTop = 0")
        return shown_messages(d)[0][0] == 1
    wait(a, scrolled_to_start, message="older pages loaded on scroll")
    assert shown_messages(a) == [[i, f"old {i}"] for i in range(1, 71)]
    shot(a, "12-history-top")

    for d in (a, b):
        assert not csp_violations(d), csp_violations(d)


def test_oauth_buttons_and_callback_route(stack, https):
    """The login screen lists the configured providers; a button goes through the provider
    and back, signed in; the provider's redirect to /auth/{provider}/callback signs the browser in; a used state is
    explained in plain words."""
    _need_browser()
    standin = (stack.get("OAUTH_STANDIN_URL") or "").rstrip("/")
    if not standin:
        pytest.skip("the stack runs without the OAuth stand-in")
    SHOTS.mkdir(parents=True, exist_ok=True)
    base = stack["HTTPS_URL"].rstrip("/")
    providers = https.get("/api/auth/providers").json()["providers"]
    assert "github" in providers, providers
    driver = make_driver()
    try:
        driver.get(base + "/login")
        for p in providers:
            wait(driver, lambda d: tid(d, f"oauth-{p}"), message=f"{p} button")
        shot(driver, "13-login-oauth")
        # The stand-in agrees at once (with its default identity) and redirects back.
        tid(driver, "oauth-github").click()
        wait(driver, lambda d: tid(d, "me").text.strip(), message="signed in through the GitHub button")
        wait_connected(driver)
        driver.execute_script("sessionStorage.clear()")

        # What the provider does once the user agrees: redirect to the SPA's callback route.
        email = unique_email("oauth")
        r = https.get("/api/auth/github")
        assert r.status_code == 200, r.text
        ident = {"id": str(uuid.uuid4().int % 10 ** 12), "email": email, "email_verified": "true",
                 "name": "Octo Cat"}
        import requests as plain_requests
        from urllib.parse import urlencode
        redirect = plain_requests.get(r.json()["url"] + "&" + urlencode(ident), allow_redirects=False,
                                      timeout=10).headers["Location"]
        assert redirect.startswith(base + "/auth/github/callback?"), redirect
        driver.get(redirect)
        wait(driver, lambda d: tid(d, "me").text == "Octo Cat", message="signed in with GitHub")
        wait_connected(driver)
        token = token_in(driver)
        assert https.get("/api/me", headers=bearer(token)).json()["email"].lower() == email

        # The same redirect again: the state is used up, said in plain words.
        driver.execute_script("sessionStorage.clear()")
        driver.get(redirect)
        wait(driver, lambda d: "expired or was already used" in tid(d, "error").text, message="used state explained")
        shot(driver, "14-oauth-used-state")
        assert not csp_violations(driver), csp_violations(driver)
    finally:
        driver.quit()
