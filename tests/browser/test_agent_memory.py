"""A conversation opens with the agent it last used (issue 14), in a real JupyterLab.

The user picks another agent than the one the cell was created with (``ChatWidget(agent=
"demo")``), chats, then reloads the page or restarts the server: the picker (`streamchat-agent`,
a ``<select>`` of agent ids) shows the agent the conversation last used, in the notebook, the
Chat panel and a restored main-area tab alike, so the next message goes where the last one
went. Where Python asks for another agent than the conversation last used, that agent answers
and the view says so beside the picker (`streamchat-agent-note`).
"""

from __future__ import annotations

import json
import time
import urllib.parse

import pytest
from playwright.sync_api import Page, expect

import jlab
from chat import (
    AGENT,
    GUARD_MS,
    INPUT,
    ROOT,
    last_reply,
    open_chat,
    output_chat,
    quick_chat,
    replies,
    run_code,
    send,
    stored,
    wait_status,
)
from labserver import LabServer

pytestmark = pytest.mark.browser

NOTE = '[data-testid="streamchat-agent-note"]'
SIDEBAR = '[data-testid="streamchat-sidebar"]'
SIDEBAR_TAB = '[data-id="streamchat-sidebar"]'
ENTRY = '[data-testid="streamchat-conversation"]'
TAB = ".jp-streamchat-Tab"
ARGS = ["--EchoAgent.delay=0.02", "--DemoAgent.delay=0.002"]


@pytest.fixture(scope="module")
def lab_args() -> list:
    return ARGS


def _chat_with(root, agent: str, text: str) -> None:
    """Pick ``agent`` in the view and send ``text``; returns once the reply is complete."""
    root.locator(AGENT).select_option(agent)
    expect(root.locator(AGENT)).to_have_value(agent)
    send(root, text)
    wait_status(last_reply(root), "complete")


def _agents_used(lab, conversation_id: str) -> list:
    return [m["agentId"] for m in stored(lab, conversation_id)]


def _sends_to(lab, root, conversation_id: str, agent: str, text: str) -> None:
    """The next message typed in ``root`` goes to ``agent`` (and ``agent`` answers it)."""
    count = replies(root).count()
    send(root, text)
    expect(replies(root)).to_have_count(count + 1, timeout=GUARD_MS)
    wait_status(last_reply(root), "complete")
    messages = stored(lab, conversation_id)
    assert [m["role"] for m in messages[-2:]] == ["user", "assistant"]
    assert messages[-2]["text"] == text
    assert [m["agentId"] for m in messages[-2:]] == [agent, agent]


def test_notebook_chat_keeps_the_picked_agent_after_a_reload(page, lab):
    name, conversation = "memory-reload.ipynb", "c-memory-reload"
    chat = open_chat(page, lab, name, agent="demo", conversation_id=conversation)
    chat = output_chat(page, 0)
    expect(chat.locator(AGENT)).to_have_value("demo")
    jlab.save(page)  # the output says demo, as the cell was created
    _chat_with(chat, "echo", "with echo now")
    assert _agents_used(lab, conversation) == ["echo", "echo"]

    page.reload()  # same kernel; the saved output still says demo
    jlab.wait_notebook_ready(page, name)
    chat = output_chat(page, 0)
    expect(chat).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    expect(chat.locator(AGENT)).to_have_value("echo", timeout=GUARD_MS)
    expect(chat.locator(NOTE)).to_be_hidden()
    _sends_to(lab, chat, conversation, "echo", "still echo")

    # Without the kernel's widget model (its kernel restarted, the cell not re-run), the saved
    # output alone says demo: the conversation's own last agent wins.
    lab.restart_kernel(lab.kernel_for(name)["id"])
    jlab.wait_notebook_ready(page, name)
    page.reload()
    jlab.wait_notebook_ready(page, name)
    chat = output_chat(page, 0)
    expect(chat).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    expect(chat.locator(AGENT)).to_have_value("echo", timeout=GUARD_MS)
    expect(chat.locator(NOTE)).to_be_hidden()
    _sends_to(lab, chat, conversation, "echo", "echo once more")


def test_notebook_chat_keeps_the_picked_agent_after_a_server_restart(browser, tmp_path):
    base, name, conversation = tmp_path / "lab", "memory-restart.ipynb", "c-memory-restart"
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    first = LabServer(ARGS, base_dir=base).start()
    try:
        open_chat(page, first, name, agent="demo", conversation_id=conversation)
        jlab.save(page)
        _chat_with(output_chat(page, 0), "echo", "with echo before the restart")
    finally:
        first.stop()

    second = LabServer(ARGS, base_dir=base, port=first.port, token=first.token).start()
    try:
        jlab.open_notebook(page, second, name)  # a fresh page load and kernel; no cell is run
        chat = output_chat(page, 0)
        expect(chat).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
        expect(chat.locator(AGENT)).to_have_value("echo", timeout=GUARD_MS)
        expect(chat.locator(NOTE)).to_be_hidden()
        _sends_to(second, chat, conversation, "echo", "echo after the restart")
    finally:
        second.stop()
        context.close()


def test_python_asking_for_another_agent_is_said(page, lab):
    name, conversation = "memory-python.ipynb", "c-memory-python"
    open_chat(page, lab, name, agent="demo", conversation_id=conversation)
    first = output_chat(page, 0)
    send(first, "hello demo")
    wait_status(last_reply(first), "complete")
    assert _agents_used(lab, conversation) == ["demo", "demo"]
    expect(first.locator(NOTE)).to_be_hidden()

    # A new widget on the same conversation, asking for echo: echo answers, and the view says
    # the conversation last used demo.
    run_code(page, f'w2 = ChatWidget(agent="echo", conversation_id="{conversation}")\nw2')
    second = output_chat(page, 1)
    expect(second).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    expect(second.locator(AGENT)).to_have_value("echo", timeout=GUARD_MS)
    note = second.locator(NOTE)
    expect(note).to_be_visible()
    expect(note).to_have_text("This conversation last used demo; echo will answer.")
    assert second.locator(AGENT).get_attribute("aria-describedby") == note.get_attribute("id")
    # The first widget, created before the last message, follows the conversation: demo.
    expect(first.locator(AGENT)).to_have_value("demo")
    expect(first.locator(NOTE)).to_be_hidden()

    # Set from Python while it shows: that agent answers, said the same way.
    run_code(page, 'w.agent = "echo"')
    expect(first.locator(AGENT)).to_have_value("echo", timeout=GUARD_MS)
    expect(first.locator(NOTE)).to_have_text("This conversation last used demo; echo will answer.")

    # Once echo has answered, it is the agent last used: no note anywhere.
    send(second, "hello echo")
    wait_status(last_reply(second), "complete")
    assert _agents_used(lab, conversation)[-2:] == ["echo", "echo"]
    for chat in (first, second):
        expect(chat.locator(NOTE)).to_be_hidden()
        expect(chat.locator(AGENT)).to_have_value("echo")


def _open_lab(page: Page, lab, reset: bool = True) -> None:
    query = urllib.parse.urlencode(
        {"reset": "", "token": lab.token} if reset else {"token": lab.token}
    )
    page.goto(f"{lab.url('lab')}?{query}", timeout=GUARD_MS * 2)
    expect(page.locator(SIDEBAR_TAB)).to_be_visible(timeout=GUARD_MS * 2)
    page.evaluate("async () => { await window.jupyterapp.restored; }")


def _panel(page: Page):
    if not page.locator(SIDEBAR).is_visible():
        page.locator(SIDEBAR_TAB).click()
    panel = page.locator(SIDEBAR)
    expect(panel).to_be_visible()
    return panel


def _new_panel_chat(page: Page, agent: str, text: str):
    """A new chat in the panel with ``agent`` picked; -> (chat root, conversation id)."""
    panel = _panel(page)
    panel.locator('[data-testid="streamchat-new"]').click()
    chat = panel.locator(ROOT)
    expect(chat).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    expect(chat.locator(f"{AGENT} option")).not_to_have_count(0, timeout=GUARD_MS)
    _chat_with(chat, agent, text)
    return chat, panel.get_attribute("data-open-conversation")


def test_panel_opens_with_the_agent_last_used_and_says_who_answers(page, lab):
    _open_lab(page, lab)
    chat, conversation = _new_panel_chat(page, "echo", "from the panel")
    assert _agents_used(lab, conversation) == ["echo", "echo"]

    page.reload()
    expect(page.locator(SIDEBAR_TAB)).to_be_visible(timeout=GUARD_MS * 2)
    panel = _panel(page)
    panel.locator(f'{ENTRY}[data-conversation-id="{conversation}"]').click()
    chat = panel.locator(ROOT)
    expect(chat).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    expect(chat.locator(AGENT)).to_have_value("echo", timeout=GUARD_MS)

    # Someone else carries the conversation on with demo while it is open here: the picker
    # stays (nothing switches under the user's hand), and says which agent will answer.
    quick_chat(lab, conversation, "from elsewhere", agent="demo")
    note = chat.locator(NOTE)
    expect(note).to_have_text(
        "This conversation last used demo; echo will answer.", timeout=GUARD_MS
    )
    expect(note).to_be_visible()
    expect(chat.locator(AGENT)).to_have_value("echo")
    _sends_to(lab, chat, conversation, "echo", "from the panel again")
    expect(note).to_be_hidden()

    # Opened again, it opens with the agent it last used.
    quick_chat(lab, conversation, "from elsewhere again", agent="demo")
    page.locator('[data-testid="streamchat-back"]').click()
    panel.locator(f'{ENTRY}[data-conversation-id="{conversation}"]').click()
    expect(chat.locator(AGENT)).to_have_value("demo", timeout=GUARD_MS)
    expect(note).to_be_hidden()


def test_restored_tab_opens_with_the_agent_last_used(page, lab):
    _open_lab(page, lab)
    chat, conversation = _new_panel_chat(page, "echo", "for the tab")
    _panel(page).locator('[data-testid="streamchat-chat-open-tab"]').click()
    tab = page.locator(f"{TAB}:visible")
    expect(tab.locator(ROOT)).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    expect(tab.locator(AGENT)).to_have_value("echo", timeout=GUARD_MS)

    # The layout (with the tab) is saved to the workspace; a reload without `reset` restores it.
    deadline = time.monotonic() + GUARD_MS / 1000
    while conversation not in json.dumps(lab.api("GET", "lab/api/workspaces")):
        assert time.monotonic() < deadline, "the workspace never saved the tab"
        time.sleep(0.25)
    _open_lab(page, lab, reset=False)
    tab = page.locator(TAB)
    expect(tab).to_have_count(1, timeout=GUARD_MS)
    tab.evaluate("node => window.jupyterapp.shell.activateById(node.id)")
    expect(tab.locator(ROOT)).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    expect(tab.locator(AGENT)).to_have_value("echo", timeout=GUARD_MS)
    expect(tab.locator(NOTE)).to_be_hidden()
    _sends_to(lab, tab.locator(ROOT), conversation, "echo", "in the restored tab")
    expect(tab.locator(INPUT)).to_be_visible()
