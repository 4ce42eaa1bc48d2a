"""Store work never stalls other users (issue 13, point 3): reads run beside one another on a
pool of reader connections, a read is interrupted when its task is cancelled, a search has a
deadline and a repetitive query is cheap, and a long reply is indexed a slice per write job.

No timed assertions: each test checks an order of events (another read finished while the
slow one still ran), with hang guards only."""

import asyncio
import contextlib
import sqlite3

import pytest

from helpers import HANG_GUARD, new_id
from jupyter_streamchat.store import (
    Append,
    SearchTooCostly,
    SQLiteStore,
    StoreError,
    readers,
    search,
)

# A read that takes seconds of SQLite's own work (and can be interrupted anywhere in it).
SLOW_SQL = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000000) "
    "SELECT count(*) FROM n"
)


def slow(conn):
    return conn.execute(SLOW_SQL).fetchone()


async def guard(awaitable):
    return await asyncio.wait_for(awaitable, HANG_GUARD)


async def started(task):
    """Give a read submitted by ``task`` the time to reach its thread."""
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert not task.done()


@contextlib.asynccontextmanager
async def stores(tmp_path):
    """``open_store(**traits)`` opens the test's store file; every store opened is closed."""
    opened = []

    async def open_store(**traits):
        s = SQLiteStore(path=str(tmp_path / "chat.db"), **traits)
        await s.open()
        opened.append(s)
        return s

    try:
        yield open_store
    finally:
        for s in opened:
            await s.close()


@pytest.fixture
def store(tmp_path):
    """An async context: ``async with store as open_store``."""
    return stores(tmp_path)


async def exchange(store, text, chunks, conversation=None, status="complete"):
    ex = await store.create_exchange(conversation or new_id("c-"), "echo", text, new_id("m-"))
    *streamed, last = chunks
    if streamed:
        await store.append(Append(ex.message_id, 1, streamed))
    await store.append(Append(ex.message_id, len(streamed) + 1, [last], status))
    return ex


async def test_reads_run_beside_a_slow_read(store):
    async with store as open_store:
        s = await open_store(readers=2)
        ex = await exchange(s, "hello", ["hi ", "there"])
        slow_read = asyncio.ensure_future(s._read(slow, long=True))
        await started(slow_read)
        page = await guard(s.history(ex.conversation_id, None, 10, 10_000))
        assert [m.text for m in page.messages] == ["hello", "hi there"]
        assert (await guard(s.get_message(ex.message_id))).text == "hi there"
        assert len(await guard(s.list_conversations())) == 1
        assert not slow_read.done()  # all of that while the slow read still ran
        slow_read.cancel()


async def test_a_cancelled_read_frees_its_thread_at_once(store):
    """Both readers busy with reads of the same length; the one whose task is cancelled is
    interrupted, and the next read runs on its thread while the other still runs."""
    async with store as open_store:
        s = await open_store(readers=2)
        ex = await exchange(s, "hello", ["hi"])
        cancelled = asyncio.ensure_future(s._read(slow, long=True))
        other = asyncio.ensure_future(s._read(slow))
        await started(other)
        cancelled.cancel()
        page = await guard(s.history(ex.conversation_id, None, 10, 10_000))
        assert page.messages[0].text == "hello"
        assert not other.done()
        other.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled


async def test_long_reads_leave_one_reader_to_the_others(store):
    async with store as open_store:
        s = await open_store(readers=2)
        ex = await exchange(s, "hello", ["hi"])
        long_reads = [asyncio.ensure_future(s._read(slow, long=True)) for _ in range(3)]
        await started(long_reads[0])
        assert (await guard(s.get_message(ex.message_id))).text == "hi"
        assert not any(task.done() for task in long_reads)
        for task in long_reads:
            task.cancel()


def bulk_messages(path, rows: int, user: str) -> None:
    """``rows`` conversations of one user message each, ``user``'s, written straight into the
    schema."""
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO conversations (user_id, id, title, created_at, updated_at) "
            "VALUES (?, ?, '', ?, ?)",
            [(user, f"b{i}", i, i) for i in range(rows)],
        )
        db.executemany(
            "INSERT INTO messages (id, user_id, conversation_id, role, agent_id, "
            "client_message_id, status, text, chars, created_at, updated_at) VALUES (?, ?, ?, "
            "'user', 'echo', ?, 'complete', ?, 30, 1, 1)",
            [
                (f"bm{i}", user, f"b{i}", f"k{i}", f"bulk message number {i} here")
                for i in range(rows)
            ],
        )
        db.execute(
            "INSERT INTO search (rowid, conversation_id, text) SELECT pos, "
            "conversation_id, text FROM messages WHERE id LIKE 'bm%'"
        )


async def test_a_search_over_its_deadline_is_too_costly(store, tmp_path, monkeypatch):
    async with store as open_store:
        monkeypatch.setattr(readers, "PROGRESS_OPS", 1000)  # check the deadline often
        s = await open_store(search_seconds=1e-6)
        await s.close()
        bulk_messages(str(tmp_path / "chat.db"), 20_000, s.default_user)
        s = await open_store(search_seconds=1e-6)
        with pytest.raises(SearchTooCostly) as refused:
            await guard(s.search_conversations("zq"))  # two characters: every text is read
        assert not isinstance(refused.value, StoreError)  # the request's fault, not an outage
        assert "longer than this server allows" in str(refused.value)
        await s.close()
        s = await open_store()
        assert await guard(s.search_conversations("zq")) == []
        assert [c.conversation_id for c in await s.search_conversations("number 7 h")] == ["b7"]


async def test_repetitive_queries_find_what_the_phrase_finds(store):
    async with store as open_store:
        s = await open_store()
        texts = {
            "run": "x" + "a" * 300 + "x",
            "short-run": "b" + "a" * 5 + "b",
            "mixed-case": "AaAaAaAaAaAa and more",
            "alternating": "abababababab!",
            "accents": "ÉéÉéÉéÉéÉé en fin",
            "words": "the the the the the end",
            "plain": "nothing repeats here",
        }
        for name, text in texts.items():
            await exchange(s, text, ["ok"], conversation=name)
        queries = [
            "a" * 200,
            "a" * 5,
            "a" * 6,
            "A" * 7,
            "aAaAa",
            "ababab",
            "babab!",
            "bababab!",
            "ééééé",
            "ÉÉÉÉ",
            "éÉé",
            "the the the",
            "he the t",
            "the the the the the the",
            "nothing repeats",
            "aaa",
            "zzzzzz",
        ]
        for query in queries:
            expected = sorted(n for n, t in texts.items() if query.lower() in t.lower())
            found = sorted(c.conversation_id for c in await guard(s.search_conversations(query)))
            assert found == expected, query
        assert "instr" in search.condition("a" * 200, True)[0]
        assert "streamchat_contains" in search.condition("é" * 200, True)[0]
        assert search.condition("plain words", True)[0] == "search MATCH ?"


async def test_a_long_reply_is_indexed_a_slice_per_write(store, tmp_path):
    """The write that ends a reply of 20 slices indexes one; the others are written by jobs
    of their own, between which other writes run. Every part of the text is then found,
    one that straddles two slices too, with its snippet."""
    async with store as open_store:
        s = await open_store()
        size = search.SLICE_CHARS
        filler = "lorem ipsum " * (20 * size // 12)
        text = list(filler)
        for at, word in ((size - 5, "STRADDLE"), (len(text) - 20, "NEAREND")):
            text[at : at + len(word)] = word
        text = "".join(text)
        frames = [text[i : i + 4000] for i in range(0, len(text), 4000)]
        ex = await exchange(s, "write a lot", frames)
        assert await s._write(search.backlog)  # slices still wait after the reply ended...
        other = await exchange(s, "meanwhile", ["another reply"])  # ...and other writes go on
        assert await s._write(search.backlog)
        await guard(s.search_index_idle())
        assert not await s._write(search.backlog)
        for word in ("straddle", "NEAREND", "write a lot"):
            assert [c.conversation_id for c in await s.search_conversations(word)] == [
                ex.conversation_id
            ], word
        hit = (await s.search_conversations("nearend"))[0]
        assert hit.snippet.startswith("…") and "NEAREND" in hit.snippet and len(hit.snippet) < 300
        assert [c.conversation_id for c in await s.search_conversations("another")] == [
            other.conversation_id
        ]
        assert await s.delete_conversation(ex.conversation_id)
        assert await s.search_conversations("nearend") == []
        with sqlite3.connect(str(tmp_path / "chat.db")) as db:
            assert db.execute(
                "SELECT count(*) FROM search WHERE rowid >= ?", (search.SLICE_BASE,)
            ).fetchone() == (0,)


async def test_slices_left_by_a_stopped_process_are_indexed_when_it_opens_again(store):
    async with store as open_store:
        s = await open_store()
        # One frame of 300,000 characters: slices are cut inside a frame too.
        text = "z" * 250_000 + " FOUNDLATE " + "y" * 50_000
        ex = await exchange(s, "one big frame", [text])
        await s.close()  # before the slices were indexed (the indexer is cancelled)
        s = await open_store()
        await guard(s.search_index_idle())
        assert [c.conversation_id for c in await s.search_conversations("foundlate")] == [
            ex.conversation_id
        ]
        assert [c.conversation_id for c in await s.search_conversations("z" * 200)] == [
            ex.conversation_id
        ]


async def test_history_over_the_wire_is_not_held_by_a_slow_read(chat, streamchat_app):
    """Through the server: a client's SUBSCRIBE gets its HISTORY while a slow store read of
    another request runs."""
    client = await chat()
    conversation = new_id("c-")
    await client.send_message("hello there", conversation=conversation)
    accepted = await client.expect("MESSAGE_ACCEPTED")
    await client.chunks_until_complete(accepted["messageId"])
    store = streamchat_app.hub.store
    slow_read = asyncio.ensure_future(store._read(slow, long=True))
    await started(slow_read)
    other = await chat()
    await other.send("SUBSCRIBE", conversationId=conversation)
    history = await other.expect("HISTORY")
    assert [m["text"] for m in history["messages"]] == ["hello there", "hello there"]
    assert not slow_read.done()
    slow_read.cancel()
