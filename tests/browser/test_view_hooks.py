"""The chat view's text hook and its live agent picker, in a real JupyterLab.

- ``streamchat-message-text`` holds a message's text and nothing else: not the reply's header,
  buttons, thinking or usage line, so a script reads a reply exactly.
- The picker follows AGENTS_CHANGED (the hub sends it to every connection when its agents
  change): new agents are offered, the choice stays, and a chosen agent that goes away stays
  shown as unavailable. The frames are the hub's own, passed through Playwright's WebSocket
  route, with AGENTS_CHANGED frames added into the same socket.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from chat import AGENT, MESSAGE, NOTICE, last_reply, open_chat, send, wait_status

TEXT = '[data-testid="streamchat-message-text"]'


@pytest.fixture(scope="module")
def lab_env():
    # The test agent plug-ins ("think", which reasons before it answers, among them).
    return {"PYTHONPATH": str(Path(__file__).parent.parent / "plugins")}


def test_message_text_holds_the_text_alone(page, lab):
    root = open_chat(page, lab, "text.ipynb", agent="think")
    send(root, "plain words here")
    reply = last_reply(root)
    wait_status(reply, "complete")
    # The reply shows its agent, its thinking and its usage line, all outside its text.
    expect(reply.locator('[data-testid="streamchat-message-meta"]')).to_contain_text("think")
    expect(reply.locator('[data-testid="streamchat-thinking"]')).to_contain_text("thought000")
    expect(reply.locator('[data-testid="streamchat-usage"]')).to_be_visible()
    expect(reply.locator(TEXT)).to_have_count(1)
    assert reply.locator(TEXT).text_content().strip() == "Answer: plain words here"
    whole = reply.text_content()
    assert "thought000" in whole and "Answer: plain words here" in whole
    user = root.locator(f'{MESSAGE}[data-role="user"]').last
    assert user.locator(TEXT).text_content() == "plain words here"


def _agents_changed(routes: list, agents: list) -> None:
    """What the hub sends every connection when its agents change, added into each socket."""
    frame = json.dumps({"type": "AGENTS_CHANGED", "agents": agents})
    for route in routes:
        route.send(frame)


def test_agent_picker_follows_agents_changed(page, lab):
    routes: list = []

    def through(ws):
        ws.connect_to_server()  # every frame passes both ways as it is
        routes.append(ws)

    page.route_web_socket(re.compile(r".*/streamchat/ws(\?.*)?$"), through)
    root = open_chat(page, lab, "agents.ipynb", agent="echo")
    picker = root.locator(AGENT)
    served = lab.api("GET", "streamchat/api/agents")["agents"]
    expect(picker.locator("option")).to_have_count(len(served))
    expect(picker).to_have_value("echo")
    assert routes, "the view's socket did not go through the route"

    # A kernel registers a notebook agent: it is offered, and the choice stays.
    notebook = {
        "id": "nb-summarize",
        "name": "summarize",
        "description": "A notebook agent.",
        "kernel": "k1",
    }
    _agents_changed(routes, served + [notebook])
    expect(picker.locator("option")).to_have_count(len(served) + 1)
    expect(picker.locator('option[value="nb-summarize"]')).to_have_text("summarize")
    expect(picker).to_have_value("echo")

    # The user picks it; then the kernel goes and takes it with it: still chosen, shown as
    # unavailable, and the view says so rather than sending to another agent.
    picker.select_option("nb-summarize")
    _agents_changed(routes, served)
    expect(picker).to_have_value("nb-summarize")
    gone = picker.locator('option[value="nb-summarize"]')
    expect(gone).to_have_text(re.compile(r"nb-summarize.*unavailable"))
    expect(gone).to_be_disabled()
    expect(root.locator(NOTICE)).to_contain_text('"nb-summarize" is not available')

    # It comes back: offered as before, and the notice goes.
    _agents_changed(routes, served + [notebook])
    expect(gone).to_have_text("summarize")
    expect(gone).to_be_enabled()
    expect(root.locator(NOTICE)).to_be_hidden()
    expect(picker).to_have_value("nb-summarize")

    # A pick of a served agent still sends to it.
    picker.select_option("echo")
    send(root, "still here")
    wait_status(last_reply(root), "complete")
    assert last_reply(root).locator(TEXT).text_content().strip() == "still here"
