"""The Postgres store's own behaviour, on the session's throwaway cluster (``pg_cluster``): its
schema versions, the hints it sends the other servers and hears from them, leases and recovery
between two store objects (two servers) on one database, outages (Postgres stopped and started
under an open store), search against the SQLite store's answers, and its trigram index.

What every store promises alike is checked in test_store_contract.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import sys
import time

import psycopg
import pytest

from jupyter_streamchat import redact
from jupyter_streamchat.store import (
    EVERY_USER,
    Append,
    LeaseLost,
    SearchTooCostly,
    SQLiteStore,
    StoreError,
    store_from_url,
)
from jupyter_streamchat.store import pglisten
from jupyter_streamchat.store.hints import (
    ConversationChanged,
    ExchangeCreated,
    FramesCommitted,
    Resync,
    StopRequested,
)
from jupyter_streamchat.store.pgschema import SCHEMA_VERSION
from jupyter_streamchat.store.postgres import PostgresStore

LISTENER = "application_name = 'jupyter-streamchat-listen'"


class Logged(logging.Handler):
    """A store's log records, as the server log would get them."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list = []

    def emit(self, record):
        self.records.append(record)

    def text(self, level=logging.DEBUG) -> str:
        return "\n".join(r.getMessage() for r in self.records if r.levelno >= level)


def logger(name: str) -> tuple:
    log = logging.getLogger(f"test.pgstore.{name}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    handler = Logged()
    log.handlers[:] = [handler]
    return log, handler


class Stores:
    """PostgresStore objects on one database (one per server); all closed at the end."""

    def __init__(self, url: str):
        self.url = url
        self.opened: list = []

    async def open(self, **traits) -> PostgresStore:
        store = PostgresStore.from_url(self.url, **traits)
        store.heard = []  # hints from the others
        store.on_hint = store.heard.append
        await store.open()
        self.opened.append(store)
        return store

    async def close_all(self) -> None:
        while self.opened:
            await self.opened.pop().close()


@pytest.fixture
def stores(pg_url, jp_asyncio_loop):
    made = Stores(pg_url)
    yield made
    jp_asyncio_loop.run_until_complete(made.close_all())


def sql(url: str, statement: str, args=()) -> list:
    """Run one statement as the store's role, outside any store; its rows."""
    with psycopg.connect(url, autocommit=True) as db:
        cursor = db.execute(statement, args)
        return cursor.fetchall() if cursor.description else []


async def until(condition, seconds: float = 30.0, what: str = "condition"):
    """Poll ``condition()`` (sync or async) until it is true; a hang guard, not a timing."""
    deadline = time.monotonic() + seconds
    for _ in range(100_000):
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


async def reply(store, conversation: str, text: str, chunks: list, *, user=None, status="complete"):
    """An exchange whose reply streams ``chunks`` (the last one ends it with ``status``)."""
    exchange = await store.create_exchange(conversation, "echo", text, new_key(), user=user)
    for seq, chunk in enumerate(chunks[:-1], start=1):
        await store.append(Append(exchange.message_id, seq, [chunk]))
    if status is not None:
        await store.append(Append(exchange.message_id, len(chunks), [chunks[-1]], status))
    return exchange


_keys = iter(range(10**9))


def new_key() -> str:
    return f"k{next(_keys)}"


# -- schema ---------------------------------------------------------------------------------


async def test_the_schema_is_versioned_and_a_newer_one_refused(stores, pg_url):
    store = await stores.open()
    assert sql(pg_url, "SELECT max(version) FROM streamchat_schema") == [(SCHEMA_VERSION,)]
    assert store.trigram  # the cluster's databases come with pg_trgm
    indexes = {name for (name,) in sql(pg_url, "SELECT indexname FROM pg_indexes")}
    assert {"messages_text_trgm", "conversations_title_trgm"} <= indexes
    await stores.close_all()

    again = await stores.open()  # a second open migrates nothing
    assert sql(pg_url, "SELECT count(*) FROM streamchat_schema") == [(SCHEMA_VERSION,)]
    await stores.close_all()
    del again

    sql(pg_url, "INSERT INTO streamchat_schema (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer than this release") as raised:
        await PostgresStore.from_url(pg_url).open()
    assert redact.url_password(pg_url) not in str(raised.value)


async def test_urls_and_messages_never_show_the_password(pg_url):
    password = redact.url_password(pg_url)
    store = store_from_url(pg_url)
    assert isinstance(store, PostgresStore)
    assert password not in store.describe() and "127.0.0.1" in store.describe()
    assert isinstance(store_from_url(pg_url.replace("postgresql://", "postgres://")), PostgresStore)
    wrong = pg_url.replace(password, "not-the-password")
    with pytest.raises(StoreError) as raised:
        await PostgresStore.from_url(wrong).open()
    assert "not-the-password" not in str(raised.value) and password not in str(raised.value)
    assert "authentication failed" in str(raised.value)

    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    nobody = re.sub(r":\d+/", f":{port}/", pg_url)
    with pytest.raises(StoreError, match="cannot open the chat database") as raised:
        await asyncio.wait_for(PostgresStore.from_url(nobody).open(), 60)  # a hang guard
    assert password not in str(raised.value)


def test_a_postgres_url_without_psycopg_says_what_to_install(monkeypatch):
    import jupyter_streamchat.store as stores_module

    for scheme in ("postgresql", "postgres"):
        monkeypatch.delitem(stores_module.STORES_BY_SCHEME, scheme, raising=False)
    monkeypatch.delitem(sys.modules, "jupyter_streamchat.store.postgres", raising=False)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg raises ImportError
    with pytest.raises(ValueError, match=r'pip install "jupyter-streamchat\[postgres\]"') as e:
        store_from_url("postgresql://someone:hunter22@127.0.0.1/db")
    assert "hunter22" not in str(e.value)


async def test_without_pg_trgm_search_reads_every_text(pg_cluster, pg_url):
    """A database where the store's role may not create pg_trgm: search works (a plain scan),
    and the log says why it may be slow."""
    name = pg_url.rsplit("/", 1)[1]
    pg_cluster.psql("DROP EXTENSION pg_trgm;", name)
    pg_cluster.psql(
        f"ALTER DATABASE {name} OWNER TO postgres; GRANT CREATE ON SCHEMA public TO streamchat;",
        name,
    )
    log, logged = logger("notrgm")
    store = PostgresStore.from_url(pg_url, log=log)
    await store.open()
    try:
        assert not store.trigram
        assert "pg_trgm extension is not available" in logged.text(logging.WARNING)
        await reply(store, "c1", "Planning the GARDEN", ["fine"])
        (hit,) = await store.search_conversations("garden")
        assert hit.snippet == "Planning the GARDEN"
    finally:
        await store.close()


# -- users ----------------------------------------------------------------------------------


async def test_each_user_has_conversations_of_their_own(stores, pg_url):
    store = await stores.open(default_user="alice")
    mine = await reply(store, "c1", "alice's garden", ["roses"])
    theirs = await reply(store, "c1", "bob's garden", ["tulips"], user="bob")
    assert sql(pg_url, "SELECT user_id, id FROM conversations ORDER BY user_id") == [
        ("alice", "c1"),
        ("bob", "c1"),
    ]
    assert [m.text for m in await store.get_conversation("c1")] == ["alice's garden", "roses"]
    assert [m.text for m in await store.get_conversation("c1", user="bob")] == [
        "bob's garden",
        "tulips",
    ]
    assert await store.get_message(theirs.message_id) is None  # alice's by default
    assert (await store.get_message(theirs.message_id, user=EVERY_USER)).text == "tulips"
    assert (await store.replay(theirs.message_id, 0))[0] is None
    assert [c.snippet for c in await store.search_conversations("garden")] == ["alice's garden"]
    assert await store.rename_conversation("c1", "mine", user="carol") is False
    assert await store.delete_conversation("c1", user="bob")
    assert (await store.get_message(mine.message_id)).text == "roses"
    assert await store.list_conversations(user="bob") == []
    assert [c.conversation_id for c in await store.list_conversations()] == ["c1"]


# -- hints ----------------------------------------------------------------------------------


async def test_hints_reach_the_other_servers_not_their_sender(stores):
    first = await stores.open()
    second = await stores.open()
    exchange = await first.create_exchange("c1", "echo", "hello", "k1")
    await first.append(Append(exchange.message_id, 1, ["a"]))
    await first.append(Append(exchange.message_id, 2, ["b"], "complete"))
    await first.rename_conversation("c1", "Greetings")
    await first.announce(StopRequested(exchange.message_id))
    await first.delete_conversation("c1")
    user = first.default_user
    expected = [
        ExchangeCreated(user, "c1", "k1", exchange.user_message_id, exchange.message_id, "echo"),
        FramesCommitted(user, "c1", exchange.message_id, 1, False),
        FramesCommitted(user, "c1", exchange.message_id, 2, True),
        ConversationChanged(user, "c1"),
        StopRequested(exchange.message_id),
        ConversationChanged(user, "c1", deleted=True),
    ]
    await until(lambda: len(second.heard) >= len(expected), what="the hints")
    assert second.heard == expected
    assert first.heard == []  # nothing of its own

    # And back: the first hears the second.
    await second.create_exchange("c2", "echo", "hi", "k2")
    await until(lambda: first.heard, what="a hint from the second")
    assert [type(h) for h in first.heard] == [ExchangeCreated]


async def test_a_round_of_many_replies_sends_few_notifications(stores, pg_url):
    store = await stores.open()
    exchanges = [await store.create_exchange(f"c{i}", "echo", "q", f"k{i}") for i in range(40)]
    payloads: list = []
    listener = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
    try:
        await listener.execute(f"LISTEN {pglisten.CHANNEL}")
        frames = 5
        for seq in range(1, frames + 1):
            status = "complete" if seq == frames else None
            await asyncio.gather(
                *(store.append(Append(e.message_id, seq, [f"<{seq}>"], status)) for e in exchanges)
            )
        async for note in listener.notifies(timeout=2.0):
            payloads.append(note.payload)
    finally:
        await listener.close()
    assert all(len(p.encode()) < 8000 for p in payloads)
    hints = [hint for p in payloads for hint in pglisten.decode(p)[1]]
    appends = len(exchanges) * frames
    assert len(payloads) < appends / 4, (len(payloads), appends)  # per round, not per frame
    ends = {h.message_id: h.last_seq for h in hints if h.final}
    assert ends == {e.message_id: frames for e in exchanges}


async def test_frames_written_together_fail_alone(stores):
    """Streaming appends of several replies go in one statement; one that cannot be stored
    (text that is not valid Unicode) or is not this server's to write (a wrong seq) fails
    alone, and the others are committed."""
    store = await stores.open()
    ex = [await store.create_exchange(f"c{i}", "echo", "q", f"k{i}") for i in range(4)]
    results = await asyncio.gather(
        store.append(Append(ex[0].message_id, 1, ["fine"])),
        store.append(Append(ex[1].message_id, 1, ["bad \ud800"])),
        store.append(Append(ex[2].message_id, 5, ["wrong seq"])),
        store.append(Append(ex[3].message_id, 1, ["also fine", "\x00 and more"])),
        return_exceptions=True,
    )
    assert results[0] is None and results[3] is None, results
    assert isinstance(results[1], StoreError) and not isinstance(results[1], LeaseLost)
    assert isinstance(results[2], LeaseLost)
    texts = [(await store.get_message(e.message_id)).text for e in ex]
    assert texts == ["fine", "", "", "also fine\x00 and more"]


def test_hints_are_split_over_notifications_that_postgres_takes():
    hints = [
        FramesCommitted("user-" + "x" * 40, f"conversation-{i}", f"{i:032x}", i) for i in range(300)
    ]
    payloads = pglisten.encode("origin", hints)
    assert len(payloads) > 1 and all(
        len(p.encode()) <= pglisten.MAX_PAYLOAD_BYTES for p in payloads
    )
    decoded = [h for p in payloads for h in pglisten.decode(p)[1]]
    assert decoded == hints
    assert {pglisten.decode(p)[0] for p in payloads} == {"origin"}


async def test_the_listener_reconnects_and_asks_for_a_resync(stores, pg_cluster):
    first = await stores.open()
    second = await stores.open()
    assert pg_cluster.terminate(LISTENER) == 2
    await until(lambda: Resync() in second.heard, what="Resync after the listener dropped")
    await until(lambda: Resync() in first.heard, what="Resync on the first too")
    del second.heard[:]
    await first.create_exchange("c1", "echo", "after", "k1")  # hints flow again
    await until(lambda: any(isinstance(h, ExchangeCreated) for h in second.heard), what="hint")


# -- leases ---------------------------------------------------------------------------------


async def test_a_dead_servers_replies_are_ended_by_another(stores, pg_url):
    """A server that stops renewing its lease (killed): another one ends its streaming reply
    as interrupted, with an empty final frame and its text kept, and says so."""
    dead = await stores.open(lease_seconds=2)
    alive = await stores.open(lease_seconds=3)  # recovers every second
    exchange = await dead.create_exchange("c1", "echo", "hello", "k1")
    await dead.append(Append(exchange.message_id, 1, ["partial"]))
    await dead.append(Append(exchange.message_id, 2, [" text"]))
    dead._lease_task.cancel()  # as if killed: no more renewals

    async def ended():
        message = await alive.get_message(exchange.message_id)
        return message.status == "interrupted" and message

    message = await until(ended, what="the reply ended by the other server")
    assert (message.text, message.last_seq) == ("partial text", 3)
    _, frames = await alive.replay(exchange.message_id, 0)
    assert frames == [(1, "partial", "", None), (2, " text", "", None), (3, "", "", None)]
    (listed,) = await alive.list_conversations()
    assert not listed.streaming and listed.updated_at >= message.created_at
    assert FramesCommitted(alive.default_user, "c1", exchange.message_id, 3, True) in dead.heard
    assert [c.conversation_id for c in await alive.search_conversations("partial")] == ["c1"]
    with pytest.raises(LeaseLost):
        await dead.append(Append(exchange.message_id, 3, [" late"]))


async def test_a_server_whose_lease_expired_is_told_and_takes_a_new_one(stores, pg_url):
    log, logged = logger("expired")
    lost: list = []
    server = await stores.open(lease_seconds=2, log=log)
    server.on_lease_lost = lambda: lost.append(True)
    other = await stores.open(lease_seconds=2)
    exchange = await server.create_exchange("c1", "echo", "hello", "k1")
    await server.append(Append(exchange.message_id, 1, ["partial"]))
    old = server._owner_id
    # The server was suspended past its lease, and another one ended its reply meanwhile.
    sql(pg_url, "UPDATE owners SET lease_until = now() - interval '1 s' WHERE id = %s", (old,))
    await other.recover()  # (or the server's own next renewal, whichever comes first)
    assert (await other.get_message(exchange.message_id)).status == "interrupted"
    with pytest.raises(LeaseLost):
        await server.append(Append(exchange.message_id, 2, [" more"]))
    await until(lambda: lost, what="on_lease_lost")
    assert lost == [True]
    assert "ended as interrupted by another server" in logged.text(logging.ERROR)
    assert server._owner_id != old
    assert sql(pg_url, "SELECT lease_until > now() FROM owners WHERE id = %s", (server._owner_id,))
    # New replies go on under the new lease.
    after = await reply(server, "c2", "again", ["fine", ""])
    assert (await other.get_message(after.message_id)).status == "complete"


async def test_a_live_servers_replies_are_left_alone(stores):
    first = await stores.open(lease_seconds=5)
    exchange = await first.create_exchange("c1", "echo", "hello", "k1")
    await first.append(Append(exchange.message_id, 1, ["partial"]))
    second = await stores.open(lease_seconds=5)
    assert await second.recover() == 0
    await first.append(Append(exchange.message_id, 2, [" more"], "complete"))
    assert (await second.get_message(exchange.message_id)).text == "partial more"


# -- outages --------------------------------------------------------------------------------


async def test_postgres_stopped_gives_store_errors_then_the_store_comes_back(stores, pg_cluster):
    log, logged = logger("outage")
    # Leases outlast the outage here: its replies are still this server's to write after it.
    store = await stores.open(pool_timeout=2, connect_timeout=2, lease_seconds=120, log=log)
    other = await stores.open(lease_seconds=120)
    before = await store.create_exchange("c1", "echo", "kept", "k1")
    await store.append(Append(before.message_id, 1, ["stored"]))

    pg_cluster.stop()
    password = redact.url_password(stores.url)
    calls = [
        store.list_conversations(),
        store.get_message(before.message_id),
        store.create_exchange("c2", "echo", "lost", "k2"),
        store.append(Append(before.message_id, 2, [" frame"])),
        store.search_conversations("kept"),
        store.announce(StopRequested(before.message_id)),
    ]
    for call in calls:
        with pytest.raises(StoreError) as raised:
            await asyncio.wait_for(call, 60)  # a hang guard: it fails within pool_timeout
        assert "cannot be reached" in str(raised.value), raised.value
        assert password not in str(raised.value)

    pg_cluster.start()
    started = time.monotonic()
    # The same store object, never reopened: its pool reconnects by itself.
    await until(lambda: _works(store.list_conversations()), seconds=60, what="reconnection")
    print(f"reads work again {time.monotonic() - started:.1f} s after Postgres started")
    await store.append(Append(before.message_id, 2, [" frame"], "complete"))  # the retry
    message = await store.get_message(before.message_id)
    assert (message.text, message.status) == ("stored frame", "complete")
    await until(lambda: Resync() in other.heard, seconds=60, what="the listener's Resync")
    assert password not in logged.text()


async def test_a_database_that_hangs_gives_store_errors_in_bounded_time(stores, pg_cluster):
    """Postgres alive but not answering (its backends stopped, as a hung host would be): a
    request fails after request_timeout, and works again once the database answers."""
    store = await stores.open(request_timeout=2, lease_seconds=120)
    await store.create_exchange("c1", "echo", "kept", "k1")
    dbname = stores.url.rsplit("/", 1)[1]
    pids = [
        int(pid)
        for pid in pg_cluster.psql(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'jupyter-streamchat' "
            f"AND datname = '{dbname}'"
        ).split()
    ]
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(StoreError, match="did not answer within 2 s"):
            await asyncio.wait_for(store.get_conversation_record("c1"), 60)  # a hang guard
        print(f"a hung database answered with StoreError in {time.monotonic() - started:.1f} s")
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    await until(lambda: _works(store.list_conversations()), seconds=60, what="answers again")
    assert (await store.get_conversation_record("c1")).title == "kept"


async def _works(call) -> bool:
    try:
        await call
    except StoreError:
        return False
    return True


async def test_an_append_retried_after_an_unconfirmed_commit_is_not_a_lost_lease(stores):
    """The hub retries an append it got a StoreError for; when the first try had committed
    after all, the retry succeeds and stores nothing twice."""
    store = await stores.open()
    exchange = await store.create_exchange("c1", "echo", "q", "k1")
    await store.append(Append(exchange.message_id, 1, ["one"]))
    await store.append(Append(exchange.message_id, 1, ["one"]))  # the same again
    await store.append(Append(exchange.message_id, 2, ["two"], "complete"))
    await store.append(Append(exchange.message_id, 2, ["two"], "complete"))
    message, frames = await store.replay(exchange.message_id, 0)
    assert frames == [(1, "one", "", None), (2, "two", "", None)]
    assert message.status == "complete"
    with pytest.raises(LeaseLost):  # different frames at those seqs are refused
        await store.append(Append(exchange.message_id, 2, ["other"], "complete"))


# -- search ---------------------------------------------------------------------------------

CORPUS = [
    # (conversation, user text, reply chunks or None for a reply still streaming, title)
    ("garden", "Planning the GARDEN layout for the spring", ["Plant ", "roses ", "first."], ""),
    ("percent", "we are 100% sure", ["ok"], ""),
    ("letter", "we are 100x sure", ["ok"], ""),
    ("snake", "a snake_case name", ["a back\\slash here"], ""),
    ("camel", "a snakeXcase name", ["fine"], ""),
    ("quoted", """she said "hi" and it's fine""", ["yes"], ""),
    ("summer", "Un été chaud", ["Très CHAUD"], ""),
    ("kitchen", "unrelated words", ["nothing"], "Kitchen renovation"),
    (
        "markdown",
        "how do I load a CSV?",
        [
            "## Loading *data*\n\nUse **pandas** (see [the docs](https://pandas.pydata.org)):"
            "\n\n```python\nimport pandas as pd\n",
            "df = pd.read_csv(`data.csv`)\n```\n\n| Step | Call |\n|---|:---:|\n"
            "| read | `pd.read_csv` |\n| tokens_per_second | _fast_ |\n",
        ],
        "",
    ),
    ("long", "a long one", ["lorem ipsum dolor " * 30, "the NEEDLE is here ", "tail " * 40], ""),
    ("split", "split across frames", ["hay", "sta", "ck"], ""),
    ("streaming", "still going", None, ""),
    *[(f"hay{i}", f"haystack {i} with a needle in it", [f"reply {i}"], "") for i in range(5)],
]

QUERIES = [
    "garden",
    "GARDEN layout",
    "roses first",
    "100%",
    "0%",
    "e_c",
    "eXc",
    '"hi"',
    "it's",
    "HI",
    "ÉTÉ",
    "très chaud",
    "back\\sl",
    "renovation",
    "import pa",
    "tokens_per",
    "needle",
    "haystack",
    "still going",
    "sta",
    "no such words anywhere",
    "a",
]


async def build(store) -> None:
    for conversation, text, chunks, title in CORPUS:
        exchange = await store.create_exchange(conversation, "echo", text, new_key())
        for seq, chunk in enumerate(chunks or ["partial"], start=1):
            last = chunks is not None and seq == len(chunks)
            await store.append(
                Append(exchange.message_id, seq, [chunk], "complete" if last else None)
            )
        if title:
            await store.rename_conversation(conversation, title)
        await asyncio.sleep(0.002)  # distinct updated_at in either store's clock


async def test_search_answers_as_the_sqlite_store_does(stores, tmp_path):
    postgres = await stores.open()
    sqlite = SQLiteStore(path=str(tmp_path / "parity.db"))
    await sqlite.open()
    try:
        await build(postgres)
        await build(sqlite)
        await sqlite.search_index_idle()
        for query in QUERIES:
            got = [
                (c.conversation_id, c.snippet) for c in await postgres.search_conversations(query)
            ]
            want = [
                (c.conversation_id, c.snippet) for c in await sqlite.search_conversations(query)
            ]
            assert got == want, query
        assert [c.conversation_id for c in await postgres.search_conversations("needle")][-1] == (
            "long"
        )
        # Paged the same way, most recent first, each once.
        seen, after = [], None
        for _ in range(10):
            page = await postgres.search_conversations("hay", 2, after)
            if not page:
                break
            seen += [c.conversation_id for c in page]
            after = (page[-1].updated_at, page[-1].conversation_id)
        assert seen == [c.conversation_id for c in await sqlite.search_conversations("hay")]
    finally:
        await sqlite.close()


async def _many_messages(url: str, count: int) -> None:
    """``count`` conversations of one user message each, written by SQL (fast)."""
    sql(
        url,
        "INSERT INTO conversations (user_id, id, created_at, updated_at) "
        "SELECT 'u', 'c' || lpad(i::text, 6, '0'), i, i FROM generate_series(1, %s) i",
        (count,),
    )
    sql(
        url,
        "INSERT INTO messages (id, user_id, conversation_id, role, agent_id, status, text, "
        "chars, created_at, updated_at) SELECT 'm' || lpad(i::text, 6, '0'), 'u', "
        "'c' || lpad(i::text, 6, '0'), 'user', 'echo', 'complete', 'note ' || i || ': ' || "
        "CASE WHEN i %% 1000 = 0 THEN 'a rare word' ELSE md5(i::text) || ' common text' END, "
        "40, i, i FROM generate_series(1, %s) i",
        (count,),
    )
    # As autovacuum would in time: the GIN index's pending entries merged, statistics taken.
    sql(url, "VACUUM ANALYZE messages")


async def test_search_of_many_conversations_reads_the_trigram_index(stores, pg_url):
    store = await stores.open(default_user="u")
    await _many_messages(pg_url, 20_000)
    rare = await store.search_conversations("RARE WORD", 50)
    assert [c.conversation_id for c in rare] == [f"c{i:06d}" for i in range(20_000, 0, -1000)]
    assert rare[0].snippet == "note 20000: a rare word"
    plan = "\n".join(
        row[0]
        for row in sql(
            pg_url,
            "EXPLAIN SELECT id FROM messages WHERE user_id = 'u' AND text ILIKE %s",
            ("%rare word%",),
        )
    )
    assert "messages_text_trgm" in plan, plan


async def test_a_search_over_its_deadline_is_too_costly(stores, pg_url):
    store = await stores.open(default_user="u", search_seconds=0.001)
    await _many_messages(pg_url, 20_000)
    with pytest.raises(SearchTooCostly, match="longer than this server allows"):
        await store.search_conversations("e", 10)  # one letter: every text is read
    store.search_seconds = 30
    assert len(await store.search_conversations("rare word", 10)) == 10  # the store goes on
