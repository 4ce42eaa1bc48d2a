"""The chat on a page that carries no token: only the login cookie authenticates.

A password-protected server (or a JupyterHub single-user server set not to expose its token)
serves JupyterLab without a token in the page config. Jupyter then wants the ``_xsrf``
cookie's value back in an ``X-XSRFToken`` header (on writes here; on every REST call under
JupyterHub), and a same-origin WebSocket is authenticated by the cookie alone. Here the user
logs in through the ``/login`` form, and the side panel, a notebook's chat and the plain widget
view (anywidget's, without the JupyterLab extension) must all work.

Also: every tab's panel hears the same reply end; one notification is raised for it across the
tabs of the origin, not one per tab.
"""

from __future__ import annotations

import http.cookiejar
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

import jlab
from chat import (
    AGENT,
    GUARD_MS,
    ROOT,
    WIDGET_CELL,
    body_text,
    last_reply,
    output_chat,
    send,
    wait_status,
    words,
)
from labserver import LabServer

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery staple"
SIDEBAR = '[data-testid="streamchat-sidebar"]'
SIDEBAR_TAB = '[data-id="streamchat-sidebar"]'
ENTRY = '[data-testid="streamchat-conversation"]'
NOTE = '[data-testid="streamchat-transport-note"]'
# Time the other tab is given to raise a second notification, had it decided to: a guard
# against a false pass, never a performance claim (a tab decides within milliseconds).
SECOND_NOTIFICATION_GRACE_S = 2.0


class PasswordLab(LabServer):
    """``jupyter lab`` behind a password and with no token: its page config holds none, and
    the test's own REST calls log in through ``/login`` and send the XSRF header, as a
    browser's do."""

    def __init__(self, args=(), **kwargs):
        from jupyter_server.auth import passwd

        super().__init__(
            [*args, f"--PasswordIdentityProvider.hashed_password={passwd(PASSWORD)}"], **kwargs
        )
        # No token at all, in place of LabServer's own (an option may be given only once).
        self.args = [a for a in self.args if not a.startswith("--IdentityProvider.token=")]
        self.args.append("--IdentityProvider.token=")
        self.token = ""
        self._cookies = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self._cookies)
        )
        self._logged_in = False

    def _xsrf(self) -> str:
        return next((c.value for c in self._cookies if c.name == "_xsrf"), "")

    def _login(self, timeout: float) -> None:
        self._opener.open(self.url("login"), timeout=timeout).read()  # sets the _xsrf cookie
        form = urllib.parse.urlencode({"password": PASSWORD, "_xsrf": self._xsrf()}).encode()
        self._opener.open(self.url("login"), data=form, timeout=timeout).read()
        self._logged_in = any(c.name.startswith("username-") for c in self._cookies)
        if not self._logged_in:
            raise RuntimeError("the password login set no login cookie")

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        if not self._logged_in:
            self._login(timeout)  # OSError while the server is not up yet, as the base's call
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url(path),
            data=data,
            method=method,
            headers={"X-XSRFToken": self._xsrf(), "Content-Type": "application/json"},
        )
        try:
            with self._opener.open(request, timeout=timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as err:
            raise RuntimeError(
                f"{method} {path} -> {err.code}: {err.read().decode(errors='replace')[:500]}"
            ) from None
        return json.loads(payload) if payload else None


@pytest.fixture(scope="module")
def lab(lab_env, tmp_path_factory):
    with PasswordLab(
        ["--EchoAgent.delay=0.05"], env=lab_env, base_dir=tmp_path_factory.mktemp("pwlab")
    ) as server:
        yield server


@pytest.fixture
def requests_seen(page):
    """Every request of the page to the chat's REST API or socket, and every answer: (method,
    url, headers) and (status, url)."""
    seen = {"requests": [], "responses": [], "sockets": []}
    page.on(
        "request",
        lambda r: "/streamchat/" in r.url and seen["requests"].append((r.method, r.url, r.headers)),
    )
    page.on(
        "response",
        lambda r: "/streamchat/" in r.url and seen["responses"].append((r.status, r.url)),
    )
    page.on("websocket", lambda ws: "/streamchat/" in ws.url and seen["sockets"].append(ws.url))
    return seen


def login(page: Page, lab: LabServer) -> None:
    """Log in through the server's own form, as a user would: the context then holds the login
    and ``_xsrf`` cookies, and nothing else authenticates its requests."""
    page.goto(lab.url("login"))
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("input[name=password]").press("Enter")
    page.wait_for_url(lambda url: "/login" not in url, timeout=GUARD_MS)
    names = {c["name"] for c in page.context.cookies()}
    assert "_xsrf" in names and any(n.startswith("username-") for n in names), names


def open_lab(page: Page, lab: LabServer, path: str = "lab") -> None:
    page.goto(f"{lab.url(path)}?reset")
    page.wait_for_function("() => !!window.jupyterapp", timeout=GUARD_MS * 2, polling=100)
    page.evaluate("async () => { await window.jupyterapp.restored; }")
    config = page.evaluate(
        "() => JSON.parse(document.getElementById('jupyter-config-data').textContent)"
    )
    assert not config.get("token"), "the page config carries a token"
    assert "token" not in page.url


def open_panel(page: Page, lab: LabServer, path: str = "lab"):
    open_lab(page, lab, path)
    page.locator(SIDEBAR_TAB).click()
    panel = page.locator(SIDEBAR)
    expect(panel).to_be_visible()
    return panel


def new_chat(panel, text: str):
    """Start a conversation with the echo agent; -> (chat root, conversation id)."""
    panel.locator('[data-testid="streamchat-new"]').click()
    root = panel.locator(ROOT)
    expect(root).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    root.locator(f'{AGENT} option[value="echo"]').wait_for(state="attached", timeout=GUARD_MS)
    root.locator(AGENT).select_option("echo")
    send(root, text)
    expect(last_reply(root)).to_be_visible(timeout=GUARD_MS)
    conversation_id = panel.page.evaluate(
        "() => document.querySelector('#streamchat-sidebar').dataset.openConversation"
    )
    return root, conversation_id


def assert_cookie_auth_only(seen: dict) -> None:
    """No chat request failed, none carried a token, and each REST call the XSRF header."""
    assert seen["requests"], "the page made no chat request"
    failed = [(status, url) for status, url in seen["responses"] if status >= 400]
    assert not failed, failed
    for method, url, headers in seen["requests"]:
        assert "token=" not in url, url
        assert "authorization" not in headers, (method, url)
        if "/streamchat/api/" in url:
            assert headers.get("x-xsrftoken"), (method, url, headers)
    assert seen["sockets"], "no chat socket was opened"
    assert all("token=" not in url for url in seen["sockets"]), seen["sockets"]


def test_side_panel_works_with_cookies_only(page, lab, requests_seen):
    login(page, lab)
    panel = open_panel(page, lab)
    # The list loaded: its empty note shows, no problem does.
    expect(panel.locator('[data-testid="streamchat-empty"]')).to_be_visible(timeout=GUARD_MS)
    expect(panel.locator('[data-testid="streamchat-list-problem"]')).to_be_hidden()

    text = "cookies " + words(30)
    root, conversation_id = new_chat(panel, text)
    agents = root.locator(f"{AGENT} option").evaluate_all("os => os.map(o => o.value)")
    assert {"demo", "echo"} <= set(agents), agents
    reply = last_reply(root)
    wait_status(reply, "complete")
    assert body_text(reply) == text

    panel.locator('[data-testid="streamchat-back"]').click()
    item = panel.locator(f'{ENTRY}[data-conversation-id="{conversation_id}"]')
    expect(item).to_be_visible(timeout=GUARD_MS)

    # Rename (a PATCH: refused without the XSRF header).
    item.hover()
    item.locator('[data-testid="streamchat-rename"]').click()
    dialog = page.locator(".jp-Dialog")
    dialog.locator("input").fill("Behind a password")
    dialog.locator(".jp-mod-accept").click()
    title = item.locator('[data-testid="streamchat-conversation-title"]')
    expect(title).to_have_text("Behind a password", timeout=GUARD_MS)
    listed = lab.api("GET", "streamchat/api/conversations")["conversations"]
    assert [c["title"] for c in listed if c["conversationId"] == conversation_id] == [
        "Behind a password"
    ]

    # Export (a download made from a REST answer).
    item.hover()
    with page.expect_download(timeout=GUARD_MS) as download_info:
        item.locator('[data-testid="streamchat-export"]').click()
    exported = Path(download_info.value.path()).read_text(encoding="utf-8")
    assert exported.startswith("# Behind a password"), exported[:200]
    assert exported.count("cookies w0000") == 2, exported  # the question and its echo

    # Delete (a DELETE: refused without the XSRF header).
    item.hover()
    item.locator('[data-testid="streamchat-delete"]').click()
    page.locator(".jp-Dialog .jp-mod-warn").click()
    expect(item).to_have_count(0, timeout=GUARD_MS)
    with pytest.raises(RuntimeError, match="404"):
        lab.api("GET", f"streamchat/api/conversations/{conversation_id}")

    methods = {method for method, url, _ in requests_seen["requests"] if "/api/" in url}
    assert {"GET", "PATCH", "DELETE"} <= methods, methods
    assert_cookie_auth_only(requests_seen)


def test_notebook_chat_works_with_cookies_only(page, lab, requests_seen):
    name = "cookie-chat.ipynb"
    lab.write_notebook(
        name, [WIDGET_CELL.format(agent="echo", extra=', conversation_id="c-cookie-nb"')]
    )
    login(page, lab)
    open_lab(page, lab, f"lab/tree/{urllib.parse.quote(name)}")
    jlab.wait_notebook_ready(page, name)
    jlab.execute_command(page, "notebook:run-cell")
    chat = output_chat(page, 0)
    expect(chat).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    text = words(25, "nb")
    send(chat, text)
    reply = last_reply(chat)
    wait_status(reply, "complete")
    assert body_text(reply) == text
    assert lab.api("GET", "streamchat/api/conversations/c-cookie-nb")["messages"][-1]["text"] == (
        text
    )
    assert_cookie_auth_only(requests_seen)


def test_plain_widget_view_works_with_cookies_only(browser, lab_env, tmp_path_factory):
    """Without the JupyterLab extension the notebook's chat is anywidget's view of the widget
    bundle, which reads the page itself (no @jupyterlab/* there): its REST probe must send
    the XSRF header, and its socket go out without a token, to stream through the server
    rather than fall back to the kernel."""
    with PasswordLab(
        ["--EchoAgent.delay=0.05"],
        env=lab_env,
        base_dir=tmp_path_factory.mktemp("pwplain"),
        disabled_plugins=["jupyter-streamchat"],
    ) as plain:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        try:
            page = context.new_page()
            sockets = []
            page.on("websocket", lambda ws: sockets.append(ws.url))
            name = "plain-cookie.ipynb"
            plain.write_notebook(
                name, [WIDGET_CELL.format(agent="echo", extra=', conversation_id="c-plain"')]
            )
            login(page, plain)
            open_lab(page, plain, f"lab/tree/{urllib.parse.quote(name)}")
            jlab.wait_notebook_ready(page, name)
            jlab.execute_command(page, "notebook:run-cell")
            root = page.locator(ROOT).first
            expect(root).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
            expect(page.locator(".jp-streamchat-Output")).to_have_count(0)  # not the renderer
            expect(root.locator(NOTE)).to_have_count(0)  # not through the kernel
            text = words(20, "plain")
            send(root, text)
            reply = last_reply(root)
            wait_status(reply, "complete")
            assert body_text(reply) == text
            chat_sockets = [url for url in sockets if "/streamchat/ws" in url]
            assert chat_sockets and all("token=" not in url for url in chat_sockets), sockets
            stored = plain.api("GET", "streamchat/api/conversations/c-plain")["messages"]
            assert stored[-1]["text"] == text
        except BaseException:
            print(f"--- jupyter lab log (tail) ---\n{plain.log_tail()}")
            raise
        finally:
            context.close()


# Counts the reply-finished notifications (JupyterLab's toasts) a page raises, including
# any that closed again already.
COUNT_NOTIFICATIONS = """() => {
  window.__notified = 0;
  const seen = new WeakSet();
  new MutationObserver(() => {
    for (const toast of document.querySelectorAll('.Toastify__toast')) {
      if (!seen.has(toast) && toast.textContent.includes('A reply finished')) {
        seen.add(toast);
        window.__notified++;
      }
    }
  }).observe(document.body, { subtree: true, childList: true, characterData: true });
}"""

# Web Locks exist only in secure contexts: a page served over plain HTTP from another host
# than localhost has none, and the tabs then settle the claim through local storage alone.
WITHOUT_WEB_LOCKS = (
    "Object.defineProperty(Navigator.prototype, 'locks', { get: () => undefined,"
    " configurable: true });"
)


@pytest.mark.parametrize("claim", ["web-locks", "storage-only"])
def test_one_notification_across_tabs(browser, lab, claim):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        if claim == "storage-only":
            context.add_init_script(WITHOUT_WEB_LOCKS)
        first = context.new_page()
        login(first, lab)
        second = context.new_page()
        # Its own workspace for each tab: JupyterLab moves a second tab on the same workspace
        # to another one, a navigation in the middle of loading.
        panels = [open_panel(first, lab), open_panel(second, lab, "lab/workspaces/second")]
        pages = [first, second]
        for tab in pages:
            assert tab.evaluate("() => !!navigator.locks") == (claim == "web-locks")
            tab.evaluate(COUNT_NOTIFICATIONS)
        # A reply long enough to be seen streaming in both tabs, and shown in neither when it
        # ends: the first tab goes back to its list at once, the second never opened it.
        _, conversation_id = new_chat(panels[0], words(60, claim[:4]))
        panels[0].locator('[data-testid="streamchat-back"]').click()
        items = [p.locator(f'{ENTRY}[data-conversation-id="{conversation_id}"]') for p in panels]
        for item in items:
            expect(item).to_have_attribute("data-streaming", "true", timeout=GUARD_MS)
        for item in items:
            # The reply ended unseen in each tab: each marks it unread...
            expect(item).to_have_attribute("data-unread", "true", timeout=GUARD_MS)
        # ...and one of them raises the notification.
        _wait_for_any_notification(pages)
        time.sleep(SECOND_NOTIFICATION_GRACE_S)
        counts = [tab.evaluate("() => window.__notified") for tab in pages]
        assert sum(counts) == 1, counts
        # The winner's toast is the usual one: its Open button shows the conversation.
        winner = pages[counts.index(1)]
        toast = winner.locator(".Toastify__toast", has_text="A reply finished")
        if toast.count():  # it may have closed already on a slow machine
            toast.get_by_role("button", name="Open").click()
            expect(winner.locator(f"{SIDEBAR} {ROOT}")).to_be_visible()
    finally:
        context.close()


def _wait_for_any_notification(pages) -> None:
    deadline = time.monotonic() + GUARD_MS / 1000
    while sum(tab.evaluate("() => window.__notified") for tab in pages) == 0:
        assert time.monotonic() < deadline, "no tab raised a notification"
        time.sleep(0.1)
