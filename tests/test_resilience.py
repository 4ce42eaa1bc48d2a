"""Streams that survive dropped sockets and clients that stop reading."""

import asyncio
import random
import pytest

from helpers import (
    HANG_GUARD,
    RawWebSocket,
    assert_contiguous,
    new_id,
    streamchat_config,
    text_of,
)


@pytest.fixture
def jp_server_config():
    return streamchat_config(
        EchoAgent={"delay": 0.003},
        FloodAgent={"count": 640, "size": 16 * 1024},
        StreamChatApp={"client_buffer_bytes": 256 * 1024},
    )


def drop(client, abrupt: bool) -> None:
    if abrupt:  # the network goes away: no close frame, the TCP connection just ends
        client.ws.protocol.stream.close()
    else:
        client.close()


async def test_drop_storm_fifty_resumes(chat):
    """One long reply; the client drops and resumes 50 times at random points."""
    rng = random.Random(20261121)
    text = "".join(f"w{i}{rng.choice([' ', '  ', chr(10)])}" for i in range(3000))
    client = await chat()
    await client.send_message(text)
    mid = (await client.expect("MESSAGE_ACCEPTED"))["messageId"]
    frames = []
    for round_ in range(50):
        for _ in range(rng.randint(0, 6)):  # 0: drop right after (re)connecting
            frame = await client.recv()
            if frame["type"] == "MESSAGE_CHUNK":
                frames.append(frame)
        if frames and frames[-1]["isComplete"]:
            break
        drop(client, abrupt=round_ % 2 == 0)
        await asyncio.sleep(rng.random() * 0.02)
        client = await chat()
        await client.send("RESUME", messageId=mid, afterSeq=frames[-1]["seq"] if frames else 0)
    else:
        frames += await client.chunks_until_complete(mid)
    assert round_ == 49, "the reply ended before 50 drops; make it longer"
    assert_contiguous(frames)
    assert text_of(frames) == text  # byte-equal, no gap, no duplicate
    assert frames[-1]["status"] == "complete"


async def test_resume_races_live_frames(chat):
    """RESUME while the reply streams fast: replay and live meet with no gap or duplicate."""
    text = " ".join(f"t{i}" for i in range(2000))
    sender = await chat()
    await sender.send_message(text)
    mid = (await sender.expect("MESSAGE_ACCEPTED"))["messageId"]
    resumers = []
    for after in (0, 1, 2, 5):
        client = await chat()
        await client.send("RESUME", messageId=mid, afterSeq=after)
        resumers.append((after, client))
        await asyncio.sleep(0.05)
    full = await sender.chunks_until_complete(mid)
    for after, client in resumers:
        frames = await client.chunks_until_complete(mid)
        assert_contiguous(frames, first_seq=after + 1)
        assert frames == full[after:]


async def test_slow_client_holds_up_nobody_and_catches_up(
    chat, streamchat_app, jp_serverapp, jp_http_port, jp_base_url, jp_auth_header
):
    conversation = new_id("c-")
    watcher = await chat()
    await watcher.send("SUBSCRIBE", conversationId=conversation)
    await watcher.expect("HISTORY")

    # A client that sends, then stops reading: its receive window fills and stays full.
    loop = asyncio.get_running_loop()  # the server shares this loop: block only in threads
    stuck = await loop.run_in_executor(
        None,
        lambda: RawWebSocket(
            "127.0.0.1", jp_http_port, f"{jp_base_url}streamchat/ws", jp_auth_header
        ),
    )
    stuck.send(
        {
            "type": "SEND_MESSAGE",
            "conversationId": conversation,
            "agentId": "flood",
            "text": "flood me",
            "clientMessageId": new_id("m-"),
        }
    )
    mid = (await watcher.expect("MESSAGE_ACCEPTED"))["messageId"]

    # The agent and the other client go on at full speed.
    frames = await watcher.chunks_until_complete(mid)
    assert_contiguous(frames)
    total = len(text_of(frames))
    assert total == 640 * 16 * 1024  # 10 MiB: more than the kernel buffers hold

    # What waits unsent for the stuck client stays bounded (limit + one frame).
    limit = streamchat_app.client_buffer_bytes
    buffered = max(s.buffered for s in streamchat_app.hub.fanout.clients)
    assert limit // 2 < buffered <= limit + 20 * 1024, buffered  # stuck, and bounded
    stuck_subscriber = max(streamchat_app.hub.fanout.clients, key=lambda s: s.buffered)
    assert mid in stuck_subscriber.lagging  # its live frames were dropped

    # Once it reads again it gets every frame of the reply exactly once, in order.
    stuck.sock.settimeout(HANG_GUARD)
    got = []
    while not (got and got[-1]["isComplete"]):
        frame = await loop.run_in_executor(None, stuck.recv)
        if frame["type"] == "MESSAGE_CHUNK":
            got.append(frame)
    stuck.close()
    assert_contiguous(got)
    assert got == frames
