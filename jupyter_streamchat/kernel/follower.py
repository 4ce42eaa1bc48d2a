"""A conversation as the hub tells it, kept current from any thread: the kernel side of a chat.

    conversation = connect("my-notes")
    reply = conversation.send("Hello", "echo")   # returns at once
    reply.wait(30).text

:class:`Conversation` follows one conversation over a transport (see
:mod:`jupyter_streamchat.kernel.connection`): a WebSocket to the Jupyter server when one
launched this kernel, else the hub in this process. The store is the source of truth, so the
state here is only ever what the hub sent: a message shows once the hub has accepted it,
wherever it was sent from (this kernel, the browser, another kernel).

On every (re)connection it sends, in this order, each SEND_MESSAGE not yet answered (the hub
is idempotent on ``clientMessageId``), RESUME for each reply it holds that is still streaming
(from the last ``seq`` it holds), each stop not yet honoured, each answer to a tool call not yet
seen taken, and SUBSCRIBE. Chunks are applied by ``seq``: a frame at or below the held one is
dropped, the next one is appended, a gap asks the hub to resume from what is held.

A reply's tool calls come with its frames (``toolCalls``: the states that changed, the latest
state of each call winning) and with the HISTORY (each call's latest state); they are held as
the wire has them, in the order the calls first appeared. Once a reply has ended, a call it
left pending, running or waiting shows as failed ("not run: the reply ended first"), as the
hub's own final frame says. The browser's view keeps a conversation by the same rules
(js/src/view/conversation.ts); tests/fixtures/conversation.json holds the cases both run.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import uuid
from typing import Callable, Iterator, Optional, TextIO, Union

from .. import protocol as p
from ..agents.base import ALLOW_ONCE, COMPLETED, DECISIONS, FAILED, REJECT, WAITING
from .connection import RemoteTransport
from .link import Link

log = logging.getLogger("jupyter_streamchat.kernel.follower")

PENDING = "pending"  # a ChatReply's status until the hub accepts its message

OnChange = Callable[[list], None]

# Answers a tool call waiting for approval: gets the call's state (a dict, wire names) and
# returns "allow_once", "allow_always" or "reject" (True and False stand for allow_once and
# reject), or None to leave the call waiting for someone else.
Approve = Callable[[dict], Union[str, bool, None]]

# Tool-call statuses whose calls have ended.
_CALL_ENDED = (COMPLETED, FAILED)


def _state_copy(state: dict) -> dict:
    """A tool-call state for a reader: its own copy, the diff's too."""
    copy = dict(state)
    if isinstance(copy.get("diff"), dict):
        copy["diff"] = dict(copy["diff"])
    return copy


class _Message:
    """One message. For a reply, ``seq`` is the last frame held and ``held`` the length of the
    text those frames make (the text is their concatenation)."""

    __slots__ = (
        "message_id",
        "role",
        "agent_id",
        "parts",
        "status",
        "seq",
        "held",
        "error",
        "thoughts",
        "thought",
        "usage",
        "tools",
        "tool_at",
        "tool_log",
        "context",
    )

    def __init__(
        self,
        message_id: str,
        role: str,
        agent_id: str,
        text: str = "",
        status: str = p.STREAMING,
        seq: int = 0,
        error: Optional[str] = None,
        reasoning: str = "",
        usage: Optional[dict] = None,
    ):
        self.message_id = message_id
        self.role = role
        self.agent_id = agent_id
        self.parts = [text] if text else []
        self.status = status
        self.seq = seq
        self.held = len(text)
        self.error = error
        self.thoughts = [reasoning] if reasoning else []  # the reply's thinking, apart
        self.thought = len(reasoning)
        self.usage = usage  # Python names: model, input_tokens, output_tokens, ...
        self.tools: list = []  # each tool call's latest state (wire names), first seen first
        self.tool_at: dict = {}  # tool-call id -> its index in ``tools``
        # The id of the call of each state change, in order: readers of the live reply take
        # what changed since they last looked without going over every call again.
        self.tool_log: list = []
        self.context: Optional[list] = None  # a user message's attached items, as sent

    def take_tools(self, states) -> list:
        """Apply tool-call states (a frame's ``toolCalls``, the latest state per id winning);
        returns those that were taken."""
        taken = []
        for state in states if isinstance(states, list) else ():
            if not isinstance(state, dict) or not isinstance(state.get("id"), str):
                continue
            state = _state_copy(state)
            at = self.tool_at.get(state["id"])
            if at is None:
                self.tool_at[state["id"]] = len(self.tools)
                self.tools.append(state)
            else:
                self.tools[at] = state
            self.tool_log.append(state["id"])
            taken.append(state)
        return taken

    def end_tools(self) -> None:
        """The reply has ended: a call left pending, running or waiting was never finished."""
        for at, state in enumerate(self.tools):
            if state.get("status") not in _CALL_ENDED:
                self.tools[at] = {**state, "status": FAILED, "error": p.NOT_RUN}
                self.tool_log.append(state["id"])

    def add(self, text: str, reasoning: str) -> None:
        if text:
            self.parts.append(text)
            self.held += len(text)
        if reasoning:
            self.thoughts.append(reasoning)
            self.thought += len(reasoning)

    @property
    def reasoning(self) -> str:
        if len(self.thoughts) > 1:
            self.thoughts[:] = ["".join(self.thoughts)]
        return self.thoughts[0] if self.thoughts else ""

    @property
    def text(self) -> str:
        if len(self.parts) > 1:  # join once, not on every read
            self.parts[:] = ["".join(self.parts)]
        return self.parts[0] if self.parts else ""

    def since(self, offset: int) -> str:
        """The text after its first ``offset`` characters, from the last parts only: reading
        each new piece of a long reply costs the piece, not the whole text."""
        need, pieces = self.held - offset, []
        for part in reversed(self.parts):
            if need <= 0:
                break
            pieces.append(part if len(part) <= need else part[-need:])
            need -= len(part)
        return "".join(reversed(pieces))

    @property
    def streaming(self) -> bool:
        return self.role == "assistant" and self.status == p.STREAMING

    def snapshot(self) -> dict:
        snap = {
            "messageId": self.message_id,
            "role": self.role,
            "agentId": self.agent_id,
            "text": self.text,
            "status": self.status,
        }
        if self.error is not None:
            snap["error"] = self.error
        if self.thoughts:
            snap["reasoning"] = self.reasoning
        if self.usage:
            snap["usage"] = dict(self.usage)
        if self.tools:
            snap["toolCalls"] = [_state_copy(s) for s in self.tools]
        if self.context:
            snap["context"] = [dict(item) for item in self.context]
        return snap


class _Ended(threading.Event):
    """A reply's end: setting it also wakes the reply's iterators."""

    def __init__(self, news: threading.Condition):
        super().__init__()
        self._news = news

    def set(self) -> None:
        super().set()
        with self._news:
            self._news.notify_all()


class ChatReply:
    """The reply to one :meth:`Conversation.send`; its attributes follow the stream live."""

    def __init__(self, conversation: "Conversation", client_message_id: str, agent_id: str):
        self._conversation = conversation
        self.client_message_id = client_message_id
        self.agent_id = agent_id
        self._message: Optional[_Message] = None  # set when the hub accepts the message
        self._refused: Optional[tuple] = None  # (code, message) of an ERROR instead
        self._stop_requested = False
        # Iterators wait on _news: notified per chunk applied (_arrivals counts them) and at
        # the end. Lock order: the conversation's lock, then _news, never the other way.
        self._news = threading.Condition()
        self._arrivals = 0
        self._ended = _Ended(self._news)  # final status reached, or the conversation closed

    @property
    def message_id(self) -> Optional[str]:
        """The reply's id, once the hub has accepted the message."""
        return self._message.message_id if self._message else None

    @property
    def text(self) -> str:
        with self._conversation._lock:
            return self._message.text if self._message else ""

    @property
    def status(self) -> str:
        """``pending`` until accepted, then the wire status (``streaming``, ``complete``,
        ``stopped``, ``interrupted``, ``error``)."""
        if self._refused:
            return p.ERROR
        return self._message.status if self._message else PENDING

    @property
    def reasoning(self) -> str:
        """The reply's thinking text, streamed apart from its answer (empty for most agents)."""
        with self._conversation._lock:
            return self._message.reasoning if self._message else ""

    @property
    def usage(self) -> Optional[dict]:
        """Once ended: ``model``, ``input_tokens``, ``output_tokens`` (as the agent reported
        them), ``first_token_seconds`` and ``duration_seconds`` (measured by the hub)."""
        message = self._message
        return dict(message.usage) if message and message.usage else None

    @property
    def tool_calls(self) -> list:
        """The reply's tool calls as they stand, in the order they began: each a dict with the
        wire's names (``id``, ``name``, ``status``: pending, running, waiting, completed or
        failed; ``arguments``, JSON text; and where known ``title``, ``kind``, ``result``,
        ``error``, ``diff``, ``decision``, ``startedAt``, ``endedAt``). Once the reply has
        ended, none is left pending, running or waiting: those show as failed."""
        with self._conversation._lock:
            message = self._message
            return [_state_copy(s) for s in message.tools] if message else []

    def answer(self, tool_call_id: str, decision: Union[str, bool]) -> None:
        """Answer this reply's tool call ``tool_call_id``, waiting for approval: ``allow_once``,
        ``allow_always`` (this tool, for the rest of the conversation) or ``reject``. The first
        answer to reach the hub, from here or any other view, is the one taken."""
        decision = _decision(decision)
        if decision is None:
            raise ValueError("a decision is allow_once, allow_always or reject")
        if self._message is None:
            raise RuntimeError("the hub has not accepted the message yet: nothing waits")
        self._conversation._answer(self._message.message_id, tool_call_id, decision)

    @property
    def error(self) -> Optional[str]:
        """Why the reply failed: the agent's error, or the hub's refusal of the message."""
        if self._refused:
            return self._refused[1]
        return self._message.error if self._message else None

    @property
    def error_code(self) -> Optional[str]:
        """The ERROR frame's ``code`` (``unknown_agent``, ``too_large``...) if the hub refused."""
        return self._refused[0] if self._refused else None

    @property
    def done(self) -> bool:
        return self.status in p.FINAL_STATUSES

    def wait(self, timeout: Optional[float] = None) -> "ChatReply":
        """Block until the reply has ended; raise TimeoutError after ``timeout`` seconds."""
        if not self._ended.wait(timeout):
            raise TimeoutError(
                f"reply still {self.status} after {timeout} s; "
                f"{self._conversation._connection_state()}"
            )
        if not self.done:
            raise ConnectionError("the conversation was closed before the reply ended")
        return self

    def stop(self) -> None:
        """Stop generating this reply (now, or as soon as the hub accepts the message)."""
        self._conversation._stop_reply(self)

    def __iter__(self) -> Iterator[str]:
        return self.chunks()

    def chunks(self, timeout: Optional[float] = None) -> Iterator[str]:
        """The reply's text as it arrives: first what is held already, then each piece that
        arrives (a reader slower than the stream gets the pieces that came meanwhile as one),
        until the reply ends. Their concatenation is :attr:`text`. A stopped or failed reply
        ends the iteration quietly (:attr:`status` tells); a conversation closed before the
        end raises ConnectionError, and ``timeout`` seconds without news TimeoutError.
        Safe from any thread; several iterators of one reply each get the whole text."""
        return (piece for piece in self.events(timeout) if isinstance(piece, str))

    def events(self, timeout: Optional[float] = None) -> Iterator[Union[str, dict]]:
        """The reply as it arrives, as :meth:`chunks` gives its text, with its tool calls in
        stream order: a ``str`` is a piece of text, a ``dict`` a tool call's state (as
        :attr:`tool_calls` has them), given each time the call's status changes (a reader
        slower than the stream gets only the latest state of each call that changed
        meanwhile, after the text that came with it)."""
        sent, seen, logged, shown = 0, -1, 0, {}
        while True:
            with self._news:
                if not self._news.wait_for(
                    lambda: self._arrivals != seen or self._ended.is_set(), timeout
                ):
                    raise TimeoutError(
                        f"no news of the reply after {timeout} s; "
                        f"{self._conversation._connection_state()}"
                    )
                seen = self._arrivals
            ended = self._ended.is_set()
            calls = []
            with self._conversation._lock:
                message = self._message
                piece = message.since(sent) if message else ""
                if message is not None and len(message.tool_log) > logged:
                    changed = dict.fromkeys(message.tool_log[logged:])  # in order, once each
                    logged = len(message.tool_log)
                    for call_id in changed:
                        state = message.tools[message.tool_at[call_id]]
                        if shown.get(call_id) != state.get("status"):
                            shown[call_id] = state.get("status")
                            calls.append(_state_copy(state))
            if piece:
                sent += len(piece)
                yield piece
            yield from calls
            if ended:
                if not self.done:
                    raise ConnectionError("the conversation was closed before the reply ended")
                return

    def news(self, since: int = 0, timeout: Optional[float] = None) -> int:
        """Wait until a chunk arrives after ``since`` (what this returned last time; 0 at
        first) or the reply ends, at most ``timeout`` seconds; returns the count to pass next.
        For readers that redraw the whole text, where :meth:`chunks` suits those that append."""
        with self._news:
            self._news.wait_for(lambda: self._arrivals != since or self._ended.is_set(), timeout)
            return self._arrivals

    def stream(self, file: Optional[TextIO] = None) -> "ChatReply":
        """Write the reply to ``file`` (default: ``sys.stdout``) as it arrives, each tool call
        on a line of its own when it waits for approval and when it ends (``🔧 read_file —
        completed (0.1 s)``), then a line break, and a line saying how the reply ended if it
        did not complete; returns the reply."""
        from .markdown import SHOWN_TOOL_STATUSES, status_note, tool_call_line

        file = file or sys.stdout
        wrote = False
        line_start = True  # the output so far ends a line
        after_call = False  # ... with a tool call's line
        for item in self.events():
            if isinstance(item, str):
                file.write(item)
                wrote, after_call = True, False
                line_start = item.endswith("\n")
            elif item.get("status") in SHOWN_TOOL_STATUSES:
                file.write(("" if line_start else "\n") + tool_call_line(item) + "\n")
                line_start = after_call = True
            else:
                continue
            file.flush()
        note = status_note(self.status, self.error)
        if after_call:
            file.write(f"{note}\n" if note else "")
        else:
            file.write(("\n" if wrote else "") + f"{note}\n" if note else "\n")
        file.flush()
        return self

    def _arrived(self) -> None:
        """A chunk of this reply was applied (called under the conversation's lock)."""
        with self._news:
            self._arrivals += 1
            self._news.notify_all()

    def __repr__(self) -> str:
        text = self.text
        shown = text if len(text) <= 60 else text[:57] + "..."
        extra = f" error={self.error!r}" if self.error else ""
        return f"<ChatReply {self.agent_id} {self.status} {len(text)} chars: {shown!r}{extra}>"

    def _repr_markdown_(self) -> str:
        from .markdown import tool_calls_markdown

        calls = self.tool_calls
        head = tool_calls_markdown(calls) + "\n\n" if calls else ""
        if self.error:
            return f"{head}{self.text}\n\n**{self.status}:** {self.error}"
        return head + (self.text or f"*{self.status}*")


class Conversation:
    """Follows conversation ``conversation_id`` over ``transport``.

    ``on_change(messages)`` is called from the transport's thread when the messages change at
    a message boundary: history loaded, a message accepted, a reply ended. Never per chunk;
    read :attr:`messages` or a reply's ``text`` for live text.

    ``approve(call)``, if given, answers each tool call of the replies this object sent when
    the call waits for approval (see :data:`Approve`); it runs on a thread of its own, one
    call at a time, so it may take its time (ask someone, say). Without it, such a call waits
    for an answer from another view (the Chat panel) or :meth:`ChatReply.answer`, until the
    hub's approval timeout ends the reply.
    """

    def __init__(
        self,
        conversation_id: str,
        transport,
        on_change: Optional[OnChange] = None,
        approve: Optional[Approve] = None,
    ):
        if approve is not None and not callable(approve):
            raise TypeError("approve must be a function of a tool call, or None")
        self.conversation_id = conversation_id
        self.transport = transport
        self._on_change = on_change
        self._approver = _Approver(approve, self._answer) if approve is not None else None
        self._asked: dict = {}  # reply id -> ids of its calls handed to approve
        self._answers: dict = {}  # (reply id, call id) -> ANSWER_TOOL_CALL, until seen taken
        self._lock = threading.Lock()
        self._messages: list = []  # _Message, in conversation order
        self._by_id: dict = {}
        self._pending: dict = {}  # clientMessageId -> (ChatReply, SEND_MESSAGE frame)
        self._replies: dict = {}  # reply id -> ChatReply, until the reply ends
        self._stopping: set = set()  # reply ids asked to stop, until they end
        self._resuming: dict = {}  # reply id -> afterSeq of the last RESUME sent on this connection
        self._synced = threading.Event()
        self._closed = False
        self.last_error: Optional[dict] = None  # the last ERROR frame not tied to a send
        transport.start(self._on_frame, self._on_connect)

    # -- the API -------------------------------------------------------------------------

    @property
    def remote(self) -> bool:
        """True when the hub is the Jupyter server's, False when it runs in this process."""
        # A channel of the kernel's one connection (connect()), or a transport of its own.
        return isinstance(getattr(self.transport, "shared", self.transport), RemoteTransport)

    @property
    def server_url(self) -> Optional[str]:
        return self.transport.server.url if self.remote else None

    @property
    def messages(self) -> list:
        """A copy: ``{"messageId", "role", "agentId", "text", "status"}`` (and ``error``,
        ``reasoning``, ``usage``; a reply's ``toolCalls``, a user message's ``context``)."""
        with self._lock:
            return [m.snapshot() for m in self._messages]

    def send(self, text: str, agent: str, context: Optional[list] = None) -> ChatReply:
        """Send ``text`` to ``agent``; returns at once with a reply that follows the stream.

        ``context``: what to attach (at most 20 items), each ``{"kind": "cell" | "selection" |
        "error" | "file" | "variable", "label": ..., "text": ...}`` and optionally ``path``,
        ``cell`` (a 0-based index), ``language``, ``mime``; the agent gets it with the text,
        and it is stored with the message as sent."""
        if self._closed:
            raise RuntimeError("the conversation is closed")
        client_id = uuid.uuid4().hex
        reply = ChatReply(self, client_id, agent)
        if context and not all(isinstance(item, dict) for item in context):
            raise TypeError("context is a list of dicts: kind, label, text...")
        attached = [dict(item) for item in context] if context else None  # as sent, now
        frame = p.request_frame(
            p.SendMessage(self.conversation_id, agent, text, client_id, attached)
        )
        with self._lock:
            self._pending[client_id] = (reply, frame)
        self._send_if_connected(frame)
        return reply

    def stop(self, message_id: Optional[str] = None) -> None:
        """Stop one reply, or every reply of this conversation still generating."""
        with self._lock:
            if message_id is not None:
                ids = [message_id]
            else:
                ids = [m.message_id for m in self._messages if m.streaming]
                for reply, _frame in self._pending.values():
                    reply._stop_requested = True  # stopped once accepted
            ids = [i for i in ids if i not in self._by_id or self._by_id[i].streaming]
            # Re-sent after a reconnection until the reply ends; an id this side does not
            # know is sent once (the hub answers for it).
            self._stopping.update(i for i in ids if i in self._by_id)
        for i in ids:
            self._send_if_connected(p.request_frame(p.StopGenerating(i)))

    def wait_synced(self, timeout: Optional[float] = None) -> None:
        """Block until the hub's history of the conversation has arrived."""
        if not self._synced.wait(timeout):
            raise TimeoutError(f"no history after {timeout} s; {self._connection_state()}")

    def close(self) -> None:
        """Stop following. Replies keep generating in the hub; their handles stop updating."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            waiting = [r for r, _f in self._pending.values()] + list(self._replies.values())
        if self._approver is not None:
            self._approver.close()
        self.transport.close()
        for reply in waiting:
            reply._ended.set()

    def __enter__(self) -> "Conversation":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.server_url or "in-process hub"
        count = len(self._messages)
        return f"<Conversation {self.conversation_id!r} via {where}, {count} messages>"

    # -- internals -----------------------------------------------------------------------

    def _connection_state(self) -> str:
        if not self.remote:
            return "in-process hub"
        state = "connected" if self.transport.connected else "not connected"
        error = self.transport.last_error
        return f"{state} to {self.transport.server.url}" + (f" ({error})" if error else "")

    def _send_if_connected(self, frame: dict) -> None:
        # While disconnected, on_connect will send what is still needed, from the state.
        # (A race with a reconnection may send a request twice; every request is safe to repeat.)
        if self.transport.connected:
            self.transport.send(frame)

    def _stop_reply(self, reply: ChatReply) -> None:
        with self._lock:
            if reply._message is None:
                reply._stop_requested = True
                return
            message_id = reply._message.message_id
        self.stop(message_id)

    def _on_connect(self) -> None:
        with self._lock:
            # In the order of docs/protocol.md (the hub answers in it): unanswered sends, then
            # replies held as streaming, resumed from the last frame held (frames that then
            # arrive twice, replayed and in the HISTORY, are dropped by seq), stops, SUBSCRIBE.
            frames = [frame for _reply, frame in self._pending.values()]
            self._resuming = {m.message_id: m.seq for m in self._messages if m.streaming}
            frames += [
                p.request_frame(p.Resume(message_id, seq))
                for message_id, seq in self._resuming.items()
            ]
            frames += [p.request_frame(p.StopGenerating(i)) for i in self._stopping]
            frames += list(self._answers.values())
            frames.append(p.request_frame(p.Subscribe(self.conversation_id)))
        for frame in frames:
            self.transport.send(frame)

    def _on_frame(self, frame: dict) -> None:
        if not p.is_server_frame(frame):
            log.debug("streamchat: ignoring a frame outside the contract: %.200r", frame)
            return
        kind = frame.get("type")
        if kind == "ERROR":
            self._on_error(frame)
            return
        if frame.get("conversationId") != self.conversation_id:
            return  # not this conversation's (the transport is not shared, so unexpected)
        after = _After()
        with self._lock:
            if kind == "MESSAGE_CHUNK":
                self._apply_chunk(frame, after)
            elif kind == "MESSAGE_ACCEPTED":
                self._apply_accepted(frame, after)
            elif kind == "HISTORY":
                self._apply_history(frame, after)
            elif kind == "HISTORY_PAGE":
                self._apply_older(frame, after)
            if after.changed:
                after.snapshot = [m.snapshot() for m in self._messages]
        self._run(after)

    def _apply_chunk(self, frame: dict, after: "_After") -> None:
        message_id, seq = frame["messageId"], frame["seq"]
        message = self._by_id.get(message_id)
        if message is None:  # a reply this side has not heard of: take it from the start
            message = self._add(_Message(message_id, "assistant", frame.get("agentId", "")))
            after.changed = True
        if seq <= message.seq or message.status in p.FINAL_STATUSES:
            return  # held already (from a replay, or the HISTORY), or after the end
        if seq > message.seq + 1:
            # A gap: ask for the rest from the store, once per held seq.
            if self._resuming.get(message_id) != message.seq:
                self._resuming[message_id] = message.seq
                after.sends.append(p.request_frame(p.Resume(message_id, message.seq)))
            return
        # The RESUME asked stays on record (``_resuming``) until the reply ends: a HISTORY
        # then asks no second one on this connection.
        message.add(frame["chunk"], frame.get("reasoning", ""))
        message.seq = seq
        if "toolCalls" in frame:  # after the frame's text, as the stream had them
            self._took_calls(message, message.take_tools(frame["toolCalls"]), after)
        reply = self._replies.get(message_id)
        if frame.get("isComplete"):
            message.status = frame.get("status", p.COMPLETE)
            message.error = frame.get("error")
            if frame.get("usage"):
                message.usage = p.usage_from_wire(frame["usage"])
            message.end_tools()
            self._ended(message, after)
        if reply is not None:  # wakes its iterators, per chunk
            reply._arrived()

    def _apply_accepted(self, frame: dict, after: "_After") -> None:
        user_id, reply_id = frame["userMessageId"], frame["messageId"]
        agent = frame.get("agentId", "")
        if user_id not in self._by_id:
            self._add(_Message(user_id, "user", agent, frame.get("text", ""), p.COMPLETE))
            after.changed = True
        if reply_id not in self._by_id:
            self._add(_Message(reply_id, "assistant", agent))
            after.changed = True
        pending = self._pending.pop(frame.get("clientMessageId"), None)
        if pending is None:
            return  # sent elsewhere, or an answer to a re-sent request
        reply, sent = pending
        asked = self._by_id[user_id]
        if sent.get("context") and asked.context is None:  # as sent: the hub stores it so
            asked.context = [dict(item) for item in sent["context"]]
        message = reply._message = self._by_id[reply_id]
        if message.status in p.FINAL_STATUSES:  # it ended while this side was away
            after.ended.append(reply)
            return
        self._replies[reply_id] = reply
        self._took_calls(message, message.tools, after)  # held from a HISTORY already
        if reply._stop_requested:
            self._stopping.add(reply_id)
            after.sends.append(p.request_frame(p.StopGenerating(reply_id)))

    def _apply_history(self, frame: dict, after: "_After") -> None:
        # A reply's text in a HISTORY is exactly its frames up to lastSeq (the store reads it
        # in one snapshot), and the hub sends this client only the frames after it.
        ordered = [self._merge_stored(wire, after) for wire in frame["messages"]]
        seen = {m.message_id for m in ordered}
        rest = [m for m in self._messages if m.message_id not in seen]
        if frame.get("hasMore"):
            # Only the latest messages came: what else is held is older, and the rest of the
            # conversation is asked for page by page, so ``messages`` stays the whole of it.
            self._messages = rest + ordered
            self._ask_older(ordered, after)
        else:
            # Messages the snapshot lacks (the conversation was deleted, say) stay, at the end.
            self._messages = ordered + rest
        after.changed = True
        after.synced = True

    def _apply_older(self, frame: dict, after: "_After") -> None:
        older = [
            m
            for m in (self._merge_stored(wire, after) for wire in frame["messages"])
            if m not in self._messages
        ]
        if not older:
            return
        at = next(
            (
                i
                for i, m in enumerate(self._messages)
                if m.message_id == frame.get("beforeMessageId")
            ),
            0,
        )
        self._messages[at:at] = older
        if frame.get("hasMore"):
            self._ask_older(older, after)
        after.changed = True

    def _ask_older(self, page: list, after: "_After") -> None:
        if page:
            after.sends.append(
                p.request_frame(p.LoadHistory(self.conversation_id, page[0].message_id))
            )

    def _merge_stored(self, wire: dict, after: "_After") -> _Message:
        """Take one message of a HISTORY or HISTORY_PAGE into what is held."""
        truncated = wire.get("truncated", False)
        # A reply too long for a page shows as still coming until its rest has arrived.
        status = p.STREAMING if truncated else wire["status"]
        message = self._by_id.get(wire["messageId"])
        usage = p.usage_from_wire(wire["usage"]) if wire.get("usage") else None
        if message is None:
            message = _Message(
                wire["messageId"],
                wire["role"],
                wire["agentId"],
                wire["text"],
                status,
                wire["lastSeq"],
                wire.get("error"),
                wire.get("reasoning", ""),
                usage,
            )
            message.take_tools(wire.get("toolCalls"))
            if status in p.FINAL_STATUSES:
                message.end_tools()
            self._by_id[message.message_id] = message
        elif wire["lastSeq"] > message.seq and message.status not in p.FINAL_STATUSES:
            # Only the text past what is held is new: the held text is the start of it.
            message.add(wire["text"][message.held :], wire.get("reasoning", "")[message.thought :])
            message.seq = wire["lastSeq"]
            # Each call's state as of lastSeq: newer than what is held.
            self._took_calls(message, message.take_tools(wire.get("toolCalls")), after)
            if status != p.STREAMING:
                message.status, message.error = status, wire.get("error")
                message.usage = usage or message.usage
                message.end_tools()
                self._ended(message, after)
        elif usage and message.status not in p.FINAL_STATUSES:
            message.usage = usage
        if message.context is None and isinstance(wire.get("context"), list):
            # What a user message had attached, as stored (once: it never changes).
            message.context = [dict(i) for i in wire["context"] if isinstance(i, dict)]
        if message.streaming and message.message_id not in self._resuming:
            # The rest comes from the store, then live: RESUME from what is held.
            self._resuming[message.message_id] = message.seq
            after.sends.append(p.request_frame(p.Resume(message.message_id, message.seq)))
        return message

    def _add(self, message: _Message) -> _Message:
        self._messages.append(message)
        self._by_id[message.message_id] = message
        return message

    def _took_calls(self, message: _Message, states: list, after: "_After") -> None:
        """Tool-call states just taken into ``message``: a call seen past waiting needs no
        answer re-sent; one of this side's replies now waiting goes to ``approve``."""
        if self._answers:
            for state in states:
                if state.get("status") != WAITING:
                    self._answers.pop((message.message_id, state["id"]), None)
        reply = self._replies.get(message.message_id)
        if self._approver is None or reply is None:
            return
        asked = self._asked.setdefault(message.message_id, set())
        for state in states:
            if state.get("status") == WAITING and state["id"] not in asked:
                asked.add(state["id"])
                after.approvals.append((reply, _state_copy(state)))

    def _answer(self, message_id: str, tool_call_id: str, decision: str) -> None:
        """Send ANSWER_TOOL_CALL; again after a reconnection until the call is seen past
        waiting or the reply ends (the hub takes the first answer and refuses the others)."""
        frame = p.request_frame(p.AnswerToolCall(message_id, tool_call_id, decision))
        with self._lock:
            message = self._by_id.get(message_id)
            if message is not None and message.streaming:
                self._answers[(message_id, tool_call_id)] = frame
        self._send_if_connected(frame)

    def _ended(self, message: _Message, after: "_After") -> None:
        self._stopping.discard(message.message_id)
        self._resuming.pop(message.message_id, None)
        self._asked.pop(message.message_id, None)
        if self._answers:
            for key in [k for k in self._answers if k[0] == message.message_id]:
                del self._answers[key]
        reply = self._replies.pop(message.message_id, None)
        if reply is not None:
            after.ended.append(reply)
        after.changed = True

    def _on_error(self, frame: dict) -> None:
        with self._lock:
            pending = self._pending.pop(frame.get("clientMessageId"), None)
            if pending is not None:
                reply = pending[0]
                reply._refused = (frame.get("code"), frame.get("message", ""))
            else:
                self.last_error = frame
                if frame.get("code") == p.NOT_WAITING:
                    pass  # an answer came after another view's, or after the call ended
                elif frame.get("messageId") in self._resuming:
                    del self._resuming[frame["messageId"]]
        if pending is not None:
            reply._ended.set()
        elif frame.get("code") == p.NOT_WAITING:
            log.debug("streamchat: a tool call was answered already: %s", frame.get("message"))
        else:
            log.warning(
                "streamchat: the hub refused a request: %s: %s",
                frame.get("code"),
                frame.get("message"),
            )

    def _run(self, after: "_After") -> None:
        """What a frame caused, done with the lock released."""
        for frame in after.sends:
            self.transport.send(frame)
        # The snapshot goes out before any waiter wakes: after ``reply.wait()``, a widget's
        # ``messages`` already shows the ended reply.
        if after.snapshot is not None and self._on_change is not None:
            try:
                self._on_change(after.snapshot)
            except Exception:
                log.exception("streamchat: on_change failed")
        for reply in after.ended:
            reply._ended.set()
        if after.synced:
            self._synced.set()
        for reply, state in after.approvals:
            self._approver.ask(reply, state)


class _After:
    """Effects of one frame, collected under the lock and carried out after it."""

    __slots__ = ("sends", "ended", "changed", "synced", "snapshot", "approvals")

    def __init__(self):
        self.sends: list = []
        self.ended: list = []
        self.changed = False
        self.synced = False
        self.snapshot: Optional[list] = None
        self.approvals: list = []  # (ChatReply, tool-call state) for approve


def _decision(value) -> Optional[str]:
    """What an answer stands for: a decision, or None (no answer)."""
    if value is None:
        return None
    if isinstance(value, bool):  # before str: True is no decision's name
        return ALLOW_ONCE if value else REJECT
    if isinstance(value, str) and value in DECISIONS:
        return value
    raise ValueError(
        f"{value!r} is not a decision: allow_once, allow_always or reject (or True, False, None)"
    )


class _Approver:
    """Runs a conversation's ``approve`` on a thread of its own (never the transport's, which
    it would hold up, nor the hub's), one waiting call at a time, in the order they came."""

    def __init__(self, policy: Approve, answer: Callable[[str, str, str], None]):
        self._policy = policy
        self._answer = answer
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._closed = False

    def ask(self, reply: ChatReply, state: dict) -> None:
        with self._lock:
            if self._closed:
                return
            self._jobs.put((reply, state))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="streamchat-approve", daemon=True
                )
                self._thread.start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._jobs.put(None)

    def _run(self) -> None:
        while True:  # until close(): a daemon thread, which never keeps the process alive
            job = self._jobs.get()
            if job is None:
                return
            reply, state = job
            if reply.done:
                continue  # ended (stopped, timed out) while earlier calls were answered
            try:
                decision = _decision(self._policy(state))
            except Exception:
                # A policy that fails allows nothing: the agent is told the call was rejected.
                log.exception("streamchat: approve failed on tool call %r", state.get("name"))
                decision = REJECT
            if decision is not None:
                self._answer(reply.message_id, state["id"], decision)


def connect(
    conversation_id: str,
    on_change: Optional[OnChange] = None,
    store_url: str = "",
    approve: Optional[Approve] = None,
) -> Conversation:
    """Follow ``conversation_id`` on the Jupyter server that launched this kernel, or, without
    one (a notebook run headless, a script), on a hub in this process over ``store_url``
    (default: ``streamchat.db`` in the Jupyter data dir, shared with Jupyter servers).
    ``approve``: see :class:`Conversation`.

    Every conversation (and notebook agent) of this process shares one connection to the hub
    (:mod:`~jupyter_streamchat.kernel.link`); closing the conversation leaves it."""
    if approve is not None and not callable(approve):
        raise TypeError("approve must be a function of a tool call, or None")
    return Conversation(
        conversation_id, Link.channel(conversation_id, store_url), on_change, approve
    )
