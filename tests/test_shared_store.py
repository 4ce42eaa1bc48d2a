"""Several real ``jupyter server`` processes on one Postgres: live replies shared between
servers, stop across servers, conversation lists that follow each other, a dead server's
replies ended, Postgres going away mid-stream, and two users' servers on one database.

Each server is a subprocess (server_process.py) with its own Jupyter dirs; they share only the
database. Timings are printed, never asserted beyond hang guards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from pathlib import Path

import pytest

from helpers import HANG_GUARD, assert_contiguous, new_id, text_of
from server_process import JupyterServer, isolated_env

pytestmark = pytest.mark.subprocess

LEASE = 3.0  # seconds: a dead server's replies end within about this plus a third of it
LONG_TEXT = " ".join(f"word{i}" for i in range(400))  # 4 s of echo at 10 ms a word
DEAD_GUARD = 30.0  # seconds for a dead server's reply to end; a hang guard only


def start_server(
    base: Path, url: str, name: str, *args: str, lease: float = LEASE
) -> JupyterServer:
    server = JupyterServer(
        base / name,
        f"--StreamChatApp.store_url={url}",
        "--EchoAgent.delay=0.01",
        f"--PostgresStore.lease_seconds={lease}",
        *args,
        # The tests' agent plug-ins (the ``tools`` agent) on the servers' path.
        env=isolated_env(base / name, PYTHONPATH=str(Path(__file__).parent / "plugins")),
        name=name,
    )
    return server.__enter__()


@contextlib.contextmanager
def two_servers(base: Path, url: str):
    """Servers A and B on one database."""
    a = start_server(base, url, "a")
    try:
        b = start_server(base, url, "b")
        try:
            yield a, b
        finally:
            b.stop()
    finally:
        a.stop()


@pytest.fixture(scope="module")
def pair(pg_cluster, tmp_path_factory):
    """Servers A and B shared by the tests that leave them running."""
    with two_servers(tmp_path_factory.mktemp("shared"), pg_cluster.create_database()) as both:
        yield both


@pytest.fixture
def fresh_pair(pg_cluster, tmp_path):
    """Servers A and B on a database of their own, for a test that kills or suspends one."""
    with two_servers(tmp_path, pg_cluster.create_database()) as both:
        yield both


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 120))


async def read_until(client, predicate, guard: float = HANG_GUARD) -> list:
    """Frames up to and including the first one ``predicate`` accepts."""
    frames = []
    deadline = time.monotonic() + guard
    while True:
        frame = await client.recv(max(0.1, deadline - time.monotonic()))
        frames.append(frame)
        if predicate(frame):
            return frames


def chunks_of(frames: list, message_id: str) -> list:
    return [f for f in frames if f["type"] == "MESSAGE_CHUNK" and f["messageId"] == message_id]


async def subscribed(server: JupyterServer, conversation: str):
    client = await server.chat()
    await client.send("SUBSCRIBE", conversationId=conversation)
    history = await client.expect("HISTORY")
    return client, history


# -- 3. live replies across servers ------------------------------------------------------


def test_a_reply_generated_on_a_streams_frame_for_frame_to_clients_of_b(pair):
    a, b = pair

    async def go():
        conversation = new_id("c-")
        tab1, _ = await subscribed(b, conversation)
        tab2, _ = await subscribed(b, conversation)
        sender = await a.chat()
        text = " ".join(f"w{i}" for i in range(150))
        await sender.send_message(text, conversation=conversation)
        accepted = await sender.expect("MESSAGE_ACCEPTED")
        mid = accepted["messageId"]
        on_a = await sender.chunks_until_complete(mid)
        seen = []
        for tab in (tab1, tab2):
            frames = await read_until(
                tab,
                lambda f: (
                    f["type"] == "MESSAGE_CHUNK" and f["messageId"] == mid and f["isComplete"]
                ),
            )
            accepted_b = [f for f in frames if f["type"] == "MESSAGE_ACCEPTED"]
            assert accepted_b and accepted_b[0]["messageId"] == mid
            assert accepted_b[0]["userMessageId"] == accepted["userMessageId"]
            assert accepted_b[0]["text"] == text  # other tabs show the user's message
            seen.append(chunks_of(frames, mid))
        for client in (tab1, tab2, sender):
            client.close()
        return on_a, seen

    on_a, seen = run(go())
    assert_contiguous(on_a)
    assert on_a[-1]["status"] == "complete"
    for frames in seen:
        assert_contiguous(frames)
        # Frame for frame: the same seqs, chunks and final frame as the owner's own client.
        assert [(f["seq"], f["chunk"], f["isComplete"]) for f in frames] == [
            (f["seq"], f["chunk"], f["isComplete"]) for f in on_a
        ]


def test_resume_on_b_mid_stream_and_after_a_drop_is_gap_free(pair):
    a, b = pair

    async def go():
        conversation = new_id("c-")
        sender = await a.chat()
        await sender.send_message(LONG_TEXT, conversation=conversation)
        mid = (await sender.expect("MESSAGE_ACCEPTED"))["messageId"]
        first = await b.chat()
        await first.send("RESUME", messageId=mid, afterSeq=0)
        early = []
        while len(early) < 5:
            frame = await first.recv()
            if frame["type"] == "MESSAGE_CHUNK":
                early.append(frame)
        first.close()  # the connection drops mid-stream
        held = early[-1]["seq"]
        await asyncio.sleep(0.3)
        second = await b.chat()
        await second.send("RESUME", messageId=mid, afterSeq=held)
        rest = await second.chunks_until_complete(mid, timeout=30)
        on_a = await sender.chunks_until_complete(mid, timeout=30)
        second.close()
        sender.close()
        return early, rest, on_a

    early, rest, on_a = run(go())
    assert_contiguous(early)
    assert_contiguous(rest, early[-1]["seq"] + 1)
    assert text_of(early + rest) == text_of(on_a) == LONG_TEXT


def test_stop_sent_to_b_stops_the_reply_a_generates(pair):
    a, b = pair

    async def go():
        conversation = new_id("c-")
        sender = await a.chat()
        await sender.send_message(LONG_TEXT, conversation=conversation)
        mid = (await sender.expect("MESSAGE_ACCEPTED"))["messageId"]
        await sender.expect("MESSAGE_CHUNK")
        stopper, _ = await subscribed(b, conversation)
        sent = time.monotonic()
        await stopper.send("STOP_GENERATING", messageId=mid)
        frames = await read_until(
            stopper, lambda f: f["type"] == "MESSAGE_CHUNK" and f["isComplete"], guard=10
        )
        took = time.monotonic() - sent
        on_a = await sender.chunks_until_complete(mid)
        stopper.close()
        sender.close()
        return frames, on_a, took

    frames, on_a, took = run(go())
    print(f"stop sent to B, final frame at B after {took * 1000:.0f} ms")
    assert on_a[-1]["status"] == "stopped"
    assert chunks_of(frames, on_a[-1]["messageId"])[-1]["status"] == "stopped"
    assert text_of(on_a) != LONG_TEXT  # it did stop early


def test_a_tool_call_waiting_on_a_is_answered_from_b(pair):
    a, b = pair

    def waiting(frame, status):
        return frame["type"] == "MESSAGE_CHUNK" and any(
            c["status"] == status for c in frame.get("toolCalls", ())
        )

    async def go():
        conversation = new_id("c-")
        sender = await a.chat()
        await sender.send_message("approve", agent="tools", conversation=conversation)
        mid = (await sender.expect("MESSAGE_ACCEPTED"))["messageId"]
        await read_until(sender, lambda f: waiting(f, "waiting"))
        answerer, history = await subscribed(b, conversation)
        if history["messages"][-1]["toolCalls"][0]["status"] != "waiting":
            await read_until(answerer, lambda f: waiting(f, "waiting"))
        await answerer.send(
            "ANSWER_TOOL_CALL", messageId=mid, toolCallId="call-1", decision="allow_once"
        )
        at_b = await read_until(
            answerer, lambda f: f["type"] == "MESSAGE_CHUNK" and f["isComplete"]
        )
        at_a = await sender.chunks_until_complete(mid)
        answerer.close()
        sender.close()
        return at_a, at_b

    at_a, at_b = run(go())
    assert at_a[-1]["status"] == "complete"
    assert text_of(at_a).endswith("Written (allow_once). Done.")
    assert chunks_of(at_b, at_a[-1]["messageId"])[-1]["status"] == "complete"
    assert [f.get("error") for f in at_b if f["type"] == "ERROR"] == []


def test_conversation_list_of_b_follows_new_renamed_and_deleted_conversations_of_a(pair):
    a, b = pair

    async def go():
        watcher = await b.chat()
        await watcher.send("WATCH_CONVERSATIONS")
        conversation = new_id("c-")
        sender = await a.chat()
        await sender.send_message("hello from a", conversation=conversation)
        mid = (await sender.expect("MESSAGE_ACCEPTED"))["messageId"]
        await sender.chunks_until_complete(mid)
        created = await read_until(
            watcher,
            lambda f: (
                f["type"] == "CONVERSATION_UPDATED"
                and f["conversation"]["conversationId"] == conversation
                and not f["conversation"].get("streaming")
            ),
        )
        status, _, _ = await asyncio.to_thread(
            a.request,
            "PATCH",
            f"streamchat/api/conversations/{conversation}",
            body=json.dumps({"title": "Renamed on A"}).encode(),
        )
        assert status == 200
        renamed = await read_until(
            watcher,
            lambda f: (
                f["type"] == "CONVERSATION_UPDATED" and f["conversation"]["title"] == "Renamed on A"
            ),
        )
        status, _, _ = await asyncio.to_thread(
            a.request, "DELETE", f"streamchat/api/conversations/{conversation}"
        )
        assert status == 204
        deleted = await read_until(watcher, lambda f: f["type"] == "CONVERSATION_DELETED")
        watcher.close()
        sender.close()
        return created, renamed, deleted

    created, renamed, deleted = run(go())
    assert created[-1]["conversation"]["title"].startswith("hello from a")
    assert (
        renamed[-1]["conversation"]["conversationId"]
        == created[-1]["conversation"]["conversationId"]
    )
    assert deleted[-1]["conversationId"] == created[-1]["conversation"]["conversationId"]


def test_b_keeps_every_frame_when_its_listening_connection_is_killed(pair, pg_cluster):
    a, b = pair

    async def go():
        conversation = new_id("c-")
        follower, _ = await subscribed(b, conversation)
        sender = await a.chat()
        await sender.send_message(LONG_TEXT, conversation=conversation)
        mid = (await sender.expect("MESSAGE_ACCEPTED"))["messageId"]
        await asyncio.sleep(0.5)
        killed = await asyncio.to_thread(
            pg_cluster.terminate, "application_name = 'jupyter-streamchat-listen'"
        )
        frames = await read_until(
            follower,
            lambda f: f["type"] == "MESSAGE_CHUNK" and f["messageId"] == mid and f["isComplete"],
            guard=40,
        )
        on_a = await sender.chunks_until_complete(mid, timeout=30)
        follower.close()
        sender.close()
        return killed, chunks_of(frames, mid), on_a

    killed, frames, on_a = run(go())
    assert killed >= 1  # the servers' listening connections
    assert_contiguous(frames)
    assert text_of(frames) == text_of(on_a) == LONG_TEXT


# -- 4. a dead server ----------------------------------------------------------------------


def test_a_killed_servers_reply_ends_interrupted_live_at_b_with_its_text(fresh_pair):
    a, b = fresh_pair

    async def go():
        conversation = new_id("c-")
        follower, _ = await subscribed(b, conversation)
        sender = await a.chat()
        await sender.send_message(LONG_TEXT, conversation=conversation)
        mid = (await sender.expect("MESSAGE_ACCEPTED"))["messageId"]
        got = []
        while len(got) < 5:
            frame = await follower.recv()
            if frame["type"] == "MESSAGE_CHUNK":
                got.append(frame)
        a.signal(signal.SIGKILL)
        killed = time.monotonic()
        frames = await read_until(
            follower,
            lambda f: f["type"] == "MESSAGE_CHUNK" and f["isComplete"],
            guard=DEAD_GUARD,
        )
        took = time.monotonic() - killed
        stored = await asyncio.to_thread(b.get_json, f"streamchat/api/conversations/{conversation}")
        follower.close()
        return mid, got + chunks_of(frames, mid), stored, took

    mid, frames, stored, took = run(go())
    print(f"killed server's reply ended at B after {took:.1f} s (lease {LEASE} s)")
    assert_contiguous(frames)
    assert frames[-1]["status"] == "interrupted"
    reply = [m for m in stored["messages"] if m["messageId"] == mid][0]
    assert reply["status"] == "interrupted"
    assert reply["text"] == text_of(frames) and reply["text"]


def test_a_server_back_after_its_lease_expired_cannot_write_and_says_so(fresh_pair):
    a, b = fresh_pair

    async def go():
        conversation = new_id("c-")
        follower, _ = await subscribed(b, conversation)
        sender = await a.chat()
        await sender.send_message(LONG_TEXT, conversation=conversation)
        mid = (await sender.expect("MESSAGE_ACCEPTED"))["messageId"]
        await sender.expect("MESSAGE_CHUNK")
        a.signal(signal.SIGSTOP)  # suspended: its lease runs out
        try:
            frames = await read_until(
                follower,
                lambda f: f["type"] == "MESSAGE_CHUNK" and f["isComplete"],
                guard=DEAD_GUARD,
            )
        finally:
            a.signal(signal.SIGCONT)
        await asyncio.sleep(LEASE)  # A wakes up and tries to go on writing
        stored = await asyncio.to_thread(b.get_json, f"streamchat/api/conversations/{conversation}")
        follower.close()
        sender.close()
        return mid, frames, stored

    mid, frames, stored = run(go())
    final = chunks_of(frames, mid)[-1]
    assert final["status"] == "interrupted"
    reply = [m for m in stored["messages"] if m["messageId"] == mid][0]
    assert reply["status"] == "interrupted" and reply["lastSeq"] == final["seq"]
    assert "this server's lease on its replies expired" in a.log()


# -- 7. Postgres goes away mid-stream --------------------------------------------------------


def test_a_postgres_restart_mid_stream_loses_nothing(pg_cluster, tmp_path):
    url = pg_cluster.create_database()
    a = start_server(tmp_path, url, "a", "--StreamChatApp.store_retry_seconds=30")
    try:

        async def go():
            conversation = new_id("c-")
            sender = await a.chat()
            await sender.send_message(LONG_TEXT, conversation=conversation)
            mid = (await sender.expect("MESSAGE_ACCEPTED"))["messageId"]
            await sender.expect("MESSAGE_CHUNK")
            await asyncio.to_thread(pg_cluster.restart)
            frames = await sender.chunks_until_complete(mid, timeout=60)
            stored = await asyncio.to_thread(
                a.get_json, f"streamchat/api/conversations/{conversation}"
            )
            sender.close()
            return mid, frames, stored

        mid, frames, stored = run(go())
        assert frames[-1]["status"] == "complete"
        reply = [m for m in stored["messages"] if m["messageId"] == mid][0]
        assert reply["text"] == LONG_TEXT and reply["status"] == "complete"
    finally:
        a.stop()


def test_while_postgres_is_down_requests_get_store_unavailable_then_all_works_again(
    pg_cluster, tmp_path
):
    url = pg_cluster.create_database()
    # A lease that outlasts the outage: the reply's end (error), told to its clients while
    # Postgres is down, is stored once it is back. (An outage longer than the lease ends the
    # server's replies as a dead server's: see the tests above.)
    a = start_server(tmp_path, url, "a", "--StreamChatApp.store_retry_seconds=2", lease=60)
    try:

        async def go():
            client = await a.chat()
            conversation = new_id("c-")
            await client.send_message(LONG_TEXT, conversation=conversation)
            mid = (await client.expect("MESSAGE_ACCEPTED"))["messageId"]
            await client.expect("MESSAGE_CHUNK")
            await asyncio.to_thread(pg_cluster.stop, "fast")
            try:
                # Gone longer than the reply may wait: it ends with an error, its text kept.
                frames = await client.chunks_until_complete(mid, timeout=60)
                await client.send_message("while down", conversation=new_id("c-"))
                refused = await read_until(client, lambda f: f["type"] == "ERROR", guard=30)
                status, _, body = await asyncio.to_thread(
                    a.request, "GET", "streamchat/api/conversations"
                )
            finally:
                await asyncio.to_thread(pg_cluster.start)
            # Back: everything works again without restarting Jupyter.
            again = None
            for _ in range(60):
                await client.send_message("after", conversation=new_id("c-"))
                frame = await client.recv(30)
                while frame["type"] not in ("MESSAGE_ACCEPTED", "ERROR"):
                    frame = await client.recv(30)
                if frame["type"] == "MESSAGE_ACCEPTED":
                    again = await client.chunks_until_complete(frame["messageId"])
                    break
                await asyncio.sleep(0.5)
            stored = await asyncio.to_thread(
                a.get_json, f"streamchat/api/conversations/{conversation}"
            )
            client.close()
            return frames, refused[-1], status, body, again, stored

        frames, refused, status, body, again, stored = run(go())
        assert frames[-1]["status"] == "error" and frames[-1]["error"]
        assert refused["code"] == "store_unavailable"
        assert status == 503, body
        assert again is not None and again[-1]["status"] == "complete"
        reply = stored["messages"][1]
        assert reply["status"] == "error"
        assert reply["text"] and LONG_TEXT.startswith(reply["text"])
    finally:
        a.stop()


# -- 5. two users' servers on one database -----------------------------------------------------


def test_two_users_on_one_database_never_see_each_others_conversations(pg_cluster, tmp_path):
    url = pg_cluster.create_database()
    alice = start_server(tmp_path, url, "alice", "--StreamChatApp.user=alice")
    bob = start_server(tmp_path, url, "bob", "--StreamChatApp.user=bob")
    try:

        async def go():
            conversation = new_id("c-")
            watcher = await bob.chat()
            await watcher.send("WATCH_CONVERSATIONS")
            client = await alice.chat()
            await client.send_message("alice's secret plans", conversation=conversation)
            accepted = await client.expect("MESSAGE_ACCEPTED")
            mid = accepted["messageId"]
            await client.chunks_until_complete(mid)
            answers = {}
            for method, path in [
                ("GET", f"conversations/{conversation}"),
                ("GET", f"conversations/{conversation}/export"),
                ("PATCH", f"conversations/{conversation}"),
                ("DELETE", f"conversations/{conversation}"),
            ]:
                body = json.dumps({"title": "x"}).encode() if method == "PATCH" else None
                status, _, _ = await asyncio.to_thread(
                    bob.request, method, f"streamchat/api/{path}", body=body
                )
                answers[method, path] = status
            listed = await asyncio.to_thread(bob.get_json, "streamchat/api/conversations")
            found = await asyncio.to_thread(bob.get_json, "streamchat/api/conversations?q=secret")
            sock = await bob.chat()
            await sock.send("SUBSCRIBE", conversationId=conversation)
            history = await sock.expect("HISTORY")
            await sock.send("RESUME", messageId=mid, afterSeq=0)
            resumed = await sock.expect("ERROR")
            await sock.send("STOP_GENERATING", messageId=mid)
            stopped = await sock.expect("ERROR")
            await sock.send("LOAD_HISTORY", conversationId=conversation, beforeMessageId=mid)
            paged = await sock.expect("ERROR")
            # Bob writing to the same id makes a conversation of his own.
            await sock.send_message("bob's own", conversation=conversation)
            bobs = await read_until(sock, lambda f: f["type"] == "MESSAGE_ACCEPTED")
            await sock.chunks_until_complete(bobs[-1]["messageId"])
            alice_view = await asyncio.to_thread(
                alice.get_json, f"streamchat/api/conversations/{conversation}"
            )
            heard = []
            try:
                while True:
                    heard.append(await watcher.recv(1.0))
            except asyncio.TimeoutError:
                pass
            for c in (watcher, client, sock):
                c.close()
            return answers, listed, found, history, resumed, stopped, paged, alice_view, heard

        answers, listed, found, history, resumed, stopped, paged, alice_view, heard = run(go())
        assert set(answers.values()) == {404}, answers
        assert listed["conversations"] == [] and found["conversations"] == []
        assert history["messages"] == []
        assert resumed["code"] == stopped["code"] == paged["code"] == "unknown_message"
        assert [m["text"] for m in alice_view["messages"]][0] == "alice's secret plans"
        assert len(alice_view["messages"]) == 2  # bob's message went to his own conversation
        assert all("alice" not in json.dumps(frame) for frame in heard), heard
    finally:
        alice.stop()
        bob.stop()
