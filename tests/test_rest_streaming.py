"""GET api/conversations/{id} and its export on a conversation of about 20 MB: the answer is
read from the store a page at a time and written a piece at a time, so the server's memory
holds about a page (or one long message) of it rather than all of it, and other clients are
served while it goes out. The body stays exactly the one a whole read gives.

The figures printed (peak memory, longest stall of the event loop) are for reading with
``pytest -s``; the tests assert only bounds far from them, and hang guards.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import tracemalloc

import pytest
from tornado.httpclient import HTTPClientError

from helpers import HANG_GUARD, new_id
from jupyter_streamchat import protocol as p
from jupyter_streamchat.server import handlers
from jupyter_streamchat.server.export import conversation_markdown
from jupyter_streamchat.store import Append

EXCHANGES = 300
USER_CHARS = 4_000
REPLY_CHARS = 55_000
BIG_REPLY_CHARS = 3_000_000  # one reply of several MB among the others
FRAME_CHARS = 2_000

# Text with what JSON escapes (quotes, backslashes, line breaks, a non-ASCII letter); Latin-1
# only, so that a character is a byte in Python's memory too and sizes compare plainly.
_WORDS = 'lorem "ipsum" dolor\\sit amet,\nconsectetur adipiscing élit; sed do eiusmod tempor '
_BLOCK = (_WORDS * (1 + 4 * FRAME_CHARS // len(_WORDS)))[: 3 * FRAME_CHARS]


def _text(chars: int, n: int) -> str:
    """``chars`` characters, different for each ``n``."""
    head = f"[{n}] "
    body = (_BLOCK * (1 + chars // len(_BLOCK)))[: chars - len(head)]
    return head + body


async def fill(app, conversation_id: str) -> int:
    """A conversation of EXCHANGES exchanges stored as replies are; returns its characters."""
    hub = app.hub
    await hub.ensure_open()
    user = app.user_for(None)
    total = 0
    for i in range(EXCHANGES):
        question = _text(USER_CHARS, i)
        exchange = await hub.store.create_exchange(
            conversation_id, "echo", question, f"k{i}", user=user
        )
        answer = _text(BIG_REPLY_CHARS if i == EXCHANGES // 3 else REPLY_CHARS, i)
        frames = [answer[at : at + FRAME_CHARS] for at in range(0, len(answer), FRAME_CHARS)]
        thinking = [f"thought {n} " if i % 10 == 0 else "" for n in range(len(frames))] + [""]
        await hub.store.append(
            Append(exchange.message_id, 1, frames + [""], p.COMPLETE, reasoning=thinking)
        )
        total += len(question) + len(answer) + len("".join(thinking))
    # One more with characters outside Latin-1, escaped as surrogate pairs in JSON.
    exchange = await hub.store.create_exchange(
        conversation_id, "echo", "and 😀 at the end", "k-last", user=user
    )
    await hub.store.append(Append(exchange.message_id, 1, ["😀 ", "done", ""], p.COMPLETE))
    return total


async def whole_body(app, conversation_id: str) -> bytes:
    """The body as one whole read of the conversation makes it."""
    messages = await app.hub.get_conversation(conversation_id, app.user_for(None))
    return json.dumps(p.conversation_body(conversation_id, messages)).encode()


async def whole_export(app, conversation_id: str, thinking: bool) -> bytes:
    record = await app.hub.store.get_conversation_record(conversation_id, user=app.user_for(None))
    messages = await app.hub.get_conversation(conversation_id, app.user_for(None))
    return conversation_markdown(record, messages, thinking).encode()


class RawAnswer:
    """An HTTP/1.1 answer read from a plain socket only when asked, so the test decides how
    fast the client reads (the server then waits on its flushes)."""

    def __init__(self, reader, writer, head: bytes):
        self.reader, self.writer = reader, writer
        self.status = int(head.split()[1])
        self.headers = head.decode("latin-1").lower()
        self.chunked = "transfer-encoding: chunked" in self.headers
        self.complete = False  # the last chunk (or Content-Length) arrived
        self.received = 0
        self._left_in_chunk = 0

    @classmethod
    async def get(cls, port: int, path: str, headers: dict) -> "RawAnswer":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANG_GUARD)
        return cls(reader, writer, head)

    async def read(self, sink, at_least: int = 1 << 62) -> None:
        """Give ``sink`` the body's bytes until ``at_least`` more came or the body ended; an
        answer cut off before its end leaves ``complete`` False."""
        assert self.chunked, self.headers
        wanted = self.received + at_least
        try:
            while not self.complete and self.received < wanted:
                if self._left_in_chunk == 0:
                    size_line = await asyncio.wait_for(self.reader.readline(), HANG_GUARD)
                    if not size_line:
                        return  # closed before the last chunk
                    self._left_in_chunk = int(size_line.split(b";")[0], 16)
                    if self._left_in_chunk == 0:
                        await asyncio.wait_for(self.reader.readuntil(b"\r\n"), HANG_GUARD)
                        self.complete = True
                        return
                data = await asyncio.wait_for(
                    self.reader.read(min(self._left_in_chunk, 256 * 1024)), HANG_GUARD
                )
                if not data:
                    return
                sink(data)
                self.received += len(data)
                self._left_in_chunk -= len(data)
                if self._left_in_chunk == 0:
                    await asyncio.wait_for(self.reader.readexactly(2), HANG_GUARD)
        except asyncio.IncompleteReadError:
            return

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
def raw_get(http_server_client, jp_http_port, jp_base_url, jp_auth_header):
    """``await raw_get("conversations", id)``: a GET read by the test at its own pace."""
    answers = []

    async def get(*parts: str) -> RawAnswer:
        path = jp_base_url + "/".join(("streamchat", "api", *parts))
        answer = await RawAnswer.get(jp_http_port, path, jp_auth_header)
        answers.append(answer)
        return answer

    yield get
    for answer in answers:
        answer.close()


@pytest.fixture
def flushes(monkeypatch):
    """How many times each REST handler flushed (finish() flushes once more)."""
    counts = {}
    for cls in (handlers.ConversationHandler, handlers.ConversationExportHandler):
        original = cls.flush

        def counting(self, *args, _original=original, **kwargs):
            counts[type(self).__name__] = counts.get(type(self).__name__, 0) + 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "flush", counting)
    return counts


class StallMeter:
    """Ticks on the event loop; ``longest`` is the longest time a tick waited past its due."""

    TICK = 0.002

    def __init__(self):
        self.longest = 0.0
        self._task = None

    def __enter__(self):
        async def tick():
            loop = asyncio.get_running_loop()
            while True:
                due = loop.time() + self.TICK
                await asyncio.sleep(self.TICK)
                self.longest = max(self.longest, loop.time() - due)

        self._task = asyncio.ensure_future(tick())
        return self

    def __exit__(self, *exc):
        self._task.cancel()


async def test_a_huge_conversation_comes_back_as_a_whole_read_gives_it(
    streamchat_app, jp_fetch, flushes
):
    conversation = new_id("c-")
    await fill(streamchat_app, conversation)
    response = await jp_fetch(
        "streamchat", "api", "conversations", conversation, request_timeout=HANG_GUARD * 4
    )
    assert response.headers["Content-Type"] == "application/json"
    assert response.body == await whole_body(streamchat_app, conversation)
    assert len(json.loads(response.body)["messages"]) == 2 * EXCHANGES + 2
    assert flushes["ConversationHandler"] > 5  # written in pieces, not in one go

    for thinking in (False, True):
        response = await jp_fetch(
            "streamchat",
            "api",
            "conversations",
            conversation,
            "export",
            params={"thinking": int(thinking)},
            request_timeout=HANG_GUARD * 4,
        )
        assert response.body == await whole_export(streamchat_app, conversation, thinking)
    assert flushes["ConversationExportHandler"] > 10


@pytest.mark.parametrize("export", [False, True])
async def test_memory_holds_a_page_not_the_conversation(streamchat_app, jp_fetch, export, capsys):
    conversation = new_id("c-")
    size = await fill(streamchat_app, conversation)
    if export:
        expected = hashlib.sha256(await whole_export(streamchat_app, conversation, False))
    else:
        expected = hashlib.sha256(await whole_body(streamchat_app, conversation))
    received = hashlib.sha256()

    parts = ("conversations", conversation, *(["export"] if export else []))
    tracemalloc.start()
    try:
        response = await jp_fetch(
            "streamchat",
            "api",
            *parts,
            streaming_callback=received.update,
            request_timeout=HANG_GUARD * 8,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.code == 200
    assert received.hexdigest() == expected.hexdigest()
    with capsys.disabled():
        print(
            f"\n{'export' if export else 'GET'} of {size / 1e6:.1f} MB of text: "
            f"peak memory {peak / 1e6:.1f} MB"
        )
    assert peak < size / 2


async def test_other_clients_are_served_while_a_huge_answer_streams(
    streamchat_app, raw_get, jp_fetch, capsys
):
    conversation = new_id("c-")
    size = await fill(streamchat_app, conversation)
    expected = await whole_body(streamchat_app, conversation)
    body = bytearray()
    started = time.monotonic()
    with StallMeter() as stalls:
        answer = await raw_get("conversations", conversation)
        assert answer.status == 200
        await answer.read(body.extend, at_least=64 * 1024)
        # The client reads no more for now: the rest waits on the server's flushes, and
        # another request is answered meanwhile.
        agents = await jp_fetch("streamchat", "api", "agents", request_timeout=HANG_GUARD)
        assert agents.code == 200 and not answer.complete
        await answer.read(body.extend)
    elapsed = time.monotonic() - started
    assert answer.complete and bytes(body) == expected
    with capsys.disabled():
        print(
            f"\nGET of {size / 1e6:.1f} MB of text in {elapsed:.2f} s: "
            f"longest event loop stall {stalls.longest * 1000:.1f} ms"
        )
    assert stalls.longest < HANG_GUARD


async def test_a_conversation_changing_mid_answer_gives_well_formed_json(streamchat_app, raw_get):
    """A reply streaming while the answer goes out comes as it was when read (its text ends
    at its lastSeq); a message added meanwhile is left out."""
    app = streamchat_app
    user = app.user_for(None)
    conversation = new_id("c-")
    await fill(app, conversation)
    streaming = await app.hub.store.create_exchange(conversation, "echo", "go on", "k-s", user=user)
    await app.hub.store.append(Append(streaming.message_id, 1, ["start "]))
    before = [m.message_id for m in await app.hub.get_conversation(conversation, user)]

    body = bytearray()
    answer = await raw_get("conversations", conversation)
    await answer.read(body.extend, at_least=64 * 1024)
    for seq in range(2, 40):
        await app.hub.store.append(Append(streaming.message_id, seq, [f"<{seq}>"]))
    await app.hub.store.append(Append(streaming.message_id, 40, [""], p.COMPLETE))
    await app.hub.store.create_exchange(conversation, "echo", "one more", "k-more", user=user)
    await answer.read(body.extend)

    assert answer.complete
    messages = json.loads(bytes(body))["messages"]
    assert [m["messageId"] for m in messages] == before
    reply = messages[-1]
    assert reply["messageId"] == streaming.message_id
    upto = min(reply["lastSeq"], 39)  # seq 40 is the final frame, with no text
    assert reply["text"] == "start " + "".join(f"<{seq}>" for seq in range(2, upto + 1))
    assert reply["status"] == (p.COMPLETE if reply["lastSeq"] == 40 else p.STREAMING)


async def test_a_conversation_deleted_mid_answer_is_never_a_complete_broken_body(
    streamchat_app, raw_get, jp_fetch
):
    """Deleted while its answer goes out: the server closes the connection before the
    answer's end, so every HTTP client sees an incomplete answer, not a JSON text cut short."""
    conversation = new_id("c-")
    await fill(streamchat_app, conversation)
    body = bytearray()
    answer = await raw_get("conversations", conversation)
    await answer.read(body.extend, at_least=64 * 1024)
    await jp_fetch("streamchat", "api", "conversations", conversation, method="DELETE")
    await answer.read(body.extend)
    assert not answer.complete
    with pytest.raises(ValueError):
        json.loads(bytes(body))
    response = await jp_fetch("streamchat", "api", "conversations", conversation, raise_error=False)
    assert response.code == 404


@pytest.mark.parametrize("tail", [(), ("export",)])
async def test_an_unknown_conversation_is_404(jp_fetch, tail):
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("streamchat", "api", "conversations", new_id("nope-"), *tail)
    assert e.value.code == 404
    assert "no conversation" in json.loads(e.value.response.body)["message"]


@pytest.mark.parametrize("tail", [(), ("export",)])
@pytest.mark.parametrize("bad_id", ["x" * 201, "%ED%A0%80"])
async def test_a_malformed_id_is_400(raw_get, tail, bad_id):
    """Over 200 characters; not UTF-8 (a lone surrogate)."""
    answer = await raw_get("conversations", bad_id, *tail)
    assert answer.status == 400
