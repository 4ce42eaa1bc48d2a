"""Postgres message store: one database shared by any number of Jupyter servers.

``StreamChatApp.store_url = "postgresql://user:password@host/db"`` (``postgres://`` too; any
libpq URL). Needs ``pip install "jupyter-streamchat[postgres]"`` (psycopg 3 and psycopg_pool).

Everything is asynchronous (psycopg's async connections): the event loop never waits on the
network. Reads take a connection from a pool; writes queue for one writer task that commits
every round of them in one transaction (``pgwriter.py``) and tells the other servers what it
committed with NOTIFY, in that same transaction; a dedicated connection LISTENs for what they
commit (``pglisten.py``). The schema and its migrations are in ``pgschema.py``; texts are
written as Postgres can hold them (``pgtext.py``).

Conversations belong to users (primary key ``(user_id, id)``), and every query names the user:
another user's conversation is exactly as absent as one that exists nowhere.

Leases: each store instance registers as an owner whose ``lease_until`` is kept by the
database's clock (servers' clocks may differ) and renewed every third of ``lease_seconds``. Each
renewal also ends as ``interrupted`` the streaming replies of owners whose lease expired (a
killed server's replies end within ``lease_seconds`` and a third), and tells the others. A
server that finds its own lease expired (it was suspended, or cut off from the database for
longer than the lease) logs it, takes a new lease and calls ``on_lease_lost``: its replies
were ended by another server (or by its own recovery), and their appends raise LeaseLost.

Search reads the texts with ILIKE: user messages, titles, and replies once they ended (a
reply's whole text is kept in its row when it ends, in the write that ends it); pg_trgm's GIN
indexes make that fast where the extension is available. Snippets are cut out by SQL and made
by ``search.snippet``, as in the SQLite store.

Outages: a connection attempt gives up after ``connect_timeout``, a wait for a pooled one
after ``pool_timeout``, any request after ``request_timeout`` (a database that hangs without
closing its connections), a connection whose network went silent within seconds (TCP
keepalives); every method then raises StoreError, which names the database without its
password. The pool reconnects by itself when Postgres is back, and nothing that was
acknowledged is lost: writes are acknowledged only once committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import secrets
import time
from typing import Optional

import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from traitlets import Float, Int

from .. import redact
from . import leases, search, toolcalls
from .base import EVERY_USER, SearchTooCostly, Store, StoreError
from .hints import ConversationChanged, ExchangeCreated, FramesCommitted
from .pglisten import Listener, notify
from .pgschema import SchemaTooNew, ensure_trigram_indexes, migrate
from .pgtext import dec, dec_opt, enc
from .pgwriter import NOW, AppendLeaseLost, Writer
from .records import (
    COMPLETE,
    INTERRUPTED,
    STREAMING,
    ConversationRecord,
    Exchange,
    HistoryPage,
    MessageRecord,
)

# A conversation with no title of its own is listed under its first words (as in sqlite.py).
TITLE_CHARS = 80

# A message's columns, as ``_record`` reads them.
_COLUMNS = (
    "m.id, m.conversation_id, m.role, m.agent_id, m.status, m.last_seq, m.error, "
    "m.created_at, m.chars + m.reasoning_chars, m.usage, m.reasoning_chars, m.pos"
)
_POS, _TOTAL, _THOUGHT = 11, 8, 10

# Of the same user's conversation ``c``.
_OF_C = "m.user_id = c.user_id AND m.conversation_id = c.id"

# A conversation as the list shows it: title, times, message count, the agent of its latest
# message, and whether a reply in it is streaming (each on the messages_by_conversation index).
_CONVERSATION_COLUMNS = (
    "c.id, coalesce(nullif(c.title, ''), (SELECT substr(m.text, 1, %d) FROM messages m "
    "WHERE %s AND m.role = 'user' ORDER BY m.pos LIMIT 1), ''), c.created_at, c.updated_at, "
    "(SELECT count(*) FROM messages m WHERE %s), "
    "(SELECT m.agent_id FROM messages m WHERE %s ORDER BY m.pos DESC LIMIT 1), "
    "EXISTS (SELECT 1 FROM messages m WHERE %s AND m.status = '%s')"
    % (TITLE_CHARS, _OF_C, _OF_C, _OF_C, _OF_C, STREAMING)
)

# Where a page of the list starts: after the (updated_at, id) of the last row of the page before.
_AFTER = "AND (c.updated_at, c.id) < (%(at)s, %(after)s)"

# How much of a message is read to find a match whose case differs beyond ASCII (search.py).
_UNICODE_WINDOW = 64 * 1024
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ASCII_LOWER = str.maketrans(_UPPER, _UPPER.lower())

# A reply's text and thinking, from its frames up to last_seq.
_FRAMES = (
    "SELECT string_agg(c.chunk, '' ORDER BY c.seq) AS text, "
    "string_agg(c.reasoning, '' ORDER BY c.seq) AS reasoning "
    "FROM chunks c WHERE c.message_id = m.id AND c.seq <= m.last_seq"
)
# Whether a message's text is its row's (a user message, an ended reply without thinking).
_TEXT_IN_ROW = "(m.role = 'user' OR (m.status <> 'streaming' AND m.reasoning_chars = 0))"


def _conversation(row: tuple) -> ConversationRecord:
    cid, title, created, updated, count, agent, streaming = row[:7]
    return ConversationRecord(
        cid, " ".join(dec(title).split()), created, updated, count, dec(agent or ""), streaming
    )


def _new_id() -> str:
    """32 hex digits that sort in the order they were made (as the SQLite store's ids)."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


def _record(row: tuple) -> MessageRecord:
    """A message from a ``_COLUMNS`` row, its text still empty."""
    mid, cid, role, agent_id, status, last_seq, error, created, _, usage = row[:10]
    return MessageRecord(
        mid,
        cid,
        role,
        dec(agent_id),
        "",
        status,
        last_seq,
        dec_opt(error),
        created,
        usage=json.loads(dec(usage)) if usage else None,
    )


def _like(query: str) -> str:
    """An ILIKE pattern finding ``query`` anywhere, its own % _ and \\ taken literally."""
    return "%" + re.sub(r"([\\%_])", r"\\\1", enc(query)) + "%"


# Errors that say the connection, not the request, failed.
_CONNECTION_LOST = (
    errors.ConnectionException,
    errors.AdminShutdown,
    errors.CrashShutdown,
    errors.CannotConnectNow,
)


class _Overdue(Exception):
    """A request ran past ``request_timeout``."""


class _LeaseGone(StoreError):
    """A new reply could not be made under this server's lease: it had expired."""

    def __init__(self):
        super().__init__("this server's lease on its replies expired; try again")


@contextlib.asynccontextmanager
async def _deadline(seconds: float):
    """Cancel the block after ``seconds`` (0: never) and raise :class:`_Overdue` instead (as
    ``asyncio.timeout`` does from Python 3.11 on). psycopg answers the cancellation of a query
    by cancelling it on the server, and gives up on the connection if that goes unanswered."""
    if not seconds or seconds <= 0:
        yield
        return
    task = asyncio.current_task()
    fired = []

    def fire():
        fired.append(True)
        task.cancel()

    handle = asyncio.get_running_loop().call_later(seconds, fire)
    try:
        yield
    except asyncio.CancelledError:
        if not fired:
            raise
        if hasattr(task, "uncancel"):  # Python 3.11+: this cancellation is handled here
            task.uncancel()
        raise _Overdue() from None
    finally:
        handle.cancel()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class PostgresStore(Store):
    """Messages in a PostgreSQL database that several Jupyter servers may share."""

    schemes = ("postgresql", "postgres")
    shared = True

    pool_min_size = Int(
        1, help="Connections the pool keeps open for reads and writes, even when idle."
    ).tag(config=True)

    pool_max_size = Int(
        8,
        help="""Most connections the pool opens (besides the one that listens for other
        servers' writes). Reads beyond that wait, up to pool_timeout.""",
    ).tag(config=True)

    pool_timeout = Float(
        5.0,
        help="""Seconds a request waits for a connection from the pool before it fails (with
        an error saying the database cannot be reached, when that is why).""",
    ).tag(config=True)

    connect_timeout = Float(
        5.0,
        help="""Seconds to wait for a new connection to the database (libpq's connect_timeout,
        at least 2), unless the URL sets connect_timeout itself.""",
    ).tag(config=True)

    lease_seconds = Float(
        10.0,
        help="""How long this server's claim on the replies it is generating lasts without
        renewal (renewed every third of it, by the database's clock). Another server ends
        such a reply as interrupted once the claim expired: a server that died without
        closing has its replies ended within this and a third.""",
    ).tag(config=True)

    search_seconds = Float(
        2.0,
        help="""Longest time one search statement may take (statement_timeout); a search
        that would take longer is stopped and answered as too costly.""",
    ).tag(config=True)

    request_timeout = Float(
        20.0,
        help="""Longest time one request to the database (a read, or a round of writes) may
        take, waiting for a pooled connection included; past it the request fails with an
        error saying the database did not answer. It bounds the wait on a database that hangs
        without closing its connections (a network that drops packets is noticed sooner, by
        TCP keepalives). 0: no limit.""",
    ).tag(config=True)

    @classmethod
    def from_url(cls, url: str, **kwargs) -> "PostgresStore":
        """``postgresql://user:password@host:port/dbname?param=value`` (libpq's URL form)."""
        return cls(url=url, **kwargs)

    def __init__(self, url: str = "", **kwargs):
        super().__init__(**kwargs)
        redact.register_url(url)
        scheme = url.split(":", 1)[0].lower()
        try:
            if scheme not in self.schemes:
                raise ValueError
            params = conninfo_to_dict(url)
        except (ValueError, psycopg.Error):
            raise ValueError(
                f"not a PostgreSQL URL: {redact.without_password(url)!r} "
                "(expected postgresql://user:password@host/dbname)"
            ) from None
        redact.register(params.get("password"))
        self.url = url
        self._params = params
        self._owner = leases.Owner()  # a new one when the lease was lost
        self._origin = self._owner.id  # names this store's notifications, for good
        self._registered = False  # whether the owner's row was ever written
        self._pool: Optional[AsyncConnectionPool] = None
        self._writer: Optional[Writer] = None
        self._listener: Optional[Listener] = None
        self._lease_task: Optional[asyncio.Task] = None
        self._tasks: set = set()
        self._losing_lease = False
        self.trigram = False  # whether search has pg_trgm's indexes

    @property
    def _owner_id(self) -> str:
        """The id of this server's current lease in ``owners``."""
        return self._owner.id

    # -- where, and how to connect ---------------------------------------------------------

    @property
    def where(self) -> str:
        """The database, named without its password: ``user@host:port/dbname``."""
        p = self._params
        host = p.get("host") or p.get("hostaddr") or "localhost"
        port = p.get("port") or "5432"
        user = p.get("user") or ""
        dbname = p.get("dbname") or user
        return f"{user + '@' if user else ''}{host}:{port}/{dbname}"

    def describe(self) -> str:
        return f"PostgreSQL database {self.where}"

    def _connect_params(self, application_name: str) -> dict:
        """libpq parameters the URL does not set itself: quick failure when the server or the
        network is gone, and a name in pg_stat_activity. Beside the connect timeout, TCP
        keepalives and a TCP user timeout find a connection whose network went silent
        (packets dropped, no reset) within about ten seconds, rather than the system's hours."""
        defaults = {
            "connect_timeout": str(max(2, math.ceil(self.connect_timeout))),
            "application_name": application_name,
            "keepalives": "1",
            "keepalives_idle": "5",
            "keepalives_interval": "2",
            "keepalives_count": "3",
            "tcp_user_timeout": "10000",  # milliseconds
        }
        return {k: v for k, v in defaults.items() if k not in self._params}

    async def _connect(self, application_name: str = "jupyter-streamchat"):
        return await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, **self._connect_params(application_name)
        )

    def _error(self, e: BaseException) -> Exception:
        """The StoreError to raise for ``e``, in words that name no password."""
        if isinstance(e, (StoreError, SearchTooCostly)):
            return e
        detail = redact.redact(_first_line(e))
        gone = isinstance(e, (PoolTimeout, OSError, *_CONNECTION_LOST)) or (
            isinstance(e, (psycopg.OperationalError, psycopg.InterfaceError))
            and getattr(e, "sqlstate", None) is None  # the client's own: the socket failed
        )
        if gone:
            return StoreError(f"the chat database {self.where} cannot be reached ({detail})")
        return StoreError(f"the chat database {self.where} refused the request ({detail})")

    @contextlib.asynccontextmanager
    async def _conn(self):
        """A pooled connection (autocommit), for at most ``request_timeout``; any failure
        comes out as StoreError."""
        if self._pool is None:
            raise StoreError(f"the chat database {self.where} is closed")
        try:
            async with _deadline(self.request_timeout), self._pool.connection() as conn:
                yield conn
        except _Overdue:
            raise StoreError(
                f"the chat database {self.where} did not answer within {self.request_timeout:g} s"
            ) from None
        except (psycopg.Error, OSError, UnicodeError) as e:
            raise self._error(e) from None

    @staticmethod
    @contextlib.asynccontextmanager
    async def _snapshot(conn):
        # One read-only snapshot: a streaming reply's text must end exactly at its last_seq,
        # and a page's messages be those of one moment.
        async with conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield

    def _user(self, user) -> str:
        user = self.user_of(user)
        if user is EVERY_USER:
            raise ValueError("EVERY_USER reads one message (get_message, replay), nothing else")
        return user

    def _write(self, job) -> asyncio.Future:
        if self._writer is None:
            raise StoreError(f"the chat database {self.where} is closed")
        return self._writer.submit(job)

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> int:
        """Migrate, take a lease, recover; then the pool, the writer and the listener."""
        try:
            conn = await self._connect()
        except (psycopg.Error, OSError) as e:
            raise StoreError(
                f"cannot open the chat database {self.where}: {redact.redact(_first_line(e))}"
            ) from None
        try:
            await migrate(conn, self.where)
            self.trigram = await ensure_trigram_indexes(conn, self.log)
            (ctype,) = await (await conn.execute("SHOW lc_ctype")).fetchone()
            if ctype in ("C", "POSIX"):
                self.log.info(
                    "streamchat: database %s has LC_CTYPE %s: search ignores the case of "
                    "ASCII letters only",
                    self.where,
                    ctype,
                )
            async with conn.transaction():
                await self._register(conn, self._owner)
                ended = await self._recover_in(conn)
                await notify(conn, self._origin, ended)
        except SchemaTooNew as e:
            raise StoreError(str(e)) from None
        except (psycopg.Error, OSError) as e:
            raise StoreError(
                f"cannot open the chat database {self.where}: {redact.redact(_first_line(e))}"
            ) from None
        finally:
            await conn.close()
        pool = AsyncConnectionPool(
            self.url,
            kwargs={"autocommit": True, **self._connect_params("jupyter-streamchat")},
            min_size=max(1, self.pool_min_size),
            max_size=max(1, self.pool_min_size, self.pool_max_size),
            timeout=self.pool_timeout,
            check=AsyncConnectionPool.check_connection,  # a connection broken meanwhile
            name="streamchat",
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=max(self.pool_timeout, self.connect_timeout))
        except (psycopg.Error, OSError) as e:
            await pool.close()
            raise self._error(e) from None
        self._pool = pool
        self._writer = Writer(
            self._conn, lambda: self._origin, lambda: self._owner.id, self._error, self.log
        )
        listener = Listener(
            lambda: self._connect("jupyter-streamchat-listen"),
            lambda: self._origin,
            self._hint,
            self.log,
            probe_seconds=max(1.0, self.lease_seconds),
        )
        try:
            await listener.start()
        except (psycopg.Error, OSError) as e:
            await self.close()
            raise StoreError(
                f"cannot listen on the chat database {self.where}: {redact.redact(_first_line(e))}"
            ) from None
        self._listener = listener
        self._lease_task = asyncio.ensure_future(self._keep_lease())
        self._tell_here(ended)
        return len(ended)

    def _hint(self, hint) -> None:
        if self.on_hint is not None:
            self.on_hint(hint)

    async def close(self) -> None:
        tasks = [t for t in (self._lease_task, *self._tasks) if t is not None]
        self._lease_task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await writer.stop()
        if self._pool is not None:
            with contextlib.suppress(StoreError):
                async with self._conn() as conn:
                    await conn.execute("DELETE FROM owners WHERE id = %s", (self._owner.id,))
            pool, self._pool = self._pool, None
            await pool.close()

    async def search_index_idle(self) -> None:
        """Until every write queued so far is committed: a reply is searchable from the
        write that ends it (tests, benchmarks)."""
        if self._writer is not None:
            await self._writer.idle()

    # -- leases ----------------------------------------------------------------------------

    async def _register(self, conn, owner: leases.Owner) -> None:
        await conn.execute(
            "INSERT INTO owners (id, machine, pid, lease_until) "
            "VALUES (%s, %s, %s, now() + make_interval(secs => %s)) "
            "ON CONFLICT (id) DO UPDATE SET lease_until = excluded.lease_until",
            (owner.id, owner.machine, owner.pid, self.lease_seconds),
        )
        if owner is self._owner:
            self._registered = True

    async def _recover_in(self, conn) -> list:
        """In the caller's transaction: end as interrupted every streaming reply whose owner's
        lease expired (or whose owner is gone), each with an empty final frame and its text
        kept; forget the expired owners. The hints that tell it."""
        cursor = await conn.execute(
            "WITH ended AS (UPDATE messages m SET status = %(interrupted)s, "
            f"last_seq = m.last_seq + 1, owner = NULL, updated_at = {NOW}, "
            "text = coalesce((SELECT string_agg(c.chunk, '' ORDER BY c.seq) FROM chunks c "
            "WHERE c.message_id = m.id AND c.seq <= m.last_seq), '') "
            "WHERE m.status = %(streaming)s AND NOT EXISTS (SELECT 1 FROM owners o "
            "WHERE o.id = m.owner AND o.lease_until >= now()) "
            "RETURNING m.id, m.user_id, m.conversation_id, m.last_seq, m.tool_calls), "
            "frames AS (INSERT INTO chunks (message_id, seq, chunk) "
            "SELECT id, last_seq, '' FROM ended), "
            f"touched AS (UPDATE conversations c SET updated_at = greatest(c.updated_at, {NOW}) "
            "FROM (SELECT DISTINCT user_id, conversation_id FROM ended) e "
            "WHERE c.user_id = e.user_id AND c.id = e.conversation_id) "
            "SELECT id, user_id, conversation_id, last_seq, tool_calls FROM ended",
            {"interrupted": INTERRUPTED, "streaming": STREAMING},
        )
        ended = await cursor.fetchall()
        for mid, _, _, last, calls in ended:
            # Its tool calls that had not finished end failed, in its final frame.
            changed, merged = toolcalls.end_unfinished(toolcalls.loads(calls))
            if changed:
                await conn.execute(
                    "WITH f AS (UPDATE chunks SET tool_calls = %(changed)s "
                    "WHERE message_id = %(id)s AND seq = %(last)s) "
                    "UPDATE messages SET tool_calls = %(merged)s WHERE id = %(id)s",
                    {
                        "id": mid,
                        "last": last,
                        "changed": toolcalls.dumps(changed),
                        "merged": toolcalls.dumps(merged),
                    },
                )
        await conn.execute("DELETE FROM owners WHERE lease_until < now()")
        return [FramesCommitted(user, cid, mid, last, True) for mid, user, cid, last, _ in ended]

    async def recover(self) -> int:
        async with self._conn() as conn:
            async with conn.transaction():
                ended = await self._recover_in(conn)
                await notify(conn, self._origin, ended)
        self._tell_here(ended)
        return len(ended)

    def _tell_here(self, ended: list) -> None:
        """Replies this process ended by recovery: its own clients that follow them hear of
        it as the other servers' do (the listener skips this process's own notifications)."""
        for hint in ended:
            self._hint(hint)

    async def _renew(self, owner: leases.Owner) -> tuple:
        """Renew the lease and recover, in one transaction: ``(renewed, replies ended)``."""
        async with self._conn() as conn:
            async with conn.transaction():
                cursor = await conn.execute(
                    "UPDATE owners SET lease_until = now() + make_interval(secs => %s) "
                    "WHERE id = %s AND lease_until >= now()",
                    (self.lease_seconds, owner.id),
                )
                renewed = cursor.rowcount == 1
                if not renewed and not self._registered and owner is self._owner:
                    # Never registered (the database was out of reach): nothing of it to lose.
                    await self._register(conn, owner)
                    renewed = True
                ended = await self._recover_in(conn)
                await notify(conn, self._origin, ended)
        self._tell_here(ended)
        return renewed, len(ended)

    async def _keep_lease(self) -> None:
        """Renew the lease every third of its length, and end the replies of dead servers."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            owner = self._owner
            try:
                renewed, ended = await self._renew(owner)
            except StoreError as e:
                self.log.warning("streamchat: could not renew this server's lease: %s", e)
                continue
            except Exception:  # a bug: keep renewing all the same
                self.log.exception("streamchat: renewing this server's lease failed")
                continue
            if ended:
                self.log.warning(
                    "streamchat: %d reply(ies) of a stopped server were marked interrupted",
                    ended,
                )
            if not renewed:
                await self._lease_expired(owner.id)

    async def _lease_expired(self, owner_id: str) -> None:
        """This server's lease ran out: say so, take a new one, tell the hub."""
        if owner_id != self._owner.id or self._losing_lease:
            return
        self._losing_lease = True
        try:
            self.log.error(
                "streamchat: this server's lease on its replies expired (was the process "
                "suspended, or the database out of reach for over %g s?); its replies were "
                "ended as interrupted by another server",
                self.lease_seconds,
            )
            self._owner = leases.Owner()
            self._registered = False
            try:
                async with self._conn() as conn:
                    await self._register(conn, self._owner)
            except StoreError as e:  # the next renewal registers it
                self.log.warning("streamchat: could not take a new lease: %s", e)
            if self.on_lease_lost is not None:
                self.on_lease_lost()
        finally:
            self._losing_lease = False

    # -- writes ----------------------------------------------------------------------------

    async def announce(self, hint) -> None:
        async with self._conn() as conn:
            await notify(conn, self._origin, [hint])

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
        user = self._user(user)
        owner_id = self._owner.id
        context_json = toolcalls.dumps(context)
        try:
            return await self._create_exchange(
                user, owner_id, conversation_id, agent_id, text, client_message_id, context_json
            )
        except _LeaseGone:
            # This server's lease ran out unnoticed (the database was out of reach for
            # longer than the lease): a reply made under it would be ended by the next
            # recovery. Take a new lease, then make the reply under that one.
            await self._lease_expired(owner_id)
            return await self._create_exchange(
                user,
                self._owner.id,
                conversation_id,
                agent_id,
                text,
                client_message_id,
                context_json,
            )

    async def _create_exchange(
        self,
        user: str,
        owner_id: str,
        conversation_id: str,
        agent_id: str,
        text: str,
        client_message_id: str,
        context_json: Optional[str],
    ) -> Exchange:
        async def seen(conn) -> Optional[Exchange]:
            row = await (
                await conn.execute(
                    "SELECT u.id, r.id, r.agent_id, u.text FROM messages u "
                    "JOIN messages r ON r.reply_to = u.id WHERE u.user_id = %s "
                    "AND u.conversation_id = %s AND u.client_message_id = %s",
                    (user, conversation_id, client_message_id),
                )
            ).fetchone()
            if row is None:
                return None
            return Exchange(
                client_message_id,
                conversation_id,
                row[0],
                row[1],
                dec(row[2]),
                dec(row[3]),
                False,
                user=user,
            )

        async def job(conn) -> tuple:
            found = await seen(conn)
            if found is not None:
                return found, []
            user_message_id, reply_id = _new_id(), _new_id()
            try:
                async with conn.transaction():
                    # The reply's owner must hold a lease (renewed here at no extra cost).
                    renewed = await conn.execute(
                        "UPDATE owners SET lease_until = greatest(lease_until, now() + "
                        "make_interval(secs => %s)) WHERE id = %s AND lease_until >= now()",
                        (self.lease_seconds, owner_id),
                    )
                    if renewed.rowcount != 1:
                        raise _LeaseGone()
                    await conn.execute(
                        "INSERT INTO conversations (user_id, id, created_at, updated_at) "
                        f"VALUES (%s, %s, {NOW}, {NOW}) ON CONFLICT (user_id, id) DO UPDATE "
                        "SET updated_at = greatest(conversations.updated_at, excluded.updated_at)",
                        (user, conversation_id),
                    )
                    await conn.execute(
                        "INSERT INTO messages (id, user_id, conversation_id, role, agent_id, "
                        "reply_to, client_message_id, status, text, chars, owner, created_at, "
                        f"updated_at, context) VALUES (%(u)s, %(user)s, %(c)s, 'user', "
                        f"%(agent)s, NULL, %(client)s, %(complete)s, %(text)s, %(chars)s, NULL, "
                        f"{NOW}, {NOW}, %(context)s), "
                        "(%(r)s, %(user)s, %(c)s, 'assistant', %(agent)s, %(u)s, NULL, "
                        f"%(streaming)s, '', 0, %(owner)s, {NOW}, {NOW}, NULL)",
                        {
                            "u": user_message_id,
                            "r": reply_id,
                            "user": user,
                            "c": conversation_id,
                            "agent": enc(agent_id),
                            "client": client_message_id,
                            "complete": COMPLETE,
                            "streaming": STREAMING,
                            "text": enc(text),
                            "chars": len(text),
                            "owner": owner_id,
                            "context": context_json,
                        },
                    )
            except errors.UniqueViolation:
                # Another server stored the same clientMessageId a moment ago.
                found = await seen(conn)
                if found is None:
                    raise
                return found, []
            exchange = Exchange(
                client_message_id,
                conversation_id,
                user_message_id,
                reply_id,
                agent_id,
                text,
                True,
                user=user,
            )
            hint = ExchangeCreated(
                user, conversation_id, client_message_id, user_message_id, reply_id, agent_id
            )
            return exchange, [hint]

        return await self._write(job)

    async def append(self, append) -> None:
        if self._writer is None:
            raise StoreError(f"the chat database {self.where} is closed")
        try:
            await self._writer.append(append)
        except AppendLeaseLost as e:
            if e.lease_expired and e.owner_id == self._owner.id:
                task = asyncio.ensure_future(self._lease_expired(e.owner_id))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            raise

    async def delete_conversation(
        self, conversation_id: str, *, user: Optional[str] = None
    ) -> bool:
        user = self._user(user)

        async def job(conn) -> tuple:
            cursor = await conn.execute(
                "DELETE FROM conversations WHERE user_id = %s AND id = %s", (user, conversation_id)
            )
            if cursor.rowcount == 0:
                return False, []
            return True, [ConversationChanged(user, conversation_id, deleted=True)]

        return await self._write(job)

    async def rename_conversation(
        self, conversation_id: str, title: str, *, user: Optional[str] = None
    ) -> bool:
        user = self._user(user)

        async def job(conn) -> tuple:
            cursor = await conn.execute(
                "UPDATE conversations SET title = %s WHERE user_id = %s AND id = %s",
                (enc(title), user, conversation_id),
            )
            if cursor.rowcount == 0:
                return False, []
            return True, [ConversationChanged(user, conversation_id)]

        return await self._write(job)

    # -- reads -----------------------------------------------------------------------------

    async def _load(self, conn, rows: list, max_chars: Optional[int] = None) -> list:
        """MessageRecords of ``_COLUMNS`` rows, with their texts: a row's own text where it
        holds the whole (user messages, ended replies without thinking), else the reply's
        frames up to last_seq; a reply over ``max_chars`` comes cut to the frames that fit
        (its tool calls then merged from those frames). Tool calls and context are read with
        the texts, for the rows picked only."""
        records = [_record(row) for row in rows]
        in_row, framed, cut = [], [], []
        for row, record in zip(rows, records):
            if record.role != "assistant":
                in_row.append(row[_POS])
            elif max_chars is not None and row[_TOTAL] > max_chars:
                cut.append(record)
            elif record.status != STREAMING and row[_THOUGHT] == 0:
                in_row.append(row[_POS])
            else:
                framed.append(record)
        if rows:
            cursor = await conn.execute(
                "SELECT pos, CASE WHEN pos = ANY(%s::bigint[]) THEN text END, tool_calls, "
                "context FROM messages WHERE pos = ANY(%s::bigint[])",
                (in_row, [row[_POS] for row in rows]),
            )
            extra = {pos: rest for pos, *rest in await cursor.fetchall()}
            for row, record in zip(rows, records):
                text, calls, context = extra.get(row[_POS], (None, None, None))
                if text is not None:
                    record.text = dec(text)
                record.tool_calls = toolcalls.loads(calls)
                record.context = toolcalls.loads(context)
        if framed:
            cursor = await conn.execute(
                "SELECT c.message_id, c.chunk, c.reasoning FROM unnest(%s::text[], %s::int[]) "
                "AS b(id, last) JOIN chunks c ON c.message_id = b.id AND c.seq <= b.last "
                "ORDER BY c.message_id, c.seq",
                ([r.message_id for r in framed], [r.last_seq for r in framed]),
            )
            parts: dict = {}
            for message_id, chunk, thinking in await cursor.fetchall():
                answer, thought = parts.setdefault(message_id, ([], []))
                answer.append(chunk)
                thought.append(thinking)
            for record in framed:
                answer, thought = parts.get(record.message_id, ([], []))
                record.text, record.reasoning = dec("".join(answer)), dec("".join(thought))
        for record in cut:
            # The frames whose answer and thinking fit the budget, read no further.
            cursor = await conn.execute(
                "SELECT seq, chunk, reasoning, tool_calls FROM (SELECT seq, chunk, reasoning, "
                "tool_calls, sum(length(chunk) + length(reasoning)) OVER (ORDER BY seq) AS upto "
                "FROM chunks WHERE message_id = %s AND seq <= %s) f WHERE upto <= %s "
                "ORDER BY seq",
                (record.message_id, record.last_seq, max_chars),
            )
            frames = await cursor.fetchall()
            record.text = dec("".join(chunk for _, chunk, _, _ in frames))
            record.reasoning = dec("".join(thinking for _, _, thinking, _ in frames))
            record.tool_calls = toolcalls.merge(toolcalls.loads(calls) for *_, calls in frames)
            record.last_seq = frames[-1][0] if frames else 0
            record.truncated = True
        return records

    async def get_message(self, message_id: str, *, user=None) -> Optional[MessageRecord]:
        user = self.user_of(user)
        mine = "" if user is EVERY_USER else "AND m.user_id = %(user)s"
        async with self._conn() as conn:
            # One statement: one snapshot, the frames read up to the row's own last_seq.
            cursor = await conn.execute(
                f"SELECT {_COLUMNS}, m.tool_calls, m.context, CASE WHEN {_TEXT_IN_ROW} "
                f"THEN m.text END, f.text, f.reasoning FROM messages m LEFT JOIN LATERAL "
                f"({_FRAMES}) f ON NOT {_TEXT_IN_ROW} WHERE m.id = %(id)s {mine}",
                {"id": message_id, "user": user},
            )
            row = await cursor.fetchone()
        if row is None:
            return None
        record = _record(row)
        calls, context, own, text, thinking = row[-5:]
        record.text = dec(own if own is not None else text or "")
        record.reasoning = dec(thinking or "")
        record.tool_calls = toolcalls.loads(calls)
        record.context = toolcalls.loads(context)
        return record

    async def replay(self, message_id: str, after_seq: int, *, user=None) -> tuple:
        user = self.user_of(user)
        mine = "" if user is EVERY_USER else "AND m.user_id = %(user)s"
        async with self._conn() as conn:
            # One statement: one snapshot. The message's tool calls and context come with its
            # first row only, not again with every frame.
            cursor = await conn.execute(
                f"SELECT {_COLUMNS}, c.seq, c.chunk, c.reasoning, c.tool_calls, "
                "CASE WHEN row_number() OVER (ORDER BY c.seq) = 1 THEN m.tool_calls END, "
                "CASE WHEN row_number() OVER (ORDER BY c.seq) = 1 THEN m.context END "
                "FROM messages m LEFT JOIN chunks c ON c.message_id = m.id "
                "AND c.seq > %(after)s AND c.seq <= m.last_seq WHERE m.id = %(id)s "
                f"{mine} ORDER BY c.seq",
                {"id": message_id, "after": after_seq, "user": user},
            )
            rows = await cursor.fetchall()
        if not rows:
            return None, []
        chunks = [
            (seq, dec(chunk), dec(thinking), toolcalls.loads(calls))
            for *_, seq, chunk, thinking, calls, _, _ in rows
            if seq is not None
        ]
        record = _record(rows[0])
        record.tool_calls, record.context = map(toolcalls.loads, rows[0][-2:])
        return record, chunks

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
        async with self._conn() as conn, self._snapshot(conn):
            if not await self._conversation_exists(conn, user, conversation_id):
                return None
            bound = 2**62
            if before_message_id is not None:
                found = await (
                    await conn.execute(
                        "SELECT pos FROM messages WHERE id = %s AND user_id = %s "
                        "AND conversation_id = %s",
                        (before_message_id, user, conversation_id),
                    )
                ).fetchone()
                if found is None:
                    return None
                bound = found[0]
            rows = await (
                await conn.execute(
                    f"SELECT {_COLUMNS} FROM messages m WHERE m.user_id = %s "
                    "AND m.conversation_id = %s AND m.pos < %s ORDER BY m.pos DESC LIMIT %s",
                    (user, conversation_id, bound, max_messages + 1),
                )
            ).fetchall()
            picked, used = [], 0
            for row in rows[:max_messages]:
                if picked and used + row[_TOTAL] > max_chars:
                    break
                picked.append(row)
                used += row[_TOTAL]
            # Only a page's one message may be over the budget; it comes cut short.
            messages = await self._load(conn, list(reversed(picked)), max_chars)
            return HistoryPage(conversation_id, messages, has_more=len(picked) < len(rows))

    @staticmethod
    async def _conversation_exists(conn, user: str, conversation_id: str) -> bool:
        cursor = await conn.execute(
            "SELECT 1 FROM conversations WHERE user_id = %s AND id = %s", (user, conversation_id)
        )
        return await cursor.fetchone() is not None

    async def get_conversation(
        self, conversation_id: str, *, user: Optional[str] = None
    ) -> Optional[list]:
        user = self._user(user)
        async with self._conn() as conn, self._snapshot(conn):
            if not await self._conversation_exists(conn, user, conversation_id):
                return None
            rows = await (
                await conn.execute(
                    f"SELECT {_COLUMNS} FROM messages m WHERE m.user_id = %s "
                    "AND m.conversation_id = %s ORDER BY m.pos",
                    (user, conversation_id),
                )
            ).fetchall()
            return await self._load(conn, rows)

    async def list_conversations(
        self, limit: int = 0, after: Optional[tuple] = None, *, user: Optional[str] = None
    ) -> list:
        user = self._user(user)
        # Keyset paging on the (user_id, updated_at, id) index: a page costs the same in a
        # store of ten conversations or of a hundred thousand.
        args = {"user": user, "limit": limit or None}
        if after is not None:
            args["at"], args["after"] = after
        async with self._conn() as conn:
            cursor = await conn.execute(
                f"SELECT {_CONVERSATION_COLUMNS} FROM conversations c "
                f"WHERE c.user_id = %(user)s {_AFTER if after is not None else ''} "
                "ORDER BY c.updated_at DESC, c.id DESC LIMIT %(limit)s",
                args,
            )
            return [_conversation(row) for row in await cursor.fetchall()]

    async def get_conversation_record(
        self, conversation_id: str, *, user: Optional[str] = None
    ) -> Optional[ConversationRecord]:
        user = self._user(user)
        async with self._conn() as conn:
            cursor = await conn.execute(
                f"SELECT {_CONVERSATION_COLUMNS} FROM conversations c "
                "WHERE c.user_id = %s AND c.id = %s",
                (user, conversation_id),
            )
            row = await cursor.fetchone()
        return _conversation(row) if row else None

    async def search_conversations(
        self,
        query: str,
        limit: int = 0,
        after: Optional[tuple] = None,
        *,
        user: Optional[str] = None,
    ) -> list:
        user = self._user(user)
        # The conversations with a title, a user message or an ended reply holding the text
        # (with the first such message of each), ordered and paged as the list is; only then
        # are the page's columns and snippets worked out.
        args = {"user": user, "pattern": _like(query), "limit": limit or None}
        if after is not None:
            args["at"], args["after"] = after
        async with self._conn() as conn:
            try:
                async with self._snapshot(conn):
                    await conn.execute(
                        "SELECT set_config('statement_timeout', %s, true)",
                        (str(max(1, round(self.search_seconds * 1000))),),
                    )
                    cursor = await conn.execute(
                        "WITH hits AS (SELECT m.conversation_id AS id, min(m.pos) AS first "
                        "FROM messages m WHERE m.user_id = %(user)s "
                        "AND m.text ILIKE %(pattern)s "
                        "AND (m.role = 'user' OR m.status <> 'streaming') "
                        "GROUP BY m.conversation_id "
                        "UNION ALL SELECT c.id, NULL FROM conversations c "
                        "WHERE c.user_id = %(user)s AND c.title ILIKE %(pattern)s), "
                        "found AS (SELECT id, min(first) AS first FROM hits GROUP BY id), "
                        "page AS (SELECT c.id, found.first FROM conversations c JOIN found "
                        f"ON found.id = c.id WHERE c.user_id = %(user)s "
                        f"{_AFTER if after is not None else ''} "
                        "ORDER BY c.updated_at DESC, c.id DESC LIMIT %(limit)s) "
                        f"SELECT {_CONVERSATION_COLUMNS}, page.first FROM page "
                        "JOIN conversations c ON c.user_id = %(user)s AND c.id = page.id "
                        "ORDER BY c.updated_at DESC, c.id DESC",
                        args,
                    )
                    found = []
                    for row in await cursor.fetchall():
                        record = _conversation(row)
                        if row[-1] is not None:
                            record.snippet = await self._snippet(conn, row[-1], query)
                        found.append(record)
                    return found
            except errors.QueryCanceled:
                raise SearchTooCostly(
                    "searching for this text would take longer than this server allows one "
                    f"search ({self.search_seconds:g} s); try a longer or more distinctive text"
                ) from None

    @staticmethod
    async def _snippet(conn, pos: int, query: str) -> Optional[str]:
        """The snippet of message ``pos`` around ``query``, as the SQLite store makes it
        (``search.snippet_of``): only the piece of its text around the match is read."""
        folded = enc(query).translate(_ASCII_LOWER)
        cursor = await conn.execute(
            "WITH t AS (SELECT text, length(text) AS n, "
            "strpos(translate(text, %(upper)s, %(lower)s), %(q)s) AS at "
            "FROM messages WHERE pos = %(pos)s), "
            "w AS (SELECT text, n, CASE WHEN at > 0 THEN greatest(1, at - %(back)s) ELSE 1 END "
            "AS first, CASE WHEN at > 0 THEN %(size)s ELSE %(window)s END AS size FROM t) "
            "SELECT n, first, substr(text, first, size), "
            "(length(pre) - length(replace(pre, chr(10) || '```', ''))) / 4 + "
            "(length(pre) - length(replace(pre, chr(10) || '~~~', ''))) / 4 + "
            "(substr(pre, 1, 3) IN ('```', '~~~'))::int "
            "FROM (SELECT *, substr(text, 1, first - 1) AS pre FROM w) p",
            {
                "upper": _UPPER,
                "lower": _UPPER.lower(),
                "q": folded,
                "pos": pos,
                "back": 2 * search.SNIPPET_BEFORE,
                "size": 4 * search.SNIPPET_BEFORE + len(folded) + search.SNIPPET_CHARS,
                "window": _UNICODE_WINDOW,
            },
        )
        row = await cursor.fetchone()
        if row is None:
            return None
        length, first, piece, fences = row
        return search.snippet(
            dec(piece),
            query,
            cut_before=first > 1,
            cut_after=first - 1 + len(piece) < length,
            in_code=bool(fences % 2),
        )
