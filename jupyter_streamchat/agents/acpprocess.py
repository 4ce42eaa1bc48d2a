"""One ACP agent program running as a child process, spoken to over its stdin and stdout
through the ``agent-client-protocol`` SDK's client side.

The agent is untrusted, so what it may cost is bounded here:

- one JSON-RPC message (one line on its stdout) is at most ``max_message_bytes``: a longer
  line stops the process, and the reply says why (the SDK's own reader has no such bound);
- what it sends during a turn waits in a queue that the reply drains; while the queue holds
  more than :data:`QUEUE_CHARS`, its stdout is not read, so the agent blocks on a full pipe
  rather than the server filling its memory;
- a few file requests and permission questions at a time;
- the last ``stderr_bytes`` of its stderr are kept, for the message when it dies.

The SDK's connection carries initialize, session/new, the prompt, cancel, and the agent's
requests (permissions, files). ``session/update`` notifications, the bulk of the traffic (one
per token), are read straight off the line, in order, with the SDK's schema models checking
tool calls: the SDK would spend a task, a telemetry span and a validation on each.

It runs in a process group of its own, so stopping it stops what it started too (a coding
agent runs shells, language servers, MCP servers).
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import signal
import weakref
from collections import deque
from typing import Optional

from acp import PROTOCOL_VERSION, RequestError, text_block  # noqa: F401 (for acp.py)
from pydantic import ValidationError
from acp.client.connection import ClientSideConnection
from acp.schema import (
    AgentMessageChunk,
    AgentThoughtChunk,
    AllowedOutcome,
    ClientCapabilities,
    DeniedOutcome,
    FileSystemCapabilities,
    Implementation,
    ReadTextFileResponse,
    RequestPermissionResponse,
    ToolCallProgress,
    ToolCallStart,
    WriteTextFileResponse,
)

from .. import redact
from .acpfiles import FileRefused, Files
from .base import AgentError, Reasoning

log = logging.getLogger("jupyter_streamchat")

# Above this many characters waiting for the reply, the agent's stdout is not read.
QUEUE_CHARS = 1024 * 1024
# What a queued update other than text counts for, beside the text it carries.
UPDATE_CHARS = 256
# File requests served at once, and permission questions open at once, per process.
FILE_SLOTS = 4
OPEN_QUESTIONS = 16
# Messages read in one go before the reader lets the handlers (and everyone else) run.
READ_BURST = 256
# Lines of stderr quoted when the agent dies, and how much of each.
STDERR_LINES = 10
STDERR_LINE_CHARS = 200
# Seconds a process is given to exit after its stdin closes, then after SIGTERM.
EXIT_GRACE = 2.0

END = object()  # the turn's prompt request has ended (see Turn.task for how)


class Permission:
    """The agent asks whether a tool call may run; the reply answers through ``answer``."""

    __slots__ = ("tool_call", "options", "answer")

    def __init__(self, tool_call, options, answer: asyncio.Future):
        self.tool_call = tool_call
        self.options = options
        self.answer = answer  # result: the chosen option id, or None for "cancelled"


class Turn:
    """One prompt turn: what the agent sends during it, in order, for the reply to read.

    Items are ``str`` (answer text), :class:`Reasoning`, tool-call updates as the SDK gives
    them, :class:`Permission`, and finally :data:`END`."""

    def __init__(self, process: "AgentProcess"):
        self.process = process
        self.items: deque = deque()
        self.chars = 0
        self.wake = asyncio.Event()
        self.task: Optional[asyncio.Task] = None  # the session/prompt request
        self.questions: set = set()  # Permission answers not given yet
        self.abandoned = False  # the reply went away (stop, error): nobody reads the items

    def push(self, item, chars: int = UPDATE_CHARS) -> None:
        if self.abandoned and item is not END:
            return
        self.items.append(item)
        self.chars += chars
        self.wake.set()
        if self.chars > QUEUE_CHARS:
            self.process.transport.hold()

    async def take(self) -> list:
        """Everything queued so far (at least one item), oldest first."""
        while not self.items:
            self.wake.clear()
            await self.wake.wait()
        items = list(self.items)
        self.items.clear()
        self.chars = 0
        self.process.transport.release()
        return items

    @property
    def finished(self) -> bool:
        return self.task is not None and self.task.done()

    def abandon(self) -> None:
        """Nobody needs what the agent sends any more (a stop), or it cannot send more (its
        process is gone): drop it, answer its questions "cancelled"; a reader still there
        gets END once the prompt request has ended."""
        self.abandoned = True
        self.items.clear()
        self.chars = 0
        if self.finished:
            self.items.append(END)
            self.wake.set()
        self.process.transport.release()
        for answer in list(self.questions):
            if not answer.done():
                answer.set_result(None)


class LineTransport:
    """The SDK's message transport over the process's pipes: one JSON object per line, each at
    most ``max_bytes``; reading pauses while :meth:`hold` is in force."""

    def __init__(self, process: asyncio.subprocess.Process, max_bytes: int, on_broken, on_update):
        self.process = process
        self.max_bytes = max_bytes
        self.on_broken = on_broken  # called with a reason when the agent breaks the protocol
        self.on_update = on_update  # called with the params of each session/update
        self.eof = False
        self._after_request = False
        self._open = asyncio.Event()
        self._open.set()
        self._burst = 0
        self._garbage = 0

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def send(self, message: dict) -> None:
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        stdin = self.process.stdin
        try:
            if stdin is None or stdin.is_closing():
                raise ConnectionError("the agent's stdin is closed")
            stdin.write(data)
            await stdin.drain()
        except (ConnectionError, OSError, RuntimeError) as e:
            if "method" not in message:
                return  # an answer to an agent that is gone: nobody to tell
            raise ConnectionError(f"cannot write to the agent: {e}") from None

    async def receive(self) -> Optional[dict]:
        stdout = self.process.stdout
        while True:
            if not self._open.is_set():
                await self._open.wait()
            self._burst += 1
            if self._burst >= READ_BURST or self._after_request:
                # After a request, its handler runs before anything read later is queued: a
                # permission question keeps its place among the updates.
                self._burst = 0
                self._after_request = False
                await asyncio.sleep(0)
            try:
                line = await stdout.readuntil(b"\n")
            except asyncio.IncompleteReadError as e:
                line = e.partial
                if not line.strip():
                    self.eof = True
                    return None
            except asyncio.LimitOverrunError:
                self.eof = True
                self.on_broken(f"sent a message larger than {self.max_bytes:,} bytes")
                return None
            except (ConnectionError, OSError):
                self.eof = True
                return None
            if not line.strip():
                continue
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if not isinstance(message, dict):
                # A stray print on stdout: skipped, as the SDK does; a stream of them is not.
                self._garbage += 1
                if self._garbage <= 3:
                    log.warning("streamchat: an ACP agent wrote a line that is not JSON-RPC")
                if self._garbage > 1000:
                    self.eof = True
                    self.on_broken("wrote more than 1000 lines that are not JSON-RPC")
                    return None
                continue
            method = message.get("method")
            if method == "session/update" and "id" not in message:
                # The bulk of the traffic (a message per token) is read here, in order, rather
                # than through a task, a telemetry span and a validation each in the SDK.
                self.on_update(message.get("params"))
                continue
            self._after_request = method is not None and "id" in message
            return message

    async def close(self) -> None:
        stdin = self.process.stdin
        if stdin is not None and not stdin.is_closing():
            try:
                stdin.close()
            except (OSError, RuntimeError):
                pass


class StderrTail:
    """The last ``size`` bytes the agent wrote to stderr."""

    def __init__(self, stream: asyncio.StreamReader, size: int, label: str):
        self.size = size
        self.data = bytearray()
        self.task = asyncio.create_task(self._read(stream, label), name=f"stderr of {label}")

    async def _read(self, stream: asyncio.StreamReader, label: str) -> None:
        try:
            while True:
                chunk = await stream.read(16 * 1024)
                if not chunk:
                    return
                self.data += chunk
                if len(self.data) > self.size:
                    del self.data[: len(self.data) - self.size]
                if log.isEnabledFor(logging.DEBUG):
                    log.debug(
                        "streamchat: %s stderr: %s", label, chunk[:2000].decode("utf-8", "replace")
                    )
        except (ConnectionError, OSError):
            return

    def lines(self) -> str:
        """Its last lines, cut and redacted, for a message to the user."""
        text = self.data.decode("utf-8", "replace")
        lines = [line.rstrip() for line in text.splitlines() if line.strip()][-STDERR_LINES:]
        return "\n".join(redact.cut(line, STDERR_LINE_CHARS) for line in lines)


# Processes still running, to be stopped if the server exits without closing its agents.
_live: "weakref.WeakSet[AgentProcess]" = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for agent_process in list(_live):
        agent_process.signal(signal.SIGTERM)


class AgentProcess:
    """An agent program, started, initialized, with one session, answering prompts one turn
    at a time (hold :attr:`lock` for a turn)."""

    def __init__(
        self,
        command: list,
        cwd: str,
        env: dict,
        files: Files,
        label: str,
        max_message_bytes: int,
        stderr_bytes: int,
    ):
        self.command = list(command)
        self.cwd = cwd
        self.env = env
        self.files = files
        self.label = label  # how the user knows this agent, in messages
        self.max_message_bytes = max_message_bytes
        self.stderr_bytes = stderr_bytes
        self.lock = asyncio.Lock()
        self.process: Optional[asyncio.subprocess.Process] = None
        self.transport: Optional[LineTransport] = None
        self.stderr: Optional[StderrTail] = None
        self.conn: Optional[ClientSideConnection] = None
        self.session_id: Optional[str] = None
        self.turn: Optional[Turn] = None
        self.turns = 0  # prompts sent in this session
        self.broken: Optional[str] = None  # why we stopped it, when it broke the protocol
        self.closing = False
        self.starting: Optional[asyncio.Future] = None  # set by the pool: start()'s task
        self._file_slots = asyncio.Semaphore(FILE_SLOTS)

    # -- life -----------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return (
            self.process is not None
            and self.process.returncode is None
            and not self.transport.eof
            and not self.closing
        )

    @property
    def ended(self) -> bool:
        """Started once and no longer usable."""
        return self.process is not None and not self.alive

    async def start(self, timeout: float) -> None:
        """Start the program, initialize, open a session; :class:`AgentError` saying why not."""
        program = self.command[0] if self.command else ""
        if not program:
            raise AgentError(
                f"The agent {self.label} has no command configured: set ACPAgent.command (a "
                'list: the program and its arguments), or add agents with "class": "acp" and '
                "their command to StreamChatApp.agents."
            )
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=self.cwd,
                env=self.env,
                limit=self.max_message_bytes,
                start_new_session=os.name == "posix",
            )
        except FileNotFoundError:
            raise AgentError(
                f"The agent {self.label} cannot start: its command {program!r} was not found. "
                "Install it, or set the agent's command (a list: the program and its "
                "arguments) in the server's configuration."
            ) from None
        except OSError as e:
            raise AgentError(
                f"The agent {self.label} cannot start: running {program!r} failed: "
                f"{e.strerror or e}."
            ) from None
        _live.add(self)
        self.transport = LineTransport(
            self.process, self.max_message_bytes, self._broke, self.on_update
        )
        self.stderr = StderrTail(self.process.stderr, self.stderr_bytes, self.label)
        self.conn = ClientSideConnection(ClientSide(self), self.transport)
        try:
            session = await asyncio.wait_for(self._handshake(), timeout)
            self.session_id = session.session_id
        except asyncio.TimeoutError:
            await self.close(grace=0)
            raise AgentError(
                f"The agent {self.label} did not get ready within {timeout:g} s "
                "(initialize and session/new); it was stopped."
            ) from None
        except RequestError as e:
            await self.close()
            raise AgentError(f"The agent {self.label} cannot start a session: {said(e)}") from None
        except asyncio.CancelledError:
            await asyncio.shield(self.close(grace=0))
            raise
        except Exception:  # the connection closed: the process ended, or broke the protocol
            raise AgentError(await self.failure("as it started")) from None

    async def _handshake(self):
        await self.conn.initialize(
            protocol_version=PROTOCOL_VERSION,
            client_capabilities=ClientCapabilities(
                fs=FileSystemCapabilities(read_text_file=True, write_text_file=True),
                terminal=False,
            ),
            client_info=Implementation(
                name="jupyter-streamchat", title="Jupyter streamchat", version=_version()
            ),
        )
        return await self.conn.new_session(cwd=self.cwd, mcp_servers=[])

    def _broke(self, reason: str) -> None:
        self.broken = reason
        self.kill()

    async def failure(self, when: str) -> str:
        """Why the process stopped answering, for the user: how it ended, its last words."""
        if self.process is not None and self.process.returncode is None:
            try:
                await asyncio.wait_for(self.process.wait(), EXIT_GRACE)
            except asyncio.TimeoutError:
                self.kill()  # it closed its stdout but lives on: of no more use
                try:
                    await asyncio.wait_for(self.process.wait(), EXIT_GRACE)
                except asyncio.TimeoutError:
                    pass
        if self.stderr is not None:
            await asyncio.wait({self.stderr.task}, timeout=1.0)
        if self.broken:
            said = f"The agent {self.label} {self.broken}; it was stopped {when}."
        else:
            said = f"The agent {self.label} {_exit(self.process)} {when}."
        tail = self.stderr.lines() if self.stderr is not None else ""
        if tail:
            said += f" The last lines it wrote to stderr:\n{tail}"
        await self._disconnect()
        return said

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process and everything it started."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        try:
            if os.name == "posix":
                os.killpg(process.pid, signum)
            elif signum == signal.SIGTERM:
                process.terminate()
            else:
                process.kill()
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self) -> None:
        self.closing = True
        self.signal(signal.SIGKILL if os.name == "posix" else signal.SIGTERM)

    async def close(self, grace: float = EXIT_GRACE) -> None:
        """End the process: its stdin closed (a well-behaved agent exits), then SIGTERM, then
        SIGKILL, ``grace`` seconds apart."""
        self.closing = True
        process = self.process
        if process is None:
            return
        if self.transport is not None:
            await self.transport.close()
        for signum in (None, signal.SIGTERM, signal.SIGKILL):
            if signum is not None:
                self.signal(signum if os.name == "posix" else signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace if signum != signal.SIGKILL else 5)
                break
            except asyncio.TimeoutError:
                continue
        if process.returncode is not None and os.name == "posix":
            try:  # what it started and left behind in its group
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        await self._disconnect()

    async def _disconnect(self) -> None:
        _live.discard(self)
        if self.turn is not None:
            self.turn.abandon()
        if self.conn is not None:
            try:
                await asyncio.wait_for(self.conn.close(), EXIT_GRACE)
            except (asyncio.TimeoutError, Exception):
                pass
        if self.stderr is not None and not self.stderr.task.done():
            self.stderr.task.cancel()

    # -- turns ----------------------------------------------------------------------------

    def begin(self, prompt: list) -> Turn:
        """Send a prompt (content blocks); its updates arrive in the returned turn."""
        turn = self.turn = Turn(self)
        self.turns += 1
        turn.task = asyncio.create_task(
            self.conn.prompt(session_id=self.session_id, prompt=prompt),
            name=f"prompt of {self.label}",
        )
        turn.task.add_done_callback(lambda _: turn.push(END, 0))
        return turn

    def end(self, turn: Turn) -> None:
        if self.turn is turn:
            self.turn = None

    async def settle(self, turn: Turn, timeout: float) -> None:
        """After the reply went away mid-turn: ask the agent to cancel, and stop the process
        if the turn has not ended within ``timeout`` seconds."""
        turn.abandon()
        try:
            if not turn.finished and self.alive:
                try:
                    await asyncio.wait_for(self.conn.cancel(session_id=self.session_id), timeout)
                except (ConnectionError, asyncio.TimeoutError, Exception):
                    pass
                await asyncio.wait({turn.task}, timeout=timeout)
            if not turn.finished:
                log.info(
                    "streamchat: %s did not end its turn within %g s of session/cancel; "
                    "stopping it (the next message starts it again)",
                    self.label,
                    timeout,
                )
                await self.close(grace=0)
            if turn.task.done() and not turn.task.cancelled():
                turn.task.exception()  # retrieved: it was cancelled or failed, as asked
        finally:
            self.end(turn)

    # -- what the agent asks of the client ---------------------------------------------------

    def on_update(self, params) -> None:
        """A ``session/update`` notification's params, as read off the line."""
        turn = self.turn
        if turn is None or not isinstance(params, dict):
            return
        if params.get("sessionId") != self.session_id:
            return
        update = params.get("update")
        kind = update.get("sessionUpdate") if isinstance(update, dict) else None
        if kind in ("agent_message_chunk", "agent_thought_chunk"):
            content = update.get("content")
            if isinstance(content, dict) and content.get("type") == "text":
                text = content.get("text")
            else:
                model = AgentMessageChunk if kind == "agent_message_chunk" else AgentThoughtChunk
                chunk = _checked(model, update)
                text = text_of(chunk.content) if chunk is not None else None
            if not text or not isinstance(text, str):
                return
            if kind == "agent_message_chunk":
                turn.push(text, len(text))
            else:
                turn.push(Reasoning(text), len(text))
        elif kind in ("tool_call", "tool_call_update"):
            call = _checked(ToolCallStart if kind == "tool_call" else ToolCallProgress, update)
            if call is not None:
                turn.push(call, UPDATE_CHARS + _size_of(call))
        # Others (plans, command lists, modes, usage) are not shown.

    async def ask(self, session_id: str, tool_call, options) -> RequestPermissionResponse:
        turn = self.turn
        cancelled = RequestPermissionResponse(outcome=DeniedOutcome(outcome="cancelled"))
        if (
            turn is None
            or turn.abandoned
            or session_id != self.session_id
            or len(turn.questions) >= OPEN_QUESTIONS
        ):
            return cancelled
        answer = asyncio.get_running_loop().create_future()
        turn.questions.add(answer)
        try:
            turn.push(Permission(tool_call, options, answer), UPDATE_CHARS + _size_of(tool_call))
            option_id = await answer
        finally:
            turn.questions.discard(answer)
        if option_id is None:
            return cancelled
        return RequestPermissionResponse(
            outcome=AllowedOutcome(outcome="selected", option_id=option_id)
        )

    async def read_file(self, session_id: str, path: str, line, limit) -> ReadTextFileResponse:
        self._own(session_id)
        async with self._file_slots:
            try:
                text = await asyncio.to_thread(self.files.read, path, line, limit)
            except FileRefused as e:
                raise RequestError(e.code, str(e), {"path": path}) from None
        return ReadTextFileResponse(content=text)

    async def write_file(self, session_id: str, path: str, content: str) -> WriteTextFileResponse:
        self._own(session_id)
        async with self._file_slots:
            try:
                await self.files.write(path, content)
            except FileRefused as e:
                raise RequestError(e.code, str(e), {"path": path}) from None
        log.info("streamchat: %s wrote %s", self.label, path)
        return WriteTextFileResponse()

    def _own(self, session_id: str) -> None:
        if session_id != self.session_id:
            raise RequestError(-32602, "unknown session", {"sessionId": session_id})


class ClientSide:
    """The client methods the SDK calls for the agent's requests and notifications."""

    def __init__(self, process: AgentProcess):
        self._process = process

    async def session_update(self, session_id, update, **kwargs):
        pass  # never called: LineTransport hands these to AgentProcess.on_update

    async def request_permission(self, session_id, tool_call, options, **kwargs):
        return await self._process.ask(session_id, tool_call, options)

    async def read_text_file(self, session_id, path, line=None, limit=None, **kwargs):
        return await self._process.read_file(session_id, path, line, limit)

    async def write_text_file(self, session_id, path, content, **kwargs):
        return await self._process.write_file(session_id, path, content)

    async def create_terminal(self, *args, **kwargs):
        raise RequestError(-32601, "this client offers no terminal (clientCapabilities.terminal)")


# -- small functions ------------------------------------------------------------------------


def text_of(block) -> str:
    """A content block as answer text: text as it is, a link to a resource as a link, other
    media as a short note."""
    kind = getattr(block, "type", None)
    if kind == "text":
        return block.text
    if kind == "resource_link":
        return f"[{block.title or block.name}]({block.uri})"
    if kind == "resource":
        text = getattr(block.resource, "text", None)
        return text if isinstance(text, str) else f"*[{block.resource.uri}]*"
    if kind in ("image", "audio"):
        return f"*[{kind}: {block.mime_type}]*"
    return ""


def _checked(model, update: dict):
    """``update`` as the SDK's ``model``, or None when it is not one."""
    try:
        return model.model_validate(update)
    except ValidationError:
        return None


def _size_of(update) -> int:
    """Characters a tool-call update carries (its content and input), roughly."""
    size = len(getattr(update, "title", None) or "")
    for item in getattr(update, "content", None) or ():
        if getattr(item, "type", None) == "diff":
            size += len(item.new_text or "") + len(item.old_text or "")
        else:
            size += len(text_of(getattr(item, "content", None)))
    raw = getattr(update, "raw_input", None)
    if raw is not None:
        size += len(raw) if isinstance(raw, str) else 1024
    return size


def said(error: RequestError) -> str:
    """A JSON-RPC error from the agent, in its own words (cut, no secret)."""
    message = str(error) or "an error"
    data = error.data
    if isinstance(data, dict):
        detail = data.get("details") or data.get("message")
        if isinstance(detail, str) and detail and detail not in message:
            message = f"{message}: {detail}"
    elif isinstance(data, str) and data:
        message = f"{message}: {data}"
    return redact.cut(message, 600)


def _exit(process) -> str:
    code = process.returncode if process is not None else None
    if code is None:
        return "stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with status {code}"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("jupyter-streamchat")
    except Exception:
        return "0"
