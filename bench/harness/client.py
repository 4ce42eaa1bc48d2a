"""WebSocket clients of the chat protocol (docs/protocol.md), as the benches drive it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

CONNECT_TIMEOUT = 30.0  # seconds; a hundred sockets opened at once on a busy machine take a while
MAX_FRAME = 64 * 1024 * 1024  # what a client accepts in one frame


async def connect(url: str, token: str | None = None, max_frame: int = MAX_FRAME):
    """A WebSocket to ``url``, authenticated with ``token`` if given.

    Small frames leave at once: with Nagle's algorithm a frame written while the one before is
    unacknowledged waits for the server's delayed ACK (some 40 ms). Browsers send so too."""
    headers = {"Authorization": f"token {token}"} if token else {}
    request = HTTPRequest(
        url, headers=headers, connect_timeout=CONNECT_TIMEOUT, request_timeout=CONNECT_TIMEOUT
    )
    ws = await asyncio.wait_for(
        websocket_connect(request, max_message_size=max_frame), CONNECT_TIMEOUT + 5
    )
    ws.stream.set_nodelay(True)
    return ws


def send(ws, type: str, **fields):
    return ws.write_message(json.dumps({"type": type, **fields}))


def send_message(ws, agent: str, text: str, conversation_id: str | None = None):
    """SEND_MESSAGE to ``agent``, in a new conversation unless ``conversation_id`` is given."""
    return send(
        ws,
        "SEND_MESSAGE",
        conversationId=conversation_id or "c-" + uuid.uuid4().hex,
        agentId=agent,
        text=text,
        clientMessageId="m-" + uuid.uuid4().hex,
    )


async def next_frame(ws) -> tuple:
    """The next frame, and its size in characters."""
    raw = await ws.read_message()
    if raw is None:
        raise RuntimeError(f"the server closed the WebSocket ({ws.close_code} {ws.close_reason})")
    return json.loads(raw), len(raw)


async def frame_of(
    ws, kinds: tuple, conversation_id: str | None = None, max_frames: int = 10_000
) -> tuple:
    """Skip frames until one of ``kinds`` (for ``conversation_id``, if given) or an ERROR;
    -> (that frame, its size)."""
    for _ in range(max_frames):
        frame, size = await next_frame(ws)
        if frame["type"] == "ERROR":
            return frame, size
        if frame["type"] in kinds and conversation_id in (None, frame.get("conversationId")):
            return frame, size
    raise RuntimeError(f"no {'/'.join(kinds)} within {max_frames} frames")


@dataclass
class Reply:
    message_id: str | None = None
    text: str = ""
    status: str = ""
    frames: int = 0  # MESSAGE_CHUNK frames, the final one included
    first_text_at: float | None = None  # perf_counter() at the first frame with text
    done_at: float = 0.0  # perf_counter() at the final frame
    error: str | None = None


async def read_reply(
    ws, message_id: str | None = None, max_frames: int = 1_000_000, on_text=None
) -> Reply:
    """Read one reply up to its final frame, checking seq order: the reply MESSAGE_ACCEPTED
    names, or ``message_id`` (a RESUME has no MESSAGE_ACCEPTED). ``on_text(chunk)`` is called
    for every chunk with text as it arrives. Bounded by ``max_frames``; the caller bounds the
    time (one timeout per reply, not per frame: cheaper)."""
    reply, chunks, seq = Reply(message_id), [], 0
    for _ in range(max_frames):
        frame, _ = await next_frame(ws)
        received = time.perf_counter()
        kind = frame.get("type")
        if kind == "MESSAGE_ACCEPTED" and reply.message_id is None:
            reply.message_id = frame["messageId"]
        elif kind == "ERROR":
            raise RuntimeError(f"server error: {frame}")
        elif kind == "MESSAGE_CHUNK" and frame["messageId"] == reply.message_id:
            seq += 1
            if frame["seq"] != seq:
                raise RuntimeError(f"seq {frame['seq']} where {seq} was due")
            chunk = frame["chunk"]
            if chunk:
                if reply.first_text_at is None:
                    reply.first_text_at = received
                if on_text is not None:
                    on_text(chunk)
                chunks.append(chunk)
            if frame["isComplete"]:
                reply.text, reply.status, reply.frames = "".join(chunks), frame["status"], seq
                reply.error, reply.done_at = frame.get("error"), received
                return reply
    raise RuntimeError(f"no final frame within {max_frames} frames")
