"""The wire contract over a real WebSocket to a real Jupyter server (pytest-jupyter)."""

import asyncio
import re
import time

from helpers import assert_contiguous, new_id, text_of

WORDS = " ".join(f"word{i}" for i in range(60)) + "\n  the end  "


async def start(client, text=WORDS, agent="echo", conversation=None, client_id=None):
    await client.send_message(text, agent=agent, conversation=conversation, client_id=client_id)
    return await client.expect("MESSAGE_ACCEPTED")


async def test_echo_streams_contiguous_frames(chat, rest):
    client = await chat()
    conversation, client_id = new_id("c-"), new_id("m-")
    accepted = await start(client, conversation=conversation, client_id=client_id)
    assert accepted["clientMessageId"] == client_id
    assert accepted["conversationId"] == conversation
    assert accepted["agentId"] == "echo"
    assert accepted["userMessageId"] != accepted["messageId"]

    frames = await client.chunks_until_complete(accepted["messageId"])
    assert_contiguous(frames)
    for frame in frames:
        assert set(frame) >= {
            "messageId",
            "conversationId",
            "agentId",
            "seq",
            "chunk",
            "isComplete",
        }
        assert frame["conversationId"] == conversation and frame["agentId"] == "echo"
    assert frames[-1]["isComplete"] is True and frames[-1]["status"] == "complete"
    assert text_of(frames) == WORDS
    # Echo cuts at whitespace: every frame boundary falls before whitespace.
    for frame in frames[1:]:
        assert frame["chunk"] == "" or frame["chunk"][0].isspace(), frame
    assert len(frames) > 10  # streamed, not sent whole

    stored = await rest("conversations", conversation)
    user, reply = stored["messages"]
    assert (user["role"], user["text"], user["messageId"]) == (
        "user",
        WORDS,
        accepted["userMessageId"],
    )
    assert (reply["role"], reply["status"], reply["text"]) == ("assistant", "complete", WORDS)
    assert reply["lastSeq"] == frames[-1]["seq"]


async def test_echo_delay_is_configurable(streamchat_app):
    assert (
        streamchat_app.agent_instances["echo"].delay == 0.02
    )  # from c.EchoAgent.delay in conftest


async def test_demo_agent_streams_markdown(chat, streamchat_app):
    streamchat_app.agent_instances["demo"].delay = 0
    client = await chat()
    accepted = await start(client, "What can you do?", agent="demo")
    frames = await client.chunks_until_complete(accepted["messageId"])
    assert_contiguous(frames)
    text = text_of(frames)
    assert re.search(r"^## ", text, re.M)  # heading
    assert re.search(r"^1\. ", text, re.M) and re.search(r"^- |^\d\. ", text, re.M)  # list
    assert re.search(r"^\|---", text, re.M)  # table
    assert "```python\n" in text  # fenced code
    assert "What can you do?" in text


async def test_stop_generating_ends_at_once(chat, rest):
    client = await chat()
    conversation = new_id("c-")
    accepted = await start(client, conversation=conversation)
    mid = accepted["messageId"]
    seen = []
    while len(seen) < 3:
        seen.append(await client.expect("MESSAGE_CHUNK"))
    sent_at = time.perf_counter()
    await client.send("STOP_GENERATING", messageId=mid)
    rest_frames = await client.chunks_until_complete(mid)
    latency = time.perf_counter() - sent_at
    print(f"stop latency: {latency * 1000:.1f} ms")
    assert latency < 2.0  # hang guard; bench/ measures the real figure
    frames = seen + rest_frames
    assert_contiguous(frames)
    assert frames[-1]["status"] == "stopped"
    await client.no_frame(0.3)  # nothing of that reply after its final frame
    reply = (await rest("conversations", conversation))["messages"][1]
    assert (reply["status"], reply["text"]) == ("stopped", text_of(frames))
    assert len(reply["text"]) < len(WORDS)
    # Stopping an ended reply is harmless; the next request still works.
    await client.send("STOP_GENERATING", messageId=mid)
    accepted = await start(client, "again")
    assert text_of(await client.chunks_until_complete(accepted["messageId"])) == "again"


async def test_resume_after_drop_replays_then_live(chat):
    first = await chat()
    accepted = await start(first)
    mid = accepted["messageId"]
    got = [await first.expect("MESSAGE_CHUNK") for _ in range(5)]
    first.close()
    await asyncio.sleep(0.1)  # the reply streams on with nobody watching

    second = await chat()
    await second.send("RESUME", messageId=mid, afterSeq=got[-1]["seq"])
    rest_frames = await second.chunks_until_complete(mid)
    frames = got + rest_frames
    assert_contiguous(frames)
    assert text_of(frames) == WORDS and frames[-1]["status"] == "complete"

    # Resuming a finished reply from any point replays exactly the rest.
    await second.send("RESUME", messageId=mid, afterSeq=10)
    again = await second.chunks_until_complete(mid)
    assert_contiguous(again, first_seq=11)
    assert again == frames[10:]


async def test_subscribe_sends_history_then_live_to_every_tab(chat):
    sender = await chat()
    conversation = new_id("c-")
    first = await start(sender, "hello history", conversation=conversation)
    await sender.chunks_until_complete(first["messageId"])
    second = await start(sender, conversation=conversation)
    early = [await sender.expect("MESSAGE_CHUNK") for _ in range(3)]

    tabs = [await chat() for _ in range(3)]
    for tab in tabs:
        await tab.send("SUBSCRIBE", conversationId=conversation)
    full = early + await sender.chunks_until_complete(second["messageId"])
    for tab in tabs:
        history = await tab.expect("HISTORY")
        assert history["conversationId"] == conversation
        user1, reply1, user2, reply2 = history["messages"]
        assert (user1["role"], user1["text"]) == ("user", "hello history")
        assert (reply1["text"], reply1["status"]) == ("hello history", "complete")
        assert reply2["status"] == "streaming" and reply2["messageId"] == second["messageId"]
        live = await tab.chunks_until_complete(second["messageId"])
        # HISTORY text up to lastSeq, then every later frame once: no gap, no duplicate.
        assert_contiguous(live, first_seq=reply2["lastSeq"] + 1)
        assert reply2["text"] + text_of(live) == WORDS
        assert live == full[reply2["lastSeq"] :]

    # A new message in the conversation reaches the other tabs, the user's text included.
    third = await start(sender, "from tab one", conversation=conversation)
    for tab in tabs:
        accepted = await tab.expect("MESSAGE_ACCEPTED")
        assert accepted["text"] == "from tab one"
        assert accepted["messageId"] == third["messageId"]
        frames = await tab.chunks_until_complete(third["messageId"])
        assert_contiguous(frames)


async def test_unsubscribe_stops_the_conversation_and_its_replies(chat, rest):
    """A view switching conversations: after UNSUBSCRIBE (requests are handled in order, so a
    later SUBSCRIBE's HISTORY marks the moment) the socket gets no frame of the old one, not
    even of the reply it sent itself, while the other conversation keeps streaming to it."""
    viewer, other = await chat(), await chat()
    old, kept = new_id("c-old-"), new_id("c-kept-")
    for conversation in (old, kept):
        await viewer.send("SUBSCRIBE", conversationId=conversation)
        await viewer.expect("HISTORY")
    await other.send("SUBSCRIBE", conversationId=old)
    await other.expect("HISTORY")

    mine = await start(viewer, conversation=old)
    await other.expect("MESSAGE_ACCEPTED")
    await viewer.expect("MESSAGE_CHUNK")  # it streams
    await viewer.send("UNSUBSCRIBE", conversationId=old)
    marker = new_id("c-marker-")
    await viewer.send("SUBSCRIBE", conversationId=marker)
    while (frame := await viewer.recv())["type"] != "HISTORY":
        assert frame["type"] == "MESSAGE_CHUNK" and frame["messageId"] == mine["messageId"]
    assert frame["conversationId"] == marker

    full = await other.chunks_until_complete(mine["messageId"])  # the reply goes on...
    assert text_of(full) == WORDS
    later = await start(other, "said later", conversation=old)
    await other.chunks_until_complete(later["messageId"])
    theirs = await start(other, "still here", conversation=kept)  # ...and so does the other
    await other.chunks_until_complete(theirs["messageId"])
    accepted = await viewer.recv()  # the first frame after the marker is of the kept one
    assert (accepted["type"], accepted["messageId"]) == ("MESSAGE_ACCEPTED", theirs["messageId"])
    assert text_of(await viewer.chunks_until_complete(theirs["messageId"])) == "still here"
    await viewer.send("UNSUBSCRIBE", conversationId="never-followed")  # nothing to undo
    await viewer.send("SUBSCRIBE", conversationId=old)  # and back: HISTORY has it all
    history = await viewer.expect("HISTORY")
    assert [m["text"] for m in history["messages"]] == [WORDS, WORDS, "said later", "said later"]


async def test_subscribe_to_new_conversation_is_empty_history(chat):
    client = await chat()
    await client.send("SUBSCRIBE", conversationId="brand-new")
    history = await client.expect("HISTORY")
    assert history == {
        "type": "HISTORY",
        "conversationId": "brand-new",
        "messages": [],
        "hasMore": False,
    }


async def test_send_is_idempotent_on_client_message_id(chat, rest):
    conversation, client_id = new_id("c-"), new_id("m-")
    first = await chat()
    accepted = await start(first, conversation=conversation, client_id=client_id)
    await first.expect("MESSAGE_CHUNK")
    first.close()

    second = await chat()  # re-send after a reconnect, mid-reply
    again = await start(second, conversation=conversation, client_id=client_id)
    assert again == accepted
    frames = await second.chunks_until_complete(accepted["messageId"])
    assert_contiguous(frames)  # the whole reply, from seq 1, once
    assert text_of(frames) == WORDS

    await second.send_message(WORDS, conversation=conversation, client_id=client_id)
    assert await second.expect("MESSAGE_ACCEPTED") == accepted
    assert_contiguous(await second.chunks_until_complete(accepted["messageId"]))
    stored = await rest("conversations", conversation)
    assert len(stored["messages"]) == 2  # one user message, one reply: no second generation


async def test_agent_error_ends_reply_with_error_status(chat, rest):
    client = await chat()
    conversation = new_id("c-")
    accepted = await start(client, "go", agent="boom", conversation=conversation)
    frames = await client.chunks_until_complete(accepted["messageId"])
    assert_contiguous(frames)
    final = frames[-1]
    assert final["status"] == "error" and "boom after three chunks" in final["error"]
    assert text_of(frames) == "partial text before "
    reply = (await rest("conversations", conversation))["messages"][1]
    assert (reply["status"], reply["text"]) == ("error", "partial text before ")
    assert "boom after three chunks" in reply["error"]
    # The server carries on.
    accepted = await start(client, "still here")
    assert text_of(await client.chunks_until_complete(accepted["messageId"])) == "still here"


async def test_a_busy_agent_first_token_goes_out_alone_and_at_once(chat):
    """An agent with its whole reply at hand never waits on anything, so the event loop never
    idles and the store's writer thread is slow to get the GIL. The first token is committed
    and sent before the agent is asked for the second, so it cannot wait behind the rest; the
    reply still arrives whole and in order, in several frames."""
    client = await chat()
    accepted = await start(client, "go", agent="burst")
    frames = await client.chunks_until_complete(accepted["messageId"])
    assert_contiguous(frames)
    assert frames[0]["chunk"] == "t0000 "
    assert text_of(frames) == "".join(f"t{i:04d} " for i in range(2000))
    assert len(frames) > 2


async def test_broken_plugins_are_skipped(rest):
    agents = {a["id"]: a for a in (await rest("agents"))["agents"]}
    assert {"echo", "demo", "boom", "flood"} <= set(agents)
    assert "broken" not in agents and "notanagent" not in agents
    assert agents["echo"]["name"] and agents["echo"]["description"]


def test_encoded_frames_match_rfc6455():
    """The replay fast path writes the bytes a WebSocket library would (RFC 6455 5.2)."""
    import struct

    from jupyter_streamchat.server.wsframes import encode_text_frames

    def reference(text):
        payload = text.encode()
        n = len(payload)
        if n < 126:
            return bytes((0x81, n)) + payload
        if n < 65536:
            return struct.pack("!BBH", 0x81, 126, n) + payload
        return struct.pack("!BBQ", 0x81, 127, n) + payload

    for texts in (
        ["a", "b" * 125, "c" * 126, "d" * 65535, "e" * 65536],
        ["ascii", "non-ascii é ✓", "x" * 300],
    ):
        assert encode_text_frames(texts) == b"".join(map(reference, texts))
