"""What every message store promises the hub (``store/base.py``), checked the same way against
each store: SQLite (a file) and Postgres (a fresh database of the session's own cluster).

Each test drives a store as the hub does: an exchange, then the reply's frames, the last one
ending it. Two store objects over one database stand for two server processes.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from helpers import new_id
from jupyter_streamchat.store import (
    EVERY_USER,
    Append,
    LeaseLost,
    SQLiteStore,
)

ALICE, BOB = "alice", "bob"


class Backend:
    """Store objects of one kind over one database; every one opened is closed at the end."""

    def __init__(self, kind: str, url: str):
        self.kind, self.url = kind, url
        self.opened: list = []

    def make(self, **traits):
        if self.kind == "sqlite":
            return SQLiteStore.from_url(self.url, **traits)
        from jupyter_streamchat.store.postgres import PostgresStore

        return PostgresStore.from_url(self.url, **traits)

    async def open(self, **traits):
        store = self.make(**traits)
        await store.open()
        self.opened.append(store)
        return store

    async def close(self, store) -> None:
        self.opened.remove(store)
        await store.close()

    async def close_all(self) -> None:
        while self.opened:
            await self.opened.pop().close()

    def expire_lease(self, store) -> None:
        """Make ``store``'s lease run out now, as when its process hung past it."""
        if self.kind == "sqlite":
            with sqlite3.connect(store.path) as db:
                db.execute("UPDATE owners SET lease_until = 0 WHERE id = ?", (store._owner.id,))
            return
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as db:
            db.execute(
                "UPDATE owners SET lease_until = to_timestamp(0) WHERE id = %s",
                (store._owner_id,),
            )


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path, jp_asyncio_loop):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/contract.db"
    else:
        url = request.getfixturevalue("pg_url")
    backend = Backend(request.param, url)
    yield backend
    jp_asyncio_loop.run_until_complete(backend.close_all())


@pytest.fixture
def store(backend, jp_asyncio_loop):
    """An open store of each kind (the tests run on the same event loop)."""
    return jp_asyncio_loop.run_until_complete(backend.open())


async def exchange(
    store,
    text,
    chunks=None,
    conversation=None,
    status="complete",
    *,
    agent="echo",
    client_id=None,
    error=None,
    user=None,
):
    """A user message and its reply; the reply's frames stored (the last ending it with
    ``status``) if ``chunks`` are given, else left streaming with no frame. ``user`` is passed
    on only when given (calls without it act for the store's default user)."""
    mine = {} if user is None else {"user": user}
    ex = await store.create_exchange(
        conversation or new_id("c-"), agent, text, client_id or new_id("m-"), **mine
    )
    if chunks is not None:
        await finish(store, ex, chunks, status, error=error)
    return ex


async def finish(store, ex, chunks, status="complete", first_seq=1, **append):
    *streamed, last = chunks
    if streamed:
        await store.append(Append(ex.message_id, first_seq, streamed))
    await store.append(Append(ex.message_id, first_seq + len(streamed), [last], status, **append))


async def listed(store, **kwargs) -> list:
    return [c.conversation_id for c in await store.list_conversations(**kwargs)]


async def found(store, query, **kwargs) -> list:
    return [c.conversation_id for c in await store.search_conversations(query, **kwargs)]


# -- exchanges and replies ------------------------------------------------------------------


async def test_an_exchange_is_made_once_per_client_message_id(store):
    first = await store.create_exchange("c1", "echo", "hello", "k1")
    assert first.created and (first.conversation_id, first.client_message_id) == ("c1", "k1")
    assert (first.agent_id, first.text) == ("echo", "hello")
    assert first.user_message_id != first.message_id

    again = await store.create_exchange("c1", "other", "changed text", "k1")
    assert not again.created
    assert (again.user_message_id, again.message_id) == (first.user_message_id, first.message_id)
    assert (again.agent_id, again.text) == ("echo", "hello")  # the first one's, as stored
    assert len(await store.get_conversation("c1")) == 2

    elsewhere = await store.create_exchange("c2", "echo", "hello", "k1")  # per conversation
    assert elsewhere.created and elsewhere.message_id != first.message_id
    ids = {first.user_message_id, first.message_id}
    assert ids.isdisjoint({elsewhere.user_message_id, elsewhere.message_id})


async def test_a_new_reply_streams_with_no_frame(store):
    ex = await exchange(store, "hi")
    reply = await store.get_message(ex.message_id)
    assert (reply.role, reply.status, reply.last_seq, reply.text) == (
        "assistant",
        "streaming",
        0,
        "",
    )
    assert (reply.conversation_id, reply.agent_id) == (ex.conversation_id, "echo")
    asked = await store.get_message(ex.user_message_id)
    assert (asked.role, asked.text, asked.status) == ("user", "hi", "complete")
    assert await store.replay(ex.message_id, 0) == (reply, [])


async def test_frames_are_replayed_by_seq(store):
    ex = await exchange(store, "think first")
    await store.append(Append(ex.message_id, 1, ["Hel", "lo"], reasoning=["hm", ""]))
    await store.append(Append(ex.message_id, 3, [" world"], reasoning=["!"]))
    reply = await store.get_message(ex.message_id)
    assert (reply.text, reply.reasoning, reply.last_seq, reply.status) == (
        "Hello world",
        "hm!",
        3,
        "streaming",
    )
    usage = {"model": "m", "input_tokens": 3, "output_tokens": 5}
    await store.append(Append(ex.message_id, 4, [""], "complete", usage=usage))

    message, chunks = await store.replay(ex.message_id, 0)
    assert chunks == [
        (1, "Hel", "hm", None),
        (2, "lo", "", None),
        (3, " world", "!", None),
        (4, "", "", None),
    ]
    assert (message.status, message.last_seq, message.text, message.usage) == (
        "complete",
        4,
        "",  # replay leaves the text to the chunks
        usage,
    )
    assert (await store.replay(ex.message_id, 2))[1] == [
        (3, " world", "!", None),
        (4, "", "", None),
    ]
    assert (await store.replay(ex.message_id, 4))[1] == []
    reply = await store.get_message(ex.message_id)
    assert (reply.text, reply.reasoning, reply.usage) == ("Hello world", "hm!", usage)


async def test_a_reply_that_fails_keeps_its_text_and_error(store):
    ex = await exchange(store, "q", ["partial", ""], status="error", error="the model went away")
    reply = await store.get_message(ex.message_id)
    assert (reply.status, reply.error, reply.text, reply.last_seq) == (
        "error",
        "the model went away",
        "partial",
        2,
    )
    for status in ("stopped", "interrupted"):
        other = await exchange(store, "q", ["cut"], status=status)
        assert (await store.get_message(other.message_id)).status == status


async def test_unknown_ids_are_missing(store):
    await exchange(store, "something", ["there"], conversation="c")
    assert await store.get_message("no-such-message") is None
    assert await store.replay("no-such-message", 0) == (None, [])
    assert await store.get_conversation("nope") is None
    assert await store.get_conversation_record("nope") is None
    assert await store.history("nope", None, 10, 10_000) is None
    assert await store.history("c", "no-such-message", 10, 10_000) is None
    assert await store.rename_conversation("nope", "title") is False
    assert await store.delete_conversation("nope") is False


async def test_unicode_and_nul_characters_are_kept(store):
    text = "Un été \x00 chaud 🌞"
    ex = await exchange(store, text, ["Ça\x00", " va 🌞"], conversation="ü")
    messages = await store.get_conversation("ü")
    assert [m.text for m in messages] == [text, "Ça\x00 va 🌞"]
    assert (await store.get_message(ex.message_id)).text == "Ça\x00 va 🌞"


# -- conversations and history pages --------------------------------------------------------


async def test_a_conversation_holds_its_messages_in_order(store):
    first = await exchange(store, "one", ["1"], conversation="c", agent="echo")
    second = await exchange(store, "two", ["2", "2"], conversation="c", agent="demo")
    messages = await store.get_conversation("c")
    assert [(m.message_id, m.role, m.agent_id, m.text) for m in messages] == [
        (first.user_message_id, "user", "echo", "one"),
        (first.message_id, "assistant", "echo", "1"),
        (second.user_message_id, "user", "demo", "two"),
        (second.message_id, "assistant", "demo", "22"),
    ]
    assert {m.conversation_id for m in messages} == {"c"}
    assert messages[0].created_at <= messages[2].created_at


async def test_history_pages_go_back_by_message_count(store):
    made = [
        await exchange(store, f"question {i}", [f"answer {i}"], conversation="c") for i in range(3)
    ]
    texts = [t for i in range(3) for t in (f"question {i}", f"answer {i}")]

    page = await store.history("c", None, 4, 100_000)
    assert [m.text for m in page.messages] == texts[2:] and page.has_more
    assert page.conversation_id == "c"
    older = await store.history("c", page.messages[0].message_id, 4, 100_000)
    assert [m.text for m in older.messages] == texts[:2] and not older.has_more
    everything = await store.history("c", None, 100, 100_000)
    assert [m.text for m in everything.messages] == texts and not everything.has_more
    assert everything.messages[-1].message_id == made[-1].message_id
    assert not any(m.truncated for m in everything.messages)


async def test_history_pages_keep_to_a_character_budget(store):
    for i in range(3):
        await exchange(store, f"question {i}", [f"answer {i}".ljust(10)], conversation="c")
    page = await store.history("c", None, 100, 35)  # three messages of 10 characters fit
    assert [m.text for m in page.messages] == ["answer 1  ", "question 2", "answer 2  "]
    assert page.has_more and not any(m.truncated for m in page.messages)


async def test_a_reply_over_the_budget_comes_cut_to_its_whole_frames(store):
    ex = await exchange(store, "q", ["a" * 10, "b" * 10, "c" * 10, ""], conversation="c")
    page = await store.history("c", None, 10, 25)
    (reply,) = page.messages  # at least one message, even over the budget
    assert reply.message_id == ex.message_id and page.has_more
    assert (reply.text, reply.last_seq, reply.truncated) == ("a" * 10 + "b" * 10, 2, True)
    whole = (await store.history("c", None, 10, 100)).messages[-1]
    assert (whole.text, whole.last_seq, whole.truncated) == (
        "a" * 10 + "b" * 10 + "c" * 10,
        4,
        False,
    )


async def test_history_of_a_streaming_reply_ends_at_its_last_frame(store):
    ex = await exchange(store, "q", conversation="c")
    await store.append(Append(ex.message_id, 1, ["so ", "far"]))
    (asked, reply) = (await store.history("c", None, 10, 10_000)).messages
    assert (reply.status, reply.text, reply.last_seq) == ("streaming", "so far", 2)


# -- the list of conversations --------------------------------------------------------------


async def test_conversations_are_listed_most_recent_first_and_paged(store):
    made = [(await exchange(store, f"chat {i}", [f"r{i}"])).conversation_id for i in range(7)]
    everything = await store.list_conversations()
    assert [c.conversation_id for c in everything] == made[::-1]
    assert [c.updated_at for c in everything] == sorted(
        (c.updated_at for c in everything), reverse=True
    )

    seen, after = [], None
    for _ in range(10):  # bounded: 3 pages expected
        page = await store.list_conversations(3, after)
        assert len(page) <= 3
        if not page:
            break
        seen += [c.conversation_id for c in page]
        after = (page[-1].updated_at, page[-1].conversation_id)
    assert seen == made[::-1]
    assert await listed(store, limit=2) == made[::-1][:2]


async def test_a_conversation_record_is_its_list_entry(store):
    ex = await exchange(store, "Planning the garden", ["Sure"], conversation="garden")
    await exchange(store, "and the pond?", None, conversation="garden", agent="demo")
    record = await store.get_conversation_record("garden")
    assert record == next(
        c for c in await store.list_conversations() if c.conversation_id == "garden"
    )
    assert (record.title, record.message_count, record.agent_id, record.streaming) == (
        "Planning the garden",
        4,
        "demo",
        True,  # the second reply still streams
    )
    assert record.created_at <= record.updated_at
    first = await store.get_message(ex.user_message_id)
    assert record.created_at == pytest.approx(first.created_at, abs=1)


async def test_an_untitled_conversation_is_listed_under_its_first_words(store):
    long_text = "word " * 300
    await exchange(store, long_text, ["ok"], conversation="long")
    await exchange(store, "a later message", ["ok"], conversation="long")
    title = (await store.get_conversation_record("long")).title
    assert title and long_text.startswith(title) and len(title) < len(long_text)


async def test_updated_at_moves_when_a_reply_ends(store):
    first = await exchange(store, "first", conversation="first")
    await exchange(store, "second", ["done"], conversation="second")
    assert await listed(store) == ["second", "first"]
    before = (await store.get_conversation_record("first")).updated_at

    await store.append(Append(first.message_id, 1, ["still going"]))
    assert (await store.get_conversation_record("first")).streaming
    await store.append(Append(first.message_id, 2, [""], "complete"))
    record = await store.get_conversation_record("first")
    assert record.updated_at > before and not record.streaming
    assert await listed(store) == ["first", "second"]


async def test_renaming_keeps_the_place_in_the_list(store):
    await exchange(store, "Old words here", ["r"], conversation="a")
    await exchange(store, "newer", ["r"], conversation="b")
    before = await store.get_conversation_record("a")
    assert await store.rename_conversation("a", "Holiday plans") is True
    after = await store.get_conversation_record("a")
    assert after.title == "Holiday plans" and after.updated_at == before.updated_at
    assert await listed(store) == ["b", "a"]
    assert await store.rename_conversation("a", "") is True  # its first words again
    assert (await store.get_conversation_record("a")).title == "Old words here"


async def test_a_deleted_conversation_is_gone_everywhere(store):
    ex = await exchange(store, "forget me", ["gone soon"], conversation="doomed")
    await exchange(store, "keep me", ["kept"], conversation="kept")
    assert await store.delete_conversation("doomed") is True
    assert await store.get_conversation("doomed") is None
    assert await store.get_conversation_record("doomed") is None
    assert await store.history("doomed", None, 10, 10_000) is None
    assert await store.get_message(ex.message_id) is None
    assert await store.get_message(ex.user_message_id) is None
    assert await store.replay(ex.message_id, 0) == (None, [])
    assert await listed(store) == ["kept"]
    assert await found(store, "forget") == [] and await found(store, "gone soon") == []
    assert await store.delete_conversation("doomed") is False
    again = await store.create_exchange("doomed", "echo", "forget me", ex.client_message_id)
    assert again.created  # a new conversation under the old id


# -- search ---------------------------------------------------------------------------------


async def test_search_finds_text_in_messages_ignoring_case(store):
    garden = (
        await exchange(store, "Planning the GARDEN layout", ["Roses and tulips"])
    ).conversation_id
    await exchange(store, "unrelated words", ["nothing here"])
    assert await found(store, "garden") == [garden]
    assert await found(store, "gARDen LAY") == [garden]
    assert await found(store, "rden lay") == [garden]  # inside words
    assert await found(store, "TULIPS") == [garden]  # in the reply
    assert await found(store, "no such words anywhere") == []
    (hit,) = await store.search_conversations("garden")
    assert hit.snippet == "Planning the GARDEN layout"
    assert hit.title == (await store.get_conversation_record(garden)).title


async def test_search_takes_the_text_literally(store):
    percent = (await exchange(store, "we are 100% sure", ["ok"])).conversation_id
    await exchange(store, "we are 100x sure", ["ok"])
    snake = (await exchange(store, "a snake_case name", ["ok"])).conversation_id
    await exchange(store, "a snakeXcase name", ["ok"])
    quoted = (await exchange(store, """she said "hi" and it's fine""", ["ok"])).conversation_id
    assert await found(store, "100%") == [percent]
    assert await found(store, "0% s") == [percent]
    assert await found(store, "e_c") == [snake]
    assert await found(store, "snake_case") == [snake]
    assert await found(store, '"hi" and') == [quoted]
    assert await found(store, "it's") == [quoted]
    assert await found(store, "%") == [percent]
    assert await found(store, "*") == []


async def test_search_finds_titles_without_a_snippet(store):
    kitchen = (await exchange(store, "unrelated words", ["ok"])).conversation_id
    await store.rename_conversation(kitchen, "Kitchen renovation")
    (hit,) = await store.search_conversations("RENOVATION")
    assert hit.conversation_id == kitchen and hit.snippet is None
    await store.rename_conversation(kitchen, "Bathroom")
    assert await found(store, "renovation") == [] and await found(store, "bathroom") == [kitchen]
    await store.rename_conversation(kitchen, "")
    assert await found(store, "bathroom") == [] and await found(store, "unrelated") == [kitchen]


async def test_a_reply_is_found_once_it_ends(store):
    ex = await exchange(store, "tell me", conversation="c")
    await store.append(Append(ex.message_id, 1, ["a secret ", "word"], reasoning=["pondering", ""]))
    assert await found(store, "secret") == []  # still streaming
    assert await found(store, "tell me") == ["c"]  # the user's message is there already
    await store.append(Append(ex.message_id, 3, [" indeed"], "stopped"))
    assert await found(store, "secret word indeed") == ["c"]
    assert await found(store, "pondering") == []  # thinking is not searched


async def test_search_snippets_are_one_line_around_the_match(store):
    text = "Intro line.\n" + "filler words " * 30 + "the NEEDLE is here\n" + "more words " * 30
    ex = await exchange(store, "short question", [text[:200], text[200:]])
    (hit,) = await store.search_conversations("needle")
    assert hit.conversation_id == ex.conversation_id
    snippet = hit.snippet
    assert "the NEEDLE is here" in snippet and "\n" not in snippet
    assert snippet.startswith("…") and snippet.endswith("…") and len(snippet) < len(text) / 2
    both = await exchange(store, "first needle in the question", ["a needle in the reply"])
    (hit,) = await store.search_conversations("NEEDLE in the")
    assert hit.conversation_id == both.conversation_id
    assert hit.snippet == "first needle in the question"  # the first message holding it


async def test_search_results_are_paged_as_the_list(store):
    made = [
        (await exchange(store, f"haystack {i} with a needle", ["r"])).conversation_id
        for i in range(7)
    ]
    for i in range(3):
        await exchange(store, f"haystack {i} alone", ["r"])
    seen, after = [], None
    for _ in range(10):  # bounded: 3 pages expected
        page = await store.search_conversations("NEEDLE", 3, after)
        assert len(page) <= 3
        if not page:
            break
        seen += [c.conversation_id for c in page]
        after = (page[-1].updated_at, page[-1].conversation_id)
    assert seen == made[::-1]


# -- several processes ----------------------------------------------------------------------


async def test_only_the_owner_of_a_reply_writes_it(backend, store):
    other = await backend.open()
    ex = await exchange(store, "mine")
    with pytest.raises(LeaseLost):
        await other.append(Append(ex.message_id, 1, ["not yours"]))
    with pytest.raises(LeaseLost):
        await other.append(Append(ex.message_id, 1, ["not yours"], "complete"))
    await store.append(Append(ex.message_id, 1, ["fine"], "complete"))
    message = await other.get_message(ex.message_id)  # everyone reads it
    assert (message.text, message.status, message.last_seq) == ("fine", "complete", 1)
    with pytest.raises(LeaseLost):  # nobody writes an ended reply
        await store.append(Append(ex.message_id, 2, ["more"]))


async def test_a_reply_whose_owner_lost_its_lease_is_ended_by_another(backend, store):
    ex = await exchange(store, "hi", conversation="c")
    await store.append(Append(ex.message_id, 1, ["partial"]))
    second = await backend.open()
    assert await second.recover() == 0  # its owner lives: left alone
    await store.append(Append(ex.message_id, 2, [" more"]))
    assert (await second.get_message(ex.message_id)).status == "streaming"

    backend.expire_lease(store)
    assert await second.recover() == 1
    message = await second.get_message(ex.message_id)
    assert (message.status, message.text, message.last_seq) == ("interrupted", "partial more", 3)
    assert (await second.replay(ex.message_id, 2))[1] == [(3, "", "", None)]  # one final frame
    with pytest.raises(LeaseLost):
        await store.append(Append(ex.message_id, 3, [" too late"]))
    assert await found(second, "partial more") == ["c"]  # ended: searchable
    assert not (await second.get_conversation_record("c")).streaming


async def test_replies_left_by_a_closed_store_are_ended_when_one_opens(backend, store):
    ex = await exchange(store, "hi", conversation="c")
    await store.append(Append(ex.message_id, 1, ["cut ", "short"]))
    await backend.close(store)  # gives its lease up with the reply still streaming
    again = await backend.open()
    message = await again.get_message(ex.message_id)
    assert (message.status, message.text, message.last_seq) == ("interrupted", "cut short", 3)
    same = await again.create_exchange("c", "echo", "hi", ex.client_message_id)
    assert not same.created and same.message_id == ex.message_id


# -- users ----------------------------------------------------------------------------------


async def test_calls_without_a_user_act_for_the_default_user(store):
    ex = await exchange(store, "mine by default", ["ok"], conversation="c")
    assert ex.user == store.default_user
    assert len(await store.get_conversation("c", user=store.default_user)) == 2
    assert await store.get_conversation("c", user=f"not-{store.default_user}") is None


async def test_two_users_with_the_same_conversation_id_see_only_their_own(store):
    a = await exchange(
        store, "alice's garden", ["roses"], conversation="c1", user=ALICE, client_id="k"
    )
    b = await exchange(store, "bob's boat", ["sails"], conversation="c1", user=BOB, client_id="k")
    assert a.created and b.created and (a.user, b.user) == (ALICE, BOB)
    assert {a.message_id, a.user_message_id}.isdisjoint({b.message_id, b.user_message_id})

    assert [m.text for m in await store.get_conversation("c1", user=ALICE)] == [
        "alice's garden",
        "roses",
    ]
    assert [m.text for m in await store.get_conversation("c1", user=BOB)] == ["bob's boat", "sails"]
    page = await store.history("c1", None, 10, 10_000, user=BOB)
    assert [m.text for m in page.messages] == ["bob's boat", "sails"]
    assert (await store.get_conversation_record("c1", user=ALICE)).title == "alice's garden"
    assert await listed(store, user=ALICE) == ["c1"] and await listed(store, user=BOB) == ["c1"]
    assert await listed(store) == []  # the default user has none
    assert await found(store, "garden", user=ALICE) == ["c1"]
    assert await found(store, "garden", user=BOB) == []
    assert await found(store, "roses", user=BOB) == []

    await store.rename_conversation("c1", "Boats", user=BOB)
    assert (await store.get_conversation_record("c1", user=ALICE)).title == "alice's garden"
    assert await store.delete_conversation("c1", user=BOB) is True
    assert len(await store.get_conversation("c1", user=ALICE)) == 2
    assert await store.get_conversation("c1", user=BOB) is None


async def test_another_users_conversation_answers_as_a_missing_one(store):
    ex = await exchange(
        store, "private words", ["secret reply"], conversation="private", user=ALICE
    )
    streaming = await exchange(store, "still going", conversation="private", user=ALICE)
    await exchange(store, "bob's own", ["mine"], conversation="bobs", user=BOB)
    before = await store.get_conversation_record("private", user=ALICE)

    for mid in (ex.user_message_id, ex.message_id, streaming.message_id):
        assert await store.get_message(mid, user=BOB) is None
        assert await store.replay(mid, 0, user=BOB) == (None, [])
        assert await store.history("bobs", mid, 10, 10_000, user=BOB) is None
    assert await store.get_conversation("private", user=BOB) is None
    assert await store.get_conversation_record("private", user=BOB) is None
    assert await store.history("private", None, 10, 10_000, user=BOB) is None
    assert await store.rename_conversation("private", "mine now", user=BOB) is False
    assert await store.delete_conversation("private", user=BOB) is False
    assert await listed(store, user=BOB) == ["bobs"]
    assert await found(store, "private", user=BOB) == []
    assert await found(store, "secret", user=BOB) == []

    # Alice's conversation is untouched, and she and the server itself still read it.
    assert await store.get_conversation_record("private", user=ALICE) == before
    assert (await store.get_message(ex.message_id, user=ALICE)).text == "secret reply"
    assert (await store.get_message(ex.message_id, user=EVERY_USER)).text == "secret reply"
    message, chunks = await store.replay(ex.message_id, 0, user=EVERY_USER)
    assert message.message_id == ex.message_id and chunks == [(1, "secret reply", "", None)]
    assert await store.get_message(ex.message_id) is None  # nor the default user


async def test_a_client_message_id_is_per_user(store):
    a = await store.create_exchange("c", "echo", "alice asks", "k1", user=ALICE)
    b = await store.create_exchange("c", "echo", "bob asks", "k1", user=BOB)
    assert b.created and b.message_id != a.message_id and b.text == "bob asks"
    again = await store.create_exchange("c", "echo", "alice asks", "k1", user=ALICE)
    assert not again.created and again.message_id == a.message_id


async def test_replies_of_users_end_and_list_each_for_its_user(store):
    a = await exchange(store, "alice's question", conversation="a1", user=ALICE)
    await exchange(store, "alice's other", ["ok"], conversation="a2", user=ALICE)
    before = (await store.get_conversation_record("a1", user=ALICE)).updated_at
    start = time.time()
    await finish(store, a, ["answered"])
    record = await store.get_conversation_record("a1", user=ALICE)
    assert record.updated_at > before and record.updated_at >= start - 1
    assert await listed(store, user=ALICE) == ["a1", "a2"]
    assert await found(store, "answered", user=ALICE) == ["a1"]


# -- tool calls and context -----------------------------------------------------------------


def call(call_id, status, **fields):
    """A tool-call state as the wire carries it."""
    return {"id": call_id, "name": "read_file", "status": status, "arguments": "{}", **fields}


async def test_tool_calls_come_back_with_their_frames(store):
    ex = await exchange(store, "read it", conversation="c")
    first = [call("t1", "pending", title="Read notes.txt")]
    running = [call("t1", "running", startedAt=1.5)]
    done = [call("t1", "completed", result="the notes\x00 é 🌞"), call("t2", "pending")]
    await store.append(
        Append(ex.message_id, 1, ["Let me ", "look."], tool_calls=[None, first], tool_state=first)
    )
    await store.append(Append(ex.message_id, 3, [""], tool_calls=[running], tool_state=running))
    await store.append(Append(ex.message_id, 4, [" More", " text"]))  # none in these frames
    merged = [done[0], done[1]]
    await store.append(
        Append(ex.message_id, 6, [" Done."], "complete", tool_calls=[done], tool_state=merged)
    )

    message, chunks = await store.replay(ex.message_id, 0)
    assert chunks == [
        (1, "Let me ", "", None),
        (2, "look.", "", first),
        (3, "", "", running),
        (4, " More", "", None),
        (5, " text", "", None),
        (6, " Done.", "", done),
    ]
    assert message.tool_calls == merged and message.context is None
    assert (await store.replay(ex.message_id, 2))[1] == chunks[2:]
    assert (await store.replay(ex.message_id, 5))[1] == chunks[5:]
    assert (await store.replay(ex.message_id, 6))[1] == []
    with pytest.raises(ValueError):  # one item per frame, or frames would go unstored
        Append(ex.message_id, 7, ["a", "b"], tool_calls=[first])


async def test_the_merged_tool_calls_are_read_with_the_reply(store):
    ex = await exchange(store, "use tools", conversation="c")
    started = [call("t1", "running"), call("t2", "waiting")]
    await store.append(Append(ex.message_id, 1, ["a"], tool_calls=[started], tool_state=started))
    streaming = await store.get_message(ex.message_id)
    assert (streaming.status, streaming.tool_calls) == ("streaming", started)
    ended = [call("t1", "completed", result="ok"), call("t2", "failed", error="rejected")]
    await store.append(
        Append(ex.message_id, 2, ["b"], "complete", tool_calls=[ended], tool_state=ended)
    )
    plain = await exchange(store, "no tools", ["just text"], conversation="c")

    reply = await store.get_message(ex.message_id)
    assert (reply.text, reply.tool_calls) == ("ab", ended)
    assert (await store.get_message(plain.message_id)).tool_calls is None
    assert (await store.get_message(ex.user_message_id)).tool_calls is None
    in_order = [(m.message_id, m.tool_calls) for m in await store.get_conversation("c")]
    assert in_order == [
        (ex.user_message_id, None),
        (ex.message_id, ended),
        (plain.user_message_id, None),
        (plain.message_id, None),
    ]
    page = await store.history("c", None, 10, 10_000)
    assert [(m.message_id, m.tool_calls) for m in page.messages] == in_order
    older = await store.history("c", plain.user_message_id, 10, 10_000)
    assert [m.tool_calls for m in older.messages] == [None, ended]


async def test_a_reply_cut_to_the_budget_has_its_tool_calls_as_of_its_last_frame(store):
    ex = await exchange(store, "q", conversation="c")
    one, two = [call("t1", "running")], [call("t1", "completed"), call("t2", "running")]
    await store.append(
        Append(ex.message_id, 1, ["a" * 10, "b" * 10], tool_calls=[one, None], tool_state=one)
    )
    await store.append(
        Append(ex.message_id, 3, ["c" * 10, ""], "complete", tool_calls=[two, None], tool_state=two)
    )
    (cut,) = (await store.history("c", None, 10, 25)).messages
    assert (cut.text, cut.last_seq, cut.truncated) == ("a" * 10 + "b" * 10, 2, True)
    assert cut.tool_calls == one  # not yet the second call, nor the first one completed
    whole = (await store.history("c", None, 10, 1000)).messages[-1]
    assert (whole.truncated, whole.tool_calls) == (False, two)


async def test_tool_calls_written_together_with_other_replies_frames(store):
    """Frames of many replies written at once (one batch), some with tool calls and merged
    states and some without: each reply gets its own."""
    replies = [(await exchange(store, f"q{i}", conversation=f"c{i}")).message_id for i in range(6)]
    states = {mid: [call(f"t-{mid}", "running", result=f"r{i}")] for i, mid in enumerate(replies)}
    with_calls = replies[::2]
    assert await asyncio.gather(
        *(
            store.append(
                Append(mid, 1, ["x", "y"], tool_calls=[None, states[mid]], tool_state=states[mid])
                if mid in with_calls
                else Append(mid, 1, ["x", "y"])
            )
            for mid in replies
        )
    ) == [None] * len(replies)
    # Then a round where only some set merged states, and none has frame states.
    await asyncio.gather(
        *(
            store.append(Append(mid, 3, ["z"], tool_state=[] if mid == replies[1] else None))
            for mid in replies
        )
    )
    for mid in replies:
        message, chunks = await store.replay(mid, 0)
        frame = states[mid] if mid in with_calls else None
        assert chunks == [(1, "x", "", None), (2, "y", "", frame), (3, "z", "", None)]
        expected = states[mid] if mid in with_calls else ([] if mid == replies[1] else None)
        assert message.tool_calls == expected
        assert (await store.get_message(mid)).tool_calls == expected


async def test_a_reply_ended_by_recovery_fails_its_unfinished_tool_calls(backend, store):
    ex = await exchange(store, "q", conversation="c")
    states = [call("t1", "completed", result="fine"), call("t2", "waiting"), call("t3", "running")]
    await store.append(Append(ex.message_id, 1, ["part"], tool_calls=[states], tool_state=states))
    second = await backend.open()
    backend.expire_lease(store)
    assert await second.recover() == 1
    message, chunks = await second.replay(ex.message_id, 1)
    (seq, chunk, thinking, failed) = chunks[0]
    assert (seq, chunk, message.status) == (2, "", "interrupted")
    assert [(s["id"], s["status"], s["error"]) for s in failed] == [
        ("t2", "failed", "not run: the reply ended first"),
        ("t3", "failed", "not run: the reply ended first"),
    ]
    assert all(s["endedAt"] >= s.get("startedAt", 0) for s in failed)
    assert message.tool_calls == [states[0], *failed]
    assert (await second.get_message(ex.message_id)).tool_calls == [states[0], *failed]


async def test_a_user_message_keeps_the_context_it_was_sent_with(store):
    context = [
        {
            "kind": "cell",
            "label": "Cell 3",
            "text": "x = 1\nprint(x)",
            "path": "a.ipynb",
            "cell": 2,
        },
        {"kind": "error", "label": "NameError", "text": "NUL \x00 and é 🌞", "language": "python"},
    ]
    ex = await store.create_exchange("c", "echo", "why?", "k1", context=context)
    await finish(store, ex, ["because"])
    asked = await store.get_message(ex.user_message_id)
    assert (asked.text, asked.context, asked.tool_calls) == ("why?", context, None)
    assert (await store.get_message(ex.message_id)).context is None
    assert [m.context for m in await store.get_conversation("c")] == [context, None]
    assert [m.context for m in (await store.history("c", None, 10, 10_000)).messages] == [
        context,
        None,
    ]
    assert (await store.replay(ex.user_message_id, 0))[0].context == context

    again = await store.create_exchange("c", "echo", "why?", "k1", context=[{"kind": "file"}])
    assert not again.created and again.user_message_id == ex.user_message_id
    assert (await store.get_message(ex.user_message_id)).context == context  # the first one's


async def test_a_message_sent_without_context_has_none(store):
    ex = await store.create_exchange("c", "echo", "plain", "k1")
    empty = await store.create_exchange("c", "echo", "none given", "k2", context=None)
    await finish(store, ex, ["ok"])
    for message in await store.get_conversation("c"):
        assert message.context is None and message.tool_calls is None
    assert (await store.get_message(empty.user_message_id)).context is None


def _old_store(backend) -> str:
    """A store as the release before tool calls left it (SQLite schema 7, Postgres schema 1),
    holding one conversation of that release's making: a user message and a two-frame reply.
    Returns the reply's id."""
    messages = [
        ("u-old", "user", None, "k-old", "complete", "old question", 12, 0, 0),
        ("r-old", "assistant", "u-old", None, "complete", "", 10, 2, 2),
    ]
    chunks = [("r-old", 1, "old ", "hm"), ("r-old", 2, "answer", "")]
    if backend.kind == "sqlite":
        from jupyter_streamchat.store.schema import MIGRATIONS, apply

        path = backend.url[len("sqlite:///") :]
        db = sqlite3.connect(path, isolation_level=None)
        try:
            for number in range(7):
                db.execute("BEGIN")
                apply(db, MIGRATIONS[number], "unused")
                db.execute(f"PRAGMA user_version={number + 1}")
                db.execute("COMMIT")
            db.execute("INSERT INTO conversations VALUES ('me', 'old', '', 1, 1)")
            db.executemany(
                "INSERT INTO messages (id, user_id, conversation_id, role, agent_id, reply_to, "
                "client_message_id, status, text, chars, last_seq, reasoning_chars, created_at, "
                "updated_at) VALUES (?, 'me', 'old', ?, 'echo', ?, ?, ?, ?, ?, ?, ?, 1, 1)",
                messages,
            )
            db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?)", chunks)
            assert db.execute("PRAGMA user_version").fetchone()[0] == 7
        finally:
            db.close()
        return "r-old"
    import psycopg

    from jupyter_streamchat.store.pgschema import MIGRATIONS as PG_MIGRATIONS

    with psycopg.connect(backend.url, autocommit=True) as db:
        db.execute(PG_MIGRATIONS[0])
        db.execute(
            "CREATE TABLE streamchat_schema (version integer PRIMARY KEY, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        db.execute("INSERT INTO streamchat_schema (version) VALUES (1)")
        db.execute("INSERT INTO conversations VALUES ('me', 'old', '', 1, 1)")
        for row in messages:
            db.execute(
                "INSERT INTO messages (id, user_id, conversation_id, role, agent_id, reply_to, "
                "client_message_id, status, text, chars, last_seq, reasoning_chars, created_at, "
                "updated_at) VALUES (%s, 'me', 'old', %s, 'echo', %s, %s, %s, %s, %s, %s, %s, 1, 1)",
                row,
            )
        db.execute("UPDATE messages SET text = 'old answer' WHERE id = 'r-old'")  # ended
        db.cursor().executemany("INSERT INTO chunks VALUES (%s, %s, %s, %s)", chunks)
    return "r-old"


async def test_a_store_of_the_release_before_keeps_its_messages(backend):
    reply_id = _old_store(backend)
    store = await backend.open(default_user="me")
    asked, reply = await store.get_conversation("old")
    assert (asked.text, asked.context, asked.tool_calls) == ("old question", None, None)
    assert (reply.text, reply.reasoning, reply.tool_calls) == ("old answer", "hm", None)
    message, chunks = await store.replay(reply_id, 0)
    assert chunks == [(1, "old ", "hm", None), (2, "answer", "", None)]
    assert (message.tool_calls, message.context) == (None, None)
    page = await store.history("old", None, 10, 10_000)
    assert [(m.text, m.tool_calls, m.context) for m in page.messages] == [
        ("old question", None, None),
        ("old answer", None, None),
    ]
    again = await store.create_exchange("old", "echo", "old question", "k-old")
    assert not again.created and again.message_id == reply_id
    # New messages of the migrated store keep tool calls and context.
    ex = await store.create_exchange("old", "echo", "now", "k-new", context=[{"kind": "file"}])
    states = [call("t1", "completed")]
    await finish(store, ex, ["done"], tool_calls=[states], tool_state=states)
    assert (await store.get_message(ex.message_id)).tool_calls == states
    assert (await store.get_message(ex.user_message_id)).context == [{"kind": "file"}]
