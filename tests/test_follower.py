"""The kernel's side of a chat: a Conversation following the hub over a real WebSocket to a real
Jupyter server (pytest-jupyter), or over the in-process hub.

The server runs on this test's event loop: everything that blocks (waiting for a reply, the
server discovery's HTTP check, closing a transport) runs in a thread.
"""

import asyncio
import json
import os
import time

import pytest
from traitlets.config import Config

from helpers import HANG_GUARD, new_id, streamchat_config
from jupyter_streamchat.kernel.discovery import ServerInfo, ServerUnavailable, find_server
from jupyter_streamchat.kernel.follower import Conversation, connect
from jupyter_streamchat.kernel.connection import EmbeddedTransport, RemoteTransport
from tcpproxy import TcpProxy

WORDS = " ".join(f"word{i}" for i in range(40)) + "\n  the end  "
LONG = " ".join(f"long{i}" for i in range(150))  # 1.5 s at the echo delay below


@pytest.fixture
def jp_server_config():
    return streamchat_config(EchoAgent={"delay": 0.01})


@pytest.fixture
def server(jp_serverapp, http_server, jp_http_port, jp_base_url):
    """The test server's address and token (``http_server`` makes it accept connections)."""
    return ServerInfo(
        f"http://127.0.0.1:{jp_http_port}{jp_base_url}", jp_serverapp.identity_provider.token
    )


@pytest.fixture
def follow(server):
    """``follow(conversation_id, server=..., on_change=...)`` -> a Conversation, closed after."""
    opened = []

    def open_(conversation_id, server=server, on_change=None, approve=None, **backoff):
        transport = RemoteTransport(server, **backoff)
        opened.append(Conversation(conversation_id, transport, on_change, approve))
        return opened[-1]

    yield open_
    for conversation in opened:
        conversation.close()


async def until(condition, what: str, timeout: float = HANG_GUARD):
    """Poll ``condition`` without blocking the server's loop; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def synced(conversation):
    await asyncio.to_thread(conversation.wait_synced, HANG_GUARD)
    return conversation


async def wait(reply):
    return await asyncio.to_thread(reply.wait, HANG_GUARD)


def roles_and_texts(messages):
    return [(m["role"], m["text"], m["status"]) for m in messages]


# -- over the Jupyter server ---------------------------------------------------------------


async def test_send_streams_the_exact_reply(follow, rest):
    changes = []
    conversation = await synced(follow(new_id("c-"), on_change=changes.append))
    assert conversation.remote and conversation.messages == []

    reply = conversation.send(WORDS, "echo")
    assert reply.status == "pending" and reply.message_id is None  # send returned at once
    await wait(reply)
    assert (reply.text, reply.status, reply.error) == (WORDS, "complete", None)
    assert reply.done and reply.message_id
    assert roles_and_texts(conversation.messages) == [
        ("user", WORDS, "complete"),
        ("assistant", WORDS, "complete"),
    ]
    assert conversation.messages[1]["messageId"] == reply.message_id
    # on_change at message boundaries only: history, accepted, complete; never per chunk.
    assert [[m["status"] for m in change] for change in changes] == [
        [],
        ["complete", "streaming"],
        ["complete", "complete"],
    ]

    stored = await rest("conversations", conversation.conversation_id)
    assert [m["text"] for m in stored["messages"]] == [WORDS, WORDS]
    assert "complete" in repr(reply) and reply._repr_markdown_() == WORDS


async def test_messages_sent_elsewhere_show_up(follow, chat):
    conversation = await synced(follow(new_id("c-")))
    browser = await chat()
    await browser.send_message("from the browser", conversation=conversation.conversation_id)
    mid = (await browser.expect("MESSAGE_ACCEPTED"))["messageId"]
    await browser.chunks_until_complete(mid)
    await until(
        lambda: [m["status"] for m in conversation.messages] == ["complete", "complete"],
        "the browser's exchange to reach the kernel",
    )
    assert roles_and_texts(conversation.messages) == [
        ("user", "from the browser", "complete"),
        ("assistant", "from the browser", "complete"),
    ]


async def test_stop_keeps_the_partial_text(follow, rest):
    conversation = await synced(follow(new_id("c-")))
    reply = conversation.send(LONG, "echo")
    await until(lambda: len(reply.text) > 20, "some text")
    reply.stop()
    await wait(reply)
    assert reply.status == "stopped"
    assert 20 < len(reply.text) < len(LONG) and LONG.startswith(reply.text)
    assert conversation.messages[-1]["text"] == reply.text
    stored = (await rest("conversations", conversation.conversation_id))["messages"][-1]
    assert (stored["status"], stored["text"]) == ("stopped", reply.text)


async def test_stop_before_acceptance_and_stop_all(follow):
    conversation = await synced(follow(new_id("c-")))
    early = conversation.send(LONG, "echo")
    early.stop()  # not yet accepted: stopped as soon as it is
    await wait(early)
    assert early.status == "stopped" and LONG.startswith(early.text)

    first, second = conversation.send(LONG, "echo"), conversation.send(LONG, "echo")
    await until(lambda: first.text and second.text, "both replies to stream")
    conversation.stop()
    assert [(await wait(r)).status for r in (first, second)] == ["stopped", "stopped"]


async def test_unknown_agent_ends_the_reply_with_the_hubs_message(follow):
    conversation = await synced(follow(new_id("c-")))
    reply = await wait(conversation.send("hello", "no-such-agent"))
    assert (reply.status, reply.error_code, reply.message_id) == ("error", "unknown_agent", None)
    assert "no-such-agent" in reply.error and "echo" in reply.error  # names the choices
    assert "no-such-agent" in repr(reply) and "no-such-agent" in reply._repr_markdown_()
    assert conversation.messages == []  # nothing was stored


async def test_reconnects_mid_stream_without_gap_or_duplicate(follow, server, rest, jp_http_port):
    with TcpProxy("127.0.0.1", jp_http_port) as proxy:
        conversation = await synced(
            follow(new_id("c-"), server=through(proxy, server), max_backoff=0.2)
        )
        reply = conversation.send(LONG, "echo")
        for cut in (1, 2):
            await until(lambda: len(reply.text) > cut * 150, f"text before cut {cut}")
            assert proxy.cut("") == 1  # the network path dies: a TCP reset, no close frame
            await until(lambda: conversation.transport.connections > cut, f"reconnection {cut}")
        await wait(reply)
    assert (reply.text, reply.status) == (LONG, "complete")
    assert roles_and_texts(conversation.messages) == [
        ("user", LONG, "complete"),
        ("assistant", LONG, "complete"),
    ]
    stored = await rest("conversations", conversation.conversation_id)
    assert len(stored["messages"]) == 2


async def test_a_message_sent_while_offline_goes_once_on_reconnect(
    follow, server, rest, jp_http_port
):
    with TcpProxy("127.0.0.1", jp_http_port) as proxy:
        conversation = await synced(
            follow(new_id("c-"), server=through(proxy, server), max_backoff=0.2)
        )
        proxy.down()
        await until(lambda: not conversation.transport.connected, "the disconnection")
        reply = conversation.send(WORDS, "echo")
        stop_me = conversation.send(LONG, "echo")
        stop_me.stop()
        await asyncio.sleep(0.3)  # several reconnection attempts, all refused
        assert (reply.status, stop_me.status) == ("pending", "pending")
        proxy.up()
        await wait(reply)
        await wait(stop_me)
    assert (reply.text, reply.status) == (WORDS, "complete")
    assert stop_me.status == "stopped"
    stored = await rest("conversations", conversation.conversation_id)
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"] * 2


async def test_reattach_gets_history_and_the_live_rest(follow, rest):
    conversation_id = new_id("c-")
    first = await synced(follow(conversation_id))
    await wait(first.send(WORDS, "echo"))
    streaming = first.send(LONG, "echo")
    await until(lambda: len(streaming.text) > 20, "some text")
    await asyncio.to_thread(first.close)  # the kernel restarts, say; the reply goes on

    again = await synced(follow(conversation_id))
    assert [m["role"] for m in again.messages] == ["user", "assistant"] * 2
    assert again.messages[1]["text"] == WORDS
    await until(lambda: again.messages[-1]["status"] == "complete", "the reply to end")
    assert roles_and_texts(again.messages)[2:] == [
        ("user", LONG, "complete"),
        ("assistant", LONG, "complete"),
    ]
    assert again.messages[-1]["messageId"] == streaming.message_id


# -- tool calls ----------------------------------------------------------------------------


def statuses(calls):
    return [(c["id"], c["name"], c["status"]) for c in calls]


async def test_tool_calls_follow_the_reply_and_come_back_in_the_history(follow):
    """The ``tools`` test agent (tests/plugins): a call that completes, one that fails, and
    one that asks for approval, answered here by the approve policy."""
    asked = []

    def approve(call):
        asked.append(call)
        return "allow_once"

    conversation = await synced(follow(new_id("c-"), approve=approve))
    reply = await wait(conversation.send("tool fail approve", "tools"))
    assert (reply.status, reply.text) == (
        "complete",
        "Reading 1. Writing 3. Written (allow_once). Done.",
    )
    calls = reply.tool_calls
    assert statuses(calls) == [
        ("call-1", "read_file", "completed"),
        ("call-2", "run", "failed"),
        ("call-3", "write_file", "completed"),
    ]
    read, run, write = calls
    assert (json.loads(read["arguments"]), read["title"], read["result"]) == (
        {"path": "f1.txt"},
        "Read f1.txt",
        "contents of f1.txt",
    )
    assert run["error"] == "exit status 1"
    assert (write["decision"], write["diff"]["newText"], write["result"]) == (
        "allow_once",
        "new\n",
        "wrote f3.txt",
    )
    assert all(c["endedAt"] >= c["startedAt"] > 0 for c in calls)
    # The policy saw the call once, as it waited, and ran on a thread of its own.
    assert [(c["id"], c["status"], c["title"]) for c in asked] == [
        ("call-3", "waiting", "Write f3.txt")
    ]
    reply.tool_calls[0]["status"] = "changed by the reader"  # a copy: the reply's stays
    assert reply.tool_calls == calls and conversation.messages[1]["toolCalls"] == calls

    # Another follower (a kernel restarted, say) gets the same states from the HISTORY.
    again = await synced(follow(conversation.conversation_id))
    assert again.messages[1]["toolCalls"] == calls
    assert "toolCalls" not in again.messages[0]


async def test_stop_while_a_call_runs_leaves_it_failed(follow, rest):
    conversation = await synced(follow(new_id("c-")))
    reply = conversation.send("tool hold 60", "tools")
    await until(lambda: len(reply.tool_calls) == 2, "the second call to start")
    assert statuses(reply.tool_calls)[1] == ("call-2", "sleep", "running")
    reply.stop()
    await wait(reply)
    assert reply.status == "stopped"
    assert statuses(reply.tool_calls) == [
        ("call-1", "read_file", "completed"),
        ("call-2", "sleep", "failed"),
    ]
    assert reply.tool_calls[1]["error"] == "not run: the reply ended first"
    stored = (await rest("conversations", conversation.conversation_id))["messages"][1]
    assert stored["toolCalls"] == reply.tool_calls


async def test_a_waiting_call_is_answered_by_hand_when_the_policy_passes(follow, chat):
    """``approve`` returning None leaves the call to others; ``reply.answer`` answers it, and
    an answer after the first gets ``not_waiting`` without upsetting the follower."""
    passed = []
    conversation = await synced(follow(new_id("c-"), approve=lambda call: passed.append(call)))
    reply = conversation.send("approve", "tools")
    await until(lambda: [c["status"] for c in reply.tool_calls] == ["waiting"], "the question")
    await until(lambda: passed, "the policy to be asked")
    with pytest.raises(ValueError, match="decision"):
        reply.answer("call-1", "maybe")
    reply.answer("call-1", "reject")
    await wait(reply)
    assert (reply.status, reply.text) == ("complete", "Writing 1. Not written (reject). Done.")
    assert statuses(reply.tool_calls) == [("call-1", "write_file", "failed")]
    assert reply.tool_calls[0]["decision"] == "reject"

    late = await chat()
    await late.send(
        "ANSWER_TOOL_CALL", messageId=reply.message_id, toolCallId="call-1", decision="allow_once"
    )
    refused = await late.expect("ERROR")
    assert (refused["code"], refused["messageId"]) == ("not_waiting", reply.message_id)
    reply.answer("call-1", "allow_once")  # the follower's own late answer: refused quietly
    await until(lambda: (conversation.last_error or {}).get("code") == "not_waiting", "the refusal")
    assert (await wait(conversation.send("tool", "tools"))).status == "complete"


async def test_a_policy_that_raises_rejects(follow):
    def approve(call):
        raise RuntimeError("no policy for " + call["name"])

    conversation = await synced(follow(new_id("c-"), approve=approve))
    reply = await wait(conversation.send("approve", "tools"))
    assert reply.text == "Writing 1. Not written (reject). Done."
    assert reply.tool_calls[0]["decision"] == "reject"


class RecordingTransport:
    """The transports' interface (jupyter_streamchat/kernel/connection.py), driven by hand: the
    test connects and drops it, plays the hub's frames, and reads what the follower sent."""

    def __init__(self):
        self.connected = False
        self.sent: list = []
        self.on_frame = self.on_connect = None

    def start(self, on_frame, on_connect) -> None:
        self.on_frame, self.on_connect = on_frame, on_connect

    def connect(self) -> None:
        self.connected = True
        self.on_connect()

    def send(self, frame: dict) -> None:
        if self.connected:
            self.sent.append(json.loads(json.dumps(frame)))

    def close(self) -> None:
        self.connected = False

    def taken(self) -> list:
        sent, self.sent = self.sent, []
        return sent


def test_tool_calls_by_seq_history_and_end_with_answers_sent_again():
    """The rules on their own: frames' states by seq, the newer states of a HISTORY, an answer
    sent again after a reconnection until the call is seen past waiting, and calls left
    unfinished by a final frame that does not say so (an older hub) shown failed."""
    transport = RecordingTransport()
    asked = []
    conversation = Conversation(
        "c-1", transport, approve=lambda call: asked.append(call["id"]) or "allow_always"
    )
    try:
        transport.connect()
        assert transport.taken() == [{"type": "SUBSCRIBE", "conversationId": "c-1"}]
        transport.on_frame({"type": "HISTORY", "conversationId": "c-1", "messages": []})
        reply = conversation.send("go", "tools")
        client_id = transport.taken()[0]["clientMessageId"]
        transport.on_frame(
            {
                "type": "MESSAGE_ACCEPTED",
                "clientMessageId": client_id,
                "conversationId": "c-1",
                "userMessageId": "u-1",
                "messageId": "r-1",
                "agentId": "tools",
            }
        )

        def chunk(seq, text, calls=None, **end):
            frame = {
                "type": "MESSAGE_CHUNK",
                "messageId": "r-1",
                "conversationId": "c-1",
                "agentId": "tools",
                "seq": seq,
                "chunk": text,
                "isComplete": bool(end),
                **end,
            }
            if calls is not None:
                frame["toolCalls"] = calls
            transport.on_frame(frame)

        def call(id_, status, **more):
            return {"id": id_, "name": "t" + id_, "status": status, "arguments": "{}", **more}

        chunk(1, "a", [call("1", "running"), call("2", "pending")])
        chunk(1, "a", [call("1", "failed")])  # again (a replay): dropped with its text
        chunk(3, "c", [call("9", "running")])  # after a gap: dropped, RESUME asked
        assert transport.taken() == [{"type": "RESUME", "messageId": "r-1", "afterSeq": 1}]
        chunk(2, "b", [call("1", "completed", result="ok"), call("3", "waiting")])
        assert statuses(reply.tool_calls) == [
            ("1", "t1", "completed"),
            ("2", "t2", "pending"),
            ("3", "t3", "waiting"),
        ]
        answer = {
            "type": "ANSWER_TOOL_CALL",
            "messageId": "r-1",
            "toolCallId": "3",
            "decision": "allow_always",
        }
        deadline = time.monotonic() + HANG_GUARD
        while not transport.sent:
            assert time.monotonic() < deadline, "no answer from the policy"
            time.sleep(0.01)
        assert transport.taken() == [answer] and asked == ["3"]

        transport.connected = False  # the connection drops before the hub took the answer
        transport.connect()
        assert transport.taken() == [
            {"type": "RESUME", "messageId": "r-1", "afterSeq": 2},
            answer,
            {"type": "SUBSCRIBE", "conversationId": "c-1"},
        ]
        stored = {
            "messageId": "r-1",
            "role": "assistant",
            "agentId": "tools",
            "text": "abc",
            "status": "streaming",
            "lastSeq": 3,
            "toolCalls": [
                call("1", "completed", result="ok"),
                call("2", "running"),
                call("3", "running", decision="allow_always"),
            ],
        }
        user = {
            "messageId": "u-1",
            "role": "user",
            "agentId": "tools",
            "text": "go",
            "status": "complete",
            "lastSeq": 0,
            "context": [{"kind": "cell", "label": "In [1]", "text": "x = 1"}],
        }
        transport.on_frame({"type": "HISTORY", "conversationId": "c-1", "messages": [user, stored]})
        assert reply.text == "abc"
        assert statuses(reply.tool_calls) == [
            ("1", "t1", "completed"),
            ("2", "t2", "running"),
            ("3", "t3", "running"),
        ]
        assert conversation.messages[0]["context"] == user["context"]
        transport.connected = False
        transport.connect()  # the call was seen answered: no answer goes again
        assert [f["type"] for f in transport.taken()] == ["RESUME", "SUBSCRIBE"]

        chunk(4, "", isComplete=True, status="stopped")  # no toolCalls on the final frame
        reply.wait(HANG_GUARD)
        assert statuses(reply.tool_calls) == [
            ("1", "t1", "completed"),
            ("2", "t2", "failed"),
            ("3", "t3", "failed"),
        ]
        assert [c.get("error") for c in reply.tool_calls] == [
            None,
            "not run: the reply ended first",
            "not run: the reply ended first",
        ]
        # Read after the end: the text, then each call's last state.
        assert [e if isinstance(e, str) else e["status"] for e in reply.events()] == [
            "abc",
            "completed",
            "failed",
            "failed",
        ]
        assert asked == ["3"]  # asked once, whatever came again
    finally:
        conversation.close()


# -- finding the server --------------------------------------------------------------------


async def test_find_server_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("STREAMCHAT_SERVER_URL", server.url.rstrip("/"))
    monkeypatch.setenv("STREAMCHAT_TOKEN", server.token)
    assert await asyncio.to_thread(find_server) == server
    assert server.token not in repr(server)

    monkeypatch.setenv("STREAMCHAT_TOKEN", "wrong")
    with pytest.raises(ServerUnavailable, match="403.*refused the token"):
        await asyncio.to_thread(find_server)


async def test_find_server_that_launched_the_kernel(
    server, jp_http_port, jp_base_url, monkeypatch, tmp_path
):
    monkeypatch.delenv("STREAMCHAT_SERVER_URL", raising=False)
    runtime = tmp_path / "kernel-runtime"
    runtime.mkdir()
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    info = {
        "url": f"http://localhost:{jp_http_port}{jp_base_url}",
        "hostname": "0.0.0.0",
        "port": jp_http_port,
        "base_url": jp_base_url,
        "sock": "",
        "secure": False,
        "token": server.token,
        "pid": os.getpid(),
    }
    (runtime / f"jpserver-{os.getpid()}.json").write_text(json.dumps(info))

    monkeypatch.setenv("JPY_PARENT_PID", str(os.getpid()))
    assert await asyncio.to_thread(find_server) == server  # wildcard host -> loopback

    conversation = await asyncio.to_thread(connect, new_id("c-"))
    try:
        assert conversation.remote and conversation.server_url == server.url
        await wait(conversation.send("via discovery", "echo"))
        assert conversation.messages[-1]["text"] == "via discovery"
    finally:
        await asyncio.to_thread(conversation.close)

    # A server this process's parent did not start is not this kernel's.
    monkeypatch.setenv("JPY_PARENT_PID", "1")
    assert await asyncio.to_thread(find_server) is None


# -- without a Jupyter server --------------------------------------------------------------


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    for name in ("JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    for name in ("STREAMCHAT_STORE_URL", "STREAMCHAT_SERVER_URL", "JPY_PARENT_PID"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_embedded_send_stop_and_history(isolated):
    store_url = f"sqlite:///{isolated}/embedded.db"
    fast = Config({"EchoAgent": {"delay": 0.01}})
    changes = []
    conversation = Conversation("notes", EmbeddedTransport(store_url, fast), changes.append)
    try:
        conversation.wait_synced(HANG_GUARD)
        assert not conversation.remote and conversation.server_url is None
        reply = conversation.send(WORDS, "echo").wait(HANG_GUARD)
        assert (reply.text, reply.status) == (WORDS, "complete")

        long_reply = conversation.send(LONG, "echo")
        deadline = time.monotonic() + HANG_GUARD
        while len(long_reply.text) < 20:
            assert time.monotonic() < deadline, "no text"
            time.sleep(0.01)
        conversation.stop()
        assert long_reply.wait(HANG_GUARD).status == "stopped"
        assert LONG.startswith(long_reply.text) and len(long_reply.text) < len(LONG)

        refused = conversation.send("hi", "no-such-agent").wait(HANG_GUARD)
        assert refused.error_code == "unknown_agent" and "no-such-agent" in refused.error

        assert roles_and_texts(conversation.messages) == [
            ("user", WORDS, "complete"),
            ("assistant", WORDS, "complete"),
            ("user", LONG, "complete"),
            ("assistant", long_reply.text, "stopped"),
        ]
        assert [len(change) for change in changes] == [0, 2, 2, 4, 4]
    finally:
        conversation.close()

    # Another follower of the same store in this process shares its hub, and its history.
    again = Conversation("notes", EmbeddedTransport(store_url))
    try:
        again.wait_synced(HANG_GUARD)
        assert again.messages == conversation.messages
    finally:
        again.close()


def test_connect_without_a_server_uses_the_in_process_hub(isolated):
    conversation = connect(new_id("c-"), store_url=f"sqlite:///{isolated}/chat.db")
    try:
        assert not conversation.remote
        reply = conversation.send("headless", "echo").wait(HANG_GUARD)
        assert (reply.text, reply.status) == ("headless", "complete")
    finally:
        conversation.close()
    with pytest.raises(RuntimeError, match="closed"):
        conversation.send("after close", "echo")


def through(proxy: TcpProxy, server: ServerInfo) -> ServerInfo:
    """The same server, reached through ``proxy``."""
    path = server.url.split("/", 3)[3]
    return ServerInfo(f"http://127.0.0.1:{proxy.port}/{path}", server.token)
