"""Replayed frames are byte for byte the frames sent live.

SQLite spells the frames of a RESUME itself, in its SELECT (json_quote() and concatenation:
``SQLiteStore.replay_frames``), where other stores hand the hub stored chunks to build in
Python (``protocol.ChunkFrames``). The two must never differ, for any text: quotes,
backslashes, control characters, NUL, characters outside the BMP, U+2028, text with lone
surrogates (which the hub replaces before anything is stored or sent), tool-call states and
an error that ends the reply.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import replace

import pytest

from helpers import HANG_GUARD, new_id, streamchat_config
from jupyter_streamchat import Agent
from jupyter_streamchat import protocol as p
from jupyter_streamchat.agents import AgentError, Reasoning, ToolCall, Usage
from jupyter_streamchat.store import Append, SQLiteStore
from jupyter_streamchat.store.sqlite import _quotes_as_python

TRICKY = [
    'say "hi" \\ back\\slash \\u0041 /',
    "".join(map(chr, range(1, 32))) + "\x7f\x80\x9f",  # control characters, DEL, C1
    "a NUL \x00 inside",
    "outside the BMP 😀 𝄞, and é ü 中文 ﷺ",
    "line\u2028separator\u2029paragraph",
    "\ufffd\ufeff\uffff",
    "</script><!-- & ' {}[],:",
    "",
]
LONE = "lone \ud83d surrogate \udc00"  # replaced by the hub before anything is stored or sent


class TrickyAgent(Agent):
    """Each tricky text as answer, thinking, and a tool call's arguments, title and result,
    a frame or more apiece; ``hold`` in the user text waits before the end, ``fail`` ends the
    reply with an error holding the texts."""

    async def stream(self, request):
        for i, text in enumerate([*TRICKY, LONE]):
            yield Reasoning(text)
            yield text
            call = ToolCall(f"call-{i}", "tricky", arguments=json.dumps({"text": text}))
            yield replace(call, title=text or None)
            await asyncio.sleep(0.02)  # a frame of its own (the hub's window is shorter)
            yield replace(call, status="completed", result=text)
        if "hold" in request.text:
            await asyncio.sleep(0.5)
        yield "the end"
        if "fail" in request.text:
            raise AgentError("failed: " + " | ".join(TRICKY))
        yield Usage(model="tricky-1", input_tokens=3, output_tokens=9)


# -- the store: SQLite's spelling against Python's -----------------------------------------


async def stored_reply(store, status, error=None, usage=None):
    """A reply of tricky frames (answer, thinking, tool-call states), ended ``status`` (None:
    still streaming)."""
    ex = await store.create_exchange(new_id("c-"), "tricky", "hello", new_id("m-"))
    texts = [*TRICKY, "plain", ""]
    calls = [
        [{"id": f"c{i}", "name": "n", "status": "running", "arguments": json.dumps([t])}]
        if i % 2
        else None
        for i, t in enumerate(texts)
    ]
    calls[-1] = [{"id": "c9", "name": "é😀", "status": "completed", "result": "\x00\u2028\ufffd"}]
    for seq, (text, thinking, states) in enumerate(zip(texts, reversed(texts), calls), 1):
        await store.append(
            Append(ex.message_id, seq, [text], reasoning=[thinking], tool_calls=[states])
        )
    if status is not None:
        ending = [{"id": "c1", "name": "n", "status": "failed", "error": "not run: \x00"}]
        await store.append(
            Append(
                ex.message_id,
                len(texts) + 1,
                ["\x00 last \u2028"],
                status,
                error,
                reasoning=["\U0010ffff"],
                usage=usage,
                tool_calls=[ending],
            )
        )
    return ex.message_id


async def spelled_by_sqlite(store, message_id, after_seq):
    read = await store.replay_frames(message_id, after_seq, p.ChunkFrames.shape_of)
    assert read is not None, "this SQLite's json_quote() no longer spells as Python's json does"
    message, texts, last = read
    frames = p.ChunkFrames(message.message_id, message.conversation_id, message.agent_id)
    return texts + [text for _, text, _ in frames.stored([last] if last else [], message)]


async def built_by_python(store, message_id, after_seq):
    message, chunks = await store.replay(message_id, after_seq)
    frames = p.ChunkFrames(message.message_id, message.conversation_id, message.agent_id)
    return [text for _, text, _ in frames.stored(chunks, message)]


@pytest.mark.parametrize(
    "ending",
    [
        ("error", 'it broke: "quoted" \\ \x00 \x1f \u2028 😀 \ufffd'),
        ("complete", None),
        ("stopped", None),
        (None, None),  # still streaming: every frame spelled by SQLite, none final
    ],
    ids=lambda e: e[0] or "streaming",
)
async def test_sqlite_spells_every_frame_as_the_hub_builds_it(tmp_path, ending):
    store = SQLiteStore(path=str(tmp_path / "spell.db"))
    await store.open()
    try:
        usage = {"model": "m\u2028", "input_tokens": 1, "output_tokens": 2}
        message_id = await stored_reply(store, *ending, usage=usage)
        last_seq = len(TRICKY) + 2 + (ending[0] is not None)
        for after_seq in range(last_seq + 1):
            ours = await spelled_by_sqlite(store, message_id, after_seq)
            assert ours == await built_by_python(store, message_id, after_seq), after_seq
            assert len(ours) == last_seq - after_seq
        frames = [json.loads(text) for text in await spelled_by_sqlite(store, message_id, 0)]
        assert "".join(f["chunk"] for f in frames[: len(TRICKY)]) == "".join(TRICKY)
        assert frames[2]["chunk"] == "a NUL \x00 inside"
        assert frames[-1]["isComplete"] is (ending[0] is not None)
        if ending[0] == "error":
            assert frames[-1]["error"] == ending[1]
    finally:
        await store.close()


async def test_an_unknown_reply_and_another_users_spell_nothing(tmp_path):
    store = SQLiteStore(path=str(tmp_path / "spell.db"))
    await store.open()
    try:
        message_id = await stored_reply(store, "complete")
        for user in ("someone-else", None):
            read = await store.replay_frames("no-such-id", 0, p.ChunkFrames.shape_of, user=user)
            assert read == (None, [], None)
        read = await store.replay_frames(message_id, 0, p.ChunkFrames.shape_of, user="other")
        assert read == (None, [], None)
    finally:
        await store.close()


def test_a_sqlite_whose_json_quote_spells_otherwise_is_not_used_to_spell_frames():
    conn = sqlite3.connect(":memory:")
    assert _quotes_as_python(conn)  # this one spells as Python does (3.40 and later)
    # An older json_quote wrote control characters raw; one escaping non-ASCII differs too.
    for spelling in (lambda s: '"' + s.replace('"', '\\"') + '"', json.dumps):
        other = sqlite3.connect(":memory:")
        other.create_function("json_quote", 1, spelling)
        assert not _quotes_as_python(other)


# -- through the server: live frames against RESUME's ------------------------------------

BUFFER = 4 * 1024  # characters a client may have waiting unsent


@pytest.fixture
def jp_server_config():
    return streamchat_config(
        StreamChatApp={
            "agents": {"tricky": {"class": "test_replay_frames:TrickyAgent"}},
            # Smaller than the reply, so that a replay goes out in parts as the socket drains.
            "client_buffer_bytes": BUFFER,
        }
    )


async def raw_reply(client, message_id: str) -> list:
    """The MESSAGE_CHUNK texts of one reply as received, up to its final frame."""
    frames = []

    async def read():
        while True:
            raw = await client.ws.read_message()
            assert raw is not None, "the server closed the WebSocket"
            frame = json.loads(raw)
            if frame["type"] == "MESSAGE_CHUNK" and frame["messageId"] == message_id:
                frames.append(raw)
                if frame["isComplete"]:
                    return frames

    return await asyncio.wait_for(read(), HANG_GUARD)


async def resumed(chat, message_id: str, after_seq: int) -> list:
    client = await chat()
    await client.send("RESUME", messageId=message_id, afterSeq=after_seq)
    return await raw_reply(client, message_id)


@pytest.mark.parametrize("spelled_by", ["sqlite", "python"])
@pytest.mark.parametrize("words", ["go", "go fail"])
async def test_resumed_frames_are_the_live_frames_byte_for_byte(
    chat, streamchat_app, spelled_by, words
):
    client = await chat()
    await client.send_message(words, agent="tricky")
    message_id = (await client.expect("MESSAGE_ACCEPTED"))["messageId"]
    live = await raw_reply(client, message_id)
    store = streamchat_app.hub.store
    if spelled_by == "python":  # as from a store that does not spell frames (Postgres)
        store._spells_frames = False
    assert len(live) > len(TRICKY) and sum(map(len, live)) > 2 * BUFFER
    for after_seq in (0, 1, len(live) // 2, len(live) - 1, len(live)):
        again = await resumed(chat, message_id, after_seq)
        # Asked past the end: the final frame again.
        assert again == live[min(after_seq, len(live) - 1) :], after_seq
    final = json.loads(live[-1])
    assert final["status"] == ("error" if "fail" in words else "complete")
    assert (await store.replay_frames(message_id, 0, p.ChunkFrames.shape_of) is None) == (
        spelled_by == "python"
    )
    texts = [json.loads(raw) for raw in live]
    shown = "".join(f["chunk"] for f in texts)
    assert shown.startswith("".join(TRICKY)) and "\ud83d" not in shown and "\x00" in shown


async def test_a_resume_while_streaming_goes_on_live_with_the_same_frames(chat):
    client = await chat()
    await client.send_message("hold", agent="tricky")
    message_id = (await client.expect("MESSAGE_ACCEPTED"))["messageId"]
    # Some frames stored, the reply still streaming: the replay is spelled, then live follows.
    for _ in range(3):
        frame = await client.recv()
        assert frame["type"] == "MESSAGE_CHUNK" and not frame["isComplete"]
    later = await chat()
    await later.send("RESUME", messageId=message_id, afterSeq=0)
    live = await raw_reply(client, message_id)
    got = await raw_reply(later, message_id)
    assert got[len(got) - len(live) :] == live
    seqs = [json.loads(raw)["seq"] for raw in got]
    assert seqs == list(range(1, len(got) + 1))
