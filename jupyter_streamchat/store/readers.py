"""The SQLite store's readers: a few threads, each with a connection of its own.

In WAL mode every connection reads its own snapshot beside the writer and beside the other
readers (https://www.sqlite.org/wal.html: "readers do not block writers and a writer does not
block readers"), so reads need not wait for one another: one slow read (a search of a large
store, the export of a huge conversation) takes one thread and the others go on. The threads
take jobs from one queue, in order.

A read is cancelled with the task that awaits it: a job not yet started is skipped, and a job
running is stopped at once through ``sqlite3_interrupt`` on its connection (its statement ends
with "interrupted", and the thread takes the next job), plus a flag that its progress handler
checks between statements. A job may also carry a deadline, checked by the same progress
handler every ``PROGRESS_OPS`` virtual-machine steps: a query over it is interrupted and raises
:class:`Overtime`. The handler needs the GIL each time it runs, so it runs rarely (a few
milliseconds of work apart): a read shorter than that never calls it.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from typing import Callable, Optional

Job = Callable[[sqlite3.Connection], object]

# SQLite steps between two checks of a job's deadline: a few milliseconds of work.
PROGRESS_OPS = 200_000


class Overtime(Exception):
    """A read ran past its deadline and was interrupted."""


class _Read:
    __slots__ = ("job", "future", "deadline", "conn", "cancelled", "lock")

    def __init__(self, job: Job, future: asyncio.Future, deadline: Optional[float]):
        self.job = job
        self.future = future
        self.deadline = deadline  # time.monotonic() value, or None
        self.conn: Optional[sqlite3.Connection] = None  # while it runs
        self.cancelled = False
        self.lock = threading.Lock()

    def cancel(self) -> None:
        """From the event loop: skip the job, or stop it where it runs."""
        with self.lock:
            self.cancelled = True
            if self.conn is not None:
                self.conn.interrupt()

    def overdue(self) -> int:
        """The progress handler: nonzero stops the statement running."""
        if self.cancelled:
            return 1
        return int(self.deadline is not None and time.monotonic() > self.deadline)


class Readers:
    """``size`` threads, each owning one connection made by ``connect``."""

    def __init__(self, conns: list, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [
            threading.Thread(
                target=self._run, args=(conn,), daemon=True, name=f"streamchat-sqlite-reader-{i}"
            )
            for i, conn in enumerate(conns)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def size(self) -> int:
        return len(self._threads)

    async def run(self, job: Job, deadline: Optional[float] = None):
        """``job(conn)`` on a reader thread; cancelling the awaiting task stops it at once."""
        future = self._loop.create_future()
        read = _Read(job, future, deadline)
        self._jobs.put(read)
        try:
            return await future
        except asyncio.CancelledError:
            read.cancel()
            raise

    def close(self) -> None:
        """Finish the jobs queued, then close every connection (blocks: call in a thread)."""
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()

    def _run(self, conn: sqlite3.Connection) -> None:
        running: list = [None]  # the read this thread runs now

        def progress() -> int:
            read = running[0]
            return read.overdue() if read is not None else 0

        conn.set_progress_handler(progress, PROGRESS_OPS)
        try:
            while True:
                read = self._jobs.get()
                if read is None:
                    return
                running[0] = read
                try:
                    self._one(conn, read)
                finally:
                    running[0] = None
        finally:
            conn.close()

    def _one(self, conn: sqlite3.Connection, read: _Read) -> None:
        with read.lock:
            if read.cancelled:
                return
            read.conn = conn
        result = error = None
        try:
            result = read.job(conn)
        except BaseException as e:  # handed to the awaiting task
            error = e
            if (
                isinstance(e, sqlite3.OperationalError)
                and "interrupted" in str(e)
                and not read.cancelled
                and read.deadline is not None
                and time.monotonic() > read.deadline
            ):
                error = Overtime(str(e))
        finally:
            with read.lock:
                read.conn = None
            if conn.in_transaction:  # a job interrupted inside its snapshot
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
        try:
            self._loop.call_soon_threadsafe(_settle, read.future, result, error)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass


def _settle(future: asyncio.Future, result, error) -> None:
    if future.done():  # the awaiting task was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
