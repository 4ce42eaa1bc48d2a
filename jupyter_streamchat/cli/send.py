"""``send``: one message, and its reply streamed to the terminal as it arrives.

It speaks the wire contract over a transport of :mod:`jupyter_streamchat.kernel.connection`: a
WebSocket to the server (which reconnects by itself) or the hub in this process. The socket
follows only the reply it asked for (no SUBSCRIBE), and keeps the highest ``seq`` it printed:
on a reconnection it sends SEND_MESSAGE again before the hub accepted it (the hub is idempotent
on ``clientMessageId``) and RESUME from that ``seq`` after, so nothing is printed twice or lost.

Ctrl-C sends STOP_GENERATING and waits for the reply's final frame: what the agent wrote so far
stays stored (status ``stopped``) and printed. A second Ctrl-C leaves at once.

The reply's tool calls go to their own stream (stderr: stdout stays the answer), a line each
when a call waits for approval and when it ends (``🔧 read_file — completed (0.1 s)``), in
stream order with the text; a call waiting for approval is answered in another view (the Chat
panel), or the server's approval timeout ends the reply.

The main thread does all the work, reading events from one queue: frames and (re)connections
from the transport's thread, and Ctrl-C from the signal handler (``SimpleQueue.put`` is
reentrant, so a handler may call it whatever the main thread is doing).
"""

from __future__ import annotations

import queue
import signal
import threading
import time
import uuid
from typing import Optional, TextIO

from .. import protocol as p
from ..kernel.markdown import SHOWN_TOOL_STATUSES, tool_call_line
from .errors import INTERRUPTED, OK, CliError, NoServer, NotFound, UsageError

CONNECT_GUARD = 15.0  # seconds to connect at first
RECONNECT_GUARD = 30.0  # seconds without a connection in the middle of a reply
STOP_GUARD = 15.0  # seconds for the final frame once a stop was asked
TICK = 0.25  # seconds between looks at the connection while no event comes

# ERROR codes that refuse a SEND_MESSAGE -> the error that carries the exit code.
_REFUSALS = {
    p.UNKNOWN_AGENT: NotFound,
    p.CONVERSATION_DELETED: NotFound,
    p.TOO_LARGE: UsageError,
    p.BAD_FIELD: UsageError,
}


class Sender:
    """Sends ``text`` to ``agent_id`` in ``conversation_id`` and follows the reply.

    ``out`` gets the reply's text as it arrives (None: nothing is printed, for ``--json``);
    ``calls_out`` a line for each tool call when it waits for approval and when it ends (None:
    none); ``on_accepted(frame)`` is called once the hub has stored the message.
    """

    def __init__(
        self,
        transport,
        conversation_id: str,
        agent_id: str,
        text: str,
        out: Optional[TextIO],
        where: str,
        on_accepted=None,
        calls_out: Optional[TextIO] = None,
    ):
        self.transport = transport
        self.where = where
        self.out = out
        self.calls_out = calls_out
        # Both on one terminal: a call's line must not be glued to the end of the text.
        self._one_screen = bool(
            out is not None and calls_out is not None and _tty(out) and _tty(calls_out)
        )
        self.on_accepted = on_accepted
        self.client_message_id = uuid.uuid4().hex
        self.request = p.request_frame(
            p.SendMessage(conversation_id, agent_id, text, self.client_message_id)
        )
        self.accepted: Optional[dict] = None
        self.seq = 0  # the last frame of the reply taken
        self.parts: list = []
        self.thoughts: list = []
        self.calls: dict = {}  # tool-call id -> its latest state, in the order they began
        self._printed: dict = {}  # tool-call id -> the status its last line showed
        self.final: Optional[dict] = None
        self.stop_asked = False
        self._resumed_from: Optional[int] = None  # the seq a RESUME for a gap was sent from
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._ever_connected = False

    # -- running -------------------------------------------------------------------------

    def run(self) -> dict:
        """Send, follow the reply to its end; returns the result (see :meth:`result`)."""
        restore = None
        if threading.current_thread() is threading.main_thread():
            restore = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            self.transport.start(self._on_frame, self._on_connect)
            self._follow()
        finally:
            if restore is not None:
                signal.signal(signal.SIGINT, restore)
            self.transport.close()
        return self.result()

    def _follow(self) -> None:
        started = time.monotonic()
        offline_since: Optional[float] = None
        stop_asked_at = 0.0
        while self.final is None:
            try:
                event = self._events.get(timeout=TICK)
            except queue.Empty:
                event = None
            now = time.monotonic()
            if event is not None:
                kind = event[0]
                if kind == "connect":
                    self._ever_connected = True
                    self._connected()
                elif kind == "frame":
                    self._frame(event[1])
                elif kind == "interrupt":
                    if not self._ever_connected:  # nothing was sent: nothing to stop
                        raise CliError("interrupted before the message was sent", INTERRUPTED)
                    if self.stop_asked:
                        raise CliError(
                            "left without waiting for the end of the stopped reply", INTERRUPTED
                        )
                    self.stop_asked, stop_asked_at = True, now
                    self._send_stop()
            if self.stop_asked and now - stop_asked_at > STOP_GUARD:
                raise CliError(
                    f"asked to stop, but the reply's end did not come within {STOP_GUARD:g} s",
                    INTERRUPTED,
                )
            if getattr(self.transport, "connected", True):
                offline_since = None
                continue
            if not self._ever_connected:
                if now - started > CONNECT_GUARD:
                    raise NoServer(
                        f"cannot open the chat WebSocket of {self.where}: {self._transport_error()}"
                    )
                continue
            offline_since = offline_since or now
            if now - offline_since > RECONNECT_GUARD:
                raise NoServer(
                    f"lost the connection to {self.where} for more than "
                    f"{RECONNECT_GUARD:g} s ({self._transport_error()}){self._left()}"
                )

    def _left(self) -> str:
        """Where a reply left behind can be read."""
        if self.accepted is None:
            return ""
        conversation = self.accepted["conversationId"]
        return f"; the reply goes on there: jupyter streamchat show {conversation}"

    def _transport_error(self) -> str:
        return getattr(self.transport, "last_error", None) or "no answer"

    # -- events --------------------------------------------------------------------------

    def _on_connect(self) -> None:  # the transport's thread
        self._events.put(("connect",))

    def _on_frame(self, frame: dict) -> None:  # the transport's thread
        self._events.put(("frame", frame))

    def _on_sigint(self, signum, frame) -> None:  # the signal handler
        self._events.put(("interrupt",))

    def _connected(self) -> None:
        if self.accepted is None:
            self.transport.send(self.request)  # again after a reconnection: idempotent
            return
        self._resumed_from = self.seq
        self.transport.send(p.request_frame(p.Resume(self.reply_id, self.seq)))
        if self.stop_asked:
            self._send_stop()

    def _send_stop(self) -> None:
        if self.accepted is not None:  # else sent once the hub accepts the message
            self.transport.send(p.request_frame(p.StopGenerating(self.reply_id)))

    @property
    def reply_id(self) -> str:
        return self.accepted["messageId"]

    def _frame(self, frame: dict) -> None:
        if not p.is_server_frame(frame):
            return
        kind = frame["type"]
        if kind == "ERROR":
            self._error(frame)
        elif kind == "MESSAGE_ACCEPTED":
            if frame["clientMessageId"] != self.client_message_id or self.accepted is not None:
                return
            self.accepted = frame
            if self.on_accepted is not None:
                self.on_accepted(frame)
            if self.stop_asked:
                self._send_stop()
        elif kind == "MESSAGE_CHUNK":
            if self.accepted is not None and frame["messageId"] == self.reply_id:
                self._chunk(frame)

    def _chunk(self, frame: dict) -> None:
        seq = frame["seq"]
        if seq <= self.seq:
            return  # held already (a replay after a reconnection)
        if seq > self.seq + 1:
            # A gap: the rest comes from the store, asked once per seq held.
            if self._resumed_from != self.seq:
                self._resumed_from = self.seq
                self.transport.send(p.request_frame(p.Resume(self.reply_id, self.seq)))
            return
        self.seq = seq
        if frame.get("reasoning"):
            self.thoughts.append(frame["reasoning"])
        if frame["chunk"]:
            self.parts.append(frame["chunk"])
            if self.out is not None:
                self.out.write(frame["chunk"])
                self.out.flush()
        changed = [s for s in frame.get("toolCalls") or () if isinstance(s, dict) and "id" in s]
        for state in changed:  # after the frame's text, as the stream had them
            self.calls[state["id"]] = state
        if frame["isComplete"]:
            # A call the reply left unfinished shows failed (the hub's final frame says so).
            for call_id, state in self.calls.items():
                if state.get("status") not in (p.COMPLETED, p.FAILED):
                    self.calls[call_id] = {**state, "status": p.FAILED, "error": p.NOT_RUN}
                    changed.append(self.calls[call_id])
        self._print_calls(changed)
        if frame["isComplete"]:
            self.final = frame

    def _print_calls(self, changed: list) -> None:
        if self.calls_out is None:
            return
        lines = []
        for call_id in dict.fromkeys(s["id"] for s in changed):
            state = self.calls[call_id]
            status = state.get("status")
            if status in SHOWN_TOOL_STATUSES and self._printed.get(call_id) != status:
                self._printed[call_id] = status
                lines.append(tool_call_line(state) + "\n")
        if not lines:
            return
        if self._one_screen and self.parts and not self.parts[-1].endswith("\n"):
            self.out.flush()
            lines.insert(0, "\n")
        self.calls_out.write("".join(lines))
        self.calls_out.flush()

    def _error(self, frame: dict) -> None:
        code, message = frame["code"], " ".join(str(frame["message"]).split())
        if frame.get("clientMessageId") == self.client_message_id:
            raise _REFUSALS.get(code, CliError)(f"{self.where} refused the message: {message}")
        if self.accepted is not None and frame.get("messageId") == self.reply_id:
            if code == p.UNKNOWN_MESSAGE:
                raise NotFound(f"the reply is gone (its conversation was deleted): {message}")
            if code == p.BAD_FIELD:
                return  # a RESUME that raced the reply's next frame; the frames still come
            raise CliError(f"{self.where}: {code}: {message}")
        if code in (p.INTERNAL, p.STORE_UNAVAILABLE) and not frame.get("messageId"):
            raise CliError(f"{self.where}: {code}: {message}")

    # -- the outcome ---------------------------------------------------------------------

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def result(self) -> dict:
        """The reply as ``--json`` prints it, in the wire's names."""
        final, accepted = self.final or {}, self.accepted or {}
        result = {
            "conversationId": self.request["conversationId"],
            "agentId": accepted.get("agentId", self.request["agentId"]),
            "userMessageId": accepted.get("userMessageId"),
            "messageId": accepted.get("messageId"),
            "status": final.get("status", p.COMPLETE) if self.final else p.STREAMING,
            "text": self.text,
        }
        if final.get("error"):
            result["error"] = final["error"]
        if self.thoughts:
            result["reasoning"] = "".join(self.thoughts)
        if final.get("usage"):
            result["usage"] = final["usage"]
        if self.calls:
            result["toolCalls"] = list(self.calls.values())
        return result

    def exit_code(self) -> int:
        """0 for a complete reply, 130 after Ctrl-C, else 1 (see errors.py)."""
        if self.stop_asked:
            return INTERRUPTED
        return OK if self.result()["status"] == p.COMPLETE else 1


def _tty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no such method, or closed
        return False
