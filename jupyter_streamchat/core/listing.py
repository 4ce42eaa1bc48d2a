"""Keeping every tab's conversation list current: CONVERSATION_UPDATED and CONVERSATION_DELETED.

The hub says when a conversation changed in a way the list shows (created, a new message, a
reply started or ended, renamed) and when one was deleted. A change is announced with the
conversation's entry read from the store once the change is stored, so it is exactly what
``GET api/conversations`` would list at that moment; nothing is read while nobody watches.

The reads of one conversation's changes may finish in any order, and a read may finish after
the conversation was deleted. So each change takes a number, and only the latest change of a
conversation announces what it read; a deletion makes the reads still under way moot. Changes
close together may thus come as one frame, with the latest entry.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Callable

from .. import protocol as p
from ..store import Store, StoreError
from .bus import ListingChange, Published


class ListUpdates:
    def __init__(
        self,
        store: Store,
        publish: Callable[[Published], None],
        watched: Callable[[str], bool],
        track: Callable[[asyncio.Task], None],
        log: logging.Logger,
        waiting: Callable[[str, str], bool] = lambda user, conversation_id: False,
    ):
        self.store = store
        self.publish = publish
        self.watched = watched  # whether any client of a user watches that user's list
        self.track = track  # keeps a background task until it ends (the hub's)
        self.log = log
        self.waiting = waiting  # whether a reply in (user, conversation) waits for approval
        self._numbers = itertools.count(1)
        self._latest: dict = {}  # (user, conversation id) -> number of its change being read

    def changed(self, user: str, conversation_id: str) -> None:
        if not self.watched(user):
            return
        number = self._latest[user, conversation_id] = next(self._numbers)
        self.track(asyncio.ensure_future(self._announce(user, conversation_id, number)))

    def deleted(self, user: str, conversation_id: str) -> None:
        self._latest.pop((user, conversation_id), None)  # what is being read is out of date
        frame = p.dumps(p.conversation_deleted_frame(conversation_id))
        self.publish(ListingChange(user, conversation_id, frame))

    async def _announce(self, user: str, conversation_id: str, number: int) -> None:
        try:
            record = await self.store.get_conversation_record(conversation_id, user=user)
        except StoreError as e:
            self.log.warning(
                "streamchat: cannot tell the conversation list of a change to %s: %s",
                conversation_id,
                e,
            )
            record = None
        if self._latest.get((user, conversation_id)) != number:
            return  # a later change, or a deletion, has its say
        del self._latest[user, conversation_id]
        if record is not None:  # None: deleted meanwhile by another process
            frame = p.dumps(
                p.conversation_updated_frame(record, self.waiting(user, conversation_id))
            )
            self.publish(ListingChange(user, conversation_id, frame))
