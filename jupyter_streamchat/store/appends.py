"""Writing reply frames to SQLite: one append on its own, and many replies' frames at once.

Every frame of a streaming reply is an append: its chunks go into ``chunks`` and the reply's
row in ``messages`` moves on (``last_seq``, lengths), guarded so that only the owner of the
reply, under a live lease, extends it, and only right after its last stored frame. The final
append also puts the reply's whole text into the search index (``search.py``) and moves its
conversation's ``updated_at`` (the list is ordered by last activity: a reply that ends is
some; a frame is not, and writing the conversation's row per frame would cost every frame).

When many replies stream, their frames come due on the same ticks (``core/pacing.py``) and
would cost the writer thread four statements each. Each statement is a trip through the GIL,
which a busy event loop is slow to hand back, so a commit of a hundred frames could take
hundreds of milliseconds. :class:`AppendBatcher` gathers the streaming frames queued since the
writer's last job and writes them with two statements whatever their number (the frames
travel as one JSON parameter; tool-call states, rare beside text, as JSON text inside it). If
the guard fails for any of them (a lease lost), the batch is undone and each append is written
alone, so that only the ones at fault fail. Text holding a NUL character is written alone too:
SQLite's JSON functions cut a string at its first NUL.
"""

from __future__ import annotations

import asyncio
import json
import queue
import sqlite3
import time
from typing import Callable

from .records import STREAMING
from . import search, toolcalls
from .base import LeaseLost
from .writer import as_store_error

# UPDATE ... FROM arrived in SQLite 3.33; older libraries write each append alone.
CAN_BATCH = sqlite3.sqlite_version_info >= (3, 33, 0)

_LEASE = "EXISTS (SELECT 1 FROM owners WHERE id = ? AND lease_until >= ?)"


_INSERT = "INSERT INTO chunks (message_id, seq, chunk, reasoning) VALUES (?, ?, ?, ?)"
_INSERT_CALLS = (
    "INSERT INTO chunks (message_id, seq, chunk, reasoning, tool_calls) VALUES (?, ?, ?, ?, ?)"
)


def _measure(append) -> tuple:
    """(last seq, answer chars, thinking chars, chunk rows) of an append: what both ways of
    writing it store. A row has a fifth field, its tool calls' JSON text, only when the append
    has tool calls: frames without any (nearly all) cost no JSON work."""
    reasoning = append.reasoning or [""] * len(append.chunks)
    first = append.first_seq
    if append.tool_calls is None:
        rows = [
            (append.message_id, first + i, chunk, thinking)
            for i, (chunk, thinking) in enumerate(zip(append.chunks, reasoning))
        ]
    else:
        rows = [
            (append.message_id, first + i, chunk, thinking, toolcalls.dumps(calls or None))
            for i, (chunk, thinking, calls) in enumerate(
                zip(append.chunks, reasoning, append.tool_calls)
            )
        ]
    return (
        first + len(append.chunks) - 1,
        sum(map(len, append.chunks)),
        sum(map(len, reasoning)),
        rows,
    )


def write_one(conn: sqlite3.Connection, append, owner_id: str) -> bool:
    """One append (a final one included), or :class:`LeaseLost`. True when the reply ended
    and slices of its text wait to be indexed (``search.index_next_slice``)."""
    last, added, thought, rows = _measure(append)
    now = time.time()
    guard = f"WHERE id = ? AND status = ? AND owner = ? AND last_seq = ? AND {_LEASE}"
    guard_args = (append.message_id, STREAMING, owner_id, append.first_seq - 1, owner_id, now)
    state, state_args = "", ()
    if append.tool_state is not None:
        state, state_args = "tool_calls = ?, ", (toolcalls.dumps(append.tool_state),)
    if append.status is None:
        cursor = conn.execute(
            f"UPDATE messages SET {state}last_seq = ?, chars = chars + ?, "
            f"reasoning_chars = reasoning_chars + ? {guard}",
            state_args + (last, added, thought) + guard_args,
        )
    else:
        usage = json.dumps(append.usage) if append.usage else None
        cursor = conn.execute(
            f"UPDATE messages SET {state}last_seq = ?, chars = chars + ?, "
            "reasoning_chars = reasoning_chars + ?, status = ?, error = ?, usage = ?, "
            f"owner = NULL, updated_at = ? {guard}",
            state_args
            + (last, added, thought, append.status, append.error, usage, now)
            + guard_args,
        )
    if cursor.rowcount != 1:
        raise _lease_lost(append.message_id)
    conn.executemany(_INSERT if append.tool_calls is None else _INSERT_CALLS, rows)
    if append.status is not None:
        touch_conversation(conn, append.message_id, now)
        return search.add_reply(conn, append.message_id)  # its text is whole now
    return False


def touch_conversation(conn: sqlite3.Connection, message_id: str, now: float) -> None:
    """Mark the conversation of a reply that just ended as active ``now`` (never earlier than
    it was: a clock set back must not sink it in the list)."""
    conn.execute(
        "UPDATE conversations SET updated_at = max(updated_at, ?) "
        "WHERE (user_id, id) = (SELECT user_id, conversation_id FROM messages WHERE id = ?)",
        (now, message_id),
    )


def write_many(conn: sqlite3.Connection, appends: list, owner_id: str) -> bool:
    """Streaming appends of distinct replies in two statements; False (and nothing written)
    if the guard held for only some of them."""
    heads, rows = [], []
    with_calls = with_state = False  # whether any append has tool calls, a merged list
    for append in appends:
        last, added, thought, frames = _measure(append)
        head = [append.message_id, append.first_seq - 1, last, added, thought]
        if append.tool_state is not None:
            head.append(toolcalls.dumps(append.tool_state))
            with_state = True
        heads.append(head)
        with_calls = with_calls or append.tool_calls is not None
        rows += frames
    # The tool-call columns are named only when some append has them (a missing array item
    # reads as NULL): the statements of plain text frames stay as they were.
    set_state, state_item = (
        ("tool_calls = coalesce(b.state, tool_calls), ", ", json_extract(value, '$[5]') AS state")
        if with_state
        else ("", "")
    )
    calls_column, calls_item = (
        (", tool_calls", ", json_extract(value, '$[4]')") if with_calls else ("", "")
    )
    conn.execute("SAVEPOINT appends")
    try:
        cursor = conn.execute(
            f"UPDATE messages SET {set_state}last_seq = b.last, chars = chars + b.added, "
            "reasoning_chars = reasoning_chars + b.thought FROM (SELECT "
            "json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS after, "
            "json_extract(value, '$[2]') AS last, json_extract(value, '$[3]') AS added, "
            f"json_extract(value, '$[4]') AS thought{state_item} FROM json_each(?)) AS b "
            # "+status": not by the index of streaming replies, which SQLite would otherwise
            # drive the update from, reading the whole batch again for each streaming reply
            # (a batch of 300 among 1,000 replies: 400 ms instead of 1.5 ms by id).
            "WHERE messages.id = b.id AND messages.last_seq = b.after AND +status = ? "
            f"AND owner = ? AND {_LEASE}",
            (json.dumps(heads), STREAMING, owner_id, owner_id, time.time()),
        )
        if cursor.rowcount != len(appends):
            conn.execute("ROLLBACK TO appends")
            return False
        conn.execute(
            f"INSERT INTO chunks (message_id, seq, chunk, reasoning{calls_column}) SELECT "
            "json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
            f"json_extract(value, '$[2]'), json_extract(value, '$[3]'){calls_item} "
            "FROM json_each(?)",
            (json.dumps(rows),),
        )
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK TO appends")
            conn.execute("RELEASE appends")
        raise
    conn.execute("RELEASE appends")
    return True


def _json_safe(append) -> bool:
    """Whether an append's text survives json_each (a NUL would end the string there)."""
    return not any("\x00" in text for text in append.chunks + (append.reasoning or []))


def _lease_lost(message_id: str) -> LeaseLost:
    return LeaseLost(
        f"reply {message_id} is no longer this server's to write (its lease expired, or "
        "another process ended it)"
    )


class AppendBatcher:
    """Streaming appends queued on the event loop, written together by one writer job.

    ``add`` queues an append and, unless a job is already due to take it, submits one; the job
    takes everything queued by the time it runs. The queue is the hand-over between the event
    loop and the writer thread; ``_due`` is cleared by the job before it drains the queue, so
    an append is always either taken by a job that runs after it was queued, or followed by a
    new job.
    """

    def __init__(self, submit: Callable, owner_id: Callable[[], str]):
        self._submit = submit
        self._owner_id = owner_id
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._due = False

    def add(self, append) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self._queue.put((append, future))
        if not self._due:
            self._due = True
            job = _Job(self)
            self._submit(job).add_done_callback(job.settle)
        return future

    def drain(self, into: list) -> None:
        while True:
            try:
                into.append(self._queue.get_nowait())
            except queue.Empty:
                return


class _Job:
    """One writer job of an :class:`AppendBatcher`. It may run twice: when SQLite rolls back
    a whole transaction, the writer runs its jobs again, and this one then writes again all
    it has taken."""

    def __init__(self, batcher: AppendBatcher):
        self.batcher = batcher
        self.taken: list = []  # (append, future)
        self.ran = False

    def __call__(self, conn: sqlite3.Connection) -> list:
        """In the writer thread: [(future, error or None)] for every append taken."""
        self.ran = True
        self.batcher._due = False
        self.batcher.drain(self.taken)
        if not self.taken:
            return []
        owner_id = self.batcher._owner_id()
        appends = [append for append, _ in self.taken]
        distinct = len({append.message_id for append in appends}) == len(appends)
        batchable = CAN_BATCH and len(appends) > 1 and distinct and all(map(_json_safe, appends))
        if batchable and write_many(conn, appends, owner_id):
            return [(future, None) for _, future in self.taken]
        outcomes = []
        for append, future in self.taken:
            conn.execute("SAVEPOINT append")
            try:
                write_one(conn, append, owner_id)
            except Exception as e:
                if not conn.in_transaction:
                    raise  # SQLite rolled back everything: the writer's to handle
                conn.execute("ROLLBACK TO append")
                outcomes.append((future, as_store_error(e)))
            else:
                outcomes.append((future, None))
            conn.execute("RELEASE append")
        return outcomes

    def settle(self, job: asyncio.Future) -> None:
        """On the event loop: each append's outcome; if the job failed as a whole, its error
        for every append it took (or, if it never ran, for every append waiting for it)."""
        if job.cancelled():
            return
        error = job.exception()
        if error is None:
            outcomes = job.result()
        else:
            if not self.ran:  # refused before it ran (the file is gone): nobody took them
                self.batcher._due = False
                self.batcher.drain(self.taken)
            outcomes = [(future, error) for _, future in self.taken]
        for future, failure in outcomes:
            if future.done():  # its reply was cancelled
                continue
            if failure is None:
                future.set_result(None)
            else:
                future.set_exception(failure)
