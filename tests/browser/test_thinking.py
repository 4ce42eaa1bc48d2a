"""A reasoning model's reply in a real JupyterLab: its thinking streams in a section of its own,
folds when the answer starts, never mixes into the answer, and a usage line follows the end.

The ``think`` test agent (tests/plugins) stands in for the model: numbered reasoning words, then
``Answer:`` and the user's words, then its usage (model ``think-1``, 12 input tokens).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

import jlab
from chat import GUARD_MS, ROOT, body_text, last_reply, open_chat, send, stored, wait_status
from conftest import ARTIFACTS

THINKING = '[data-testid="streamchat-thinking"]'
USAGE = '[data-testid="streamchat-usage"]'
THOUGHTS = 40
REASONING = "".join(f"thought{i:03d} " for i in range(THOUGHTS))


def usage_line(question: str) -> re.Pattern:
    # Output tokens: the reasoning words, "Answer:" and one per word of the question.
    tokens = THOUGHTS + 1 + len(question.split())
    return re.compile(rf"^think-1 · {tokens} tokens · [\d.,]+ tokens/s$")


@pytest.fixture(scope="module")
def lab_args():
    # 50 ms between pieces: two seconds of thinking, long enough to watch each phase.
    return ["--ThinkAgent.delay=0.05", f"--ThinkAgent.thoughts={THOUGHTS}"]


@pytest.fixture(scope="module")
def lab_env():
    # The test agent plug-ins, the "think" agent among them, as installed packages.
    return {"PYTHONPATH": str(Path(__file__).parent.parent / "plugins")}


def _watch_phases(page) -> None:
    """Record, in the page, what the newest reply showed at each change while it streamed."""
    page.evaluate(
        """() => {
             const w = window.__phases = {
               thinkingLengthsWhileNoAnswer: [], closedWhileNoAnswer: 0,
               openWhenAnswerStarted: null, answerHadThoughts: false
             };
             const list = document.querySelector('[data-testid="streamchat-messages"]');
             new MutationObserver(() => {
               const replies = list.querySelectorAll('[data-role="assistant"]');
               const reply = replies[replies.length - 1];
               if (!reply) return;
               const thinking = reply.querySelector('[data-testid="streamchat-thinking"]');
               const answer = reply.querySelector('.streamchat-body').textContent;
               if (answer.includes('thought')) w.answerHadThoughts = true;
               if (!thinking) return;
               const length =
                 thinking.querySelector('.streamchat-thinking-text').textContent.length;
               if (answer.trim() === '') {
                 const seen = w.thinkingLengthsWhileNoAnswer;
                 if (seen[seen.length - 1] !== length) seen.push(length);
                 if (!thinking.open) w.closedWhileNoAnswer += 1;
               } else if (w.openWhenAnswerStarted === null) {
                 w.openWhenAnswerStarted = thinking.open;
               }
             }).observe(list, { childList: true, subtree: true, characterData: true });
           }"""
    )


def test_thinking_streams_folds_and_comes_back_after_reload(page, lab):
    root = open_chat(page, lab, "think.ipynb", agent="think", conversation_id="c-think")
    # Saved with the widget in its output, so a reload brings the chat back.
    jlab.execute_command(page, "docmanager:save")
    _watch_phases(page)
    question = "what is two plus two"
    send(root, question)

    reply = last_reply(root)
    thinking = reply.locator(THINKING)
    # While only reasoning has come: the section is open, streaming, and the answer is empty.
    expect(thinking).to_be_visible(timeout=GUARD_MS)
    expect(thinking.locator("summary")).to_have_text("Thinking")
    page.wait_for_function(
        "() => window.__phases.thinkingLengthsWhileNoAnswer.length >= 3", timeout=GUARD_MS
    )
    assert reply.get_attribute("data-status") == "streaming"
    root.screenshot(path=str(ARTIFACTS / "thinking_streaming.png"))

    wait_status(reply, "complete")
    phases = page.evaluate("window.__phases")
    lengths = phases["thinkingLengthsWhileNoAnswer"]
    assert len(lengths) >= 3 and lengths == sorted(lengths), lengths  # grew, live
    assert phases["closedWhileNoAnswer"] == 0  # open all the while
    assert phases["openWhenAnswerStarted"] is False  # folded by itself with the first answer
    assert phases["answerHadThoughts"] is False

    # The answer is the answer only; the reasoning is whole in its own section, folded.
    assert body_text(reply) == f"Answer: {question}"
    expect(thinking).to_have_js_property("open", False)
    assert thinking.locator(".streamchat-thinking-text").text_content() == REASONING
    expect(reply.locator(USAGE)).to_have_text(usage_line(question))
    title = reply.locator(USAGE).get_attribute("title")
    assert "input: 12 tokens" in title, title
    # As stored: the reasoning kept apart from the text, and the usage with the hub's timings.
    message = stored(lab, "c-think")[-1]
    assert (message["text"], message["reasoning"]) == (f"Answer: {question}", REASONING)
    assert message["usage"]["model"] == "think-1"
    assert message["usage"]["durationSeconds"] >= message["usage"]["firstTokenSeconds"] >= 0

    # The user opens it: it stays open.
    thinking.locator("summary").click()
    expect(thinking).to_have_js_property("open", True)
    expect(thinking.locator(".streamchat-thinking-text")).to_be_visible()
    root.screenshot(path=str(ARTIFACTS / "thinking_finished.png"))
    thinking.locator("summary").click()
    expect(thinking).to_have_js_property("open", False)

    # After a reload the reply comes back from HISTORY: thinking folded, the usage line shown.
    message_id = reply.get_attribute("data-message-id")
    page.reload()
    jlab.wait_notebook_ready(page, "think.ipynb")
    root = page.locator(ROOT).first
    expect(root).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    reply = root.locator(f'[data-message-id="{message_id}"]')
    wait_status(reply, "complete")
    thinking = reply.locator(THINKING)
    expect(thinking).to_have_count(1)
    expect(thinking).to_have_js_property("open", False)
    assert thinking.locator(".streamchat-thinking-text").text_content() == REASONING
    assert body_text(reply) == f"Answer: {question}"
    expect(reply.locator(USAGE)).to_have_text(usage_line(question))
    root.screenshot(path=str(ARTIFACTS / "thinking_reloaded.png"))


def test_thinking_left_as_the_user_set_it(page, lab):
    root = open_chat(page, lab, "think-user.ipynb", agent="think")
    send(root, "keep it open")
    reply = last_reply(root)
    thinking = reply.locator(THINKING)
    expect(thinking).to_have_js_property("open", True, timeout=GUARD_MS)
    # Closed and opened again by hand while it thinks: the answer no longer folds it.
    thinking.locator("summary").click()
    expect(thinking).to_have_js_property("open", False)
    thinking.locator("summary").click()
    expect(thinking).to_have_js_property("open", True)
    assert body_text(reply) == "", "the answer began before the clicks: thinking too short"
    wait_status(reply, "complete")
    assert body_text(reply) == "Answer: keep it open"
    expect(thinking).to_have_js_property("open", True)
    expect(reply.locator(USAGE)).to_have_text(usage_line("keep it open"))
