"""Copying the write-ahead log into the database file, on a thread of its own.

In WAL mode a commit only appends pages to the log; from time to time the log is copied back
into the database (a checkpoint), and that copy is what syncs the disk. SQLite runs it inside
the commit that crosses ``wal_autocheckpoint`` pages, so every reply waiting on that commit
waited for the fsync too: tens of milliseconds, a hundred replies at a time. Here the writer's
connection never checkpoints; this thread does, with a connection of its own, once a second
while there are new commits. A PASSIVE checkpoint takes no lock that a writer or reader waits
on: it copies what it can and leaves the rest for the next one.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from typing import Callable

log = logging.getLogger("jupyter_streamchat")


class Checkpointer(threading.Thread):
    def __init__(self, connect: Callable[[], sqlite3.Connection], interval: float = 1.0):
        super().__init__(name="streamchat-sqlite-checkpoint", daemon=True)
        self._connect = connect
        self._interval = interval
        self._written = threading.Event()  # set by commits since the last checkpoint
        self._stopping = threading.Event()
        self.checkpoints = 0

    def wrote(self) -> None:
        """A commit appended to the log (called by the writer thread)."""
        self._written.set()

    def stop(self) -> None:
        self._stopping.set()
        self._written.set()

    def run(self) -> None:
        try:
            conn = self._connect()
        except sqlite3.Error as e:
            log.warning("streamchat: no checkpoint thread (%s); SQLite checkpoints in commits", e)
            return
        try:
            while not self._stopping.is_set():
                self._written.wait()
                if self._stopping.wait(self._interval):  # let a second's commits gather
                    break
                self._written.clear()
                self._checkpoint(conn)
            self._checkpoint(conn)  # what the last commits wrote, before the file is closed
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.checkpoints += 1
        except sqlite3.Error as e:  # the file is gone or locked: the next one tries again
            log.debug("streamchat: checkpoint failed: %s", e)
