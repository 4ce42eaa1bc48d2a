"""``jupyter_streamchat.Chat`` with no Jupyter server: the hub in this process over a real SQLite
file, as in a notebook run headless or a plain script; and a reply's text as it arrives
(``for piece in reply``)."""

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from traitlets.config import Config

from helpers import HANG_GUARD
from jupyter_streamchat import Chat
from jupyter_streamchat.kernel.embedded import BackgroundHub

WORDS = " ".join(f"word{i}" for i in range(40)) + "\n  the end  "
LONG = " ".join(f"long{i}" for i in range(150))  # 1.5 s at the echo delay below


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    for name in ("JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    for name in ("STREAMCHAT_STORE_URL", "STREAMCHAT_SERVER_URL", "JPY_PARENT_PID"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def store_with(path, **echo) -> str:
    """A store URL whose in-process hub starts with these EchoAgent traits (the hub of a store
    takes its config when this process first uses it)."""
    url = f"sqlite:///{path}"
    BackgroundHub.get(url, Config({"EchoAgent": {"delay": 0.01, **echo}}))
    return url


@pytest.fixture
def store(isolated):
    return store_with(isolated / "chat.db")


def until(condition, what: str):
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_send_wait_text_and_history(store):
    with Chat(agent="echo", store_url=store) as chat:
        assert not chat.remote and chat.messages == []
        reply = chat.send(WORDS)
        assert reply.wait(HANG_GUARD).text == WORDS and reply.status == "complete"
        assert reply.agent_id == "echo"
        assert [(m["role"], m["text"]) for m in chat.messages] == [
            ("user", WORDS),
            ("assistant", WORDS),
        ]
        assert repr(chat) == (
            f"<Chat {chat.conversation_id!r} agent='echo', 2 messages, via in-process hub>"
        )
        assert chat._repr_markdown_() == (
            f"**You:**\n\n{WORDS.rstrip()}\n\n**echo:**\n\n{WORDS.rstrip()}\n"
        )
    with pytest.raises(RuntimeError, match="closed"):
        chat.send("after close")

    # The same conversation, taken up again (a kernel restarted, a script run again).
    with Chat(conversation_id=chat.conversation_id, store_url=store) as again:
        assert again.agent == "demo"  # the default
        assert [m["text"] for m in again.messages] == [WORDS, WORDS]
        assert again.send("more", agent="echo").wait(HANG_GUARD).text == "more"
        assert len(again.messages) == 4


def test_iterating_yields_the_text_as_it_arrives(store):
    with Chat(agent="echo", store_url=store) as chat:
        reply = chat.send(LONG)
        pieces = [(piece, reply.done) for piece in reply]
        assert "".join(piece for piece, _done in pieces) == LONG == reply.text
        assert reply.status == "complete"
        assert all(pieces), "no empty piece"
        # Pieces came while the reply was still being written, not all at its end.
        assert sum(1 for _piece, done in pieces if not done) > 5

        # Iterating an ended reply gives what is held, at once.
        assert list(reply) == [LONG]


def test_a_late_reader_gets_what_is_held_first_then_the_rest(store):
    with Chat(agent="echo", store_url=store) as chat:
        reply = chat.send(LONG)
        until(lambda: len(reply.text) > 100, "some text")
        held = reply.text
        pieces = iter(reply)
        first = next(pieces)
        assert first.startswith(held)
        assert first + "".join(pieces) == LONG


def test_iterators_in_several_threads_each_get_the_whole_text(store):
    with Chat(agent="echo", store_url=store) as chat:
        reply = chat.send(LONG)
        got = [[] for _ in range(4)]
        threads = [threading.Thread(target=lambda out=out: out.extend(reply)) for out in got]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(HANG_GUARD)
            assert not thread.is_alive()
        assert ["".join(out) for out in got] == [LONG] * 4


def test_stop_ends_the_iteration_quietly_and_keeps_the_text(store):
    with Chat(agent="echo", store_url=store) as chat:
        reply = chat.send(LONG)
        pieces = []
        for piece in reply:
            pieces.append(piece)
            if len(pieces) == 3:
                chat.stop()
        assert reply.status == "stopped"
        assert "".join(pieces) == reply.text and LONG.startswith(reply.text)
        assert len(reply.text) < len(LONG)
        conversation_id = chat.conversation_id
    with Chat(conversation_id=conversation_id, store_url=store) as again:
        stored = again.messages[-1]
        assert (stored["status"], stored["text"]) == ("stopped", reply.text)


def test_refused_and_closed(store):
    with Chat(agent="no-such-agent", store_url=store) as chat:
        refused = chat.send("hello")
        assert list(refused) == []  # the hub refused it: nothing to read, and no exception
        assert (refused.status, refused.error_code) == ("error", "unknown_agent")
        assert "no-such-agent" in refused.error

        reply = chat.send(LONG, agent="echo")
        pieces = iter(reply)
        next(pieces)
        chat.close()  # stops following: the iteration cannot end normally
        with pytest.raises(ConnectionError, match="closed"):
            list(pieces)


def test_a_reply_that_says_nothing_for_a_while(isolated):
    store = store_with(isolated / "slow.db", delay=30.0)
    with Chat(agent="echo", store_url=store) as chat:
        reply = chat.send("slow")
        with pytest.raises(TimeoutError, match="no news of the reply after 0.2 s"):
            next(reply.chunks(timeout=0.2))
        reply.stop()
        assert list(reply.chunks(timeout=HANG_GUARD)) == []
        assert reply.status == "stopped"


def test_stream_writes_as_it_arrives(store, tmp_path):
    with Chat(agent="echo", store_url=store) as chat:
        out = tmp_path / "out.txt"
        with out.open("w") as file:
            assert chat.send(WORDS).stream(file).status == "complete"
            assert chat.send("nope", agent="no-such-agent").stream(file).status == "error"
        text = out.read_text()
        assert text.startswith(WORDS + "\n(Error: no agent 'no-such-agent'")


# -- tool calls and approvals (the ``tools`` test agent, tests/plugins) ----------------------

TOOL_LINE = r"🔧 {} — {} \(\d+\.\d s\)"


def test_tool_calls_show_as_lines(store, tmp_path):
    with Chat(agent="tools", store_url=store) as chat:
        out = tmp_path / "out.txt"
        with out.open("w", encoding="utf-8") as file:
            reply = chat.send("tool fail").stream(file)
        assert (reply.status, reply.text) == ("complete", "Reading 1. Done.")
        assert [(c["name"], c["status"]) for c in reply.tool_calls] == [
            ("read_file", "completed"),
            ("run", "failed"),
        ]
        # Each call on a line of its own as it ends, among the text (where among it depends on
        # the frames the hub made of the agent's output).
        lines = out.read_text(encoding="utf-8").splitlines()
        calls = [line for line in lines if line.startswith("🔧")]
        assert len(calls) == 2, lines
        assert re.fullmatch(TOOL_LINE.format("read_file: Read f1.txt", "completed"), calls[0])
        assert re.fullmatch(TOOL_LINE.format("run", "failed: exit status 1"), calls[1])
        assert "".join(line for line in lines if line not in calls) == reply.text

        markdown = chat._repr_markdown_()
        assert re.search(
            r"\*\*tools:\*\*\n\n"
            + r"- 🔧 read\\_file: Read f1.txt — completed \(\d+\.\d s\)\n"
            + r"- 🔧 run — failed: exit status 1 \(\d+\.\d s\)\n\n"
            + r"Reading 1. Done.\n$",
            markdown,
        ), markdown
        assert "read\\_file" in reply._repr_markdown_()


def test_approve_answers_a_waiting_call(store):
    seen = []

    def approve(call):
        seen.append((call["name"], call["status"], json.loads(call["arguments"])))
        return "allow_once"

    with Chat(agent="tools", store_url=store, approve=approve) as chat:
        reply = chat.send("approve").wait(HANG_GUARD)
        assert (reply.status, reply.text) == ("complete", "Writing 1. Written (allow_once). Done.")
        (call,) = reply.tool_calls
        assert (call["status"], call["decision"], call["result"]) == (
            "completed",
            "allow_once",
            "wrote f1.txt",
        )
        assert seen == [("write_file", "waiting", {"path": "f1.txt", "text": "new"})]
        # Stored: a Chat taking the conversation up again shows the same.
        conversation_id = chat.conversation_id
    with Chat(conversation_id=conversation_id, store_url=store) as again:
        assert again.messages[1]["toolCalls"] == reply.tool_calls


def test_without_approve_a_call_waits_for_someone_else(store):
    with pytest.raises(TypeError, match="approve"):
        Chat(agent="tools", store_url=store, approve="allow_once")
    with Chat(agent="tools", store_url=store) as chat:
        reply = chat.send("approve")
        until(lambda: [c["status"] for c in reply.tool_calls] == ["waiting"], "the question")
        assert reply.status == "streaming" and reply.text == "Writing 1. "
        assert "write\\_file: Write f1.txt — waiting for approval" in reply._repr_markdown_()
        chat.stop()
        assert reply.wait(HANG_GUARD).status == "stopped"
        assert [(c["status"], c["error"]) for c in reply.tool_calls] == [
            ("failed", "not run: the reply ended first")
        ]


def test_context_goes_with_the_message(store):
    item = {"kind": "cell", "label": "In [3]", "text": "df.head()", "language": "python"}
    with Chat(agent="tools", store_url=store) as chat:
        reply = chat.send("context", context=[item]).wait(HANG_GUARD)
        assert reply.text == "cell: In [3] = df.head()\nDone."
        assert chat.messages[0]["context"] == [item]
        assert "**You:**\n\ncontext\n\n- 📎 cell: In \\[3\\]\n" in chat._repr_markdown_()


SCRIPT = textwrap.dedent("""
    from jupyter_streamchat import Chat

    with Chat(agent="echo") as chat:
        reply = chat.send(" ".join(f"w{i}" for i in range(30)))
        for piece in reply:
            print(f"{reply.status}\\t{piece!r}", flush=True)
        print("end", reply.status, flush=True)
        chat.send("and stream").stream()
""")


def test_a_plain_script_prints_progress(isolated):
    """A plain ``python`` script: no kernel, no server; the default store in the data dir."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD * 4,
        env=dict(os.environ),
        cwd=isolated,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-2:] == ["end complete", "and stream"]
    progress = [line.split("\t") for line in lines[:-2]]
    assert "".join(eval(piece) for _status, piece in progress) == " ".join(
        f"w{i}" for i in range(30)
    )
    # Printed while the reply was still coming: what a CI log shows as progress.
    assert sum(1 for status, _piece in progress if status == "streaming") > 3
    assert (isolated / "jupyter_data_dir" / "streamchat.db").exists()
