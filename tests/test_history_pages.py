"""Long conversations: HISTORY carries the latest messages within a budget, older ones come page
by page on request, a reply longer than a page comes cut short and is resumed from the store.

The server here has tiny pages (4 messages, 300 characters) so that a short test crosses them.
"""

import asyncio

import pytest

from helpers import HANG_GUARD, assert_contiguous, new_id, streamchat_config, text_of
from jupyter_streamchat.kernel.connection import RemoteTransport
from jupyter_streamchat.kernel.discovery import ServerInfo
from jupyter_streamchat.kernel.follower import Conversation

PAGE_MESSAGES, PAGE_CHARS = 4, 300


@pytest.fixture
def jp_server_config():
    return streamchat_config(
        EchoAgent={"delay": 0},
        StreamChatApp={"history_page_messages": PAGE_MESSAGES, "history_page_chars": PAGE_CHARS},
    )


async def exchange(client, text, conversation):
    await client.send_message(text, conversation=conversation)
    accepted = await client.expect("MESSAGE_ACCEPTED")
    return accepted, await client.chunks_until_complete(accepted["messageId"])


async def fill(client, conversation, texts):
    """Send each text to echo in turn; returns the conversation's texts, oldest first."""
    stored = []
    for text in texts:
        _, frames = await exchange(client, text, conversation)
        stored += [text, text_of(frames)]
    return stored


async def test_history_pages_cover_the_conversation_once(chat, rest):
    client = await chat()
    conversation = new_id("c-")
    stored = await fill(client, conversation, [f"message number {i}" for i in range(9)])

    reader = await chat()
    await reader.send("SUBSCRIBE", conversationId=conversation)
    history = await reader.expect("HISTORY")
    assert history["hasMore"] is True and len(history["messages"]) == PAGE_MESSAGES
    pages, has_more = [history["messages"]], history["hasMore"]
    for _ in range(len(stored)):  # bounded: at least one message per page
        if not has_more:
            break
        await reader.send(
            "LOAD_HISTORY", conversationId=conversation, beforeMessageId=pages[0][0]["messageId"]
        )
        page = await reader.expect("HISTORY_PAGE")
        assert page["beforeMessageId"] == pages[0][0]["messageId"]
        assert 0 < len(page["messages"]) <= PAGE_MESSAGES
        pages.insert(0, page["messages"])
        has_more = page["hasMore"]
    assert not has_more
    texts = [m["text"] for page in pages for m in page]
    assert texts == stored
    assert [m["messageId"] for page in pages for m in page] == [
        m["messageId"] for m in (await rest("conversations", conversation))["messages"]
    ]


async def test_a_reply_longer_than_a_page_is_cut_short_and_resumed(chat):
    client = await chat()
    conversation = new_id("c-")
    long_text = " ".join(f"w{i:03}" for i in range(400))  # 1,600 characters, many frames
    _, frames = await exchange(client, long_text, conversation)
    assert len(frames) > 1

    reader = await chat()
    await reader.send("SUBSCRIBE", conversationId=conversation)
    history = await reader.expect("HISTORY")
    reply = history["messages"][-1]
    assert reply["truncated"] is True and reply["status"] == "complete"
    assert len(reply["text"]) <= PAGE_CHARS and long_text.startswith(reply["text"])
    assert history["hasMore"] is True  # the user message did not fit beside it

    await reader.send("RESUME", messageId=reply["messageId"], afterSeq=reply["lastSeq"])
    rest_frames = await reader.chunks_until_complete(reply["messageId"])
    assert_contiguous(rest_frames, first_seq=reply["lastSeq"] + 1)
    assert reply["text"] + text_of(rest_frames) == long_text


async def test_unknown_page_anchor_is_an_error(chat):
    client = await chat()
    conversation = new_id("c-")
    await fill(client, conversation, ["one"])
    await client.send("LOAD_HISTORY", conversationId=conversation, beforeMessageId="nope")
    error = await client.expect("ERROR")
    assert (error["code"], error["messageId"]) == ("unknown_message", "nope")


async def test_resume_past_the_end_answers_with_the_final_frame(chat):
    client = await chat()
    conversation = new_id("c-")
    accepted, frames = await exchange(client, "short reply", conversation)
    final = frames[-1]
    for after in (final["seq"], final["seq"] + 50):
        await client.send("RESUME", messageId=accepted["messageId"], afterSeq=after)
        again = await client.expect("MESSAGE_CHUNK")
        assert again == final


async def test_the_kernel_follower_holds_the_whole_conversation(
    chat, jp_serverapp, http_server, jp_http_port, jp_base_url
):
    client = await chat()
    conversation = new_id("c-")
    long_text = " ".join(f"w{i:03}" for i in range(200))
    stored = await fill(client, conversation, [f"m{i}" for i in range(7)] + [long_text])

    server = ServerInfo(
        f"http://127.0.0.1:{jp_http_port}{jp_base_url}", jp_serverapp.identity_provider.token
    )
    follower = Conversation(conversation, RemoteTransport(server))
    try:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, follower.wait_synced, HANG_GUARD)
        for _ in range(int(HANG_GUARD / 0.02)):  # older pages and the long reply's rest
            if [m["text"] for m in follower.messages] == stored:
                break
            await asyncio.sleep(0.02)
        assert [m["text"] for m in follower.messages] == stored
        assert all(m["status"] == "complete" for m in follower.messages)
    finally:
        await asyncio.get_running_loop().run_in_executor(None, follower.close)
