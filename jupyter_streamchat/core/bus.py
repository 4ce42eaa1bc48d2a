"""How committed frames travel from the reply that made them to the clients that follow them.

A reply publishes each frame on the bus once it is stored; the fan-out (``fanout.py``) listens
and hands it to the clients of this server. In one process the bus is a direct call. A store
shared by several servers plugs in a bus that also carries a hint (ids and the last seq) to the
other servers, whose readers then fetch the frames from the store (``remote.py``).

Conversation ids are their user's own (two users may each have a conversation "c1"), so every
event names the user whose conversation it concerns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Union


@dataclass(frozen=True)
class ReplyFrame:
    """A stored MESSAGE_CHUNK, for the followers of its conversation and of its reply."""

    user: str
    conversation_id: str
    message_id: str
    seq: int
    text: str  # the frame, as JSON text
    final: bool = False  # the reply's last frame: its followers by reply are let go after it


@dataclass(frozen=True)
class Accepted:
    """A MESSAGE_ACCEPTED, for the followers of its conversation but ``origin``, the client
    that sent the message and was answered already."""

    user: str
    conversation_id: str
    text: str
    origin: Any = None


@dataclass(frozen=True)
class ListingChange:
    """A CONVERSATION_UPDATED or CONVERSATION_DELETED, for the clients watching the list."""

    user: str
    conversation_id: str
    text: str


Published = Union[ReplyFrame, Accepted, ListingChange]

Listener = Callable[[Published], None]


class InProcessBus:
    """The bus of one server process: publishing calls every listener at once, in order."""

    def __init__(self):
        self._listeners: list = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def publish(self, event: Published) -> None:
        for listener in self._listeners:
            listener(event)
