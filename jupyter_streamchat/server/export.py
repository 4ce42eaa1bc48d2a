"""A conversation as a Markdown document, for ``GET api/conversations/{id}/export``.

The document is meant to be read (and kept) by people: the title as its heading, a line saying
what the document holds, then each message under a heading saying who wrote it and when (the
server's local time, with its offset from UTC), its text as it was written but for its own
headings, which are moved two levels down (``#`` becomes ``###``, at most ``######``) so that
they sit below the headings that separate the messages. Each reply's thinking comes before its
text in a collapsed ``<details>`` block when asked for (``thinking=True``); usage is left out;
a reply that did not end normally says so after its text.

A reply's tool calls come before its text (where the chat's view shows them), each as a line
naming the tool (and its title), how it ended and how long it took, then its arguments, the
change it made to a file (as a diff), and its result or error, each in a fenced block. What a
user message had attached comes after its text: each item's kind and label, then its text in a
fenced block. Every text of a tool call or an attached item goes through ``redact`` first: a
tool may have read a file that quotes a key.

The document is made in pieces (``markdown_pieces``) of about ``PIECE_CHARS`` characters, each
a short piece of work, so a server answering the export of a conversation of many megabytes
can serve other clients between two of them; ``head_pieces`` and ``message_pieces`` make the
same pieces from messages read a page at a time, so that the conversation is never whole in
memory.

The file name travels in ``Content-Disposition`` (RFC 6266): an ASCII ``filename`` of safe
characters only, and the title itself, made safe as a file name, in ``filename*`` (RFC 8187).
Both are made from the title after NFKC normalisation, which folds fullwidth and other
compatibility forms into the characters they stand for (``／`` into ``/``, ``＂`` into ``"``),
as clients and file systems may do themselves: no title can give either name a path
separator, a quote, or a parameter of its own.
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from datetime import datetime, timezone
from typing import Iterator
from urllib.parse import quote

from .. import protocol as p
from ..agents.base import ALLOW_ALWAYS, ALLOW_ONCE, REJECT
from ..kernel.markdown import format_seconds, tool_call_seconds
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


# What the line under the title says the document holds.
_CONTENTS = (
    "*Each message with its author and time (the server's local time, with its offset "
    "from UTC).{thinking} Token usage is not included.*"
)
_WITH_THINKING = " Each reply's thinking comes before its text, in a folded section, Thinking."
_WITHOUT_THINKING = " Thinking is not included."

# How many levels a message's own headings move down: below the messages' `##`.
HEADING_SHIFT = 2


def conversation_markdown(conversation, messages: list, thinking: bool = False) -> str:
    """``conversation``: a ``store.ConversationRecord``; ``messages``: its MessageRecords;
    ``thinking``: whether each reply's thinking (``MessageRecord.reasoning``) is included."""
    return "".join(markdown_pieces(conversation, messages, thinking))


def markdown_pieces(conversation, messages, thinking: bool = False) -> Iterator[str]:
    """The document of ``conversation_markdown``, in pieces of at most about PIECE_CHARS
    characters, each made in a short while."""
    yield from head_pieces(conversation, thinking)
    for message in messages:
        yield from message_pieces(message, thinking)


def head_pieces(conversation, thinking: bool = False) -> Iterator[str]:
    """The document's start: its title, and what it holds. ``message_pieces`` of each message
    follow; a server reading a long conversation a page at a time makes them as it reads."""
    yield f"# {conversation.title or 'Conversation'}\n"
    yield "\n" + _CONTENTS.format(thinking=_WITH_THINKING if thinking else _WITHOUT_THINKING)
    yield "\n"


def message_pieces(message, thinking: bool = False) -> Iterator[str]:
    """One message of the document: its heading, thinking (if asked for), tool calls, text,
    attached context and ending."""
    author = "You" if message.role == "user" else message.agent_id
    yield f"\n## {author} ({local_time(message.created_at)})\n"
    reasoning = getattr(message, "reasoning", "") or ""
    if thinking and reasoning.strip():
        # An HTML block, then Markdown between blank lines: renderers that know <details>
        # (GitHub, JupyterLab) fold it; the others show it as it is.
        yield "\n<details>\n<summary>Thinking</summary>\n\n"
        yield from _closed_fence_pieces(reasoning)
        yield "\n</details>\n"
    calls = [c for c in getattr(message, "tool_calls", None) or () if isinstance(c, dict)]
    if calls and message.status != p.STREAMING:
        calls = p.ended_tool_calls(calls)  # as the reply's end left them
    for call in calls:
        yield from _tool_call_pieces(call)
    if message.text:
        yield "\n"
        yield from _closed_fence_pieces(message.text)
    for item in getattr(message, "context", None) or []:
        if isinstance(item, dict):
            yield from _context_pieces(item)
    ending = _ending(message)
    if ending:
        yield f"\n*{_escape_emphasis(ending)}*\n"


# How a tool call's status reads in its line, and what the user decided.
_TOOL_STATUS = {
    "pending": "pending",
    "running": "running",
    "waiting": "waiting for approval",
    "completed": "completed",
    "failed": "failed",
}
_DECISIONS = {
    ALLOW_ONCE: "allowed once",
    ALLOW_ALWAYS: "allowed for the conversation",
    REJECT: "rejected",
}


def _tool_call_pieces(call: dict) -> Iterator[str]:
    """``**🔧 read_file** · Read f1.txt · completed · 0.1 s``, then its arguments, change,
    result and error in fenced blocks."""
    name = str(call.get("name") or "tool")
    head = f"\n**🔧 {_escape_inline(name)}**"
    title = call.get("title")
    if isinstance(title, str) and title.strip() and title.strip() != name:
        head += f" · {_escape_inline(redact(title))}"
    status = call.get("status")
    head += f" · {_TOOL_STATUS.get(status, _escape_inline(str(status)))}"
    decision = _DECISIONS.get(call.get("decision"))
    if decision:
        head += f" ({decision})"
    took = tool_call_seconds(call)
    if took is not None:
        head += f" · {format_seconds(took)}"
    yield head + "\n"
    arguments = call.get("arguments")
    if isinstance(arguments, str) and arguments.strip():
        yield from _fenced("Arguments", _pretty_json(redact(arguments)), "json")
    diff = call.get("diff")
    if isinstance(diff, dict):
        path = str(diff.get("path") or "")
        lines = difflib.unified_diff(
            redact(str(diff.get("oldText") or "")).splitlines(keepends=True),
            redact(str(diff.get("newText") or "")).splitlines(keepends=True),
            f"a/{path}",
            f"b/{path}",
        )
        shown = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
        if shown:
            yield from _fenced(
                f"Change to {_escape_inline(path)}" if path else "Change", shown, "diff"
            )
    for label, key in (("Result", "result"), ("Error", "error")):
        value = call.get(key)
        if isinstance(value, str) and value:
            yield from _fenced(label, redact(value), "text")


def _context_pieces(item: dict) -> Iterator[str]:
    """``**Attached cell:** In [3] (analysis.ipynb, cell 4)``, then its text, fenced."""
    kind = str(item.get("kind") or "context")
    head = f"\n**Attached {_escape_inline(kind)}:**"
    label = item.get("label")
    if isinstance(label, str) and label.strip():
        head += f" {_escape_inline(redact(label))}"
    where = []
    if isinstance(item.get("path"), str) and item["path"] and item["path"] != label:
        where.append(_escape_inline(item["path"]))
    cell = item.get("cell")
    if isinstance(cell, int) and not isinstance(cell, bool):
        where.append(f"cell {cell + 1}")  # as people count them
    if where:
        head += f" ({', '.join(where)})"
    yield head + "\n"
    text = item.get("text")
    if isinstance(text, str) and text:
        language = item.get("language")
        info = language if isinstance(language, str) and _INFO.fullmatch(language) else ""
        yield from _fenced("", redact(text), info)


# What a fence's info string may hold here: a language's name.
_INFO = re.compile(r"[A-Za-z0-9_+#.-]{1,40}")
_BACKTICKS = re.compile(r"`{3,}")


def _fenced(label: str, text: str, info: str = "") -> Iterator[str]:
    """``label:`` (if any), then ``text`` in a code block that nothing in it can close: its
    fence is longer than any run of backticks in it. In pieces of about PIECE_CHARS."""
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    yield f"\n{label}:\n\n" if label else "\n"
    yield f"{fence}{info}\n"
    for start in range(0, len(text), PIECE_CHARS):
        yield text[start : start + PIECE_CHARS]
    yield ("" if text.endswith("\n") else "\n") + f"{fence}\n"


def _pretty_json(text: str) -> str:
    """Arguments as JSON laid out to be read, or as they were if they are not JSON."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        return text


def local_time(timestamp: float) -> str:
    """``2026-12-07 10:22 +01:00``: the server's local time, to the minute, and its offset from
    UTC at that moment (it changes with daylight saving time)."""
    moment = datetime.fromtimestamp(timestamp, timezone.utc).astimezone()
    offset = int(moment.utcoffset().total_seconds()) // 60
    sign = "-" if offset < 0 else "+"
    hours, minutes = divmod(abs(offset), 60)
    return f"{moment.strftime('%Y-%m-%d %H:%M')} {sign}{hours:02d}:{minutes:02d}"


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


def _escape_inline(text: str) -> str:
    """One line that Markdown shows as it is: no emphasis, code, link, HTML or strike-through
    of its own (a tool's name or title is the agent's text, not Markdown)."""
    return re.sub(r"([\\*_`\[\]<>~|])", r"\\\1", " ".join(text.split()))


def _closed_fences(text: str) -> str:
    """The text, ending with a line break, with its headings moved HEADING_SHIFT levels down
    (code blocks left as they are), and with a closing fence added if it leaves a code block
    open (a reply stopped mid-block): else every heading after it would show as code."""
    return "".join(_closed_fence_pieces(text))


def _closed_fence_pieces(text: str) -> Iterator[str]:
    """``_closed_fences(text)`` in pieces of about PIECE_CHARS characters; only the starts of
    lines are looked at (and the rest of a line that starts as a fence), whatever their
    length."""
    opened = None  # the fence of the block we are in
    line = 0  # where the next line to look at starts
    paragraph = None  # where the line before starts, if it is a line of a paragraph
    start = 0  # where the next piece starts
    while start < len(text):
        end = min(len(text), start + PIECE_CHARS)
        edits = []  # (start, stop, replacement) in text, in order, from `start` on
        while line < end:
            stop = text.find("\n", line)
            stop = len(text) if stop < 0 else stop
            if opened is None:
                paragraph = _heading_edits(text, line, stop, paragraph, start, edits)
            else:
                paragraph = None
            opened = _fence_after(text, line, stop, opened)
            if opened is not None:
                paragraph = None
            line = stop + 1
        # A piece ends after its last edit (which is near the start of the last line looked
        # at, or is that line's deletion), never inside it.
        end = min(len(text), max([end, *(edit[1] for edit in edits)]))
        yield _edited(text, start, end, edits)
        start = end
    if not text.endswith("\n"):
        yield "\n"
    if opened:
        yield f"{opened}\n"


# An ATX heading's opening: up to three spaces, one to six #, then a space, a tab or the end.
_ATX = re.compile(r" {0,3}(#{1,6})(?=[ \t]|$)")
# A setext heading's underline (under a line of a paragraph): = for level 1, - for level 2.
_SETEXT = re.compile(r" {0,3}(=+|-+)[ \t]*$")
# Lines that cannot be (the last line of) a paragraph that a setext underline would make a
# heading: blank, indented code, block quotes, list items, headings, fences, tables, HTML.
_NOT_PARAGRAPH = re.compile(
    r"\s*$| {4}|\t| {0,3}([>#<|]|[-+*][ \t]|[-+*]$|\d{1,9}[.)]([ \t]|$)|"
    r"```|~~~|([-*_][ \t]*){3,}$)"
)


def _heading_edits(text: str, start: int, stop: int, paragraph, piece: int, edits: list):
    """Adds to ``edits`` what moves a heading on the line ``text[start:stop]`` (outside code)
    HEADING_SHIFT levels down; returns where this line starts if it may be a paragraph's."""
    head = text[start : min(stop, start + 80)]
    atx = _ATX.match(head)
    if atx:
        level = min(6, len(atx.group(1)) + HEADING_SHIFT)
        edits.append((start + atx.start(1), start + atx.end(1), "#" * level))
        return None
    setext = _SETEXT.match(head) if stop - start <= 80 else None
    if setext and paragraph is not None:
        level = min(6, (1 if setext.group(1)[0] == "=" else 2) + HEADING_SHIFT)
        if paragraph >= piece:  # the heading's text is in this piece: make it an ATX heading
            edits.append((paragraph, paragraph, "#" * level + " "))
            edits.append((start, stop + 1 if stop < len(text) else stop, ""))
        else:  # (rare: a piece ends between the two) keep the text a paragraph, not a heading
            edits.append((start, start, "\n"))
        return None
    if _NOT_PARAGRAPH.match(head):
        return None
    return start


def _edited(text: str, start: int, end: int, edits: list) -> str:
    """``text[start:end]`` with the ``edits`` made (all of them within it)."""
    if not edits:
        return text[start:end]
    out, at = [], start
    for edit_start, edit_stop, replacement in edits:
        out.append(text[at:edit_start])
        out.append(replacement)
        at = max(at, edit_stop)
    out.append(text[at:end])
    return "".join(out)


def _fence_after(text: str, start: int, stop: int, opened):
    """The open fence after the line ``text[start:stop]``, given the one before it."""
    fence = _FENCE.match(text[start : min(stop, start + 64)])
    if fence is None:
        return opened
    marks = fence.group(1)
    rest = start + fence.start(2)  # the info string, or what follows a closing fence
    if len(marks) > 60:  # longer than the piece looked at: count it whole
        end = rest
        while end < stop and text[end] == marks[0]:
            end += 1
        marks, rest = text[start + fence.start(1) : end], end
    if opened is None:
        if not (marks[0] == "`" and text.find("`", rest, stop) >= 0):
            return marks  # backticks cannot be in the info string
        return None
    if (
        marks[0] == opened[0]
        and len(marks) >= len(opened)
        and _NONSPACE.search(text, rest, stop) is None
    ):
        return None
    return opened


# What the ASCII ``filename`` may hold: letters, digits, and punctuation that no client or file
# system reads as anything else (no quote, backslash, slash, semicolon, percent or comma).
_UNSAFE_ASCII = re.compile(r"[^A-Za-z0-9 _.()+=@&!~#$'\[\]{}^-]")
# What the title loses to become a file name: path separators, characters file systems
# refuse, and the parameter separator.
_UNSAFE_NAME = re.compile(r'[/\\:*?"<>|;]')
_WINDOWS_DEVICES = {
    "CON",
    "PRN",
    "AUX",
    "NUL",
    *(f"COM{i}" for i in range(1, 10)),
    *(f"LPT{i}" for i in range(1, 10)),
}


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
