"""The Postgres store's writer: every write, batched into one transaction per round.

One task takes every job queued since its last round and runs them in one transaction on one
pooled connection, so many replies streaming at once cost one commit per round, as with the
SQLite store's writer thread. Each job runs in a savepoint of its own: a job that fails (bad
data, a lost lease) is rolled back alone and fails only its own request; a deadlock with
another server's transaction is retried once. Consecutive streaming appends of distinct
replies are written together in two statements (:func:`write_many`); when the guard fails for
any of them they are written one by one, so only the ones at fault fail.

The hints of every job that succeeded go out with ``pg_notify`` in the same transaction, a
few notifications per round whatever its size, never one per frame. Nothing is acknowledged
before COMMIT; when the connection fails (Postgres or the network gone) every job of the round
fails with the same error and nothing of it is half-done: the transaction did not commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Awaitable, Callable, Optional

from psycopg import errors

from .base import LeaseLost
from .hints import FramesCommitted
from . import toolcalls
from .pglisten import notify
from .pgtext import enc
from .records import STREAMING

# Seconds since the epoch by the database clock, as the store keeps its times.
NOW = "extract(epoch FROM now())::float8"

# A reply's owner holds a live lease (the database's clock decides).
_LEASE = "EXISTS (SELECT 1 FROM owners o WHERE o.id = %(owner)s AND o.lease_until >= now())"


class AppendLeaseLost(LeaseLost):
    """LeaseLost, knowing whether the writing process's own lease had run out (rather than
    the reply alone being ended or gone)."""

    def __init__(self, message: str, owner_id: str, lease_expired: bool):
        super().__init__(message)
        self.owner_id = owner_id
        self.lease_expired = lease_expired


def _measure(append) -> tuple:
    """(last seq, answer chars, thinking chars, [seq], [chunk], [thinking], [tool calls' JSON
    text] or None) of an append: JSON work only for an append that has tool calls. (JSON text
    is ASCII: nothing in it for ``enc`` to escape.)"""
    reasoning = append.reasoning or [""] * len(append.chunks)
    seqs = list(range(append.first_seq, append.first_seq + len(append.chunks)))
    calls = None
    if append.tool_calls is not None:
        calls = [toolcalls.dumps(states or None) for states in append.tool_calls]
    return (
        append.first_seq + len(append.chunks) - 1,
        sum(map(len, append.chunks)),
        sum(map(len, reasoning)),
        seqs,
        [enc(chunk) for chunk in append.chunks],
        [enc(thinking) for thinking in reasoning],
        calls,
    )


async def _insert_chunks(
    conn, message_ids: list, seqs: list, chunks: list, thoughts: list, calls=None
):
    """Chunk rows, from one array per column; ``calls`` (tool calls' JSON text, or None per
    row) only when some row has tool calls."""
    if calls is None:
        await conn.execute(
            "INSERT INTO chunks (message_id, seq, chunk, reasoning) "
            "SELECT * FROM unnest(%s::text[], %s::int[], %s::text[], %s::text[])",
            (message_ids, seqs, chunks, thoughts),
        )
        return
    await conn.execute(
        "INSERT INTO chunks (message_id, seq, chunk, reasoning, tool_calls) "
        "SELECT * FROM unnest(%s::text[], %s::int[], %s::text[], %s::text[], %s::text[])",
        (message_ids, seqs, chunks, thoughts, calls),
    )


async def write_one(conn, append, owner_id: str) -> list:
    """One append (a final one included) in the caller's transaction; its hints, or
    :class:`AppendLeaseLost`. A final append also keeps the reply's whole text (for search,
    and for reads that need no frames) and moves its conversation's ``updated_at``."""
    last, added, thought, seqs, chunks, thoughts, calls = _measure(append)
    # The merged states replace the row's, when the append has them.
    state = "" if append.tool_state is None else "tool_calls = %(state)s, "
    args = {
        "state": toolcalls.dumps(append.tool_state),
        "id": append.message_id,
        "owner": owner_id,
        "after": append.first_seq - 1,
        "last": last,
        "added": added,
        "thought": thought,
        "streaming": STREAMING,
    }
    guard = (
        "WHERE m.id = %(id)s AND m.status = %(streaming)s AND m.owner = %(owner)s "
        f"AND m.last_seq = %(after)s AND {_LEASE}"
    )
    if append.status is None:
        cursor = await conn.execute(
            f"UPDATE messages m SET {state}last_seq = %(last)s, chars = m.chars + %(added)s, "
            f"reasoning_chars = m.reasoning_chars + %(thought)s {guard} "
            "RETURNING m.user_id, m.conversation_id",
            args,
        )
    else:
        args.update(
            status=append.status,
            error=enc(append.error) if append.error is not None else None,
            usage=enc(json.dumps(append.usage)) if append.usage else None,
            tail="".join(chunks),
        )
        cursor = await conn.execute(
            f"WITH m AS (UPDATE messages m SET {state}last_seq = %(last)s, "
            "chars = m.chars + %(added)s, reasoning_chars = m.reasoning_chars + %(thought)s, "
            "status = %(status)s, error = %(error)s, usage = %(usage)s, owner = NULL, "
            f"updated_at = {NOW}, text = coalesce((SELECT string_agg(c.chunk, '' ORDER BY "
            "c.seq) FROM chunks c WHERE c.message_id = m.id AND c.seq <= %(after)s), '') "
            f"|| %(tail)s {guard} RETURNING m.user_id, m.conversation_id), "
            f"touched AS (UPDATE conversations c SET updated_at = greatest(c.updated_at, {NOW}) "
            "FROM m WHERE c.user_id = m.user_id AND c.id = m.conversation_id) "
            "SELECT user_id, conversation_id FROM m",
            args,
        )
    row = await cursor.fetchone()
    if row is None:
        if await _already_stored(conn, append, chunks, last):
            return []  # a retry of an append whose commit was not confirmed
        raise await _lease_lost(conn, append.message_id, owner_id)
    await _insert_chunks(conn, [append.message_id] * len(seqs), seqs, chunks, thoughts, calls)
    user, conversation_id = row
    return [
        FramesCommitted(user, conversation_id, append.message_id, last, append.status is not None)
    ]


async def write_many(conn, appends: list, owner_id: str) -> Optional[list]:
    """Streaming appends of distinct replies in two statements, in the caller's savepoint;
    their hints, or None (and nothing written) if the guard held for only some of them."""
    heads = ([], [], [], [], [])  # id, after, last, added, thought
    rows = ([], [], [], [])  # message id, seq, chunk, thinking
    measured = [_measure(append) for append in appends]
    for append, (last, added, thought, seqs, chunks, thoughts, _) in zip(appends, measured):
        for column, value in zip(heads, (append.message_id, append.first_seq - 1, last)):
            column.append(value)
        heads[3].append(added)
        heads[4].append(thought)
        rows[0].extend([append.message_id] * len(seqs))
        rows[1].extend(seqs)
        rows[2].extend(chunks)
        rows[3].extend(thoughts)
    # Tool calls (rare beside text) make a column of their own only when some append has
    # them: the statements of plain text frames stay as they were.
    calls = None
    if any(m[6] is not None for m in measured):
        calls = []
        for m in measured:
            calls.extend(m[6] if m[6] is not None else [None] * len(m[3]))
    state, state_array, state_column = "", "", ""
    if any(append.tool_state is not None for append in appends):
        state = "tool_calls = coalesce(b.state, m.tool_calls), "
        state_array, state_column = ", %(state)s::text[]", ", state"
    cursor = await conn.execute(
        f"UPDATE messages m SET {state}last_seq = b.last, chars = m.chars + b.added, "
        "reasoning_chars = m.reasoning_chars + b.thought FROM unnest(%(ids)s::text[], "
        "%(after)s::int[], %(last)s::int[], %(added)s::bigint[], %(thought)s::bigint[]"
        f"{state_array}) AS b(id, after, last, added, thought{state_column}) "
        "WHERE m.id = b.id AND m.last_seq = b.after "
        f"AND m.status = %(streaming)s AND m.owner = %(owner)s AND {_LEASE} "
        "RETURNING m.id, m.user_id, m.conversation_id, m.last_seq",
        {
            "ids": heads[0],
            "after": heads[1],
            "last": heads[2],
            "added": heads[3],
            "thought": heads[4],
            "state": [toolcalls.dumps(append.tool_state) for append in appends] if state else None,
            "streaming": STREAMING,
            "owner": owner_id,
        },
    )
    written = await cursor.fetchall()
    if len(written) != len(appends):
        return None
    await _insert_chunks(conn, *rows, calls)
    return [FramesCommitted(user, cid, mid, last) for mid, user, cid, last in written]


async def _already_stored(conn, append, chunks: list, last: int) -> bool:
    """Whether this very append is stored already: the hub retries an append whose commit
    it could not confirm (the connection dropped during COMMIT), and that is no lost lease."""
    row = await (
        await conn.execute(
            "SELECT m.last_seq, m.status, c.chunk FROM messages m LEFT JOIN chunks c "
            "ON c.message_id = m.id AND c.seq = %s WHERE m.id = %s",
            (last, append.message_id),
        )
    ).fetchone()
    if row is None or row[0] < last or row[2] != chunks[-1]:
        return False
    return append.status is None or row[1] == append.status


async def _lease_lost(conn, message_id: str, owner_id: str) -> AppendLeaseLost:
    row = await (
        await conn.execute("SELECT lease_until >= now() FROM owners WHERE id = %s", (owner_id,))
    ).fetchone()
    return AppendLeaseLost(
        f"reply {message_id} is no longer this server's to write (its lease expired, or "
        "another process ended it)",
        owner_id,
        lease_expired=row is None or not row[0],
    )


class _Job:
    __slots__ = ("run", "future", "append")

    def __init__(self, run, future: asyncio.Future, append=None):
        self.run = run  # async (conn) -> (result, hints); None for a batchable append
        self.future = future
        self.append = append


class Writer:
    """Runs write jobs in rounds, one transaction each (see the module's doc)."""

    MAX_BATCH = 1000

    def __init__(
        self,
        connection: Callable[[], contextlib.AbstractAsyncContextManager],
        origin: Callable[[], str],
        owner_id: Callable[[], str],
        error: Callable[[BaseException], Exception],
        logger: logging.Logger,
    ):
        self._connection = connection
        self._origin = origin
        self._owner_id = owner_id
        self._error = error
        self.log = logger
        self._jobs: list = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._task = asyncio.ensure_future(self._run())
        self.rounds = 0  # committed rounds (tests, benchmarks)

    def submit(self, run: Callable[..., Awaitable]) -> asyncio.Future:
        """``await run(conn)`` -> ``(result, hints)`` inside a round; the future's result is
        ``result``, once committed."""
        return self._queue(_Job(run, asyncio.get_running_loop().create_future()))

    def append(self, append) -> asyncio.Future:
        """A streaming append, written together with the others of its round."""
        return self._queue(_Job(None, asyncio.get_running_loop().create_future(), append))

    def _queue(self, job: _Job) -> asyncio.Future:
        if self._stopping:
            raise self._error(RuntimeError("the chat database is closed"))
        self._jobs.append(job)
        self._idle.clear()
        self._wake.set()
        return job.future

    async def idle(self) -> None:
        """Until every job queued so far is done."""
        await self._idle.wait()

    async def stop(self) -> None:
        """Run what is queued, then end."""
        self._stopping = True
        self._wake.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            if not self._jobs:
                self._idle.set()
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            jobs = self._jobs[: self.MAX_BATCH]
            del self._jobs[: self.MAX_BATCH]
            try:
                await self._round(jobs)
            except Exception:  # a bug: never leave a caller waiting
                self.log.exception("streamchat: a write round failed")
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(self._error(RuntimeError("write failed")))

    async def _round(self, jobs: list, batch: bool = True) -> None:
        outcomes: dict = {}  # id(job) -> (ok, result or error)
        groups = _groups(jobs) if batch else [[job] for job in jobs]
        # A round of streaming appends alone (the common case) needs no savepoint: when the
        # guard fails for some, the whole round is rolled back and written again job by job.
        alone = len(groups) == 1 and len(groups[0]) > 1
        try:
            async with self._connection() as conn:
                async with conn.transaction():
                    hints: list = []
                    owner_id = self._owner_id()
                    for group in groups:
                        if len(group) > 1:
                            written = await self._batch(conn, group, owner_id, alone)
                            if written is not None:
                                hints += written
                                for job in group:
                                    outcomes[id(job)] = (True, None)
                                continue
                        for job in group:
                            await self._one(conn, job, owner_id, hints, outcomes)
                    await notify(conn, self._origin(), hints)
        except _Undo:
            return await self._round(jobs, batch=False)
        except Exception as e:
            failure = self._error(e)
            for job in jobs:
                # A job that failed alone keeps its own error; the rest did not commit.
                outcome = outcomes.get(id(job))
                error = outcome[1] if outcome is not None and not outcome[0] else failure
                _settle(job.future, False, error)
            return
        self.rounds += 1
        for job in jobs:
            ok, value = outcomes[id(job)]
            _settle(job.future, ok, value)

    async def _batch(self, conn, group: list, owner_id: str, alone: bool) -> Optional[list]:
        if alone:  # _Undo rolls the round back
            try:
                written = await write_many(conn, [job.append for job in group], owner_id)
            except Exception:
                if conn.broken or conn.closed:
                    raise
                written = None  # bad data in one of them: each alone, then
            if written is None:
                raise _Undo()
            return written
        try:
            async with conn.transaction():
                written = await write_many(conn, [job.append for job in group], owner_id)
                if written is None:
                    raise _Undo()
                return written
        except _Undo:
            return None
        except Exception:
            if conn.broken or conn.closed:
                raise
            return None  # each alone, then: the one at fault fails alone

    async def _one(self, conn, job: _Job, owner_id: str, hints: list, outcomes: dict) -> None:
        for attempt in range(2):
            try:
                async with conn.transaction():
                    if job.append is not None:
                        result, added = None, await write_one(conn, job.append, owner_id)
                    else:
                        result, added = await job.run(conn)
            except Exception as e:
                if conn.broken or conn.closed:
                    raise
                if isinstance(e, errors.TransactionRollback) and attempt == 0:
                    continue  # a deadlock with another server: its locks are gone now
                outcomes[id(job)] = (False, self._error(e))
                return
            hints += added
            outcomes[id(job)] = (True, result)
            return


class _Undo(Exception):
    """Roll the batch's savepoint (or its round) back."""


def _groups(jobs: list) -> list:
    """Jobs in order, runs of streaming appends of distinct replies grouped."""
    groups: list = []
    run: list = []
    seen: set = set()
    for job in jobs:
        batchable = job.append is not None and job.append.status is None
        if batchable and job.append.message_id not in seen:
            run.append(job)
            seen.add(job.append.message_id)
            continue
        if run:
            groups.append(run)
            run, seen = [], set()
        if batchable:
            run.append(job)
            seen.add(job.append.message_id)
        else:
            groups.append([job])
    if run:
        groups.append(run)
    return groups


def _settle(future: asyncio.Future, ok: bool, value) -> None:
    if future.done():  # its caller was cancelled
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


__all__ = ["NOW", "AppendLeaseLost", "Writer", "write_many", "write_one"]
