"""SQLite message store: the default, one file in the Jupyter data dir.

Writes go through one writer thread (``writer.py``), reads through a few threads with a
connection each (``readers.py``: WAL lets them run beside writes and beside one another, so a
slow read never holds the others); the event loop never waits on the disk. A search has a
deadline (``search_seconds``), and at most all readers but one run the reads that may be long
(searches, whole conversations), so a HISTORY always finds a reader free. A long reply is
indexed for search a slice per write job, after the write that ends it (``search.py``). The
schema and its migrations are in ``schema.py``, the leases of the processes sharing the file and
the recovery of replies whose producer is gone in ``leases.py``, and the check that the file is
still the one opened in ``fileguard.py``.

Every conversation is keyed by its user and its id, and every statement that reads or writes
one names both: another user's conversation is, to a caller, one that does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import unquote, urlparse

from jupyter_core.paths import jupyter_data_dir
from traitlets import Enum, Float, Int, Unicode, default

from .records import COMPLETE, FINAL_STATUSES, STREAMING
from . import appends, leases, search, toolcalls
from .base import EVERY_USER, SearchTooCostly, Store, StoreError
from .checkpoints import Checkpointer
from .fileguard import FileGuard
from .readers import Overtime, Readers
from .records import ConversationRecord, Exchange, HistoryPage, MessageRecord
from .schema import SchemaTooNew, migrate
from .writer import Writer

# A message's columns, as ``_record`` reads them; the large ones (a user message's text and
# context) last, so that a history page reads them for the messages it picked only.
_MESSAGE_COLUMNS = (
    "id, conversation_id, role, agent_id, status, last_seq, error, created_at, "
    "chars + reasoning_chars, usage, tool_calls, context, text"
)
_LARGE_COLUMNS = ", context, text"

# What a replay spells its frames from (``replay_frames``): the columns of ``_record`` but the
# tool calls, context and text, which a replay does not send.
_REPLAY_COLUMNS = "id, conversation_id, role, agent_id, status, last_seq, error, created_at, usage"

# A replayed frame's JSON text, spelled by SQLite (see ``FrameText``): a frame with neither
# thinking nor tool calls, nearly every one, costs four concatenations and one json_quote.
# "[]" and "null" are never stored for "no calls", but would be no toolCalls on the wire.
_FRAME_TEXTS = (
    "SELECT CASE WHEN reasoning = '' AND tool_calls IS NULL "
    "THEN ?1 || seq || ?2 || json_quote(chunk) || ?5 "
    "ELSE ?1 || seq || ?2 || json_quote(chunk) "
    "|| CASE WHEN reasoning <> '' THEN ?3 || json_quote(reasoning) ELSE '' END "
    "|| CASE WHEN tool_calls NOT IN ('[]', 'null') THEN ?4 || tool_calls ELSE '' END "
    "|| ?5 END FROM chunks WHERE message_id = ?6 AND seq > ?7 AND seq <= ?8 ORDER BY seq"
)

# Every character JSON escapes, a few it does not (DEL, U+2028, non-BMP...), and NUL.
_QUOTE_PROBE = "".join(map(chr, range(0x100))) + "\u2028\u2029\ufffd\uffff\U0001f600\U0010ffff"


def _quotes_as_python(conn: sqlite3.Connection) -> bool:
    """Whether this SQLite's json_quote() spells a string as json.dumps(text,
    ensure_ascii=False) does (3.40 does, NUL and all), so that frames it spells are byte for
    byte the ones the hub sends live. A library that differs, or has no JSON functions,
    replays through Python instead."""
    try:
        (quoted,) = conn.execute("SELECT json_quote(?)", (_QUOTE_PROBE,)).fetchone()
    except sqlite3.Error:
        return False
    return quoted == json.dumps(_QUOTE_PROBE, ensure_ascii=False)


# A conversation with no title of its own is listed under its first words.
TITLE_CHARS = 80

# A conversation as the list shows it (``ConversationRecord``, from ``_conversation``): its
# title, times, message count, the agent of its latest message, and whether a reply in it is
# streaming. The subqueries run per row read, each on the messages_by_conversation index.
_OF_C = "m.user_id = c.user_id AND m.conversation_id = c.id"
_CONVERSATION_COLUMNS = (
    "c.id, coalesce(nullif(c.title, ''), (SELECT substr(m.text, 1, %d) FROM messages m "
    "WHERE %s AND m.role = 'user' ORDER BY m.pos LIMIT 1), ''), "
    "c.created_at, c.updated_at, "
    "(SELECT count(*) FROM messages m WHERE %s), "
    "(SELECT m.agent_id FROM messages m WHERE %s ORDER BY m.pos DESC LIMIT 1), "
    "EXISTS (SELECT 1 FROM messages m WHERE %s AND m.status = '%s')"
    % (TITLE_CHARS, _OF_C, _OF_C, _OF_C, _OF_C, STREAMING)
)

# Where a page of the list starts: after the (updated_at, id) of the last row of the page before.
_AFTER = "(c.updated_at, c.id) < (?, ?)"


def _conversation(row: tuple) -> ConversationRecord:
    """A ConversationRecord from a row of ``_CONVERSATION_COLUMNS``."""
    cid, title, created, updated, count, agent, streaming = row
    return ConversationRecord(
        cid, " ".join(title.split()), created, updated, count, agent or "", bool(streaming)
    )


def _new_id() -> str:
    """32 hex digits that sort in the order they were made (milliseconds, then 80 random bits,
    as a UUIDv7 does). A reply's chunks are keyed by its id, so the replies streaming now all
    grow at the end of the chunks table, in pages of their own, rather than at random places
    in it: random ids cost a third more pages per frame once the file holds a few hundred
    conversations."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


class SQLiteStore(Store):
    """Messages in one SQLite file, by default ``streamchat.db`` in the Jupyter data dir."""

    schemes = ("sqlite",)

    path = Unicode(
        help="""Path of the SQLite database file. Default: streamchat.db in the Jupyter data dir
        (never the server's root dir, so notebooks and data stay apart). Several Jupyter
        servers, and kernels without one, may share it.""",
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

    checkpoint_seconds = Float(
        1.0,
        help="""Seconds between checkpoints (copies of the write-ahead log into the database,
        the writes that sync the disk), made on a thread of their own so that no commit waits
        for them; one copy then also covers many rewrites of the same pages. 0: SQLite
        checkpoints inside a commit every 1000 pages, its own default. WAL mode only.""",
    ).tag(config=True)

    lease_seconds = Float(
        30.0,
        help="""How long a process's claim on the replies it is generating lasts without
        renewal (renewed every third of it). Another process sharing the file ends such a
        reply as interrupted only once the claim expired, or at once when the producing
        process is known to have died on this machine.""",
    ).tag(config=True)

    readers = Int(
        4,
        help="""Reader threads, each with a connection of its own: reads run beside one another
        (in WAL mode; one reader otherwise makes no difference to what waits). All of them but
        one may run long reads (searches, whole conversations) at once.""",
    ).tag(config=True)

    search_seconds = Float(
        2.0,
        help="""Longest time one search may take; a search that would take longer is stopped
        and answered as too costly (say, a very short or repetitive text over a large store).""",
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
        self._guard = FileGuard(self.path)
        self._owner = leases.Owner()
        self._writer: Optional[Writer] = None
        self._appends: Optional[appends.AppendBatcher] = None
        self._readers: Optional[Readers] = None
        self._long_reads: Optional[asyncio.Semaphore] = None
        self._indexer: Optional[asyncio.Task] = None
        self._checkpointer: Optional[Checkpointer] = None
        self._lease_task: Optional[asyncio.Task] = None
        self._full_text = False  # the search index is FTS5 (else an ordinary table)
        self._spells_frames: Optional[bool] = None  # _quotes_as_python, asked on first use

    # -- lifecycle -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA journal_mode={self.journal_mode}")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            search.register_functions(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    async def open(self) -> int:
        loop = asyncio.get_running_loop()
        self._guard = FileGuard(self.path)  # the path may have been configured after init
        conns: list = []
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            if os.path.exists(self.path):
                read_only = self._guard.read_only()
                if read_only:
                    raise StoreError(f"{read_only}: chats can neither be stored nor read")
            for _ in range(max(1, self.readers) + 1):
                conns.append(await loop.run_in_executor(None, self._connect))
            self._guard.pin()
            interrupted = await loop.run_in_executor(None, self._prepare, conns[0])
        except (OSError, sqlite3.Error, SchemaTooNew, StoreError) as e:
            for conn in conns:
                conn.close()
            if isinstance(e, StoreError):
                raise
            raise StoreError(f"cannot open the chat database {self.path}: {e}") from e
        *reader_conns, writer_conn = conns
        self._readers = Readers(reader_conns, loop)
        self._long_reads = asyncio.Semaphore(max(1, len(reader_conns) - 1))
        after_commit = None
        if self.checkpoint_seconds > 0 and self.journal_mode == "WAL":
            writer_conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's job now
            self._checkpointer = Checkpointer(self._connect, self.checkpoint_seconds)
            self._checkpointer.start()
            after_commit = self._checkpointer.wrote
        self._writer = Writer(writer_conn, self._guard, loop, after_commit)
        self._writer.start()
        self._appends = appends.AppendBatcher(self._writer.submit, lambda: self._owner.id)
        self._lease_task = asyncio.ensure_future(self._keep_lease())
        self._index_backlog()  # slices a process before this one left unindexed
        return interrupted

    def _prepare(self, conn: sqlite3.Connection) -> int:
        """Migrate the schema, then take this process's lease and end what dead ones left."""
        migrate(conn, self.path, self.default_user)
        self._full_text = search.is_full_text(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._owner.register(conn, self.lease_seconds)
            interrupted = leases.recover(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return interrupted

    async def _keep_lease(self) -> None:
        """Renew the lease every third of its length, and end the replies of dead processes."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            owner = self._owner

            def job(conn: sqlite3.Connection) -> tuple:
                if not owner.renew(conn, self.lease_seconds):
                    return False, 0
                return True, leases.recover(conn)

            try:
                renewed, recovered = await self._writer.submit(job)
            except StoreError as e:
                self.log.warning("streamchat: could not renew this server's lease: %s", e)
                continue
            if recovered:
                self._index_backlog()
                self.log.warning(
                    "streamchat: %d reply(ies) of a stopped process were marked interrupted",
                    recovered,
                )
            if not renewed:
                self.log.error(
                    "streamchat: this server's lease on its replies expired (was "
                    "the process suspended?); they are ended as interrupted"
                )
                await self._new_owner()
                if self.on_lease_lost is not None:
                    self.on_lease_lost()

    async def _new_owner(self) -> None:
        owner = leases.Owner()
        try:
            await self._writer.submit(lambda conn: owner.register(conn, self.lease_seconds))
        except StoreError as e:
            self.log.warning("streamchat: could not take a new lease: %s", e)
        self._owner = owner

    async def recover(self) -> int:
        recovered = await self._write(leases.recover)
        if recovered:
            self._index_backlog()
        return recovered

    def _index_backlog(self) -> None:
        """Index the slices of long replies that wait for it, one write job each, unless a
        task does so already."""
        if self._indexer is None or self._indexer.done():
            self._indexer = asyncio.ensure_future(self._run_indexer())

    async def _run_indexer(self) -> None:
        while self._writer is not None:
            try:
                if not await self._writer.submit(search.index_next_slice):
                    return
            except StoreError as e:  # the next reply that ends tries again
                self.log.warning("streamchat: a long reply is not all searchable yet: %s", e)
                return

    async def search_index_idle(self) -> None:
        """Wait until every reply that ended is searchable in full (tests, benchmarks)."""
        while True:
            if self._indexer is not None and not self._indexer.done():
                await asyncio.shield(self._indexer)
            elif not await self._write(search.backlog):
                return
            else:
                self._index_backlog()

    async def close(self) -> None:
        for task in (self._lease_task, self._indexer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, StoreError):
                    await task
        self._lease_task = self._indexer = None
        self._appends = None
        if self._writer is not None:
            owner = self._owner
            with contextlib.suppress(StoreError):
                await self._writer.submit(owner.release)
            self._writer.stop()
            await asyncio.get_running_loop().run_in_executor(None, self._writer.join)
            self._writer = None
        if self._checkpointer is not None:
            self._checkpointer.stop()
            await asyncio.get_running_loop().run_in_executor(None, self._checkpointer.join)
            self._checkpointer = None
        if self._readers is not None:
            readers, self._readers = self._readers, None
            await asyncio.get_running_loop().run_in_executor(None, readers.close)

    # -- plumbing --------------------------------------------------------------------------

    def _write(self, job: Callable[[sqlite3.Connection], object]) -> asyncio.Future:
        if self._writer is None:
            raise StoreError("the chat database is closed")
        return self._writer.submit(job)

    async def _read(
        self,
        job: Callable[[sqlite3.Connection], object],
        long: bool = False,
        seconds: Optional[float] = None,
    ):
        """``job(conn)`` on a reader thread. ``long``: a read that may take long, run only
        while another reader stays free for the short ones. ``seconds``: a deadline, past
        which the job is interrupted and :class:`Overtime` raised. Cancelling the awaiting
        task interrupts the job at once."""
        if self._readers is None:
            raise StoreError("the chat database is closed")

        def guarded(conn: sqlite3.Connection):
            problem = self._guard.problem(writing=False)
            if problem:
                raise StoreError(problem)
            return job(conn)

        try:
            if not long:
                return await self._readers.run(guarded)
            async with self._long_reads:
                if self._readers is None:
                    raise StoreError("the chat database is closed")
                deadline = time.monotonic() + seconds if seconds is not None else None
                return await self._readers.run(guarded, deadline)
        except sqlite3.Error as e:
            raise StoreError(f"the chat database refused a read: {e}") from e

    def _user(self, user) -> str:
        """The user a call that reads or writes one user's conversations acts for."""
        user = self.user_of(user)
        if user is EVERY_USER or not isinstance(user, str):
            raise TypeError(f"user must be a user's name, not {user!r}")
        return user

    def _scope(self, user) -> tuple:
        """``(SQL condition on messages, arguments)`` for a read of one message: in one of
        ``user``'s conversations, or in anyone's for EVERY_USER."""
        if user is EVERY_USER:
            return "", ()
        return " AND user_id = ?", (self._user(user),)

    # -- writes ----------------------------------------------------------------------------

    async def create_exchange(
        self,
        conversation_id: str,
        agent_id: str,
        text: str,
        client_message_id: str,
        *,
        user: Optional[str] = None,
        context: Optional[list] = None,
    ) -> Exchange:
        owner = self._owner
        user = self._user(user)
        context_json = toolcalls.dumps(context)

        def job(conn: sqlite3.Connection) -> Exchange:
            seen = conn.execute(
                "SELECT u.id, r.id, r.agent_id, u.text FROM messages u "
                "JOIN messages r ON r.user_id = u.user_id "
                "AND r.conversation_id = u.conversation_id AND r.reply_to = u.id "
                "WHERE u.user_id = ? AND u.conversation_id = ? AND u.client_message_id = ?",
                (user, conversation_id, client_message_id),
            ).fetchone()
            if seen:
                return Exchange(
                    client_message_id,
                    conversation_id,
                    seen[0],
                    seen[1],
                    seen[2],
                    seen[3],
                    False,
                    user,
                )
            now = time.time()
            conn.execute(
                "INSERT INTO conversations (user_id, id, title, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (user_id, id) DO UPDATE SET updated_at = excluded.updated_at",
                (user, conversation_id, text[:80], now, now),
            )
            user_message_id, reply_id = _new_id(), _new_id()
            conn.executemany(
                "INSERT INTO messages (id, user_id, conversation_id, role, agent_id, reply_to, "
                "client_message_id, status, text, chars, owner, created_at, updated_at, "
                "context) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        user_message_id,
                        user,
                        conversation_id,
                        "user",
                        agent_id,
                        None,
                        client_message_id,
                        COMPLETE,
                        text,
                        len(text),
                        None,
                        now,
                        now,
                        context_json,
                    ),
                    (
                        reply_id,
                        user,
                        conversation_id,
                        "assistant",
                        agent_id,
                        user_message_id,
                        None,
                        STREAMING,
                        "",
                        0,
                        owner.id,
                        now,
                        now,
                        None,
                    ),
                ],
            )
            search.add_user_message(conn, user_message_id)  # the reply is added when it ends
            return Exchange(
                client_message_id,
                conversation_id,
                user_message_id,
                reply_id,
                agent_id,
                text,
                True,
                user,
            )

        return await self._write(job)

    async def append(self, append) -> None:
        if append.status is None and self._appends is not None:
            await self._appends.add(append)  # with the other replies' frames of this round
            return
        owner_id = self._owner.id
        if await self._write(lambda conn: appends.write_one(conn, append, owner_id)):
            self._index_backlog()  # the slices of a long reply past its first

    async def delete_conversation(
        self, conversation_id: str, *, user: Optional[str] = None
    ) -> bool:
        user = self._user(user)

        def job(conn: sqlite3.Connection) -> bool:
            search.forget_conversation(conn, user, conversation_id)
            return (
                conn.execute(
                    "DELETE FROM conversations WHERE user_id = ? AND id = ?",
                    (user, conversation_id),
                ).rowcount
                > 0
            )

        return await self._write(job)

    async def rename_conversation(
        self, conversation_id: str, title: str, *, user: Optional[str] = None
    ) -> bool:
        user = self._user(user)

        def job(conn: sqlite3.Connection) -> bool:
            if not conn.execute(
                "UPDATE conversations SET title = ? WHERE user_id = ? AND id = ?",
                (title, user, conversation_id),
            ).rowcount:
                return False
            search.set_title(conn, user, conversation_id, title)
            return True

        return await self._write(job)

    # -- reads -----------------------------------------------------------------------------

    @staticmethod
    def _record(
        conn: sqlite3.Connection, row: tuple, max_chars: Optional[int] = None
    ) -> MessageRecord:
        """A message from a ``_MESSAGE_COLUMNS`` row; a reply's text (and thinking) is read from
        its chunks, up to ``max_chars`` of whole frames if given (and its tool calls, then, as
        of the last of those frames)."""
        (
            message_id,
            conversation_id,
            role,
            agent_id,
            status,
            last_seq,
            error,
            created,
            chars,
            usage,
            tool_calls,
            context,
            text,
        ) = row
        record = MessageRecord(
            message_id, conversation_id, role, agent_id, text, status, last_seq, error, created
        )
        record.context = toolcalls.loads(context)
        if role != "assistant":
            return record
        record.usage = json.loads(usage) if usage else None
        record.tool_calls = toolcalls.loads(tool_calls)
        cut = max_chars is not None and chars > max_chars
        frames = conn.execute(
            f"SELECT seq, chunk, reasoning{', tool_calls' if cut else ', NULL'} FROM chunks "
            "WHERE message_id = ? AND seq <= ? ORDER BY seq",
            (message_id, last_seq),
        )
        parts, thoughts, calls, size, upto = [], [], [], 0, 0
        for seq, chunk, thinking, frame_calls in frames:
            if cut and size + len(chunk) + len(thinking) > max_chars:
                record.truncated = True
                break
            parts.append(chunk)
            thoughts.append(thinking)
            if frame_calls is not None:
                calls.append(json.loads(frame_calls))
            size += len(chunk) + len(thinking)
            upto = seq
        record.text, record.reasoning = "".join(parts), "".join(thoughts)
        if record.truncated:
            record.last_seq = upto
            record.tool_calls = toolcalls.merge(calls)
        return record

    @staticmethod
    def _conversation_exists(conn: sqlite3.Connection, user: str, conversation_id: str) -> bool:
        return (
            conn.execute(
                "SELECT 1 FROM conversations WHERE user_id = ? AND id = ?", (user, conversation_id)
            ).fetchone()
            is not None
        )

    @staticmethod
    @contextlib.contextmanager
    def _snapshot(conn: sqlite3.Connection):
        # One read transaction: a streaming reply's text must end exactly at its last_seq, or a
        # client that holds the text would get the next frame twice.
        conn.execute("BEGIN")
        try:
            yield
        finally:
            conn.execute("COMMIT")

    async def get_message(self, message_id: str, *, user=None) -> Optional[MessageRecord]:
        scope, scope_args = self._scope(user)

        def job(conn: sqlite3.Connection):
            with self._snapshot(conn):
                row = conn.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?{scope}",
                    (message_id, *scope_args),
                ).fetchone()
                return self._record(conn, row) if row else None

        return await self._read(job)

    async def replay(self, message_id: str, after_seq: int, *, user=None) -> tuple:
        scope, scope_args = self._scope(user)

        def job(conn: sqlite3.Connection):
            with self._snapshot(conn):
                row = conn.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?{scope}",
                    (message_id, *scope_args),
                ).fetchone()
                if row is None:
                    return None, []
                chunks = [
                    (seq, chunk, thinking, None if calls is None else json.loads(calls))
                    for seq, chunk, thinking, calls in conn.execute(
                        "SELECT seq, chunk, reasoning, tool_calls FROM chunks "
                        "WHERE message_id = ? AND seq > ? AND seq <= ? ORDER BY seq",
                        (message_id, after_seq, row[5]),
                    )
                ]
                mid, cid, role, agent_id, status, last_seq, error, created = row[:8]
                record = MessageRecord(
                    mid,
                    cid,
                    role,
                    agent_id,
                    "",
                    status,
                    last_seq,
                    error,
                    created,
                    usage=json.loads(row[9]) if row[9] else None,
                    tool_calls=toolcalls.loads(row[10]),
                    context=toolcalls.loads(row[11]),
                )
                return record, chunks

        return await self._read(job)

    async def replay_frames(self, message_id: str, after_seq: int, shape, *, user=None):
        if self._spells_frames is False:
            return None
        scope, scope_args = self._scope(user)

        def job(conn: sqlite3.Connection):
            if self._spells_frames is None:
                self._spells_frames = _quotes_as_python(conn)
            if not self._spells_frames:
                return None
            with self._snapshot(conn):
                row = conn.execute(
                    f"SELECT {_REPLAY_COLUMNS} FROM messages WHERE id = ?{scope}",
                    (message_id, *scope_args),
                ).fetchone()
                if row is None:
                    return None, [], None
                mid, cid, role, agent_id, status, last_seq, error, created, usage = row
                record = MessageRecord(
                    mid, cid, role, agent_id, "", status, last_seq, error, created
                )
                record.usage = json.loads(usage) if usage else None
                ended = status in FINAL_STATUSES and last_seq > after_seq
                spelled = shape(record)
                texts = [
                    text
                    for (text,) in conn.execute(
                        _FRAME_TEXTS,
                        (*spelled, message_id, after_seq, last_seq - 1 if ended else last_seq),
                    )
                ]
                last = None
                if ended:
                    final = conn.execute(
                        "SELECT seq, chunk, reasoning, tool_calls FROM chunks "
                        "WHERE message_id = ? AND seq = ?",
                        (message_id, last_seq),
                    ).fetchone()
                    if final is not None:
                        last = (*final[:3], toolcalls.loads(final[3]))
                return record, texts, last

        return await self._read(job)

    async def history(
        self,
        conversation_id: str,
        before_message_id: Optional[str],
        max_messages: int,
        max_chars: int,
        *,
        user: Optional[str] = None,
    ) -> Optional[HistoryPage]:
        user = self._user(user)

        def job(conn: sqlite3.Connection):
            with self._snapshot(conn):
                if not self._conversation_exists(conn, user, conversation_id):
                    return None
                bound = None
                if before_message_id is not None:
                    found = conn.execute(
                        "SELECT pos FROM messages WHERE id = ? AND user_id = ? "
                        "AND conversation_id = ?",
                        (before_message_id, user, conversation_id),
                    ).fetchone()
                    if found is None:
                        return None
                    bound = found[0]
                rows = conn.execute(
                    f"SELECT {_MESSAGE_COLUMNS.replace(_LARGE_COLUMNS, '')}, pos FROM messages "
                    "WHERE user_id = ? AND conversation_id = ? AND pos < ? "
                    "ORDER BY pos DESC LIMIT ?",
                    (
                        user,
                        conversation_id,
                        bound if bound is not None else 2**62,
                        max_messages + 1,
                    ),
                ).fetchall()
                picked, used = [], 0
                for row in rows[:max_messages]:
                    chars = row[8]
                    if picked and used + chars > max_chars:
                        break
                    picked.append(row)
                    used += chars
                messages = []
                for row in reversed(picked):
                    large = (None, "")
                    if row[2] == "user":
                        large = conn.execute(
                            f"SELECT {_LARGE_COLUMNS[2:]} FROM messages WHERE pos = ?", (row[11],)
                        ).fetchone()
                    # Only a page's one message may be over the budget; it comes cut short.
                    messages.append(self._record(conn, row[:11] + tuple(large), max_chars))
                return HistoryPage(conversation_id, messages, has_more=len(picked) < len(rows))

        return await self._read(job)

    async def get_conversation(
        self, conversation_id: str, *, user: Optional[str] = None
    ) -> Optional[list]:
        user = self._user(user)

        def job(conn: sqlite3.Connection):
            with self._snapshot(conn):
                if not self._conversation_exists(conn, user, conversation_id):
                    return None
                rows = conn.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE user_id = ? "
                    "AND conversation_id = ? ORDER BY pos",
                    (user, conversation_id),
                ).fetchall()
                return [self._record(conn, row) for row in rows]

        return await self._read(job, long=True)

    async def list_conversations(
        self, limit: int = 0, after: Optional[tuple] = None, *, user: Optional[str] = None
    ) -> list:
        user = self._user(user)

        def job(conn: sqlite3.Connection):
            # Keyset paging on the (user, updated_at, id) index: a page costs the same in a
            # store of ten conversations or of a hundred thousand.
            where = f"AND {_AFTER}" if after is not None else ""
            rows = conn.execute(
                f"SELECT {_CONVERSATION_COLUMNS} FROM conversations c WHERE c.user_id = ? "
                f"{where} ORDER BY c.updated_at DESC, c.id DESC LIMIT ?",
                [user, *(after or ()), limit or -1],
            ).fetchall()
            return [_conversation(row) for row in rows]

        return await self._read(job)

    async def get_conversation_record(
        self, conversation_id: str, *, user: Optional[str] = None
    ) -> Optional[ConversationRecord]:
        user = self._user(user)

        def job(conn: sqlite3.Connection):
            row = conn.execute(
                f"SELECT {_CONVERSATION_COLUMNS} FROM conversations c "
                "WHERE c.user_id = ? AND c.id = ?",
                (user, conversation_id),
            ).fetchone()
            return _conversation(row) if row else None

        return await self._read(job)

    async def search_conversations(
        self,
        query: str,
        limit: int = 0,
        after: Optional[tuple] = None,
        *,
        user: Optional[str] = None,
    ) -> list:
        full_text = self._full_text
        user = self._user(user)

        def job(conn: sqlite3.Connection):
            # The index names the rows that hold the text; each row's message (found by its
            # primary key, CROSS JOIN keeping the index the outer loop) tells its user and
            # conversation, and the first message holding it in each conversation (the lowest
            # order key, message then slice: titles have none). Those conversations are
            # ordered and paged as the list is, and only then are the columns of the page's
            # rows worked out (each costs a few subqueries).
            matches, args = search.condition(query, full_text)
            where = f"AND {_AFTER}" if after is not None else ""
            with self._snapshot(conn):
                rows = conn.execute(
                    "WITH hits AS (SELECT m.conversation_id, "
                    f"min(CASE WHEN search.rowid > 0 THEN {search.order_key()} END) AS first "
                    f"FROM search CROSS JOIN messages m ON m.pos = {search.pos_of_row()} "
                    f"WHERE {matches} AND m.user_id = ? GROUP BY m.conversation_id), "
                    "page AS (SELECT c.id, hits.first FROM conversations c JOIN hits "
                    f"ON c.user_id = ? AND c.id = hits.conversation_id {where} "
                    "ORDER BY c.updated_at DESC, c.id DESC LIMIT ?) "
                    f"SELECT {_CONVERSATION_COLUMNS}, page.first FROM page "
                    "JOIN conversations c ON c.user_id = ? AND c.id = page.id "
                    "ORDER BY c.updated_at DESC, c.id DESC",
                    [*args, user, user, *(after or ()), limit or -1, user],
                ).fetchall()
                found = []
                for row in rows:
                    record = _conversation(row[:-1])
                    record.snippet = search.snippet_of(conn, search.split_key(row[-1]), query)
                    found.append(record)
                return found

        try:
            return await self._read(job, long=True, seconds=self.search_seconds)
        except Overtime:
            raise SearchTooCostly(
                f"searching for this text would take longer than this server allows one search "
                f"({self.search_seconds:g} s); try a longer or more distinctive text"
            ) from None
