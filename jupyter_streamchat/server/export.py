"""A conversation as a Markdown document, for ``GET api/conversations/{id}/export``.

The document is meant to be read (and kept) by people: the title as its heading, then each
message under a heading saying who wrote it and when, its text as it was written. Thinking
text and usage are left out; a reply that did not end normally says so after its text.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timezone
from urllib.parse import quote

from .. import protocol as p

# What a reply that did not complete says after its text.
_ENDINGS = {
    p.STOPPED: "Stopped before the end.",
    p.INTERRUPTED: "Interrupted: the server stopped while this reply was being written.",
    p.STREAMING: "Still being written when this was exported.",
}

# An opening or closing code fence (CommonMark): up to three spaces, then three or more
# backticks or tildes; what follows an opening fence is its info string.
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")

# Longest file name offered, before ".md".
FILENAME_CHARS = 100


def conversation_markdown(conversation, messages: list) -> str:
    """``conversation``: a ``store.ConversationRecord``; ``messages``: its MessageRecords."""
    parts = [f"# {conversation.title or 'Conversation'}\n"]
    for message in messages:
        author = "You" if message.role == "user" else message.agent_id
        parts.append(f"## {author} ({_utc(message.created_at)})\n")
        if message.text:
            parts.append(_closed_fences(message.text))
        ending = _ending(message)
        if ending:
            parts.append(f"*{_escape_emphasis(ending)}*\n")
    return "\n".join(parts)


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ending(message) -> str:
    if message.role != "assistant":
        return ""
    if message.status == p.ERROR:
        return f"Error: {message.error}" if message.error else "Error."
    return _ENDINGS.get(message.status, "")


def _escape_emphasis(text: str) -> str:
    """One line whose ``*`` and ``_`` cannot end the italics early."""
    return re.sub(r"([\\*_`])", r"\\\1", " ".join(text.split()))


def _closed_fences(text: str) -> str:
    """The text, ending with a line break, and with a closing fence added if it leaves a code
    block open (a reply stopped mid-block): else every heading after it would show as code."""
    opened = None  # the fence of the block we are in
    for line in text.splitlines():
        fence = _FENCE.match(line)
        if fence is None:
            continue
        marks, rest = fence.groups()
        if opened is None:
            if not (marks[0] == "`" and "`" in rest):  # backticks cannot be in the info string
                opened = marks
        elif marks[0] == opened[0] and len(marks) >= len(opened) and not rest.strip():
            opened = None
    text = text if text.endswith("\n") else text + "\n"
    return text + f"{opened}\n" if opened else text


def content_disposition(title: str) -> str:
    """An attachment named after the title: an ASCII ``filename`` every browser reads, and the
    title as it is in ``filename*`` (RFC 5987) where that differs."""
    name = _file_name(title) or "conversation"
    ascii_name = _ascii_name(name) or "conversation"
    header = f'attachment; filename="{ascii_name}.md"'
    if ascii_name != name:
        header += f"; filename*=UTF-8''{quote(name + '.md', safe='')}"
    return header


def _file_name(title: str) -> str:
    """The title without what file systems refuse (path separators, control characters...)."""
    name = re.sub(r'[\x00-\x1f\x7f/\\:*?"<>|]', "_", " ".join(title.split()))
    return name[:FILENAME_CHARS].strip(" .")


def _ascii_name(name: str) -> str:
    """Letters without their accents where that makes them ASCII; other characters dropped."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return " ".join(plain.split()).strip(" .")
