"""Tool calls and approvals in a real JupyterLab: each call a card in its reply, a call that
waits for the user a card with three answers, and every open view following the answer.

The ``tools`` test agent (tests/plugins) makes the calls, on cue from the words of the message:
``tool`` a read that completes, ``fail`` a call that fails, ``approve`` a write (with a diff)
that asks the user first, then says ``Written (<decision>)`` or ``Not written (reject)``.
Everything goes through the DOM hooks of DESIGN.md.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from chat import (
    AGENT,
    GUARD_MS,
    INPUT,
    ROOT,
    STOP,
    TYPING,
    body_text,
    last_reply,
    open_chat,
    send,
    stored,
    wait_status,
)
from conftest import ARTIFACTS
from labserver import LabServer

pytestmark = pytest.mark.browser

PLUGINS = Path(__file__).parent.parent / "plugins"
SIDEBAR = '[data-testid="streamchat-sidebar"]'
SIDEBAR_TAB = '[data-id="streamchat-sidebar"]'
ENTRY = '[data-testid="streamchat-conversation"]'
CARD = '[data-testid="streamchat-tool-call"]'
APPROVE = '[data-testid="streamchat-approve"]'
ALWAYS = '[data-testid="streamchat-approve-always"]'
REJECT = '[data-testid="streamchat-reject"]'
ANSWERS = (APPROVE, ALWAYS, REJECT)
WAITING_NOTE = '[data-testid="streamchat-approval-wait"]'
TEXT = '[data-testid="streamchat-message-text"]'


@pytest.fixture(scope="module")
def lab_env():
    # The test agent plug-ins, the "tools" agent among them, as installed packages.
    return {"PYTHONPATH": str(PLUGINS)}


@pytest.fixture(scope="module")
def lab_args():
    return []


def card(message: Locator, call_id: str) -> Locator:
    return message.locator(f'{CARD}[data-tool-call-id="{call_id}"]')


def open_panel(page: Page, lab, via=None) -> Locator:
    """JupyterLab (through the proxy ``via`` if given) with the side panel open."""
    page.goto(f"{lab.url('lab', port=via.port if via else None)}?reset&token={lab.token}")
    expect(page.locator(SIDEBAR_TAB)).to_be_visible(timeout=GUARD_MS * 2)
    page.locator(SIDEBAR_TAB).click()
    panel = page.locator(SIDEBAR)
    expect(panel).to_be_visible()
    return panel


def entry(panel: Locator, conversation_id: str) -> Locator:
    return panel.locator(f'{ENTRY}[data-conversation-id="{conversation_id}"]')


def new_chat(panel: Locator, text: str) -> tuple:
    """A new conversation with the tools agent, from the side panel; -> (chat root, id)."""
    panel.locator('[data-testid="streamchat-new"]').click()
    root = panel.locator(ROOT)
    expect(root).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    root.locator(AGENT).select_option("tools")
    send(root, text)
    expect(last_reply(root)).to_be_visible(timeout=GUARD_MS)
    conversation_id = panel.page.evaluate(
        "() => document.querySelector('#streamchat-sidebar').dataset.openConversation"
    )
    return root, conversation_id


def open_conversation(panel: Locator, conversation_id: str) -> Locator:
    item = entry(panel, conversation_id)
    expect(item).to_be_visible(timeout=GUARD_MS)
    item.click()
    root = panel.locator(ROOT)
    expect(root).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    return root


def expect_waiting(call: Locator) -> None:
    """The card asks: waiting, saying what will run, with its three answers enabled."""
    expect(call).to_have_attribute("data-status", "waiting", timeout=GUARD_MS)
    for answer in ANSWERS:
        expect(call.locator(answer)).to_be_visible()
        expect(call.locator(answer)).to_be_enabled()


def click_answer(call: Locator, answer: str) -> list:
    """Click one answer; -> whether each of the three was disabled right after the click, in
    the same task (before any frame from the hub can have come)."""
    return call.evaluate(
        """(card, selector) => {
             card.querySelector(selector).click();
             return [...card.querySelectorAll('.streamchat-tool-call-buttons button')]
               .map(b => b.disabled);
           }""",
        answer,
    )


def test_widget_shows_completed_and_failed_cards(page, lab):
    """The notebook widget's view: a read that completes and a call that fails, as cards
    beside the answer, never in it."""
    root = open_chat(page, lab, "tools.ipynb", agent="tools", conversation_id="c-widget-tools")
    send(root, "tool fail")
    reply = last_reply(root)
    wait_status(reply, "complete")
    cards = reply.locator(CARD)
    expect(cards).to_have_count(2)
    assert cards.evaluate_all("els => els.map(e => e.dataset.toolCallId)") == ["call-1", "call-2"]

    read = card(reply, "call-1")
    expect(read).to_have_attribute("data-status", "completed")
    expect(read.locator('[data-testid="streamchat-tool-call-title"]')).to_have_text("Read f1.txt")
    expect(read.locator('[data-testid="streamchat-tool-call-status"]')).to_have_text("Done")
    expect(read.locator('[data-testid="streamchat-tool-call-duration"]')).to_have_text(
        re.compile(r"^\d+(\.\d)? (ms|s)$")
    )
    # Arguments and result are folded; opened, they show as text (the arguments indented).
    arguments = read.locator('[data-testid="streamchat-tool-call-arguments"]')
    expect(arguments).to_have_js_property("open", False)
    arguments.locator("summary").click()
    expect(arguments.locator("pre")).to_have_text(json.dumps({"path": "f1.txt"}, indent=2))
    result = read.locator('[data-testid="streamchat-tool-call-result"]')
    expect(result).to_have_js_property("open", False)
    result.locator("summary").click()
    expect(result.locator("pre")).to_have_text("contents of f1.txt")

    failed = card(reply, "call-2")
    expect(failed).to_have_attribute("data-status", "failed")
    expect(failed.locator('[data-testid="streamchat-tool-call-status"]')).to_have_text("Failed")
    expect(failed.locator('[data-testid="streamchat-tool-call-error"] summary')).to_have_text(
        "Error: exit status 1"
    )
    # The answer's element holds the answer only; the cards come before it.
    assert body_text(reply) == "Reading 1. Done."
    assert reply.locator(TEXT).evaluate(
        "text => !text.querySelector('[data-testid=\"streamchat-tool-call\"]') && "
        "!!(text.previousElementSibling && "
        "text.previousElementSibling.matches('[data-testid=\"streamchat-tool-calls\"]'))"
    )
    assert stored(lab, "c-widget-tools")[-1]["text"] == "Reading 1. Done."
    root.screenshot(path=str(ARTIFACTS / "tool_calls_widget.png"))


def test_panel_cards_update_in_place_in_stream_order(page, lab):
    panel = open_panel(page, lab)
    root, _ = new_chat(panel, "hold 1.5 many 2")
    reply = last_reply(root)
    running = card(reply, "call-1")
    expect(running).to_have_attribute("data-status", "running", timeout=GUARD_MS)
    expect(running.locator('[data-testid="streamchat-tool-call-duration"]')).to_be_hidden()
    # Marked now: a card (and its message) updated in place keeps the mark; one rebuilt loses it.
    running.evaluate("el => { el.__mark = 1; el.closest('[data-role]').__mark = 1; }")
    wait_status(reply, "complete")
    expect(reply.locator(CARD)).to_have_count(3)
    ids = reply.locator(CARD).evaluate_all("els => els.map(e => e.dataset.toolCallId)")
    assert ids == ["call-1", "call-2", "call-3"]
    expect(running).to_have_attribute("data-status", "completed")
    assert running.evaluate("el => el.__mark === 1 && el.closest('[data-role]').__mark === 1")
    assert body_text(reply) == "Step 2 starts. Step 2 ends. Step 3 starts. Step 3 ends. Done."


def test_approve_allow_once(page, lab):
    panel = open_panel(page, lab)
    root, conversation_id = new_chat(panel, "approve")
    reply = last_reply(root)
    call = card(reply, "call-1")
    expect_waiting(call)
    # It says what will run: the tool, its arguments, and the edit as a diff.
    ask = call.locator('[data-testid="streamchat-tool-call-ask"]')
    expect(ask).to_contain_text("write_file")
    expect(ask).to_contain_text('"path": "f1.txt"')
    diff = call.locator('[data-testid="streamchat-tool-call-diff"]')
    expect(diff).to_contain_text("f1.txt")
    expect(diff.locator(".streamchat-diff-del")).to_have_text("- old")
    expect(diff.locator(".streamchat-diff-add")).to_have_text("+ new")
    # The reply waits for the user, and says so in place of the typing dots.
    expect(reply).to_have_attribute("data-waiting", "true")
    expect(root.locator(WAITING_NOTE)).to_have_text("Waiting for your approval")
    expect(root.locator(TYPING)).to_be_hidden()
    expect(entry(panel, conversation_id)).to_have_attribute("data-waiting", "true")
    root.screenshot(path=str(ARTIFACTS / "tool_call_waiting.png"))

    assert click_answer(call, APPROVE) == [True, True, True]
    expect(call).to_have_attribute("data-status", "completed", timeout=GUARD_MS)
    wait_status(reply, "complete")
    expect(call.locator(APPROVE)).to_be_hidden()
    expect(call.locator(".streamchat-tool-call-decision")).to_have_text("allowed once")
    assert body_text(reply) == "Writing 1. Written (allow_once). Done."
    expect(reply).not_to_have_attribute("data-waiting", "true")
    expect(root.locator(WAITING_NOTE)).to_be_hidden()
    expect(entry(panel, conversation_id)).not_to_have_attribute("data-waiting", re.compile(".*"))
    message = stored(lab, conversation_id)[-1]
    assert [(c["id"], c["status"], c.get("decision")) for c in message["toolCalls"]] == [
        ("call-1", "completed", "allow_once")
    ]


def test_reject(page, lab):
    panel = open_panel(page, lab)
    root, _ = new_chat(panel, "approve")
    reply = last_reply(root)
    call = card(reply, "call-1")
    expect_waiting(call)
    click_answer(call, REJECT)
    expect(call).to_have_attribute("data-status", "failed", timeout=GUARD_MS)
    expect(call.locator('[data-testid="streamchat-tool-call-status"]')).to_have_text("Rejected")
    wait_status(reply, "complete")
    assert body_text(reply) == "Writing 1. Not written (reject). Done."


def test_always_for_this_conversation(page, lab):
    """Allowed always: the same tool's next call in the conversation runs without asking."""
    panel = open_panel(page, lab)
    root, _ = new_chat(panel, "approve approve")
    reply = last_reply(root)
    first = card(reply, "call-1")
    expect_waiting(first)
    click_answer(first, ALWAYS)
    wait_status(reply, "complete")
    second = card(reply, "call-2")
    expect(second).to_have_attribute("data-status", "completed")
    expect(first.locator(".streamchat-tool-call-decision")).to_have_text(
        "allowed for this conversation"
    )
    assert body_text(reply).startswith("Writing 1. Written (allow_always). Writing 2. Written (")


def test_reload_while_waiting_then_answer(page, lab):
    panel = open_panel(page, lab)
    root, conversation_id = new_chat(panel, "approve")
    expect_waiting(card(last_reply(root), "call-1"))
    panel = open_panel(page, lab)  # a reload
    expect(entry(panel, conversation_id)).to_have_attribute("data-waiting", "true")
    root = open_conversation(panel, conversation_id)
    reply = last_reply(root)
    call = card(reply, "call-1")
    expect_waiting(call)
    expect(root.locator(WAITING_NOTE)).to_be_visible()
    click_answer(call, APPROVE)
    wait_status(reply, "complete")
    expect(call).to_have_attribute("data-status", "completed")
    assert body_text(reply) == "Writing 1. Written (allow_once). Done."


def test_two_pages_answer_in_one_the_other_follows(page, lab):
    panel = open_panel(page, lab)
    root, conversation_id = new_chat(panel, "approve")
    mine = card(last_reply(root), "call-1")
    expect_waiting(mine)
    other = page.context.new_page()
    try:
        other_panel = open_panel(other, lab)
        item = entry(other_panel, conversation_id)
        expect(item).to_have_attribute("data-waiting", "true", timeout=GUARD_MS)
        expect(item.locator('[data-testid="streamchat-waiting-mark"]')).to_be_visible()
        other_root = open_conversation(other_panel, conversation_id)
        theirs = card(last_reply(other_root), "call-1")
        expect_waiting(theirs)
        click_answer(theirs, APPROVE)
        # The first page follows: its card runs and completes, and asks no more.
        expect(mine).to_have_attribute("data-status", "completed", timeout=GUARD_MS)
        expect(mine.locator(APPROVE)).to_be_hidden()
        wait_status(last_reply(root), "complete")
        assert body_text(last_reply(root)) == "Writing 1. Written (allow_once). Done."
        expect(theirs).to_have_attribute("data-status", "completed")
        # The second page's list no longer marks it.
        other_panel.locator('[data-testid="streamchat-back"]').click()
        expect(item).not_to_have_attribute("data-waiting", re.compile(".*"), timeout=GUARD_MS)
        expect(item.locator('[data-testid="streamchat-waiting-mark"]')).to_have_count(0)
    finally:
        other.close()


def test_answer_held_offline_while_another_view_answers_first(page, lab, proxy):
    """An answer clicked while the connection is down goes once it is back; by then another
    view has answered, so the hub refuses it (not_waiting): nothing is said of it, the buttons
    stay disabled, and the card shows what the other view decided."""
    sent, received = [], []
    page.on("websocket", lambda ws: ws.on("framesent", lambda f: sent.append(f)))
    page.on("websocket", lambda ws: ws.on("framereceived", lambda f: received.append(f)))
    panel = open_panel(page, lab, via=proxy)
    root, conversation_id = new_chat(panel, "approve")
    mine = card(last_reply(root), "call-1")
    expect_waiting(mine)
    other = page.context.new_page()
    try:
        other_root = open_conversation(open_panel(other, lab), conversation_id)
        theirs = card(last_reply(other_root), "call-1")
        expect_waiting(theirs)
        proxy.down()
        try:
            expect(root).not_to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
            assert click_answer(mine, APPROVE) == [True, True, True]
            click_answer(theirs, REJECT)
            wait_status(last_reply(other_root), "complete")
            expect(mine).to_have_attribute("data-status", "waiting")  # not told yet
            expect(mine.locator(APPROVE)).to_be_disabled()
        finally:
            proxy.up()
        expect(root).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
        reply = last_reply(root)
        wait_status(reply, "complete")
        expect(mine).to_have_attribute("data-status", "failed")
        expect(mine.locator('[data-testid="streamchat-tool-call-status"]')).to_have_text("Rejected")
        assert body_text(reply) == "Writing 1. Not written (reject). Done."
        answers = [json.loads(f) for f in sent if "ANSWER_TOOL_CALL" in f]
        assert [(a["toolCallId"], a["decision"]) for a in answers] == [("call-1", "allow_once")]
        expect(root.locator('[data-testid="streamchat-notice"]')).to_be_hidden()
        assert any('"not_waiting"' in f for f in received), "the hub took the late answer"
    finally:
        other.close()


def test_stop_while_waiting(page, lab):
    panel = open_panel(page, lab)
    root, conversation_id = new_chat(panel, "approve")
    reply = last_reply(root)
    call = card(reply, "call-1")
    expect_waiting(call)
    root.locator(STOP).click()
    wait_status(reply, "stopped")
    expect(call).to_have_attribute("data-status", "failed")
    expect(call.locator('[data-testid="streamchat-tool-call-status"]')).to_have_text("Not run")
    expect(call.locator(APPROVE)).to_be_hidden()
    expect(root.locator(WAITING_NOTE)).to_be_hidden()
    expect(entry(panel, conversation_id)).not_to_have_attribute(
        "data-waiting", re.compile(".*"), timeout=GUARD_MS
    )


def test_approval_times_out(page, tmp_path):
    """Nobody answers within StreamChatApp.approval_timeout: the reply ends in error and the
    call shows as failed."""
    args = ["--StreamChatApp.approval_timeout=3"]
    with LabServer(args, env={"PYTHONPATH": str(PLUGINS)}, base_dir=tmp_path) as short:
        panel = open_panel(page, short)
        root, _ = new_chat(panel, "approve")
        reply = last_reply(root)
        call = card(reply, "call-1")
        expect_waiting(call)
        wait_status(reply, "error")
        expect(call).to_have_attribute("data-status", "failed")
        expect(call.locator(APPROVE)).to_be_hidden()
        expect(reply.locator(".streamchat-note")).to_contain_text("The agent failed")
        expect(root.locator(INPUT)).to_be_enabled()
