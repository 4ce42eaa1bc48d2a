"""The chat under a real JupyterHub, in Chromium: two users, each with a single-user server
that loads this extension, both on one store (a throwaway Postgres when the Postgres store is
installed, else each user's own SQLite file).

The browser logs in through the hub's login form. JupyterHub's single-user server puts the
user's OAuth token into the JupyterLab page it serves (``PageConfig.token``); the chat must work
with it and without it, so most pages here have it blanked before JupyterLab reads it, and the
chat's WebSocket and REST calls then authenticate by the login cookie alone. One user's
conversations never show to the other, in the panel, over REST, in search or over the socket;
a reply streaming in a tab survives a restart of that user's server, ending ``interrupted``
with the text it had.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from chat import AGENT, GUARD_MS, INPUT, MESSAGE, ROOT, body_text, last_reply, wait_status, words
from hubprocess import JupyterHubProcess, find_chp

pytestmark = pytest.mark.browser

USERS = ("alice", "bob")
SIDEBAR = '[data-testid="streamchat-sidebar"]'
SIDEBAR_TAB = '[data-id="streamchat-sidebar"]'
ENTRY = '[data-testid="streamchat-conversation"]'
ARTIFACTS = Path(__file__).parent / "artifacts"
LOAD_GUARD_MS = 90_000  # a single-user JupyterLab's first load through the proxy, under load


def _postgres_store_installed() -> bool:
    try:
        import jupyter_streamchat.store.postgres  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def store_url(request):
    """One Postgres database for every user's server when the Postgres store is installed;
    else "" (each server keeps its own SQLite file, which isolates users trivially)."""
    if not _postgres_store_installed():
        yield ""
        return
    cluster = request.getfixturevalue("pg_cluster")
    cluster.start()
    url = cluster.create_database()
    yield url
    cluster.start()
    cluster.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(scope="module")
def hub(store_url, tmp_path_factory):
    if find_chp() is None:
        message = (
            "configurable-http-proxy is not installed: scripts/test.sh installs it "
            "(npm install --prefix .venv/chp configurable-http-proxy@5), or set STREAMCHAT_CHP"
        )
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    process = JupyterHubProcess(
        tmp_path_factory.mktemp("hub"),
        USERS,
        store_url=store_url,
        server_args=["--EchoAgent.delay=0.05"],
    )
    with process:
        process.start_servers(*USERS)
        yield process


def log_in(context: BrowserContext, hub: JupyterHubProcess, user: str) -> None:
    """Log in with the hub's form; the context then holds the hub's cookie, nothing else."""
    page = context.new_page()
    try:
        page.goto(hub.url("hub/login"), timeout=LOAD_GUARD_MS)
        page.fill("#username_input", user)
        page.fill("#password_input", hub.password)
        page.click("#login_submit")
        page.wait_for_url(lambda url: "/hub/login" not in url, timeout=LOAD_GUARD_MS)
    finally:
        page.close()


@pytest.fixture(scope="module")
def contexts(browser, hub):
    """A logged-in browser context per user (one login each for the whole module)."""
    made = {}
    try:
        for user in USERS:
            made[user] = browser.new_context(viewport={"width": 1280, "height": 900})
            log_in(made[user], hub, user)
        yield made
    finally:
        for context in made.values():
            context.close()


@pytest.fixture
def pages(contexts, hub, request):
    """``pages(user)`` -> a new tab in that user's context, with no token in its page
    (``cookie_only=False``: the page as the hub serves it); screenshots if the test fails."""
    opened = []

    def open_page(user: str, cookie_only: bool = True) -> Page:
        page = contexts[user].new_page()
        if cookie_only:
            strip_page_token(page)
        opened.append((user, page))
        return page

    yield open_page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        for index, (user, page) in enumerate(opened):
            name = re.sub(r"[^\w.-]+", "_", f"{request.node.name}-{user}-{index}")
            try:
                page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
                print(f"screenshot: {ARTIFACTS / f'{name}.png'}")
            except Exception as exc:  # the page may be gone; the log below still helps
                print(f"no screenshot: {exc}")
        print(f"--- jupyterhub log (tail) ---\n{hub.log_tail()}")
    for _, page in opened:
        page.close()


# -- driving the panel -----------------------------------------------------------------------

# Runs in the page before any of its scripts: once the HTML is parsed (readyState
# "interactive"), and before JupyterLab's deferred bundle reads PageConfig, the token is blanked.
# (Rewriting the response in a Playwright route instead would make Chromium treat the page as
# not local, and block its sockets to loopback.)
_BLANK_TOKEN_JS = """
document.addEventListener('readystatechange', () => {
  const data = document.getElementById('jupyter-config-data');
  if (document.readyState !== 'interactive' || !data) return;
  const config = JSON.parse(data.textContent);
  config.token = '';
  data.textContent = JSON.stringify(config);
});
"""


def strip_page_token(page: Page) -> None:
    """Give this tab JupyterLab's page with an empty ``PageConfig.token``, as a single-user
    server that keeps its token to itself would: JupyterLab and the chat then have only the
    browser's cookies."""
    page.add_init_script(_BLANK_TOKEN_JS)


def page_token(page: Page) -> str:
    return page.evaluate(
        "() => JSON.parse(document.getElementById('jupyter-config-data').textContent).token"
    )


def open_panel(page: Page, hub: JupyterHubProcess, user: str):
    """JupyterLab of ``user`` through the hub (an empty workspace), its chat panel open."""
    page.goto(hub.user_url(user, "lab?reset"), timeout=LOAD_GUARD_MS)
    expect(page.locator(SIDEBAR_TAB)).to_be_visible(timeout=LOAD_GUARD_MS)
    page.locator(SIDEBAR_TAB).click()
    panel = page.locator(SIDEBAR)
    expect(panel).to_be_visible(timeout=GUARD_MS)
    return panel


def new_chat(panel, text: str):
    """Start a conversation with the echo agent; -> (chat root, conversation id)."""
    panel.locator('[data-testid="streamchat-new"]').click()
    root = panel.locator(ROOT)
    expect(root).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    root.locator(AGENT).select_option("echo")
    box = root.locator(INPUT)
    box.fill(text)
    box.press("Enter")
    expect(last_reply(root)).to_be_visible(timeout=GUARD_MS)
    conversation_id = panel.page.evaluate(
        "() => document.querySelector('#streamchat-sidebar').dataset.openConversation"
    )
    assert conversation_id
    return root, conversation_id


def back_to_list(panel) -> None:
    panel.locator('[data-testid="streamchat-back"]').click()


def entry(panel, conversation_id: str):
    return panel.locator(f'{ENTRY}[data-conversation-id="{conversation_id}"]')


def listed_ids(panel) -> list:
    return panel.locator(ENTRY).evaluate_all("els => els.map(e => e.dataset.conversationId)")


def page_get(page: Page, hub: JupyterHubProcess, user: str, path: str):
    """GET on ``user``'s server with the page's cookies only -> (status, parsed JSON)."""
    response = page.request.get(hub.user_url(user, path), timeout=GUARD_MS)
    try:
        body = response.json()
    except Exception:
        body = response.text()
    return response.status, body


# One socket from the page (cookie-authenticated, same origin): SUBSCRIBE, answer the first
# HISTORY or ERROR frame.
_SUBSCRIBE_JS = """
([url, conversationId, guard]) => new Promise((resolve, reject) => {
  const ws = new WebSocket(url);
  const timer = setTimeout(() => { ws.close(); reject(new Error('no HISTORY')); }, guard);
  ws.onopen = () => ws.send(JSON.stringify({type: 'SUBSCRIBE', conversationId}));
  ws.onmessage = (event) => {
    const frame = JSON.parse(event.data);
    if (frame.type === 'HISTORY' || frame.type === 'ERROR') {
      clearTimeout(timer);
      ws.close();
      resolve(frame);
    }
  };
  ws.onerror = () => { clearTimeout(timer); reject(new Error('socket refused')); };
})
"""


def subscribe(page: Page, hub: JupyterHubProcess, user: str, conversation_id: str) -> dict:
    url = hub.user_url(user, "streamchat/ws").replace("http://", "ws://", 1)
    return page.evaluate(_SUBSCRIBE_JS, [url, conversation_id, GUARD_MS])


def stored(hub: JupyterHubProcess, user: str, conversation_id: str) -> list:
    return hub.server_api(user, "GET", f"streamchat/api/conversations/{conversation_id}")[
        "messages"
    ]


# -- tests -----------------------------------------------------------------------------------


def test_page_through_the_hub_chats_with_cookies_only(pages, hub):
    page = pages("alice")
    requests, sockets = [], []
    page.on("request", lambda request: requests.append(request))
    page.on("websocket", lambda socket: sockets.append(socket.url))
    panel = open_panel(page, hub, "alice")
    assert page_token(page) == ""
    root, conversation_id = new_chat(panel, "hello through the hub")
    reply = last_reply(root)
    wait_status(reply, "complete")
    assert body_text(reply) == "hello through the hub"
    assert stored(hub, "alice", conversation_id)[-1]["text"] == "hello through the hub"
    assert any(url.endswith("/user/alice/streamchat/ws") for url in sockets), sockets
    chat_calls = [r for r in requests if "/streamchat/api/" in r.url]
    assert chat_calls, "the panel made no REST call"
    # Nothing but the cookies authenticates the page's calls.
    assert not [r.url for r in chat_calls if r.headers.get("authorization")]
    urls = [r.url for r in requests] + sockets
    assert not [url for url in urls if re.search(r"[?&]token=", url, re.I)], urls


def test_page_with_the_hubs_token_chats_and_keeps_it_out_of_urls(pages, hub):
    """As JupyterHub serves it: the page holds the user's OAuth token; JupyterLab and the chat
    send it in headers, never in a URL (a socket to the same host needs none)."""
    page = pages("bob", cookie_only=False)
    sockets = []
    page.on("websocket", lambda socket: sockets.append(socket.url))
    panel = open_panel(page, hub, "bob")
    root, _ = new_chat(panel, "hello with the hub's token")
    wait_status(last_reply(root), "complete")
    assert body_text(last_reply(root)) == "hello with the hub's token"
    assert any(url.endswith("/user/bob/streamchat/ws") for url in sockets), sockets
    token = page_token(page)
    assert not [url for url in sockets if "token=" in url or (token and token in url)], sockets


def test_rename_export_and_delete_as_one_user(pages, hub):
    page = pages("alice")
    panel = open_panel(page, hub, "alice")
    text = "to keep, rename, export and delete\n\n```python\nprint('hi')\n```"
    root, conversation_id = new_chat(panel, text)
    wait_status(last_reply(root), "complete")
    back_to_list(panel)
    item = entry(panel, conversation_id)
    expect(item).to_be_visible(timeout=GUARD_MS)

    item.hover()
    item.locator('[data-testid="streamchat-rename"]').click()
    dialog = page.locator(".jp-Dialog")
    dialog.locator("input").fill("Renamed under the hub")
    dialog.locator(".jp-mod-accept").click()
    title = item.locator('[data-testid="streamchat-conversation-title"]')
    expect(title).to_have_text("Renamed under the hub", timeout=GUARD_MS)
    listed = hub.server_api("alice", "GET", "streamchat/api/conversations")["conversations"]
    assert {c["conversationId"]: c["title"] for c in listed}[conversation_id] == (
        "Renamed under the hub"
    )

    item.hover()
    with page.expect_download(timeout=GUARD_MS) as download_info:
        item.locator('[data-testid="streamchat-export"]').click()
    download = download_info.value
    assert download.suggested_filename.endswith(".md")
    content = Path(download.path()).read_text(encoding="utf-8")
    assert content.startswith("# Renamed under the hub"), content[:200]
    assert content.count("```python\nprint('hi')\n```") == 2, content  # question and echo

    item.hover()
    item.locator('[data-testid="streamchat-delete"]').click()
    page.locator(".jp-Dialog .jp-mod-warn").click()
    expect(item).to_have_count(0, timeout=GUARD_MS)
    with pytest.raises(RuntimeError, match="404"):
        stored(hub, "alice", conversation_id)


def owners_in_store(store_url: str, *conversation_ids: str) -> dict:
    """conversation id -> its user, read from the shared Postgres database itself."""
    import psycopg

    with psycopg.connect(store_url) as conn:
        rows = conn.execute(
            "SELECT id, user_id FROM conversations WHERE id = ANY(%s)", [list(conversation_ids)]
        ).fetchall()
    return dict(rows)


def test_another_user_never_sees_the_conversation(pages, hub, store_url):
    secret = f"zebra{uuid.uuid4().hex[:8]}"
    alice = pages("alice")
    alice_panel = open_panel(alice, hub, "alice")
    root, conversation_id = new_chat(alice_panel, f"alice only {secret}")
    wait_status(last_reply(root), "complete")
    # Alice herself finds it, by the list and by search.
    status, found = page_get(alice, hub, "alice", f"streamchat/api/conversations?q={secret}")
    assert status == 200 and [c["conversationId"] for c in found["conversations"]] == [
        conversation_id
    ], found

    bob = pages("bob")
    bob_panel = open_panel(bob, hub, "bob")
    _, own_id = new_chat(bob_panel, "bob's own chat")
    back_to_list(bob_panel)
    expect(entry(bob_panel, own_id)).to_be_visible(timeout=GUARD_MS)
    assert conversation_id not in listed_ids(bob_panel)
    search = bob_panel.locator('[data-testid="streamchat-search"]')
    search.fill(secret)
    expect(bob_panel.locator('[data-testid="streamchat-empty"]')).to_be_visible(timeout=GUARD_MS)
    expect(bob_panel.locator(ENTRY)).to_have_count(0)

    # Bob's REST calls, with his cookies, on his own server.
    status, listing = page_get(bob, hub, "bob", "streamchat/api/conversations?limit=500")
    assert status == 200, listing
    assert conversation_id not in [c["conversationId"] for c in listing["conversations"]]
    status, found = page_get(bob, hub, "bob", f"streamchat/api/conversations?q={secret}")
    assert status == 200 and found["conversations"] == [], found
    for path in (f"conversations/{conversation_id}", f"conversations/{conversation_id}/export"):
        status, body = page_get(bob, hub, "bob", f"streamchat/api/{path}")
        assert status == 404, (path, status, body)
    # Bob's socket may subscribe to any id, and learns nothing of Alice's conversation.
    frame = subscribe(bob, hub, "bob", conversation_id)
    assert frame == {**frame, "type": "HISTORY", "messages": []}, frame
    # And Bob's cookies do not open Alice's server.
    status, _ = page_get(bob, hub, "alice", "streamchat/api/conversations")
    assert status in (302, 403), status
    assert stored(hub, "alice", conversation_id)[0]["text"] == f"alice only {secret}"
    if store_url:  # and both conversations are in the one database the two servers share
        owners = owners_in_store(store_url, conversation_id, own_id)
        assert owners == {conversation_id: "alice", own_id: "bob"}, owners


def test_streaming_reply_survives_a_restart_of_the_users_server(pages, hub):
    page = pages("alice")
    panel = open_panel(page, hub, "alice")
    text = words(1000, "r")  # a minute of echo at 0.05 s a token: still streaming below
    root, conversation_id = new_chat(panel, text)
    reply = last_reply(root)
    wait_status(reply, "streaming")
    expect(reply.locator(".streamchat-body")).to_contain_text("r0010", timeout=GUARD_MS)

    hub.stop_server("alice")
    expect(root).not_to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    seen = body_text(reply)
    assert seen and text.startswith(seen), seen
    hub.start_server("alice")

    # The restarted server makes a new cookie secret: the hub signs the browser in again when
    # a page of that server is loaded. The streaming tab itself is not reloaded.
    other = pages("alice")
    other.goto(hub.user_url("alice", "lab"), timeout=LOAD_GUARD_MS)
    expect(other.locator(SIDEBAR_TAB)).to_be_visible(timeout=LOAD_GUARD_MS)
    other.close()

    expect(root).to_have_attribute("data-connection", "connected", timeout=GUARD_MS * 2)
    wait_status(reply, "interrupted")
    kept = stored(hub, "alice", conversation_id)[-1]
    assert kept["status"] == "interrupted"
    assert len(kept["text"]) >= len(seen) and text.startswith(kept["text"]), kept
    assert body_text(reply) == " ".join(kept["text"].split())
    assert root.locator(MESSAGE).count() == 2
