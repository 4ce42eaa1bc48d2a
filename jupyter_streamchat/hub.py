"""The hub: accepts messages, runs replies, fans their frames out, stops and resumes them.

It knows nothing of Tornado: handlers (or an in-process caller) wrap each client in a
:class:`~jupyter_streamchat.subscriber.Subscriber` and call the coroutines below with parsed
requests. The store is the source of truth; the hub adds only what is live in this process.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Optional

from . import protocol as p
from .agents import AgentRequest
from .reply import Reply
from .store import Store, StoreError, StoredMessage
from .subscriber import Subscriber


class Hub:
    def __init__(
        self,
        store: Store,
        agents: dict,
        batch_window: float = 0.016,
        log: Optional[logging.Logger] = None,
    ):
        self.store = store
        self.agents = agents
        self.batch_window = batch_window
        self.log = log or logging.getLogger("jupyter_streamchat")
        self.replies: dict = {}  # reply id -> Reply, for replies generating in this process
        self._followers: dict = defaultdict(set)  # conversation id -> subscribers
        self.subscribers: set = set()  # every connected client
        self._opened = False
        self._open_lock = asyncio.Lock()
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------------

    async def ensure_open(self) -> None:
        """Open the store on first use (an extension's start hook does not always run)."""
        if self._opened:
            return
        async with self._open_lock:
            if self._opened:
                return
            interrupted = await self.store.open()
            self._opened = True
            if interrupted:
                self.log.warning(
                    "streamchat: %d reply(ies) were cut off by a server stop; marked interrupted",
                    interrupted,
                )

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Mark running replies interrupted, store everything, close the store."""
        self._closing = True
        replies = list(self.replies.values())
        for reply in replies:
            reply.end(p.INTERRUPTED)
        if replies:
            await asyncio.wait([asyncio.ensure_future(r.wait()) for r in replies], timeout=timeout)
        if self._opened:
            await self.store.close()
            self._opened = False

    # -- clients ---------------------------------------------------------------------------

    def connect(self, subscriber: Subscriber) -> Subscriber:
        subscriber.catch_up = self._catch_up
        self.subscribers.add(subscriber)
        return subscriber

    def disconnect(self, subscriber: Subscriber) -> None:
        subscriber.closed = True
        self.subscribers.discard(subscriber)
        for conversation_id in subscriber.conversations:
            followers = self._followers.get(conversation_id)
            if followers is not None:
                followers.discard(subscriber)
                if not followers:
                    del self._followers[conversation_id]
        for message_id in subscriber.replies:
            reply = self.replies.get(message_id)
            if reply is not None:
                reply.watchers.discard(subscriber)

    def broadcast(self, reply: Reply, seq: int, frame: str) -> None:
        """Send a committed frame of ``reply`` to everyone following it or its conversation."""
        followers = self._followers.get(reply.conversation_id, ())
        for subscriber in reply.watchers.union(followers) if followers else reply.watchers:
            subscriber.deliver_chunk(reply.message_id, seq, frame)

    def reply_finished(self, reply: Reply) -> None:
        self.replies.pop(reply.message_id, None)

    # -- requests --------------------------------------------------------------------------

    async def handle_text(self, subscriber: Subscriber, text, max_bytes: int) -> None:
        """Carry out one client frame as received; a bad or failed request is answered with
        an ERROR frame to that client, whose connection stays open."""
        try:
            await self.handle(subscriber, p.parse_request(text, max_bytes))
        except p.ProtocolError as e:
            subscriber.send(p.dumps(p.error_frame(e.code, e.message, **e.ids)))
        except Exception:
            self.log.exception("streamchat: request failed: %.200s", text)
            subscriber.send(p.dumps(p.error_frame(
                p.INTERNAL, "internal error in the chat hub; its log (the Jupyter server's, or "
                "the kernel's for an in-process hub) says more")))

    async def handle(self, subscriber: Subscriber, request: p.Request) -> None:
        """Carry out one parsed request; raises ProtocolError for the client to see."""
        try:
            if isinstance(request, p.SendMessage):
                await self.send_message(subscriber, request)
            elif isinstance(request, p.StopGenerating):
                await self.stop_generating(request.message_id)
            elif isinstance(request, p.Subscribe):
                await self.subscribe(subscriber, request.conversation_id)
            elif isinstance(request, p.Resume):
                await self.resume(subscriber, request.message_id, request.after_seq)
        except StoreError as e:
            ids = {k: v for k, v in vars(request).items() if k.endswith("_id")}
            raise p.ProtocolError(p.STORE_UNAVAILABLE, str(e), **_wire_ids(ids)) from e

    async def send_message(self, subscriber: Subscriber, request: p.SendMessage) -> None:
        agent = self.agents.get(request.agent_id)
        if agent is None:
            known = ", ".join(sorted(self.agents)) or "none"
            raise p.ProtocolError(
                p.UNKNOWN_AGENT, f"no agent {request.agent_id!r}; available: {known}",
                clientMessageId=request.client_message_id,
            )
        if self._closing:
            raise p.ProtocolError(p.STORE_UNAVAILABLE, "the server is shutting down",
                                  clientMessageId=request.client_message_id)
        await self.ensure_open()
        # The store checks clientMessageId inside the same serialized write, so a duplicate
        # (a re-send after a reconnect, even one racing the original) finds the first exchange.
        exchange = await self.store.create_exchange(
            request.conversation_id, request.agent_id, request.text, request.client_message_id
        )
        accepted = p.dumps(p.accepted_frame(exchange))
        if not exchange.created:
            # A re-send (its sender may have missed everything): same answer, and the
            # reply's frames from seq 1, stored ones first, then live.
            subscriber.send(accepted)
            await self.resume(subscriber, exchange.message_id, 0)
            return
        try:
            history = await self.store.get_conversation(exchange.conversation_id) or []
        except StoreError as e:  # the exchange is stored: answer it rather than strand it
            self.log.warning("streamchat: no history for the agent: %s", e)
            history = []
        request_for_agent = AgentRequest(
            conversation_id=exchange.conversation_id,
            text=exchange.text,
            history=[
                {"role": m.role, "text": m.text}
                for m in history
                if m.message_id not in (exchange.user_message_id, exchange.message_id)
            ],
        )
        reply = Reply(self, exchange, agent, request_for_agent)
        self.replies[reply.message_id] = reply
        self._watch(subscriber, reply)
        subscriber.send(accepted)
        for follower in self._followers.get(exchange.conversation_id, ()):
            if follower is not subscriber:
                follower.send(accepted)
        reply.start()

    async def stop_generating(self, message_id: str) -> None:
        reply = self.replies.get(message_id)
        if reply is not None:
            reply.end(p.STOPPED)
            return
        await self.ensure_open()
        message = await self.store.get_message(message_id)
        _check_reply(message, message_id)
        # Already ended: its final frame says how; nothing to do.

    async def subscribe(self, subscriber: Subscriber, conversation_id: str) -> None:
        await self.ensure_open()
        subscriber.hold()  # live frames wait until the snapshot is out
        try:
            self._followers[conversation_id].add(subscriber)
            subscriber.conversations.add(conversation_id)
            messages = await self.store.get_conversation(conversation_id) or []
            for message in messages:
                if message.role == "assistant":
                    subscriber.sent[message.message_id] = message.last_seq
            subscriber.send(p.dumps(p.history_frame(conversation_id, messages)))
        finally:
            subscriber.release()

    async def resume(self, subscriber: Subscriber, message_id: str, after_seq: int) -> None:
        await self.ensure_open()
        subscriber.hold()
        try:
            reply = self.replies.get(message_id)
            if reply is not None:
                self._watch(subscriber, reply)
            subscriber.sent[message_id] = after_seq
            await self._replay(subscriber, message_id, after_seq)
        finally:
            subscriber.release()

    def _catch_up(self, subscriber: Subscriber, message_id: str, after_seq: int) -> None:
        """Fill a lagging client's gap from the store (it holds frames up to after_seq)."""
        subscriber.hold()

        async def replay():
            try:
                await self._replay(subscriber, message_id, after_seq)
            except Exception:
                self.log.exception("streamchat: catching up a client on %s failed", message_id)
            finally:
                subscriber.release()

        asyncio.ensure_future(replay())

    async def _replay(self, subscriber: Subscriber, message_id: str, after_seq: int) -> None:
        message, chunks = await self.store.replay(message_id, after_seq)
        _check_reply(message, message_id)
        if not chunks:
            return
        frames = p.ChunkFrames(message.message_id, message.conversation_id, message.agent_id)
        texts = [frames.chunk(seq, chunk) for seq, chunk in chunks]
        last_seq, last_chunk = chunks[-1]
        if message.status in p.FINAL_STATUSES and last_seq == message.last_seq:
            texts[-1] = frames.final(last_seq, last_chunk, message.status, message.error)
        subscriber.deliver_replay(message_id, chunks[0][0], texts)

    def _watch(self, subscriber: Subscriber, reply: Reply) -> None:
        reply.watchers.add(subscriber)
        subscriber.replies.add(reply.message_id)

    # -- conversations (REST) ----------------------------------------------------------------

    async def delete_conversation(self, conversation_id: str) -> bool:
        await self.ensure_open()
        live = [r for r in self.replies.values() if r.conversation_id == conversation_id]
        for reply in live:
            reply.end(p.STOPPED)
        for reply in live:
            await reply.wait()
        return await self.store.delete_conversation(conversation_id)


def _check_reply(message: Optional[StoredMessage], message_id: str) -> None:
    if message is None:
        raise p.ProtocolError(p.UNKNOWN_MESSAGE, f"no message {message_id!r}", messageId=message_id)
    if message.role != "assistant":
        raise p.ProtocolError(
            p.NOT_A_REPLY, f"message {message_id!r} is a user message, not a reply",
            messageId=message_id,
        )


def _wire_ids(ids: dict) -> dict:
    names = {"client_message_id": "clientMessageId", "message_id": "messageId",
             "conversation_id": "conversationId"}
    return {names[k]: v for k, v in ids.items() if k in names}
