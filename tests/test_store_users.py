"""Conversations belong to users: in the SQLite store, two users may each have a conversation
"c1", and to each of them the other's does not exist. Also: files from before users are
migrated to the local user, and a conversation's place in the list follows its last activity
(a reply that ends is some)."""

import asyncio
import contextlib
import shutil
import sqlite3

import pytest

from jupyter_streamchat.store import EVERY_USER, Append, SQLiteStore, local_user, search
from jupyter_streamchat.store.schema import MIGRATIONS, SCHEMA_VERSION, apply


@contextlib.asynccontextmanager
async def opened(path, **traits):
    store = SQLiteStore(path=str(path), **traits)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def finish(store, exchange, chunks, status="complete"):
    """Store a reply's frames, the last one ending it, as the hub would."""
    *streamed, last = chunks
    if streamed:
        await store.append(Append(exchange.message_id, 1, streamed))
    await store.append(Append(exchange.message_id, len(streamed) + 1, [last], status))


def texts(messages):
    return [(m.role, m.text, m.status) for m in messages]


async def ids(records):
    return [c.conversation_id for c in await records]


# -- two users, the same ids --------------------------------------------------------------


async def test_two_users_each_have_their_own_c1(tmp_path):
    async with opened(tmp_path / "users.db", default_user="alice") as s:
        mine = await s.create_exchange("c1", "echo", "alice asks about tulips", "k1")
        theirs = await s.create_exchange("c1", "echo", "bob asks about roses", "k1", user="bob")
        assert mine.created and theirs.created
        assert (mine.user, theirs.user) == ("alice", "bob")
        assert len({mine.message_id, mine.user_message_id, theirs.message_id}) == 3
        await finish(s, mine, ["tulips ", "bloom in spring"])
        await finish(s, theirs, ["roses bloom in june"])

        # The same clientMessageId again: the same exchange, each user's own.
        again = await s.create_exchange("c1", "echo", "alice asks about tulips", "k1")
        assert (again.created, again.message_id, again.user) == (False, mine.message_id, "alice")
        again = await s.create_exchange("c1", "echo", "x", "k1", user="bob")
        assert (again.created, again.message_id, again.user) == (False, theirs.message_id, "bob")

        # Whole conversations, history pages and list records: each user sees their own.
        assert texts(await s.get_conversation("c1")) == [
            ("user", "alice asks about tulips", "complete"),
            ("assistant", "tulips bloom in spring", "complete"),
        ]
        assert texts(await s.get_conversation("c1", user="alice")) == texts(
            await s.get_conversation("c1")
        )
        assert texts(await s.get_conversation("c1", user="bob")) == [
            ("user", "bob asks about roses", "complete"),
            ("assistant", "roses bloom in june", "complete"),
        ]
        page = await s.history("c1", None, 10, 10_000, user="bob")
        assert [m.message_id for m in page.messages] == [theirs.user_message_id, theirs.message_id]
        older = await s.history("c1", mine.message_id, 10, 10_000)
        assert [m.message_id for m in older.messages] == [mine.user_message_id]
        assert (await s.get_conversation_record("c1")).title == "alice asks about tulips"
        assert (await s.get_conversation_record("c1", user="bob")).title == "bob asks about roses"
        assert await ids(s.list_conversations()) == ["c1"]
        assert await ids(s.list_conversations(user="bob")) == ["c1"]

        # Messages: found in the user's own conversations, or anyone's for EVERY_USER.
        assert (await s.get_message(mine.message_id)).text == "tulips bloom in spring"
        assert (await s.get_message(theirs.message_id, user="bob")).text == "roses bloom in june"
        assert (await s.get_message(theirs.message_id, user=EVERY_USER)).text.startswith("roses")
        message, chunks = await s.replay(mine.message_id, 1, user=EVERY_USER)
        assert message.message_id == mine.message_id
        assert chunks == [(2, "bloom in spring", "", None)]
        message, chunks = await s.replay(theirs.message_id, 0, user="bob")
        assert message.conversation_id == "c1" and chunks == [(1, "roses bloom in june", "", None)]

        # Search: each user finds their own conversation only.
        assert await ids(s.search_conversations("bloom")) == ["c1"]
        (hit,) = await s.search_conversations("bloom", user="bob")
        assert hit.snippet == "roses bloom in june"
        assert await ids(s.search_conversations("roses")) == []
        assert await ids(s.search_conversations("tulips", user="bob")) == []


async def test_another_users_conversation_is_as_one_that_does_not_exist(tmp_path):
    """Every method answers for someone else's conversation, or message, exactly what it
    answers for an id that exists nowhere, and changes nothing."""
    async with opened(tmp_path / "users.db", default_user="alice") as s:
        mine = await s.create_exchange("c1", "echo", "alice's secret plan", "k1")
        await finish(s, mine, ["the ", "secret answer"])
        await s.rename_conversation("c1", "Alice's title")
        before = (await s.get_conversation("c1"), await s.get_conversation_record("c1"))

        for user in ("bob", "carol"):
            for cid in ("c1", "nowhere"):
                assert await s.get_conversation(cid, user=user) is None
                assert await s.get_conversation_record(cid, user=user) is None
                assert await s.history(cid, None, 10, 10_000, user=user) is None
                assert await s.history(cid, mine.message_id, 10, 10_000, user=user) is None
                assert await s.rename_conversation(cid, "stolen", user=user) is False
                assert await s.delete_conversation(cid, user=user) is False
            for mid in (mine.message_id, mine.user_message_id, "no-such-message"):
                assert await s.get_message(mid, user=user) is None
                assert await s.replay(mid, 0, user=user) == (None, [])
            assert await s.list_conversations(user=user) == []
            for query in ("secret", "Alice's title", "pl"):  # FTS, title, and LIKE (short)
                assert await s.search_conversations(query, user=user) == []
        # A page of bob's own conversation does not start before alice's message either.
        bob = await s.create_exchange("c1", "echo", "bob's own", "k9", user="bob")
        assert await s.history("c1", mine.message_id, 10, 10_000, user="bob") is None
        assert await s.history("c1", bob.message_id, 10, 10_000, user="bob") is not None

        assert (await s.get_conversation("c1"), await s.get_conversation_record("c1")) == before
        assert await ids(s.search_conversations("secret")) == ["c1"]
        assert await ids(s.search_conversations("alice's TITLE")) == ["c1"]


async def test_renaming_and_deleting_touch_only_the_users_own(tmp_path):
    async with opened(tmp_path / "users.db", default_user="alice") as s:
        exchanges = {}
        for user in ("alice", "bob"):
            exchanges[user] = await s.create_exchange(
                "c1", "echo", f"{user} writes", "k", user=user
            )
            await finish(s, exchanges[user], [f"reply to {user}, long enough"])
        assert await s.rename_conversation("c1", "Roses", user="bob")
        assert (await s.get_conversation_record("c1")).title == "alice writes"
        assert (await s.get_conversation_record("c1", user="bob")).title == "Roses"
        assert await ids(s.search_conversations("roses", user="bob")) == ["c1"]
        assert await ids(s.search_conversations("roses")) == []

        assert await s.delete_conversation("c1", user="bob")
        assert await s.get_conversation("c1", user="bob") is None
        assert await s.get_message(exchanges["bob"].message_id, user=EVERY_USER) is None
        assert await s.search_conversations("reply to", user="bob") == []
        # Alice's c1 is whole: messages, chunks, and its search rows.
        assert texts(await s.get_conversation("c1")) == [
            ("user", "alice writes", "complete"),
            ("assistant", "reply to alice, long enough", "complete"),
        ]
        assert await ids(s.search_conversations("reply to")) == ["c1"]
        assert await ids(s.search_conversations("alice writes")) == ["c1"]
        # Bob may start a new "c1" of his own.
        fresh = await s.create_exchange("c1", "echo", "bob again", "k", user="bob")
        assert fresh.created and fresh.message_id != exchanges["bob"].message_id


async def test_every_user_is_for_reading_messages_only(tmp_path):
    async with opened(tmp_path / "users.db", default_user="alice") as s:
        with pytest.raises(TypeError):
            await s.list_conversations(user=EVERY_USER)
        with pytest.raises(TypeError):
            await s.create_exchange("c1", "echo", "x", "k", user=EVERY_USER)
        with pytest.raises(TypeError):
            await s.search_conversations("x", user=EVERY_USER)
        assert await s.list_conversations() == []  # nothing was written


@pytest.mark.parametrize("full_text", [True, False], ids=["trigram", "like"])
async def test_search_is_scoped_by_user(tmp_path, monkeypatch, full_text):
    """Both kinds of index (FTS5 trigram, and the LIKE fallback) answer each user from their
    own messages, titles and long replies' later slices; a snippet comes from the user's own
    message even where another user's conversation of the same id holds the same text."""
    if full_text and not search.trigram_available():
        pytest.skip("needs SQLite 3.34+ with FTS5")
    if not full_text:
        monkeypatch.setattr(search, "trigram_available", lambda: False)
    monkeypatch.setattr(search, "SLICE_CHARS", 1000)  # long replies in several slices
    async with opened(tmp_path / "search.db", default_user="alice") as s:
        assert s._full_text is full_text
        for user in ("alice", "bob"):
            for i in range(3):
                exchange = await s.create_exchange(
                    f"c{i}", "echo", f"shared words, {user} number {i}", "k", user=user
                )
                long_text = "filler text " * 400 + f"deep needle of {user} {i}"
                await finish(s, exchange, [long_text[:2000], long_text[2000:]])
        await s.search_index_idle()
        await s.rename_conversation("c2", "Bob's garden", user="bob")

        for user in ("alice", "bob"):
            assert await ids(s.search_conversations("shared words", user=user)) == [
                "c2",
                "c1",
                "c0",
            ]
            hits = await s.search_conversations("number 1", user=user)
            assert [(c.conversation_id, c.snippet) for c in hits] == [
                ("c1", f"shared words, {user} number 1")
            ]
            (deep,) = await s.search_conversations(f"needle of {user} 2", user=user)
            assert deep.conversation_id == "c2" and deep.snippet.endswith(f"{user} 2")
            other = "bob" if user == "alice" else "alice"
            assert await s.search_conversations(f"needle of {other}", user=user) == []
            assert await s.search_conversations(f"{other} n", user=user) == []
            # Paged as the list is.
            first = await s.search_conversations("shared", 2, user=user)
            last = first[-1]
            rest = await s.search_conversations(
                "shared", 2, (last.updated_at, last.conversation_id), user=user
            )
            assert [c.conversation_id for c in first + rest] == ["c2", "c1", "c0"]
        assert await ids(s.search_conversations("garden", user="bob")) == ["c2"]
        assert await ids(s.search_conversations("garden")) == []
        assert await ids(s.search_conversations("'s", user="bob")) == ["c2"]  # shorter than 3


# -- migration of a file from before users --------------------------------------------------


def schema_6_file(path):
    """A database file as the release before users wrote it: two conversations (one with a
    title), replies with thinking and usage, one reply in several frames, and its index."""
    db = sqlite3.connect(path, isolation_level=None)
    for step in MIGRATIONS[:4]:
        db.executescript(step)
    db.executemany(
        "INSERT INTO conversations (id, title, created_at, updated_at) VALUES (?, ?, ?, ?)",
        [("c1", "", 1.0, 10.0), ("c2", "Holiday plans", 2.0, 20.0)],
    )
    db.executemany(
        "INSERT INTO messages (id, conversation_id, role, agent_id, reply_to, "
        "client_message_id, status, text, chars, last_seq, reasoning_chars, usage, "
        "created_at, updated_at) VALUES (?, ?, ?, 'echo', ?, ?, ?, ?, ?, ?, ?, ?, 1, 1)",
        [
            ("u1", "c1", "user", None, "k1", "complete", "first question", 14, 0, 0, None),
            ("r1", "c1", "assistant", "u1", None, "complete", "", 23, 2, 5, '{"model": "m"}'),
            ("u2", "c2", "user", None, "k1", "complete", "where to go", 11, 0, 0, None),
            ("r2", "c2", "assistant", "u2", None, "stopped", "", 9, 2, 0, None),
        ],
    )
    db.executemany(
        "INSERT INTO chunks (message_id, seq, chunk, reasoning) VALUES (?, ?, ?, ?)",
        [
            ("r1", 1, "an answer in two fra", "think"),
            ("r1", 2, "mes", ""),
            ("r2", 1, "the coast", ""),
            ("r2", 2, "", ""),
        ],
    )
    for number in (4, 5):  # the index, built from what the file holds, and its backlog
        db.execute("BEGIN")
        apply(db, MIGRATIONS[number], "unused")
        db.execute(f"PRAGMA user_version={number + 1}")
        db.execute("COMMIT")
    return db


def contents(db) -> dict:
    """Everything a file holds, user columns aside."""
    return {
        "conversations": db.execute(
            "SELECT id, title, created_at, updated_at FROM conversations ORDER BY id"
        ).fetchall(),
        "messages": db.execute(
            "SELECT pos, id, conversation_id, role, agent_id, reply_to, client_message_id, "
            "status, error, text, chars, last_seq, owner, created_at, updated_at, "
            "reasoning_chars, usage FROM messages ORDER BY pos"
        ).fetchall(),
        "chunks": db.execute(
            "SELECT message_id, seq, chunk, reasoning FROM chunks ORDER BY message_id, seq"
        ).fetchall(),
        "search": db.execute(
            "SELECT rowid, conversation_id, text FROM search ORDER BY rowid"
        ).fetchall(),
    }


def schema_of(db) -> set:
    return set(
        db.execute("SELECT type, name, tbl_name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
    )


async def test_files_of_schema_6_are_migrated_to_the_local_user(tmp_path):
    path = tmp_path / "v6.db"
    with contextlib.closing(schema_6_file(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 6
        before = contents(db)
    assert len(before["search"]) == 5  # two user messages, two replies, one title
    shutil.copy(path, tmp_path / "v6-copy.db")

    async with opened(path) as s:  # the default user: this process's
        assert s.default_user == local_user()
        assert await ids(s.list_conversations()) == ["c2", "c1"]
        assert await ids(s.list_conversations(user=local_user())) == ["c2", "c1"]
        assert await s.list_conversations(user=local_user() + "-not") == []
        assert (await s.get_conversation_record("c2")).title == "Holiday plans"
        reply = await s.get_message("r1")
        assert (reply.text, reply.reasoning, reply.usage) == (
            "an answer in two frames",
            "think",
            {"model": "m"},
        )
        assert texts(await s.get_conversation("c2"))[1] == ("assistant", "the coast", "stopped")
        assert await ids(s.search_conversations("two frames")) == ["c1"]
        assert await ids(s.search_conversations("holiday")) == ["c2"]
        assert await s.search_conversations("holiday", user="someone") == []
        # clientMessageId stays unique per conversation, now per user too.
        again = await s.create_exchange("c1", "echo", "first question", "k1")
        assert not again.created and again.message_id == "r1"
        other = await s.create_exchange("c1", "echo", "first question", "k1", user="someone")
        assert other.created
        new = await s.create_exchange("c3", "echo", "a new one", "k1")
        assert new.created and new.user == local_user()

    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 7
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        me = local_user()
        owners = set(db.execute("SELECT user_id, id FROM conversations"))
        assert owners == {(me, "c1"), (me, "c2"), (me, "c3"), ("someone", "c1")}
        assert db.execute(
            "SELECT DISTINCT user_id FROM messages WHERE id IN ('u1', 'r1', 'u2', 'r2')"
        ).fetchall() == [(local_user(),)]
        migrated = schema_of(db)
    # Every table and index a new file has (and no other); the index keeps its kind.
    async with opened(tmp_path / "new.db"):
        pass
    with contextlib.closing(sqlite3.connect(tmp_path / "new.db")) as db:
        assert migrated == schema_of(db)
    assert {"conversations_by_update", "messages_by_conversation", "messages_streaming"} <= {
        name for kind, name, _ in migrated if kind == "index"
    }

    # The same file opened by a store for another user: every row kept, that user's.
    async with opened(tmp_path / "v6-copy.db", default_user="dana") as s:
        assert await ids(s.list_conversations()) == ["c2", "c1"]
        assert await s.list_conversations(user=local_user()) == []
    with contextlib.closing(sqlite3.connect(tmp_path / "v6-copy.db")) as db:
        assert contents(db) == before
        assert db.execute("SELECT DISTINCT user_id FROM conversations").fetchall() == [("dana",)]


# -- a conversation's place in the list ---------------------------------------------------


async def test_a_conversation_moves_up_when_its_reply_ends(tmp_path):
    """The list is ordered by last activity: a reply that ends moves its conversation up (and
    only that user's conversation of that id); a streamed frame does not."""
    async with opened(tmp_path / "order.db", default_user="alice") as s:
        first = await s.create_exchange("c1", "echo", "first", "k1")
        bobs = await s.create_exchange("c1", "echo", "bob's", "k1", user="bob")
        await asyncio.sleep(0.01)  # the clock moves on between the two
        second = await s.create_exchange("c2", "echo", "second", "k2")
        await finish(s, second, ["done"])
        assert await ids(s.list_conversations()) == ["c2", "c1"]

        started = (await s.get_conversation_record("c1")).updated_at
        bob_started = (await s.get_conversation_record("c1", user="bob")).updated_at
        await s.append(Append(first.message_id, 1, ["streaming..."]))
        assert (await s.get_conversation_record("c1")).updated_at == started
        assert await ids(s.list_conversations()) == ["c2", "c1"]

        await asyncio.sleep(0.01)
        await s.append(Append(first.message_id, 2, [" ended"], "complete"))
        ended = await s.get_conversation_record("c1")
        assert ended.updated_at > started and not ended.streaming
        assert await ids(s.list_conversations()) == ["c1", "c2"]
        assert (await s.get_conversation_record("c1", user="bob")).updated_at == bob_started

        # Stopped and failed replies end too.
        await asyncio.sleep(0.01)
        await finish(s, bobs, ["cut"], status="stopped")
        assert (await s.get_conversation_record("c1", user="bob")).updated_at > bob_started
        await asyncio.sleep(0.01)
        third = await s.create_exchange("c2", "echo", "again", "k3")
        asked = (await s.get_conversation_record("c2")).updated_at
        await asyncio.sleep(0.01)
        await s.append(Append(third.message_id, 1, [""], "error", error="it broke"))
        assert (await s.get_conversation_record("c2")).updated_at > asked


async def test_recovery_moves_the_conversation_of_an_interrupted_reply_up(tmp_path):
    """A reply whose producer is gone is ended as interrupted by another process (or by the
    next one to open the file): its conversation moves up as if its reply had ended."""
    path = tmp_path / "recover.db"
    first = SQLiteStore(path=str(path), default_user="alice")
    await first.open()
    second = SQLiteStore(path=str(path), default_user="alice")
    try:
        dying = await first.create_exchange("c1", "echo", "will be cut", "k1")
        await first.append(Append(dying.message_id, 1, ["partial"]))
        await asyncio.sleep(0.01)
        later = await first.create_exchange("c2", "echo", "later", "k2")
        await finish(first, later, ["done"])
        assert await second.open() == 0
        assert await ids(second.list_conversations()) == ["c2", "c1"]
        before = (await second.get_conversation_record("c1")).updated_at

        with sqlite3.connect(path) as db:  # the first process's lease runs out
            db.execute("UPDATE owners SET lease_until = 0 WHERE id = ?", (first._owner.id,))
        await asyncio.sleep(0.01)
        assert await second.recover() == 1
        record = await second.get_conversation_record("c1")
        assert record.updated_at > before and not record.streaming
        assert await ids(second.list_conversations()) == ["c1", "c2"]
        assert (await second.get_message(dying.message_id)).status == "interrupted"
    finally:
        await second.close()
        await first.close()

    # A process that died with a reply streaming: the next one to open the file ends it.
    path = tmp_path / "reopen.db"
    async with opened(path, default_user="bob") as s:
        cut = await s.create_exchange("c1", "echo", "cut", "k1")
        await asyncio.sleep(0.01)
        await finish(s, await s.create_exchange("c2", "echo", "later", "k2"), ["done"])
        with sqlite3.connect(path) as db:  # as if this process had died
            db.execute("DELETE FROM owners")
    async with opened(path, default_user="bob") as s:
        assert await ids(s.list_conversations()) == ["c1", "c2"]
        assert (await s.get_message(cut.message_id)).status == "interrupted"
