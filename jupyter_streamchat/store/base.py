"""What every message store offers the hub."""

from __future__ import annotations

import getpass
import os
from typing import Callable, NamedTuple, Optional

from traitlets import Unicode, default
from traitlets.config import LoggingConfigurable

from .hints import Hint

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


def local_user() -> str:
    """The user this process works for: JupyterHub's user for a single-user server started by
    a hub, else the operating-system user."""
    try:
        return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()
    except Exception:  # no name for this uid (some containers)
        return str(os.getuid()) if hasattr(os, "getuid") else "user"


class _EveryUser:
    """``user=EVERY_USER``: a read on behalf of the server itself (following another server's
    reply for clients already allowed to see it), not of a client."""

    def __repr__(self):
        return "EVERY_USER"


EVERY_USER = _EveryUser()


class FrameText(NamedTuple):
    """How a reply frame's JSON text is spelled from a stored frame, for a store that spells
    the frames it replays (:meth:`Store.replay_frames`); ``protocol.ChunkFrames`` gives it.

    A frame is ``head``, its seq in decimal, ``chunk`` and its chunk as a JSON string; then,
    if its thinking is not empty, ``reasoning`` and that as a JSON string; then, if it has
    tool-call states, ``tool_calls`` and their stored JSON text as it is; then ``tail``. A
    JSON string is spelled as ``json.dumps(text, ensure_ascii=False)`` spells it: only ``"``,
    ``\\`` and control characters escaped (``\\b \\f \\n \\r \\t`` by name, the others as
    ``\\u00xx``), every other character as it is.
    """

    head: str
    chunk: str
    reasoning: str
    tool_calls: str
    tail: str


class Store(LoggingConfigurable):
    """A message store. Every method is a coroutine that never blocks the event loop.

    Several processes may share one store. Each reply being generated is owned by the
    process producing it, which holds a lease it renews while it runs; only a reply whose
    owner's lease expired (or whose owner is known to be dead) may be ended by another.

    Every conversation belongs to a user, and conversation ids are the user's own: two users
    may each have a conversation "c1", and neither sees the other's. Every method that takes a
    conversation or a message takes ``user=`` (keyword only; None means ``default_user``) and
    acts as if other users' conversations did not exist: it answers None, False or nothing,
    exactly as for an id that exists nowhere. Message ids are made by the store and unique
    across users.
    """

    #: URL schemes this class opens, for ``StreamChatApp.store_url``.
    schemes: tuple = ()

    #: Whether other processes write this store and tell what they commit (``hints.py``),
    #: so that the hub follows their replies live; a store that is set so calls ``on_hint``.
    shared: bool = False

    #: Called (on the event loop) when this process found that it lost its lease: every
    #: reply it was producing has been, or will be, ended by someone else.
    on_lease_lost: Optional[Callable[[], None]] = None

    #: Called (on the event loop) with each hint another process sent (a shared store only).
    on_hint: Optional[Callable[[Hint], None]] = None

    default_user = Unicode(
        help="""The user whose conversations a call without user= reads and writes, and who
        owns the conversations of a store created before conversations had users. Default:
        $JUPYTERHUB_USER, else the operating-system user.""",
    ).tag(config=True)

    @default("default_user")
    def _default_default_user(self):
        return local_user()

    def user_of(self, user) -> object:
        """The user a call acts for: ``default_user`` for None."""
        return self.default_user if user is None else user

    async def announce(self, hint: Hint) -> None:
        """Tell the other processes sharing the store (a stop request); nothing when none
        can share it."""

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
        """End as ``interrupted`` the replies whose owner's lease expired, each with an empty
        final frame carrying its tool calls that had not finished, now failed; returns how
        many."""
        raise NotImplementedError

    async def create_exchange(
        self,
        conversation_id: str,
        agent_id: str,
        text: str,
        client_message_id: str,
        *,
        user: Optional[str] = None,
        context: Optional[list] = None,
    ) -> Exchange:
        """Store the user message (with ``context``, its context items, kept as sent) and a
        reply streaming under this process's lease. A ``client_message_id`` seen before in
        the conversation returns that exchange (``created`` False), changing nothing."""
        raise NotImplementedError

    async def append(self, append: Append) -> None:
        """Store frames of a reply this process owns (and its merged tool-call states, when
        the append has ``tool_state``); raises LeaseLost if it does not."""
        raise NotImplementedError

    async def get_message(self, message_id: str, *, user=None) -> Optional[MessageRecord]:
        """The message, if it is in one of ``user``'s conversations (any with EVERY_USER)."""
        raise NotImplementedError

    async def replay(self, message_id: str, after_seq: int, *, user=None) -> tuple:
        """``(message or None, [(seq, chunk, reasoning, tool_calls), ...] with seq >
        after_seq)`` from one snapshot, ``tool_calls`` being the frame's tool-call states (a
        list) or None; the message's ``text`` is left empty. ``user`` as for get_message."""
        raise NotImplementedError

    async def replay_frames(
        self,
        message_id: str,
        after_seq: int,
        shape: Callable[[MessageRecord], FrameText],
        *,
        user=None,
    ) -> Optional[tuple]:
        """What :meth:`replay` reads, with the frames spelled by the store: ``(message or None,
        texts, last)`` from one snapshot. ``texts`` are the JSON texts, as ``shape(message)``
        spells them, of the frames after ``after_seq`` (the first is ``max(after_seq, 0) +
        1``) except the reply's final frame; ``last`` is that final frame as a chunk tuple of
        :meth:`replay` when it is among them (its text needs the reply's ending), else None.
        The message's ``text``, ``tool_calls`` and ``context`` are left out.

        A RESUME sends a long reply's thousands of frames at once; a store that can spell them
        where it reads them saves a step per frame. One that cannot returns None, and the
        caller reads :meth:`replay` instead."""
        return None

    async def history(
        self,
        conversation_id: str,
        before_message_id: Optional[str],
        max_messages: int,
        max_chars: int,
        *,
        user: Optional[str] = None,
    ) -> Optional[HistoryPage]:
        """The latest messages (older than ``before_message_id`` if given) within the budget,
        from one snapshot; None if there is no such conversation (or no such message in it).
        At least one message is returned when there is one; a reply over the budget comes
        ``truncated`` to its frames that fit (its ``tool_calls`` as of the last of them)."""
        raise NotImplementedError

    async def get_conversation(
        self, conversation_id: str, *, user: Optional[str] = None
    ) -> Optional[list]:
        """All the conversation's messages in order, or None if there is no such conversation."""
        raise NotImplementedError

    async def list_conversations(
        self, limit: int = 0, after: Optional[tuple] = None, *, user: Optional[str] = None
    ) -> list:
        """ConversationRecords, most recently updated first: at most ``limit`` (0: all), and
        only those after ``after``, the ``(updated_at, conversation_id)`` of the last one of
        the page before."""
        raise NotImplementedError

    async def get_conversation_record(
        self, conversation_id: str, *, user: Optional[str] = None
    ) -> Optional[ConversationRecord]:
        """The conversation as ``list_conversations`` lists it, or None if there is none."""
        raise NotImplementedError

    async def search_conversations(
        self,
        query: str,
        limit: int = 0,
        after: Optional[tuple] = None,
        *,
        user: Optional[str] = None,
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

    async def delete_conversation(
        self, conversation_id: str, *, user: Optional[str] = None
    ) -> bool:
        raise NotImplementedError

    async def rename_conversation(
        self, conversation_id: str, title: str, *, user: Optional[str] = None
    ) -> bool:
        """Give the conversation a title ("" to be listed under its first words again);
        False if there is no such conversation. Its place in the list does not change."""
        raise NotImplementedError


__all__ = [
    "EVERY_USER",
    "Append",
    "ConversationRecord",
    "Exchange",
    "HistoryPage",
    "LeaseLost",
    "MessageRecord",
    "SearchTooCostly",
    "Store",
    "StoreError",
    "local_user",
]
