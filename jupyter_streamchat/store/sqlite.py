"""SQLite message store: the default, one file in the Jupyter data dir.

All writes go through one writer thread that owns the write connection: it takes every
request queued since its last commit and commits them in one transaction, so many replies
streaming at once cost one commit per round, and the event loop never waits on the disk.
Reads run on a second thread with a connection of their own (WAL lets them run beside writes).
"""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import unquote, urlparse

from jupyter_core.paths import jupyter_data_dir
from traitlets import Enum, Float, Unicode, default

from ..protocol import COMPLETE, INTERRUPTED, STREAMING
from .base import Append, Exchange, Store, StoreError, StoredMessage

# Schema migrations, in order; PRAGMA user_version holds how many have been applied.
MIGRATIONS = [
    """
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE messages (
        pos INTEGER PRIMARY KEY,            -- order within a conversation
        id TEXT NOT NULL UNIQUE,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        agent_id TEXT NOT NULL,
        reply_to TEXT,                      -- a reply's user message
        client_message_id TEXT UNIQUE,      -- makes SEND_MESSAGE idempotent
        status TEXT NOT NULL,
        error TEXT,
        text TEXT NOT NULL DEFAULT '',      -- whole text once ended; chunks hold it while streaming
        last_seq INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX messages_by_conversation ON messages (conversation_id, pos);
    CREATE INDEX messages_streaming ON messages (status) WHERE status = 'streaming';
    CREATE TABLE chunks (
        message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        chunk TEXT NOT NULL,
        PRIMARY KEY (message_id, seq)
    ) WITHOUT ROWID;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

_MESSAGE_COLUMNS = "id, conversation_id, role, agent_id, text, status, last_seq, error, created_at"


def _new_id() -> str:
    return uuid.uuid4().hex


class _Writer(threading.Thread):
    """Runs write jobs in batches: one transaction for everything queued since the last commit."""

    MAX_BATCH = 2000

    def __init__(self, connect: Callable[[], sqlite3.Connection], loop: asyncio.AbstractEventLoop):
        super().__init__(name="streamchat-sqlite-writer", daemon=True)
        self._connect = connect
        self._loop = loop
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()

    def submit(self, job: Callable[[sqlite3.Connection], object]) -> asyncio.Future:
        future = self._loop.create_future()
        self._jobs.put((job, future))
        return future

    def stop(self) -> None:
        self._jobs.put(None)

    def run(self) -> None:
        conn = self._connect()
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
                    self._loop.call_soon_threadsafe(_settle, self._run_batch(conn, jobs))
                if stopping:
                    return
        finally:
            conn.close()

    @staticmethod
    def _run_batch(conn: sqlite3.Connection, jobs: list) -> list:
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = [job(conn) for job, _ in jobs]
            conn.execute("COMMIT")
            return [(future, result, None) for (_, future), result in zip(jobs, results)]
        except Exception as e:  # sqlite3.Error mostly: locked, disk full, file gone
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error = StoreError(f"the chat database refused a write: {e}")
            return [(future, None, error) for _, future in jobs]


def _settle(outcomes: list) -> None:
    for future, result, error in outcomes:
        if future.done():  # the awaiting task was cancelled
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class SQLiteStore(Store):
    """Messages in one SQLite file, by default ``streamchat.db`` in the Jupyter data dir."""

    schemes = ("sqlite",)

    path = Unicode(
        help="""Path of the SQLite database file. Default: streamchat.db in the Jupyter data dir
        (never the server's root dir, so notebooks and data stay apart).""",
    ).tag(config=True)

    @default("path")
    def _default_path(self):
        return os.path.join(jupyter_data_dir(), "streamchat.db")

    journal_mode = Enum(
        ["WAL", "DELETE", "TRUNCATE", "PERSIST"],
        default_value="WAL",
        help="""SQLite journal mode. WAL lets reads run beside writes, but does not work on
        network filesystems (NFS, SMB): use DELETE there.""",
    ).tag(config=True)

    busy_timeout = Float(
        5.0,
        help="Seconds to wait for a database locked by another process before giving up.",
    ).tag(config=True)

    @classmethod
    def from_url(cls, url: str, **kwargs) -> "SQLiteStore":
        """``sqlite:////abs/path.db`` (absolute) or ``sqlite:///rel/path.db`` (relative)."""
        parsed = urlparse(url)
        if parsed.scheme not in cls.schemes or not parsed.path:
            raise ValueError(f"not a SQLite URL: {url!r} (expected sqlite:////absolute/path.db)")
        return cls(path=unquote(parsed.path[1:]), **kwargs)

    def describe(self) -> str:
        return f"SQLite database {os.path.abspath(self.path)} (journal mode {self.journal_mode})"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._writer: Optional[_Writer] = None
        self._reader: Optional[ThreadPoolExecutor] = None
        self._reader_conn: Optional[sqlite3.Connection] = None

    # -- lifecycle -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA journal_mode={self.journal_mode}")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    async def open(self) -> int:
        loop = asyncio.get_running_loop()
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = await loop.run_in_executor(None, self._connect)
            interrupted = await loop.run_in_executor(None, self._prepare, conn)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open the chat database {self.path}: {e}") from e
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="streamchat-sqlite-reader")
        self._reader_conn = conn
        self._writer = _Writer(self._connect, loop)
        self._writer.start()
        return interrupted

    def _prepare(self, conn: sqlite3.Connection) -> int:
        """Migrate the schema, then end what a dead server left streaming."""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this release "
                f"knows ({SCHEMA_VERSION}); upgrade jupyter-streamchat"
            )
        for number in range(version, SCHEMA_VERSION):
            # One transaction per migration, the version bump included.
            conn.executescript(
                f"BEGIN IMMEDIATE; {MIGRATIONS[number]}; PRAGMA user_version={number + 1}; COMMIT;"
            )
        conn.execute("BEGIN IMMEDIATE")
        try:
            interrupted = self._interrupt_streaming(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return interrupted

    @staticmethod
    def _interrupt_streaming(conn: sqlite3.Connection) -> int:
        rows = conn.execute("SELECT id, last_seq FROM messages WHERE status = ?", (STREAMING,))
        now = time.time()
        ended = 0
        for message_id, last_seq in rows.fetchall():
            text = "".join(
                c for (c,) in conn.execute(
                    "SELECT chunk FROM chunks WHERE message_id = ? ORDER BY seq", (message_id,)
                )
            )
            # Every reply ends in exactly one final frame: store an empty one.
            conn.execute(
                "INSERT INTO chunks (message_id, seq, chunk) VALUES (?, ?, '')",
                (message_id, last_seq + 1),
            )
            conn.execute(
                "UPDATE messages SET status = ?, text = ?, last_seq = ?, updated_at = ? WHERE id = ?",
                (INTERRUPTED, text, last_seq + 1, now, message_id),
            )
            ended += 1
        return ended

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.stop()
            await asyncio.get_running_loop().run_in_executor(None, self._writer.join)
            self._writer = None
        if self._reader is not None:
            self._reader.submit(self._reader_conn.close)
            self._reader.shutdown(wait=True)
            self._reader = None

    # -- plumbing --------------------------------------------------------------------------

    def _write(self, job: Callable[[sqlite3.Connection], object]) -> asyncio.Future:
        if self._writer is None:
            raise StoreError("the chat database is closed")
        return self._writer.submit(job)

    async def _read(self, job: Callable[[sqlite3.Connection], object]):
        if self._reader is None:
            raise StoreError("the chat database is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._reader, job, self._reader_conn)
        except sqlite3.Error as e:
            raise StoreError(f"the chat database refused a read: {e}") from e

    # -- writes ----------------------------------------------------------------------------

    async def create_exchange(
        self, conversation_id: str, agent_id: str, text: str, client_message_id: str
    ) -> Exchange:
        def job(conn: sqlite3.Connection) -> Exchange:
            seen = conn.execute(
                "SELECT u.id, u.conversation_id, r.id, r.agent_id, u.text FROM messages u "
                "JOIN messages r ON r.reply_to = u.id WHERE u.client_message_id = ?",
                (client_message_id,),
            ).fetchone()
            if seen:
                return Exchange(client_message_id, seen[1], seen[0], seen[2], seen[3], seen[4], False)
            now = time.time()
            conn.execute(
                "INSERT INTO conversations (id, title, created_at, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at",
                (conversation_id, text[:80], now, now),
            )
            user_id, reply_id = _new_id(), _new_id()
            conn.executemany(
                "INSERT INTO messages (id, conversation_id, role, agent_id, reply_to, "
                "client_message_id, status, text, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (user_id, conversation_id, "user", agent_id, None, client_message_id,
                     COMPLETE, text, now, now),
                    (reply_id, conversation_id, "assistant", agent_id, user_id, None,
                     STREAMING, "", now, now),
                ],
            )
            return Exchange(client_message_id, conversation_id, user_id, reply_id, agent_id, text, True)

        return await self._write(job)

    async def append(self, append: Append) -> None:
        def job(conn: sqlite3.Connection) -> None:
            seq = append.first_seq
            conn.executemany(
                "INSERT INTO chunks (message_id, seq, chunk) VALUES (?, ?, ?)",
                [(append.message_id, seq + i, chunk) for i, chunk in enumerate(append.chunks)],
            )
            last_seq = seq + len(append.chunks) - 1
            if append.status is None:
                conn.execute(
                    "UPDATE messages SET last_seq = ? WHERE id = ?", (last_seq, append.message_id)
                )
            else:
                conn.execute(
                    "UPDATE messages SET last_seq = ?, status = ?, error = ?, text = ?, "
                    "updated_at = ? WHERE id = ?",
                    (last_seq, append.status, append.error, append.text, time.time(),
                     append.message_id),
                )

        await self._write(job)

    async def delete_conversation(self, conversation_id: str) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            return conn.execute(
                "DELETE FROM conversations WHERE id = ?", (conversation_id,)
            ).rowcount > 0

        return await self._write(job)

    # -- reads -----------------------------------------------------------------------------

    @staticmethod
    def _message(conn: sqlite3.Connection, row: tuple) -> StoredMessage:
        message = StoredMessage(*row)
        if message.status == STREAMING:  # its text is still in chunks
            message.text = "".join(
                c for (c,) in conn.execute(
                    "SELECT chunk FROM chunks WHERE message_id = ? ORDER BY seq",
                    (message.message_id,),
                )
            )
        return message

    async def get_message(self, message_id: str) -> Optional[StoredMessage]:
        def job(conn: sqlite3.Connection):
            row = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
            return self._message(conn, row) if row else None

        return await self._read(job)

    async def replay(self, message_id: str, after_seq: int) -> tuple:
        def job(conn: sqlite3.Connection):
            conn.execute("BEGIN")  # one snapshot: the message row and its chunks agree
            try:
                row = conn.execute(
                    "SELECT id, conversation_id, role, agent_id, '', status, last_seq, error, "
                    "created_at FROM messages WHERE id = ?", (message_id,)
                ).fetchone()
                if row is None:
                    return None, []
                chunks = conn.execute(
                    "SELECT seq, chunk FROM chunks WHERE message_id = ? AND seq > ? ORDER BY seq",
                    (message_id, after_seq),
                ).fetchall()
                return StoredMessage(*row), chunks
            finally:
                conn.execute("COMMIT")

        return await self._read(job)

    async def get_conversation(self, conversation_id: str) -> Optional[list]:
        def job(conn: sqlite3.Connection):
            # One snapshot: a streaming reply's text must end exactly at its last_seq, or a
            # client that holds the text would get the next frame twice.
            conn.execute("BEGIN")
            try:
                if not conn.execute(
                    "SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)
                ).fetchone():
                    return None
                rows = conn.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? "
                    "ORDER BY pos",
                    (conversation_id,),
                ).fetchall()
                return [self._message(conn, row) for row in rows]
            finally:
                conn.execute("COMMIT")

        return await self._read(job)

    async def list_conversations(self) -> list:
        def job(conn: sqlite3.Connection):
            rows = conn.execute(
                "SELECT c.id, c.title, c.created_at, c.updated_at, "
                "(SELECT count(*) FROM messages m WHERE m.conversation_id = c.id) "
                "FROM conversations c ORDER BY c.updated_at DESC"
            ).fetchall()
            return [
                {"conversationId": r[0], "title": r[1], "createdAt": r[2], "updatedAt": r[3],
                 "messageCount": r[4]}
                for r in rows
            ]

        return await self._read(job)
