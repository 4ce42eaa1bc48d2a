"""One reply being generated: runs the agent, batches its tokens, stores them, publishes them.

Two tasks per reply. The producer iterates the agent and appends each token to a list; it
never waits on anything but the agent. The flusher turns what has accumulated into frames:
it assigns the next ``seq``s, commits them to the store, and only then publishes them, so no
client ever holds text the store lacks. While a commit is in flight tokens keep accumulating,
and frames are at most one per window of the hub's :class:`FlushClock` (the first token goes
out at once).

A stop (or a shutdown) cancels the producer and wakes the flusher, which writes the final
frame with what was produced so far.

Tool calls travel in the frames beside the text: a state the agent yields (or the hub sets
while the call waits for the user's approval) goes into the frame that ends with the text
produced before it, so replaying the frames gives text and calls in the order they happened.
The reply keeps each call's latest state, stamped with when it started and ended and what the
user decided, and stores that list with the message; a call that has not finished when the
reply ends is ended ``failed`` in the final frame.

When the store refuses writes (disk full, database locked or gone), a commit is retried for
``retry_seconds``; then the agent is stopped, what was not committed is dropped, and the reply
ends ``error`` with an empty final frame, so the text every client holds is exactly the stored
text. If even that final frame cannot be stored, it is published all the same (no client waits
forever) and handed to ``on_end`` as unstored, for the hub to keep answering for and to store
later. A reply whose lease was lost (another process ended it) stops writing and publishes
what the store says instead.

The reply knows nothing of the hub: it gets the store, a ``publish`` function and an ``on_end``
callback.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import replace
from itertools import groupby
from typing import TYPE_CHECKING, Callable, Optional

from .. import redact
from ..agents import AgentError, ApprovalTimeout, Reasoning, ToolCall, Usage
from ..agents.base import ALLOW_ALWAYS, COMPLETED, FAILED, REJECT, RUNNING, WAITING
from ..protocol import COMPLETE, ERROR, INTERRUPTED, ChunkFrames, tool_call_wire
from ..store import EVERY_USER, Append, LeaseLost, StoreError
from ..store.toolcalls import end_unfinished
from .bus import Published, ReplyFrame
from .pacing import FlushClock

if TYPE_CHECKING:
    from ..agents import Agent, AgentRequest
    from ..store import Exchange, Store
    from .approvals import Approvals

# No frame's chunk (or thinking text) is longer than this many characters: tokens merged into
# one frame stop here, and a longer piece from an agent is split across frames. So a fast
# agent's burst, or one huge delta from a model server, becomes frames of a sane size.
MAX_CHUNK_CHARS = 16 * 1024

# Longest an agent may keep the event loop to itself while it has tokens ready.
MAX_HOLD_SECONDS = 0.002

# A commit in flight for longer than this is waited for by an agent that has tokens ready (see
# Reply._let_store_in): during a burst the client then still sees the reply grow some ten times
# a second, and other replies' commits, which share the writer, are not held up for longer.
MAX_COMMIT_LAG_SECONDS = 0.1

# Text produced but not yet committed stops the agent at this many characters until the
# store has caught up: nothing can be shown faster than it is stored anyway, and a reply's
# memory then stays near this much (at most 4 bytes a character) instead of near the size of
# the reply.
MAX_PENDING_CHARS = 256 * 1024

# Most tool calls one reply may make: an agent in a loop ends with an error, not a store full of
# calls.
MAX_TOOL_CALLS = 10_000


def _merge(pieces: list) -> list:
    """Join consecutive pieces into chunks of at most MAX_CHUNK_CHARS; a longer piece is cut."""
    chunks, current, size = [], [], 0
    for piece in pieces:
        while size + len(piece) > MAX_CHUNK_CHARS:
            room = MAX_CHUNK_CHARS - size
            current.append(piece[:room])
            chunks.append(_valid("".join(current)))
            current, size, piece = [], 0, piece[room:]
        if piece:
            current.append(piece)
            size += len(piece)
    if current or not chunks:
        chunks.append(_valid("".join(current)))
    return chunks


def _frames(answer: list, reasoning: list, marks: list) -> tuple:
    """What accumulated, as frames: answer chunks and, beside them, thinking chunks (the two
    are separate texts, so pairing them frame by frame loses nothing) and tool-call states.

    ``marks`` are ``(position, state)``: the state came after ``answer[:position]``. So the
    frame that ends with that text carries it, and the text after it goes into later frames.
    Returns ``(chunks, thoughts, tools)``; ``tools`` is None when there were no marks.
    """
    if not marks:
        chunks = _merge(answer) if answer else [""]
        tools = None
    else:
        chunks, tools, start = [], [], 0
        for position, group in groupby(marks, key=lambda mark: mark[0]):
            segment = _merge(answer[start:position])
            chunks += segment
            tools += [None] * (len(segment) - 1) + [_latest(state for _, state in group)]
            start = position
        if start < len(answer):
            rest = _merge(answer[start:])
            chunks += rest
            tools += [None] * len(rest)
    thoughts = _merge(reasoning) if reasoning else []
    count = max(len(chunks), len(thoughts))
    chunks += [""] * (count - len(chunks))
    thoughts += [""] * (count - len(thoughts))
    if tools is not None:
        tools += [None] * (count - len(tools))
    return chunks, thoughts, tools


def _latest(states) -> list:
    """The states of one frame, the latest of each call only, in first-appearance order."""
    latest: dict = {}
    for state in states:
        latest[state["id"]] = state
    return list(latest.values())


# Longest error message a reply ends with (an agent's exception may carry a whole document).
MAX_ERROR_CHARS = 2000


def _said(error: str) -> str:
    """An agent's error as the user may see it: no secret in it, at most MAX_ERROR_CHARS."""
    return _valid(redact.cut(error, MAX_ERROR_CHARS))


def _valid(text: str) -> str:
    """Agent text as UTF-8 can carry it: a lone surrogate would fail the store and the socket."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def _settle(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class AgentInterrupted(Exception):
    """Raised by an agent whose producer went away mid-reply (the kernel running a notebook
    agent died or restarted): the reply ends ``interrupted``, keeping what was produced."""


class Reply:
    def __init__(
        self,
        exchange: "Exchange",
        agent: "Agent",
        request: "AgentRequest",
        store: "Store",
        publish: Callable[[Published], None],
        on_end: Callable[["Reply", Optional[tuple]], None],
        clock: Optional[FlushClock] = None,
        retry_seconds: float = 5.0,
        log: Optional[logging.Logger] = None,
        approvals: Optional["Approvals"] = None,
        approval_timeout: float = 600.0,
    ):
        self.message_id = exchange.message_id
        self.conversation_id = exchange.conversation_id
        self.user = exchange.user  # whose conversation: its frames reach that user's clients
        self.agent = agent
        self.request = request
        self.store = store
        self.publish = publish
        self.on_end = on_end
        # One reply alone: frames 16 ms apart, the first at once.
        self.clock = clock or FlushClock(0.016, 0.016, lambda: 1)
        self.retry_seconds = retry_seconds
        self.log = log or logging.getLogger("jupyter_streamchat")
        self.frames = ChunkFrames(self.message_id, self.conversation_id, exchange.agent_id)
        self.seq = 0  # last committed seq
        self._pending: list = []  # answer text produced, not yet committed
        self._thinking: list = []  # reasoning text produced, not yet committed
        self._pending_chars = 0
        self._marks: list = []  # (position in _pending, tool-call state) not yet committed
        self._calls: dict = {}  # tool call id -> its latest state (wire dict)
        self._call_times: dict = {}  # tool call id -> (started, ended) epoch seconds
        self._decisions: dict = {}  # tool call id -> what the user answered
        self.approvals = approvals
        self.approval_timeout = approval_timeout
        request.approve = self._approve
        self._usage: dict = {}  # what the agent reported, then the hub's timings
        self._started = 0.0
        self._first_token: Optional[float] = None
        self._room = asyncio.Event()  # set while the producer may add to _pending
        self._room.set()
        self._ending: Optional[tuple] = None  # (status, error) once the reply is to end
        self._unstorable: Optional[str] = None  # why commits failed, once they have
        self._data = asyncio.Event()
        self._stored = asyncio.Event()  # clear while a commit is in flight
        self._stored.set()
        self._commit_started = 0.0
        self._window: Optional[asyncio.Future] = None  # the flusher's wait for its window
        self._producer: Optional[asyncio.Task] = None
        self._flusher: Optional[asyncio.Task] = None

    def start(self) -> None:
        self._started = asyncio.get_running_loop().time()
        self._producer = asyncio.create_task(self._produce(), name=f"agent {self.message_id}")
        self._flusher = asyncio.create_task(self._flush_loop(), name=f"flush {self.message_id}")

    async def wait(self) -> None:
        """Until the final frame has been published."""
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
            if self._window is not None and not self._window.done():
                self._window.set_result(None)  # the end is flushed at once
            self._data.set()

    async def _produce(self) -> None:
        wake, loop = self._data, asyncio.get_running_loop()
        yielded = -math.inf  # the first token is let out at once
        stream = self.agent.stream(self.request)
        try:
            async for piece in stream:
                if self._ending is not None:
                    break  # an agent that swallowed its cancellation
                if isinstance(piece, str):
                    text, into = piece, self._pending
                elif isinstance(piece, Reasoning):
                    text, into = piece.text, self._thinking
                elif isinstance(piece, Usage):
                    self._usage.update((k, v) for k, v in vars(piece).items() if v is not None)
                    continue
                elif isinstance(piece, ToolCall):
                    if piece.status == WAITING:
                        raise TypeError("an agent asks for approval with request.approve(call)")
                    self._tool(piece)
                    continue
                else:
                    raise TypeError(
                        f"agent yielded {type(piece).__name__}, expected str, Reasoning, "
                        "Usage or ToolCall"
                    )
                if text:
                    if self._first_token is None:
                        self._first_token = loop.time()
                    into.append(text)
                    wake.set()
                    self._pending_chars += len(text)
                    now = loop.time()
                    if now - yielded > MAX_HOLD_SECONDS:
                        # A fast agent whose tokens are already buffered (a model's stream
                        # read in one big TCP read) may not wait on anything for a long while:
                        # let the flusher, the store's answers and other clients in.
                        await self._let_store_in(now)
                        yielded = loop.time()
                    if self._pending_chars > MAX_PENDING_CHARS:
                        self._room.clear()
                        await self._room.wait()  # until the flusher took it
            self._finish(COMPLETE)
        except asyncio.CancelledError:
            pass  # end() already recorded why
        except AgentInterrupted as e:
            self.log.info("streamchat: reply %s interrupted: %s", self.message_id, e)
            self._finish(INTERRUPTED)
        except AgentError as e:
            self.log.info(
                "streamchat: agent %r ended reply %s with an error: %s",
                self.agent.agent_id,
                self.message_id,
                e,
            )
            self._finish(ERROR, _said(str(e) or type(e).__name__))
        except Exception as e:
            self.log.warning(
                "streamchat: agent %r failed on reply %s: %s",
                self.agent.agent_id,
                self.message_id,
                e,
                exc_info=True,
            )
            self._finish(ERROR, _said(f"{type(e).__name__}: {e}"))
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:  # run the agent's own cleanup now, not at garbage collection
                try:
                    await aclose()
                except Exception:
                    self.log.warning("streamchat: agent %r failed to close", self.agent.agent_id)

    def _tool(self, call: ToolCall, decision: Optional[str] = None) -> None:
        """Record a tool call's new state for the next frame."""
        if call.id not in self._calls and len(self._calls) >= MAX_TOOL_CALLS:
            raise AgentError(f"the agent made more than {MAX_TOOL_CALLS} tool calls in one reply")
        if decision is not None:
            self._decisions[call.id] = decision
        now = time.time()
        started, ended = self._call_times.get(call.id, (now, None))
        if call.status in (COMPLETED, FAILED) and ended is None:
            ended = now
        self._call_times[call.id] = (started, ended)
        state = tool_call_wire(call, self._decisions.get(call.id), started, ended)
        self._calls[call.id] = state
        self._marks.append((len(self._pending), state))
        if self._first_token is None:
            self._first_token = asyncio.get_running_loop().time()
        self._data.set()

    async def _approve(self, call: ToolCall) -> str:
        """``request.approve``: ask the user, through every view of the conversation."""
        if self.approvals is None:
            return REJECT  # nobody to ask
        if self.approvals.allowed_always(self.user, self.conversation_id, call.name):
            self._tool(replace(call, status=RUNNING), ALLOW_ALWAYS)
            return ALLOW_ALWAYS
        self._tool(replace(call, status=WAITING))
        try:
            decision = await self.approvals.ask(
                self.user,
                self.conversation_id,
                self.message_id,
                call.id,
                call.name,
                self.approval_timeout,
            )
        except asyncio.TimeoutError:
            waited = f"{self.approval_timeout:g} seconds"
            self._tool(replace(call, status=FAILED, error=f"not run: no answer within {waited}"))
            raise ApprovalTimeout(
                f"Nobody approved {call.title or call.name} within {waited}, so it was not run."
            ) from None
        if decision == REJECT:
            self._tool(replace(call, status=FAILED, error="rejected by the user"), decision)
        else:
            self._tool(replace(call, status=RUNNING), decision)
        return decision

    def _take_tools(self, tools: Optional[list]) -> Optional[list]:
        """The reply's whole tool-call list to store with this round's frames, if they carry
        any state."""
        return list(self._calls.values()) if tools is not None else None

    def _unfinished_calls(self) -> list:
        """At the end: every call still pending, running or waiting, now ended ``failed``."""
        ended, states = end_unfinished(list(self._calls.values()), round(time.time(), 3))
        if ended:
            self._calls = {state["id"]: state for state in states}
        return ended or []

    async def _let_store_in(self, now: float) -> None:
        """Give the event loop up; and wait for the commit in flight when it carries the
        first frame or has taken longer than MAX_COMMIT_LAG_SECONDS.

        The store commits on a thread of its own, and that thread needs the GIL between its
        SQLite calls. An event loop that never idles (an agent parsing a buffered stream) keeps
        taking the GIL back first each time it blocks briefly on I/O, so the commit would
        crawl until the agent is done: the first frame of a fast model then went out hundreds
        of milliseconds late. Waiting here costs the agent about a millisecond each time.
        """
        await asyncio.sleep(0)  # the flusher, woken by this token, starts its commit
        if not self._stored.is_set() and (
            self.seq == 0 or now - self._commit_started > MAX_COMMIT_LAG_SECONDS
        ):
            await self._stored.wait()

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_flush = -math.inf
        unstored = None
        try:
            while True:
                await self._data.wait()
                self._data.clear()
                if self._ending is None:
                    wait = self.clock.next_flush(loop.time(), last_flush) - loop.time()
                    if wait > 0:  # merge what arrives within the window into this frame
                        await self._wait_window(loop, wait)
                ending = self._ending
                if not self._pending and not self._thinking and not self._marks and ending is None:
                    continue
                chunks, thoughts, tools = _frames(self._pending, self._thinking, self._marks)
                self._pending.clear()
                self._thinking.clear()
                self._marks.clear()
                self._pending_chars = 0
                self._room.set()
                if ending is None:
                    await self._commit_chunks(chunks, thoughts, tools)
                    last_flush = loop.time()
                else:
                    unstored = await self._commit_final(chunks, thoughts, ending, tools)
                    return
        except LeaseLost as e:
            self.log.warning("streamchat: %s", e)
            await self._follow_store()
        finally:
            self.on_end(self, unstored)

    async def _wait_window(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        """Wait ``seconds``, or until the reply is ended. One timer and one future per window:
        with a thousand replies streaming, ``asyncio.wait_for`` on an event (a task, a timer
        and a cancellation per window and reply) cost the loop a few microseconds a token."""
        window = self._window = loop.create_future()
        timer = loop.call_later(seconds, _settle, window)
        try:
            await window
        finally:
            timer.cancel()
            self._window = None

    async def _commit_chunks(self, chunks: list, thoughts: list, tools: Optional[list]) -> None:
        first = self.seq + 1
        try:
            await self._store(
                Append(
                    self.message_id,
                    first,
                    chunks,
                    reasoning=thoughts,
                    tool_calls=tools,
                    tool_state=self._take_tools(tools),
                )
            )
        except LeaseLost:
            raise
        except StoreError as e:
            # What the agent says can no longer be kept: stop it and end with what is stored.
            self.log.error("streamchat: reply %s: %s", self.message_id, e)
            self._unstorable = f"the reply could not be stored: {e}"
            self.end(ERROR, self._unstorable)
            return
        self._published(first, chunks, thoughts, None, tools=tools)

    def _final_usage(self) -> dict:
        now = asyncio.get_running_loop().time()
        usage = dict(self._usage, duration_seconds=round(now - self._started, 4))
        if self._first_token is not None:
            usage["first_token_seconds"] = round(self._first_token - self._started, 4)
        return usage

    async def _commit_final(
        self, chunks: list, thoughts: list, ending: tuple, tools: Optional[list] = None
    ) -> Optional[tuple]:
        """Store and publish the final frame; returns ``(seq, error, usage)`` if it could not
        be stored."""
        first = self.seq + 1
        status, error = ending
        if self._unstorable is not None:
            # Text produced after the store failed was never committed: drop it.
            chunks, thoughts, status, error = [""], [""], ERROR, self._unstorable
            tools = None
        unfinished = self._unfinished_calls()
        if unfinished:  # the final frame says so, after whatever else it carries
            tools = tools or [None] * len(chunks)
            tools[-1] = _latest((tools[-1] or []) + unfinished)
        usage = self._final_usage()
        try:
            await self._store(
                Append(
                    self.message_id,
                    first,
                    chunks,
                    status,
                    error,
                    reasoning=thoughts,
                    usage=usage,
                    tool_calls=tools,
                    tool_state=self._take_tools(tools),
                )
            )
        except LeaseLost:
            raise
        except StoreError as e:
            if chunks != [""] or thoughts != [""] or tools:
                # Keep only what is committed: an empty final frame saying why.
                self.log.error("streamchat: reply %s: %s", self.message_id, e)
                self._unstorable = f"the reply could not be stored: {e}"
                return await self._commit_final([""], [""], (ERROR, self._unstorable))
            self.log.error(
                "streamchat: reply %s ended, but its end is not stored yet: %s", self.message_id, e
            )
            self._published(first, chunks, thoughts, (status, error), usage)
            return first, error, usage
        self._published(first, chunks, thoughts, (status, error), usage, tools)
        return None

    def _published(
        self,
        first: int,
        chunks: list,
        thoughts: list,
        ending: Optional[tuple],
        usage: Optional[dict] = None,
        tools: Optional[list] = None,
    ) -> None:
        self.seq = first + len(chunks) - 1
        for seq, frame, final in self.frames.run(first, chunks, thoughts, ending, usage, tools):
            self.publish(
                ReplyFrame(self.user, self.conversation_id, self.message_id, seq, frame, final)
            )

    async def _store(self, append: Append) -> None:
        """Commit, retrying a store error (a locked or full database often frees up) for at
        most ``retry_seconds``; a lost lease is final at once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_seconds
        delay = 0.1
        self._commit_started = loop.time()
        self._stored.clear()
        try:
            while True:
                try:
                    return await self.store.append(append)
                except LeaseLost:
                    raise
                except StoreError:
                    if loop.time() + delay > deadline:
                        raise
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
        finally:
            self._stored.set()

    async def _follow_store(self) -> None:
        """This process lost the reply: stop the agent and publish the frames someone else
        stored after ours (their final frame says how the reply ended)."""
        if self._producer is not None:
            self._producer.cancel()
        self._ending = self._ending or (ERROR, "lease lost")
        try:
            await self.store.recover()  # our own lease may be the expired one
            message, chunks = await self.store.replay(self.message_id, self.seq, user=EVERY_USER)
        except StoreError as e:
            self.log.error("streamchat: reply %s: cannot read how it ended: %s", self.message_id, e)
            return
        if message is None or not chunks:
            return
        for seq, frame, final in self.frames.stored(chunks, message):
            self.publish(
                ReplyFrame(self.user, self.conversation_id, self.message_id, seq, frame, final)
            )
        self.seq = chunks[-1][0]
