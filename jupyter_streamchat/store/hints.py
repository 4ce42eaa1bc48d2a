"""What a shared store tells the other servers about what it committed: hints, not data.

Several Jupyter servers may write one store (Postgres). Each announces, with every committed
write, which reply got frames up to which seq, which exchange began, which conversation was
renamed or deleted, and which reply a client asked to stop. A hint carries ids and the last seq
only; a server that follows the reply reads the frames themselves from the store, by seq. So a
lost, late or merged hint changes nothing that a read from the store does not repair, and a
server that missed some (its listening connection dropped) is told to catch up with
:class:`Resync`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class FramesCommitted:
    """A reply's frames up to ``last_seq`` are stored; ``final`` when that one ended it."""

    user: str
    conversation_id: str
    message_id: str
    last_seq: int
    final: bool = False


@dataclass(frozen=True)
class ExchangeCreated:
    """A user message and the reply it starts were stored (MESSAGE_ACCEPTED's ids)."""

    user: str
    conversation_id: str
    client_message_id: str
    user_message_id: str
    message_id: str
    agent_id: str


@dataclass(frozen=True)
class ConversationChanged:
    """A conversation was renamed (or its listing changed otherwise), or deleted."""

    user: str
    conversation_id: str
    deleted: bool = False


@dataclass(frozen=True)
class StopRequested:
    """A client of another server asked to stop this reply (STOP_GENERATING)."""

    message_id: str


@dataclass(frozen=True)
class ToolCallAnswered:
    """A client of another server answered a tool call of this reply (ANSWER_TOOL_CALL)."""

    user: str
    message_id: str
    tool_call_id: str
    decision: str


@dataclass(frozen=True)
class Resync:
    """Hints may have been lost (the listening connection dropped and is back): whoever
    follows something from another server reads it again from the store."""


Hint = Union[
    FramesCommitted, ExchangeCreated, ConversationChanged, StopRequested, ToolCallAnswered, Resync
]
