"""The Postgres store's schema and its migrations: creating and upgrading the tables, nothing else.

Table ``streamchat_schema`` has one row per migration applied (its number); the schema's
version is the highest. Every server that opens the store migrates it, one at a time (an
advisory lock), all the migrations it lacks in one transaction: a failure leaves the database
as it was, and a server whose release knows fewer migrations than the database has refuses it.

Search (``postgres.py``) reads the message texts with ILIKE; the pg_trgm extension's GIN
indexes make that fast on large stores. They are not a numbered migration: a database where the
extension cannot be created (no privilege) works without them, and gets them at a later open
once it can (``ensure_trigram_indexes``).
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

# Any number, the same in every release: the lock that serialises migrations.
_LOCK = 0x5354_4348_4154  # "STCHAT"

MIGRATIONS = [
    # 1: conversations (each a user's own), their messages, the frames of replies, and the
    # processes producing replies with their leases. Ids compare byte by byte (COLLATE "C"),
    # as in the SQLite store, so paging by (updated_at, id) orders them the same; texts keep
    # the database's collation, whose case folding ILIKE and pg_trgm use.
    """
    CREATE TABLE conversations (
        user_id text COLLATE "C" NOT NULL,
        id text COLLATE "C" NOT NULL,
        title text NOT NULL DEFAULT '',         -- its own title; '' lists it by its first words
        created_at double precision NOT NULL,   -- seconds since the epoch, database clock
        updated_at double precision NOT NULL,   -- last exchange started or reply ended
        PRIMARY KEY (user_id, id)
    );
    CREATE INDEX conversations_by_update ON conversations (user_id, updated_at DESC, id DESC);

    CREATE TABLE owners (
        id text COLLATE "C" PRIMARY KEY,
        machine text NOT NULL,                  -- host and boot, for the server log
        pid integer NOT NULL,
        lease_until timestamptz NOT NULL        -- database clock: servers' clocks may differ
    );

    CREATE TABLE messages (
        pos bigint GENERATED ALWAYS AS IDENTITY UNIQUE,  -- order within a conversation
        id text COLLATE "C" PRIMARY KEY,
        user_id text COLLATE "C" NOT NULL,
        conversation_id text COLLATE "C" NOT NULL,
        role text NOT NULL CHECK (role IN ('user', 'assistant')),
        agent_id text NOT NULL,
        reply_to text COLLATE "C",              -- a reply's user message
        client_message_id text COLLATE "C",     -- makes SEND_MESSAGE idempotent
        status text NOT NULL,
        error text,
        text text NOT NULL DEFAULT '',          -- a user message's text; a reply's once ended
        chars bigint NOT NULL DEFAULT 0,        -- length of the answer text
        reasoning_chars bigint NOT NULL DEFAULT 0,
        last_seq integer NOT NULL DEFAULT 0,
        owner text COLLATE "C",                 -- owners.id of the process producing it
        usage text,                             -- JSON: model, tokens, timings
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL,
        FOREIGN KEY (user_id, conversation_id)
            REFERENCES conversations (user_id, id) ON DELETE CASCADE,
        UNIQUE (user_id, conversation_id, client_message_id)
    ) WITH (fillfactor = 80);                   -- room for the per-frame updates in place
    CREATE INDEX messages_by_conversation ON messages (user_id, conversation_id, pos);
    CREATE INDEX messages_streaming ON messages (owner) WHERE status = 'streaming';
    CREATE INDEX messages_by_reply_to ON messages (reply_to) WHERE reply_to IS NOT NULL;

    CREATE TABLE chunks (
        message_id text COLLATE "C" NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        seq integer NOT NULL,
        chunk text NOT NULL,
        reasoning text NOT NULL DEFAULT '',
        PRIMARY KEY (message_id, seq)
    );
    """,
    # 2: tool calls, frame by frame and merged on the reply's row, and the context a user
    # message was sent with. JSON text, stored opaque and never queried (jsonb would parse
    # every write, and refuses the escaped NUL that JSON text may hold); NULL when none.
    # Nullable columns without a default: added without rewriting the tables.
    """
    ALTER TABLE chunks ADD COLUMN tool_calls text;          -- the states changed in the frame
    ALTER TABLE messages ADD COLUMN tool_calls text,        -- the latest state of each call
        ADD COLUMN context text;                            -- a user message's context items
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(Exception):
    pass


async def migrate(conn: psycopg.AsyncConnection, where: str) -> int:
    """Bring the schema to SCHEMA_VERSION (a no-op when it is there); returns the version it
    had. ``conn`` is in autocommit mode; ``where`` names the database in messages."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS streamchat_schema ("
            "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        (version,) = await (
            await conn.execute("SELECT coalesce(max(version), 0) FROM streamchat_schema")
        ).fetchone()
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"the chat database {where} has schema version {version}, newer than this "
                f"release knows ({SCHEMA_VERSION}); upgrade jupyter-streamchat"
            )
        for number in range(version, SCHEMA_VERSION):
            await conn.execute(MIGRATIONS[number])
            await conn.execute("INSERT INTO streamchat_schema (version) VALUES (%s)", (number + 1,))
    return version


# The trigram indexes search uses: (index name, table, column).
TRIGRAM_INDEXES = (
    ("messages_text_trgm", "messages", "text"),
    ("conversations_title_trgm", "conversations", "title"),
)


async def ensure_trigram_indexes(conn: psycopg.AsyncConnection, log: logging.Logger) -> bool:
    """Create pg_trgm (if this role may) and the search's GIN indexes, where missing; False
    (and a warning) when the extension cannot be had: search then reads every text."""
    missing = []
    for name, table, column in TRIGRAM_INDEXES:
        (found,) = await (await conn.execute("SELECT to_regclass(%s)", (name,))).fetchone()
        if found is None:
            missing.append((name, table, column))
    if not missing:
        return True
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        try:
            async with conn.transaction():
                await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        except psycopg.Error as e:
            log.warning(
                "streamchat: the pg_trgm extension is not available (%s); search reads "
                "every message (slow on large stores). A superuser can run CREATE EXTENSION "
                "pg_trgm in this database.",
                str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__,
            )
            return False
        (schema,) = await (
            await conn.execute(
                "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n "
                "ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'"
            )
        ).fetchone()
        opclass = f"{sql.Identifier(schema).as_string(conn)}.gin_trgm_ops"
        for name, table, column in missing:
            await conn.execute(
                f"CREATE INDEX IF NOT EXISTS {name} ON {table} USING gin ({column} {opclass})"
            )
    return True
