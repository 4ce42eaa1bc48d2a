"""The SQLite store's writer thread: every write, batched, each request isolated from the others.

One thread owns the write connection. It takes every job queued since its last commit and runs
them in one transaction, so many replies streaming at once cost one commit per round and the
event loop never waits on the disk. Each job runs inside a savepoint of its own: a job that
fails (bad data, a lost lease) is rolled back alone and fails only its own request, while the
others in the batch commit. When SQLite rolls the whole transaction back by itself (disk full,
I/O error), the jobs that had already run are run again in a fresh transaction without the
failing one. (A job alone in its batch has the transaction to itself.) Nothing is
acknowledged before its COMMIT, nor when the file was deleted or replaced meanwhile.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from typing import Callable, Optional

from .base import StoreError
from .fileguard import FileGuard

Job = Callable[[sqlite3.Connection], object]


class Writer(threading.Thread):
    MAX_BATCH = 2000

    def __init__(
        self,
        conn: sqlite3.Connection,
        guard: FileGuard,
        loop: asyncio.AbstractEventLoop,
        after_commit: Optional[Callable] = None,
    ):
        super().__init__(name="streamchat-sqlite-writer", daemon=True)
        self._conn = conn
        self._after_commit = after_commit
        self._guard = guard
        self._loop = loop
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()

    def submit(self, job: Job) -> asyncio.Future:
        future = self._loop.create_future()
        self._jobs.put((job, future))
        return future

    def stop(self) -> None:
        self._jobs.put(None)

    def run(self) -> None:
        try:
            while True:
                batch = [self._jobs.get()]
                while len(batch) < self.MAX_BATCH:
                    try:
                        batch.append(self._jobs.get_nowait())
                    except queue.Empty:
                        break
                stopping = None in batch
                jobs = [item for item in batch if item is not None]
                if jobs:
                    outcomes = self._run_batch(jobs)
                    try:
                        self._loop.call_soon_threadsafe(_settle, outcomes)
                    except RuntimeError:  # the loop is closed: nobody is waiting any more
                        return
                if stopping:
                    return
        finally:
            self._conn.close()

    def _run_batch(self, jobs: list) -> list:
        """[(future, result, error)] for every job."""
        conn = self._conn
        failed: dict = {}  # index -> StoreError
        results: dict = {}
        todo = list(range(len(jobs)))
        while todo:
            problem = self._guard.problem(writing=True)
            if problem:
                failed.update((i, StoreError(problem)) for i in todo)
                break
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                failed.update((i, as_store_error(e)) for i in todo)
                break
            ran, lost = [], False
            # A job alone in its transaction needs no savepoint: the transaction is its own.
            # (That is two statements less, and each statement is a wait for the GIL, which
            # a busy event loop is slow to hand over.)
            alone = len(todo) == 1
            for i in todo:
                try:
                    if not alone:
                        conn.execute("SAVEPOINT job")
                    value = jobs[i][0](conn)
                    if not alone:
                        conn.execute("RELEASE job")
                except Exception as e:
                    failed[i] = as_store_error(e)
                    if not conn.in_transaction:
                        lost = True  # SQLite rolled everything back: run the others again
                        break
                    if alone:
                        conn.execute("ROLLBACK")
                    else:
                        _rollback_to_savepoint(conn)
                else:
                    results[i] = value
                    ran.append(i)
            if lost:
                todo = [i for i in todo if i not in failed]
                continue
            if not conn.in_transaction:
                break  # the one job failed and was rolled back: nothing to commit
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                failed.update((i, as_store_error(e)) for i in ran)
                break
            problem = self._guard.problem(writing=False)
            if problem:  # committed into a file that is no longer the database
                failed.update((i, StoreError(problem)) for i in ran)
            elif self._after_commit is not None:
                self._after_commit()
            break
        return [(future, results.get(i), failed.get(i)) for i, (_job, future) in enumerate(jobs)]


def _rollback_to_savepoint(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK TO job")
        conn.execute("RELEASE job")
    except sqlite3.Error:
        pass  # the savepoint went with a transaction SQLite rolled back itself


def as_store_error(e: BaseException) -> StoreError:
    if isinstance(e, StoreError):
        return e
    if isinstance(e, sqlite3.Error):
        return StoreError(f"the chat database refused a write: {e}")
    # Data SQLite cannot take (a string that is not valid Unicode, a number out of range).
    return StoreError(f"the chat database cannot store this: {type(e).__name__}: {e}")


def _settle(outcomes: list) -> None:
    for future, result, error in outcomes:
        if future.done():  # the awaiting task was cancelled
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
