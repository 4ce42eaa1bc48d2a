"""Searching the conversations: GET api/conversations?q=, through a real server, and the store's
index under it (built for old files, kept current, and its LIKE fallback)."""

import json
import sqlite3
import time

import pytest
from tornado.httpclient import HTTPClientError

from helpers import new_id
from jupyter_streamchat.store import Append, SQLiteStore, search
from jupyter_streamchat.store.schema import MIGRATIONS


async def converse(client, text, agent="echo", conversation=None):
    """Send a message to a new (or given) conversation; returns its id once the reply ended."""
    conversation = conversation or new_id("c-")
    await client.send_message(text, agent=agent, conversation=conversation)
    accepted = await client.expect("MESSAGE_ACCEPTED")
    await client.chunks_until_complete(accepted["messageId"])
    return conversation


@pytest.fixture
def find(jp_fetch):
    """``await find("text", limit=3)`` -> the parsed answer of GET api/conversations?q=..."""

    async def get(query, **params):
        response = await jp_fetch(
            "streamchat", "api", "conversations", params={"q": query, **params}
        )
        return json.loads(response.body)

    return get


def ids(answer: dict) -> list:
    return [c["conversationId"] for c in answer["conversations"]]


async def test_search_finds_user_messages_replies_and_titles(
    chat, rest, find, jp_fetch, streamchat_app
):
    streamchat_app.agent_instances["demo"].delay = 0
    client = await chat()
    garden = await converse(client, "Planning the GARDEN layout for the spring")
    demo = await converse(client, "What can you do?", agent="demo")  # its reply has code
    kitchen = await converse(client, "unrelated words")
    await jp_fetch(
        "streamchat",
        "api",
        "conversations",
        kitchen,
        method="PATCH",
        body=json.dumps({"title": "Kitchen renovation"}),
    )

    found = await find("garden")
    assert ids(found) == [garden] and found["next"] is None
    listed = next(
        c for c in (await rest("conversations"))["conversations"] if c["conversationId"] == garden
    )
    entry = found["conversations"][0]
    assert entry.pop("snippet") == "Planning the GARDEN layout for the spring"
    assert entry == listed  # the list's entry, and a snippet

    in_reply = (await find("TOKENS_PER_sec"))["conversations"]  # only the reply holds it
    assert [c["conversationId"] for c in in_reply] == [demo]
    assert in_reply[0]["snippet"].startswith("…")
    assert "tokens_per_second" in in_reply[0]["snippet"]  # its code, as plain text
    assert "```" not in in_reply[0]["snippet"]

    in_title = (await find("RENOVATION"))["conversations"]
    assert [c["conversationId"] for c in in_title] == [kitchen]
    assert "snippet" not in in_title[0]  # the title itself is where it is

    assert await find("no such words anywhere") == {"conversations": [], "next": None}


async def test_search_takes_the_text_literally(chat, find):
    client = await chat()
    percent = await converse(client, "we are 100% sure")
    letter = await converse(client, "we are 100x sure")
    snake = await converse(client, "a snake_case name")
    camel = await converse(client, "a snakeXcase name")
    quoted = await converse(client, """she said "hi" and it's fine""")
    summer = await converse(client, "Un été chaud")

    assert ids(await find("100%")) == [percent]  # not a wildcard
    assert ids(await find("0%")) == [percent]  # two characters: read with LIKE, escaped too
    assert ids(await find("e_c")) == [snake]
    assert ids(await find("eXc")) == [camel]
    assert ids(await find('"hi"')) == [quoted]
    assert ids(await find("it's")) == [quoted]
    assert ids(await find('" and it')) == [quoted]
    assert ids(await find("HI")) == [quoted]  # two characters, any case
    assert ids(await find("  100x ")) == [letter]  # the spaces around are not searched for
    if search.trigram_available():
        assert ids(await find("ÉTÉ")) == [summer]  # case folding beyond ASCII


async def test_search_results_are_paged(chat, find):
    client = await chat()
    made = [await converse(client, f"haystack {i} with a needle in it") for i in range(7)]
    for i in range(3):
        await converse(client, f"haystack {i} alone")
    first = await find("NEEDLE", limit=3)
    seen, cursor = ids(first), first["next"]
    while cursor:
        page = await find("needle", limit=3, after=cursor)
        assert len(page["conversations"]) <= 3
        seen += ids(page)
        cursor = page["next"]
    assert seen == list(reversed(made))  # most recent first, each once


async def test_renamed_and_deleted_conversations(chat, find, jp_fetch):
    client = await chat()
    conversation = await converse(client, "some words")

    async def rename(title):
        await jp_fetch(
            "streamchat",
            "api",
            "conversations",
            conversation,
            method="PATCH",
            body=json.dumps({"title": title}),
        )

    await rename("Alpha plan")
    assert ids(await find("alpha")) == [conversation]
    await rename("Beta plan")
    assert ids(await find("alpha")) == [] and ids(await find("beta")) == [conversation]
    await rename("")  # listed under its first words again
    assert ids(await find("beta")) == [] and ids(await find("some")) == [conversation]

    await jp_fetch("streamchat", "api", "conversations", conversation, method="DELETE")
    assert ids(await find("some")) == [] and ids(await find("so")) == []


async def test_bad_queries_are_400(chat, find, rest):
    client = await chat()
    conversation = await converse(client, "x" * 300)
    assert ids(await find("x" * 200)) == [conversation]  # the longest query taken
    with pytest.raises(HTTPClientError) as failed:
        await find("x" * 201)
    assert failed.value.code == 400
    everything = await rest("conversations")
    assert await find("") == everything and await find("   ") == everything


# -- the index in the store ---------------------------------------------------------------


async def end_reply(store, exchange, chunks, status="complete"):
    """Store a reply's frames, the last one ending it, as the hub would."""
    *streamed, last = chunks
    if streamed:
        await store.append(Append(exchange.message_id, 1, streamed))
    await store.append(Append(exchange.message_id, len(streamed) + 1, [last], status))


def schema_4_file(path):
    """A database file as the release before search wrote it."""
    db = sqlite3.connect(path)
    for step in MIGRATIONS[:4]:
        db.executescript(step)
    db.execute("PRAGMA user_version=4")
    return db


async def test_files_of_schema_4_get_an_index_of_what_they_hold(tmp_path):
    """The migration indexes user messages, replies that ended (their chunks joined: a text
    across two frames is found), and titles; a reply left streaming by a dead process is
    indexed when it is ended as interrupted."""
    path = tmp_path / "v4.db"
    with schema_4_file(path) as db:
        db.executemany(
            "INSERT INTO conversations VALUES (?, ?, 1, 1)", [("c1", ""), ("c2", "Holiday Plans")]
        )
        db.executemany(
            "INSERT INTO messages (id, conversation_id, role, agent_id, reply_to, "
            "client_message_id, status, text, chars, last_seq, owner, created_at, updated_at) "
            "VALUES (?, ?, ?, 'echo', ?, ?, ?, ?, 0, ?, ?, 1, 1)",
            [
                ("u1", "c1", "user", None, "k1", "complete", "first question", 0, None),
                ("r1", "c1", "assistant", "u1", None, "complete", "", 2, None),
                ("u2", "c2", "user", None, "k2", "complete", "second question", 0, None),
                ("r2", "c2", "assistant", "u2", None, "streaming", "", 1, "a-dead-process"),
            ],
        )
        db.executemany(
            "INSERT INTO chunks (message_id, seq, chunk) VALUES (?, ?, ?)",
            [
                ("r1", 1, "an answer in two fra"),
                ("r1", 2, "mes"),
                ("r2", 1, "cut short by a crash"),
            ],
        )
    store = SQLiteStore(path=str(path))
    assert await store.open() == 1  # r2's producer is gone: it ends interrupted
    try:

        async def found(query):
            return [c.conversation_id for c in await store.search_conversations(query)]

        assert await found("two frames") == ["c1"]
        assert await found("QUESTION") == ["c2", "c1"]  # as listed: same time, then by id
        assert await found("holiday") == ["c2"]
        assert await found("by a crash") == ["c2"]
        hit = (await store.search_conversations("frames"))[0]
        assert hit.snippet == "an answer in two frames"
    finally:
        await store.close()


async def test_without_the_trigram_tokenizer_search_reads_every_text(tmp_path, monkeypatch):
    """A SQLite library without FTS5's trigram tokenizer gets an ordinary table, searched with
    LIKE, with the same answers (case folded for ASCII letters only)."""
    monkeypatch.setattr(search, "trigram_available", lambda: False)
    path = str(tmp_path / "plain.db")
    store = SQLiteStore(path=path)
    await store.open()
    try:
        first = await store.create_exchange("c1", "echo", "Rates rose 100% this year", "k1")
        await end_reply(store, first, ["Quite a ", "jump_start"])
        second = await store.create_exchange("c2", "echo", "Rates rose 100x", "k2")
        await end_reply(store, second, ["plain"], status="stopped")
        await store.rename_conversation("c2", "Growth notes")

        async def found(query):
            return sorted(c.conversation_id for c in await store.search_conversations(query))

        assert await found("100%") == ["c1"] and await found("0%") == ["c1"]
        assert await found("RATES") == ["c1", "c2"]
        assert await found("a jump_s") == ["c1"] and await found("p_s") == ["c1"]
        assert await found("growth") == ["c2"]
        await store.delete_conversation("c1")
        assert await found("rates") == ["c2"]
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'search'").fetchone()
    assert "fts5" not in sql.lower()


@pytest.mark.skipif(not search.trigram_available(), reason="needs SQLite 3.34+ with FTS5")
async def test_search_of_10000_conversations_reads_the_index(tmp_path):
    """10,000 conversations of a file from before search are indexed when it is opened; a
    query is then answered from the index (a MATCH, not a read of every message)."""
    path = str(tmp_path / "many.db")
    with schema_4_file(path) as db:
        db.executemany(
            "INSERT INTO conversations (id, title, created_at, updated_at) VALUES (?, '', ?, ?)",
            [(f"c{i:05d}", i, i) for i in range(10_000)],
        )
        db.executemany(
            "INSERT INTO messages (id, conversation_id, role, agent_id, client_message_id, "
            "status, text, chars, created_at, updated_at) VALUES (?, ?, 'user', 'echo', ?, "
            "'complete', ?, 20, 1, 1)",
            [
                (
                    f"m{i:05d}",
                    f"c{i:05d}",
                    f"k{i}",
                    f"note {i}: " + ("a rare word" if i % 1000 == 0 else "common text"),
                )
                for i in range(10_000)
            ],
        )
    store = SQLiteStore(path=path)
    started = time.perf_counter()
    await store.open()
    print(f"indexing 10,000 conversations: {(time.perf_counter() - started) * 1000:.0f} ms")
    try:
        started = time.perf_counter()
        rare = await store.search_conversations("RARE WORD", 50)
        common = await store.search_conversations("common", 50)
        print(f"two searches: {(time.perf_counter() - started) * 1000:.1f} ms")
        assert [c.conversation_id for c in rare] == [f"c{i:05d}" for i in range(9000, -1, -1000)]
        assert rare[0].snippet == "note 9000: a rare word"
        assert len(common) == 50 and common[0].conversation_id == "c09999"
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        plan = " ".join(
            row[-1]
            for row in db.execute(
                "EXPLAIN QUERY PLAN SELECT conversation_id FROM search WHERE search MATCH ?",
                ('"rare word"',),
            )
        )
    assert "VIRTUAL TABLE INDEX 0:M" in plan, plan


# -- snippets as plain text ---------------------------------------------------------------


async def test_snippets_are_plain_text_not_markdown(tmp_path):
    """A snippet shows what the reader of the message sees: no code fences, backticks,
    emphasis marks, heading #s, link or image syntax, table pipes; the code inside stays."""
    store = SQLiteStore(path=str(tmp_path / "md.db"))
    await store.open()
    try:
        exchange = await store.create_exchange("c1", "echo", "how do I load a CSV?", "k1")
        await end_reply(
            store,
            exchange,
            [
                "## Loading *data*\n\nUse **pandas** (see [the docs](https://pandas.pydata.org) "
                "and ![a chart](chart.png)):\n\n```python\nimport pandas as pd\n",
                "df = pd.read_csv(`data.csv`)\n```\n\n| Step | Call |\n|---|:---:|\n"
                "| read | `pd.read_csv` |\n| tokens_per_second | _fast_ |\n",
            ],
        )

        async def snippet_of(query):
            (hit,) = await store.search_conversations(query)
            return hit.snippet

        shown = await snippet_of("import pa")
        assert "import pandas as pd df = pd.read_csv(`data.csv`)" in shown, shown
        assert "the docs and a chart): import pandas" in shown, shown
        for syntax in ("```", "##", "**", "*data*", "](", "![", "|", "---"):
            assert syntax not in shown, (syntax, shown)
        table = await snippet_of("tokens_per")
        assert "Step Call read pd.read_csv tokens_per_second fast" in table, table
        assert "`" not in table.replace("`data.csv`", "")  # a code span inside code stays
    finally:
        await store.close()


def test_plain_text_keeps_what_only_looks_like_markdown():
    """Underscores inside words, lone stars and escaped marks are text, not emphasis."""
    assert (
        search.plain_text("a snake_case_name, 2 * 3 * 4 and a\\*b")
        == "a snake_case_name, 2 * 3 * 4 and a*b"
    )
    assert (
        search.plain_text("> quoted ~~struck~~ text\n- item\n1. first\n***")
        == "quoted struck text\nitem\n1. first\n"
    )
    assert (
        search.plain_text("<https://jupyter.org> and [ref link][1]")
        == "https://jupyter.org and ref link"
    )
    assert (
        search.snippet("## Title\n\n```python\nimport pandas\n```", "IMPORT")
        == "Title import pandas"
    )
