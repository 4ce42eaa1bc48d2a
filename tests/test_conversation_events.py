"""Live updates of the conversation list: WATCH_CONVERSATIONS, CONVERSATION_UPDATED and
CONVERSATION_DELETED over real WebSockets to a real server, with changes made from another
socket and over REST."""

import asyncio
import json

from helpers import HANG_GUARD, new_id
from jupyter_streamchat import protocol as p

LONG = " ".join(f"word{i}" for i in range(60))  # about 1.2 s of echo: a reply seen streaming
LIST_FRAMES = ("CONVERSATION_UPDATED", "CONVERSATION_DELETED")


async def in_effect(client) -> None:
    """Wait until the server has handled every frame this client sent so far: it handles a
    socket's requests in order, so the answer to one sent now comes after all of them."""
    barrier = new_id("barrier-")
    await client.send("SUBSCRIBE", conversationId=barrier)
    while True:
        frame = await client.recv()
        if frame["type"] == "HISTORY" and frame["conversationId"] == barrier:
            return


async def watching(chat):
    watcher = await chat()
    await watcher.send("WATCH_CONVERSATIONS")
    await in_effect(watcher)
    return watcher


async def list_frame(client) -> dict:
    frame = await client.recv()
    assert frame["type"] in LIST_FRAMES, frame
    assert p.is_server_frame(frame), frame
    return frame


async def converse(client, text, conversation) -> None:
    """Send a message and read every frame until its reply ends, none of them a list frame
    (the sender does not watch the list)."""
    await client.send_message(text, conversation=conversation)
    accepted = await client.expect("MESSAGE_ACCEPTED")
    while True:
        frame = await client.recv()
        assert frame["type"] == "MESSAGE_CHUNK", frame
        if frame["messageId"] == accepted["messageId"] and frame["isComplete"]:
            return


async def listed(rest, conversation) -> dict:
    return next(
        c
        for c in (await rest("conversations"))["conversations"]
        if c["conversationId"] == conversation
    )


async def test_a_watcher_follows_every_change(chat, rest, jp_fetch):
    """Created with a reply streaming, the reply's end, a new message, a rename and a deletion
    made elsewhere each reach the watching socket, in order, as the list API shows them."""
    watcher = await watching(chat)
    other = await chat()
    conversation = new_id("c-events-")

    sending = asyncio.ensure_future(converse(other, LONG, conversation))
    created = await list_frame(watcher)
    assert created["type"] == "CONVERSATION_UPDATED"
    assert created["conversationId"] == conversation
    entry = created["conversation"]
    assert (entry["conversationId"], entry["messageCount"], entry["streaming"]) == (
        conversation,
        2,
        True,
    )
    assert entry["title"] == LONG[:80].strip() and entry["agentId"] == "echo"
    await sending
    ended = await list_frame(watcher)
    assert ended["conversation"]["streaming"] is False
    assert ended["conversation"] == await listed(rest, conversation)

    sending = asyncio.ensure_future(converse(other, LONG, conversation))
    started = await list_frame(watcher)
    assert (started["conversation"]["messageCount"], started["conversation"]["streaming"]) == (
        4,
        True,
    )
    await sending
    ended = await list_frame(watcher)
    assert (ended["conversation"]["messageCount"], ended["conversation"]["streaming"]) == (4, False)

    await jp_fetch(
        "streamchat",
        "api",
        "conversations",
        conversation,
        method="PATCH",
        body=json.dumps({"title": "Renamed elsewhere"}),
    )
    renamed = await list_frame(watcher)
    assert renamed["conversation"]["title"] == "Renamed elsewhere"
    assert renamed["conversation"] == await listed(rest, conversation)

    await jp_fetch("streamchat", "api", "conversations", conversation, method="DELETE")
    assert await list_frame(watcher) == {
        "type": "CONVERSATION_DELETED",
        "conversationId": conversation,
    }
    await watcher.no_frame(0.3)
    await other.no_frame(0.3)  # the socket that made the changes but does not watch: nothing


async def test_deleting_a_streaming_conversation_ends_with_its_deletion(chat, jp_fetch):
    """The reply that a deletion stops ends meanwhile; whatever is said of it comes before the
    CONVERSATION_DELETED, which is the last word."""
    watcher = await watching(chat)
    other = await chat()
    conversation = new_id("c-")
    await other.send_message(LONG, conversation=conversation)
    await other.expect("MESSAGE_ACCEPTED")
    assert (await list_frame(watcher))["conversation"]["streaming"] is True
    await jp_fetch("streamchat", "api", "conversations", conversation, method="DELETE")
    frames = [await list_frame(watcher)]
    while frames[-1]["type"] != "CONVERSATION_DELETED":
        frames.append(await list_frame(watcher))
    assert all(f["conversationId"] == conversation for f in frames)
    await watcher.no_frame(0.5)


async def test_unwatch_stops_the_frames(chat, jp_fetch):
    watcher = await watching(chat)
    other = await chat()
    first = new_id("c-")
    await converse(other, "hello", first)
    frame = await list_frame(watcher)
    while frame["conversation"]["streaming"]:  # a short reply may come as one frame
        frame = await list_frame(watcher)

    await watcher.send("UNWATCH_CONVERSATIONS")
    await in_effect(watcher)
    await converse(other, "hello again", new_id("c-"))
    await jp_fetch(
        "streamchat",
        "api",
        "conversations",
        first,
        method="PATCH",
        body=json.dumps({"title": "unseen"}),
    )
    await jp_fetch("streamchat", "api", "conversations", first, method="DELETE")
    await watcher.no_frame(0.5)

    await watcher.send("WATCH_CONVERSATIONS")  # and again
    await in_effect(watcher)
    await converse(other, "once more", new_id("c-"))
    assert (await list_frame(watcher))["type"] == "CONVERSATION_UPDATED"


async def test_watching_ends_with_the_socket(chat, streamchat_app):
    watcher = await watching(chat)
    user = streamchat_app.user
    assert streamchat_app.hub.fanout.list_watched(user)
    watcher.close()
    for _ in range(int(HANG_GUARD / 0.05)):
        if not streamchat_app.hub.fanout.list_watched(user):
            break
        await asyncio.sleep(0.05)
    assert not streamchat_app.hub.fanout.list_watched(user)  # the server keeps no closed watcher
    other = await chat()
    await converse(other, "nobody watches", new_id("c-"))  # and nothing fails for it


async def test_malformed_watch_frames(chat):
    """Unknown extra fields are ignored; a misspelt or mistyped ``type`` is an ERROR that
    starts no watching, and the socket stays open."""
    client = await chat()
    other = await chat()
    await client.send_raw(json.dumps({"type": "watch_conversations"}))
    assert (await client.expect("ERROR"))["code"] == "unknown_type"
    await client.send_raw(json.dumps({"type": ["WATCH_CONVERSATIONS"]}))
    assert (await client.expect("ERROR"))["code"] == "bad_field"
    await client.send_raw(json.dumps({"type": "UNWATCH_CONVERSATIONS", "conversationId": 5}))
    await in_effect(client)
    await converse(other, "not watched yet", new_id("c-"))
    await client.no_frame(0.3)

    await client.send_raw(
        json.dumps(
            {"type": "WATCH_CONVERSATIONS", "junk": [1, {"x": None}], "conversationId": "ignored"}
        )
    )
    await in_effect(client)
    conversation = new_id("c-")
    await converse(other, "watched now", conversation)
    assert (await list_frame(client))["conversationId"] == conversation
