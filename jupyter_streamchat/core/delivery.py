"""One client of the hub (a WebSocket, or an in-process listener) and what it has been sent.

Every MESSAGE_CHUNK reaches a client through :meth:`Subscriber.deliver_chunk`, which keeps, per
reply, the highest ``seq`` the client holds. That one number is what makes replay and live
frames meet with no gap and no duplicate: a frame at or below it is dropped, a frame above
it + 1 means the client fell behind and is caught up from the store.

Requests that answer from the store (SUBSCRIBE, LOAD_HISTORY, RESUME, and catching up) run one
at a time per client, inside :meth:`Subscriber.snapshot`: while one reads, live frames are held
and released after its answer, filtered by the same numbers. So a HISTORY always comes before
the live frames of its conversation, and a replay never overtakes another's answer.

A client that does not read (slow network, closed laptop) must not hold up anything nor grow
the server's memory: once more than ``max_buffer`` characters wait unsent in its socket, its
live chunks are dropped (the hub replays them from the store when the socket drains to half of
that), and any other frame that would go past the budget closes the socket with code 1008.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Callable, Optional, Protocol

# WebSocket close code 1008, "policy violation": the client did not read what it was sent.
CLOSE_NOT_READING = 1008


class Transport(Protocol):
    def write_frames(self, frames: list) -> Optional[object]:
        """Send JSON texts, one WebSocket message each. May return a future that resolves when
        the bytes have left for the network (used to bound what waits unsent)."""

    def close(self, code: Optional[int] = None, reason: Optional[str] = None) -> None: ...


CatchUp = Callable[["Subscriber", str, int], None]


class Subscriber:
    """One client's state, written only here: what it follows (the fan-out keeps the reverse
    index, through the methods below) and what it holds. ``catch_up(subscriber, reply id,
    held seq)`` is the hub's way to fill a gap from the store. ``user``: whose conversations
    it may see, and whose its conversation ids are."""

    def __init__(
        self,
        transport: Transport,
        catch_up: CatchUp,
        max_buffer: int = 4 * 1024 * 1024,
        user: str = "",
    ):
        self.transport = transport
        self.user = user
        self.max_buffer = max_buffer
        self.closed = False
        self.conversations: set = set()  # conversation ids it follows (SUBSCRIBE)
        self.replies: dict = {}  # reply id -> its conversation id: followed (SEND_MESSAGE, RESUME)
        self.sent: dict = {}  # reply id -> highest seq the client holds
        self.lagging: set = set()  # reply ids whose live frames were dropped
        self.catch_up = catch_up
        self._buffered = 0  # characters written but not yet flushed to the network
        self._holds = 0
        self._held: list = []
        self._order: Optional[asyncio.Lock] = None

    # -- what it follows and holds ------------------------------------------------------

    def follow(self, conversation_id: str) -> None:
        self.conversations.add(conversation_id)

    def follow_reply(self, message_id: str, conversation_id: str) -> None:
        self.replies[message_id] = conversation_id

    def unfollow(self, conversation_id: str) -> list:
        """Stop following a conversation and the replies of it that it followed; returns those
        replies' ids."""
        self.conversations.discard(conversation_id)
        dropped = [m for m, of in self.replies.items() if of == conversation_id]
        for message_id in dropped:
            del self.replies[message_id]
            self.lagging.discard(message_id)
        return dropped

    def reply_ended(self, message_id: str) -> None:
        self.replies.pop(message_id, None)

    def detach(self) -> None:
        """Gone from the hub: nothing more is written to it."""
        self.closed = True

    def holds(self, message_id: str, seq: int) -> None:
        """The client has the reply's frames up to ``seq`` (in a HISTORY it was sent)."""
        self.sent[message_id] = max(self.sent.get(message_id, 0), seq)

    @contextlib.contextmanager
    def replaying(self, message_id: str, after_seq: int):
        """The client asked for the frames after ``after_seq``: live frames are filtered by that
        from now on. If the replay fails, what was held before is restored, so a made-up id
        leaves nothing behind."""
        before = self.sent.get(message_id)
        self.sent[message_id] = after_seq
        try:
            yield
        except BaseException:
            if before is None:
                self.sent.pop(message_id, None)
            else:
                self.sent[message_id] = before
            raise

    def held(self, message_id: str) -> int:
        return self.sent.get(message_id, 0)

    # -- writing ---------------------------------------------------------------------------

    def _write(self, frames: list, size: Optional[int] = None) -> None:
        """Write ``frames`` (``size``: their characters, when known already)."""
        if self.closed:
            return
        try:
            future = self.transport.write_frames(frames)
        except Exception:  # the socket closed under us; the handler's on_close cleans up
            self.closed = True
            return
        if future is not None:
            if size is None:
                size = sum(map(len, frames))
            self._buffered += size
            future.add_done_callback(lambda f, size=size: self._flushed(size, f))

    def _flushed(self, size: int, future=None) -> None:
        if future is not None and not future.cancelled() and future.exception() is not None:
            # The connection went away; on_close says so once. (Retrieving the exception
            # also keeps asyncio from logging it for every frame that was in flight.)
            self.closed = True
        self._buffered -= size
        if self.lagging and self._buffered <= self.max_buffer // 2 and not self.closed:
            lagging, self.lagging = self.lagging, set()
            for message_id in lagging:
                self.catch_up(self, message_id, self.sent.get(message_id, 0))

    @property
    def buffered(self) -> int:
        return self._buffered

    def send(self, frame: str) -> None:
        """A frame that is not a reply chunk (ACCEPTED, HISTORY, ERROR): sent in order, or,
        past the client's budget, the connection is closed."""
        if self._holds:
            self._held.append((None, 0, frame))
            return
        self.answer(frame)

    def answer(self, frame: str) -> None:
        """The answer of the request served inside :meth:`snapshot` (a HISTORY): written now,
        ahead of the live frames held meanwhile, which it may already contain."""
        if self._buffered and self._buffered + len(frame) > self.max_buffer:
            self.close(
                CLOSE_NOT_READING,
                "the client did not read its frames; reconnect to catch up from the store",
            )
            return
        self._write([frame])

    def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self.transport.close(code, reason)

    def deliver_chunk(self, message_id: str, seq: int, frame: str) -> None:
        if self._holds:
            self._held.append((message_id, seq, frame))
            return
        last = self.sent.get(message_id, 0)
        if seq <= last:
            return  # the client has it already (replayed, or in its HISTORY)
        if seq > last + 1 or message_id in self.lagging or self._buffered > self.max_buffer:
            # Behind: drop live frames; the store fills the gap once the socket drains.
            self.lagging.add(message_id)
            if self._buffered <= self.max_buffer // 2:
                self._flushed(0)
            return
        self.sent[message_id] = seq
        self._write([frame])

    def deliver_replay(self, message_id: str, first_seq: int, frames: list) -> None:
        """Stored frames ``first_seq, first_seq + 1, ...`` in one write (call inside
        :meth:`snapshot`). Only as many as fit in the client's buffer go now; the rest follow
        as it drains."""
        room, size = self.max_buffer - self._buffered, sum(map(len, frames))
        if size <= room:  # all of them (nearly always): no step per frame
            count = len(frames)
        else:
            size, count = 0, 0
            for frame in frames:
                # A frame bigger than the whole budget still goes, but only into an empty
                # buffer: catch-ups queued while the socket drained must not each push one
                # more frame.
                if size + len(frame) > room and (count or self._buffered):
                    self.lagging.add(message_id)
                    break
                size += len(frame)
                count += 1
            frames = frames[:count]
        if count:
            self.sent[message_id] = first_seq + count - 1
            self._write(frames, size)

    # -- answering from the store, one request at a time ---------------------------------

    @contextlib.asynccontextmanager
    async def snapshot(self):
        """Run a store read and its answer with live frames held, after earlier ones."""
        if self._order is None:
            self._order = asyncio.Lock()
        async with self._order:
            self._holds += 1
            try:
                yield
            finally:
                self._release()

    def _release(self) -> None:
        self._holds -= 1
        if self._holds:
            return
        held, self._held = self._held, []
        for message_id, seq, frame in held:
            if message_id is None:
                self.send(frame)
            else:
                self.deliver_chunk(message_id, seq, frame)
