"""Sends and deletes of one conversation, ordered so that a race between them ends one way.

A SEND_MESSAGE holds the conversation's gate from storing its exchange until its reply is
registered; a delete closes the gate (later sends are refused with ``conversation_deleted``),
waits for the sends already inside, stops their replies and only then deletes. So a message is
either refused, or accepted and then ended and deleted as a whole, never accepted into a
conversation that is being deleted under it. Conversations are keyed by ``(user, id)``: ids
are their user's own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

from .. import protocol as p


class ConversationGate:
    def __init__(self):
        self._sending: Counter = Counter()
        self._deleting: Counter = Counter()
        self._drained: dict = {}  # (user, conversation id) -> Event set when its last send is in

    @contextlib.asynccontextmanager
    async def sending(self, user: str, conversation_id: str, client_message_id: str):
        key = (user, conversation_id)
        if self._deleting[key]:
            raise p.ProtocolError(
                p.CONVERSATION_DELETED,
                f"conversation {conversation_id!r} is being deleted",
                client_message_id=client_message_id,
                conversation_id=conversation_id,
            )
        self._sending[key] += 1
        try:
            yield
        finally:
            self._sending[key] -= 1
            if not self._sending[key]:
                del self._sending[key]
                drained = self._drained.pop(key, None)
                if drained is not None:
                    drained.set()

    @contextlib.asynccontextmanager
    async def deleting(self, user: str, conversation_id: str):
        key = (user, conversation_id)
        self._deleting[key] += 1
        try:
            while self._sending[key]:
                drained = self._drained.setdefault(key, asyncio.Event())
                await drained.wait()
            yield
        finally:
            self._deleting[key] -= 1
            if not self._deleting[key]:
                del self._deleting[key]
