"""What every message store offers the hub."""

from __future__ import annotations

from typing import Callable, Optional

from traitlets.config import LoggingConfigurable

from .records import Append, ConversationRecord, Exchange, HistoryPage, MessageRecord


class StoreError(Exception):
    """The store could not do what was asked (locked, full, gone, read-only). Nothing was
    changed by the request that failed."""


class LeaseLost(StoreError):
    """This process no longer owns the reply it tried to write: its lease expired, or another
    process ended the reply. The write was refused."""


class SearchTooCostly(Exception):
    """A search would cost more than a store allows one query (its text is too repetitive,
    or too short, for the size of the store): the client's request, not a store outage. The
    message says so in words for the user; nothing was changed."""


class Store(LoggingConfigurable):
    """A message store. Every method is a coroutine that never blocks the event loop.

    Several processes may share one store. Each reply being generated is owned by the
    process producing it, which holds a lease it renews while it runs; only a reply whose
    owner's lease expired (or whose owner is known to be dead) may be ended by another.
    """

    #: URL schemes this class opens, for ``StreamChatApp.store_url``.
    schemes: tuple = ()

    #: Called (on the event loop) when this process found that it lost its lease: every
    #: reply it was producing has been, or will be, ended by someone else.
    on_lease_lost: Optional[Callable[[], None]] = None

    @classmethod
    def from_url(cls, url: str, **kwargs) -> "Store":
        raise NotImplementedError

    def describe(self) -> str:
        """Where the data lives, for the server log."""
        raise NotImplementedError

    async def open(self) -> int:
        """Create or migrate the schema, take a lease for this process, and recover: end
        as ``interrupted`` the replies whose owner's lease expired. Returns how many."""
        raise NotImplementedError

    async def close(self) -> None:
        """Give the lease up and close; replies still streaming must have ended."""
        raise NotImplementedError

    async def recover(self) -> int:
        """End as ``interrupted`` the replies whose owner's lease expired; returns how many."""
        raise NotImplementedError

    async def create_exchange(
        self, conversation_id: str, agent_id: str, text: str, client_message_id: str
    ) -> Exchange:
        raise NotImplementedError

    async def append(self, append: Append) -> None:
        """Store frames of a reply this process owns; raises LeaseLost if it does not."""
        raise NotImplementedError

    async def get_message(self, message_id: str) -> Optional[MessageRecord]:
        raise NotImplementedError

    async def replay(self, message_id: str, after_seq: int) -> tuple:
        """``(message or None, [(seq, chunk), ...] with seq > after_seq)`` from one snapshot;
        the message's ``text`` is left empty."""
        raise NotImplementedError

    async def history(
        self,
        conversation_id: str,
        before_message_id: Optional[str],
        max_messages: int,
        max_chars: int,
    ) -> Optional[HistoryPage]:
        """The latest messages (older than ``before_message_id`` if given) within the budget,
        from one snapshot; None if there is no such conversation (or no such message in it).
        At least one message is returned when there is one; a reply over the budget comes
        ``truncated`` to its frames that fit."""
        raise NotImplementedError

    async def get_conversation(self, conversation_id: str) -> Optional[list]:
        """All the conversation's messages in order, or None if there is no such conversation."""
        raise NotImplementedError

    async def list_conversations(self, limit: int = 0, after: Optional[tuple] = None) -> list:
        """ConversationRecords, most recently updated first: at most ``limit`` (0: all), and
        only those after ``after``, the ``(updated_at, conversation_id)`` of the last one of
        the page before."""
        raise NotImplementedError

    async def get_conversation_record(self, conversation_id: str) -> Optional[ConversationRecord]:
        """The conversation as ``list_conversations`` lists it, or None if there is none."""
        raise NotImplementedError

    async def search_conversations(
        self, query: str, limit: int = 0, after: Optional[tuple] = None
    ) -> list:
        """The conversations in which ``query`` occurs, ordered and paged as by
        ``list_conversations``.

        ``query`` is a plain piece of text (no operators or wildcards: ``%``, ``_``, ``*`` and
        quotes stand for themselves), found anywhere, inside words too, ignoring case, in the
        conversation's own title or in the text of any of its messages: user messages, and
        replies once they have ended (their answer text; thinking is not searched). A reply
        still streaming is found once it ends.

        Each record's ``snippet`` is a short, one-line piece of the first message (in order)
        that holds the text, around the match; None when only the title holds it.

        Expected to stay fast on large stores: an index kept current as messages are stored
        and replies end, never per streamed frame. A query that would take longer than the
        store allows one raises :class:`SearchTooCostly`; cancelling the awaiting task stops
        the query at once.
        """
        raise NotImplementedError

    async def delete_conversation(self, conversation_id: str) -> bool:
        raise NotImplementedError

    async def rename_conversation(self, conversation_id: str, title: str) -> bool:
        """Give the conversation a title ("" to be listed under its first words again);
        False if there is no such conversation. Its place in the list does not change."""
        raise NotImplementedError


__all__ = [
    "Append",
    "ConversationRecord",
    "Exchange",
    "HistoryPage",
    "LeaseLost",
    "MessageRecord",
    "SearchTooCostly",
    "Store",
    "StoreError",
]
