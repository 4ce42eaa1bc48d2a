"""One reply being generated: runs the agent, batches its tokens, stores them, fans them out.

Two tasks per reply. The producer iterates the agent and appends each token to a list; it
never waits on anything but the agent. The flusher turns what has accumulated into one frame:
it assigns the next ``seq``, commits the frame to the store, and only then sends it, so no
client ever holds text the store lacks. While a commit is in flight tokens keep accumulating,
and frames are at most one per ``batch_window`` (the first token goes out at once).

A stop (or a shutdown) cancels the producer and wakes the flusher, which writes the final
frame with what was produced so far.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Optional

from .protocol import COMPLETE, ERROR, ChunkFrames
from .store import Append, StoreError

if TYPE_CHECKING:
    from .agents import Agent, AgentRequest
    from .hub import Hub
    from .store import Exchange

# A final frame is worth waiting for: a locked database often frees up within seconds.
FINAL_ATTEMPTS = 5
RETRY_DELAY = 0.5

# Tokens merged into one frame stop at this many characters, so a fast agent's burst
# becomes several frames of a sane size rather than one huge one.
MAX_CHUNK_CHARS = 16 * 1024


def _merge(pieces: list) -> list:
    """Join consecutive pieces into chunks of at most MAX_CHUNK_CHARS (a bigger piece stays whole)."""
    chunks, current, size = [], [], 0
    for piece in pieces:
        if current and size + len(piece) > MAX_CHUNK_CHARS:
            chunks.append("".join(current))
            current, size = [], 0
        current.append(piece)
        size += len(piece)
    chunks.append("".join(current))
    return chunks


class Reply:
    def __init__(self, hub: "Hub", exchange: "Exchange", agent: "Agent", request: "AgentRequest"):
        self.hub = hub
        self.message_id = exchange.message_id
        self.conversation_id = exchange.conversation_id
        self.agent = agent
        self.request = request
        self.frames = ChunkFrames(self.message_id, self.conversation_id, exchange.agent_id)
        self.watchers: set = set()  # subscribers following this reply by id
        self.seq = 0  # last committed seq
        self._parts: list = []  # committed chunks
        self._pending: list = []  # produced, not yet committed
        self._ending: Optional[tuple] = None  # (status, error) once the reply is to end
        self._data = asyncio.Event()
        self._end = asyncio.Event()
        self._producer: Optional[asyncio.Task] = None
        self._flusher: Optional[asyncio.Task] = None

    def start(self) -> None:
        self._producer = asyncio.create_task(self._produce(), name=f"agent {self.message_id}")
        self._flusher = asyncio.create_task(self._flush_loop(), name=f"flush {self.message_id}")

    async def wait(self) -> None:
        """Until the final frame has been stored and sent."""
        if self._flusher is not None:
            await asyncio.shield(self._flusher)

    def end(self, status: str, error: Optional[str] = None) -> None:
        """End the reply now with ``status`` (stopped, interrupted); keeps what was produced."""
        self._finish(status, error)
        if self._producer is not None:
            self._producer.cancel()

    def _finish(self, status: str, error: Optional[str] = None) -> None:
        if self._ending is None:
            self._ending = (status, error)
            self._end.set()
            self._data.set()

    async def _produce(self) -> None:
        pending, wake = self._pending, self._data
        stream = self.agent.stream(self.request)
        try:
            async for piece in stream:
                if self._ending is not None:
                    break  # an agent that swallowed its cancellation
                if not isinstance(piece, str):
                    raise TypeError(f"agent yielded {type(piece).__name__}, expected str")
                if piece:
                    pending.append(piece)
                    wake.set()
            self._finish(COMPLETE)
        except asyncio.CancelledError:
            pass  # end() already recorded why
        except Exception as e:
            self.hub.log.warning("streamchat: agent %r failed on reply %s: %s",
                                 self.agent.agent_id, self.message_id, e, exc_info=True)
            self._finish(ERROR, f"{type(e).__name__}: {e}")
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:  # run the agent's own cleanup now, not at garbage collection
                try:
                    await aclose()
                except Exception:
                    self.hub.log.warning("streamchat: agent %r failed to close", self.agent.agent_id)

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_flush = -math.inf
        try:
            while True:
                await self._data.wait()
                self._data.clear()
                if self._ending is None:
                    wait = last_flush + self.hub.batch_window - loop.time()
                    if wait > 0:  # merge what arrives within the window into this frame
                        try:
                            await asyncio.wait_for(self._end.wait(), wait)
                        except asyncio.TimeoutError:
                            pass
                ending = self._ending
                if not self._pending and ending is None:
                    continue
                chunks = _merge(self._pending)
                self._pending.clear()
                await self._commit(chunks, ending)
                last_flush = loop.time()
                if ending is not None:
                    return
        finally:
            self.hub.reply_finished(self)

    async def _commit(self, chunks: list, ending: Optional[tuple]) -> None:
        first = self.seq + 1
        if ending is None:
            append = Append(self.message_id, first, chunks)
        else:
            status, error = ending
            whole = "".join(self._parts) + "".join(chunks)
            append = Append(self.message_id, first, chunks, status, error, whole)
        try:
            await self._store(append)
        except StoreError as e:
            if ending is None:
                # Cannot keep what the agent says: stop it, and end with what was stored.
                self.hub.log.error("streamchat: reply %s: %s", self.message_id, e)
                self._pending[:0] = chunks
                self.end(ERROR, f"the reply could not be stored: {e}")
                return
            # Even the final frame cannot be stored: tell the clients anyway so none waits
            # forever. The store keeps the reply as streaming; the next start marks it
            # interrupted with its stored text.
            self.hub.log.error("streamchat: reply %s ended unstored: %s", self.message_id, e)
            if ending[0] != ERROR:
                ending = (ERROR, f"the reply could not be stored: {e}")
        self.seq = first + len(chunks) - 1
        self._parts.extend(chunks)
        for seq, chunk in enumerate(chunks, first):
            if ending is not None and seq == self.seq:
                frame = self.frames.final(seq, chunk, *ending)
            else:
                frame = self.frames.chunk(seq, chunk)
            self.hub.broadcast(self, seq, frame)

    async def _store(self, append: Append) -> None:
        attempts = 1 if append.status is None else FINAL_ATTEMPTS
        for attempt in range(1, attempts + 1):
            try:
                return await self.hub.store.append(append)
            except StoreError:
                if attempt == attempts:
                    raise
                await asyncio.sleep(RETRY_DELAY)
