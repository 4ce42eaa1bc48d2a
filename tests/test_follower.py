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

    def open_(conversation_id, server=server, on_change=None, **backoff):
        transport = RemoteTransport(server, **backoff)
        opened.append(Conversation(conversation_id, transport, on_change))
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
