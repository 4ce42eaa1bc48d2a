"""The chat widget in a real JupyterLab: what a user sees and does (one ``jupyter lab`` here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import expect

from chat import (
    AGENT,
    GUARD_MS,
    INPUT,
    MESSAGE,
    NOTICE,
    SEND,
    STOP,
    TYPING,
    body_text,
    last_reply,
    open_chat,
    replies,
    run_code,
    send,
    stored,
    wait_status,
    wait_text_longer,
    words,
)
import jlab
from conftest import ARTIFACTS


@pytest.fixture(scope="module")
def lab_args():
    return ["--EchoAgent.delay=0.05"]


@pytest.fixture(scope="module")
def lab_env():
    # The test agent plug-ins (the failing "boom" agent among them) as installed packages.
    return {"PYTHONPATH": str(Path(__file__).parent.parent / "plugins")}


def _record_first_token(page) -> None:
    """From the Enter keypress to the first reply text on screen, timed in the page."""
    page.evaluate(
        """() => {
             const input = document.querySelector('[data-testid="streamchat-input"]');
             input.addEventListener('keydown', e => {
               if (e.key === 'Enter' && !e.shiftKey) window.__sentAt = performance.now();
             }, { capture: true, once: true });
             const list = document.querySelector('[data-testid="streamchat-messages"]');
             const seen = new MutationObserver(() => {
               const reply = list.querySelector('[data-role="assistant"] .streamchat-body');
               if (reply && reply.textContent.length > 0 && window.__firstAt === undefined) {
                 window.__firstAt = performance.now();
                 seen.disconnect();
               }
             });
             seen.observe(list, { childList: true, subtree: true, characterData: true });
           }"""
    )


def _watch_replacements(page) -> None:
    """Count changes to rendered blocks of a reply while it streams: a re-render would remove
    or alter them. (Text not rendered yet may go; only its rendered form stays.)"""
    page.evaluate(
        """() => {
             window.__blockChangesWhileStreaming = 0;
             const list = document.querySelector('[data-testid="streamchat-messages"]');
             const inBlock = n => {
               const el = n.nodeType === 1 ? n : n.parentElement;
               return !!el && (el.classList.contains('streamchat-block') ||
                               !!el.closest('.streamchat-block'));
             };
             new MutationObserver(records => {
               for (const r of records) {
                 const message = (r.target.nodeType === 1 ? r.target : r.target.parentElement)
                   ?.closest('[data-role="assistant"]');
                 if (!message || message.dataset.status !== 'streaming') continue;
                 if (r.type === 'characterData' ? inBlock(r.target)
                     : inBlock(r.target) || Array.from(r.removedNodes).some(inBlock)) {
                   window.__blockChangesWhileStreaming += 1;
                 }
               }
             }).observe(list, { childList: true, subtree: true, characterData: true });
           }"""
    )


def test_chat_streams_demo_reply_as_markdown(page, lab):
    root = open_chat(page, lab, "demo.ipynb", agent="demo")
    # The picker lists the server's agents, plug-ins included, with the widget's agent selected.
    agents = [agent["id"] for agent in lab.api("GET", "streamchat/api/agents")["agents"]]
    assert {"boom", "demo", "echo", "flood", "think"} <= set(agents)
    options = root.locator(f"{AGENT} option")
    expect(options).to_have_count(len(agents))
    assert options.evaluate_all("options => options.map(o => o.value)") == agents
    expect(root.locator(AGENT)).to_have_value("demo")
    # Shift+Enter adds a line; Enter sends.
    box = root.locator(INPUT)
    box.fill("Hello")
    box.press("Shift+Enter")
    box.type("there")
    expect(box).to_have_value("Hello\nthere")
    expect(root.locator(MESSAGE)).to_have_count(0)

    _record_first_token(page)
    _watch_replacements(page)
    box.press("Enter")
    user = root.locator(f'{MESSAGE}[data-role="user"]')
    expect(user).to_have_text("Hello\nthere")  # at once, before the hub answers
    expect(root.locator(TYPING)).to_be_visible()
    reply = last_reply(root)
    wait_status(reply, "streaming")
    page.wait_for_function("window.__firstAt !== undefined", timeout=GUARD_MS)
    first_ms = page.evaluate("window.__firstAt - window.__sentAt")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "first_token_ms.txt").write_text(f"{first_ms:.1f}\n")
    print(f"first token on screen {first_ms:.1f} ms after Enter")
    assert first_ms < 5000, f"first token took {first_ms:.0f} ms"

    # Mid-stream: blocks already rendered stay the very same nodes until the end.
    page.wait_for_function(
        "() => document.querySelectorAll('[data-role=\"assistant\"] .streamchat-block').length >= 2",
        timeout=GUARD_MS,
        polling=20,
    )
    expect(root.locator(STOP)).to_be_visible()
    page.evaluate(
        "window.__firstBlock = document.querySelector("
        "'[data-role=\"assistant\"] .streamchat-block')"
    )
    root.screenshot(path=str(ARTIFACTS / "streaming.png"))

    wait_status(reply, "complete")
    assert page.evaluate("window.__blockChangesWhileStreaming") == 0
    assert page.evaluate(
        "window.__firstBlock.isConnected && window.__firstBlock === "
        "document.querySelector('[data-role=\"assistant\"] .streamchat-block')"
    )
    expect(root.locator(TYPING)).to_be_hidden()
    expect(root.locator(STOP)).to_be_hidden()
    # The whole reply as formatted markdown: heading, list, table, fenced code.
    expect(reply.locator("h2")).to_have_text("Streaming chat in Jupyter")
    expect(reply.locator("ol > li")).to_have_count(4)
    expect(reply.locator("table td").first).to_have_text("echo")
    expect(reply.locator("pre code")).to_contain_text("import statistics")
    expect(reply.locator("strong").first).to_have_text("demo agent")
    root.screenshot(path=str(ARTIFACTS / "finished.png"))
    # The view kept to the bottom as the reply grew.
    gap = root.locator('[data-testid="streamchat-messages"]').evaluate(
        "el => el.scrollHeight - el.scrollTop - el.clientHeight"
    )
    assert gap < 30


def test_scrolled_up_view_stays_put(page, lab):
    root = open_chat(page, lab, "scroll.ipynb", agent="demo")
    send(root, "first")
    wait_status(last_reply(root), "complete")
    send(root, "second")
    wait_status(last_reply(root), "streaming")
    messages = root.locator('[data-testid="streamchat-messages"]')
    messages.evaluate("el => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); }")
    wait_status(last_reply(root), "complete")
    assert messages.evaluate("el => el.scrollTop") < 5


def test_markdown_is_rendered_and_html_is_inert(page, lab):
    root = open_chat(page, lab, "markdown.ipynb")
    text = "\n".join(
        [
            "# Title",
            "",
            "- one",
            "- two",
            "",
            "| x | y |",
            "|---|---|",
            "| 1 | 2 |",
            "",
            "```python",
            "print('code')",
            "```",
            "",
            '<img src=x onerror="window.__pwned = 1">',
            "",
            "[click me](javascript:window.__pwned=2) and [docs](https://jupyter.org)",
            "",
        ]
    )
    send(root, text)
    reply = last_reply(root)
    wait_status(reply, "complete")
    expect(reply.locator("h1")).to_have_text("Title")
    expect(reply.locator("ul > li")).to_have_count(2)
    expect(reply.locator("td")).to_have_text(["1", "2"])
    expect(reply.locator("pre code")).to_have_text("print('code')\n")
    # Raw HTML shows as the text the agent wrote; nothing of it runs.
    expect(reply.locator("img")).to_have_count(0)
    expect(reply).to_contain_text('<img src=x onerror="window.__pwned = 1">')
    bad = reply.locator("a", has_text="click me")
    assert not (bad.get_attribute("href") or "").lower().startswith("javascript")
    bad.click()
    expect(reply.locator("a", has_text="docs")).to_have_attribute("href", "https://jupyter.org")
    assert page.evaluate("window.__pwned") is None


def test_stop_generating(page, lab):
    root = open_chat(page, lab, "stop.ipynb", conversation_id="c-stop")
    send(root, words(300))
    reply = last_reply(root)
    wait_text_longer(reply, 50)
    root.locator(STOP).click()
    wait_status(reply, "stopped", timeout=5_000)
    expect(reply.locator(".streamchat-note")).to_have_text("(Stopped)")
    expect(root.locator(STOP)).to_be_hidden()
    expect(root.locator(TYPING)).to_be_hidden()
    shown = body_text(reply)
    assert 0 < len(shown) < len(words(300))
    # The partial reply is kept: what the store has is what the view shows.
    message = stored(lab, "c-stop")[-1]
    assert message["status"] == "stopped"
    assert " ".join(message["text"].split()) == shown


def test_python_object_follows_the_conversation(page, lab):
    root = open_chat(page, lab, "python.ipynb")
    out = run_code(
        page,
        'r = w.send("from python", agent="echo")\n'
        'r.wait(30)\nprint("STATUS", r.status, repr(r.text), w.remote)\n'
        'print("LAST", w.messages[-1]["status"])',
    )
    # The kernel found the Jupyter server that started it (not an in-process hub), and the
    # snapshot is up to date when wait() returns.
    expect(out).to_contain_text("STATUS complete 'from python' True")
    expect(out).to_contain_text("LAST complete")
    # The view shows what the kernel sent, streamed over its own connection.
    expect(root.locator(f'{MESSAGE}[data-role="user"]')).to_have_text("from python")
    wait_status(last_reply(root), "complete")
    # A message typed in the view shows in the Python object.
    send(root, "typed in the view")
    wait_status(last_reply(root), "complete")
    out = run_code(
        page,
        "import time\nfor _ in range(100):\n"
        "    if len(w.messages) == 4 and w.messages[-1]['status'] == 'complete': break\n"
        "    time.sleep(0.1)\n"
        "print([(m['role'], m['text'], m['status']) for m in w.messages])",
    )
    expect(out).to_contain_text(
        "('user', 'typed in the view', 'complete'), ('assistant', 'typed in the view', 'complete')"
    )
    # widget.stop() from Python stops the reply in the view.
    out = run_code(
        page,
        f'r = w.send("{words(300)}")\nimport time\ntime.sleep(1.5)\nw.stop()\n'
        'r.wait(10)\nprint("STOPPED", r.status, len(r.text) > 0)',
    )
    expect(out).to_contain_text("STOPPED stopped True")
    wait_status(last_reply(root), "stopped")
    expect(last_reply(root).locator(".streamchat-note")).to_have_text("(Stopped)")


def test_switching_conversation_stops_the_old_ones_frames(page, lab):
    """Setting ``conversation_id`` from Python switches the view; the view tells the hub
    (UNSUBSCRIBE), so the old conversation's reply, still streaming, no longer reaches the
    page's socket at all."""
    received, sent = [], []

    def watch(ws):
        if "streamchat/ws" in ws.url:
            ws.on("framereceived", lambda payload: received.append(json.loads(payload)))
            ws.on("framesent", lambda payload: sent.append(json.loads(payload)))

    page.on("websocket", watch)
    root = open_chat(page, lab, "switch.ipynb", conversation_id="c-switch-a")
    send(root, words(300))  # 15 s of echo
    wait_text_longer(last_reply(root), 20)
    reply_id = next(f["messageId"] for f in received if f["type"] == "MESSAGE_ACCEPTED")
    run_code(page, 'w.conversation_id = "c-switch-b"')
    expect(root.locator(MESSAGE)).to_have_count(0)
    assert {"type": "UNSUBSCRIBE", "conversationId": "c-switch-a"} in sent
    # The hub answers in order: every frame after the new conversation's HISTORY was sent
    # after the UNSUBSCRIBE took effect.
    switched = None
    for _ in range(100):  # hang guard: 10 s
        switched = next(
            (
                i
                for i, f in enumerate(received)
                if f["type"] == "HISTORY" and f["conversationId"] == "c-switch-b"
            ),
            None,
        )
        if switched is not None:
            break
        page.wait_for_timeout(100)
    assert switched is not None
    page.wait_for_timeout(1500)  # the old reply streams on meanwhile (about 30 words)
    late = [f for f in received[switched:] if f.get("messageId") == reply_id]
    assert late == []
    assert stored(lab, "c-switch-a")[-1]["status"] == "streaming"  # it did go on


def test_reattach_to_a_stored_conversation(page, lab):
    root = open_chat(page, lab, "first.ipynb", conversation_id="c-again")
    send(root, "remember this")
    wait_status(last_reply(root), "complete")
    page.close()

    page = page.context.new_page()
    root = open_chat(page, lab, "second.ipynb", conversation_id="c-again")
    expect(root.locator(MESSAGE)).to_have_count(2)
    expect(root.locator(f'{MESSAGE}[data-role="user"]')).to_have_text("remember this")
    expect(last_reply(root)).to_have_attribute("data-status", "complete")
    assert body_text(last_reply(root)) == "remember this"


def test_agent_error_shows_in_words(page, lab):
    root = open_chat(page, lab, "boom.ipynb", agent="boom")
    send(root, "go")
    reply = last_reply(root)
    wait_status(reply, "error")
    expect(reply.locator(".streamchat-note")).to_contain_text("The agent failed:")
    expect(reply).to_contain_text("partial text before")  # what came before the failure stays
    expect(root.locator(TYPING)).to_be_hidden()


def test_unknown_agent_is_explained(page, lab):
    root = open_chat(page, lab, "nosuch.ipynb", agent="nosuch")
    expect(root.locator(NOTICE)).to_contain_text('"nosuch" is not available')
    send(root, "anyone?")
    user = root.locator(f'{MESSAGE}[data-role="user"]')
    wait_status(user, "error")
    expect(user).to_contain_text("Not sent: no agent 'nosuch'")
    expect(replies(root)).to_have_count(0)
    expect(root.locator(TYPING)).to_be_hidden()
    # Picking an available agent fixes it, and the kernel's object follows the pick.
    root.locator(AGENT).select_option("echo")
    expect(root.locator(NOTICE)).to_be_hidden()
    send(root, "now?")
    wait_status(last_reply(root), "complete")
    out = run_code(page, "print('AGENT', w.agent)")
    expect(out).to_contain_text("AGENT echo")


def test_send_button(page, lab):
    root = open_chat(page, lab, "button.ipynb")
    root.locator(INPUT).fill("by button")
    root.locator(SEND).click()
    wait_status(last_reply(root), "complete")
    assert body_text(last_reply(root)) == "by button"
    expect(root.locator(INPUT)).to_have_value("")


def test_quickstart_notebook_in_jupyterlab(page, lab):
    """The README's first steps: open the quickstart, run it, chat with the demo agent."""
    import shutil

    shutil.copy(
        Path(__file__).parent.parent.parent / "notebooks" / "quickstart.ipynb",
        lab.root / "quickstart.ipynb",
    )
    jlab.open_notebook(page, lab, "quickstart.ipynb")
    jlab.run_all(page)
    root = page.locator('[data-testid="streamchat"]').first
    expect(root).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    # The notebook's own cells send from Python; their replies stream into the widget.
    expect(replies(root)).to_have_count(2, timeout=GUARD_MS)
    wait_status(replies(root).last, "complete")
    send(root, "Hello from the quickstart")
    reply = replies(root).nth(2)
    wait_status(reply, "complete")
    expect(reply.locator("h2")).to_have_text("Streaming chat in Jupyter")
