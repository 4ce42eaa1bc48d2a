"""Agents written in a notebook: ``@jupyter_streamchat.agent("name")`` on a function.

    import jupyter_streamchat

    @jupyter_streamchat.agent("pandas-helper", description="Answers with pandas code")
    def helper(request):                 # a jupyter_streamchat.AgentRequest
        yield f"You asked: {request.text}"

The function becomes an agent that every chat of this Jupyter server can pick (the Chat panel,
every widget, the Python API) for as long as this kernel lives. It gets the request
(``request.text``; ``request.history``, the conversation before it, oldest first;
``request.context``, what the user attached) and yields text,
:class:`~jupyter_streamchat.Reasoning`, :class:`~jupyter_streamchat.Usage` and
:class:`~jupyter_streamchat.ToolCall` (a state of a tool call it runs: pending, running,
completed or failed, each time it changes) as a plug-in's ``stream`` does; the chat shows the
calls in the order they came among the text. Asking the user to approve a call
(``request.approve``) is for server agents: a notebook agent's request answers it ``reject``.
It may be a generator, an async generator, or a function (sync or async) returning the whole
text. :class:`~jupyter_streamchat.AgentError` ends the reply with
its message; another exception ends it with ``TypeName: message``, the traceback going to the
kernel's log (its stderr, which the Jupyter server's log shows).

The hub owns the reply as it does any agent's: ids, storage, resume, stop. The function runs
off the kernel's main thread (a generator on one of a few worker threads, an async one on an
event loop of its own), so the kernel stays usable while it streams, and a stop reaches it
even while a cell runs: an async agent is cancelled at its current ``await``, a sync one stops
at its next ``yield`` (its generator is then closed, so its ``finally`` blocks run). What it
yields is gathered and sent as fast as the connection takes it, not a frame per token.

Running the cell again replaces the agent. A name that another kernel, or the server itself,
already uses is refused with :class:`AgentRegistrationError`, whose message says who has it: a
name means one agent for every picker and every stored conversation. :func:`unregister`
removes an agent; the agents of a kernel go when it ends (its connection closes).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import queue
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Optional

from .. import protocol as p
from ..agents import AgentError, AgentRequest, Reasoning, ToolCall, Usage
from ..agents.base import WAITING
from .link import Link

log = logging.getLogger("jupyter_streamchat.kernel.agents")

# How long the decorator waits for the hub to take (or refuse) the agent.
REGISTER_TIMEOUT = 10.0

# Threads running sync agents at once; more requests wait for one to be free.
MAX_SYNC_WORKERS = 8

# Characters an agent may have produced but not yet handed to the connection; past that its
# generator waits (the hub reads a kernel only as fast as it stores).
MAX_BUFFERED_CHARS = 1024 * 1024

# Most characters of text (and of reasoning) in one AGENT_OUTPUT: the hub's frames hold
# 16 Ki characters, and this stays far below its message size limit (1 MiB by default).
PIECE_CHARS = 16 * 1024

# Most tool-call states in one AGENT_OUTPUT (the hub takes p.MAX_TOOL_STATES), and about the
# most characters they hold together: more go in the frames after, in order.
MAX_FRAME_CALLS = min(200, p.MAX_TOOL_STATES)
MAX_FRAME_CALL_CHARS = 256 * 1024

# After sending, the sender gives the agents this long to produce more before the next frame;
# frames waiting in the socket beyond MAX_BACKLOG hold it back too.
COALESCE_SECONDS = 0.004
MAX_BACKLOG = 64

# Longest error message sent (the hub keeps 2,000 characters of it).
MAX_ERROR_CHARS = 4000

REFUSALS = (p.AGENT_EXISTS, p.AGENT_TAKEN, p.TOO_MANY_AGENTS, p.BAD_FIELD, p.TOO_LARGE)

# An agent registered again on a reconnection may find its name still held by this kernel's
# previous connection, until the hub notices that one is gone (at once if it was closed, after
# StreamChatApp.agent_host_timeout if it went silent): it tries again this often, this many
# times, before it gives the name up.
RETAKE_SECONDS = 2.0
RETAKE_TRIES = 15


class AgentRegistrationError(RuntimeError):
    """The hub refused a notebook agent: ``code`` is ``agent_taken`` (another kernel has the
    name), ``agent_exists`` (a server agent has it) or ``too_many_agents``."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def agent(agent_id: str, *, name: Optional[str] = None, description: str = ""):
    """Make the decorated function a notebook agent named ``agent_id`` (its ``agentId``);
    ``name`` is shown in pickers (default: the id), ``description`` defaults to the first
    line of the function's docstring. Returns the function unchanged."""
    if callable(agent_id):
        raise TypeError('give the agent a name: @jupyter_streamchat.agent("my-agent")')
    problem = p.id_problem(agent_id) if isinstance(agent_id, str) else "must be a string"
    if problem:
        raise ValueError(f"agent id {agent_id!r} {problem}")
    if name is not None and (not isinstance(name, str) or len(name) > p.MAX_ID_LENGTH):
        raise ValueError(f"name must be a string of at most {p.MAX_ID_LENGTH} characters")
    if not isinstance(description, str):
        raise ValueError("description must be a string")

    def register(fn: Callable) -> Callable:
        if not callable(fn):
            raise TypeError(f"@agent({agent_id!r}) decorates a function, not {type(fn).__name__}")
        about = description or _first_line(inspect.getdoc(fn))
        entry = _Entry(agent_id, fn, name or agent_id, about[: p.MAX_DESCRIPTION_LENGTH])
        Link.host_agent(entry).announce(entry, REGISTER_TIMEOUT)
        return fn

    return register


def unregister(agent_id: str) -> bool:
    """Remove this kernel's notebook agent ``agent_id`` from every picker; False if it had
    none of that name. Replies it is writing go on to their end."""
    host = Link.current_host()
    return host is not None and host.remove(agent_id)


agent.unregister = unregister  # jupyter_streamchat.agent.unregister("name")


def _first_line(doc: Optional[str]) -> str:
    return next((line.strip() for line in (doc or "").splitlines() if line.strip()), "")


def _owner() -> str:
    """What registers the agents, in words, for the hub to name in a conflict: the notebook
    (Jupyter sets JPY_SESSION_NAME for a kernel it starts for one), else this process."""
    path = os.environ.get("JPY_SESSION_NAME", "")
    home = os.path.expanduser("~")
    if path and home not in ("", "/") and path.startswith(home + os.sep):
        path = "~" + path[len(home) :]
    label = path or f"process {os.getpid()}"
    return label[-p.MAX_ID_LENGTH :]


@dataclass(eq=False)
class _Entry:
    agent_id: str
    fn: Callable
    name: str
    description: str
    answered: threading.Event = field(default_factory=threading.Event)
    refusal: Optional[tuple] = None  # (code, message) of the hub's ERROR
    waited: bool = False  # a decorator is waiting for the answer
    retakes: int = 0  # tries to register it again after agent_taken on a reconnection

    def frame(self) -> dict:
        return p.request_frame(
            p.RegisterAgent(self.agent_id, self.name, self.description, _owner())
        )


class AgentHost:
    """This kernel's notebook agents and the requests they are running, on one :class:`Link`."""

    def __init__(self, link: Link):
        self.link = link
        self._lock = threading.Lock()
        self._agents: dict = {}  # agent id -> _Entry
        self._calls: dict = {}  # request id -> _Call
        self.generation = 0  # connections made: a call belongs to the one that asked it
        self.sender = _Sender(self)
        self.workers = _Workers(MAX_SYNC_WORKERS)
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    # -- registering (any thread) ----------------------------------------------------------

    def keep(self, entry: _Entry) -> None:
        with self._lock:
            self._agents[entry.agent_id] = entry  # a cell run again replaces its agent

    def busy(self) -> bool:
        with self._lock:
            return bool(self._agents or self._calls)

    def announce(self, entry: _Entry, timeout: float) -> None:
        """Register ``entry`` with the hub; wait for its answer and raise if it is refused."""
        # On the thread the answer comes on, it cannot be waited for.
        entry.waited = waiting = not self.link.on_io_thread()
        try:
            started = self.link.start()  # its on_connect registers every agent kept
            if not started and self.link.transport.connected:
                self.link.send(entry.frame())
            answered = waiting and entry.answered.wait(timeout)
        finally:
            entry.waited = False
        if not waiting:
            return
        if not answered:
            where = getattr(self.link.transport, "server", None)
            log.warning(
                "streamchat: notebook agent %r: no answer from the chat hub%s yet; it "
                "is registered when the connection is back",
                entry.agent_id,
                f" at {where.url}" if where else "",
            )
            return
        if entry.refusal is not None:
            raise AgentRegistrationError(*entry.refusal)

    def remove(self, agent_id: str) -> bool:
        with self._lock:
            entry = self._agents.pop(agent_id, None)
        if entry is None:
            return False
        if self.link.transport.connected:
            self.link.send(p.request_frame(p.UnregisterAgent(agent_id)))
        self.link.close_if_idle()
        return True

    def stop(self) -> None:
        """The link closed: cancel whatever still runs, and let the threads go."""
        with self._lock:
            calls = list(self._calls.values())
            self._calls.clear()
            loop, self._loop = self._loop, None
        for call in calls:
            call.cancel()
        self.sender.stop()
        self.workers.stop()
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)

    # -- frames (the connection's thread) --------------------------------------------------

    def on_connect(self) -> None:
        with self._lock:
            self.generation += 1
            stale = list(self._calls.values())  # their replies ended with the old connection
            self._calls.clear()
            entries = list(self._agents.values())
        for call in stale:
            call.cancel()
        for entry in entries:
            self.link.send(entry.frame())

    def on_frame(self, frame: dict) -> None:
        if not p.is_server_frame(frame):
            log.debug("streamchat: ignoring an agent frame outside the contract: %.200r", frame)
            return
        kind = frame["type"]
        if kind == "AGENT_REQUEST":
            self._start(frame)
        elif kind == "AGENT_CANCEL":
            with self._lock:
                call = self._calls.pop(frame["requestId"], None)
            if call is not None:
                call.cancel()
                self.link.close_if_idle()
        elif kind == "AGENT_REGISTERED":
            with self._lock:
                entry = self._agents.get(frame["agentId"])
            if entry is not None:
                entry.retakes = 0
                entry.answered.set()

    def on_error(self, frame: dict) -> None:
        """An ERROR about an agent (its registration refused) or about a request."""
        agent_id, code = frame.get("agentId"), frame.get("code")
        if isinstance(agent_id, str) and code in REFUSALS:
            self._refused(agent_id, code, frame.get("message", ""))
            return
        request_id = frame.get("requestId")
        with self._lock:
            call = self._calls.pop(request_id, None) if isinstance(request_id, str) else None
        if call is None:
            return
        call.cancel()
        if code != p.UNKNOWN_REQUEST:
            # The hub refused what the agent sent (too large for its limit, say): end the
            # reply with why, rather than leave it waiting.
            self.link.send(
                p.request_frame(
                    p.AgentDone(
                        request_id,
                        f"the chat hub refused this agent's output: {frame.get('message')}"[
                            :MAX_ERROR_CHARS
                        ],
                    )
                )
            )
        self.link.close_if_idle()

    def _refused(self, agent_id: str, code: str, message: str) -> None:
        with self._lock:
            entry = self._agents.get(agent_id)
            if entry is None:
                return
            if code == p.AGENT_TAKEN and not entry.waited and entry.retakes < RETAKE_TRIES:
                entry.retakes += 1  # perhaps by this kernel's previous connection
                retry = threading.Timer(RETAKE_SECONDS, self._retake, args=(entry,))
                retry.daemon = True
                retry.start()
                return
            del self._agents[agent_id]
        entry.refusal = (code, message)
        if not entry.waited:
            log.warning(
                "streamchat: notebook agent %r was refused when registered again: %s",
                agent_id,
                message,
            )
        entry.answered.set()
        self.link.close_if_idle()

    def _retake(self, entry: _Entry) -> None:
        with self._lock:
            current = self._agents.get(entry.agent_id) is entry
        if current and self.link.transport.connected:
            self.link.send(entry.frame())

    def _start(self, frame: dict) -> None:
        request = AgentRequest(
            frame["conversationId"],
            frame["text"],
            [_turn(m) for m in frame["history"]],
            _items(frame.get("context")),
        )
        with self._lock:
            entry = self._agents.get(frame["agentId"])
            if entry is not None:
                call = _Call(self, frame["requestId"], entry, request, self.generation)
                self._calls[call.request_id] = call
        if entry is None:  # unregistered just now
            self.link.send(
                p.request_frame(
                    p.AgentDone(
                        frame["requestId"],
                        f"this kernel has no notebook agent {frame['agentId']!r} any more",
                    )
                )
            )
            return
        fn = entry.fn
        if inspect.isasyncgenfunction(fn) or inspect.iscoroutinefunction(fn):
            call.run_on(self.loop())
        else:
            self.workers.submit(call.run)

    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop that async agents run on: a daemon thread's, started once."""
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(
                    target=self._loop.run_forever, name="streamchat-agents", daemon=True
                ).start()
            return self._loop

    def forget(self, call: "_Call") -> None:
        with self._lock:
            if self._calls.get(call.request_id) is call:
                del self._calls[call.request_id]
        self.link.close_if_idle()


class _Call:
    """One AGENT_REQUEST being answered: the function's run, and what it produced that is not
    sent yet (gathered under ``_cond``, taken by the sender)."""

    def __init__(
        self,
        host: AgentHost,
        request_id: str,
        entry: _Entry,
        request: AgentRequest,
        generation: int,
    ):
        self.host = host
        self.request_id = request_id
        self.entry = entry
        self.request = request
        self.generation = generation
        self.cancelled = threading.Event()
        self._cond = threading.Condition()
        # What was produced, in order: each segment is text and reasoning, then the tool-call
        # states that came after them (an AGENT_OUTPUT's toolCalls follow its text).
        self._segments: list = [_Segment()]
        self._usage: dict = {}
        self._chars = 0
        self._queued = False  # waiting in the sender's list
        self._end: Optional[tuple] = None  # (error or None,) once the function is done
        self._future = None  # an async agent's run, as a concurrent future

    # -- running -------------------------------------------------------------------------

    def run(self) -> None:
        """A sync agent, on a worker thread."""
        if self.cancelled.is_set():
            return
        try:
            result = self.entry.fn(self.request)
            if inspect.isawaitable(result) or hasattr(result, "__aiter__"):
                self.run_on(self.host.loop(), result)  # a plain function returning one
                return
            self._drain(result)
        except BaseException as e:  # noqa: B036 - GeneratorExit, SystemExit from user code
            self._failed(e)
        else:
            self.finish(None)

    def run_on(self, loop: asyncio.AbstractEventLoop, result=None) -> None:
        self._future = asyncio.run_coroutine_threadsafe(self._run_async(result), loop)
        if self.cancelled.is_set():
            self._future.cancel()

    async def _run_async(self, result) -> None:
        if self.cancelled.is_set():
            return
        try:
            if result is None:
                result = self.entry.fn(self.request)
            if inspect.isawaitable(result):
                result = await result
            if hasattr(result, "__aiter__"):
                try:
                    async for item in result:
                        if not self.emit(item):
                            while self.over() and not self.cancelled.is_set():
                                await asyncio.sleep(COALESCE_SECONDS)
                finally:
                    close = getattr(result, "aclose", None)
                    if close is not None:
                        await close()
            else:
                self._drain(result)
        except asyncio.CancelledError:
            return  # stopped: the hub has ended the reply
        except BaseException as e:  # noqa: B036
            self._failed(e)
        else:
            self.finish(None)

    def _drain(self, result) -> None:
        """A sync agent's result: a text, nothing, or pieces (a generator), taken until the
        call is cancelled; the generator is closed then, so its ``finally`` runs."""
        if result is None:
            return
        if isinstance(result, (str, Reasoning, Usage, ToolCall)):
            self.emit(result)
            return
        iterator = iter(result)
        try:
            for item in iterator:
                if self.cancelled.is_set():
                    return
                if not self.emit(item):
                    self._wait_room()
                if self.cancelled.is_set():
                    return
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def _failed(self, e: BaseException) -> None:
        if self.cancelled.is_set():
            return  # what a stopped agent raises on its way out is nobody's concern
        if isinstance(e, AgentError):
            message = str(e) or "AgentError"
        else:
            message = f"{type(e).__name__}: {e}".rstrip(": ")
            _kernel_log().error(
                "notebook agent %r failed:\n%s",
                self.entry.agent_id,
                "".join(traceback.format_exception(e)).rstrip(),
            )
        self.finish(message[:MAX_ERROR_CHARS])

    def cancel(self) -> None:
        self.cancelled.set()
        with self._cond:
            self._cond.notify_all()  # a producer waiting for room
        future = self._future
        if future is not None:
            future.cancel()  # cancels the task at its current await

    # -- what it produced ----------------------------------------------------------------

    def emit(self, item) -> bool:
        """Take one piece the agent yielded; False when the agent should wait for room."""
        if isinstance(item, Reasoning):
            item, thinking = item.text, True
        elif isinstance(item, (str, Usage)):
            thinking = False
        elif isinstance(item, ToolCall):
            if item.status == WAITING:
                raise ValueError(
                    f"tool call {item.id!r}: a notebook agent reports pending, running, "
                    "completed or failed; waiting is the chat's own"
                )
        else:
            raise TypeError(
                "a notebook agent yields str, Reasoning, Usage or ToolCall, not "
                f"{type(item).__name__}"
            )
        with self._cond:
            # The segments are picked under the lock: take() swaps them for a new one.
            last = self._segments[-1]
            if isinstance(item, Usage):
                self._usage.update((k, v) for k, v in vars(item).items() if v is not None)
            elif isinstance(item, ToolCall):
                last.calls.append(item)
                self._chars += _call_chars(item)
            elif item:
                if last.calls:  # text after a call: it goes in a frame after the call's
                    last = _Segment()
                    self._segments.append(last)
                (last.reasoning if thinking else last.text).append(item)
                self._chars += len(item)
            wake, self._queued = not self._queued, True
            room = self._chars <= MAX_BUFFERED_CHARS
        if wake:
            self.host.sender.wake(self)
        return room

    def over(self) -> bool:
        return self._chars > MAX_BUFFERED_CHARS

    def _wait_room(self) -> None:
        with self._cond:
            self._cond.wait_for(
                lambda: self._chars <= MAX_BUFFERED_CHARS or self.cancelled.is_set()
            )

    def finish(self, error: Optional[str]) -> None:
        with self._cond:
            if self._end is not None:
                return
            self._end = (error,)
            wake, self._queued = not self._queued, True
        if wake:
            self.host.sender.wake(self)

    def take(self) -> tuple:
        """-> (the frames that send what was produced since the last take, whether the call
        has ended); called by the sender."""
        with self._cond:
            segments, self._segments = self._segments, [_Segment()]
            usage, self._usage = self._usage, {}
            self._chars = 0
            self._queued = False
            end = self._end
            self._cond.notify_all()
        outputs = []  # (text, reasoning, tool calls), in order
        for segment in segments:
            text, reasoning = "".join(segment.text), "".join(segment.reasoning)
            count = max(-(-len(text) // PIECE_CHARS), -(-len(reasoning) // PIECE_CHARS))
            for i in range(count):
                piece = slice(i * PIECE_CHARS, (i + 1) * PIECE_CHARS)
                outputs.append((text[piece], reasoning[piece], []))
            groups = _call_groups(segment.calls)
            if groups and count:  # the first calls ride on the frame of the text before them
                last_text, last_reasoning, _ = outputs[-1]
                outputs[-1] = (last_text, last_reasoning, groups.pop(0))
            outputs.extend(("", "", group) for group in groups)
        if usage and not outputs:
            outputs.append(("", "", []))
        frames = [
            p.request_frame(
                p.AgentOutput(
                    self.request_id,
                    text,
                    reasoning,
                    (usage or None) if i == len(outputs) - 1 else None,
                    calls or None,
                )
            )
            for i, (text, reasoning, calls) in enumerate(outputs)
        ]
        if end is not None:
            frames.append(p.request_frame(p.AgentDone(self.request_id, end[0])))
        return frames, end is not None


class _Segment:
    """Text and reasoning an agent produced, then the tool-call states it yielded after them."""

    __slots__ = ("text", "reasoning", "calls")

    def __init__(self):
        self.text: list = []
        self.reasoning: list = []
        self.calls: list = []


def _call_chars(call: ToolCall) -> int:
    """About how many characters a tool-call state takes in a frame."""
    size = 100 + len(call.id) + len(call.name) + len(call.arguments or "")
    for text in (call.title, call.kind, call.result, call.error):
        size += len(text or "")
    if call.diff:
        size += sum(len(str(v)) for v in call.diff.values())
    return size


def _call_groups(calls: list) -> list:
    """``calls`` in order, in groups that each fit one AGENT_OUTPUT."""
    groups, group, chars = [], [], 0
    for call in calls:
        size = _call_chars(call)
        if group and (len(group) >= MAX_FRAME_CALLS or chars + size > MAX_FRAME_CALL_CHARS):
            groups.append(group)
            group, chars = [], 0
        group.append(call)
        chars += size
    if group:
        groups.append(group)
    return groups


def _items(value) -> list:
    """An AGENT_REQUEST's ``context``: the items, as dicts (what is not one is left out)."""
    return (
        [dict(item) for item in value if isinstance(item, dict)] if isinstance(value, list) else []
    )


def _turn(message: dict) -> dict:
    """One earlier message of an AGENT_REQUEST's history, as ``AgentRequest.history`` has it."""
    turn = {"role": message["role"], "text": message["text"]}
    context = _items(message.get("context"))
    if context:
        turn["context"] = context
    return turn


class _Sender:
    """One thread sending every call's output: each round takes all that the calls produced
    since the last, one frame (or a few, for a lot of text) per call, then waits a moment so
    that a fast agent's tokens make few frames while a slow agent's go out at once."""

    def __init__(self, host: AgentHost):
        self.host = host
        self._cond = threading.Condition()
        self._ready: list = []
        self._thread: Optional[threading.Thread] = None
        self._stopped = False

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def wake(self, call: _Call) -> None:
        with self._cond:
            if self._stopped:
                return
            self._ready.append(call)
            self._cond.notify()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="streamchat-agent-sender", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        link = self.host.link
        while True:
            with self._cond:
                while not self._ready and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                calls, self._ready = self._ready, []
            sent = False
            for call in calls:
                try:
                    frames, ended = call.take()
                    live = not call.cancelled.is_set() and call.generation == self.host.generation
                    if live and not link.transport.connected:
                        call.cancel()  # its reply ended with the connection
                        live, ended = False, True
                    if live:
                        for frame in frames:
                            link.send(frame)
                        sent = sent or bool(frames)
                    if ended:
                        self.host.forget(call)
                except Exception:
                    log.exception("streamchat: sending a notebook agent's output failed")
            if sent:
                time.sleep(COALESCE_SECONDS)
                backlog = getattr(link.transport, "backlog", 0)
                while backlog > MAX_BACKLOG and link.transport.connected:
                    time.sleep(COALESCE_SECONDS)
                    backlog = link.transport.backlog


class _Workers:
    """Daemon threads running sync agents, at most ``most`` (daemons: an agent still running
    never keeps the kernel from exiting)."""

    def __init__(self, most: int):
        self.most = most
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._count = 0
        self._idle = 0

    def stop(self) -> None:
        with self._lock:
            for _ in range(self._count):
                self._jobs.put(None)

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)
        with self._lock:
            if self._idle <= 0 and self._count < self.most:
                self._count += 1
                threading.Thread(
                    target=self._work, name=f"streamchat-agent-{self._count}", daemon=True
                ).start()
            else:
                self._idle -= 1  # that one is taken

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:
                log.exception("streamchat: a notebook agent's worker failed")
            with self._lock:
                self._idle += 1


_stderr_handler: Optional[logging.Handler] = None


def _kernel_log() -> logging.Logger:
    """The kernel's own log: its process's stderr (which the Jupyter server's log shows), not
    the output of whichever cell happens to run, where ipykernel sends ``sys.stderr``."""
    global _stderr_handler
    if _stderr_handler is None and sys.__stderr__ is not None:
        _stderr_handler = logging.StreamHandler(sys.__stderr__)
        _stderr_handler.setFormatter(logging.Formatter("[%(levelname)s %(name)s] %(message)s"))
        log.addHandler(_stderr_handler)
    return log
