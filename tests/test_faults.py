"""Faults against the in-process server (pytest-jupyter): requests that cannot be stored or
decoded, sends racing deletes, RESUME past the end, clients that never read, SUBSCRIBE racing
live frames, and malformed frames of every kind.

Only the wire contract and REST are used, so these tests hold whatever the hub looks like
inside. The server shares the test's event loop: blocking sockets run in threads.
"""

import asyncio
import json

import pytest
from tornado.httpclient import HTTPClientError

from faultfs import Closed, WireClient
from helpers import HANG_GUARD, assert_contiguous, new_id, streamchat_config, text_of

CLIENT_BUFFER = 1024 * 1024
FLOOD_COUNT, FLOOD_SIZE = 600, 16 * 1024  # a 9.6 MiB reply, more than kernel buffers hold


@pytest.fixture
def jp_server_config():
    return streamchat_config(
        EchoAgent={"delay": 0},
        FloodAgent={"count": FLOOD_COUNT, "size": FLOOD_SIZE},
        StreamChatApp={"client_buffer_bytes": CLIENT_BUFFER},
    )


# -- helpers ------------------------------------------------------------------------------


async def snapshot(rest, skip=()):
    """Every stored conversation (but ``skip``) with its messages: what a refusal must not change."""
    listing = [
        c for c in (await rest("conversations"))["conversations"] if c["conversationId"] not in skip
    ]
    return listing, [await rest("conversations", c["conversationId"]) for c in listing]


async def exchange(client, text, conversation=None, agent="echo"):
    """Send, and read the reply to its end -> (MESSAGE_ACCEPTED, frames)."""
    await client.send_message(text, agent=agent, conversation=conversation)
    accepted = await client.expect("MESSAGE_ACCEPTED")
    return accepted, await client.chunks_until_complete(accepted["messageId"])


async def fetch_status(jp_fetch, *parts, method="GET"):
    try:
        response = await jp_fetch("streamchat", "api", *parts, method=method)
    except HTTPClientError as e:
        return e.code, e.response.body if e.response is not None else b""
    return response.code, response.body


async def in_thread(function, *args):
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


def words(n, prefix="w"):
    return " ".join(f"{prefix}{i}" for i in range(n))


# -- 2. one bad request never harms another ---------------------------------------------------------


async def test_unstorable_request_harms_no_other_reply(chat, rest):
    """Lone surrogates pass a JSON parser but are not Unicode: a store cannot take them. Sent
    while two replies stream (so their writes share batches with the bad ones), each bad
    request is refused as bad_field and both replies end complete with exactly their text."""
    texts = [words(20000, "a"), words(20000, "b")]
    clients = [await chat(), await chat()]
    mids = []
    for client, text in zip(clients, texts):
        await client.send_message(text)
        mids.append((await client.expect("MESSAGE_ACCEPTED"))["messageId"])
    readers = [
        asyncio.ensure_future(c.chunks_until_complete(m, timeout=60)) for c, m in zip(clients, mids)
    ]

    bad = await chat()
    codes = []
    for _ in range(200):  # bounded: keep sending while the two replies stream
        await bad.send_raw(
            '{"type":"SEND_MESSAGE","conversationId":"c-ok","agentId":"echo",'
            '"text":"broken \\ud800 text","clientMessageId":"%s"}' % new_id("m-")
        )
        codes.append((await bad.expect("ERROR"))["code"])
        if all(r.done() for r in readers):
            break
    for reader, text in zip(readers, texts):
        frames = await reader
        assert_contiguous(frames)
        assert frames[-1]["status"] == "complete", frames[-1]
        assert text_of(frames) == text
    assert set(codes) == {"bad_field"}, codes
    assert len(codes) > 1, "the replies ended before any bad request: make them longer"


# -- 5. SEND racing DELETE, clientMessageId scope, RESUME past the end ----------------------------


async def test_send_racing_delete_is_refused_or_kept_whole(chat, rest, jp_fetch):
    rounds, delays = 30, (0, 0, 0.0005, 0.001, 0.002, 0.004)
    seen = set()
    for round_ in range(rounds):
        conversation = new_id("c-race-")
        client = await chat()
        await exchange(client, "the conversation exists", conversation)
        client_id = new_id("m-")

        async def send():
            await client.send(
                "SEND_MESSAGE",
                conversationId=conversation,
                agentId="echo",
                text="sent during the delete",
                clientMessageId=client_id,
            )

        async def delete(delay=delays[round_ % len(delays)]):
            await asyncio.sleep(delay)
            return (await fetch_status(jp_fetch, "conversations", conversation, method="DELETE"))[0]

        _, deleted = await asyncio.gather(send(), delete())
        assert deleted == 204, deleted
        answer = await client.recv()
        status, body = await fetch_status(jp_fetch, "conversations", conversation)
        if answer["type"] == "ERROR":
            assert answer["clientMessageId"] == client_id
            assert answer["code"] in ("conversation_deleted", "store_unavailable"), answer
            seen.add(answer["code"])
            if status == 200:  # refused: nothing of it was stored
                texts = [m["text"] for m in json.loads(body)["messages"]]
                assert "sent during the delete" not in texts, texts
            continue
        assert answer["type"] == "MESSAGE_ACCEPTED" and answer["clientMessageId"] == client_id
        frames = await client.chunks_until_complete(answer["messageId"])
        assert_contiguous(frames)
        final = frames[-1]
        seen.add(final["status"])
        # Accepted: the reply ends normally (completed, or stopped by the delete that came
        # after), never as an orphan whose rows vanished under it.
        assert final["status"] in ("complete", "stopped"), final
        status, body = await fetch_status(jp_fetch, "conversations", conversation)
        # Gone is fine when the delete came after the reply ended or stopped it; an orphan
        # shows as a reply that failed (its rows vanished under it) or a conversation left
        # with only part of the exchange.
        assert status in (200, 404), (status, body)
        if status == 200:
            messages = json.loads(body)["messages"]
            ids = [m["messageId"] for m in messages]
            assert ids[-2:] == [answer["userMessageId"], answer["messageId"]], ids
            user, reply = messages[-2:]
            assert user["text"] == "sent during the delete"
            assert (reply["status"], reply["text"]) == (final["status"], text_of(frames))
        client.close()
    assert seen, "no round had an outcome"


class TestWithSlowEcho:
    """Replies that stream for a few seconds, so a request can arrive while one is live."""

    @pytest.fixture
    def jp_server_config(self):
        return streamchat_config(EchoAgent={"delay": 0.01})

    async def test_client_message_id_is_scoped_to_its_conversation(self, chat, rest):
        client = await chat()
        first, first_frames = await exchange(client, "alpha", "c-scope-1")
        await client.send(
            "SEND_MESSAGE",
            conversationId="c-scope-2",
            agentId="echo",
            text="beta",
            clientMessageId=first["clientMessageId"],
        )
        second = await client.expect("MESSAGE_ACCEPTED")
        assert second["conversationId"] == "c-scope-2", second
        assert second["messageId"] != first["messageId"]
        assert second["userMessageId"] != first["userMessageId"]
        second_frames = await client.chunks_until_complete(second["messageId"])
        assert text_of(first_frames) == "alpha" and text_of(second_frames) == "beta"
        for conversation, text in (("c-scope-1", "alpha"), ("c-scope-2", "beta")):
            stored = await rest("conversations", conversation)
            assert [(m["role"], m["text"]) for m in stored["messages"]] == [
                ("user", text),
                ("assistant", text),
            ]
        # Within one conversation it still makes a re-send idempotent.
        await client.send(
            "SEND_MESSAGE",
            conversationId="c-scope-1",
            agentId="echo",
            text="alpha",
            clientMessageId=first["clientMessageId"],
        )
        again = await client.expect("MESSAGE_ACCEPTED")
        assert again["messageId"] == first["messageId"]
        assert await client.chunks_until_complete(first["messageId"]) == first_frames

    async def test_resume_past_the_end(self, chat):
        client = await chat()
        _, ended = await exchange(client, "a short one")
        mid, last = ended[-1]["messageId"], ended[-1]["seq"]
        for after in (last, last + 1, 2**53 - 1):
            resumer = await chat()
            await resumer.send("RESUME", messageId=mid, afterSeq=after)
            frame = await resumer.expect("MESSAGE_CHUNK")
            assert frame == ended[-1], (after, frame)  # the final frame again, never silence
            await resumer.no_frame(0.2)

        await client.send_message(words(300))
        streaming = (await client.expect("MESSAGE_ACCEPTED"))["messageId"]
        frames = [await client.expect("MESSAGE_CHUNK") for _ in range(3)]
        assert not frames[-1]["isComplete"]
        resumer = await chat()
        await resumer.send("RESUME", messageId=streaming, afterSeq=frames[-1]["seq"] + 10000)
        error = await resumer.expect("ERROR")
        assert (error["code"], error["messageId"]) == ("bad_field", streaming), error
        # The sender's stream is not disturbed.
        frames += await client.chunks_until_complete(streaming)
        assert_contiguous(frames)
        assert text_of(frames) == words(300)


# -- 6. a client that never reads ------------------------------------------------------------------


async def test_client_that_never_reads_is_cut_off_and_harms_nobody(
    chat, jp_http_port, jp_base_url, jp_auth_header
):
    """It asks for big HISTORY frames over and over, sends big messages, spams bad frames, and
    reads nothing: what the server queues for it stays bounded (it is closed with 1008), while
    another client's replies stream exactly."""
    big = new_id("c-big-")
    builder = await chat()
    block = "x" * 999 + " "
    for i in range(2):  # a conversation of about 3 MiB
        await exchange(builder, f"{i} " + block * 800, big)

    stuck = await in_thread(
        lambda: WireClient(
            "127.0.0.1", jp_http_port, f"{jp_base_url}streamchat/ws", jp_auth_header, rcvbuf=4096
        )
    )
    big_message = json.dumps(
        {
            "type": "SEND_MESSAGE",
            "conversationId": new_id("c-"),
            "agentId": "echo",
            "text": block * 800,
            "clientMessageId": "m-big",
        }
    )

    def spam():
        """-> rounds sent before the server closed the connection (all of them if it never did)."""
        for round_ in range(30):
            try:
                stuck.send({"type": "SUBSCRIBE", "conversationId": big})
                for _ in range(50):
                    stuck.send_text("this is not JSON")
                if round_ % 10 == 0:
                    stuck.send_text(big_message)
            except OSError:  # reset or broken pipe: the server let it go
                return round_
        return 30

    spammer = asyncio.ensure_future(in_thread(spam))
    bystander = await chat()
    for i in range(5):
        text = words(2000, f"r{i}-")
        _, frames = await exchange(bystander, text)
        assert_contiguous(frames)
        assert (frames[-1]["status"], text_of(frames)) == ("complete", text)
    await asyncio.wait_for(spammer, 60)

    def drain():
        try:
            for _ in range(100000):  # bounded; ends at the close or at 64 MiB read
                stuck.recv()
                if stuck.bytes_read > 64 << 20:
                    break
        except Closed as e:
            return e.code
        except OSError as e:  # includes the socket timeout: the server kept it open, silent
            return repr(e)
        return "not closed"

    outcome = await in_thread(drain)
    stuck.close()
    # A close frame, if it got through the stuck queue, says 1008; a connection that just
    # ended was closed too (what was queued for it is dropped with it).
    assert outcome in (1008, None), f"the stuck client was not closed: {outcome}"
    # What waited for it is bounded by client_buffer_bytes, plus what kernel buffers held.
    assert stuck.bytes_read <= CLIENT_BUFFER + 8 * 1024 * 1024, stuck.bytes_read
    _, frames = await exchange(bystander, "still fine")
    assert text_of(frames) == "still fine"


# -- 7. HISTORY against live frames ----------------------------------------------------------------


def view_after_subscribe(frames: list, conversation: str, message_id: str) -> tuple:
    """A subscriber's view of one reply: HISTORY's text, then chunks by seq
    -> (text, final status, how many chunks came live after HISTORY).

    Asserts the contract on the way: HISTORY is the first frame of the conversation, and the
    live chunks continue exactly where HISTORY's lastSeq ends (no gap, no duplicate)."""
    ours = [f for f in frames if f.get("conversationId") == conversation]
    assert ours and ours[0]["type"] == "HISTORY", [f["type"] for f in ours[:3]]
    held = [m for m in ours[0]["messages"] if m["messageId"] == message_id]
    text, last_seq, final = "", 0, None
    if held:
        text, last_seq = held[0]["text"], held[0]["lastSeq"]
        if held[0]["status"] != "streaming":
            final = held[0]["status"]
    chunks = [f for f in ours[1:] if f["type"] == "MESSAGE_CHUNK" and f["messageId"] == message_id]
    if final is not None:
        assert not chunks, "chunks of a reply HISTORY showed as ended"
        return text, final, 0
    assert_contiguous(chunks, last_seq + 1)
    assert chunks and chunks[-1]["isComplete"], "the reply never ended for the subscriber"
    return text + text_of(chunks), chunks[-1]["status"], len(chunks)


def shows_end(frame: dict, message_id: str) -> bool:
    """Whether ``frame`` tells its reader that the reply has ended."""
    if frame["type"] == "MESSAGE_CHUNK":
        return frame["messageId"] == message_id and frame["isComplete"]
    if frame["type"] == "HISTORY":
        return any(
            m["messageId"] == message_id and m["status"] != "streaming" for m in frame["messages"]
        )
    return False


async def read_until_final(client, message_id: str, frames: list) -> list:
    async def read():
        while True:
            frame = await client.recv()
            frames.append(frame)
            if shows_end(frame, message_id):
                return frames

    return await asyncio.wait_for(read(), HANG_GUARD)


# Long enough to stream over many frames, short enough that HISTORY holds it whole (a HISTORY
# page is about 512 KiB of text: this user message and its reply take about 400 KB).
RACE_TEXT = words(30000)


async def test_subscribe_during_a_fast_reply_sees_history_then_the_rest(chat, rest):
    text = RACE_TEXT
    live_rounds = 0
    for round_ in range(40):
        conversation = new_id("c-live-")
        sender = await chat()
        await sender.send_message(text, conversation=conversation)
        mid = (await sender.expect("MESSAGE_ACCEPTED"))["messageId"]
        for _ in range(round_ % 10):  # subscribe at a different point of the reply each round
            if (await sender.expect("MESSAGE_CHUNK"))["isComplete"]:
                break
        subscriber = await chat()
        await subscriber.send("SUBSCRIBE", conversationId=conversation)
        frames = await read_until_final(subscriber, mid, [])
        stored = (await rest("conversations", conversation))["messages"][-1]
        assert (stored["status"], stored["text"]) == ("complete", text)
        seen, status, live = view_after_subscribe(frames, conversation, mid)
        assert (seen, status) == (text, "complete")
        live_rounds += live > 0
        sender.close()
        subscriber.close()
    assert live_rounds, "every reply ended before its SUBSCRIBE: make RACE_TEXT longer"


async def test_subscribe_after_lagging_sees_history_then_the_rest(
    chat, rest, jp_http_port, jp_base_url, jp_auth_header
):
    """A client falls behind on a flood (its live frames dropped, caught up from the store),
    catches up, then SUBSCRIBEs to a conversation whose reply streams fast."""
    flooded = new_id("c-flood-")
    lagger = await in_thread(
        lambda: WireClient(
            "127.0.0.1", jp_http_port, f"{jp_base_url}streamchat/ws", jp_auth_header, rcvbuf=4096
        )
    )
    lagger.send({"type": "SUBSCRIBE", "conversationId": flooded})
    # Its (empty) HISTORY is read, so the flood below surely comes after the SUBSCRIBE.
    first = await in_thread(lagger.recv)
    assert (first["type"], first["messages"]) == ("HISTORY", []), first
    sender = await chat()
    _, flood = await exchange(sender, "flood me", flooded, agent="flood")  # lagger reads nothing
    assert len(text_of(flood)) == FLOOD_COUNT * FLOOD_SIZE
    flood_id = flood[-1]["messageId"]

    def read_through(message_id, frames):
        for _ in range(200000):  # bounded
            frame = lagger.recv()
            frames.append(frame)
            if shows_end(frame, message_id):
                return frames
        raise AssertionError("no final frame")

    flood_frames = await in_thread(read_through, flood_id, [first])
    flood_text, flood_status, _ = view_after_subscribe(flood_frames, flooded, flood_id)
    assert (flood_text, flood_status) == (text_of(flood), "complete")

    text = RACE_TEXT
    live_rounds = 0
    for round_ in range(4):
        live = new_id("c-live-")
        await sender.send_message(text, conversation=live)
        mid = (await sender.expect("MESSAGE_ACCEPTED"))["messageId"]
        for _ in range(round_ * 3):
            if (await sender.expect("MESSAGE_CHUNK"))["isComplete"]:
                break
        lagger.send({"type": "SUBSCRIBE", "conversationId": live})
        frames = await in_thread(read_through, mid, [])
        seen, status, live_chunks = view_after_subscribe(frames, live, mid)
        assert (seen, status) == (text, "complete")
        live_rounds += live_chunks > 0
        await sender.chunks_until_complete(mid)
    lagger.close()
    assert live_rounds, "every reply ended before its SUBSCRIBE: make RACE_TEXT longer"


# -- 8. every malformed request gets a precise code ---------------------------------------------

SEND = {"conversationId": "c-ok", "agentId": "echo", "text": "hi", "clientMessageId": "m-ok"}


def frame(kind=None, raw_fields="", **fields):
    """JSON text of a request; ``raw_fields`` is spliced in verbatim (for NaN, escapes...)."""
    body = json.dumps({**({"type": kind} if kind is not None else {}), **fields})
    if raw_fields:
        body = body[:-1] + (", " if body != "{}" else "") + raw_fields + "}"
    return body


def nested(depth: int) -> str:
    return "[" * (depth - 1) + "]" * (depth - 1)


MALFORMED = [
    # not strict JSON
    (frame("RESUME", '"messageId": "x", "afterSeq": NaN'), "bad_json"),
    (frame("RESUME", '"messageId": "x", "afterSeq": Infinity'), "bad_json"),
    (frame("RESUME", '"messageId": "x", "afterSeq": -Infinity'), "bad_json"),
    ("[" * 10000, "bad_json"),
    ("[" * 10000 + "]" * 10000, "bad_json"),
    ('{"a":' * 10000 + "1" + "}" * 10000, "bad_json"),
    (frame("SUBSCRIBE", '"conversationId": "c", "extra": ' + nested(40)), "bad_json"),
    ("null", "bad_json"),
    ('"SUBSCRIBE"', "bad_json"),
    # type
    (frame(None, '"type": ["SUBSCRIBE"], "conversationId": "c"'), "bad_field"),
    (frame(None, '"type": {"SUBSCRIBE": 1}, "conversationId": "c"'), "bad_field"),
    (frame(None, '"type": 1, "conversationId": "c"'), "bad_field"),
    (frame(None, '"type": null, "conversationId": "c"'), "bad_field"),
    (frame(None, '"type": true, "conversationId": "c"'), "bad_field"),
    (frame("LOAD_HISTORIES", conversationId="c"), "unknown_type"),
    (frame("subscribe", conversationId="c"), "unknown_type"),
    # afterSeq out of range or not an integer
    *[
        (frame("RESUME", f'"messageId": "x", "afterSeq": {value}'), "bad_field")
        for value in (
            "1e400",
            str(2**70),
            str(2**53),
            "1.0",
            "-1",
            "true",
            "false",
            "null",
            '"3"',
            "[]",
            "{}",
            "-0.5",
        )
    ],
    # wrong JSON types elsewhere
    (frame("SEND_MESSAGE", **{**SEND, "text": ["hi"]}), "bad_field"),
    (frame("SEND_MESSAGE", **{**SEND, "agentId": 7}), "bad_field"),
    (frame("STOP_GENERATING", messageId={"id": "x"}), "bad_field"),
    (frame("LOAD_HISTORY", conversationId="c", beforeMessageId=5), "bad_field"),
    (frame("LOAD_HISTORY", conversationId=None, beforeMessageId="m"), "bad_field"),
    (frame("SUBSCRIBE", conversationId="x" * 201), "bad_field"),
    # strings that are not Unicode (lone or reversed surrogates), as JSON escapes
    *[
        (frame(kind, raw), "bad_field")
        for kind, raw in [
            (
                "SEND_MESSAGE",
                '"conversationId": "c-\\ud800", "agentId": "echo", "text": "hi", '
                '"clientMessageId": "m-1"',
            ),
            (
                "SEND_MESSAGE",
                '"conversationId": "c", "agentId": "ec\\udc00ho", "text": "hi", '
                '"clientMessageId": "m-2"',
            ),
            (
                "SEND_MESSAGE",
                '"conversationId": "c", "agentId": "echo", "text": "\\ude00\\ud83d", '
                '"clientMessageId": "m-3"',
            ),
            (
                "SEND_MESSAGE",
                '"conversationId": "c", "agentId": "echo", "text": "hi", '
                '"clientMessageId": "\\udbff"',
            ),
            ("STOP_GENERATING", '"messageId": "\\ud800"'),
            ("RESUME", '"messageId": "m\\udfff", "afterSeq": 0'),
            ("SUBSCRIBE", '"conversationId": "\\ud800\\ud800"'),
            ("LOAD_HISTORY", '"conversationId": "c", "beforeMessageId": "\\udc00"'),
        ]
    ],
]


@pytest.mark.parametrize(
    "raw, code", MALFORMED, ids=[f"{i}-{c}" for i, (_, c) in enumerate(MALFORMED)]
)
async def test_malformed_request_gets_its_precise_code(chat, rest, raw, code):
    client = await chat()
    await exchange(client, "kept", "c-kept")
    before = await snapshot(rest)
    await client.send_raw(raw)
    error = await client.expect("ERROR")
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    # The socket answers a valid request afterwards, and nothing stored changed.
    await client.send("SUBSCRIBE", conversationId="c-kept")
    history = await client.expect("HISTORY")
    assert [m["text"] for m in history["messages"]] == ["kept", "kept"]
    assert await snapshot(rest) == before


async def test_valid_surrogate_pairs_and_shallow_nesting_are_accepted(chat):
    """The controls of the cases above: an astral character (a proper surrogate pair in JSON)
    and a little nesting in an unknown field are fine."""
    client = await chat()
    await client.send_raw(
        frame(
            "SEND_MESSAGE",
            '"conversationId": "c-\\ud83d\\ude00", '
            '"agentId": "echo", "text": "smile \\ud83d\\ude00", '
            '"clientMessageId": "m-smile"',
        )
    )
    accepted = await client.expect("MESSAGE_ACCEPTED")
    assert accepted["conversationId"] == "c-\U0001f600"
    frames = await client.chunks_until_complete(accepted["messageId"])
    assert text_of(frames) == "smile \U0001f600"
    await client.send_raw(frame("SUBSCRIBE", '"conversationId": "c-nest", "extra": ' + nested(5)))
    assert (await client.expect("HISTORY"))["messages"] == []
