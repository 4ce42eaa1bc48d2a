"""The SQLite store's search index: which conversations hold a piece of text, found fast.

Table ``search`` has one row per message that has text (a reply once it has ended: its text is
what its chunks add up to, indexed once rather than rewritten per frame, so a reply still
streaming is found by its user message alone), and one per conversation with a title of its
own. A message's row has the message's ``pos`` as rowid; a title's has the negated ``pos`` of
its conversation's first message (every conversation starts with one, and ``pos`` never
changes). Each row names its conversation, so a query needs no other table to find it.

Where SQLite has FTS5 and its trigram tokenizer (3.34 and later), the table is a full-text
index of every three-character sequence, which finds a text anywhere inside words, in any case
(Unicode case folding), without reading every message: that is what users expect of a search
box. A query shorter than three characters has no sequence to look up and is answered by
reading the texts with LIKE, as every query is where the library lacks the tokenizer and the
table is an ordinary one. LIKE ignores the case of ASCII letters only.

Every function here runs inside the caller's transaction, on the writer's (or the reader's)
connection.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import sqlite3
from typing import Optional

# The trigram tokenizer cannot find anything shorter.
MIN_INDEXED_CHARS = 3

# A snippet shows this many characters of the message before the match, and about this many
# in all.
SNIPPET_BEFORE = 40
SNIPPET_CHARS = 160
_SPACE = re.compile(r"\s")


def trigram_available() -> bool:
    """Whether this process's SQLite library can build the full-text index."""
    try:
        with contextlib.closing(sqlite3.connect(":memory:")) as conn:
            conn.execute("CREATE VIRTUAL TABLE probe USING fts5(text, tokenize='trigram')")
    except sqlite3.Error:
        return False
    return True


def is_full_text(conn: sqlite3.Connection) -> bool:
    """Whether the file's index is the full-text one (else it is an ordinary table).

    A file indexed by a newer SQLite cannot be written by a library without the tokenizer
    (every new message goes into the index): that is said here, when the store opens.
    """
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'search'").fetchone()
    if "fts5" not in sql.lower():
        return False
    try:
        conn.execute("SELECT rowid FROM search LIMIT 0")
    except sqlite3.OperationalError as e:
        raise sqlite3.OperationalError(
            f"its search index needs SQLite 3.34 or later with FTS5, and this Python has "
            f"SQLite {sqlite3.sqlite_version} ({e})") from e
    return True


def create_index(conn: sqlite3.Connection) -> None:
    """Migration 5: make the index and fill it with what the file already holds."""
    if trigram_available():
        conn.execute("CREATE VIRTUAL TABLE search USING fts5("
                     "conversation_id UNINDEXED, text, tokenize='trigram')")
    else:
        conn.execute("CREATE TABLE search (id INTEGER PRIMARY KEY, "
                     "conversation_id TEXT NOT NULL, text TEXT NOT NULL)")
    conn.execute("INSERT INTO search (rowid, conversation_id, text) SELECT pos, "
                 "conversation_id, text FROM messages WHERE role = 'user' AND text != ''")
    conn.execute("INSERT INTO search (rowid, conversation_id, text) SELECT -min(m.pos), c.id, "
                 "c.title FROM conversations c JOIN messages m ON m.conversation_id = c.id "
                 "WHERE c.title != '' GROUP BY c.id")
    # Replies that have ended, each one's chunks in order, in one pass over both tables.
    frames = conn.execute(
        "SELECT m.pos, m.conversation_id, c.chunk FROM messages m JOIN chunks c "
        "ON c.message_id = m.id AND c.seq <= m.last_seq "
        "WHERE m.role = 'assistant' AND m.status != 'streaming' ORDER BY m.pos, c.seq"
    )
    for (pos, conversation_id), chunks in itertools.groupby(frames, key=lambda row: row[:2]):
        _put(conn, pos, conversation_id, "".join(chunk for _, _, chunk in chunks))


# -- keeping it current -------------------------------------------------------------------


def add_user_message(conn: sqlite3.Connection, message_id: str) -> None:
    """Index a user message as it is stored."""
    conn.execute("INSERT INTO search (rowid, conversation_id, text) SELECT pos, "
                 "conversation_id, text FROM messages WHERE id = ? AND text != ''",
                 (message_id,))


def add_reply(conn: sqlite3.Connection, message_id: str) -> None:
    """Index a reply that has just ended (its final frame is stored)."""
    row = conn.execute("SELECT pos, conversation_id, last_seq FROM messages WHERE id = ?",
                       (message_id,)).fetchone()
    if row is None:
        return
    pos, conversation_id, last_seq = row
    chunks = conn.execute("SELECT chunk FROM chunks WHERE message_id = ? AND seq <= ? "
                          "ORDER BY seq", (message_id, last_seq))
    _put(conn, pos, conversation_id, "".join(chunk for (chunk,) in chunks))


def set_title(conn: sqlite3.Connection, conversation_id: str, title: str) -> None:
    """Index a conversation's own title ("" when it has none again)."""
    (first,) = conn.execute("SELECT min(pos) FROM messages WHERE conversation_id = ?",
                            (conversation_id,)).fetchone()
    if first is not None:
        _put(conn, -first, conversation_id, title)


def forget_conversation(conn: sqlite3.Connection, conversation_id: str) -> None:
    """Drop a conversation's rows; call before its messages are deleted (they hold the keys)."""
    positions = [pos for (pos,) in conn.execute(
        "SELECT pos FROM messages WHERE conversation_id = ? ORDER BY pos", (conversation_id,))]
    if positions:
        keys = [(pos,) for pos in positions] + [(-positions[0],)]
        conn.executemany("DELETE FROM search WHERE rowid = ?", keys)


def _put(conn: sqlite3.Connection, rowid: int, conversation_id: str, text: str) -> None:
    conn.execute("DELETE FROM search WHERE rowid = ?", (rowid,))
    if text:
        conn.execute("INSERT INTO search (rowid, conversation_id, text) VALUES (?, ?, ?)",
                     (rowid, conversation_id, text))


# -- querying -----------------------------------------------------------------------------


def condition(query: str, full_text: bool) -> tuple:
    """``(SQL, arguments)``: the condition on ``search`` rows that hold ``query``."""
    if full_text and len(query) >= MIN_INDEXED_CHARS:
        # One phrase, taken literally: inside double quotes only a double quote is special.
        return "search MATCH ?", ['"' + query.replace('"', '""') + '"']
    # LIKE's own wildcards, and the escape character, stand for themselves.
    escaped = re.sub(r"([\\%_])", r"\\\1", query)
    return "search.text LIKE ? ESCAPE '\\'", [f"%{escaped}%"]


def snippet(text: str, query: str) -> str:
    """About SNIPPET_CHARS characters of ``text`` around the first occurrence of ``query``
    (ignoring case), on one line, with "…" where the text was cut."""
    found = re.search(re.escape(query), text, re.IGNORECASE)
    start, end = (found.start(), found.end()) if found else (0, 0)
    begin = max(0, start - SNIPPET_BEFORE)
    if begin > 0:  # start at a word, where one starts close enough
        space = _SPACE.search(text, begin, start)
        begin = space.end() if space else begin
    stop = max(end, begin + SNIPPET_CHARS)
    if stop < len(text):  # and end after one
        spaces = list(_SPACE.finditer(text, end, stop))
        stop = spaces[-1].start() if spaces else stop
    shown = " ".join(text[begin:stop].split())
    return ("…" if begin > 0 else "") + shown + ("…" if stop < len(text) else "")


def first_message_text(conn: sqlite3.Connection, rowid: Optional[int]) -> Optional[str]:
    """The indexed text of a message (by its ``pos``), or None."""
    if rowid is None:
        return None
    row = conn.execute("SELECT text FROM search WHERE rowid = ?", (rowid,)).fetchone()
    return row[0] if row else None
