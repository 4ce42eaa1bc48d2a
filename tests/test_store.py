"""The SQLite store under a real server: where it lives, its schema, and a locked database."""

import asyncio
import sqlite3

import pytest

from helpers import assert_contiguous, new_id, streamchat_config, text_of
from jupyter_streamchat.store import SQLiteStore, StoreError, store_from_url
from jupyter_streamchat.store.schema import SCHEMA_VERSION


@pytest.fixture
def jp_server_config():
    # Writes a locked database refuses are retried for 0.3 s, then the reply ends.
    return streamchat_config(
        EchoAgent={"delay": 0.01},
        SQLiteStore={"busy_timeout": 0.2},
        StreamChatApp={"store_retry_seconds": 0.3},
    )


async def send_and_finish(client, text, conversation=None):
    await client.send_message(text, conversation=conversation)
    accepted = await client.expect("MESSAGE_ACCEPTED")
    return accepted, await client.chunks_until_complete(accepted["messageId"])


async def test_default_database_is_in_the_jupyter_data_dir(chat, streamchat_app, jp_data_dir):
    await send_and_finish(await chat(), "stored")
    path = jp_data_dir / "streamchat.db"
    assert streamchat_app.store.path == str(path) and path.exists()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        (user,) = db.execute("SELECT text FROM messages WHERE role = 'user'").fetchone()
        chunks = [c for (c,) in db.execute("SELECT chunk FROM chunks ORDER BY seq")]
    assert user == "stored" and "".join(chunks) == "stored"  # a reply's text is its chunks


async def test_locked_database_gives_an_error_and_loses_nothing(chat, rest, streamchat_app):
    client = await chat()
    conversation = new_id("c-")
    await send_and_finish(client, "before the lock", conversation)
    before = await rest("conversations", conversation)

    locker = sqlite3.connect(streamchat_app.store.path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        await client.send_message("while locked", conversation=conversation)
        error = await client.expect("ERROR")
        assert error["code"] == "store_unavailable" and "locked" in error["message"]
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert await rest("conversations", conversation) == before
    _, frames = await send_and_finish(client, "after the lock", conversation)
    assert text_of(frames) == "after the lock"


async def test_lock_mid_stream_ends_the_reply_with_its_stored_text(chat, rest, streamchat_app):
    client = await chat()
    conversation = new_id("c-")
    text = " ".join(f"w{i}" for i in range(400))
    await client.send_message(text, conversation=conversation)
    mid = (await client.expect("MESSAGE_ACCEPTED"))["messageId"]
    frames = [await client.expect("MESSAGE_CHUNK") for _ in range(3)]

    locker = sqlite3.connect(streamchat_app.store.path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    await asyncio.sleep(0.6)  # longer than busy_timeout: the next append fails
    locker.execute("ROLLBACK")  # the final frame is retried until it is stored
    locker.close()

    frames += await client.chunks_until_complete(mid)
    assert_contiguous(frames)
    final = frames[-1]
    assert final["status"] == "error" and "could not be stored" in final["error"]
    reply = (await rest("conversations", conversation))["messages"][1]
    assert reply["status"] == "error" and reply["lastSeq"] == final["seq"]
    assert reply["text"] == text_of(frames) and text.startswith(reply["text"])


async def test_database_from_a_newer_release_is_refused(tmp_path):
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this release"):
        await SQLiteStore(path=str(path)).open()


async def test_store_urls(tmp_path):
    store = store_from_url(f"sqlite:///{tmp_path}/a b.db")  # sqlite:////abs/path
    assert store.path == f"{tmp_path}/a b.db"
    with pytest.raises(ValueError, match="known schemes: sqlite://"):
        store_from_url("mysql://nope")


async def test_reopen_keeps_everything(tmp_path):
    """Close and reopen: replies, chunks and statuses come back as they were."""
    from jupyter_streamchat.store import Append

    path = str(tmp_path / "re.db")
    store = SQLiteStore(path=path)
    await store.open()
    exchange = await store.create_exchange("c", "echo", "hi there", "m1")
    await store.append(Append(exchange.message_id, 1, ["hi", " there"]))
    await store.close()

    store = SQLiteStore(path=path)
    assert await store.open() == 1  # the streaming reply is ended as interrupted
    message, chunks = await store.replay(exchange.message_id, 0)
    assert (message.status, message.last_seq) == ("interrupted", 3)
    # (seq, chunk, reasoning, tool calls)
    assert chunks == [(1, "hi", "", None), (2, " there", "", None), (3, "", "", None)]
    assert (await store.get_message(exchange.message_id)).text == "hi there"
    again = await store.create_exchange("c", "echo", "hi there", "m1")
    assert not again.created and again.message_id == exchange.message_id
    await store.close()


async def test_conversation_snapshot_text_ends_at_its_last_seq(tmp_path):
    """A streaming reply read while chunks are being committed: its text is exactly chunks
    1..last_seq (a client holding it takes the next live frame as new)."""
    from jupyter_streamchat.store import Append

    store = SQLiteStore(path=str(tmp_path / "snap.db"))
    await store.open()
    exchange = await store.create_exchange("c", "echo", "x", "m1")
    pieces = [f"<{seq}>" for seq in range(1, 401)]

    async def write():
        for seq, piece in enumerate(pieces, start=1):
            await store.append(Append(exchange.message_id, seq, [piece]))

    writer = asyncio.ensure_future(write())
    snapshots = []
    while not writer.done() and len(snapshots) < 2000:  # bounded
        messages = await store.get_conversation("c")
        reply = messages[-1]
        snapshots.append((reply.last_seq, reply.text))
    await writer
    await store.close()
    assert len(snapshots) > 10
    for last_seq, text in snapshots:
        assert text == "".join(pieces[:last_seq]), (last_seq, text[-20:])


async def test_a_failing_write_fails_only_its_own_request(tmp_path):
    """Writes are batched into one transaction; one that cannot be stored (here a string
    that is not valid Unicode, which the wire refuses earlier) leaves the rest of the batch
    committed."""
    from jupyter_streamchat.store import Append

    store = SQLiteStore(path=str(tmp_path / "iso.db"))
    await store.open()
    try:
        good = await store.create_exchange("c", "echo", "fine", "m1")
        results = await asyncio.gather(
            store.append(Append(good.message_id, 1, ["one"])),
            store.create_exchange("c", "echo", "bad \ud800", "m2"),
            store.append(Append(good.message_id, 2, [" two"], "complete")),
            return_exceptions=True,
        )
        assert results[0] is None and results[2] is None, results
        assert isinstance(results[1], StoreError), results
        messages = await store.get_conversation("c")
        assert [(m.role, m.text, m.status) for m in messages] == [
            ("user", "fine", "complete"),
            ("assistant", "one two", "complete"),
        ]
    finally:
        await store.close()


async def test_a_second_process_leaves_live_replies_alone(tmp_path):
    """Two stores on one file stand for two processes: opening the second does not end the
    first one's streaming reply; once the first one's lease has expired, recovery ends it
    and the first can no longer write to it."""
    from jupyter_streamchat.store import Append, LeaseLost

    path = str(tmp_path / "shared.db")
    first = SQLiteStore(path=path)
    await first.open()
    second = SQLiteStore(path=path)
    try:
        exchange = await first.create_exchange("c", "echo", "hi", "m1")
        await first.append(Append(exchange.message_id, 1, ["partial"]))
        assert await second.open() == 0
        await first.append(Append(exchange.message_id, 2, [" more"]))
        assert (await second.get_message(exchange.message_id)).status == "streaming"

        with sqlite3.connect(path) as db:  # the first process's lease runs out
            db.execute("UPDATE owners SET lease_until = 0 WHERE id = ?", (first._owner.id,))
        assert await second.recover() == 1
        with pytest.raises(LeaseLost):
            await first.append(Append(exchange.message_id, 3, [" too late"]))
        message = await second.get_message(exchange.message_id)
        assert (message.status, message.text, message.last_seq) == (
            "interrupted",
            "partial more",
            3,
        )
    finally:
        await second.close()
        await first.close()


async def test_schema_1_files_are_migrated(tmp_path):
    """A file written by the first schema: texts, chunks and ids survive the migration."""
    from jupyter_streamchat.store.schema import MIGRATIONS

    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as db:
        db.executescript(MIGRATIONS[0] + "; PRAGMA user_version=1;")
        db.execute("INSERT INTO conversations VALUES ('c', 't', 1, 1)")
        db.executemany(
            "INSERT INTO messages (id, conversation_id, role, agent_id, reply_to, "
            "client_message_id, status, text, last_seq, created_at, updated_at) "
            "VALUES (?, 'c', ?, 'echo', ?, ?, ?, ?, ?, 1, 1)",
            [
                ("u", "user", None, "m1", "complete", "hello", 0),
                ("r", "assistant", "u", None, "complete", "hello", 2),
            ],
        )
        db.executemany("INSERT INTO chunks VALUES ('r', ?, ?)", [(1, "hello"), (2, "")])
    store = SQLiteStore(path=str(path))
    await store.open()
    try:
        messages = await store.get_conversation("c")
        assert [(m.message_id, m.text, m.last_seq) for m in messages] == [
            ("u", "hello", 0),
            ("r", "hello", 2),
        ]
        again = await store.create_exchange("c", "echo", "hello", "m1")
        assert not again.created and again.message_id == "r"
        other = await store.create_exchange("d", "echo", "hello", "m1")  # per conversation
        assert other.created
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []


async def test_frames_of_many_replies_are_written_together_and_fail_alone(tmp_path):
    """Streaming frames queued together are written by one job (a few statements for all);
    if one reply is no longer this process's to write, only that reply's append fails, and
    the others are stored. A reply's frames in one batch (several appends queued before the
    writer ran) are kept in order."""
    from jupyter_streamchat.store import Append, LeaseLost
    from jupyter_streamchat.store import writer as writer_module

    path = str(tmp_path / "many.db")
    store = SQLiteStore(path=path)
    await store.open()
    replies = [
        (await store.create_exchange(f"c{i}", "echo", "go", f"m{i}")).message_id for i in range(20)
    ]
    with sqlite3.connect(path) as db:  # another process took reply 7 over
        db.execute("UPDATE messages SET owner = 'someone-else' WHERE id = ?", (replies[7],))

    batches = []
    original = writer_module.Writer._run_batch

    def counting(self, jobs):
        batches.append(len(jobs))
        return original(self, jobs)

    writer_module.Writer._run_batch = counting
    try:
        outcomes = await asyncio.gather(
            *(store.append(Append(mid, 1, [f"<{mid}>"])) for mid in replies),
            *(store.append(Append(replies[0], 2, ["second"])),),
            return_exceptions=True,
        )
    finally:
        writer_module.Writer._run_batch = original
    assert isinstance(outcomes[7], LeaseLost)
    assert all(o is None for i, o in enumerate(outcomes) if i != 7)
    assert sum(batches) <= 3  # one job took them all (or all but the first few)
    for i, mid in enumerate(replies):
        message, chunks = await store.replay(mid, 0)
        expected = [] if i == 7 else [(1, f"<{mid}>", "", None)]
        if i == 0:
            expected.append((2, "second", "", None))
        assert chunks == expected and message.last_seq == len(expected)
    # All valid and one frame per reply: written in two statements; each reply's text grows.
    valid = [mid for i, mid in enumerate(replies) if i not in (0, 7)]
    assert await asyncio.gather(
        *(store.append(Append(mid, 2, ["+"], reasoning=["~"])) for mid in valid)
    ) == [None] * len(valid)
    for mid in valid:
        message = await store.get_message(mid)
        assert (message.last_seq, message.text, message.reasoning) == (2, f"<{mid}>+", "~")
    await store.close()


async def test_frames_written_together_keep_nul_characters(tmp_path):
    """Text with NUL characters (valid Unicode, and valid on the wire) is stored whole when
    many replies' frames are written at once, in the answer and in the thinking text."""
    from jupyter_streamchat.store import Append

    store = SQLiteStore(path=str(tmp_path / "nul.db"))
    await store.open()
    replies = [
        (await store.create_exchange(f"c{i}", "echo", "go", f"m{i}")).message_id for i in range(5)
    ]
    texts = ["\x001\x00é", "plain", "a\x00", "\x00", "b"]
    thinking = ["", "\x00t", "", "", "x\x00y"]
    assert await asyncio.gather(
        *(
            store.append(Append(mid, 1, [text], reasoning=[thought]))
            for mid, text, thought in zip(replies, texts, thinking)
        )
    ) == [None] * len(replies)
    for mid, text, thought in zip(replies, texts, thinking):
        message = await store.get_message(mid)
        assert (message.text, message.reasoning) == (text, thought)
        assert (await store.replay(mid, 0))[1] == [(1, text, thought, None)]
    await store.close()


async def test_checkpoints_run_on_their_own_thread_not_in_commits(tmp_path):
    """Commits only append to the write-ahead log; the checkpoint thread copies it into the
    database file (the write that syncs the disk) within about checkpoint_seconds."""
    from jupyter_streamchat.store import Append

    path = str(tmp_path / "ckpt.db")
    store = SQLiteStore(path=path, checkpoint_seconds=0.1)
    await store.open()
    assert (
        await store._writer.submit(
            lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        )
        == 0
    )
    exchange = await store.create_exchange("c", "echo", "x" * 20000, "m1")
    for seq in range(1, 51):
        await store.append(Append(exchange.message_id, seq, ["y" * 1000]))
    before = store._checkpointer.checkpoints
    for _ in range(200):  # hang guard: 10 s
        if store._checkpointer.checkpoints > before:
            break
        await asyncio.sleep(0.05)
    with sqlite3.connect(path) as db:
        busy, logged, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert store._checkpointer.checkpoints > before and logged > 0 and copied == logged
    await store.close()
    assert store._checkpointer is None
    with sqlite3.connect(path) as db:  # everything is in the file
        (chars,) = db.execute(
            "SELECT chars FROM messages WHERE id = ?", (exchange.message_id,)
        ).fetchone()
    assert chars == 50 * 1000


async def test_conversation_list_of_10000_reads_one_page(tmp_path):
    """With 10,000 conversations a page is read through the (user, updated_at, id) index and
    the per-conversation details for the page's rows only: no sort of the whole table."""
    path = str(tmp_path / "many.db")
    store = SQLiteStore(path=path)
    await store.open()
    user = store.default_user
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO conversations (user_id, id, title, created_at, updated_at) "
            "VALUES (?, ?, '', ?, ?)",
            [(user, f"c{i:05d}", i, i) for i in range(10_000)],
        )
        db.executemany(
            "INSERT INTO messages (id, user_id, conversation_id, role, agent_id, "
            "client_message_id, status, text, chars, created_at, updated_at) VALUES (?, ?, ?, "
            "'user', 'echo', ?, 'complete', ?, 5, ?, ?)",
            [(f"m{i:05d}", user, f"c{i:05d}", f"k{i}", f"hello {i}", i, i) for i in range(10_000)],
        )
        plan = " ".join(
            row[-1]
            for row in db.execute(
                "EXPLAIN QUERY PLAN SELECT id FROM conversations c WHERE c.user_id = ? AND "
                "(c.updated_at, c.id) < (?, ?) ORDER BY c.updated_at DESC, c.id DESC LIMIT 50",
                (user, 5000, "c05000"),
            )
        )
    assert "conversations_by_update" in plan and "TEMP B-TREE" not in plan, plan
    first = await store.list_conversations(50)
    assert [c.conversation_id for c in first][:2] == ["c09999", "c09998"] and len(first) == 50
    assert (first[0].title, first[0].message_count, first[0].agent_id) == ("hello 9999", 1, "echo")
    last = first[-1]
    after = await store.list_conversations(50, (last.updated_at, last.conversation_id))
    assert after[0].conversation_id == "c09949"
    deep = await store.list_conversations(50, (3.0, "c00003"))
    assert [c.conversation_id for c in deep] == ["c00002", "c00001", "c00000"]
    await store.close()
