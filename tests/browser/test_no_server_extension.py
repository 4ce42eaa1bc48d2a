"""The chat widget where the page's server runs no hub: a JupyterLab whose server does not load
the streamchat extension (as VS Code, Colab, or a server env without the package). The view
streams through the kernel, from the kernel's in-process hub (docs/protocol.md, "Through the
kernel"): streaming, stop, markdown, the agent picker and the Python API all work, and one quiet
line says what needs the server extension.

Two ``jupyter lab`` processes: one with the project's JupyterLab extension still installed (its
output renderer draws the notebook's chat), one without it (anywidget's own view draws it).
"""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from chat import (
    AGENT,
    MESSAGE,
    STOP,
    TYPING,
    body_text,
    last_reply,
    open_chat,
    replies,
    run_code,
    send,
    wait_status,
    wait_text_longer,
    words,
)
from conftest import ARTIFACTS
from labserver import READY_GUARD, LabServer

NOTE = '[data-testid="streamchat-transport-note"]'
NOTE_TEXT = (
    "Streaming through the kernel: resuming after a kernel restart needs the "
    "jupyter_streamchat server extension."
)
# The server extension stays installed but is not loaded.
WITHOUT_EXTENSION = ["--ServerApp.jpserver_extensions=jupyter_streamchat=False"]


class LabWithoutHub(LabServer):
    """``jupyter lab`` whose server does not load the streamchat extension."""

    def _wait_ready(self, guard: float = READY_GUARD) -> None:
        deadline = time.monotonic() + guard
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"jupyter lab exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                self.api("GET", "api/status", timeout=2)
                break
            except (OSError, RuntimeError):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"jupyter lab not ready after {guard} s:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.2)
        # These tests are pointless if the extension answers after all.
        try:
            self.api("GET", "streamchat/api/agents")
        except RuntimeError as exc:
            assert "-> 404" in str(exc), exc
        else:
            raise RuntimeError(f"the streamchat extension is loaded:\n{self.log_tail()}")


@pytest.fixture(scope="module")
def lab(lab_env, tmp_path_factory):
    with LabWithoutHub(
        WITHOUT_EXTENSION, env=lab_env, base_dir=tmp_path_factory.mktemp("lab")
    ) as server:
        yield server


def _watch_streamchat_traffic(page) -> dict:
    """Every HTTP answer and WebSocket frame to the page from ``streamchat/`` URLs."""
    seen = {"answers": [], "sockets": 0, "frames": 0}

    def on_response(response):
        if "/streamchat/" in response.url:
            seen["answers"].append((response.url, response.status))

    def on_websocket(ws):
        if "/streamchat/" in ws.url:
            seen["sockets"] += 1
            ws.on("framereceived", lambda payload: seen.__setitem__("frames", seen["frames"] + 1))

    page.on("response", on_response)
    page.on("websocket", on_websocket)
    return seen


def _record_streaming_lengths(page) -> None:
    """The lengths of the last reply's text each time it changed while it was streaming."""
    page.evaluate(
        """() => {
             window.__lengths = [];
             const list = document.querySelector('[data-testid="streamchat-messages"]');
             new MutationObserver(() => {
               const replies = list.querySelectorAll('[data-role="assistant"]');
               const reply = replies[replies.length - 1];
               if (!reply || reply.dataset.status !== 'streaming') return;
               const n = reply.querySelector('.streamchat-body').textContent.length;
               if (n > 0 && window.__lengths[window.__lengths.length - 1] !== n) {
                 window.__lengths.push(n);
               }
             }).observe(list, { childList: true, subtree: true, characterData: true,
                                attributes: true });
           }"""
    )


def _send_for_reply(root, text: str):
    """Send ``text``; the reply to it, once it is shown (not the one before it)."""
    before = replies(root).count()
    send(root, text)
    expect(replies(root)).to_have_count(before + 1)
    return replies(root).nth(before)


def test_chat_streams_through_the_kernel(page, lab):
    seen = _watch_streamchat_traffic(page)
    root = open_chat(page, lab, "kernel.ipynb", conversation_id="c-kernel")
    # One quiet line, and the picker's agents come from the kernel's hub.
    expect(root.locator(NOTE)).to_have_text(NOTE_TEXT)
    options = root.locator(f"{AGENT} option")
    expect(options.filter(has_text="echo")).to_have_count(1)
    assert {"demo", "echo"} <= set(options.evaluate_all("os => os.map(o => o.value)"))
    expect(root.locator(AGENT)).to_have_value("echo")

    # Streamed, bit by bit, then rendered as markdown.
    _record_streaming_lengths(page)
    text = "A **bold** start, then " + words(40) + "\n\n- one\n- two"
    send(root, text)
    reply = last_reply(root)
    wait_status(reply, "complete")
    lengths = page.evaluate("window.__lengths")
    assert len(lengths) >= 3, lengths  # seen growing while it streamed
    expect(reply.locator("strong")).to_have_text("bold")
    expect(reply.locator("ul > li")).to_have_count(2)
    expect(root.locator(TYPING)).to_be_hidden()
    root.screenshot(path=str(ARTIFACTS / "no_server_extension.png"))

    # Stop during a slow reply.
    reply = _send_for_reply(root, words(400))  # 20 s of echo
    wait_text_longer(reply, 60)
    root.locator(STOP).click()
    wait_status(reply, "stopped")
    expect(reply.locator(".streamchat-note")).to_have_text("(Stopped)")
    expect(root.locator(STOP)).to_be_hidden()
    shown = body_text(reply)
    assert 0 < len(shown) < len(words(400))

    # The Python object follows the same conversation, in the same hub.
    out = run_code(
        page,
        "import time\n"
        "for _ in range(100):\n"
        "    if len(w.messages) == 4 and w.messages[-1]['status'] == 'stopped':\n"
        "        break\n"
        "    time.sleep(0.1)\n"
        "print('REMOTE', w.remote, [m['status'] for m in w.messages])\n"
        "print('KEPT', len(w.messages[-1]['text']))",
    )
    expect(out).to_contain_text("REMOTE False ['complete', 'complete', 'complete', 'stopped']")
    assert f"KEPT {len(shown)}" in " ".join(out.inner_text().split())
    # And what it sends shows in the view.
    out = run_code(
        page, 'r = w.send("hi from python", agent="echo")\nprint("STATUS", r.wait(30).status)'
    )
    expect(out).to_contain_text("STATUS complete")
    expect(root.locator(f'{MESSAGE}[data-role="user"]').last).to_have_text("hi from python")
    wait_status(last_reply(root), "complete")
    assert body_text(last_reply(root)) == "hi from python"

    # The server's streamchat API was asked and answered 404 only; no error toast.
    answers = seen["answers"]
    assert answers and all(status == 404 for _, status in answers), answers
    assert seen["frames"] == 0
    expect(page.locator(".Toastify__toast")).to_have_count(0)
    expect(root).to_have_attribute("data-connection", "connected")


def test_python_send_streams_while_its_cell_waits(page, lab):
    root = open_chat(page, lab, "waiting.ipynb", conversation_id="c-waiting")
    _record_streaming_lengths(page)
    # The cell blocks in wait(); the hub's frames reach the view all the same.
    out = run_code(page, f'r = w.send("{words(40)}")\nprint("DONE", r.wait(30).status)')
    expect(out).to_contain_text("DONE complete")
    wait_status(last_reply(root), "complete")
    assert len(page.evaluate("window.__lengths")) >= 3
    assert body_text(last_reply(root)) == words(40)


def test_plain_widget_view_streams_through_the_kernel(browser, lab_env, tmp_path_factory):
    """Without the project's JupyterLab extension too: the view is anywidget's own, as in VS
    Code or Colab (the page still names a server, whose streamchat API answers 404)."""
    with LabWithoutHub(
        WITHOUT_EXTENSION,
        env=lab_env,
        base_dir=tmp_path_factory.mktemp("plain"),
        disabled_plugins=["jupyter-streamchat"],
    ) as plain:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        try:
            page = context.new_page()
            root = open_chat(page, plain, "plain.ipynb")
            expect(page.locator(".jp-streamchat-Output")).to_have_count(0)  # not the renderer
            expect(root.locator(NOTE)).to_have_text(NOTE_TEXT)
            send(root, "through **anywidget** alone")
            reply = last_reply(root)
            wait_status(reply, "complete")
            expect(reply.locator("strong")).to_have_text("anywidget")
            reply = _send_for_reply(root, words(400))
            wait_text_longer(reply, 40)
            root.locator(STOP).click()
            wait_status(reply, "stopped")
        except BaseException:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "plain_widget_no_hub.png"), full_page=True)
            print(f"--- jupyter lab log (tail) ---\n{plain.log_tail()}")
            raise
        finally:
            context.close()
