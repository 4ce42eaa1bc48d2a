"""The SQLite store's schema and its migrations: creating and upgrading the file, nothing else.

``PRAGMA user_version`` holds how many migrations have been applied. Each migration runs in
one transaction with the version bump, so a crash mid-way leaves the file as it was.
"""

from __future__ import annotations

import sqlite3

from . import search

# Each migration is SQL, or a function for what SQL alone cannot say; either runs inside the
# migration's transaction.
MIGRATIONS = [
    # 1: conversations, messages, and the chunks that make a reply's text.
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
        text TEXT NOT NULL DEFAULT '',
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
    # 2: several processes on one file. Each streaming reply names its owner, a process that
    # holds a lease; clientMessageId is unique per conversation, not across all of them; a
    # reply's text lives in its chunks only (stored once, and never rebuilt in memory), with
    # its length kept beside it so that history pages can be cut to a budget.
    """
    CREATE TABLE owners (
        id TEXT PRIMARY KEY,
        machine TEXT NOT NULL,              -- host and boot: where pid means something
        pid INTEGER NOT NULL,
        pid_started TEXT NOT NULL,          -- the process's start time: tells a reused pid
        lease_until REAL NOT NULL
    );
    CREATE TABLE messages_v2 (
        pos INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        agent_id TEXT NOT NULL,
        reply_to TEXT,
        client_message_id TEXT,
        status TEXT NOT NULL,
        error TEXT,
        text TEXT NOT NULL DEFAULT '',      -- a user message's text; a reply's is its chunks
        chars INTEGER NOT NULL DEFAULT 0,   -- length of the text
        last_seq INTEGER NOT NULL DEFAULT 0,
        owner TEXT,                         -- owners.id of the process producing the reply
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (conversation_id, client_message_id)
    );
    INSERT INTO messages_v2 (pos, id, conversation_id, role, agent_id, reply_to,
        client_message_id, status, error, text, chars, last_seq, owner, created_at, updated_at)
    SELECT pos, id, conversation_id, role, agent_id, reply_to, client_message_id, status, error,
        CASE WHEN role = 'user' THEN text ELSE '' END,
        CASE WHEN role = 'user' THEN length(text) ELSE coalesce(
            (SELECT sum(length(c.chunk)) FROM chunks c
             WHERE c.message_id = messages.id AND c.seq <= messages.last_seq), 0) END,
        last_seq, NULL, created_at, updated_at
    FROM messages;
    DROP TABLE messages;
    ALTER TABLE messages_v2 RENAME TO messages;
    CREATE INDEX messages_by_conversation ON messages (conversation_id, pos);
    CREATE INDEX messages_streaming ON messages (status) WHERE status = 'streaming';
    """,
    # 3: a reply's thinking, kept apart from its answer frame by frame, and what it cost.
    """
    ALTER TABLE chunks ADD COLUMN reasoning TEXT NOT NULL DEFAULT '';
    ALTER TABLE messages ADD COLUMN reasoning_chars INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN usage TEXT;  -- JSON: model, tokens, timings
    """,
    # 4: the conversation list, most recent first, a page at a time however long it is.
    """
    CREATE INDEX conversations_by_update ON conversations (updated_at DESC, id DESC);
    """,
    # 5: search over titles and message texts (search.py), built from what the file holds.
    search.create_index,
    # 6: the slices of long replies still to be indexed (search.py), one write job each.
    """
    CREATE TABLE search_backlog (
        message_id TEXT PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
        next_seq INTEGER NOT NULL,          -- where the next slice starts: this frame...
        next_offset INTEGER NOT NULL,       -- ...at this character of it
        slice INTEGER NOT NULL,             -- slices indexed so far, minus one
        carry TEXT NOT NULL                 -- the end of the last slice, to start the next
    );
    """,
    # 7: conversations belong to users, and their ids are each user's own: a conversation is
    # keyed by (user, id), and each message names its conversation's user, so that every read
    # is scoped by an index. The conversations a file already holds become those of the user
    # the store opening it works for (``:default_user``). Messages keep their ``pos``: the
    # search index's rows are keyed by it, and reach a message's user through it (search.py).
    """
    CREATE TABLE conversations_v7 (
        user_id TEXT NOT NULL,
        id TEXT NOT NULL,
        title TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (user_id, id)
    );
    INSERT INTO conversations_v7 (user_id, id, title, created_at, updated_at)
    SELECT :default_user, id, title, created_at, updated_at FROM conversations;
    DROP TABLE conversations;
    ALTER TABLE conversations_v7 RENAME TO conversations;
    CREATE INDEX conversations_by_update ON conversations (user_id, updated_at DESC, id DESC);
    CREATE TABLE messages_v7 (
        pos INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,            -- unique across users: the store makes them
        user_id TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        agent_id TEXT NOT NULL,
        reply_to TEXT,
        client_message_id TEXT,
        status TEXT NOT NULL,
        error TEXT,
        text TEXT NOT NULL DEFAULT '',
        chars INTEGER NOT NULL DEFAULT 0,
        last_seq INTEGER NOT NULL DEFAULT 0,
        owner TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        reasoning_chars INTEGER NOT NULL DEFAULT 0,
        usage TEXT,
        UNIQUE (user_id, conversation_id, client_message_id),
        FOREIGN KEY (user_id, conversation_id) REFERENCES conversations (user_id, id)
            ON DELETE CASCADE
    );
    INSERT INTO messages_v7 (pos, id, user_id, conversation_id, role, agent_id, reply_to,
        client_message_id, status, error, text, chars, last_seq, owner, created_at, updated_at,
        reasoning_chars, usage)
    SELECT pos, id, :default_user, conversation_id, role, agent_id, reply_to,
        client_message_id, status, error, text, chars, last_seq, owner, created_at, updated_at,
        reasoning_chars, usage
    FROM messages;
    DROP TABLE messages;
    ALTER TABLE messages_v7 RENAME TO messages;
    CREATE INDEX messages_by_conversation ON messages (user_id, conversation_id, pos);
    CREATE INDEX messages_streaming ON messages (status) WHERE status = 'streaming';
    """,
    # 8: tool calls, frame by frame and merged on the reply's row, and the context a user
    # message was sent with. JSON text, NULL when there is none (nearly every frame).
    """
    ALTER TABLE chunks ADD COLUMN tool_calls TEXT;      -- the states changed in the frame
    ALTER TABLE messages ADD COLUMN tool_calls TEXT;    -- the latest state of each call
    ALTER TABLE messages ADD COLUMN context TEXT;       -- a user message's context items
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(Exception):
    pass


def migrate(conn: sqlite3.Connection, path: str, default_user: str) -> None:
    """Bring the file's schema to SCHEMA_VERSION (a no-op when it is there already).
    ``default_user`` owns the conversations of a file from before conversations had users."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"{path} has schema version {version}, newer than this release knows "
            f"({SCHEMA_VERSION}); upgrade jupyter-streamchat"
        )
    if version == SCHEMA_VERSION:
        return
    # Tables are rebuilt by copy, drop and rename: with foreign keys on, dropping the old
    # messages table would delete every chunk. The check before COMMIT keeps them honest.
    conn.execute("PRAGMA foreign_keys=OFF")
    try:
        for number in range(version, SCHEMA_VERSION):
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Re-read inside the write lock: another process may have migrated meanwhile.
                if conn.execute("PRAGMA user_version").fetchone()[0] != number:
                    conn.execute("ROLLBACK")
                    continue
                step = MIGRATIONS[number]
                apply(conn, step, default_user)
                broken = conn.execute("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise sqlite3.IntegrityError(
                        f"migration {number + 1} broke references: {broken[:3]}"
                    )
                conn.execute(f"PRAGMA user_version={number + 1}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
    finally:
        conn.execute("PRAGMA foreign_keys=ON")


def apply(conn: sqlite3.Connection, step, default_user: str) -> None:
    """Run one migration inside the caller's transaction; its SQL may name ``:default_user``."""
    if callable(step):
        step(conn)
        return
    for statement in _statements(step):
        if ":default_user" in statement:
            conn.execute(statement, {"default_user": default_user})
        else:
            conn.execute(statement)


def _statements(script: str) -> list:
    """Split a migration into statements (``executescript`` would commit on its own)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements
