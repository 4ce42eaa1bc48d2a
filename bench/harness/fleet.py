"""A light client for many replies at once: a few WebSockets, each sending or following
hundreds of conversations, in one asyncio process.

A hundred Tornado client sockets would cost the client more CPU than the server spends; here
aiohttp (its frame reader is compiled) reads the frames, and one loop per socket sorts them by
reply. Each reply as one socket sees it is a :class:`Track`: its chunks, its seq checked frame
by frame, and for stamped tokens (bench/plugins/paced_tokens.py: `` <index>@<µs>``) each
token's index, stamp and the client's monotonic clock (µs) once the frame was parsed.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid

import aiohttp

from harness.client import CONNECT_TIMEOUT, MAX_FRAME

TOKEN = re.compile(r" (\d+)@(\d+)")  # as bench/plugins/paced_tokens.py stamps them
STAMPED_TEXT = re.compile(r"(?: \d+@\d+)*")


def now_us() -> int:
    return time.monotonic_ns() // 1000


class Track:
    """One reply as one socket sees it."""

    __slots__ = ("message_id", "conversation_id", "seq", "chunks", "status", "arrivals", "error")

    def __init__(self, message_id: str, conversation_id: str):
        self.message_id, self.conversation_id = message_id, conversation_id
        self.seq = 0
        self.chunks: list = []
        self.status: str | None = None
        self.arrivals: list = []  # (token index, stamp µs, arrival µs)
        self.error: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    def problem(self, tokens: int) -> str | None:
        """Why this reply is not ``tokens`` stamped tokens ``0..tokens-1`` in order, complete,
        with contiguous seq; None if it is exact."""
        if self.error:
            return self.error
        if self.status != "complete":
            return f"ended {self.status!r}"
        text = self.text
        if not STAMPED_TEXT.fullmatch(text):
            return "text that is not stamped tokens"
        indices = [int(m.group(1)) for m in TOKEN.finditer(text)]
        if indices != list(range(tokens)):
            return f"{len(indices)} tokens, not 0..{tokens - 1} in order"
        return None


class FleetSocket:
    """One WebSocket; the replies it sends and the conversations it follows."""

    def __init__(self, ws, name: str):
        self.ws, self.name = ws, name
        self.tracks: dict = {}  # message id -> Track
        self.followed: set = set()  # conversation ids whose replies this socket tracks
        self.accepted: dict = {}  # client message id -> message id
        self.histories = 0  # HISTORY frames received
        self.subscribed = 0  # SUBSCRIBEs sent
        self.errors: list = []
        self.frames = 0
        self.expected = 0  # replies to see end
        self.ended = 0
        self.all_ended = asyncio.Event()
        self.reader: asyncio.Task | None = None

    def send(self, type: str, **fields):
        return self.ws.send_str(json.dumps({"type": type, **fields}))

    async def send_message(self, agent: str, text: str, conversation_id: str) -> str:
        client_id = "m-" + uuid.uuid4().hex
        self.followed.add(conversation_id)
        await self.send(
            "SEND_MESSAGE",
            conversationId=conversation_id,
            agentId=agent,
            text=text,
            clientMessageId=client_id,
        )
        return client_id

    async def subscribe(self, conversation_ids) -> None:
        for conversation_id in conversation_ids:
            self.followed.add(conversation_id)
            self.subscribed += 1
            await self.send("SUBSCRIBE", conversationId=conversation_id)

    def expect(self, replies: int) -> None:
        """From now on, ``all_ended`` is set once ``replies`` more replies have ended."""
        self.expected, self.ended = replies, 0
        self.all_ended.clear()
        if replies == 0:
            self.all_ended.set()

    def start(self, max_frames: int) -> None:
        self.reader = asyncio.ensure_future(self._read_all(max_frames))

    def state(self) -> str:
        """What this socket has seen, for an error message."""
        reader = "reading"
        if self.reader is not None and self.reader.done():
            reader = "stopped"
        last = f", last error {self.errors[-1]}" if self.errors else ""
        return (
            f"{self.name}: {self.ended} of {self.expected} replies ended, {self.frames} frames, "
            f"{self.histories} of {self.subscribed} HISTORY, reader {reader}{last}"
        )

    async def _read_all(self, max_frames: int) -> None:
        """Read until the socket closes; a reader that stops for any other reason wakes
        whoever waits for ``all_ended`` (and says why in ``errors``)."""
        try:
            await self._read(max_frames)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.errors.append({"type": "ERROR", "message": f"the client's reader failed: {e!r}"})
        self.all_ended.set()

    async def _read(self, max_frames: int) -> None:
        ws, tracks, followed, token = self.ws, self.tracks, self.followed, TOKEN
        for _ in range(max_frames):  # bounded; the caller bounds the time
            message = await ws.receive()
            if message.type != aiohttp.WSMsgType.TEXT:
                if message.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                ):
                    self.errors.append(
                        {"type": "ERROR", "message": f"the socket closed ({message.type.name})"}
                    )
                    return
                continue
            at = now_us()
            frame = json.loads(message.data)
            self.frames += 1
            kind = frame["type"]
            if kind == "MESSAGE_CHUNK":
                message_id = frame["messageId"]
                track = tracks.get(message_id)
                if track is None:
                    if frame["conversationId"] not in followed:
                        continue
                    track = tracks[message_id] = Track(message_id, frame["conversationId"])
                if frame["seq"] != track.seq + 1 and track.error is None:
                    track.error = f"seq {frame['seq']} where {track.seq + 1} was due"
                track.seq = frame["seq"]
                chunk = frame["chunk"]
                if chunk:
                    track.chunks.append(chunk)
                    track.arrivals.extend(
                        (int(m.group(1)), int(m.group(2)), at) for m in token.finditer(chunk)
                    )
                if frame["isComplete"]:
                    track.status = frame.get("status")
                    self.ended += 1
                    if self.ended >= self.expected:
                        self.all_ended.set()
            elif kind == "MESSAGE_ACCEPTED":
                self.accepted[frame.get("clientMessageId")] = frame["messageId"]
            elif kind == "HISTORY":
                self.histories += 1
            elif kind == "ERROR":
                self.errors.append(frame)
        self.errors.append({"type": "ERROR", "message": f"over {max_frames} frames"})

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        await self.ws.close()


class Fleet:
    """aiohttp WebSockets to chat servers; ``async with Fleet() as fleet``."""

    def __init__(self):
        self.session: aiohttp.ClientSession | None = None
        self.sockets: list = []

    async def __aenter__(self) -> "Fleet":
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True)
        )
        return self

    async def __aexit__(self, *exc) -> None:
        for socket in self.sockets:
            try:
                await asyncio.wait_for(socket.close(), 5)
            except (asyncio.TimeoutError, aiohttp.ClientError, OSError):
                pass
        await self.session.close()

    async def open(self, url: str, token: str, name: str, max_frames: int) -> FleetSocket:
        """A socket to ``url``, its reader started (at most ``max_frames`` frames)."""
        ws = await self.session.ws_connect(
            url,
            headers={"Authorization": f"token {token}"},
            max_msg_size=MAX_FRAME,
            compress=0,
            autoping=True,
            timeout=aiohttp.ClientWSTimeout(ws_close=5),
            receive_timeout=None,
        )
        socket = FleetSocket(ws, name)
        socket.start(max_frames)
        self.sockets.append(socket)
        return socket


async def wait_histories(sockets, seconds: float = CONNECT_TIMEOUT) -> None:
    """Until every socket holds a HISTORY for each conversation it follows (its SUBSCRIBEs
    are answered), at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while any(s.histories < s.subscribed for s in sockets):
        if time.monotonic() > deadline:
            late = [s.name for s in sockets if s.histories < s.subscribed]
            raise RuntimeError(f"SUBSCRIBE not answered in {seconds:.0f} s on {late}")
        await asyncio.sleep(0.05)
