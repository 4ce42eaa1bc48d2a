"""The agent interface: a conversation in, an async iterator of text (and a little more) out.

An agent's ``stream`` yields:

- ``str``: answer text, the reply's ``text``;
- :class:`Reasoning`: thinking text, streamed and stored like the answer but kept apart from it;
- :class:`Usage`: what the agent knows of its cost (model, tokens); later values win;
- :class:`ToolCall`: a tool call's state, each time it changes (the latest state of an id wins).

A tool call that needs the user's yes is asked with ``decision = await request.approve(call)``:
the hub shows the call as ``waiting`` in every open view, stores the answer and returns it
(``ALLOW_ONCE``, ``ALLOW_ALWAYS`` or ``REJECT``); a call of a tool the user allowed always in
this conversation is answered at once. Nobody answering within the hub's approval timeout
raises :class:`ApprovalTimeout`, which ends the reply saying so. A stop while the call waits
cancels the agent there, as at any other ``await``.

It raises :class:`AgentError` with a message for the user to end the reply with that message;
any other exception ends it with the exception's type and message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable, Optional, Union

from traitlets import Int, Unicode
from traitlets.config import LoggingConfigurable


@dataclass
class AgentRequest:
    """What an agent is asked: the new user text and the conversation before it."""

    conversation_id: str
    text: str
    # [{"role": "user" | "assistant", "text": ...}], oldest first, within the agent's
    # max_history_chars; a reply that was stopped or cut off comes as far as it got.
    history: list = field(default_factory=list)
    # What the user attached to the new text (a cell, an error, a file, a variable...): a list
    # of dicts with "kind", "label" and "text" (the snapshot sent, as the user saw it) and,
    # by kind, "path", "cell", "language", "mime"... (docs/protocol.md, "Context").
    context: list = field(default_factory=list)
    # Asks the user to approve a tool call; see the module's docstring. Hosts without anyone to
    # ask leave the default, which rejects.
    approve: Callable[["ToolCall"], Awaitable[str]] = field(default=None, repr=False)

    def __post_init__(self):
        if self.approve is None:
            self.approve = _nobody_to_ask


async def _nobody_to_ask(call: "ToolCall") -> str:
    return REJECT


@dataclass(frozen=True)
class Reasoning:
    """Thinking text ("reasoning_content", "<think>"): shown apart, never sent back as context."""

    text: str


@dataclass(frozen=True)
class Usage:
    """Cost of a reply as the agent knows it; None where it does not. The hub adds the time to
    the first token and the duration."""

    model: Optional[str] = None
    input_tokens: Optional[int] = None
    output_tokens: Optional[int] = None


# A tool call's status as agents report it; "waiting" is the hub's own (see approve).
PENDING = "pending"
RUNNING = "running"
WAITING = "waiting"
COMPLETED = "completed"
FAILED = "failed"
TOOL_STATUSES = frozenset({PENDING, RUNNING, WAITING, COMPLETED, FAILED})

# What the user answers to an approval.
ALLOW_ONCE = "allow_once"
ALLOW_ALWAYS = "allow_always"  # this tool, for the rest of the conversation
REJECT = "reject"
DECISIONS = frozenset({ALLOW_ONCE, ALLOW_ALWAYS, REJECT})


@dataclass(frozen=True)
class ToolCall:
    """One state of a tool call. Yield a new one whenever it changes; the hub keeps the latest
    per ``id`` (unique within the reply), stamps its timings and streams it beside the text.

    ``arguments`` is JSON text as the model wrote it; ``result`` is the result, or a summary of
    it, as text (long ones are cut); ``diff`` shows a file edit: ``{"path", "oldText",
    "newText"}``. ``kind`` is ACP's: read, edit, delete, move, search, execute, think, fetch or
    other.
    """

    id: str
    name: str
    status: str = PENDING
    arguments: str = ""
    title: Optional[str] = None
    kind: Optional[str] = None
    result: Optional[str] = None
    error: Optional[str] = None
    diff: Optional[dict] = None

    def __post_init__(self):
        if self.status not in TOOL_STATUSES:
            raise ValueError(
                f"tool call status {self.status!r} is not one of {sorted(TOOL_STATUSES)}"
            )


class AgentError(Exception):
    """An error to show the user as it is: ``raise AgentError("The model server is down")``."""


class ApprovalTimeout(AgentError):
    """Nobody answered an approval in time: the call was not run and the reply ends so."""


Event = Union[str, Reasoning, Usage, ToolCall]


class Agent(LoggingConfigurable):
    """Base class of agents. Subclasses implement :meth:`stream`.

    The hub owns the message lifecycle (ids, seq numbers, storage, stop): an agent only yields.
    A stop cancels the task iterating it, so ``CancelledError`` arrives at the agent's current
    ``await``; clean up in ``finally`` and do not swallow it.
    """

    name = Unicode(help="Name shown in agent pickers.").tag(config=True)
    description = Unicode(help="One line on what the agent does.").tag(config=True)
    max_history_chars = Int(
        200_000,
        help="""How much of the conversation before the new message the agent is given, in
        characters; the oldest messages are left out first.""",
    ).tag(config=True)

    def __init__(self, agent_id: str, **kwargs):
        super().__init__(**kwargs)
        self.agent_id = agent_id
        if not self.name:
            self.name = agent_id

    def stream(self, request: AgentRequest) -> AsyncIterator[Event]:
        raise NotImplementedError

    def info(self) -> dict:
        return {"id": self.agent_id, "name": self.name, "description": self.description}

    @property
    def offered(self) -> bool:
        """Whether the plug-in's own instance (its entry-point name as id) is worth listing:
        False for a class that does nothing until configured (``acp`` without a command).
        Named agents (StreamChatApp.agents) are always listed."""
        return True


_TOKEN = re.compile(r"\s*\S+")


def split_tokens(text: str) -> list:
    """Cut text into word-sized pieces at whitespace boundaries; they concatenate to text."""
    pieces = _TOKEN.findall(text)
    tail = text[sum(map(len, pieces)) :]  # trailing whitespace
    if tail:
        if pieces:
            pieces[-1] += tail
        else:
            pieces = [tail]
    return pieces
