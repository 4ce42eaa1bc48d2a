"""Replies and conversations as Markdown: what a notebook keeps in its saved outputs (a
``%%chat`` cell, a ChatWidget run headless), so that it reads right where the chat's own front
end is missing (GitHub, nbviewer, a notebook opened without the extension).
"""

from __future__ import annotations

import re
from typing import Optional

from .. import protocol as p

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


def status_note(status: str, error: Optional[str] = None) -> str:
    """How a reply ended, in words, when it did not complete: ``(Stopped)``,
    ``(Interrupted)``, ``(Error: ...)``; empty for a complete reply."""
    if status == p.COMPLETE:
        return ""
    if status == p.ERROR:
        return f"(Error: {' '.join(error.split())})" if error else "(Error)"
    return f"({_NOTES.get(status, status)})"


def reply_markdown(text: str, status: str, error: Optional[str] = None) -> str:
    """A reply's text, its code block closed if it stopped inside one, then its status note."""
    note = status_note(status, error)
    if not note:
        return close_fences(text)
    note = f"*{_escape_emphasis(note)}*"
    return f"{close_fences(text)}\n\n{note}" if text.strip() else note


def conversation_markdown(messages: list) -> str:
    """Who said what, in order: ``messages`` as :attr:`Conversation.messages` gives them."""
    if not messages:
        return "*No messages yet.*"
    blocks = []
    for message in messages:
        if message["role"] == "user":
            who, body = "You", close_fences(message["text"])
        else:
            who = message.get("agentId") or "assistant"
            body = reply_markdown(message["text"], message["status"], message.get("error"))
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
