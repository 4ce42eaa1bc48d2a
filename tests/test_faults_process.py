"""Faults that need real server processes: a full disk, a database file deleted, replaced or
made read-only under the server, two servers on one SQLite file, a server killed mid-reply,
clients that vanish.

Each test starts its own ``jupyter server`` subprocesses (server_process.py) and speaks only
the wire contract, REST and the file system to them. Test functions are synchronous and drive
async clients with ``asyncio.run``, as in test_server_process.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from pathlib import Path

import pytest

from faultfs import DatabaseFault, WireClient, fill_disk, need_root, tmpfs
from helpers import assert_contiguous, new_id, text_of
from server_process import JupyterServer, isolated_env

pytestmark = pytest.mark.subprocess

GUARD = 30.0  # seconds; hang guards only (a failing store is retried for a few seconds)
LONG_TEXT = " ".join(f"word{i}" for i in range(300))  # about 3 s of echo at 10 ms a word


# -- helpers ------------------------------------------------------------------------------


def server_on(base: Path, db: Path, *args: str, name: str = "server") -> JupyterServer:
    return JupyterServer(base, f"--SQLiteStore.path={db}", *args, env=isolated_env(base), name=name)


async def read_frames(client, message_id: str, frames: list, until_seq: float = float("inf")):
    """Append the reply's MESSAGE_CHUNKs to ``frames`` until its final frame (or one with seq
    >= ``until_seq``); other frames are skipped."""

    async def read():
        while True:
            frame = await client.recv(GUARD)
            if frame["type"] == "MESSAGE_CHUNK" and frame["messageId"] == message_id:
                frames.append(frame)
                if frame["isComplete"] or frame["seq"] >= until_seq:
                    return

    await asyncio.wait_for(read(), GUARD)
    return frames


async def answer_to_send(client, client_message_id: str, others: dict) -> dict:
    """The ERROR or MESSAGE_ACCEPTED that answers one SEND_MESSAGE; chunks of other replies
    that arrive meanwhile go to ``others[messageId]``."""

    async def read():
        while True:
            frame = await client.recv(GUARD)
            if frame["type"] == "MESSAGE_CHUNK":
                others.setdefault(frame["messageId"], []).append(frame)
            elif frame.get("clientMessageId") == client_message_id:
                return frame

    return await asyncio.wait_for(read(), GUARD)


async def stored_view(server: JupyterServer, conversation: str, message_id: str) -> dict:
    """A reply as a fresh client sees it: SUBSCRIBE's HISTORY, plus (for a message the page
    cut short) the rest by RESUME, as the contract tells clients to do."""
    client = await server.chat()
    try:
        await client.send("SUBSCRIBE", conversationId=conversation)
        history = await client.expect("HISTORY", GUARD)
        (message,) = [m for m in history["messages"] if m["messageId"] == message_id]
        text = message["text"]
        if message.get("truncated"):
            await client.send("RESUME", messageId=message_id, afterSeq=message["lastSeq"])
            rest = await read_frames(client, message_id, [])
            assert_contiguous(rest, message["lastSeq"] + 1)
            text += text_of(rest)
            message = {**message, "lastSeq": rest[-1]["seq"], "status": rest[-1]["status"]}
        return {**message, "text": text}
    finally:
        client.close()


def rest_reply(server: JupyterServer, conversation: str, message_id: str) -> dict:
    stored = server.get_json(f"streamchat/api/conversations/{conversation}")
    (message,) = [m for m in stored["messages"] if m["messageId"] == message_id]
    return message


def rest_status(server: JupyterServer, method: str, path: str) -> tuple:
    status, _, body = server.request(method, f"streamchat/api/{path}")
    try:
        return status, json.loads(body) if body else None
    except ValueError:
        return status, body


# -- 1. a full disk -------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    need_root("the disk-full test")
    with tmpfs(tmp_path / "disk", "8m") as mounted:
        yield mounted


def test_disk_full_mid_reply_ends_it_with_exactly_the_stored_text(tmp_path, small_disk):
    """The disk fills while a reply streams: the reply ends `error`, every client holds exactly
    the committed text, and the store says so too (HISTORY, RESUME, REST), even though not even
    the final frame could be stored; after space is freed and the server restarts, the same."""
    db = small_disk / "chat.db"
    text = " ".join(f"w{i:05d}" for i in range(40000))  # 280 KB, well under max_message_bytes
    conversation = new_id("c-")
    first = server_on(tmp_path / "first", db, "--EchoAgent.delay=0", name="first")
    second = server_on(tmp_path / "second", db, "--EchoAgent.delay=0", name="second")
    try:
        with first:

            async def stream_into_a_full_disk():
                watcher = await first.chat()
                await watcher.send("SUBSCRIBE", conversationId=conversation)
                await watcher.expect("HISTORY")
                sender = await first.chat()
                await sender.send_message(text, conversation=conversation)
                accepted = await sender.expect("MESSAGE_ACCEPTED")
                mid = accepted["messageId"]
                frames = await read_frames(sender, mid, [], until_seq=1)
                filler = fill_disk(small_disk)
                await read_frames(sender, mid, frames)
                watched = await read_frames(watcher, mid, [])
                watcher.close()
                sender.close()
                return mid, frames, watched, filler

            mid, frames, watched, filler = asyncio.run(stream_into_a_full_disk())
            assert_contiguous(frames)
            final = frames[-1]
            assert final["status"] == "error", final
            assert final["chunk"] == "", "the final frame of a failed reply carries no text"
            received = text_of(frames)
            assert text.startswith(received) and len(received) < len(text), (
                "the disk never filled: make the text longer or the tmpfs smaller"
            )
            assert watched == frames  # every client holds the same frames

            # The disk is still full, so the end itself is not stored; yet the reply has ended
            # wherever a client looks, with exactly the text the clients hold.
            stored = rest_reply(first, conversation, mid)
            assert (stored["status"], stored["lastSeq"]) == ("error", final["seq"]), stored
            assert stored["text"] == received
            seen = asyncio.run(stored_view(first, conversation, mid))
            assert (seen["status"], seen["lastSeq"], seen["text"]) == (
                "error",
                final["seq"],
                received,
            )

            async def resume(after_seq):
                client = await first.chat()
                try:
                    await client.send("RESUME", messageId=mid, afterSeq=after_seq)
                    return await read_frames(client, mid, [])
                finally:
                    client.close()

            assert asyncio.run(resume(0)) == frames
            assert asyncio.run(resume(final["seq"])) == [final]

            # Space comes back: the server writes again.
            filler.unlink()

            async def another_exchange():
                client = await first.chat()
                try:
                    await client.send_message("after the disk was freed", conversation=conversation)
                    accepted = await client.expect("MESSAGE_ACCEPTED", GUARD)
                    return await read_frames(client, accepted["messageId"], [])
                finally:
                    client.close()

            after = asyncio.run(another_exchange())
            assert (text_of(after), after[-1]["status"]) == ("after the disk was freed", "complete")

        with second:  # a restart on the same file: the reply is as the clients saw it
            stored = rest_reply(second, conversation, mid)
            # `error`, as its clients were told: a clean stop stores the end it still owed.
            assert (stored["status"], stored["lastSeq"], stored["text"]) == (
                "error",
                final["seq"],
                received,
            ), stored
            seen = asyncio.run(stored_view(second, conversation, mid))
            assert (seen["status"], seen["text"]) == ("error", received)
    finally:
        first.stop()
        second.stop()


# -- 2. the database file pulled from under the server ---------------------------------------------


@pytest.mark.parametrize("kind", ["deleted", "replaced", "read_only"])
def test_database_file_gone_replaced_or_read_only(tmp_path, kind):
    """After the fault no write is acknowledged: SEND_MESSAGE gets ERROR store_unavailable,
    REST answers 503, the streaming reply does not end `complete`; once the file is back,
    everything acknowledged before is there."""
    db = tmp_path / "data" / "chat.db"
    first = server_on(tmp_path / "first", db, "--EchoAgent.delay=0.01", name="first")
    second = server_on(tmp_path / "second", db, name="second")
    kept_conversation, streaming_conversation, refused_conversation = (
        new_id("c-kept-"),
        new_id("c-streaming-"),
        new_id("c-refused-"),
    )
    fault = None
    try:
        with first:

            async def run():
                nonlocal fault
                client = await first.chat()
                await client.send_message("acknowledged before", conversation=kept_conversation)
                kept = await client.expect("MESSAGE_ACCEPTED")
                kept_frames = await read_frames(client, kept["messageId"], [])
                await client.send_message(LONG_TEXT, conversation=streaming_conversation)
                streaming = await client.expect("MESSAGE_ACCEPTED")
                mid = streaming["messageId"]
                frames = await read_frames(client, mid, [], until_seq=5)
                assert not frames[-1]["isComplete"]

                fault = DatabaseFault(db, kind)
                fault.apply()
                refused_id = new_id("m-")
                others = {}
                await client.send(
                    "SEND_MESSAGE",
                    conversationId=refused_conversation,
                    agentId="echo",
                    text="after the fault",
                    clientMessageId=refused_id,
                )
                answer = await answer_to_send(client, refused_id, others)
                frames += others.pop(mid, [])
                if not frames[-1]["isComplete"]:
                    await read_frames(client, mid, frames)
                client.close()
                return kept, kept_frames, streaming, frames, answer

            kept, kept_frames, streaming, frames, answer = asyncio.run(run())
            assert (answer["type"], answer.get("code")) == ("ERROR", "store_unavailable"), answer

            # A write over REST is refused the same way (and must not delete acknowledged data).
            status, body = rest_status(first, "DELETE", f"conversations/{kept_conversation}")
            assert status == 503 and body["reason"] == "store_unavailable", (status, body)
            if kind != "read_only":  # a read-only file can still be read
                status, body = rest_status(first, "GET", "conversations")
                assert status == 503 and body["reason"] == "store_unavailable", (status, body)

            assert_contiguous(frames)
            assert frames[-1]["isComplete"]
            assert frames[-1]["status"] != "complete", (
                "a reply reported complete while its database file was " + kind
            )
            received = text_of(frames)
            fault.restore()

        with second:
            stored = second.get_json(f"streamchat/api/conversations/{kept_conversation}")
            assert [(m["role"], m["status"], m["text"]) for m in stored["messages"]] == [
                ("user", "complete", "acknowledged before"),
                ("assistant", "complete", text_of(kept_frames)),
            ]
            reply = rest_reply(second, streaming_conversation, streaming["messageId"])
            assert reply["status"] not in ("streaming", "complete"), reply["status"]
            assert reply["text"].startswith(received), "a chunk a client saw is missing"
            assert LONG_TEXT.startswith(reply["text"])
            status, _ = rest_status(second, "GET", f"conversations/{refused_conversation}")
            assert status == 404, "a refused SEND_MESSAGE left something stored"
    finally:
        if fault is not None and fault.kept.exists():
            fault.restore()
        first.stop()
        second.stop()


def test_read_only_database_at_start_is_logged_and_refuses_writes(tmp_path):
    # Run as root (as in CI), the file system ignores permission bits: only a server that
    # looks at the bits itself notices that the file is read-only.
    db = tmp_path / "data" / "chat.db"
    conversation = new_id("c-")
    maker = server_on(tmp_path / "maker", db, "--EchoAgent.delay=0", name="maker")
    later = server_on(tmp_path / "later", db, "--EchoAgent.delay=0", name="later")
    try:
        with maker:
            status, _ = rest_status(maker, "GET", "conversations")  # the store opens on start
            assert status == 200
        assert db.is_file()
        db.chmod(0o444)
        with later:
            rest_status(later, "GET", "conversations")  # whatever the answer, the store was tried

            async def send():
                client = await later.chat()
                try:
                    await client.send(
                        "SEND_MESSAGE",
                        conversationId=conversation,
                        agentId="echo",
                        text="into a read-only file",
                        clientMessageId="m-ro",
                    )
                    return await answer_to_send(client, "m-ro", {})
                finally:
                    client.close()

            answer = asyncio.run(send())
            log = later.log()
        assert (answer["type"], answer.get("code")) == ("ERROR", "store_unavailable"), answer
        lines = [
            line
            for line in log.splitlines()
            if str(db) in line and re.search(r"read[- ]only", line, re.I)
        ]
        assert lines, f"no log line names {db} as read-only:\n{log}"
    finally:
        db.chmod(0o644)
        maker.stop()
        later.stop()


# -- 3. several processes on one SQLite file --------------------------------------------------------


def test_second_server_on_the_file_leaves_a_streaming_reply_alone(tmp_path):
    db = tmp_path / "shared.db"
    text = " ".join(f"word{i}" for i in range(600))  # about 6 s at 10 ms a word
    conversation = new_id("c-")
    first = server_on(tmp_path / "first", db, "--EchoAgent.delay=0.01", name="first")
    second = server_on(tmp_path / "second", db, "--EchoAgent.delay=0.01", name="second")
    try:
        with first:

            async def stream_while_a_second_server_starts():
                client = await first.chat()
                await client.send_message(text, conversation=conversation)
                accepted = await client.expect("MESSAGE_ACCEPTED")
                mid = accepted["messageId"]
                frames = await read_frames(client, mid, [], until_seq=10)
                loop = asyncio.get_running_loop()
                # Start the second server and have it open the store while the reply streams.
                await loop.run_in_executor(None, lambda: second.start().wait_ready())
                seen = await loop.run_in_executor(
                    None, lambda: second.get_json(f"streamchat/api/conversations/{conversation}")
                )
                await read_frames(client, mid, frames)
                client.close()
                return accepted, frames, seen

            accepted, frames, seen = asyncio.run(stream_while_a_second_server_starts())
            mid = accepted["messageId"]
            # The second server sees the conversation, and did not end its reply.
            assert [m["messageId"] for m in seen["messages"]] == [accepted["userMessageId"], mid]
            assert seen["messages"][1]["status"] in ("streaming", "complete"), seen["messages"][1]
            # The first server's reply streamed to its exact end.
            assert_contiguous(frames)
            assert frames[-1]["status"] == "complete", frames[-1]
            assert text_of(frames) == text
            for server in (first, second):
                stored = rest_reply(server, conversation, mid)
                assert (stored["status"], stored["text"], stored["lastSeq"]) == (
                    "complete",
                    text,
                    frames[-1]["seq"],
                )
    finally:
        first.stop()
        second.stop()


def test_reply_of_a_killed_process_is_interrupted_by_the_next_start(tmp_path):
    db = tmp_path / "shared.db"
    conversation = new_id("c-")
    killed = server_on(tmp_path / "killed", db, "--EchoAgent.delay=0.01", name="killed")
    after = server_on(tmp_path / "after", db, name="after")
    try:
        with killed:

            async def stream_then_kill():
                client = await killed.chat()
                await client.send_message(LONG_TEXT, conversation=conversation)
                accepted = await client.expect("MESSAGE_ACCEPTED")
                frames = await read_frames(client, accepted["messageId"], [], until_seq=10)
                killed.signal(signal.SIGKILL)
                client.close()
                return accepted, frames

            accepted, frames = asyncio.run(stream_then_kill())
            assert killed.wait_exit() == -signal.SIGKILL
        with after:  # same machine, owner pid gone: no need to wait for its lease to expire
            reply = rest_reply(after, conversation, accepted["messageId"])
        assert reply["status"] == "interrupted", reply["status"]
        assert reply["text"].startswith(text_of(frames)) and LONG_TEXT.startswith(reply["text"])
    finally:
        killed.stop()
        after.stop()


# -- 4. clients that vanish -------------------------------------------------------------------------


def new_log_lines(server: JupyterServer, offset: int) -> list:
    return server.log()[offset:].splitlines()


def test_vanishing_clients_cost_at_most_one_log_line_each(tmp_path):
    db = tmp_path / "data" / "chat.db"
    text = " ".join(f"v{i}" for i in range(20000))
    vanishes = 3
    with server_on(tmp_path, db, "--EchoAgent.delay=0", name="vanish") as server:
        server.get_json("streamchat/api/conversations")  # the store is open, its lines logged
        offset = len(server.log())
        conversations = []
        for _ in range(vanishes):
            conversation = new_id("c-")
            conversations.append(conversation)
            client = WireClient.to(server)
            client.send(
                {
                    "type": "SEND_MESSAGE",
                    "conversationId": conversation,
                    "agentId": "echo",
                    "text": text,
                    "clientMessageId": new_id("m-"),
                }
            )
            for _ in range(1000):  # bounded: until the first chunk is on its way
                if client.recv()["type"] == "MESSAGE_CHUNK":
                    break
            client.abort()
        # Wait (bounded) for each reply to end, so all its writes to the gone client happened.
        for conversation in conversations:
            for _ in range(int(GUARD / 0.1)):
                messages = server.get_json(f"streamchat/api/conversations/{conversation}")
                if messages["messages"][-1]["status"] != "streaming":
                    break
                time.sleep(0.1)
            assert messages["messages"][-1]["status"] == "complete", messages["messages"][-1]
        # One more request, so that anything logged late by the vanished sockets is in the log.
        server.get_json("streamchat/api/conversations")
        lines = new_log_lines(server, offset)
    assert not [line for line in lines if "Traceback" in line], "\n".join(lines)
    # Informational ([I]) and debug ([D]) lines are the server's business; every other line
    # (a warning, an error, an unformatted line from asyncio) is a cost of the vanished clients.
    noise = [line for line in lines if line.strip() and not re.match(r"\[[ID] ", line)]
    assert len(noise) <= vanishes, "\n".join(noise)
