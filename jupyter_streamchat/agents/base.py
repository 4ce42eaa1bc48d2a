"""The agent interface: a conversation in, an async iterator of text chunks out."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import AsyncIterator

from traitlets import Unicode
from traitlets.config import LoggingConfigurable


@dataclass
class AgentRequest:
    """What an agent is asked: the new user text and the conversation before it."""

    conversation_id: str
    text: str
    history: list = field(default_factory=list)  # [{"role": ..., "text": ...}], oldest first


class Agent(LoggingConfigurable):
    """Base class of agents. Subclasses implement :meth:`stream`.

    The hub owns the message lifecycle (ids, seq numbers, storage, stop): an agent only yields
    text. A stop cancels the task iterating it, so ``CancelledError`` arrives at the agent's
    current ``await``; clean up in ``finally`` and do not swallow it.
    """

    name = Unicode(help="Name shown in agent pickers.").tag(config=True)
    description = Unicode(help="One line on what the agent does.").tag(config=True)

    def __init__(self, agent_id: str, **kwargs):
        super().__init__(**kwargs)
        self.agent_id = agent_id
        if not self.name:
            self.name = agent_id

    def stream(self, request: AgentRequest) -> AsyncIterator[str]:
        raise NotImplementedError

    def info(self) -> dict:
        return {"id": self.agent_id, "name": self.name, "description": self.description}


_TOKEN = re.compile(r"\s*\S+")


def split_tokens(text: str) -> list:
    """Cut text into word-sized pieces at whitespace boundaries; they concatenate to text."""
    pieces = _TOKEN.findall(text)
    tail = text[sum(map(len, pieces)):]  # trailing whitespace
    if tail:
        if pieces:
            pieces[-1] += tail
        else:
            pieces = [tail]
    return pieces
