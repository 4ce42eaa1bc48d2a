"""The JupyterLab "Chat" side panel, in Chromium against a real ``jupyter lab``.

Everything goes through the DOM hooks of DESIGN.md: the panel (`streamchat-sidebar`, its tab
`[data-id="streamchat-sidebar"]`), `streamchat-new`, `streamchat-search`, and
`streamchat-conversation` entries with `data-conversation-id`; the chat view inside it has the
same hooks as the notebook widget. The server's store is seeded with more conversations than
one page of the list holds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

import jlab
from chat import (
    AGENT,
    GUARD_MS,
    INPUT,
    MESSAGE,
    ROOT,
    body_text,
    last_reply,
    open_chat,
    send,
    stored,
    wait_status,
    words,
)
from server_process import isolated_env

pytestmark = pytest.mark.browser

SIDEBAR = '[data-testid="streamchat-sidebar"]'
SIDEBAR_TAB = '[data-id="streamchat-sidebar"]'
ENTRY = '[data-testid="streamchat-conversation"]'
SEEDED = 120  # more than a page (50)
ARTIFACTS = Path(__file__).parent / "artifacts"


def _seed(path: Path, count: int) -> None:
    """``count`` finished conversations, the last one the most recent."""
    from jupyter_streamchat.store import Append, SQLiteStore

    async def seed():
        store = SQLiteStore(path=str(path))
        await store.open()
        for i in range(count):
            exchange = await store.create_exchange(
                f"seed-{i:03d}", "echo", f"seeded question {i:03d}", f"m-seed-{i}"
            )
            await store.append(
                Append(exchange.message_id, 1, [f"seeded answer {i:03d}"], status="complete")
            )
        await store.close()

    # In a thread of its own: Playwright's sync API may already run an event loop here.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, seed()).result()


@pytest.fixture(scope="module")
def lab_args(tmp_path_factory) -> list:
    db = tmp_path_factory.mktemp("store") / "chat.db"
    _seed(db, SEEDED)
    return ["--EchoAgent.delay=0.05", f"--SQLiteStore.path={db}"]


def open_lab(page: Page, lab) -> None:
    page.goto(f"{lab.url('lab')}?reset&token={lab.token}")
    expect(page.locator(SIDEBAR_TAB)).to_be_visible(timeout=GUARD_MS * 2)


def open_panel(page: Page, lab):
    open_lab(page, lab)
    page.locator(SIDEBAR_TAB).click()
    panel = page.locator(SIDEBAR)
    expect(panel).to_be_visible()
    expect(panel.locator(ENTRY).first).to_be_visible(timeout=GUARD_MS)
    return panel


def entry(panel, conversation_id: str):
    return panel.locator(f'{ENTRY}[data-conversation-id="{conversation_id}"]')


def new_chat(panel, text: str, agent: str = "echo"):
    """Start a conversation from the panel; -> (chat root, its conversation id)."""
    panel.locator('[data-testid="streamchat-new"]').click()
    root = panel.locator(ROOT)
    expect(root).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    root.locator(AGENT).select_option(agent)
    box = root.locator(INPUT)
    box.fill(text)
    box.press("Enter")
    reply = last_reply(root)
    expect(reply).to_be_visible(timeout=GUARD_MS)
    conversation_id = panel.page.evaluate(
        "() => document.querySelector('#streamchat-sidebar').dataset.openConversation"
    )
    return root, conversation_id


def back_to_list(panel) -> None:
    panel.locator('[data-testid="streamchat-back"]').click()


def test_extension_is_prebuilt_and_enabled(lab):
    """Installed with the package: listed OK, with no JupyterLab build."""
    env = isolated_env(lab.base)
    listing = subprocess.run(
        [sys.executable, "-m", "jupyter", "labextension", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    text = listing.stdout + listing.stderr
    # The extension's own line, "jupyter-streamchat v0.1.0 enabled OK (python, ...)", not the
    # first line naming it: a folder line does too when the checkout is called jupyter-streamchat.
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)  # colours, where the listing has them
    words = next(
        (l.split() for l in plain.splitlines() if re.match(r"\s*jupyter-streamchat v\d", l)), []
    )
    assert words[2:4] == ["enabled", "OK"], text


def test_panel_lists_conversations_most_recent_first_and_pages(page, lab):
    panel = open_panel(page, lab)
    entries = panel.locator(ENTRY)
    expect(entries).to_have_count(50, timeout=GUARD_MS)  # one page of the server's list
    first = entries.first
    expect(first).to_have_attribute("data-conversation-id", f"seed-{SEEDED - 1:03d}")
    expect(first.locator('[data-testid="streamchat-conversation-title"]')).to_have_text(
        f"seeded question {SEEDED - 1:03d}"
    )
    expect(first.locator('[data-testid="streamchat-conversation-agent"]')).to_have_text("echo")
    expect(first.locator('[data-testid="streamchat-conversation-time"]')).not_to_be_empty()
    # Scrolling to the end of the list loads the next pages.
    for count in (100, SEEDED):
        entries.last.scroll_into_view_if_needed()
        expect(entries).to_have_count(count, timeout=GUARD_MS)
    ids = entries.evaluate_all("els => els.map(e => e.dataset.conversationId)")
    assert ids == [f"seed-{i:03d}" for i in reversed(range(SEEDED))]


def test_new_chat_streams_with_live_marker_and_moves_to_top(page, lab):
    panel = open_panel(page, lab)
    text = "sidebar " + words(60)
    root, conversation_id = new_chat(panel, text)
    back_to_list(panel)
    item = entry(panel, conversation_id)
    expect(item).to_have_attribute("data-streaming", "true", timeout=GUARD_MS)
    expect(item.locator('[data-testid="streamchat-live"]')).to_be_visible()
    expect(panel.locator(ENTRY).first).to_have_attribute("data-conversation-id", conversation_id)
    expect(item.locator('[data-testid="streamchat-conversation-title"]')).to_contain_text(
        "sidebar w0000"
    )
    expect(item).to_have_attribute("data-streaming", "false", timeout=GUARD_MS)
    expect(item.locator('[data-testid="streamchat-live"]')).to_have_count(0)
    assert stored(lab, conversation_id)[-1]["text"] == text


def test_other_tab_sees_new_rename_and_delete(page, lab, browser):
    """Changes made in one browser tab show in another tab's panel without a reload."""
    panel = open_panel(page, lab)
    other = page.context.new_page()
    try:
        other_panel = open_panel(other, lab)
        _, conversation_id = new_chat(other_panel, "from the other tab")
        item = entry(panel, conversation_id)
        expect(item).to_be_visible(timeout=GUARD_MS)
        expect(panel.locator(ENTRY).first).to_have_attribute(
            "data-conversation-id", conversation_id
        )
        back_to_list(other_panel)
        # Rename in the other tab: a dialog, like JupyterLab's own.
        other_item = entry(other_panel, conversation_id)
        other_item.hover()
        other_item.locator('[data-testid="streamchat-rename"]').click()
        dialog = other.locator(".jp-Dialog")
        dialog.locator("input").fill("Renamed elsewhere")
        dialog.locator(".jp-mod-accept").click()
        title = item.locator('[data-testid="streamchat-conversation-title"]')
        expect(title).to_have_text("Renamed elsewhere", timeout=GUARD_MS)
        # Delete in the other tab, confirming.
        other_item.hover()
        other_item.locator('[data-testid="streamchat-delete"]').click()
        other.locator(".jp-Dialog .jp-mod-warn").click()
        expect(item).to_have_count(0, timeout=GUARD_MS)
        expect(other_item).to_have_count(0)
        with pytest.raises(RuntimeError, match="404"):
            stored(lab, conversation_id)
    finally:
        other.close()


def test_delete_asks_first_and_cancel_keeps_it(page, lab):
    panel = open_panel(page, lab)
    item = entry(panel, "seed-100")
    item.scroll_into_view_if_needed()
    item.hover()
    item.locator('[data-testid="streamchat-delete"]').click()
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_contain_text("seeded question 100")
    dialog.locator(".jp-mod-reject").click()
    expect(dialog).to_have_count(0)
    expect(item).to_be_visible()
    assert stored(lab, "seed-100")[0]["text"] == "seeded question 100"


def test_search_finds_by_message_text_on_the_server(page, lab):
    panel = open_panel(page, lab)
    search = panel.locator('[data-testid="streamchat-search"]')
    search.fill("seeded answer 007")  # in a reply, on a conversation far down the list
    entries = panel.locator(ENTRY)
    expect(entries).to_have_count(1, timeout=GUARD_MS)
    expect(entries.first).to_have_attribute("data-conversation-id", "seed-007")
    search.fill("no conversation says this")
    expect(entries).to_have_count(0, timeout=GUARD_MS)
    expect(panel.locator('[data-testid="streamchat-empty"]')).to_be_visible()
    search.fill("")
    expect(entries).to_have_count(50, timeout=GUARD_MS)


def test_export_downloads_the_whole_conversation_as_markdown(page, lab):
    panel = open_panel(page, lab)
    text = "Here is code:\n\n```python\nprint('hi')\n```\n\ndone"
    _, conversation_id = new_chat(panel, text)
    wait_status(last_reply(panel.locator(ROOT)), "complete")
    back_to_list(panel)
    item = entry(panel, conversation_id)
    item.hover()
    with page.expect_download(timeout=GUARD_MS) as download_info:
        item.locator('[data-testid="streamchat-export"]').click()
    download = download_info.value
    assert download.suggested_filename.endswith(".md")
    content = Path(download.path()).read_text(encoding="utf-8")
    assert content.count("```python\nprint('hi')\n```") == 2, content  # question and echo
    assert content.startswith("# "), content


def test_opening_a_conversation_shows_its_history(page, lab):
    panel = open_panel(page, lab)
    entry(panel, "seed-119").click()
    root = panel.locator(ROOT)
    messages = root.locator(MESSAGE)
    expect(messages).to_have_count(2, timeout=GUARD_MS)
    assert body_text(messages.last) == "seeded answer 119"
    expect(root.locator(INPUT)).to_be_focused()


def test_notebook_panel_and_tab_stream_one_conversation_together(page, lab):
    """The same conversation open in a notebook widget, in the panel and in a main-area tab
    streams in all three at once."""
    open_chat(page, lab, "together.ipynb", conversation_id="c-together")
    notebook_chat = page.locator(f".jp-NotebookPanel {ROOT}")
    send(notebook_chat, "warm up")
    wait_status(last_reply(notebook_chat), "complete")
    page.locator(SIDEBAR_TAB).click()
    panel = page.locator(SIDEBAR)
    entry(panel, "c-together").click()
    expect(panel.locator(ROOT)).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    panel.locator('[data-testid="streamchat-chat-open-tab"]').click()
    tab = page.locator(".jp-streamchat-Tab:visible")
    expect(tab.locator(ROOT)).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    # Record the length of the reply each view shows, at every change, while the next streams.
    page.evaluate("""() => {
      window.__seen = {notebook: [], panel: [], tab: []};
      const watch = (name, root) => new MutationObserver(() => {
        const replies = root.querySelectorAll('[data-testid="streamchat-message"][data-role="assistant"]');
        const last = replies[replies.length - 1];
        if (last) window.__seen[name].push(last.querySelector('.streamchat-body').textContent.length);
      }).observe(root, {subtree: true, childList: true, characterData: true});
      watch('notebook', document.querySelector('.jp-NotebookPanel [data-testid="streamchat"]'));
      watch('panel', document.querySelector('#streamchat-sidebar [data-testid="streamchat"]'));
      watch('tab', document.querySelector('.jp-streamchat-Tab [data-testid="streamchat"]'));
    }""")
    text = words(80, "all")
    send(panel.locator(ROOT), text)
    for root in (notebook_chat, panel.locator(ROOT), tab.locator(ROOT)):
        reply = last_reply(root)
        expect(reply.locator(".streamchat-body")).to_contain_text("all0000", timeout=GUARD_MS)
        wait_status(reply, "complete")
        assert body_text(reply) == text
    assert stored(lab, "c-together")[-1]["text"] == text
    seen = page.evaluate("() => window.__seen")
    # Each grew step by step while it streamed, not all at once at the end.
    assert all(len(set(lengths)) > 3 for lengths in seen.values()), seen


def test_unread_mark_and_notification_when_reply_ends_unseen(page, lab):
    panel = open_panel(page, lab)
    _, conversation_id = new_chat(panel, words(40, "later"))
    back_to_list(panel)  # the chat is no longer visible while its reply streams
    item = entry(panel, conversation_id)
    expect(item).to_have_attribute("data-unread", "true", timeout=GUARD_MS)
    toast = page.locator(".Toastify__toast", has_text="A reply finished")
    expect(toast).to_be_visible(timeout=GUARD_MS)
    toast.get_by_role("button", name="Open").click()
    root = panel.locator(ROOT)
    expect(root).to_be_visible()
    expect(item).to_have_attribute("data-unread", "false")
    assert body_text(last_reply(root)) == words(40, "later")


def test_commands_in_palette_and_shortcut_focuses_input(page, lab):
    open_lab(page, lab)
    labels = page.evaluate("""() => {
      const c = window.jupyterapp.commands;
      return ['streamchat:open-panel', 'streamchat:new-chat', 'streamchat:new-chat-in-tab',
              'streamchat:focus-input', 'streamchat:search'].map(id => c.hasCommand(id) && c.label(id));
    }""")
    assert all(labels), labels
    page.keyboard.press("Control+Shift+C")
    palette = page.locator(".lm-CommandPalette:visible input")
    palette.fill("New Chat")
    expect(
        page.locator(".lm-CommandPalette-item:visible", has_text="New Chat").first
    ).to_be_visible()
    page.keyboard.press("Escape")
    page.locator(".jp-NotebookPanel, .jp-Launcher").first.click()
    page.keyboard.press("Control+Shift+;")
    expect(page.locator(f"{SIDEBAR} {INPUT}")).to_be_focused(timeout=GUARD_MS)


def test_list_and_chat_work_from_the_keyboard(page, lab):
    panel = open_panel(page, lab)
    search = panel.locator('[data-testid="streamchat-search"]')
    search.focus()
    page.keyboard.press("ArrowDown")
    first = panel.locator(ENTRY).first
    expect(first).to_be_focused()
    page.keyboard.press("ArrowDown")
    second = panel.locator(ENTRY).nth(1)
    expect(second).to_be_focused()
    wanted = second.get_attribute("data-conversation-id")
    page.keyboard.press("Enter")
    root = panel.locator(ROOT)
    expect(root.locator(INPUT)).to_be_focused(timeout=GUARD_MS)
    assert stored(lab, wanted)[0]["text"] in body_text(root.locator(MESSAGE).first)
    for button in panel.locator("button").all():
        if button.is_visible():
            assert button.get_attribute("aria-label") or button.inner_text().strip()


# WCAG contrast of an element's text against the first opaque background behind it.
_CONTRAST_JS = """
(el) => {
  const rgb = c => c.match(/[\\d.]+/g).map(Number);
  const lum = c => {
    const [r, g, b] = rgb(c).slice(0, 3).map(v => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  let bg = null;
  for (let node = el; node && !bg; node = node.parentElement) {
    const c = getComputedStyle(node).backgroundColor;
    if (rgb(c).length < 4 || rgb(c)[3] > 0) bg = c;
  }
  const [a, b] = [lum(getComputedStyle(el).color), lum(bg || 'rgb(255, 255, 255)')];
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}
"""


def test_reads_well_in_light_and_dark_themes(page, lab):
    """Titles and times contrast with the panel in both themes (screenshots saved)."""
    panel = open_panel(page, lab)
    ARTIFACTS.mkdir(exist_ok=True)
    first = panel.locator(ENTRY).first
    for theme, light in (("JupyterLab Dark", "false"), ("JupyterLab Light", "true")):
        jlab.execute_command(page, "apputils:change-theme", {"theme": theme})
        expect(page.locator(f"body[data-jp-theme-light='{light}']")).to_have_count(
            1, timeout=GUARD_MS
        )
        # The theme's stylesheet applies after the attribute changes: wait for the panel.
        page.wait_for_function(
            """(light) => {
                 const c = getComputedStyle(document.getElementById('streamchat-sidebar'))
                   .backgroundColor.match(/[\\d.]+/g).map(Number);
                 return (c[0] + c[1] + c[2] > 382) === light;
               }""",
            arg=light == "true",
            timeout=GUARD_MS,
        )
        for part, least in (
            ("streamchat-conversation-title", 4.5),
            ("streamchat-conversation-time", 3.0),
        ):
            ratio = first.locator(f'[data-testid="{part}"]').evaluate(_CONTRAST_JS)
            assert ratio >= least, (theme, part, ratio)
        name = "dark" if light == "false" else "light"
        page.screenshot(path=str(ARTIFACTS / f"sidebar-{name}.png"))
