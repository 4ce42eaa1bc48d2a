"""The ``acp`` agent: a coding agent that speaks the Agent Client Protocol over stdio (Claude
Code through ``claude-code-acp``, Gemini CLI with ``--experimental-acp``, Goose, ...), run as a
child process of the Jupyter server, through the ``agent-client-protocol`` SDK's client side.

Configure it as named agents, one per program::

    c.StreamChatApp.agents = {"claude": {"class": "acp", "command": ["claude-code-acp"]}}

What it shows: the agent's message chunks as the answer, its thought chunks as thinking, its
tool calls as tool-call cards (title, kind, status, input as arguments, text output as the
result, a file edit as a diff). A permission the agent asks for is asked of the user
(:meth:`AgentRequest.approve`) and answered with the agent's own option of that kind.

Processes: one per conversation (one ACP session in it), kept while it is in use and ended
after ``idle_timeout`` idle seconds, at most ``max_processes`` at once (the least recently
used idle one makes room). A new process gets the conversation so far in its first prompt.
Stop sends ``session/cancel``; an agent that has not ended its turn ``cancel_timeout`` seconds
later is killed, with what it started, and the next message starts a fresh one: a wedged
agent is restarted from the chat, without restarting Jupyter.

Files the agent asks the client for (``fs/read_text_file``, ``fs/write_text_file``) are
confined to ``root_dir`` (``acpfiles.py``); notebooks are written through Jupyter's
ContentsManager. There is no terminal capability: the agent runs commands its own way.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
from collections import OrderedDict
from contextlib import aclosing
from dataclasses import replace
from typing import TYPE_CHECKING, Optional

from traitlets import Dict, Float, Int, List, Unicode, default, observe

from .. import redact
from .acpfiles import Files
from .base import (
    ALLOW_ALWAYS,
    ALLOW_ONCE,
    COMPLETED,
    FAILED,
    PENDING,
    REJECT,
    RUNNING,
    Agent,
    AgentError,
    AgentRequest,
    Reasoning,
    ToolCall,
    Usage,
)
from .context import context_block

if TYPE_CHECKING:
    from .acpprocess import AgentProcess


def _sdk():
    """The ACP SDK's side of the agent (``acpprocess``), imported on first use: the SDK costs
    a server's start-up some 400 ms, and most servers run no ACP agent. An optional
    dependency: without it the agents are still listed, and their replies say what to do."""
    from . import acpprocess

    return acpprocess


# ACP's tool-call statuses, as the hub knows them.
_STATUS = {"pending": PENDING, "in_progress": RUNNING, "completed": COMPLETED, "failed": FAILED}
# The permission option kinds that carry out a decision, the closest first.
_OPTION_KINDS = {
    ALLOW_ONCE: ("allow_once", "allow_always"),
    ALLOW_ALWAYS: ("allow_always", "allow_once"),
    REJECT: ("reject_once", "reject_always"),
}
# How a turn that did not simply end is told at the end of the answer.
_STOP_NOTES = {
    "max_tokens": "\n\n*[cut at the token limit]*",
    "max_turn_requests": "\n\n*[the agent stopped: too many model requests in one turn]*",
    "refusal": "\n\n*[the agent refused to go on]*",
    "cancelled": "\n\n*[the agent cancelled its turn]*",
}
# Tool kinds as the hub knows them (ACP's others, such as switch_mode, show as "other").
_KINDS = frozenset(
    {"read", "edit", "delete", "move", "search", "execute", "think", "fetch", "other"}
)
# A tool call's fields (its result, arguments, each side of a diff) are cut to this.
FIELD_CHARS = 64 * 1024
DIFF_CHARS = 256 * 1024
CUT = "\n… [cut]"


class ACPAgent(Agent):
    """A coding agent speaking the Agent Client Protocol, run as a child process."""

    command = List(
        Unicode(),
        help="""The agent program and its arguments, e.g. ["claude-code-acp"] or ["gemini",
        "--experimental-acp"]. Looked up on the server's PATH.""",
    ).tag(config=True)
    env = Dict(
        value_trait=Unicode(),
        help="""Environment variables set for the agent program, over the server's own
        environment (which it inherits, as a terminal would).""",
    ).tag(config=True)
    root_dir = Unicode(
        help="""The directory the agent works in (its session's cwd) and the only one whose
        files it may read or write through the client. Default: the Jupyter server's root
        dir, else the current directory.""",
    ).tag(config=True)
    cancel_timeout = Float(
        5.0,
        help="""Seconds the agent has to end its turn after a stop (session/cancel) before
        its process is killed; the next message starts a new one.""",
    ).tag(config=True)
    idle_timeout = Float(
        600.0,
        help="Seconds a conversation's agent process may sit idle before it is ended.",
    ).tag(config=True)
    max_processes = Int(
        8,
        help="""Most agent processes running at once (one per conversation); a new one ends
        the least recently used idle one.""",
    ).tag(config=True)
    startup_timeout = Float(
        60.0,
        help="Seconds a new agent process has to answer initialize and session/new.",
    ).tag(config=True)
    max_message_bytes = Int(
        16 * 1024 * 1024,
        help="""Largest JSON-RPC message accepted from the agent, in bytes; a larger one
        stops the process and ends the reply with an error.""",
    ).tag(config=True)
    max_file_bytes = Int(
        8 * 1024 * 1024,
        help="Largest file the agent may read or write through the client, in bytes.",
    ).tag(config=True)
    max_reply_chars = Int(
        4_000_000,
        help="""Most characters (answer, thinking and tool-call output) one reply may stream;
        past it the reply ends with an error and the agent's turn is cancelled.""",
    ).tag(config=True)
    max_tool_calls = Int(
        1000,
        help="Most tool calls in one reply; past it the reply ends with an error.",
    ).tag(config=True)
    stderr_bytes = Int(
        16 * 1024,
        help="""How much of the end of the agent's stderr is kept, to quote its last lines
        when it fails.""",
    ).tag(config=True)

    @default("root_dir")
    def _default_root_dir(self):
        serverapp = getattr(self.parent, "serverapp", None)
        root = getattr(serverapp, "root_dir", None)
        return os.path.abspath(root) if root else os.getcwd()

    @default("description")
    def _default_description(self):
        if not self.command:
            return "Coding agent over ACP (no command configured)"
        return f"Coding agent over ACP: {shlex.join(self.command)}"

    def __init__(self, agent_id: str, **kwargs):
        super().__init__(agent_id, **kwargs)
        redact.register_config({"env": dict(self.env)})
        self._processes: "OrderedDict[str, AgentProcess]" = OrderedDict()
        self._idle: dict = {}  # conversation id -> TimerHandle of its idle check
        self._tasks: set = set()  # settling and closing in the background
        self._closed = False

    @observe("env")
    def _env_changed(self, change):
        redact.register_config({"env": dict(change["new"])})

    @property
    def offered(self) -> bool:
        # The plug-in's own instance runs nothing until ACPAgent.command is set; named agents
        # (with a command, found or not) are listed whatever it is.
        return bool(self.command)

    @property
    def label(self) -> str:
        program = os.path.basename(self.command[0]) if self.command else self.agent_id
        return f"{self.agent_id!r} ({program})" if program != self.agent_id else repr(program)

    # -- processes ------------------------------------------------------------------------

    def _new_process(self) -> AgentProcess:
        serverapp = getattr(self.parent, "serverapp", None)
        contents_manager = getattr(serverapp, "contents_manager", None)
        root = os.path.abspath(os.path.expanduser(self.root_dir))
        return _sdk().AgentProcess(
            self.command,
            cwd=root,
            env={**os.environ, **self.env},
            files=Files(root, self.max_file_bytes, contents_manager),
            label=self.label,
            max_message_bytes=self.max_message_bytes,
            stderr_bytes=self.stderr_bytes,
        )

    async def _process_for(self, conversation_id: str) -> AgentProcess:
        """The conversation's process, started when it has none (or its last one ended)."""
        try:
            _sdk()
        except ImportError as e:
            raise AgentError(
                f"The agent {self.label} needs the Agent Client Protocol SDK "
                f'(pip install "jupyter-streamchat[acp]"): {e}'
            ) from None
        if self._closed:
            raise AgentError(f"The agent {self.label} is shutting down with the server.")
        proc = self._processes.get(conversation_id)
        if proc is not None and proc.ended:
            self._forget(conversation_id, proc)
            self._background(proc.close())  # it exited: what is left of it
            proc = None
        if proc is None:
            self._make_room()
            proc = self._processes[conversation_id] = self._new_process()
            proc.starting = asyncio.ensure_future(proc.start(self.startup_timeout))
        self._processes.move_to_end(conversation_id)
        self._cancel_idle(conversation_id)
        try:
            await asyncio.shield(proc.starting)
        except AgentError:
            self._forget(conversation_id, proc)
            raise
        return proc

    def _make_room(self) -> None:
        live = [(cid, p) for cid, p in self._processes.items() if not p.ended]
        if len(live) < self.max_processes:
            return
        for cid, proc in live:  # least recently used first
            if not proc.lock.locked() and proc.starting is not None and proc.starting.done():
                self._forget(cid, proc)
                self._background(proc.close())
                return
        raise AgentError(
            f"The agent {self.label} already runs {len(live)} processes, all busy "
            f"(max_processes); try again when one of their replies ends."
        )

    def _forget(self, conversation_id: str, proc: AgentProcess) -> None:
        if self._processes.get(conversation_id) is proc:
            del self._processes[conversation_id]
        self._cancel_idle(conversation_id)

    def _cancel_idle(self, conversation_id: str) -> None:
        handle = self._idle.pop(conversation_id, None)
        if handle is not None:
            handle.cancel()

    def _idle_from_now(self, conversation_id: str, proc: AgentProcess) -> None:
        self._cancel_idle(conversation_id)
        if self._processes.get(conversation_id) is not proc or self._closed:
            return
        loop = asyncio.get_running_loop()
        self._idle[conversation_id] = loop.call_later(
            self.idle_timeout, self._end_idle, conversation_id, proc
        )

    def _end_idle(self, conversation_id: str, proc: AgentProcess) -> None:
        self._idle.pop(conversation_id, None)
        if self._processes.get(conversation_id) is proc and not proc.lock.locked():
            self.log.debug("streamchat: ending idle %s of %s", self.label, conversation_id)
            self._forget(conversation_id, proc)
            self._background(proc.close())

    def _background(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.warning(
                "streamchat: ending a process of %s failed: %r", self.label, task.exception()
            )

    def processes(self) -> dict:
        """Conversation id -> process id of the live processes (for tests and diagnostics)."""
        return {
            cid: p.process.pid for cid, p in self._processes.items() if p.process and not p.ended
        }

    async def close(self) -> None:
        """End every process (when the server shuts down); bounded by a few seconds."""
        self._closed = True
        for cid in list(self._idle):
            self._cancel_idle(cid)
        procs = list(self._processes.values())
        self._processes.clear()
        closing = [asyncio.ensure_future(p.close()) for p in procs] + list(self._tasks)
        if closing:
            await asyncio.wait(closing, timeout=15)
        for task in closing:
            if not task.done():
                task.cancel()

    # -- a reply --------------------------------------------------------------------------

    async def stream(self, request: AgentRequest):
        conversation_id = request.conversation_id
        proc = await self._usable_process(conversation_id)
        turn = None
        settling = False
        try:
            turn = proc.begin(self.prompt(request, fresh=proc.turns == 0))
            async with aclosing(self._events(proc, turn, request)) as events:
                async for event in events:
                    yield event
        except BaseException:
            # Stop (CancelledError), a bound passed, the hub gone: the agent is told to
            # cancel, and killed if it does not end its turn; the process lock goes with it.
            if turn is not None and not turn.finished and not proc.ended:
                settling = True
                self._background(self._settle(conversation_id, proc, turn))
            raise
        finally:
            if not settling:
                if turn is not None:
                    proc.end(turn)
                proc.lock.release()
                if proc.ended:
                    self._forget(conversation_id, proc)
                else:
                    self._idle_from_now(conversation_id, proc)

    async def _usable_process(self, conversation_id: str) -> AgentProcess:
        """The conversation's process, locked for a turn. One that ended while an earlier
        reply held it (killed after a stop, or it exited) is replaced by a new one."""
        for _ in range(3):
            proc = await self._process_for(conversation_id)
            await proc.lock.acquire()
            if not proc.ended:
                return proc
            proc.lock.release()
            self._forget(conversation_id, proc)
        raise AgentError(f"The agent {self.label} keeps ending as soon as it starts.")

    async def _settle(self, conversation_id: str, proc: AgentProcess, turn) -> None:
        try:
            await proc.settle(turn, self.cancel_timeout)
        finally:
            proc.lock.release()
            if proc.ended:
                self._forget(conversation_id, proc)
            else:
                self._idle_from_now(conversation_id, proc)

    def prompt(self, request: AgentRequest, fresh: bool) -> list:
        """The prompt's content blocks: on a new session the conversation so far, then what
        the user attached, then the new text."""
        blocks = []
        if fresh and request.history:
            lines = ["The conversation so far, for context (you answered as the assistant):"]
            for turn in request.history:
                who = "User" if turn.get("role") == "user" else "Assistant"
                lines.append(f"{who}: {turn.get('text', '')}")
            blocks.append(_text("\n\n".join(lines)))
        for item in request.context or ():
            if isinstance(item, dict) and isinstance(item.get("text"), str):
                blocks.append(_text(context_block(item)))
        blocks.append(_text(request.text))
        return blocks

    async def _events(self, proc: AgentProcess, turn, request: AgentRequest):
        """The reply's events from the turn's updates, until the agent ends its turn."""
        sdk = _sdk()
        calls = ToolCalls(self.max_tool_calls, self.label)
        answer, thinking = redact.StreamRedactor(), redact.StreamRedactor()
        left = self.max_reply_chars
        while True:
            items = await turn.take()
            text: list = []
            thought: list = []
            ended = False
            for item in items:
                kind = type(item)
                if kind is str:
                    if thought:
                        for piece in _flush([], thought, answer, thinking, hold=True):
                            yield piece
                        thought = []
                    text.append(item)
                    left -= len(item)
                    continue
                if kind is Reasoning:
                    if text:
                        for piece in _flush(text, [], answer, thinking, hold=True):
                            yield piece
                        text = []
                    thought.append(item.text)
                    left -= len(item.text)
                    continue
                # Anything else comes after the text before it, with nothing held back.
                for piece in _flush(text, thought, answer, thinking):
                    yield piece
                text, thought = [], []
                if item is sdk.END:
                    ended = True
                    break
                if isinstance(item, sdk.Permission):
                    call = calls.asked(item.tool_call)
                    decision = await request.approve(call)
                    if not item.answer.done():  # not already answered "cancelled"
                        item.answer.set_result(_option_for(decision, item.options))
                    calls.decided(call.id, decision)
                else:
                    call = calls.apply(item)
                    if call is not None:
                        left -= _weight(call)
                        yield call
            if left < 0:
                raise AgentError(
                    f"The agent {self.label} sent more than {self.max_reply_chars:,} characters "
                    "in one reply (max_reply_chars); its turn was cancelled."
                )
            if ended:
                break
            for piece in _flush(text, thought, answer, thinking, hold=True):
                yield piece
        for piece in _flush([], [], answer, thinking):
            yield piece
        async for event in self._outcome(proc, turn):
            yield event

    async def _outcome(self, proc: AgentProcess, turn):
        """How the turn ended: a note for a turn cut short, usage, or the error."""
        error = turn.task.exception() if not turn.task.cancelled() else ConnectionError()
        if error is None:
            response = turn.task.result()
            note = _STOP_NOTES.get(response.stop_reason)
            if note:
                yield note
            usage = getattr(response, "usage", None)
            if usage is not None:
                yield Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)
            return
        sdk = _sdk()
        if isinstance(error, sdk.RequestError) and proc.alive:
            raise AgentError(f"The agent {self.label} failed: {sdk.said(error)}")
        raise AgentError(await proc.failure("in the middle of the reply"))


class ToolCalls:
    """The tool calls of one reply: ACP's updates merged into the latest state of each."""

    def __init__(self, max_calls: int, label: str):
        self.max_calls = max_calls
        self.label = label
        self.calls: dict = {}

    def apply(self, update) -> Optional[ToolCall]:
        """The call's new state after ``update`` (a tool_call or tool_call_update), or None
        when nothing shown changed."""
        call_id = str(update.tool_call_id)[:200]
        before = self.calls.get(call_id)
        new = before is None
        if new:
            if len(self.calls) >= self.max_calls:
                raise AgentError(
                    f"The agent {self.label} made more than {self.max_calls:,} tool calls in "
                    "one reply (max_tool_calls); its turn was cancelled."
                )
            before = ToolCall(call_id, "tool")
        after = before
        kind = getattr(update, "kind", None)
        if kind:
            kind = kind if kind in _KINDS else "other"
            after = replace(after, kind=kind, name=kind if after.name == "tool" else after.name)
        title = getattr(update, "title", None)
        if title:
            after = replace(after, title=redact.cut(title, 500))
        status = _STATUS.get(getattr(update, "status", None) or "")
        if status:
            after = replace(after, status=status)
        if update.raw_input is not None:
            after = replace(after, arguments=_arguments(update.raw_input))
        if update.content is not None:
            result, diff = _content(update.content)
            after = replace(after, result=result, diff=diff)
        if update.raw_output is not None and not after.result:
            output = update.raw_output
            text = output if isinstance(output, str) else _json(output)
            after = replace(after, result=redact.cut(text, FIELD_CHARS))
        if after.status == FAILED and not after.error:
            after = replace(after, error=redact.cut(after.result or "failed", 500))
        self.calls[call_id] = after
        return after if new or after != before else None

    def asked(self, tool_call) -> ToolCall:
        """The call a permission request is about, with what the request says of it."""
        self.apply(tool_call)
        return self.calls[str(tool_call.tool_call_id)[:200]]

    def decided(self, call_id: str, decision: str) -> None:
        """The hub has shown the user's answer (running, or failed as rejected): later
        updates start from there."""
        call = self.calls.get(call_id)
        if call is None:
            return
        if decision == REJECT:
            self.calls[call_id] = replace(call, status=FAILED, error="rejected by the user")
        elif call.status == PENDING:
            self.calls[call_id] = replace(call, status=RUNNING)


# -- small functions ------------------------------------------------------------------------


def _text(text: str):
    return _sdk().text_block(text)


def _option_for(decision: str, options) -> Optional[str]:
    """The agent's option that carries out the user's decision: the one of that kind, else
    the closest kind it offers; None ("cancelled") when it offers none that fits."""
    by_kind = {}
    for option in options:
        by_kind.setdefault(option.kind, option.option_id)
    for kind in _OPTION_KINDS.get(decision, _OPTION_KINDS[REJECT]):
        if kind in by_kind:
            return by_kind[kind]
    return None


def _flush(text, thought, answer, thinking, hold=False):
    """The text and thinking gathered, in order; with ``hold`` the redactors may keep back
    the end that could be the start of a secret, otherwise they give everything."""
    pieces = []
    if text:
        pieces.append(answer.feed("".join(text)))
    if not hold:
        pieces.append(answer.flush())
    if thought:
        pieces.append(Reasoning(thinking.feed("".join(thought))))
    if not hold:
        pieces.append(Reasoning(thinking.flush()))
    return [p for p in pieces if (p.text if isinstance(p, Reasoning) else p)]


def _content(content: list):
    """A tool call's content as (result text or None, first diff or None)."""
    texts, diff = [], None
    for item in content:
        if getattr(item, "type", None) == "diff":
            if diff is None:
                diff = {
                    "path": redact.cut(item.path, 1000),
                    "oldText": _cut(redact.redact(item.old_text or ""), DIFF_CHARS),
                    "newText": _cut(redact.redact(item.new_text), DIFF_CHARS),
                }
        elif getattr(item, "type", None) == "content":
            text = _sdk().text_of(item.content)
            if text:
                texts.append(text)
    result = redact.cut("\n".join(texts), FIELD_CHARS) if texts else None
    return result, diff


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(CUT)] + CUT


def _json(value) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return json.dumps(str(value))


def _arguments(raw) -> str:
    """A tool's input as JSON text; too long, it becomes one JSON string, cut."""
    text = redact.redact(_json(raw))
    if len(text) <= FIELD_CHARS:
        return text
    return json.dumps(_cut(text, FIELD_CHARS))


def _weight(call: ToolCall) -> int:
    diff = call.diff or {}
    return (
        len(call.arguments)
        + len(call.result or "")
        + len(diff.get("oldText", ""))
        + len(diff.get("newText", ""))
    )
