"""A chat view's frames through the kernel (jupyter_streamchat/widget/comm.py), as a front end
without a hub sends them: a real ipykernel, driven over its shell and IOPub channels by
jupyter_client, a real ``ChatWidget`` and the kernel's own embedded hub over a real SQLite file.

The test plays the view: it sends the widget's custom messages (``comm_msg``, method
``custom``) in the envelope of js/src/widget/commtransport.ts and reads the kernel's.
LIST_AGENTS, the frame the comm adds to the contract, is also tried over a server's WebSocket.
"""

from __future__ import annotations

import queue
import time
import uuid

import pytest
from jupyter_client import KernelManager

from helpers import HANG_GUARD
from jupyter_streamchat import protocol as p
from jupyter_streamchat.kernel.connection import MAX_MESSAGE_BYTES
from jupyter_streamchat.widget.comm import ENVELOPE, MAX_FRAME_BYTES, MAX_VIEWS
from server_process import isolated_env

GUARD = 60.0  # seconds; a hang guard, never a performance claim


def words(n: int) -> str:
    return " ".join(f"w{i:04d}" for i in range(n))


class Kernel:
    """A kernel with a ``ChatWidget`` in it (``w``), seen from the front end's side."""

    def __init__(self, client):
        self.kc = client
        self.comm_id: str | None = None
        self.log: list = []  # every IOPub message read, in order
        self.inbox: dict = {}  # view id -> queue of envelopes for it

    # -- the kernel's side -----------------------------------------------------------------

    def run(self, code: str, timeout: float = GUARD) -> str:
        """Run ``code``; its stdout. Fails with the traceback if it raised."""
        msg_id = self.kc.execute(code)
        out, error = [], None
        deadline = time.monotonic() + timeout
        while True:
            msg = self._next(deadline)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content["name"] == "stdout":
                out.append(content["text"])
            elif kind == "error":
                error = "\n".join(content["traceback"])
            elif kind == "status" and content["execution_state"] == "idle":
                break
        assert error is None, error
        return "".join(out)

    def start_cell(self, code: str) -> str:
        """Send ``code`` to run without waiting; its request's id."""
        return self.kc.execute(code)

    def wait_idle(self, msg_id: str, timeout: float = GUARD) -> int:
        """Wait for the end of the run of request ``msg_id``; its index in :attr:`log`."""
        for index, msg in enumerate(self.log):
            if self._is_idle(msg, msg_id):
                return index
        deadline = time.monotonic() + timeout
        while True:
            msg = self._next(deadline)
            if self._is_idle(msg, msg_id):
                return len(self.log) - 1

    @staticmethod
    def _is_idle(msg: dict, msg_id: str) -> bool:
        return (
            msg["msg_type"] == "status"
            and msg["content"]["execution_state"] == "idle"
            and msg["parent_header"].get("msg_id") == msg_id
        )

    # -- the view's side -------------------------------------------------------------------

    def post(self, view: str, kind: str, **fields) -> None:
        """Send one envelope from view ``view``, as the widget's JavaScript does."""
        assert self.comm_id, "no widget yet"
        data = {"method": "custom", "content": {ENVELOPE: kind, "view": view, **fields}}
        self.kc.shell_channel.send(
            self.kc.session.msg("comm_msg", {"comm_id": self.comm_id, "data": data})
        )

    def frame(self, view: str, frame) -> None:
        self.post(view, "frame", frame=frame)

    def open(self, view: str) -> None:
        self.post(view, "open")
        envelope = self.envelope(view)
        assert envelope[ENVELOPE] == "opened", envelope

    def envelope(self, view: str, timeout: float = GUARD) -> dict:
        """The next envelope the kernel sent to ``view``."""
        box = self.inbox.setdefault(view, queue.Queue())
        deadline = time.monotonic() + timeout
        while box.empty():
            self._next(deadline)
        return box.get_nowait()

    def recv(self, view: str, timeout: float = GUARD) -> dict:
        """The next frame for ``view`` (checked against the contract)."""
        envelope = self.envelope(view, timeout)
        assert envelope[ENVELOPE] == "frame", envelope
        frame = envelope["frame"]
        assert p.is_server_frame(frame), frame
        return frame

    def expect(self, view: str, kind: str) -> dict:
        """The next frame of type ``kind`` for ``view`` (others before it are skipped)."""
        for _ in range(10_000):
            frame = self.recv(view)
            if frame["type"] == kind:
                return frame
        raise AssertionError(f"no {kind}")

    def reply(self, view: str, message_id: str) -> list:
        """Every frame of reply ``message_id`` for ``view``, up to its final one."""
        frames = []
        for _ in range(100_000):
            frame = self.recv(view)
            if frame["type"] == "MESSAGE_CHUNK" and frame["messageId"] == message_id:
                frames.append(frame)
                if frame["isComplete"]:
                    return frames
        raise AssertionError("no final frame")

    def pending(self, view: str) -> list:
        """Envelopes for ``view`` read but not yet taken, after the kernel finished a cell run
        now (so everything it sent before is in)."""
        self.run("pass")
        box = self.inbox.setdefault(view, queue.Queue())
        return [box.get_nowait() for _ in range(box.qsize())]

    def logged_frames(self) -> list:
        """``[(index in log, frame)]`` of every frame the kernel sent to a view so far."""
        found = []
        for index, msg in enumerate(self.log):
            data = msg["content"].get("data", {}) if msg["msg_type"] == "comm_msg" else {}
            envelope = data.get("content") if data.get("method") == "custom" else None
            if isinstance(envelope, dict) and envelope.get(ENVELOPE) == "frame":
                found.append((index, envelope["frame"]))
        return found

    def _next(self, deadline: float) -> dict:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "hang guard: the kernel did not answer"
        msg = self.kc.get_iopub_msg(timeout=remaining)
        self.log.append(msg)
        content = msg["content"]
        if msg["msg_type"] == "comm_open" and "conversation_id" in content["data"].get("state", {}):
            self.comm_id = content["comm_id"]
        elif msg["msg_type"] == "comm_msg" and content["comm_id"] == self.comm_id:
            data = content["data"]
            envelope = data.get("content") if data.get("method") == "custom" else None
            if isinstance(envelope, dict) and ENVELOPE in envelope:
                self.inbox.setdefault(envelope["view"], queue.Queue()).put(envelope)
        return msg


@pytest.fixture
def kernel(tmp_path):
    # Jupyter state in tmp_path, and no server to find: the widget uses the kernel's own hub,
    # over streamchat.db in the isolated Jupyter data dir.
    env = isolated_env(
        tmp_path, STREAMCHAT_SERVER_URL=None, STREAMCHAT_TOKEN=None, JPY_PARENT_PID=None
    )
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(env=env, cwd=str(tmp_path))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=GUARD)
        k = Kernel(client)
        k.run(
            "from jupyter_streamchat import ChatWidget\n"
            'w = ChatWidget(agent="echo", conversation_id="c-comm")\n'
            "print(w.remote)"
        )
        assert k.comm_id, "the widget opened no comm"
        yield k
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def send_frame(text: str, conversation: str = "c-comm") -> dict:
    return {
        "type": "SEND_MESSAGE",
        "conversationId": conversation,
        "agentId": "echo",
        "text": text,
        "clientMessageId": uuid.uuid4().hex,
    }


def test_a_view_chats_through_the_kernel(kernel):
    assert kernel.run("print(w.remote, getattr(w, '_view_attached', False))") == "False False\n"
    kernel.open("v1")
    assert kernel.run("print(w._view_attached)") == "True\n"
    # The picker's list, from the kernel's hub.
    kernel.frame("v1", {"type": "LIST_AGENTS"})
    agents = kernel.recv("v1")
    assert agents["type"] == "AGENTS"
    assert "echo" in [a["id"] for a in agents["agents"]]
    assert agents["maxMessageBytes"] == MAX_MESSAGE_BYTES
    kernel.frame("v1", {"type": "SUBSCRIBE", "conversationId": "c-comm"})
    assert kernel.recv("v1") == {
        "type": "HISTORY",
        "conversationId": "c-comm",
        "messages": [],
        "hasMore": False,
    }
    sent = send_frame("hello **there** from the view")
    kernel.frame("v1", sent)
    accepted = kernel.expect("v1", "MESSAGE_ACCEPTED")
    assert accepted["clientMessageId"] == sent["clientMessageId"]
    frames = kernel.reply("v1", accepted["messageId"])
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert len(frames) > 2  # streamed, not in one piece
    assert "".join(f["chunk"] for f in frames) == sent["text"]
    assert frames[-1]["status"] == "complete"
    # The widget's Python object follows the same conversation.
    out = kernel.run(
        "import time\n"
        "for _ in range(300):\n"
        "    if len(w.messages) == 2 and w.messages[-1]['status'] == 'complete':\n"
        "        break\n"
        "    time.sleep(0.1)\n"
        "print([(m['role'], m['text'], m['status']) for m in w.messages])"
    )
    assert out == (
        f"[('user', {sent['text']!r}, 'complete'), ('assistant', {sent['text']!r}, 'complete')]\n"
    )


def test_python_api_streams_into_the_view_while_its_cell_runs(kernel):
    kernel.open("v1")
    kernel.frame("v1", {"type": "SUBSCRIBE", "conversationId": "c-comm"})
    kernel.expect("v1", "HISTORY")
    cell = kernel.start_cell('r = w.send("from python, word by word")\nprint(r.wait(30).status)')
    accepted = kernel.expect("v1", "MESSAGE_ACCEPTED")
    assert accepted["text"] == "from python, word by word"
    frames = kernel.reply("v1", accepted["messageId"])
    assert "".join(f["chunk"] for f in frames) == "from python, word by word"
    assert frames[-1]["status"] == "complete"
    # The frames went out from the hub's thread while the cell still waited in r.wait(): all
    # of them come before the end of that cell on IOPub (which keeps the order things are sent).
    idle = kernel.wait_idle(cell)
    positions = [
        i for i, frame in kernel.logged_frames() if frame.get("messageId") == accepted["messageId"]
    ]
    assert len(positions) == len(frames) + 1 and max(positions) < idle


def test_stop_from_the_view_waits_for_the_running_cell(kernel):
    kernel.open("v1")
    sent = send_frame(words(400))  # 20 s of echo
    kernel.frame("v1", sent)
    accepted = kernel.expect("v1", "MESSAGE_ACCEPTED")
    first = kernel.recv("v1")
    assert first["type"] == "MESSAGE_CHUNK" and not first["isComplete"]
    # A cell runs; the stop asked meanwhile is handled once it ends.
    cell = kernel.start_cell("import time\ntime.sleep(1.5)")
    kernel.frame("v1", {"type": "STOP_GENERATING", "messageId": accepted["messageId"]})
    frames = [first] + kernel.reply("v1", accepted["messageId"])
    final = frames[-1]
    assert final["status"] == "stopped"
    idle = kernel.wait_idle(cell)
    ended_at = next(i for i, frame in kernel.logged_frames() if frame == final)
    assert ended_at > idle  # the stop waited for the cell
    text = "".join(f["chunk"] for f in frames)
    assert 0 < len(text) < len(sent["text"]) and sent["text"].startswith(text)
    # The partial reply is kept, as the Python object sees it.
    out = kernel.run(
        "import time\n"
        "for _ in range(300):\n"
        "    if w.messages and w.messages[-1]['status'] == 'stopped': break\n"
        "    time.sleep(0.1)\n"
        "print(w.messages[-1]['status'], len(w.messages[-1]['text']))"
    )
    assert out == f"stopped {len(text)}\n"


def test_python_stop_ends_a_reply_the_view_started(kernel):
    kernel.open("v1")
    kernel.frame("v1", send_frame(words(400)))
    accepted = kernel.expect("v1", "MESSAGE_ACCEPTED")
    kernel.expect("v1", "MESSAGE_CHUNK")
    # The object learns of the reply from the hub; then w.stop() stops it.
    kernel.run(
        "import time\n"
        "for _ in range(300):\n"
        "    if w.messages and w.messages[-1]['status'] == 'streaming': break\n"
        "    time.sleep(0.1)\n"
        "w.stop()"
    )
    assert kernel.reply("v1", accepted["messageId"])[-1]["status"] == "stopped"


def test_bad_frames_are_answered_and_the_view_carries_on(kernel):
    kernel.open("v1")
    kernel.frame("v1", ["SUBSCRIBE"])
    error = kernel.recv("v1")
    assert (error["type"], error["code"]) == ("ERROR", "bad_json")
    kernel.frame("v1", {"type": "NO_SUCH_THING", "conversationId": "c-comm"})
    error = kernel.recv("v1")
    assert (error["code"], error["conversationId"]) == ("unknown_type", "c-comm")
    kernel.frame("v1", {"type": "RESUME", "messageId": "m", "afterSeq": -1})
    assert kernel.recv("v1")["code"] == "bad_field"
    # A message over the hub's limit, and a frame over the comm's own.
    over = send_frame("x" * (MAX_MESSAGE_BYTES + 1))
    kernel.frame("v1", over)
    error = kernel.recv("v1")
    assert (error["code"], error["clientMessageId"]) == ("too_large", over["clientMessageId"])
    huge = send_frame("y")
    huge["padding"] = "z" * MAX_FRAME_BYTES
    kernel.frame("v1", huge)
    error = kernel.recv("v1")
    assert (error["code"], error["clientMessageId"]) == ("too_large", huge["clientMessageId"])
    assert "limit" in error["message"]
    # Nothing was stored, and the same view goes on.
    kernel.frame("v1", {"type": "SUBSCRIBE", "conversationId": "c-comm"})
    assert kernel.recv("v1")["messages"] == []
    # Envelopes without a view, or not the chat's, get nothing; the widget stays usable.
    kernel.post("", "frame", frame={"type": "SUBSCRIBE", "conversationId": "c-comm"})
    kernel.frame("v1", {"type": "LIST_AGENTS"})
    assert kernel.recv("v1")["type"] == "AGENTS"


def test_each_view_has_its_own_connection(kernel):
    kernel.open("v1")
    kernel.open("v2")
    for view in ("v1", "v2"):
        kernel.frame(view, {"type": "SUBSCRIBE", "conversationId": "c-comm"})
        kernel.expect(view, "HISTORY")
    # An answer goes to the view that asked only.
    kernel.frame(
        "v1",
        {"type": "LOAD_HISTORY", "conversationId": "c-comm", "beforeMessageId": "no-such-message"},
    )
    assert kernel.recv("v1")["code"] == "unknown_message"
    # Live frames of the conversation reach both, once each.
    sent = send_frame("seen twice")
    kernel.frame("v2", sent)
    for view in ("v1", "v2"):
        accepted = kernel.expect(view, "MESSAGE_ACCEPTED")
        frames = kernel.reply(view, accepted["messageId"])
        assert "".join(f["chunk"] for f in frames) == "seen twice"
    assert [e for e in kernel.pending("v1") if e["frame"].get("type") == "ERROR"] == []
    assert kernel.pending("v2") == []
    # A view that closes is sent nothing more; a frame for it gets "closed".
    kernel.post("v1", "close")
    kernel.frame("v2", send_frame("after v1 left"))
    accepted = kernel.expect("v2", "MESSAGE_ACCEPTED")
    kernel.reply("v2", accepted["messageId"])
    assert kernel.pending("v1") == []
    kernel.frame("v1", {"type": "SUBSCRIBE", "conversationId": "c-comm"})
    assert kernel.envelope("v1")[ENVELOPE] == "closed"
    assert kernel.run("print(w._relay.views)") == "1\n"


def test_views_past_the_limit_let_the_least_recent_go(kernel):
    views = [f"view-{i}" for i in range(MAX_VIEWS + 1)]
    for view in views:
        kernel.open(view)
    assert kernel.run("print(w._relay.views)") == f"{MAX_VIEWS}\n"
    closed = kernel.envelope(views[0])
    assert closed[ENVELOPE] == "closed" and "places" in closed["reason"]
    # It opens again (as the view does) and works; the next least recent goes.
    kernel.open(views[0])
    kernel.frame(views[0], {"type": "LIST_AGENTS"})
    assert kernel.recv(views[0])["type"] == "AGENTS"
    assert kernel.envelope(views[1])[ENVELOPE] == "closed"


def test_a_closed_widget_lets_its_views_go(kernel):
    kernel.open("v1")
    kernel.run("relay = w._relay\nw.close()\nprint(relay.views)")
    assert kernel.run("print(relay.views)") == "0\n"


async def test_list_agents_over_the_servers_websocket(chat, rest):
    client = await chat()
    await client.send("LIST_AGENTS")
    frame = await client.recv(HANG_GUARD)
    assert p.is_server_frame(frame)
    # The same as GET api/agents says, as a frame.
    assert frame == {"type": "AGENTS", **await rest("agents")}
    assert "echo" in [a["id"] for a in frame["agents"]]
