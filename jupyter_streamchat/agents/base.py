"""The agent interface: a conversation in, an async iterator of text (and a little more) out.

An agent's ``stream`` yields:

- ``str``: answer text, the reply's ``text``;
- :class:`Reasoning`: thinking text, streamed and stored like the answer but kept apart from it;
- :class:`Usage`: what the agent knows of its cost (model, tokens); later values win.

It raises :class:`AgentError` with a message for the user to end the reply with that message;
any other exception ends it with the exception's type and message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import AsyncIterator, Optional, Union

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


class AgentError(Exception):
    """An error to show the user as it is: ``raise AgentError("The model server is down")``."""


Event = Union[str, Reasoning, Usage]


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
