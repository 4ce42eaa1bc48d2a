"""Tool calls waiting for the user's yes, and what the user allowed for a whole conversation.

A reply whose agent asks ``await request.approve(call)`` registers the call here and waits on a
future. Every view of the conversation shows the call ``waiting`` (its state travels in the
reply's frames like any other); the first ``ANSWER_TOOL_CALL`` to arrive settles the future,
and a later one finds nothing waiting (``not_waiting``). A stop cancels the agent's wait, which
takes the call out of here.

"Always" answers are kept per user and conversation, by tool name: later calls of that tool in
that conversation are not asked again. They are seeded from the conversation's stored tool
calls when a reply starts, so they hold across a server restart.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..agents.base import ALLOW_ALWAYS


@dataclass
class _Waiting:
    user: str
    conversation_id: str
    name: str
    answer: asyncio.Future = field(repr=False)


class Approvals:
    def __init__(self, on_change: Callable[[str, str], None]):
        # Told (user, conversation id) when a conversation starts or stops waiting for the user,
        # so the conversation list can say so.
        self.on_change = on_change
        self._waiting: dict = {}  # (message id, tool call id) -> _Waiting
        self._count: dict = {}  # (user, conversation id) -> calls waiting in it
        self._always: dict = {}  # (user, conversation id) -> tool names allowed always

    def allowed_always(self, user: str, conversation_id: str, name: str) -> bool:
        return name in self._always.get((user, conversation_id), ())

    def seed(self, user: str, conversation_id: str, names: Iterable[str]) -> None:
        """Tools the user allowed always in this conversation before (from the store)."""
        names = set(names)
        if names:
            self._always.setdefault((user, conversation_id), set()).update(names)

    def forget(self, user: str, conversation_id: str) -> None:
        """The conversation was deleted."""
        self._always.pop((user, conversation_id), None)

    def waiting_in(self, user: str, conversation_id: str) -> bool:
        return self._count.get((user, conversation_id), 0) > 0

    def waiting_conversations(self, user: str) -> frozenset:
        return frozenset(c for (u, c), n in self._count.items() if u == user and n > 0)

    async def ask(
        self,
        user: str,
        conversation_id: str,
        message_id: str,
        tool_call_id: str,
        name: str,
        timeout: float,
    ) -> str:
        """The user's decision; raises TimeoutError after ``timeout`` seconds."""
        key = (message_id, tool_call_id)
        if key in self._waiting:
            raise ValueError(f"tool call {tool_call_id!r} is already waiting for an answer")
        loop = asyncio.get_running_loop()
        waiting = self._waiting[key] = _Waiting(user, conversation_id, name, loop.create_future())
        self._counted(user, conversation_id, +1)
        try:
            return await asyncio.wait_for(waiting.answer, timeout)
        finally:
            del self._waiting[key]
            self._counted(user, conversation_id, -1)

    def answer(self, user: str, message_id: str, tool_call_id: str, decision: str) -> bool:
        """Settle a waiting call; False if it is not waiting (answered first elsewhere, ended,
        unknown, or another user's)."""
        waiting = self._waiting.get((message_id, tool_call_id))
        if waiting is None or waiting.user != user or waiting.answer.done():
            return False
        if decision == ALLOW_ALWAYS:
            self._always.setdefault((user, waiting.conversation_id), set()).add(waiting.name)
        waiting.answer.set_result(decision)
        return True

    def _counted(self, user: str, conversation_id: str, change: int) -> None:
        key = (user, conversation_id)
        before = self._count.get(key, 0)
        after = before + change
        if after:
            self._count[key] = after
        else:
            self._count.pop(key, None)
        if (before > 0) != (after > 0):
            self.on_change(user, conversation_id)
