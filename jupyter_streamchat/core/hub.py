"""The hub: accepts messages, runs replies, answers from the store, stops and resumes replies.

It knows nothing of Tornado: handlers (or an in-process caller) wrap each client in a
:class:`~.delivery.Subscriber` and hand it frames as received. The store is the source of truth;
the hub adds only what is live in this process: the replies it is generating, who follows
what (``fanout.py``, fed by the bus), and the ends of replies that could not be stored yet.
Changes to conversations made through it are announced to the clients watching the list
(``listing.py``). On a store shared by several servers, the replies that other servers generate
are followed live through the store's hints (``remote.py``).

Every conversation belongs to a user and its id is that user's own: each client acts for one
user (``connect(..., user=)``), and every read, write and frame is that user's alone.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Optional

from .. import protocol as p
from ..agents import ALLOW_ALWAYS, AgentRequest
from ..store import Append, HistoryPage, LeaseLost, MessageRecord, Store, StoreError
from ..store.hints import StopRequested, ToolCallAnswered
from .approvals import Approvals
from .bus import Accepted, InProcessBus
from .delivery import Subscriber
from .fanout import Fanout
from .gate import ConversationGate
from .kernelagents import REQUESTS as KERNEL_AGENT_REQUESTS, KernelAgents
from .listing import ListUpdates
from .pacing import FlushClock
from .remote import RemoteReplies
from .reply import Reply

# How often the end of a reply that could not be stored is tried again.
STORE_END_RETRY = 5.0

# Most earlier messages an agent is given (its max_history_chars usually binds first).
MAX_CONTEXT_MESSAGES = 10_000

# Most conversations one connection may follow at once (SUBSCRIBE of a conversation not yet
# created is allowed, so this bound, not the store, keeps a socket's subscriptions finite).
MAX_SUBSCRIPTIONS = 1000


class Hub:
    def __init__(
        self,
        store: Store,
        agents: dict,
        batch_window: float = 0.016,
        max_batch_window: float = 0.05,
        log: Optional[logging.Logger] = None,
        bus=None,
        history_messages: int = 100,
        history_chars: int = 512 * 1024,
        retry_seconds: float = 5.0,
        max_subscriptions: int = MAX_SUBSCRIPTIONS,
        approval_timeout: float = 600.0,
    ):
        self.store = store
        self.max_subscriptions = max_subscriptions
        self.agents = agents
        # The window stretches with the replies streaming into the store, this server's and
        # (on a shared store) every other server's: they share the disk.
        self.clock = FlushClock(
            batch_window,
            max_batch_window,
            lambda: len(self.replies) + self.remote.streaming_elsewhere,
        )
        self.log = log or logging.getLogger("jupyter_streamchat")
        self.history_messages = history_messages
        self.history_chars = history_chars
        self.retry_seconds = retry_seconds
        self.approval_timeout = approval_timeout
        self.bus = bus or InProcessBus()
        self.fanout = Fanout()
        self.bus.subscribe(self.fanout.deliver)
        self.replies: dict = {}  # reply id -> Reply, for replies generating in this process
        self.unstored: dict = {}  # reply id -> (final seq, error, usage): end not yet stored
        self._gate = ConversationGate()
        self._tasks: set = set()  # catch-ups, retries of unstored ends
        self._opened = False
        self._open_lock = asyncio.Lock()
        self._closing = False
        # Tool calls waiting for the user; a conversation's list entry says while one does.
        self.approvals = Approvals(
            lambda user, conversation_id: self.listing.changed(user, conversation_id)
        )
        self.listing = ListUpdates(
            store,
            self.bus.publish,
            self.fanout.list_watched,
            self._track,
            self.log,
            self.approvals.waiting_in,
        )
        store.on_lease_lost = self._lease_lost
        self.remote = RemoteReplies(self)  # other servers' replies, on a shared store
        if store.shared:
            store.on_hint = self.remote.hint
        self.kernel_agents = KernelAgents(self)  # agents a kernel registered (notebook agents)

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
            if self.store.shared:
                self.remote.start()
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
        for task in list(self._tasks):
            task.cancel()
        await self._close_agents(timeout)
        self.remote.stop()
        if self._opened:
            for message_id in list(self.unstored):
                await self._store_end(message_id)  # a last try: the disk may have room now
            await self.store.close()
            self._opened = False

    async def _close_agents(self, timeout: float) -> None:
        """Agents that hold processes or connections (ACP agents, MCP servers) end them."""
        for agent_id, agent in list(self.agents.items()):
            close = getattr(agent, "close", None)
            if close is None:
                continue
            try:
                await asyncio.wait_for(close(), timeout)
            except Exception as e:
                self.log.warning("streamchat: agent %r did not close cleanly: %s", agent_id, e)

    def _lease_lost(self) -> None:
        for reply in list(self.replies.values()):
            reply.end(p.INTERRUPTED)  # its write fails; it then follows what the store says

    # -- clients ---------------------------------------------------------------------------

    def connect(
        self, transport, max_buffer: int = 4 * 1024 * 1024, user: Optional[str] = None
    ) -> Subscriber:
        """A new client, writing to ``transport`` (see :class:`~.delivery.Transport`), acting
        for ``user`` (by default the store's: the user this server runs for)."""
        subscriber = Subscriber(
            transport, self._catch_up, max_buffer, user or self.store.default_user
        )
        self.fanout.add(subscriber)
        return subscriber

    def disconnect(self, subscriber: Subscriber) -> None:
        """The client is gone (safe to call again): its notebook agents go with it."""
        self.fanout.remove(subscriber)
        self.kernel_agents.disconnected(subscriber)

    # -- requests --------------------------------------------------------------------------

    async def handle_text(self, subscriber: Subscriber, text, max_bytes: int) -> None:
        """Carry out one client frame as received; a bad or failed request is answered with
        an ERROR frame to that client, whose connection stays open."""
        try:
            await self.handle(subscriber, p.parse_request(text, max_bytes), max_bytes)
        except p.ProtocolError as e:
            subscriber.send(p.dumps(p.error_frame(e.code, e.message, **e.ids)))
        except Exception:
            self.log.exception("streamchat: request failed: %.200r", text)
            subscriber.send(
                p.dumps(
                    p.error_frame(
                        p.INTERNAL,
                        "internal error in the chat hub; its log (the Jupyter server's, or "
                        "the kernel's for an in-process hub) says more",
                    )
                )
            )

    async def handle(
        self, subscriber: Subscriber, request: p.Request, max_bytes: Optional[int] = None
    ) -> None:
        """Carry out one parsed request; raises ProtocolError for the client to see.
        ``max_bytes``: the limit the request was parsed with, which AGENTS tells."""
        try:
            if isinstance(request, p.SendMessage):
                await self.send_message(subscriber, request)
            elif isinstance(request, p.StopGenerating):
                await self.stop_generating(request.message_id, subscriber.user)
            elif isinstance(request, p.Subscribe):
                await self.subscribe(subscriber, request.conversation_id)
            elif isinstance(request, p.Unsubscribe):
                self.fanout.unfollow_conversation(subscriber, request.conversation_id)
            elif isinstance(request, p.Resume):
                await self.resume(subscriber, request.message_id, request.after_seq)
            elif isinstance(request, p.LoadHistory):
                await self.load_history(
                    subscriber, request.conversation_id, request.before_message_id
                )
            elif isinstance(request, p.WatchConversations):
                self.fanout.watch_list(subscriber)
            elif isinstance(request, p.UnwatchConversations):
                self.fanout.unwatch_list(subscriber)
            elif isinstance(request, p.AnswerToolCall):
                await self.answer_tool_call(subscriber.user, request)
            elif isinstance(request, p.ListAgents):
                subscriber.send(
                    p.dumps(p.agents_frame(self.agent_infos(subscriber.user), max_bytes))
                )
            elif isinstance(request, KERNEL_AGENT_REQUESTS):
                await self.kernel_agents.handle(subscriber, request)
        except StoreError as e:
            raise p.ProtocolError(p.STORE_UNAVAILABLE, str(e), **p.request_ids(request)) from e

    def _agents_of(self, user: str) -> dict:
        """The agents a user may chat with: every agent of the server, and the notebook agents
        of that user's own kernels (another user's kernel never runs their requests)."""
        return {
            agent_id: agent
            for agent_id, agent in self.agents.items()
            if getattr(agent, "owner", None) is None or agent.owner.user == user
        }

    async def send_message(self, subscriber: Subscriber, request: p.SendMessage) -> None:
        user = subscriber.user
        agents = self._agents_of(user)
        agent = agents.get(request.agent_id)
        if agent is None:
            known = ", ".join(sorted(agents)) or "none"
            raise p.ProtocolError(
                p.UNKNOWN_AGENT,
                f"no agent {request.agent_id!r}; available: {known}",
                client_message_id=request.client_message_id,
            )
        if self._closing:
            raise p.ProtocolError(
                p.STORE_UNAVAILABLE,
                "the server is shutting down",
                client_message_id=request.client_message_id,
            )
        await self.ensure_open()
        async with self._gate.sending(user, request.conversation_id, request.client_message_id):
            # The store checks clientMessageId inside the same serialized write, so a duplicate
            # (a re-send after a reconnect, even one racing the original) finds the first one.
            exchange = await self.store.create_exchange(
                request.conversation_id,
                request.agent_id,
                request.text,
                request.client_message_id,
                user=user,
                context=request.context,
            )
            exchange.user = user
            accepted = p.dumps(p.accepted_frame(exchange, request.context))
            if not exchange.created:
                # A re-send (its sender may have missed everything): same answer, and the
                # reply's frames from seq 1, stored ones first, then live.
                subscriber.send(accepted)
                await self.resume(subscriber, exchange.message_id, 0)
                return
            try:
                # What came before the new message, newest first up to the agent's budget.
                earlier = await self.store.history(
                    exchange.conversation_id,
                    exchange.user_message_id,
                    MAX_CONTEXT_MESSAGES,
                    agent.max_history_chars,
                    user=user,
                )
                history = earlier.messages if earlier else []
            except StoreError as e:  # the exchange is stored: answer it rather than strand it
                self.log.warning("streamchat: no history for the agent: %s", e)
                history = []
            request_for_agent = AgentRequest(
                conversation_id=exchange.conversation_id,
                text=exchange.text,
                history=[_turn(m) for m in history if m.text or m.context],
                context=list(request.context or ()),
            )
            # What the user allowed always earlier in this conversation holds on.
            self.approvals.seed(user, exchange.conversation_id, _allowed_always(history))
            reply = Reply(
                exchange,
                agent,
                request_for_agent,
                self.store,
                self.bus.publish,
                self._reply_ended,
                clock=self.clock,
                retry_seconds=self.retry_seconds,
                log=self.log,
                approvals=self.approvals,
                approval_timeout=self.approval_timeout,
            )
            self.replies[reply.message_id] = reply
            self.fanout.follow_reply(subscriber, reply.message_id, reply.conversation_id)
            subscriber.send(accepted)
            self.bus.publish(Accepted(user, exchange.conversation_id, accepted, origin=subscriber))
            reply.start()
            # Created, or one message more, and a reply streaming in it.
            self.listing.changed(user, exchange.conversation_id)

    async def stop_generating(self, message_id: str, user: Optional[str] = None) -> None:
        user = user or self.store.default_user
        reply = self.replies.get(message_id)
        if reply is not None and reply.user == user:
            reply.end(p.STOPPED)
            return
        await self.ensure_open()
        message = await self.store.get_message(message_id, user=user)
        _check_reply(message, message_id)
        if message.status == p.STREAMING and self.store.shared:
            # Generated by another server: it stops it once told (its final frame, stored,
            # then reaches this server's clients as any frame of its does).
            await self.store.announce(StopRequested(message_id))
        # Else already ended: its final frame says how; nothing to do.

    async def answer_tool_call(self, user: str, request: p.AnswerToolCall) -> None:
        """The user's answer to a waiting tool call: the first answer wins; the call's new
        state reaches every view in the reply's next frame."""
        if self.approvals.answer(user, request.message_id, request.tool_call_id, request.decision):
            return
        reply = self.replies.get(request.message_id)
        if reply is None or reply.user != user:
            await self.ensure_open()
            message = await self.store.get_message(request.message_id, user=user)
            _check_reply(message, request.message_id)
            if message.status == p.STREAMING and self.store.shared:
                # Generated by another server: it settles the call if it still waits, and
                # the call's new state reaches this server's views in the reply's frames.
                await self.store.announce(
                    ToolCallAnswered(
                        user, request.message_id, request.tool_call_id, request.decision
                    )
                )
                return
        raise p.ProtocolError(
            p.NOT_WAITING,
            f"tool call {request.tool_call_id!r} of reply {request.message_id!r} is not waiting "
            "for an answer: it was answered already, or it ended",
            message_id=request.message_id,
        )

    async def subscribe(self, subscriber: Subscriber, conversation_id: str) -> None:
        followed = subscriber.conversations
        if conversation_id not in followed and len(followed) >= self.max_subscriptions:
            raise p.ProtocolError(
                p.TOO_MANY_SUBSCRIPTIONS,
                f"this connection already follows {len(followed)} conversations, the most it "
                "may; UNSUBSCRIBE from one first",
                conversation_id=conversation_id,
            )
        await self.ensure_open()
        async with subscriber.snapshot():  # live frames wait until the HISTORY is out
            self.fanout.follow_conversation(subscriber, conversation_id)
            page = await self.store.history(
                conversation_id,
                None,
                self.history_messages,
                self.history_chars,
                user=subscriber.user,
            ) or HistoryPage(conversation_id)
            self._answer_for_unstored(page.messages)
            for message in page.messages:
                if message.role == "assistant":
                    subscriber.holds(message.message_id, message.last_seq)
                    if message.status == p.STREAMING and message.message_id not in self.replies:
                        # Another server's: followed through the store's hints from here on.
                        self.remote.followed(
                            subscriber.user, conversation_id, message.message_id, message.last_seq
                        )
            subscriber.answer(p.dumps(p.history_frame(page)))

    async def load_history(
        self, subscriber: Subscriber, conversation_id: str, before_message_id: str
    ) -> None:
        await self.ensure_open()
        async with subscriber.snapshot():
            page = await self.store.history(
                conversation_id,
                before_message_id,
                self.history_messages,
                self.history_chars,
                user=subscriber.user,
            )
            if page is None:
                raise p.ProtocolError(
                    p.UNKNOWN_MESSAGE,
                    f"no message {before_message_id!r} in conversation {conversation_id!r}",
                    message_id=before_message_id,
                    conversation_id=conversation_id,
                )
            self._answer_for_unstored(page.messages)
            subscriber.answer(p.dumps(p.history_page_frame(page, before_message_id)))

    async def resume(self, subscriber: Subscriber, message_id: str, after_seq: int) -> None:
        await self.ensure_open()
        async with subscriber.snapshot():
            reply = self.replies.get(message_id)
            if reply is not None and reply.user == subscriber.user:
                self.fanout.follow_reply(subscriber, message_id, reply.conversation_id)
            # Held live frames are filtered by after_seq once the replay is out.
            with subscriber.replaying(message_id, after_seq):
                await self._replay(subscriber, message_id, after_seq, asked=True)

    def _catch_up(self, subscriber: Subscriber, message_id: str, after_seq: int) -> None:
        """Fill a lagging client's gap from the store (it holds frames up to after_seq)."""

        async def replay():
            try:
                async with subscriber.snapshot():
                    await self._replay(subscriber, message_id, subscriber.held(message_id))
            except (StoreError, p.ProtocolError) as e:  # the store went away, or the reply
                self.log.warning("streamchat: cannot catch a client up on %s: %s", message_id, e)
            except Exception:
                self.log.exception("streamchat: catching up a client on %s failed", message_id)

        self._track(asyncio.ensure_future(replay()))

    def _track(self, task: asyncio.Task) -> None:
        """Keep a background task until it ends; a shutdown cancels what is left."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _replay(
        self, subscriber: Subscriber, message_id: str, after_seq: int, asked: bool = False
    ) -> None:
        # The frames after after_seq come as ``spelled``, JSON texts the store spelled (SQLite
        # does, in C: a long reply's thousands of frames cost no Python each), then ``chunks``,
        # stored frames to spell here: the final one, which needs the reply's ending, or all
        # of them from a store that does not spell frames.
        read = await self.store.replay_frames(
            message_id, after_seq, p.ChunkFrames.shape_of, user=subscriber.user
        )
        if read is None:
            spelled = []
            message, chunks = await self.store.replay(message_id, after_seq, user=subscriber.user)
        else:
            message, spelled, last = read
            chunks = [] if last is None else [last]
        _check_reply(message, message_id)
        if asked and message.status == p.STREAMING and message_id not in self.replies:
            # Another server's reply: its next frames reach this client through the hints.
            self.fanout.follow_reply(subscriber, message_id, message.conversation_id)
            self.remote.followed(
                subscriber.user, message.conversation_id, message_id, message.last_seq
            )
        self._answer_for_unstored([message])
        unstored = self.unstored.get(message_id)
        if unstored is not None and unstored[0] > after_seq:
            chunks = chunks + [(unstored[0], "", "")]
        ended = message.status in p.FINAL_STATUSES
        if not spelled and not chunks:
            if not asked:
                return
            if ended and after_seq >= message.last_seq:
                # Asked past the end: the final frame again says how the reply ended.
                if unstored is not None:
                    chunks = [(unstored[0], "", "")]
                else:
                    _, chunks = await self.store.replay(message_id, message.last_seq - 1)
            elif after_seq > message.last_seq:
                raise p.ProtocolError(
                    p.BAD_FIELD,
                    f"afterSeq {after_seq} is past the reply's last frame "
                    f"({message.last_seq}); the reply is still streaming",
                    message_id=message_id,
                )
            if not chunks:
                return
        frames = p.ChunkFrames(message.message_id, message.conversation_id, message.agent_id)
        first = max(after_seq, 0) + 1 if spelled else chunks[0][0]
        texts = spelled + [text for _, text, _ in frames.stored(chunks, message)]
        subscriber.deliver_replay(message_id, first, texts)

    # -- replies that end -------------------------------------------------------------------

    def _reply_ended(self, reply: Reply, unstored: Optional[tuple]) -> None:
        self.replies.pop(reply.message_id, None)
        self.listing.changed(
            reply.user, reply.conversation_id
        )  # no longer streaming, unless another is
        if unstored is not None:
            self.unstored[reply.message_id] = unstored
            self._track(asyncio.ensure_future(self._store_end_later(reply.message_id)))

    async def _store_end_later(self, message_id: str) -> None:
        """Keep trying to store the end that clients were already told."""
        while message_id in self.unstored:
            await asyncio.sleep(STORE_END_RETRY)
            await self._store_end(message_id)

    async def _store_end(self, message_id: str) -> None:
        seq, error, usage = self.unstored[message_id]
        try:
            await self.store.append(Append(message_id, seq, [""], p.ERROR, error, usage=usage))
        except LeaseLost:
            pass  # someone else ended it, or it was deleted: the store has its say
        except StoreError:
            return  # still refused: kept for the next try
        self.unstored.pop(message_id, None)

    def _answer_for_unstored(self, messages: list) -> None:
        """Show replies whose end is not stored yet as ended, as their clients were told."""
        for message in messages:
            unstored = self.unstored.get(message.message_id)
            if unstored is not None and message.status == p.STREAMING:
                message.status, message.error, message.usage = p.ERROR, unstored[1], unstored[2]
                if not message.truncated:
                    message.last_seq = unstored[0]

    # -- agents and conversations (REST) -----------------------------------------------------

    def agent_infos(self, user: Optional[str] = None) -> list:
        """What GET api/agents lists to ``user``: every agent's ``info()``, by id."""
        agents = self._agents_of(user or self.store.default_user)
        return [agent.info() for _, agent in sorted(agents.items())]

    async def list_conversations(
        self, limit: int, after: Optional[tuple] = None, query: str = "", user=None
    ) -> list:
        """A page of the user's list, most recent first; with ``query``, those holding that
        text."""
        await self.ensure_open()
        if query:
            return await self.store.search_conversations(query, limit, after, user=user)
        return await self.store.list_conversations(limit, after, user=user)

    async def export_conversation(self, conversation_id: str, user=None) -> Optional[tuple]:
        """``(conversation record, messages)`` for the export, or None if there is none."""
        await self.ensure_open()
        conversation = await self.store.get_conversation_record(conversation_id, user=user)
        messages = await self.get_conversation(conversation_id, user=user)
        if conversation is None or messages is None:
            return None
        return conversation, messages

    async def get_conversation(self, conversation_id: str, user=None) -> Optional[list]:
        await self.ensure_open()
        messages = await self.store.get_conversation(conversation_id, user=user)
        if messages is not None:
            self._answer_for_unstored(messages)
        return messages

    async def rename_conversation(self, conversation_id: str, title: str, user=None) -> bool:
        await self.ensure_open()
        user = user or self.store.default_user
        if not await self.store.rename_conversation(conversation_id, title, user=user):
            return False
        self.listing.changed(user, conversation_id)
        return True

    async def delete_conversation(self, conversation_id: str, user=None) -> bool:
        await self.ensure_open()
        user = user or self.store.default_user
        async with self._gate.deleting(user, conversation_id):
            live = [
                r
                for r in self.replies.values()
                if r.conversation_id == conversation_id and r.user == user
            ]
            for reply in live:
                reply.end(p.STOPPED)
            for reply in live:
                await reply.wait()
            deleted = await self.store.delete_conversation(conversation_id, user=user)
        if deleted:
            self.approvals.forget(user, conversation_id)
            self.listing.deleted(user, conversation_id)
        return deleted

    async def read_conversation(self, conversation_id: str, user=None, record: bool = False):
        """For the answers that send a whole conversation (REST GET, export): a
        ``pages.ConversationPages`` reading it a page (a HISTORY's budget) at a time, or None
        if there is none. ``record``: with its ConversationRecord too (``.record``)."""
        from .pages import ConversationPages

        await self.ensure_open()
        return await ConversationPages.open(
            self.store,
            conversation_id,
            self.history_messages,
            self.history_chars,
            user=user,
            record=record,
            amend=self._answer_for_unstored,
        )


def _check_reply(message: Optional[MessageRecord], message_id: str) -> None:
    if message is None:
        raise p.ProtocolError(
            p.UNKNOWN_MESSAGE, f"no message {message_id!r}", message_id=message_id
        )
    if message.role != "assistant":
        raise p.ProtocolError(
            p.NOT_A_REPLY,
            f"message {message_id!r} is a user message, not a reply",
            message_id=message_id,
        )


def _turn(message: MessageRecord) -> dict:
    """An earlier message as AgentRequest.history holds it."""
    turn = {"role": message.role, "text": message.text}
    if message.context:
        turn["context"] = message.context
    return turn


def _allowed_always(messages: list) -> set:
    """Tools the user allowed always in these messages' tool calls."""
    return {
        call["name"]
        for message in messages
        for call in message.tool_calls or ()
        if call.get("decision") == ALLOW_ALWAYS
    }
