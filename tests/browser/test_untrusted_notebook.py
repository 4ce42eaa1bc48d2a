"""An untrusted notebook costs bounded traffic (issue 13, point 6).

A notebook may come from anyone, and JupyterLab draws a saved chat output
(``application/vnd.jupyter.streamchat+json``) even in an untrusted notebook. Whatever that
output holds (a 5 MB id, a number, a nested object, a lone surrogate, nothing), the page shows
a sentence in its place, opens no socket for it and sends no message to any agent; and when a
server closes every chat socket right after it opens, the view's retries back off instead of
re-connecting several times a second.
"""

from __future__ import annotations

import json
import re
import time

import nbformat
import pytest
from playwright.sync_api import expect

import jlab
from chat import GUARD_MS, NOTICE, ROOT, output_chat, quick_chat, stored
from labserver import LabServer

OUTPUT_MIME = "application/vnd.jupyter.streamchat+json"
REFUSED = '[data-testid="streamchat-refused"]'
WS = re.compile(r"/streamchat/ws")
BIG = 5 * 1024 * 1024  # a 5 MB id

# (what the saved output holds, the output, what the page must say about it)
BAD_OUTPUTS = [
    (
        "a 5 MB conversationId",
        {"conversationId": "c" * BIG, "agentId": "echo", "outputKey": "k"},
        "conversationId is 5,242,880 characters long; ids are at most 200",
    ),
    (
        "a number",
        {"conversationId": 12345, "agentId": "echo"},
        "conversationId is a number, not a string",
    ),
    (
        "a nested object",
        {"conversationId": {"id": {"id": {"id": "c-good"}}}, "agentId": "echo"},
        "conversationId is an object, not a string",
    ),
    ("a list", ["c-good", "echo"], "it is a list, not an object"),
    ("no fields", {}, "conversationId is missing"),
    (
        "a 5 MB agentId",
        {"conversationId": "c-good", "agentId": "a" * BIG},
        "agentId is 5,242,880 characters long",
    ),
    ("a 201-character id", {"conversationId": "x" * 201}, "is 201 characters long"),
    (
        "an agentId of the wrong type",
        {"conversationId": "c-good", "agentId": ["echo"]},
        "agentId is a list, not a string",
    ),
]
GOOD = {"conversationId": "c-good", "agentId": "echo", "outputKey": "0" * 32}


@pytest.fixture(scope="module")
def lab(lab_args, lab_env, tmp_path_factory):
    """Without the Chat panel, whose own socket would mix with the notebook's in the counts."""
    with LabServer(
        lab_args,
        env=lab_env,
        base_dir=tmp_path_factory.mktemp("lab"),
        disabled_plugins=["jupyter-streamchat:sidebar"],
    ) as server:
        yield server


def _output_cell(data) -> nbformat.NotebookNode:
    output = nbformat.v4.new_output(
        "display_data", data={"text/plain": "ChatWidget(...)", OUTPUT_MIME: data}
    )
    return nbformat.v4.new_code_cell(
        "from jupyter_streamchat import ChatWidget\nChatWidget()",
        execution_count=1,
        outputs=[output],
    )


def _untrusted_notebook(lab, name: str, outputs: list) -> str:
    """A notebook written straight to disk, as one downloaded from anywhere: unsigned, so
    JupyterLab opens it untrusted. Its first cell is empty (a test fills its output)."""
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(""), *(_output_cell(data) for data in outputs)],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    (lab.root / name).write_text(json.dumps(nb))  # json.dumps keeps any odd string escaped
    return name


class SentFrames:
    """Every frame the page sends on a chat socket (``/streamchat/ws``), as the browser saw it."""

    def __init__(self, page):
        self.sockets = 0
        self.frames: list = []
        page.on("websocket", self._on_socket)

    def _on_socket(self, ws) -> None:
        if WS.search(ws.url):
            self.sockets += 1
            ws.on("framesent", lambda payload: self.frames.append(payload))

    @property
    def bytes(self) -> int:
        return sum(
            len(f.encode("utf-8", "surrogatepass") if isinstance(f, str) else f)
            for f in self.frames
        )

    def types(self) -> list:
        return [json.loads(f)["type"] for f in self.frames]


def test_hostile_saved_outputs_show_a_sentence_and_cost_no_traffic(page, lab):
    quick_chat(lab, "c-good", "written yesterday")
    before = len(stored(lab, "c-good"))
    name = _untrusted_notebook(lab, "hostile.ipynb", [*(o for _, o, _ in BAD_OUTPUTS), GOOD])
    sent = SentFrames(page)
    jlab.open_without_kernel(page, lab, name)
    assert page.evaluate(
        "() => window.jupyterapp.shell.currentWidget.content.widgets.every(c => !c.model.trusted)"
    ), "the notebook should be untrusted"

    # A lone surrogate cannot be saved in a notebook file the server serves (its notary
    # cannot hash it), but a page can hold one: put it in the first cell's output.
    page.evaluate(
        """(mime) => {
             const cell = window.jupyterapp.shell.currentWidget.content.widgets[0];
             cell.model.outputs.add({ output_type: 'display_data', metadata: {},
               data: { [mime]: { conversationId: 'c-\\ud800', agentId: 'echo' } } });
           }""",
        OUTPUT_MIME,
    )
    cases = [
        ("a lone surrogate", None, "not valid Unicode (it holds a lone surrogate)"),
        *BAD_OUTPUTS,
    ]
    for index, (what, _, says) in enumerate(cases):
        note = jlab.cell(page, index).locator(REFUSED)
        expect(note, what).to_contain_text("This chat output cannot be shown", timeout=GUARD_MS)
        expect(note, what).to_contain_text(says)
        assert len(note.inner_text()) < 200, f"{what}: the sentence quotes the value"
        expect(jlab.cell(page, index).locator(ROOT), what).to_have_count(0)

    # The good output beside them chats as usual.
    good = output_chat(page, len(cases))
    expect(good).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    expect(good.locator('[data-testid="streamchat-message"]')).to_have_count(2, timeout=GUARD_MS)

    page.wait_for_timeout(10_000)  # long enough for any retry loop to show itself
    assert sent.sockets == 1, f"{sent.sockets} chat sockets: only the good output may open one"
    assert sent.types() == ["SUBSCRIBE"], sent.types()
    assert json.loads(sent.frames[0]) == {"type": "SUBSCRIBE", "conversationId": "c-good"}
    assert sent.bytes < 200, sent.bytes
    # No message went to any agent: nothing was stored, no conversation was made.
    assert len(stored(lab, "c-good")) == before
    listed = lab.api("GET", "streamchat/api/conversations")["conversations"]
    assert [c["conversationId"] for c in listed] == ["c-good"]


@pytest.mark.parametrize("server", ["closes at once", "answers an ERROR and closes"])
def test_server_closing_every_socket_sees_retries_back_off(page, lab, server):
    """A server (here Playwright standing in for it) that accepts every chat socket and closes
    it as soon as the view has subscribed: before the fix the view reset its backoff on every
    open and came back every 125-250 ms (some 100 attempts in 20 s)."""
    attempts: list = []
    received: list = []

    def handle(ws) -> None:
        attempts.append(time.monotonic())

        def on_message(message) -> None:
            received.append(message)
            if server != "closes at once":
                ws.send(
                    json.dumps(
                        {
                            "type": "ERROR",
                            "code": "bad_field",
                            "message": "refused",
                            "conversationId": "c-good",
                        }
                    )
                )
            ws.close()

        ws.on_message(on_message)

    page.route_web_socket(WS, handle)
    name = _untrusted_notebook(lab, f"closing-{len(server)}.ipynb", [GOOD])
    jlab.open_without_kernel(page, lab, name)
    root = output_chat(page, 1)
    expect(root.locator(NOTICE)).to_contain_text("closed the connection", timeout=GUARD_MS)

    window = 20.0
    page.wait_for_timeout(window * 1000 + 500)
    start = attempts[0]
    within = [t - start for t in attempts if t - start <= window]
    gaps = [b - a for a, b in zip(within, within[1:])]
    # Retry n waits between half and all of 0.25 s * 2^n (capped at 10 s): at most 9
    # attempts in 20 s, however the jitter falls, and at most 2 in its second half.
    assert 4 <= len(within) <= 10, within
    assert sum(1 for t in within if t > window / 2) <= 3, within
    assert gaps[-1] > 4 * gaps[0], gaps  # the spacing grows
    # Each attempt sent one SUBSCRIBE and nothing else: no message to any agent.
    assert received and all(json.loads(m)["type"] == "SUBSCRIBE" for m in received), received
    assert sum(len(m) for m in received) < 100 * len(received)
