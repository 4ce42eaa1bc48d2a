"""``%%chat`` in real kernels and a real terminal IPython, and a ChatWidget's conversation in a
notebook run headless: what the saved notebook holds, what a terminal shows, what an interrupt
leaves. Every kernel and IPython runs with its Jupyter state in a temp dir, over the hub in its
own process and the store file in that dir."""

from __future__ import annotations

import asyncio
import os
import queue
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import papermill
import pytest
from jupyter_client import KernelManager
from nbclient import NotebookClient

from jupyter_streamchat.store import SQLiteStore
from server_process import JupyterServer, isolated_env

KERNEL_GUARD = 120.0  # seconds for a kernel (or IPython) to start and answer: a hang guard
HUGE = " ".join(f"w{i}" for i in range(2000))  # minutes at the echo agent's pace: never ends


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Kernels and subprocesses started by the test inherit this environment."""
    env = isolated_env(
        tmp_path / "jupyter", STREAMCHAT_SERVER_URL=None, STREAMCHAT_TOKEN=None, JPY_PARENT_PID=None
    )
    for name in ("STREAMCHAT_SERVER_URL", "STREAMCHAT_TOKEN", "JPY_PARENT_PID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        if name.startswith(("JUPYTER_", "IPYTHON", "XDG_")):
            monkeypatch.setenv(name, value)
    work = tmp_path / "work"
    work.mkdir()
    return work


def database() -> Path:
    return Path(os.environ["JUPYTER_DATA_DIR"]) / "streamchat.db"


def stored() -> dict:
    """Every conversation in the test's store: id -> [(role, text, status)], read from the file."""

    async def read():
        store = SQLiteStore(path=str(database()))
        await store.open()
        try:
            return {
                record.conversation_id: [
                    (m.role, m.text, m.status)
                    for m in await store.get_conversation(record.conversation_id)
                ]
                for record in await store.list_conversations()
            }
        finally:
            await store.close()

    return asyncio.run(read())


def notebook(*sources: str, raises: tuple = ()) -> nbformat.NotebookNode:
    """A notebook of code cells; the cells numbered in ``raises`` are expected to fail."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    for index in raises:
        nb.cells[index].metadata["tags"] = ["raises-exception"]
    return nb


def run_headless(nb, work: Path) -> nbformat.NotebookNode:
    NotebookClient(
        nb,
        timeout=int(KERNEL_GUARD),
        kernel_name="python3",
        resources={"metadata": {"path": str(work)}},
    ).execute()
    # What a saved notebook holds: written and read back as a file.
    path = work / "ran.ipynb"
    nbformat.write(nb, path)
    return nbformat.read(path, as_version=4)


def shown(cell) -> dict:
    """The one output of a %%chat cell: its data."""
    assert len(cell.outputs) == 1, cell.outputs
    assert cell.outputs[0].output_type == "display_data"
    return cell.outputs[0].data


# -- headless: nbclient, papermill ---------------------------------------------------------

TITLED = "# A title\n\nSome **bold** words, and a list:\n\n- one\n- two"


def test_headless_notebook_saves_the_replies_and_carries_on_the_conversation(isolated):
    nb = run_headless(
        notebook(
            "%load_ext jupyter_streamchat",
            f"%%chat echo --conversation nb-first\n{TITLED}\n",
            "%%chat\nThe same conversation, the same agent.",
            "%%chat --new\nA fresh start.",
            "%%chat\nStill the fresh one.",
            "%%chat no-such-agent\nhello",
            "%%chat\nThe agent named last that answered: echo.",
            raises=(5,),
        ),
        isolated,
    )

    # The whole reply, as Markdown, in the cell's one output.
    assert shown(nb.cells[1]) == {"text/markdown": TITLED, "text/plain": TITLED}
    for index, text in (
        (2, "The same conversation, the same agent."),
        (3, "A fresh start."),
        (4, "Still the fresh one."),
        (6, "The agent named last that answered: echo."),
    ):
        assert shown(nb.cells[index])["text/markdown"] == text

    # A refused message: one line naming the agent and the choices, no traceback.
    [error] = nb.cells[5].outputs
    assert (error.output_type, error.ename) == ("error", "ChatError")
    assert error.traceback == [f"ChatError: {error.evalue}"]
    assert "no-such-agent" in error.evalue and "echo" in error.evalue

    conversations = stored()
    assert conversations.pop("nb-first") == [
        ("user", TITLED, "complete"),
        ("assistant", TITLED, "complete"),
        ("user", "The same conversation, the same agent.", "complete"),
        ("assistant", "The same conversation, the same agent.", "complete"),
    ]
    [fresh] = conversations.values()  # --new started one other, and the later cells went on
    assert [text for role, text, _status in fresh if role == "user"] == [
        "A fresh start.",
        "Still the fresh one.",
        "The agent named last that answered: echo.",
    ]


def test_notebook_agents_answer_headless(isolated):
    nb = run_headless(
        notebook(
            "%load_ext jupyter_streamchat",
            "import jupyter_streamchat\n"
            "@jupyter_streamchat.agent('shout')\n"
            "def shout(request):\n"
            "    for word in request.text.split():\n"
            "        yield word.upper() + ' '",
            "%%chat shout\nhello from a cell",
            "for piece in jupyter_streamchat.Chat(agent='shout').send('from python'):\n"
            "    print(piece, end='|')",
        ),
        isolated,
    )
    assert shown(nb.cells[2])["text/markdown"] == "HELLO FROM A CELL "
    [printed] = nb.cells[3].outputs
    assert printed.text.replace("|", "") == "FROM PYTHON "


def test_papermill_runs_a_chat_notebook(isolated):
    source, result = isolated / "chat.ipynb", isolated / "chat-out.ipynb"
    # IPython puts {expressions} of the magic's line in (never of the text sent).
    nb = notebook(
        "agent = 'demo'",
        "%load_ext jupyter_streamchat",
        "%%chat {agent}\nAsked through papermill, {not a parameter}.",
    )
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "language": "python",
        "display_name": "Python 3",
    }
    nbformat.write(nb, source)
    papermill.execute_notebook(
        str(source),
        str(result),
        kernel_name="python3",
        parameters={"agent": "echo"},
        cwd=str(isolated),
        progress_bar=False,
        execution_timeout=int(KERNEL_GUARD),
    )
    ran = nbformat.read(result, as_version=4)
    assert shown(ran.cells[-1])["text/markdown"] == "Asked through papermill, {not a parameter}."


# -- a terminal IPython --------------------------------------------------------------------


def ipython(code: str, **kwargs) -> subprocess.Popen:
    """``ipython -c code`` with the extension loaded, as from a terminal."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "IPython",
            "--ext=jupyter_streamchat",
            "--no-banner",
            "--colors=NoColor",
            "-c",
            code,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **kwargs,
    )


def read_until(proc: subprocess.Popen, done, guard: float = KERNEL_GUARD) -> str:
    """What ``proc`` has written so far, read until ``done(text)`` is true."""
    out = b""
    deadline = time.monotonic() + guard
    while not done(out.decode(errors="replace")):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; got {out!r}"
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            data = os.read(proc.stdout.fileno(), 65536)
            assert data, f"the process ended; got {out!r}"
            out += data
    return out.decode()


def test_terminal_ipython_streams_to_stdout(isolated):
    proc = ipython("%%chat echo\nhello from a terminal", cwd=isolated)
    out, _ = proc.communicate(timeout=KERNEL_GUARD)
    assert (proc.returncode, out.decode()) == (0, "hello from a terminal\n")

    helped = ipython("%%chat?", cwd=isolated)
    out, _ = helped.communicate(timeout=KERNEL_GUARD)
    assert "%%chat [--conversation ID] [--new] [agent]" in out.decode()


def test_interrupting_a_terminal_ipython_stops_the_reply(isolated):
    proc = ipython(f"%%chat echo --conversation term-1\n{HUGE}", cwd=isolated)
    try:
        # Text on the terminal while the reply is still being written: it streams.
        head = read_until(proc, lambda text: "w5 " in text)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        rest, _ = proc.communicate(timeout=KERNEL_GUARD)
    finally:
        proc.kill()
    [(_, _, _), (_, kept, status)] = stored()["term-1"]
    assert status == "stopped" and HUGE.startswith(kept) and len(kept) < len(HUGE)
    out = head + rest.decode()
    assert out.startswith(f"{kept}\n(Stopped)\n"), out[-300:]
    assert "KeyboardInterrupt: the reply was stopped" in out


# -- a kernel, as a front end drives it -----------------------------------------------------


class Kernel:
    """A real kernel and a client that keeps its outputs as a front end does: a display
    updated in place (``update_display_data``), the rest appended."""

    def __init__(self, cwd: Path):
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(cwd=str(cwd))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=KERNEL_GUARD)

    def execute(self, code: str) -> str:
        return self.client.execute(code)

    def outputs(self, msg_id: str, outputs: list, until=None) -> bool:
        """Take the outputs of request ``msg_id`` into ``outputs`` until ``until(outputs)``
        (returns False) or the kernel is idle again (returns True)."""
        deadline = time.monotonic() + KERNEL_GUARD
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"timed out; outputs so far: {outputs}"
            try:
                msg = self.client.get_iopub_msg(timeout=left)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "status" and content["execution_state"] == "idle":
                return True
            if kind in ("display_data", "execute_result", "stream", "error"):
                outputs.append({"output_type": kind, **content})
            elif kind == "update_display_data":
                display_id = content["transient"]["display_id"]
                for output in outputs:
                    if (output.get("transient") or {}).get("display_id") == display_id:
                        output["data"] = content["data"]
            if until is not None and until(outputs):
                return False

    def run(self, code: str) -> tuple:
        """Run ``code``; returns (the execute_reply's content, the outputs)."""
        msg_id, outputs = self.execute(code), []
        self.outputs(msg_id, outputs)
        return self.reply(msg_id), outputs

    def reply(self, msg_id: str) -> dict:
        while True:
            msg = self.client.get_shell_msg(timeout=KERNEL_GUARD)
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg["content"]

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.fixture
def kernel(isolated):
    running = Kernel(isolated)
    yield running
    running.close()


def streamed(outputs: list) -> str:
    return "".join(
        output["data"].get("text/plain", "")
        for output in outputs
        if output["output_type"] == "display_data"
    )


def test_kernel_interrupt_stops_the_reply_and_keeps_its_text(kernel):
    reply, _ = kernel.run("%load_ext jupyter_streamchat")
    assert reply["status"] == "ok"

    msg_id = kernel.execute(f"%%chat echo --conversation k-1\n{HUGE}")
    outputs: list = []
    # The reply shows in the output while it streams (one display, updated in place).
    assert not kernel.outputs(msg_id, outputs, until=lambda outs: "w5 " in streamed(outs))
    kernel.manager.interrupt_kernel()  # the notebook's stop button
    assert kernel.outputs(msg_id, outputs)
    reply = kernel.reply(msg_id)

    display, error = outputs  # the reply's display, then one line saying it was interrupted
    [(_, _, _), (_, kept, status)] = stored()["k-1"]
    assert status == "stopped" and HUGE.startswith(kept) and len(kept) < len(HUGE)
    assert display["data"] == {
        "text/markdown": f"{kept}\n\n*(Stopped)*",
        "text/plain": f"{kept}\n\n(Stopped)",
    }
    assert (reply["status"], reply["ename"]) == ("error", "ChatInterrupted")
    assert error["output_type"] == "error"
    assert error["traceback"] == [
        "KeyboardInterrupt: the reply was stopped; what it had said is kept above."
    ]

    # The kernel goes on, and so does the conversation.
    reply, outputs = kernel.run("%%chat\nStill here?")
    assert reply["status"] == "ok"
    assert [output["data"]["text/markdown"] for output in outputs] == ["Still here?"]
    assert [role for role, _text, _status in stored()["k-1"]] == ["user", "assistant"] * 2


# -- a ChatWidget in a headless run ----------------------------------------------------------


def test_headless_widget_leaves_the_conversation_readable(isolated):
    nb = run_headless(
        notebook(
            "from jupyter_streamchat import ChatWidget\n"
            "w = ChatWidget(agent='echo', conversation_id='w-1')\n"
            "w",
            "w.send('Hello, **widget**.').wait(60);",
            f"r = w.send({HUGE!r})\nfor piece in r:\n    r.stop()\n    break\nr.wait(60);",
            "v = ChatWidget(agent='echo')\nv",
            # Then a view speaks over its comm (what the comm relay records): the view draws the
            # chat, and its output is left alone.
            "v._view_attached = True\nv.send('Not redrawn.').wait(60);",
        ),
        isolated,
    )

    [(_, _, _), (_, _, _), (_, _, _), (_, kept, status)] = stored()["w-1"]
    assert status == "stopped" and HUGE.startswith(kept)
    data = shown(nb.cells[0])
    # Beside the widget view (and the ids JupyterLab's extension draws a saved chat from)...
    assert data["application/vnd.jupyter.streamchat+json"]["conversationId"] == "w-1"
    assert "application/vnd.jupyter.widget-view+json" in data
    # ...the whole conversation as Markdown, as it was after the last cell, though the widget
    # was shown before anything was said.
    assert data["text/markdown"] == (
        "**You:**\n\nHello, **widget**.\n\n**echo:**\n\nHello, **widget**.\n\n"
        f"**You:**\n\n{HUGE}\n\n**echo:**\n\n{kept}\n\n*(Stopped)*\n"
    )

    assert shown(nb.cells[3])["text/markdown"] == "*No messages yet.*"


def test_widget_behind_a_jupyter_server_is_left_to_its_view(isolated, tmp_path, monkeypatch):
    """A kernel that talks to a Jupyter server's hub: the widget is displayed as any widget
    (the live view draws the chat), and never redrawn as the conversation changes."""
    with JupyterServer(tmp_path / "server") as server:
        monkeypatch.setenv("STREAMCHAT_SERVER_URL", server.http_url(""))
        monkeypatch.setenv("STREAMCHAT_TOKEN", server.token)
        kernel = Kernel(isolated)
        try:
            reply, outputs = kernel.run(
                "from jupyter_streamchat import ChatWidget\n"
                "w = ChatWidget(agent='echo')\n"
                "w.remote, w.send('hi').wait(60).text"
            )
            assert reply["status"] == "ok"
            assert outputs[-1]["data"]["text/plain"] == "(True, 'hi')"
            reply, outputs = kernel.run("w")
            [output] = outputs
            assert output["output_type"] == "execute_result"
            assert "application/vnd.jupyter.widget-view+json" in output["data"]
            assert "text/markdown" not in output["data"]
            reply, outputs = kernel.run("w.send('again').wait(60).text")
            assert [output["output_type"] for output in outputs] == ["execute_result"]
        finally:
            kernel.close()
