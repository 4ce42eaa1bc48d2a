"""Replies and conversations as Markdown: what a notebook keeps in its saved outputs (a
``%%chat`` cell, a ChatWidget run headless), so that it reads right where the chat's own front
end is missing (GitHub, nbviewer, a notebook opened without the extension).

A reply's tool calls show as one line each before its text, where the chat's view has its
cards: ``🔧 read_file: Read f1.txt — completed (0.1 s)``; what a user message had attached, as
one line per item after its text: ``📎 cell: In [3]``.
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

from .. import protocol as p
from ..agents.base import COMPLETED, FAILED, PENDING, RUNNING, WAITING

# How a reply that did not complete says so, after its text.
_NOTES = {
    p.STOPPED: "Stopped",
    p.INTERRUPTED: "Interrupted",
    p.STREAMING: "Still being written",
    "pending": "Waiting for the agent",  # follower.PENDING: not yet accepted
}

# An opening or closing code fence (CommonMark): up to three spaces, then three or more
# backticks or tildes; what follows an opening fence is its info string.
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")


# How each tool-call status reads after the call's name.
_TOOL_STATUS_WORDS = {
    PENDING: "pending",
    RUNNING: "running",
    WAITING: "waiting for approval",
    COMPLETED: "completed",
    FAILED: "failed",
}
# The statuses a reply streamed as text (ChatReply.stream, the command line) shows a line for:
# a call that asks the user something, and its end.
SHOWN_TOOL_STATUSES = frozenset({WAITING, COMPLETED, FAILED})

TOOL_ICON = "🔧"
CONTEXT_ICON = "📎"

# Longest name or title, and error, that a tool call's line quotes (characters).
_NAME_CHARS = 120
_ERROR_CHARS = 300


def tool_call_line(call: dict) -> str:
    """One line for a tool call's state (wire names): ``🔧 read_file: Read f1.txt — completed
    (0.1 s)``; a failed one says why; a waiting one that it waits for approval."""
    name = _one_line(str(call.get("name") or "tool"), _NAME_CHARS)
    title = call.get("title")
    head = name
    if isinstance(title, str) and title.strip() and title.strip() != name:
        head += ": " + _one_line(title, _NAME_CHARS)
    status = call.get("status")
    words = _TOOL_STATUS_WORDS.get(status, str(status))
    if status == FAILED and call.get("error"):
        words += ": " + _one_line(str(call["error"]), _ERROR_CHARS)
    took = tool_call_seconds(call)
    if took is not None:
        words += f" ({format_seconds(took)})"
    return f"{TOOL_ICON} {head} — {words}"


def tool_call_seconds(call: dict) -> Optional[float]:
    """How long an ended call took, from the times the hub stamped on it; else None."""
    started, ended = call.get("startedAt"), call.get("endedAt")
    if call.get("status") not in (COMPLETED, FAILED):
        return None
    if not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in (started, ended)):
        return None
    return max(0.0, ended - started)


def format_seconds(seconds: float) -> str:
    """``0.1 s``, ``42 s``, ``3 min 5 s``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest} s"


def tool_calls_markdown(calls: Iterable[dict]) -> str:
    """A reply's tool calls as a Markdown list, one line each."""
    return "\n".join(f"- {_escape_inline(tool_call_line(call))}" for call in calls)


def context_line(item: dict) -> str:
    """One line naming an attached item: ``📎 cell: In [3]``."""
    kind = _one_line(str(item.get("kind") or "context"), _NAME_CHARS)
    label = item.get("label") or item.get("path") or ""
    label = _one_line(str(label), _NAME_CHARS)
    return f"{CONTEXT_ICON} {kind}: {label}" if label else f"{CONTEXT_ICON} {kind}"


def status_note(status: str, error: Optional[str] = None) -> str:
    """How a reply ended, in words, when it did not complete: ``(Stopped)``,
    ``(Interrupted)``, ``(Error: ...)``; empty for a complete reply."""
    if status == p.COMPLETE:
        return ""
    if status == p.ERROR:
        return f"(Error: {' '.join(error.split())})" if error else "(Error)"
    return f"({_NOTES.get(status, status)})"


def reply_markdown(
    text: str, status: str, error: Optional[str] = None, tool_calls: Optional[list] = None
) -> str:
    """A reply's tool calls (a line each), its text, its code block closed if it stopped
    inside one, then its status note."""
    note = status_note(status, error)
    blocks = [tool_calls_markdown(tool_calls)] if tool_calls else []
    if text.strip() or not (note or blocks):
        blocks.append(close_fences(text))
    if note:
        blocks.append(f"*{_escape_emphasis(note)}*")
    return "\n\n".join(blocks)


def reply_text(
    text: str, status: str, error: Optional[str] = None, tool_calls: Optional[list] = None
) -> str:
    """A reply as plain text: its tool calls (a line each), its text, its status note."""
    note = status_note(status, error)
    blocks = ["\n".join(tool_call_line(call) for call in tool_calls)] if tool_calls else []
    if text or not (note or blocks):
        blocks.append(text)
    if note:
        blocks.append(note)
    return "\n\n".join(blocks)


def conversation_markdown(messages: list) -> str:
    """Who said what, in order: ``messages`` as :attr:`Conversation.messages` gives them."""
    if not messages:
        return "*No messages yet.*"
    blocks = []
    for message in messages:
        if message["role"] == "user":
            who, body = "You", close_fences(message["text"])
            if message.get("context"):
                attached = "\n".join(
                    f"- {_escape_inline(context_line(item))}" for item in message["context"]
                )
                body = f"{body.rstrip()}\n\n{attached}"
        else:
            who = message.get("agentId") or "assistant"
            body = reply_markdown(
                message["text"], message["status"], message.get("error"), message.get("toolCalls")
            )
        blocks.append(f"**{_escape_emphasis(who)}:**\n\n{body}".rstrip())
    return "\n\n".join(blocks) + "\n"


def close_fences(text: str) -> str:
    """``text``, with a closing fence added if it leaves a code block open (a reply stopped
    inside one): else whatever follows it would show as code."""
    opened = None  # the fence of the block we are in
    for line in text.split("\n"):
        match = _FENCE.fullmatch(line)
        if match is None:
            continue
        fence, rest = match.groups()
        if opened is None:
            if not (fence[0] == "`" and "`" in rest):  # backticks in the info string: no fence
                opened = fence
        elif fence[0] == opened[0] and len(fence) >= len(opened) and not rest.strip():
            opened = None
    if opened is None:
        return text
    newline = "" if text.endswith("\n") else "\n"
    return f"{text}{newline}{opened}"


def _escape_emphasis(text: str) -> str:
    """One line whose ``*``, ``_`` and backticks cannot end the emphasis early."""
    return re.sub(r"([\\*_`])", r"\\\1", " ".join(text.split()))


def _escape_inline(text: str) -> str:
    """One line that Markdown shows as it is: no emphasis, code, link, HTML or strike-through
    of its own (a tool's name, error or title is the agent's text, not Markdown)."""
    return re.sub(r"([\\*_`\[\]<>~|])", r"\\\1", " ".join(text.split()))


def _one_line(text: str, longest: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= longest else text[: longest - 1] + "…"
