"""A conversation as a Markdown document, for ``GET api/conversations/{id}/export``.

The document is meant to be read (and kept) by people: the title as its heading, then each
message under a heading saying who wrote it and when, its text as it was written. Thinking
text and usage are left out; a reply that did not end normally says so after its text.

The document is made in pieces (``markdown_pieces``) of about ``PIECE_CHARS`` characters, each
a short piece of work, so a server answering the export of a conversation of many megabytes
can serve other clients between two of them.

The file name travels in ``Content-Disposition`` (RFC 6266): an ASCII ``filename`` of safe
characters only, and the title itself, made safe as a file name, in ``filename*`` (RFC 8187).
Both are made from the title after NFKC normalisation, which folds fullwidth and other
compatibility forms into the characters they stand for (``／`` into ``/``, ``＂`` into ``"``),
as clients and file systems may do themselves: no title can give either name a path
separator, a quote, or a parameter of its own.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timezone
from typing import Iterator
from urllib.parse import quote

from .. import protocol as p
from ..redact import redact

# What a reply that did not complete says after its text.
_ENDINGS = {
    p.STOPPED: "Stopped before the end.",
    p.INTERRUPTED: "Interrupted: the server stopped while this reply was being written.",
    p.STREAMING: "Still being written when this was exported.",
}

# An opening or closing code fence (CommonMark): up to three spaces, then three or more
# backticks or tildes; what follows an opening fence is its info string.
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")

_NONSPACE = re.compile(r"\S")

# Longest file name offered, before ".md".
FILENAME_CHARS = 100

# About how much text one piece of the document holds.
PIECE_CHARS = 64 * 1024


def conversation_markdown(conversation, messages: list) -> str:
    """``conversation``: a ``store.ConversationRecord``; ``messages``: its MessageRecords."""
    return "".join(markdown_pieces(conversation, messages))


def markdown_pieces(conversation, messages: list) -> Iterator[str]:
    """The document of ``conversation_markdown``, in pieces of at most about PIECE_CHARS
    characters, each made in a short while."""
    yield f"# {conversation.title or 'Conversation'}\n"
    for message in messages:
        author = "You" if message.role == "user" else message.agent_id
        yield f"\n## {author} ({_utc(message.created_at)})\n"
        if message.text:
            yield "\n"
            yield from _closed_fence_pieces(message.text)
        ending = _ending(message)
        if ending:
            yield f"\n*{_escape_emphasis(ending)}*\n"


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ending(message) -> str:
    if message.role != "assistant":
        return ""
    if message.status == p.ERROR:
        # As stored, perhaps before it was redacted: no secret goes into a file.
        return f"Error: {redact(message.error)}" if message.error else "Error."
    return _ENDINGS.get(message.status, "")


def _escape_emphasis(text: str) -> str:
    """One line whose ``*`` and ``_`` cannot end the italics early."""
    return re.sub(r"([\\*_`])", r"\\\1", " ".join(text.split()))


def _closed_fences(text: str) -> str:
    """The text, ending with a line break, and with a closing fence added if it leaves a code
    block open (a reply stopped mid-block): else every heading after it would show as code."""
    return "".join(_closed_fence_pieces(text))


def _closed_fence_pieces(text: str) -> Iterator[str]:
    """``_closed_fences(text)`` in pieces of PIECE_CHARS characters; only the starts of lines
    are looked at (and the rest of a line that starts as a fence), whatever their length."""
    opened = None  # the fence of the block we are in
    line = 0  # where the next line to look at starts
    for start in range(0, len(text), PIECE_CHARS):
        end = min(len(text), start + PIECE_CHARS)
        while line < end:
            stop = text.find("\n", line)
            stop = len(text) if stop < 0 else stop
            opened = _fence_after(text, line, stop, opened)
            line = stop + 1
        yield text[start:end]
    if not text.endswith("\n"):
        yield "\n"
    if opened:
        yield f"{opened}\n"


def _fence_after(text: str, start: int, stop: int, opened):
    """The open fence after the line ``text[start:stop]``, given the one before it."""
    fence = _FENCE.match(text[start:min(stop, start + 64)])
    if fence is None:
        return opened
    marks = fence.group(1)
    rest = start + fence.start(2)  # the info string, or what follows a closing fence
    if len(marks) > 60:  # longer than the piece looked at: count it whole
        end = rest
        while end < stop and text[end] == marks[0]:
            end += 1
        marks, rest = text[start + fence.start(1):end], end
    if opened is None:
        if not (marks[0] == "`" and text.find("`", rest, stop) >= 0):
            return marks  # backticks cannot be in the info string
        return None
    if marks[0] == opened[0] and len(marks) >= len(opened) and \
            _NONSPACE.search(text, rest, stop) is None:
        return None
    return opened


# What the ASCII ``filename`` may hold: letters, digits, and punctuation that no client or file
# system reads as anything else (no quote, backslash, slash, semicolon, percent or comma).
_UNSAFE_ASCII = re.compile(r"[^A-Za-z0-9 _.()+=@&!~#$'\[\]{}^-]")
# What the title loses to become a file name: path separators, characters file systems
# refuse, and the parameter separator.
_UNSAFE_NAME = re.compile(r'[/\\:*?"<>|;]')
_WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                    *(f"LPT{i}" for i in range(1, 10))}


def content_disposition(title: str) -> str:
    """An attachment named after the title: an ASCII ``filename`` every browser reads, and the
    title as a file name in ``filename*`` (RFC 8187) where that differs."""
    name = _file_name(title) or "conversation"
    ascii_name = _ascii_name(name) or "conversation"
    header = f'attachment; filename="{ascii_name}.md"'
    if ascii_name != name:
        header += f"; filename*=UTF-8''{quote(name + '.md', safe='')}"
    return header


def _file_name(title: str) -> str:
    """The title without what file systems refuse (path separators, control characters,
    invisible format characters such as bidirectional overrides...), and still without them
    once normalised by NFKC (so a client that normalises the name finds none either)."""
    name = title
    for _ in range(4):  # one round is stable in practice; a few more cost nothing
        before = name
        name = unicodedata.normalize("NFKC", name)
        name = "".join(_name_char(c) for c in name)
        name = " ".join(name.split())[:FILENAME_CHARS].strip(" .")
        if name == before:
            break
    if name.split(".")[0].strip().upper() in _WINDOWS_DEVICES:
        name = "_" + name
    return name


def _name_char(c: str) -> str:
    category = unicodedata.category(c)
    if category in ("Cf", "Cs", "Co", "Cn"):  # invisible, or not characters at all
        return ""
    if category == "Cc" or _UNSAFE_NAME.match(c):
        return " " if c in "\t\n\r\x0b\x0c" else "_"
    return c


def _ascii_name(name: str) -> str:
    """Letters without their accents where that makes them ASCII; other characters dropped,
    and ASCII ones that a client might read as more than a name made ``_``."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    plain = _UNSAFE_ASCII.sub("_", plain)
    plain = " ".join(plain.split()).strip(" .")
    if plain.split(".")[0].strip().upper() in _WINDOWS_DEVICES:
        plain = "_" + plain
    return plain
