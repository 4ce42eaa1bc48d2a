"""What every message store offers the hub, and the records it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from traitlets.config import LoggingConfigurable


class StoreError(Exception):
    """The store could not do what was asked (locked, gone, unwritable). Nothing was changed."""


@dataclass
class StoredMessage:
    message_id: str
    conversation_id: str
    role: str  # "user" or "assistant"
    agent_id: str
    text: str
    status: str
    last_seq: int
    error: Optional[str] = None
    created_at: float = 0.0

    def to_wire(self) -> dict:
        wire = {
            "messageId": self.message_id,
            "role": self.role,
            "agentId": self.agent_id,
            "text": self.text,
            "status": self.status,
            "lastSeq": self.last_seq,
        }
        if self.error is not None:
            wire["error"] = self.error
        return wire


@dataclass
class Exchange:
    """A user message and the reply it started, as returned for a SEND_MESSAGE."""

    client_message_id: str
    conversation_id: str
    user_message_id: str
    message_id: str
    agent_id: str
    text: str
    created: bool  # False when the clientMessageId had been seen before


@dataclass
class Append:
    """Frames of one reply to store in one go: chunks for seqs first_seq, first_seq+1, ...

    With ``status`` set, the last chunk is the reply's final frame and the reply ends.
    """

    message_id: str
    first_seq: int
    chunks: list
    status: Optional[str] = None
    error: Optional[str] = None
    text: Optional[str] = None  # the reply's whole text, given with a final status


class Store(LoggingConfigurable):
    """A message store. Every method is a coroutine that never blocks the event loop."""

    #: URL schemes this class opens, for ``StreamChatApp.store_url``.
    schemes: tuple = ()

    @classmethod
    def from_url(cls, url: str, **kwargs) -> "Store":
        raise NotImplementedError

    def describe(self) -> str:
        """Where the data lives, for the server log."""
        raise NotImplementedError

    async def open(self) -> int:
        """Create or migrate the schema; end replies a dead process left ``streaming``
        as ``interrupted``. Returns how many replies were so ended."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def create_exchange(
        self, conversation_id: str, agent_id: str, text: str, client_message_id: str
    ) -> Exchange:
        raise NotImplementedError

    async def append(self, append: Append) -> None:
        raise NotImplementedError

    async def get_message(self, message_id: str) -> Optional[StoredMessage]:
        raise NotImplementedError

    async def replay(self, message_id: str, after_seq: int) -> tuple:
        """``(message or None, [(seq, chunk), ...] with seq > after_seq)`` from one snapshot."""
        raise NotImplementedError

    async def get_conversation(self, conversation_id: str) -> Optional[list]:
        """The conversation's messages in order, or None if there is no such conversation."""
        raise NotImplementedError

    async def list_conversations(self) -> list:
        raise NotImplementedError

    async def delete_conversation(self, conversation_id: str) -> bool:
        raise NotImplementedError
