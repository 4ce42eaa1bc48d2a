"""Sends and deletes of one conversation, ordered so that a race between them ends one way.

A SEND_MESSAGE holds the conversation's gate from storing its exchange until its reply is
registered; a delete closes the gate (later sends are refused with ``conversation_deleted``),
waits for the sends already inside, stops their replies and only then deletes. So a message is
either refused, or accepted and then ended and deleted as a whole, never accepted into a
conversation that is being deleted under it.
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
        self._drained: dict = {}  # conversation id -> Event set when its last send is in

    @contextlib.asynccontextmanager
    async def sending(self, conversation_id: str, client_message_id: str):
        if self._deleting[conversation_id]:
            raise p.ProtocolError(
                p.CONVERSATION_DELETED,
                f"conversation {conversation_id!r} is being deleted",
                client_message_id=client_message_id,
                conversation_id=conversation_id,
            )
        self._sending[conversation_id] += 1
        try:
            yield
        finally:
            self._sending[conversation_id] -= 1
            if not self._sending[conversation_id]:
                del self._sending[conversation_id]
                drained = self._drained.pop(conversation_id, None)
                if drained is not None:
                    drained.set()

    @contextlib.asynccontextmanager
    async def deleting(self, conversation_id: str):
        self._deleting[conversation_id] += 1
        try:
            while self._sending[conversation_id]:
                drained = self._drained.setdefault(conversation_id, asyncio.Event())
                await drained.wait()
            yield
        finally:
            self._deleting[conversation_id] -= 1
            if not self._deleting[conversation_id]:
                del self._deleting[conversation_id]
