"""The SQLite store's search index: which conversations hold a piece of text, found fast.

Table ``search`` has one row per message that has text (a reply once it has ended: its text is
what its chunks add up to, indexed once rather than rewritten per frame, so a reply still
streaming is found by its user message alone), and one per conversation with a title of its
own. A message's row has the message's ``pos`` as rowid; a title's has the negated ``pos`` of
its conversation's first message (every conversation starts with one, and ``pos`` never
changes). Each row names its conversation; its user is that of the message its rowid
points to (``pos_of_row``), so a query reaches a row's user through one lookup of
``messages`` by its primary key, made only for the rows the index found.

Where SQLite has FTS5 and its trigram tokenizer (3.34 and later), the table is a full-text
index of every three-character sequence, which finds a text anywhere inside words, in any case
(Unicode case folding), without reading every message: that is what users expect of a search
box. A query shorter than three characters has no sequence to look up and is answered by
reading the texts with LIKE, as every query is where the library lacks the tokenizer and the
table is an ordinary one. LIKE ignores the case of ASCII letters only.

A reply's text is indexed in slices of ``SLICE_CHARS`` characters, each its own row, every
slice starting with the last ``SEARCH_MAX - 1`` characters of the one before, so any text a
query can ask for lies whole in one slice. The first slice is indexed when the reply ends, in
the write that ends it; the rest wait in ``search_backlog`` and are indexed one slice per
write job (``index_next_slice``), so indexing a reply of many megabytes never holds the
writer, and with it every other reply's frames, for more than a few milliseconds at a time.
A slice past the first has rowid ``SLICE_BASE + pos * SLICES + k``; at most ``SLICES``
slices of a message are indexed (over 250 million characters: the rest is not searched).

A query is a phrase of trigrams, one per character of it but two. A repetitive query (a run
of one character, a word said over and over) would make FTS5 check the same trigram's
positions for each of them; such a query is looked up by the shortest start of it that holds
all its distinct trigrams, and the rows found are then checked for the whole text with
``instr(lower(...))`` where the query's letters are ASCII (SQLite's ``lower`` folds those as
the index does), else by ``streamchat_contains``, Python's ``lower`` on each row found. Snippets
are cut out of the text by SQL, so a long message is never read whole into Python for its 160
characters, and shown as plain text (``plain_text``: the Markdown's syntax dropped); the client
marks the query in them itself.

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

# A reply is indexed in slices of this many characters (each a few milliseconds of the
# writer's time), each starting with the last OVERLAP characters of the slice before.
SLICE_CHARS = 64 * 1024
# Longest text searched for (GET api/conversations?q=).
SEARCH_MAX = 200
OVERLAP = SEARCH_MAX - 1
# Rowids of the slices past a message's first: SLICE_BASE + pos * SLICES + k, 0 < k < SLICES.
SLICES = 4096
SLICE_BASE = 1 << 60

# The message (pos) and slice of a search row, as one number that sorts in text order.
_ORDER_KEY = (
    f"CASE WHEN search.rowid >= {SLICE_BASE} THEN search.rowid - {SLICE_BASE} "
    f"ELSE search.rowid * {SLICES} END"
)

# The message (pos) a search row belongs to: a slice's, a title's (its first message), a message's.
_POS_OF_ROW = (
    f"CASE WHEN search.rowid >= {SLICE_BASE} THEN (search.rowid - {SLICE_BASE}) / {SLICES} "
    "WHEN search.rowid < 0 THEN -search.rowid ELSE search.rowid END"
)

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


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
            f"SQLite {sqlite3.sqlite_version} ({e})"
        ) from e
    return True


def create_index(conn: sqlite3.Connection) -> None:
    """Migration 5: make the index and fill it with what the file already holds."""
    if trigram_available():
        conn.execute(
            "CREATE VIRTUAL TABLE search USING fts5("
            "conversation_id UNINDEXED, text, tokenize='trigram')"
        )
    else:
        conn.execute(
            "CREATE TABLE search (id INTEGER PRIMARY KEY, "
            "conversation_id TEXT NOT NULL, text TEXT NOT NULL)"
        )
    conn.execute(
        "INSERT INTO search (rowid, conversation_id, text) SELECT pos, "
        "conversation_id, text FROM messages WHERE role = 'user' AND text != ''"
    )
    conn.execute(
        "INSERT INTO search (rowid, conversation_id, text) SELECT -min(m.pos), c.id, "
        "c.title FROM conversations c JOIN messages m ON m.conversation_id = c.id "
        "WHERE c.title != '' GROUP BY c.id"
    )
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
    conn.execute(
        "INSERT INTO search (rowid, conversation_id, text) SELECT pos, "
        "conversation_id, text FROM messages WHERE id = ? AND text != ''",
        (message_id,),
    )


def add_reply(conn: sqlite3.Connection, message_id: str) -> bool:
    """Index a reply that has just ended (its final frame is stored): its first slice now,
    the others queued in ``search_backlog``. True if some are queued."""
    row = conn.execute(
        "SELECT pos, conversation_id, last_seq FROM messages WHERE id = ?", (message_id,)
    ).fetchone()
    if row is None:
        return False
    pos, conversation_id, last_seq = row
    conn.execute("DELETE FROM search WHERE rowid BETWEEN ? AND ?", _slice_range(pos))
    conn.execute("DELETE FROM search_backlog WHERE message_id = ?", (message_id,))
    text, seq, offset, done = _read_span(conn, message_id, last_seq, 1, 0, SLICE_CHARS)
    _put(conn, pos, conversation_id, text)
    if not done:
        conn.execute(
            "INSERT INTO search_backlog (message_id, next_seq, next_offset, slice, "
            "carry) VALUES (?, ?, ?, 0, ?)",
            (message_id, seq, offset, text[-OVERLAP:]),
        )
    return not done


def index_next_slice(conn: sqlite3.Connection) -> bool:
    """Index one more slice of the oldest reply waiting in ``search_backlog`` (a write job of
    its own); True while slices still wait."""
    row = conn.execute(
        "SELECT b.message_id, b.next_seq, b.next_offset, b.slice, b.carry, m.pos, "
        "m.conversation_id, m.last_seq FROM search_backlog b JOIN messages m "
        "ON m.id = b.message_id ORDER BY b.rowid LIMIT 1"
    ).fetchone()
    if row is None:
        return False
    message_id, seq, offset, done_slices, carry, pos, conversation_id, last_seq = row
    number = done_slices + 1
    text, seq, offset, done = _read_span(conn, message_id, last_seq, seq, offset, SLICE_CHARS)
    if number < SLICES and text:
        _put(conn, slice_rowid(pos, number), conversation_id, carry + text)
    if done or number + 1 >= SLICES:
        conn.execute("DELETE FROM search_backlog WHERE message_id = ?", (message_id,))
    else:
        conn.execute(
            "UPDATE search_backlog SET next_seq = ?, next_offset = ?, slice = ?, "
            "carry = ? WHERE message_id = ?",
            (seq, offset, number, (carry + text)[-OVERLAP:], message_id),
        )
    return conn.execute("SELECT 1 FROM search_backlog LIMIT 1").fetchone() is not None


def backlog(conn: sqlite3.Connection) -> bool:
    """Whether slices of some reply wait to be indexed."""
    return conn.execute("SELECT 1 FROM search_backlog LIMIT 1").fetchone() is not None


def slice_rowid(pos: int, number: int) -> int:
    return pos if number == 0 else SLICE_BASE + pos * SLICES + number


def _slice_range(pos: int) -> tuple:
    """The rowids of a message's slices past its first."""
    return SLICE_BASE + pos * SLICES + 1, SLICE_BASE + pos * SLICES + SLICES - 1


def _read_span(
    conn: sqlite3.Connection, message_id: str, last_seq: int, seq: int, offset: int, need: int
) -> tuple:
    """Up to ``need`` characters of a reply's text from character ``offset`` of frame ``seq``
    on, without reading more of any frame than is taken: ``(text, seq, offset, done)`` where
    the next span starts at ``offset`` of frame ``seq``, and ``done`` when none is left."""
    frames = conn.execute(
        "SELECT seq, length(chunk), substr(chunk, CASE WHEN seq = ? THEN ? ELSE 1 END, ?) "
        "FROM chunks WHERE message_id = ? AND seq >= ? AND seq <= ? ORDER BY seq",
        (seq, offset + 1, need, message_id, seq, last_seq),
    )
    parts, got = [], 0
    for frame_seq, length, piece in frames:
        start = offset if frame_seq == seq else 0
        piece = piece[: need - got]
        parts.append(piece)
        got += len(piece)
        if got >= need:
            frames.close()
            end = start + len(piece)
            if end >= length:
                frame_seq, end = frame_seq + 1, 0
            rest = conn.execute(
                "SELECT 1 FROM chunks WHERE message_id = ? AND seq >= ? AND seq <= ? "
                "AND (seq > ? OR length(chunk) > ?) LIMIT 1",
                (message_id, frame_seq, last_seq, frame_seq, end),
            ).fetchone()
            return "".join(parts), frame_seq, end, rest is None
    return "".join(parts), last_seq + 1, 0, True


def set_title(conn: sqlite3.Connection, user: str, conversation_id: str, title: str) -> None:
    """Index a conversation's own title ("" when it has none again)."""
    (first,) = conn.execute(
        "SELECT min(pos) FROM messages WHERE user_id = ? AND conversation_id = ?",
        (user, conversation_id),
    ).fetchone()
    if first is not None:
        _put(conn, -first, conversation_id, title)


def forget_conversation(conn: sqlite3.Connection, user: str, conversation_id: str) -> None:
    """Drop a conversation's rows; call before its messages are deleted (they hold the keys)."""
    rows = conn.execute(
        "SELECT pos, role FROM messages WHERE user_id = ? AND conversation_id = ? ORDER BY pos",
        (user, conversation_id),
    ).fetchall()
    if rows:
        keys = [(pos,) for pos, _ in rows] + [(-rows[0][0],)]
        conn.executemany("DELETE FROM search WHERE rowid = ?", keys)
        conn.executemany(
            "DELETE FROM search WHERE rowid BETWEEN ? AND ?",
            [_slice_range(pos) for pos, role in rows if role == "assistant"],
        )


def _put(conn: sqlite3.Connection, rowid: int, conversation_id: str, text: str) -> None:
    conn.execute("DELETE FROM search WHERE rowid = ?", (rowid,))
    if text:
        conn.execute(
            "INSERT INTO search (rowid, conversation_id, text) VALUES (?, ?, ?)",
            (rowid, conversation_id, text),
        )


# -- querying -----------------------------------------------------------------------------


def condition(query: str, full_text: bool) -> tuple:
    """``(SQL, arguments)``: the condition on ``search`` rows that hold ``query``."""
    if full_text and len(query) >= MIN_INDEXED_CHARS:
        cover = _cover(query)
        if cover is None:
            return "search MATCH ?", [_phrase(query)]
        # Rows holding all the query's trigrams in the order of its start, then the text.
        if _ascii_cased(query):
            return (
                "search MATCH ? AND instr(lower(search.text), ?) > 0",
                [_phrase(cover), query.translate(_ASCII_LOWER)],
            )
        return (
            "search MATCH ? AND streamchat_contains(search.text, ?)",
            [_phrase(cover), query.lower()],
        )
    # LIKE's own wildcards, and the escape character, stand for themselves.
    escaped = re.sub(r"([\\%_])", r"\\\1", query)
    return "search.text LIKE ? ESCAPE '\\'", [f"%{escaped}%"]


def _phrase(text: str) -> str:
    """One FTS5 phrase, taken literally: inside double quotes only a double quote is special."""
    return '"' + text.replace('"', '""') + '"'


def register_functions(conn: sqlite3.Connection) -> None:
    """The SQL functions queries use (on every connection that reads the index)."""
    conn.create_function("streamchat_contains", 2, _contains, deterministic=True)


def _contains(text: Optional[str], folded: str) -> int:
    """Whether ``text`` holds ``folded`` (lower case), ignoring case: for the rows a
    repetitive query with letters beyond ASCII found (a slice each: a short while of Python)."""
    return int(text is not None and folded in text.lower())


def _ascii_cased(query: str) -> bool:
    """Whether every letter of ``query`` that has a case is ASCII (SQLite's ``lower`` folds
    those alone)."""
    return not any(c != c.lower() or c != c.upper() for c in query if not c.isascii())


def _cover(query: str) -> Optional[str]:
    """For a query whose trigrams repeat, the shortest start of it that holds each of them;
    else None."""
    folded = query.lower()
    grams = [folded[i : i + 3] for i in range(len(folded) - 2)]
    distinct = set(grams)
    if len(distinct) == len(grams):
        return None
    seen: set = set()
    for i, gram in enumerate(grams):
        seen.add(gram)
        if len(seen) == len(distinct):
            return query[: i + 3]
    return query


def pos_of_row() -> str:
    """SQL: the ``pos`` of the message a search row belongs to (for a title's row, its
    conversation's first message), whose ``user_id`` is the row's user."""
    return _POS_OF_ROW


def order_key() -> str:
    """SQL: a number for a search row that orders messages, and slices within one, as their
    text; 0 or less for a title's row. ``split_key`` turns it back into the row's rowid."""
    return _ORDER_KEY


def split_key(key: Optional[int]) -> Optional[int]:
    if key is None or key <= 0:
        return None
    pos, number = divmod(key, SLICES)
    return slice_rowid(pos, number)


# Markdown as plain text (``plain_text``): what a reader sees of it, without its syntax.
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_RULE = re.compile(r"^ {0,3}([-*_])( *\1){2,} *$")  # also a table's delimiter row of one column
_TABLE_DELIMITER = re.compile(r"^ *\|? *:?-+:? *(\| *:?-+:? *)*\|? *$")
_HEADING = re.compile(r"^ {0,3}#{1,6}(?: +|$)")
_HEADING_END = re.compile(r" +#+ *$")
_QUOTE = re.compile(r"^ {0,3}(?:> ?)+")
_BULLET = re.compile(r"^( *)[-*+] +(\[[ xX]\] +)?")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\](?:\([^)]*\)|\[[^\]]*\])")
_AUTOLINK = re.compile(r"<((?:https?|mailto|ftp):[^>\s]+)>")
_EMPHASIS = [
    re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"),
    re.compile(r"~~(?=\S)(.+?)(?<=\S)~~"),
    re.compile(r"\*(?=[^\s*])(.+?)(?<=[^\s*])\*"),
    re.compile(r"(?<![\w\\])_(?=[^\s_])(.+?)(?<=[^\s_])_(?!\w)"),  # not inside snake_case
]
_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")


def _plain_inline(text: str) -> str:
    """One line's inline Markdown as plain text; the insides of code spans are left as written."""
    parts = []
    last = 0
    for span in _CODE_SPAN.finditer(text):
        parts.append(_plain_words(text[last : span.start()]))
        parts.append(span.group(2).strip() if span.group(2).strip() else span.group(2))
        last = span.end()
    parts.append(_plain_words(text[last:]))
    return "".join(parts)


def _plain_words(text: str) -> str:
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _AUTOLINK.sub(r"\1", text)
    for pattern in _EMPHASIS:
        text = pattern.sub(lambda m: m.group(m.lastindex), text)
    return _ESCAPE.sub(r"\1", text)


def _table_cells(line: str) -> Optional[str]:
    """A table row's cells separated by spaces, or None if ``line`` is no table row."""
    stripped = line.strip()
    if not (stripped.startswith("|") or stripped.endswith("|")) or len(stripped) < 2:
        return None
    cells = re.split(r"(?<!\\)\|", stripped.strip("|"))
    return "  ".join(cell.strip() for cell in cells)


def plain_text(text: str, in_code: bool = False) -> str:
    """Markdown ``text`` as a reader sees it, without the syntax: no code fences (the code
    stays, as written), backticks, emphasis marks, heading ``#``, quote ``>`` or bullet marks,
    links as their text, images as their description, table rows as their cells (the pipes and
    the delimiter row gone), rules dropped. Line by line, and forgiving: ``text`` may be a piece
    cut out of a message, starting or ending anywhere (``in_code`` when it starts inside a
    fenced code block)."""
    lines = []
    for line in text.split("\n"):
        if _FENCE.match(line):
            in_code = not in_code
            lines.append("")
            continue
        if in_code:
            lines.append(line)
            continue
        if _RULE.match(line) or ("-" in line and "|" in line and _TABLE_DELIMITER.match(line)):
            lines.append("")
            continue
        if _HEADING.match(line):
            line = _HEADING_END.sub("", _HEADING.sub("", line))
        line = _QUOTE.sub("", line)
        line = _BULLET.sub(r"\1", line)
        cells = _table_cells(line)
        lines.append(_plain_inline(cells if cells is not None else line))
    return "\n".join(lines)


def snippet(
    text: str, query: str, cut_before: bool = False, cut_after: bool = False, in_code: bool = False
) -> str:
    """About SNIPPET_CHARS characters of ``text`` (Markdown, shown as plain text: see
    ``plain_text``) around the first occurrence of ``query`` (ignoring case), on one line, with
    "…" where the text was cut (or, by the flags, where ``text`` is itself a piece cut out of a
    longer one; ``in_code`` when that piece starts inside a fenced code block). Where the query
    is only found in the Markdown's syntax, the snippet is the text's start."""
    text = plain_text(text, in_code)
    found = re.search(re.escape(query), text, re.IGNORECASE)
    start, end = (found.start(), found.end()) if found else (0, 0)
    begin = max(0, start - SNIPPET_BEFORE)
    if begin > 0 or cut_before:  # start at a word, where one starts close enough
        space = _SPACE.search(text, begin, start)
        begin = space.end() if space else begin
    stop = max(end, begin + SNIPPET_CHARS)
    if stop < len(text):  # and end after one
        spaces = list(_SPACE.finditer(text, end, stop))
        stop = spaces[-1].start() if spaces else stop
    shown = " ".join(text[begin:stop].split())
    return (
        ("…" if begin > 0 or cut_before else "")
        + shown
        + ("…" if stop < len(text) or cut_after else "")
    )


# How much of a message is read to find a match that ``instr(lower(...))`` cannot (a letter
# whose case is outside ASCII): the match is looked for in this start of it.
_UNICODE_WINDOW = 64 * 1024


def snippet_of(conn: sqlite3.Connection, rowid: Optional[int], query: str) -> Optional[str]:
    """The snippet of the search row ``rowid`` around ``query``, reading only the piece of its
    text around the match; None if there is no such row."""
    if rowid is None:
        return None
    row = conn.execute(
        "SELECT length(text), instr(lower(text), ?) FROM search WHERE rowid = ?",
        (query.translate(_ASCII_LOWER), rowid),
    ).fetchone()
    if row is None:
        return None
    length, at = row
    if at:
        first = max(1, at - 2 * SNIPPET_BEFORE)
        size = 4 * SNIPPET_BEFORE + len(query) + SNIPPET_CHARS
    else:
        first, size = 1, _UNICODE_WINDOW
    # The piece is Markdown cut out of the text: whether it starts inside a fenced code block
    # is the parity of the fence lines before it, counted by SQLite (a row is one slice of at
    # most SLICE_CHARS characters; no more of it comes into Python than the piece).
    piece, fences = conn.execute(
        "SELECT substr(text, ?, ?), "
        "(length(pre) - length(replace(pre, char(10) || '```', ''))) / 4 + "
        "(length(pre) - length(replace(pre, char(10) || '~~~', ''))) / 4 + "
        "(substr(pre, 1, 3) IN ('```', '~~~')) "
        "FROM (SELECT text, substr(text, 1, ? - 1) AS pre FROM search WHERE rowid = ?)",
        (first, size, first, rowid),
    ).fetchone()
    return snippet(
        piece,
        query,
        cut_before=first > 1,
        cut_after=first - 1 + len(piece) < length,
        in_code=bool(fences % 2),
    )
