"""How committed frames travel from the reply that made them to the clients that follow them.

A reply publishes each frame on the bus once it is stored; the fan-out (``fanout.py``) listens
and hands it to the clients of this server. In one process the bus is a direct call. A store
shared by several servers plugs in a bus that also carries a hint (ids and the last seq) to the
other servers, whose readers then fetch the frames from the store; the hub does not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional


@dataclass(frozen=True)
class Published:
    """One server frame for the followers of a conversation (and, for a chunk, of its reply).

    ``message_id`` and ``seq`` are set for MESSAGE_CHUNK frames (``final`` on the last one);
    a MESSAGE_ACCEPTED has neither and skips ``origin``, the client that already has it.
    ``listing`` marks a CONVERSATION_UPDATED or CONVERSATION_DELETED: it goes to the clients
    watching the conversation list instead.
    """

    conversation_id: str
    text: str  # the frame, as JSON text
    message_id: Optional[str] = None
    seq: int = 0
    final: bool = False
    origin: Any = None
    listing: bool = False


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
