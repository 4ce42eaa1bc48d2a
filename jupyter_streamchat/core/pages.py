"""A whole conversation read a page at a time, oldest first, for the answers that send all of
it (``GET api/conversations/{id}`` and its export): memory holds one page (or one message
longer than a page) at a time, however long the conversation.

Stores page backwards (``Store.history``: the latest messages before a given one, within a
budget of messages and characters), and an answer goes forwards. So the conversation is read
twice: backwards first, by :meth:`ConversationPages.open`, which keeps only where each page
starts and how many messages it holds; then forwards, a page at a time, by
:meth:`ConversationPages.pages`, as the answer is sent. Messages are only ever added at the
end of a conversation (or deleted with it), so "the ``n`` messages before message X" names
the same messages on both reads.

What a reader gets: the messages the conversation held at the first read, in order, each as
it was when its page was read, from one snapshot: a reply streaming meanwhile may be further
on than at the start, its ``text`` still ending exactly at its ``last_seq``. Messages added
after the first read are left out (a client following the conversation gets them live). A
conversation deleted after the first read makes :meth:`pages` raise :class:`ConversationGone`.
"""

from __future__ import annotations

from typing import AsyncIterator, Callable, Optional


class ConversationGone(Exception):
    """The conversation was deleted while it was being read."""


class ConversationPages:
    """Made by :meth:`open`; :meth:`pages` reads the messages."""

    def __init__(self, store, conversation_id: str, page_chars: int, user, plan, newest, amend):
        self.conversation_id = conversation_id
        self.record = None  # the ConversationRecord, when open() was asked for it
        self._store = store
        self._page_chars = page_chars
        self._user = user
        self._plan = plan  # [(anchor message id, how many messages before it)], oldest first
        self._newest = newest  # the last message's id, read on its own
        self._amend = amend

    @classmethod
    async def open(
        cls,
        store,
        conversation_id: str,
        page_messages: int,
        page_chars: int,
        *,
        user=None,
        record: bool = False,
        amend: Optional[Callable[[list], None]] = None,
    ) -> Optional["ConversationPages"]:
        """None if there is no such conversation. ``record``: also read its
        ConversationRecord (``.record``). ``amend``: called with each page's messages before
        they are handed out (the hub shows there the ends of replies not stored yet)."""
        found = None
        if record:
            found = await store.get_conversation_record(conversation_id, user=user)
            if found is None:
                return None
        page = await store.history(conversation_id, None, page_messages, page_chars, user=user)
        if page is None:
            return None
        plan, newest = [], None
        if page.messages:
            # The newest message has no message after it to page from: it is read by its id.
            newest = page.messages[-1].message_id
            plan.append((newest, len(page.messages) - 1))
        while page.has_more:  # each page holds at least one message: bounded by their number
            anchor = page.messages[0].message_id
            page = await store.history(
                conversation_id, anchor, page_messages, page_chars, user=user
            )
            if page is None:
                return None  # deleted meanwhile; nothing is sent yet
            if not page.messages:
                break
            plan.append((anchor, len(page.messages)))
        plan.reverse()
        pages = cls(store, conversation_id, page_chars, user, plan, newest, amend)
        pages.record = found
        return pages

    async def pages(self) -> AsyncIterator[list]:
        """The messages, oldest first, in lists of about a page; raises ConversationGone."""
        for anchor, count in self._plan:
            if count:
                async for page in self._stretch(anchor, count):
                    yield page
        if self._newest is not None:
            yield self._amended([await self._whole(self._newest)])

    async def _stretch(self, anchor: str, count: int) -> AsyncIterator[list]:
        """The ``count`` messages before message ``anchor``, oldest first."""
        page = await self._store.history(
            self.conversation_id, anchor, count, self._page_chars, user=self._user
        )
        if page is None or not page.messages:
            raise ConversationGone(self.conversation_id)
        messages = page.messages
        if len(messages) < count:
            # A reply grew past the page's budget since the first read: the older messages
            # of this stretch first, then these again, with nothing held in between.
            first, got = messages[0].message_id, len(messages)
            del page, messages
            async for older in self._stretch(first, count - got):
                yield older
            async for rest in self._stretch(anchor, got):
                yield rest
            return
        # Only a page's newest message may be over its budget; it comes cut short.
        if messages[-1].truncated:
            messages[-1] = await self._whole(messages[-1].message_id)
        yield self._amended(messages)

    async def _whole(self, message_id: str):
        message = await self._store.get_message(message_id, user=self._user)
        if message is None or message.conversation_id != self.conversation_id:
            raise ConversationGone(self.conversation_id)
        return message

    def _amended(self, messages: list) -> list:
        if self._amend is not None:
            self._amend(messages)
        return messages
