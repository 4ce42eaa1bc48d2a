"""The ``openai`` agent: any server that speaks OpenAI chat completions (OpenAI itself, Ollama,
vLLM, llama.cpp, LM Studio, OpenRouter, DeepSeek, ...), streamed through the official client.

Configure it like any Jupyter class (``c.OpenAIAgent.model = "llama3.2"``) or as named agents
(``c.StreamChatApp.agents = {"local": {"class": "openai", "model": ...}}``).

What a user sees when the server misbehaves is written here, in :meth:`OpenAIAgent._explain`:
every failure becomes an :class:`AgentError` whose message says what happened and what to check,
and never carries the API key (``redact.py``). A model server is a remote party: what it sends
is bounded (``bounded.py``: one event, an error body, the time an event takes; here: the text
of a reply), and whatever it sends that is not what the API promises (bad JSON, fields of the
wrong type, bytes that are not UTF-8) ends the reply with a sentence naming the server, with
the text that came before it kept.

Tools (``tools.py``: from MCP servers, ``mcptools.py``, and plug-ins) go to the model as
functions; the calls it streams are put together from their deltas, asked the user's approval
where the policy says so, run, and their results sent back for the next response, for at most
``max_tool_rounds`` rounds. What the model may ask is bounded too: calls per response, the size
of their arguments, the rounds. Attached context goes into the user's message, in a delimited
block before its text.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import time
from dataclasses import replace

import json

import anyio
import openai
from traitlets import Bool, Dict, Float, Int, List, Unicode, default, observe

from .. import redact
from .base import (
    ALLOW_ALWAYS,
    ALLOW_ONCE,
    COMPLETED,
    FAILED,
    RUNNING,
    Agent,
    AgentError,
    AgentRequest,
    Reasoning,
    Usage,
)
from .context import with_context
from .openaicalls import (
    Call,
    Malformed,
    ReplyCalls,
    Round,
    UsageTotal,
    by_unique_name,
    field_of,
    json_kind,
)
from .mcptools import MCPConnection, MCPStartError, register_secrets
from .tools import ToolError, load_plugin_tools
from .bounded import ServerMisbehaved, bounded_http_client
from .sse import DONE, EventReader

# Shown at the end of a reply the server cut at its token limit (finish_reason "length").
LENGTH_NOTE = "\n\n*[cut at the token limit]*"
CONTENT_FILTER_NOTE = "\n\n*[stopped by the model server's content filter]*"
# Shown at the end of a reply whose model still called tools after max_tool_rounds rounds.
ROUNDS_NOTE = "\n\n*[stopped after {rounds} rounds of tool calls (max_tool_rounds)]*"
# Told the model for a call the user rejected.
REJECTED = "The user rejected this call; it was not run."
# Retries before the first token: about 0.5 s, then 1 s, 2 s, ... (with jitter) up to this.
_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 8.0
# A server that asks us to wait longer than this (Retry-After) is not waited for: the user is
# told when to try again instead of watching a reply that does not start.
_RETRY_AFTER_MAX = 20.0
# The official client refuses to start without a key; local servers ignore the header.
_NO_KEY = "no-key"


# The server's own words about an error are cut to this many characters in the user's message.
DETAIL_CHARS = 300


class _BrokeOff(Exception):
    """The stream ended with neither a finish reason nor [DONE]."""


class _StreamError(Exception):
    """An ``{"error": ...}`` event in a stream that had begun well (HTTP 200)."""

    def __init__(self, body):
        super().__init__("error event")
        self.body = body


# Failures of the server's stream that are not the client's own errors: what the client raises
# when it cannot read what was sent.
_UNREADABLE = (json.JSONDecodeError, UnicodeDecodeError, Malformed, ServerMisbehaved)
# What ends a stream that has begun: the server's own errors, and the unreadable.
_STREAM_FAILURES = (openai.APIError, _BrokeOff, _StreamError, *_UNREADABLE)


class OpenAIAgent(Agent):
    """Chat completions from an OpenAI-compatible server, streamed token by token."""

    base_url = Unicode(
        help="""The server's API root, ending in /v1 for most servers
        (Ollama: http://127.0.0.1:11434/v1). Default: $OPENAI_BASE_URL, else OpenAI's.""",
    ).tag(config=True)
    model = Unicode(
        help="Model name as the server knows it. Default: $OPENAI_MODEL, else gpt-4.1-mini."
    ).tag(config=True)
    api_key = Unicode(
        help="""API key, sent as a bearer token. Default: $OPENAI_API_KEY. May be
        empty for local servers that need none."""
    ).tag(config=True)
    system_prompt = Unicode(
        "You are a helpful assistant inside Jupyter. Answer in Markdown.",
        help="Sent first in every request; empty sends none.",
    ).tag(config=True)
    temperature = Float(
        None, allow_none=True, help="Sampling temperature; None leaves it to the server."
    ).tag(config=True)
    max_tokens = Int(
        None, allow_none=True, help="Longest reply in tokens; None leaves it to the server."
    ).tag(config=True)
    extra_body = Dict(
        help="""Extra fields merged into each request body, for server-specific
        options (e.g. {"reasoning_effort": "low"} or Ollama's {"keep_alive": "10m"}).""",
    ).tag(config=True)
    timeout = Float(
        60.0,
        help="""Seconds to wait for the first token, and for any later one,
        before the reply ends with an error.""",
    ).tag(config=True)
    max_retries = Int(
        2,
        help="""Times a request is tried again (with backoff) when it fails
        before the first token: connection refused, rate limited, server error. Once text has
        streamed, a failure ends the reply with what arrived.""",
    ).tag(config=True)
    max_event_bytes = Int(
        1024 * 1024,
        help="""Largest server-sent event accepted from the
        model server, in bytes; a larger one ends the reply with an error (a real server's
        events are a few hundred bytes). Bounds the memory one reply can take.""",
    ).tag(config=True)
    max_error_bytes = Int(
        256 * 1024,
        help="""Largest error body (or other non-streamed
        answer) read from the model server, in bytes.""",
    ).tag(config=True)
    max_reply_chars = Int(
        4_000_000,
        help="""Most characters (answer and thinking) one reply
        may stream; past it the reply ends with an error and keeps what came. Bounds what a
        runaway or hostile server can write to the store.""",
    ).tag(config=True)

    mcp_servers = Dict(
        help="""MCP servers whose tools the model may call, by a name of your choice:
        {"files": {"command": ["uvx", "mcp-server-filesystem", "/data"], "env": {"TOKEN":
        "..."}}} runs a program over stdio (optional "cwd"); {"docs": {"url":
        "https://example.com/mcp", "headers": {"Authorization": "Bearer ..."}}} speaks
        streamable HTTP. Each server starts on the agent's first reply and serves the
        following ones; one that cannot start ends the reply with an error naming it. Header
        values and secret-looking environment values never show in messages or logs. Needs
        the mcp package: pip install "jupyter-streamchat[mcp]". Named agents have the class's
        servers unless they set their own.""",
    ).tag(config=True)
    plugin_tools = List(
        Unicode(),
        default_value=["*"],
        help="""Tools from plug-ins (entry points in the group jupyter_streamchat.tools)
        offered to the model, by entry-point name; "*" offers every installed one, [] none.""",
    ).tag(config=True)
    tool_approval = Dict(
        value_trait=Bool(),
        help="""Which tool calls wait for the user's approval, by tool name (as the model
        sees it): true asks, false runs without asking; "*" sets it for tools not named. A
        tool named nowhere asks unless it only reads: an MCP tool that its server marks
        read-only (readOnlyHint), or a plug-in tool with read_only set. Example:
        {"add": false, "write_note": true, "*": true}.""",
    ).tag(config=True)
    max_tool_rounds = Int(
        8,
        help="""Most rounds of tool calls in one reply (the model asks, the tools run, the
        model goes on); a model that still calls tools after them ends its reply with a note
        saying so. 0 offers no tools.""",
    ).tag(config=True)
    max_tool_calls = Int(
        32,
        help="""Most tool calls in one response of the model; more ends the reply with an
        error (a runaway or hostile model server).""",
    ).tag(config=True)
    tool_timeout = Float(
        120.0,
        help="""Seconds a tool call may run; a longer one fails (the model is told) and the
        reply goes on.""",
    ).tag(config=True)
    max_tool_result_chars = Int(
        100_000,
        help="""Longest tool result sent to the model and shown, in characters; a longer one
        is cut, with a note saying so.""",
    ).tag(config=True)
    mcp_start_timeout = Float(
        30.0,
        help="Seconds an MCP server is given to start and list its tools.",
    ).tag(config=True)

    @default("base_url")
    def _default_base_url(self):
        return os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"

    @default("model")
    def _default_model(self):
        return os.environ.get("OPENAI_MODEL") or "gpt-4.1-mini"

    @default("api_key")
    def _default_api_key(self):
        return os.environ.get("OPENAI_API_KEY", "")

    @default("description")
    def _default_description(self):
        return f"{self.model} at {redact.without_password(self.base_url)}"

    def __init__(self, agent_id: str, **kwargs):
        super().__init__(agent_id, **kwargs)
        self._client_for = None  # (settings, AsyncOpenAI): one connection pool per settings
        self._connections: dict = {}  # MCP server name -> MCPConnection, started on first use
        self._plugins = None  # the plug-in tools, loaded on first use
        redact.register(self.api_key)
        redact.register_url(self.base_url)
        for settings in self.mcp_servers.values():
            register_secrets(settings)

    @observe("api_key")
    def _api_key_changed(self, change):
        redact.register(change["new"])

    @observe("base_url")
    def _base_url_changed(self, change):
        redact.register_url(change["new"])

    @observe("mcp_servers")
    def _mcp_servers_changed(self, change):
        for settings in (change["new"] or {}).values():
            register_secrets(settings)

    @property
    def server(self) -> str:
        """The base URL as it may be shown: without a password in it."""
        return redact.without_password(self.base_url)

    # -- the request ----------------------------------------------------------------------

    def messages(self, request: AgentRequest) -> list:
        """The chat messages sent: the system prompt, the conversation so far, the new text
        (user messages with what was attached to them in front)."""
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        for turn in request.history:
            role = turn.get("role")
            text = turn.get("text") or ""
            if role == "user":
                text = with_context(turn.get("context"), text)
            # A reply stopped before its first token has no text; servers refuse empty content.
            if role in ("user", "assistant") and text:
                messages.append({"role": role, "content": text})
        messages.append({"role": "user", "content": with_context(request.context, request.text)})
        return messages

    def _params(self, request: AgentRequest, tools: dict | None = None) -> dict:
        params = dict(
            model=self.model,
            messages=self.messages(request),
            stream=True,
            stream_options={"include_usage": True},
        )
        if tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": name,
                        "description": tool.description or "",
                        "parameters": tool.schema(),
                    },
                }
                for name, tool in tools.items()
            ]
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        if self.extra_body:
            params["extra_body"] = dict(self.extra_body)
        return params

    def _client(self) -> openai.AsyncOpenAI:
        settings = (
            self.base_url,
            self.api_key,
            self.timeout,
            self.max_event_bytes,
            self.max_error_bytes,
        )
        if self._client_for is None or self._client_for[0] != settings:
            # max_retries=0: retries are ours, so that the first-token deadline and the backoff
            # are too. The client's timeout bounds each read, so a stream that stalls later on
            # ends as well; an event that trickles in must still end within it.
            http = bounded_http_client(self.max_event_bytes, self.max_error_bytes, self.timeout)
            client = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=self.api_key or _NO_KEY,
                timeout=self.timeout,
                max_retries=0,
                http_client=http,
            )
            self._client_for = (settings, client)
        return self._client_for[1]

    # -- streaming ------------------------------------------------------------------------

    async def stream(self, request: AgentRequest):
        tools = await self._toolbox()
        client, params = self._client(), self._params(request, tools)
        reply = ReplyCalls(self.max_reply_chars, self.max_tool_calls)
        total = UsageTotal()
        for rounds in range(max(0, self.max_tool_rounds) + 1):
            round_ = reply.round(offers_tools=bool(tools))
            text = []
            requesting = self._request(client, params, round_)
            try:
                async for piece in requesting:
                    if isinstance(piece, Usage):
                        piece = total.add(piece)  # every request of the reply counts
                    elif isinstance(piece, str):
                        text.append(piece)
                    yield piece
            finally:
                await requesting.aclose()  # closed with the reply, not when collected
            calls = round_.calls()
            if not calls:
                return
            if round_.finish in ("length", "content_filter"):
                # Its calls were cut off with the reply: their arguments are not whole.
                for call in calls:
                    yield replace(
                        call.shown(), status=FAILED, error="not run: the reply was cut off"
                    )
                return
            if rounds >= self.max_tool_rounds:
                error = f"not run: the reply reached max_tool_rounds ({self.max_tool_rounds})"
                for call in calls:
                    yield replace(call.shown(), status=FAILED, error=error)
                yield ROUNDS_NOTE.format(rounds=self.max_tool_rounds)
                return
            messages = list(params["messages"])
            messages.append(
                {
                    "role": "assistant",
                    "content": "".join(text) or None,
                    "tool_calls": [call.message() for call in calls],
                }
            )
            for call in calls:
                async for state in self._run(call, tools, request):
                    yield state
                messages.append(
                    {"role": "tool", "tool_call_id": call.model_id, "content": call.told}
                )
            params = {**params, "messages": messages}

    async def _request(self, client: openai.AsyncOpenAI, params: dict, round_: "Round"):
        """One request to the model server, tried again (with backoff) while it fails before
        its first piece: its text, :class:`Reasoning`, :class:`Usage` and tool calls."""
        attempt = 0
        while True:
            round_.start()
            pieces = self._pieces(client, params, round_)
            try:
                try:
                    with anyio.fail_after(self.timeout):
                        first = await pieces.__anext__()
                except StopAsyncIteration:
                    return
                except (_StreamError, *_UNREADABLE) as error:
                    raise AgentError(self._explain(error, attempt + 1, started=False)) from None
                except (openai.APIError, _BrokeOff, TimeoutError) as error:
                    # Nothing has been shown yet, so trying again cannot repeat any text.
                    wait = self._retry_wait(error, attempt)
                    if wait is None:
                        raise AgentError(self._explain(error, attempt + 1, started=False)) from None
                    attempt += 1
                    self.log.info(
                        "streamchat: agent %r tries again (%d of %d) in %.1f s: %s",
                        self.agent_id,
                        attempt,
                        self.max_retries,
                        wait,
                        self._explain(error, 1, started=False),
                    )
                    await asyncio.sleep(wait)
                    continue
                yield first
                try:
                    async for piece in pieces:
                        yield piece
                except _STREAM_FAILURES as error:
                    raise AgentError(self._explain(error, attempt + 1, started=True)) from None
                return
            finally:
                # On a stop this closes the HTTP response at once: the server sees the
                # connection go and stops generating (and billing).
                await pieces.aclose()

    async def _pieces(self, client: openai.AsyncOpenAI, params: dict, round_: "Round"):
        """One request: answer text, :class:`Reasoning`, the :class:`ToolCall` states of the
        calls it streams (into ``round_``) and, at the end, :class:`Usage`.

        The client sends the request (and raises for an error status); the events are read
        here (``sse.py``), each chunk as the JSON it is: every field is read for what it is
        (:func:`field_of`), and a wrong type is a malformed stream."""
        model = input_tokens = output_tokens = finish = None
        think = ThinkSplitter()
        # A model server is sent the key, and may send it back in a reply: blanked there too.
        answer, thinking = redact.StreamRedactor(), redact.StreamRedactor()
        events = EventReader()
        try:
            request = client.chat.completions.with_streaming_response.create(**params)
            async with request as response:
                received = response.iter_bytes()
                async for data in received:
                    for event in events.feed(data):
                        if event.startswith(DONE):
                            await _drain(received)
                            break
                        chunk = json.loads(event.decode("utf-8"))
                        if not isinstance(chunk, dict):
                            raise Malformed(
                                f"sent a chunk that is {json_kind(chunk)}, not an object"
                            )
                        if chunk.get("error"):
                            raise _StreamError(chunk["error"])
                        model = field_of(chunk, "model", str) or model
                        usage = field_of(chunk, "usage", dict)
                        if usage is not None:
                            input_tokens = _count(usage, "prompt_tokens")
                            output_tokens = _count(usage, "completion_tokens")
                        for choice in field_of(chunk, "choices", list) or ():
                            if not isinstance(choice, dict):
                                raise Malformed(
                                    f"sent a choice that is {json_kind(choice)}, not an object"
                                )
                            if field_of(choice, "index", int) not in (0, None):
                                continue
                            delta = field_of(choice, "delta", dict)
                            if delta is not None:
                                reasoning = _reasoning_of(delta)
                                content = field_of(delta, "content", str)
                                round_.spend(len(reasoning) + len(content or ""))
                                reasoning = thinking.feed(reasoning) if reasoning else ""
                                if reasoning:
                                    yield Reasoning(reasoning)
                                content = answer.feed(content) if content else ""
                                if content:
                                    for piece in think.feed(content):
                                        yield piece
                                # Calls of tools that were not offered are not read at all.
                                calls = (
                                    field_of(delta, "tool_calls", list)
                                    if round_.offers_tools
                                    else None
                                )
                                for call in round_.feed(calls) if calls else ():
                                    yield call.shown()
                            finish = field_of(choice, "finish_reason", str) or finish
                    else:
                        continue
                    break  # [DONE]
        except Exception:
            # What the redactors and the splitter still hold came before the failure: kept.
            for piece in _held(thinking, answer, think):
                yield piece
            raise
        for piece in _held(thinking, answer, think):
            yield piece
        if finish is None:
            raise _BrokeOff()
        round_.finish = finish
        for call in round_.calls():
            yield call.shown()  # its arguments complete
        if finish == "length":
            yield LENGTH_NOTE
        elif finish == "content_filter":
            yield CONTENT_FILTER_NOTE
        yield Usage(model=model, input_tokens=input_tokens, output_tokens=output_tokens)

    # -- tools ----------------------------------------------------------------------------

    async def _toolbox(self) -> dict:
        """The tools offered to the model, by the name it calls them: the plug-ins' and every
        configured MCP server's (started on first use). A server that cannot start ends the
        reply with an error naming it."""
        if self.max_tool_rounds <= 0:
            return {}
        if self._plugins is None:
            self._plugins = (
                load_plugin_tools(self.log, self.plugin_tools) if self.plugin_tools else []
            )
        tools = list(self._plugins)
        servers = dict(self.mcp_servers)
        for name, connection in list(self._connections.items()):
            if connection.settings != servers.get(name):
                del self._connections[name]
                await connection.close()  # no longer configured as it was
        if servers:
            listed = await asyncio.gather(
                *(self._connection(name, settings).tools() for name, settings in servers.items()),
                return_exceptions=True,
            )
            for name, found in zip(servers, listed):
                if isinstance(found, MCPStartError):
                    raise AgentError(str(found))
                if isinstance(found, BaseException):
                    if not isinstance(found, Exception):
                        raise found  # a stop (CancelledError) goes on as it came
                    self.log.warning("streamchat: MCP server %r failed", name, exc_info=found)
                    reason = redact.redact(f"{type(found).__name__}: {found}")[:500]
                    raise AgentError(f"MCP server {name!r} could not start: {reason}")
                tools += found
        return by_unique_name(tools)

    def _connection(self, name: str, settings) -> MCPConnection:
        connection = self._connections.get(name)
        if connection is None:
            connection = MCPConnection(name, settings, self.log, self.mcp_start_timeout)
            self._connections[name] = connection
        connection.start_timeout = self.mcp_start_timeout
        return connection

    async def close(self) -> None:
        """End the MCP sessions (and the programs of stdio servers)."""
        connections, self._connections = list(self._connections.values()), {}
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)

    def needs_approval(self, name: str, tool) -> bool:
        """Whether a call of ``tool`` (called ``name`` by the model) waits for the user."""
        policy = self.tool_approval
        for key in (name, "*"):
            if key in policy:
                return bool(policy[key])
        return not getattr(tool, "read_only", False)

    async def _run(self, call: "Call", tools: dict, request: AgentRequest):
        """Run one call, yielding its states; what the model is told goes to ``call.told``."""
        shown = call.shown()
        tool = tools.get(call.name)
        if tool is None:
            call.told = f"Error: there is no tool named {call.name!r}."
            yield replace(shown, status=FAILED, error=f"no tool named {call.name!r}")
            return
        try:
            arguments = json.loads(call.arguments or "{}")
        except ValueError as error:
            arguments, problem = None, f"the arguments are not valid JSON ({error.msg})"
        else:
            problem = None if isinstance(arguments, dict) else "the arguments are not an object"
        if problem:
            call.told = f"Error: {problem}."
            yield replace(shown, status=FAILED, error=problem)
            return
        if self.needs_approval(call.name, tool):
            decision = await request.approve(shown)
            if decision not in (ALLOW_ONCE, ALLOW_ALWAYS):
                call.told = REJECTED
                yield replace(shown, status=FAILED, error="rejected by the user")
                return
        yield replace(shown, status=RUNNING)
        error = result = None
        with anyio.move_on_after(self.tool_timeout) as deadline:
            try:
                result = await tool.call(arguments)
            except ToolError as failure:
                error = str(failure) or "the tool failed"
            except Exception as failure:
                self.log.warning(
                    "streamchat: tool %r (%s) failed", call.name, tool.origin, exc_info=True
                )
                error = f"{type(failure).__name__}: {failure}"
        if deadline.cancelled_caught:
            error = f"took longer than {self.tool_timeout:g} s (tool_timeout)"
        if error is not None:
            error = redact.cut(" ".join(error.split()), 2000)
            call.told = f"Error: {error}"
            yield replace(shown, status=FAILED, error=error)
            return
        result = redact.redact(result if isinstance(result, str) else str(result))
        if len(result) > self.max_tool_result_chars:
            result = (
                result[: self.max_tool_result_chars]
                + f"\n[cut: the result had {len(result):,} characters; the first "
                f"{self.max_tool_result_chars:,} are shown]"
            )
        call.told = result
        yield replace(shown, status=COMPLETED, result=result)

    # -- failures -------------------------------------------------------------------------

    def _retry_wait(self, error: Exception, attempt: int):
        """Seconds to wait before trying again, or None to give up now."""
        if attempt >= self.max_retries:
            return None
        backoff = min(_BACKOFF_FIRST * 2**attempt, _BACKOFF_MAX) * random.uniform(0.5, 1.0)
        if isinstance(error, openai.APIStatusError):
            status = error.status_code
            if status not in (408, 409, 429) and status < 500:
                return None  # a wrong key, model or request stays wrong
            after = _retry_after(error.response)
            if after is None:
                return backoff
            return after if after <= _RETRY_AFTER_MAX else None
        if isinstance(error, openai.APITimeoutError) or isinstance(error, TimeoutError):
            return None  # a server that was silent for `timeout` seconds gets no second minute
        if isinstance(error, (openai.APIConnectionError, _BrokeOff)):
            return backoff
        return None

    def _explain(self, error: Exception, attempts: int, started: bool) -> str:
        """A message for the user: what happened, and what to check; never a secret."""
        return redact.redact(self._say(error, attempts, started))

    def _say(self, error: Exception, attempts: int, started: bool) -> str:
        where = f"The model server at {self.server}"
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        cut = " The reply was cut off there." if started else ""
        if isinstance(error, (ServerMisbehaved, Malformed)):
            return f"{where} {error}.{cut}"
        if isinstance(error, json.JSONDecodeError):
            return (
                f"{where} sent an event that is not valid JSON ({error.msg} at character "
                f"{error.pos}).{cut}"
            )
        if isinstance(error, UnicodeDecodeError):
            return f"{where} sent bytes that are not UTF-8 text.{cut}"
        if isinstance(error, _BrokeOff):
            return f"{where} ended the reply early: the stream broke off{tries}."
        if isinstance(error, (TimeoutError, openai.APITimeoutError)):
            if started:
                return f"{where} sent nothing for {self.timeout:g} s: the stream broke off."
            return f"{where} sent no reply within {self.timeout:g} s{tries}."
        if isinstance(error, openai.APIConnectionError):
            if started:
                return f"{where} dropped the connection: the stream broke off."
            return f"Cannot reach {self.server}: is the server running?"
        if isinstance(error, openai.APIStatusError):
            return self._explain_status(error, tries)
        # An error event inside a stream that had begun well (HTTP 200).
        detail = (
            _detail(error.body)
            if isinstance(error, _StreamError)
            else _detail(getattr(error, "body", None))
        )
        return f"{where} reported an error mid-reply: {detail or 'no details'}."

    def _explain_status(self, error: openai.APIStatusError, tries: str) -> str:
        where = f"The model server at {self.server}"
        status, detail = error.status_code, _detail(error.body)
        said = f": {detail}" if detail else ""
        if status == 401:
            # Never the server's text: servers quote the key they were given in it.
            if not self.api_key:
                return (
                    f"{where} needs an API key (401). Set the agent's api_key "
                    "(c.OpenAIAgent.api_key) or OPENAI_API_KEY."
                )
            return (
                f"{where} refused the API key (401). Check the agent's api_key "
                "(c.OpenAIAgent.api_key or OPENAI_API_KEY)."
            )
        if status == 403:
            return f"{where} denied access (403){said}."
        if status == 404:
            return (
                f"{where} has no model '{self.model}' (404){said}. Check the model name, "
                "and that the base URL is the API root (often ending in /v1)."
            )
        if status == 429:
            after = _retry_after(error.response)
            when = f"try again in {after:g} s" if after is not None else "try again shortly"
            return f"{where} is rate limiting requests (429){said}; {when}{tries}."
        if status >= 500:
            return f"{where} failed ({status}){said}{tries}."
        return f"{where} refused the request ({status}){said}."


def _held(thinking, answer, think) -> list:
    """The text held back at the end of a stream (by the redactors, and by the splitter while
    a tag may be coming), as pieces."""
    pieces = []
    reasoning = thinking.flush()
    if reasoning:
        pieces.append(Reasoning(reasoning))
    return pieces + think.feed(answer.flush()) + think.flush()


def _detail(body) -> str:
    """The server's own words about an error (an error body, or its ``error`` member), short,
    with any secret blanked out first (a cut made before would leave the part of a key in
    front of it)."""
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, str):
        message = body if isinstance(body, str) else ""
    message = redact.cut(message, 4 * DETAIL_CHARS, end="")
    return redact.cut(" ".join(message.split()), DETAIL_CHARS).rstrip(".!")


def _count(obj: dict, name: str):
    """A token count of the usage, or None: usage is informational, so a wrong type is no
    reason to fail a reply."""
    value = obj.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def _drain(received, most: int = 64 * 1024) -> None:
    """Read what follows [DONE] (usually nothing), so the connection goes back to the pool
    for the next request (a new TLS handshake costs a remote server's first token dearly);
    a server that goes on sending has its connection closed instead."""
    left = most
    async for data in received:
        left -= len(data)
        if left < 0:
            return


def _reasoning_of(delta: dict) -> str:
    """Thinking text of a delta: ``reasoning_content`` (DeepSeek, vLLM) or ``reasoning`` (Ollama,
    OpenRouter). Some servers send both with the same text, so the first one counts."""
    for name in ("reasoning_content", "reasoning"):
        value = delta.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def _retry_after(response) -> "float | None":
    """Seconds from a ``Retry-After`` (seconds or an HTTP date) or ``retry-after-ms`` header."""
    headers = response.headers if response is not None else {}
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class ThinkSplitter:
    """Splits streamed content that carries ``<think>...</think>`` into reasoning and answer.

    A tag may arrive cut across deltas ("<th", "ink>"), so a tail that could still become a tag
    is held back until the next delta. Whitespace right after a tag, and right before
    ``</think>``, is layout, not text, and is dropped. ``feed`` and ``flush`` return answer text
    (``str``) and :class:`Reasoning` pieces.
    """

    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self):
        self.thinking = False
        self.held = ""
        self.after_tag = False

    def feed(self, text: str) -> list:
        if not (self.thinking or self.held or self.after_tag) and "<" not in text:
            return [text] if text else []  # plain answer text, the common case: as it came
        out: list = []
        text = self.held + text
        self.held = ""
        while text:
            tag = self.CLOSE if self.thinking else self.OPEN
            at = text.find(tag)
            if at >= 0:
                self._emit(out, text[:at].rstrip() if self.thinking else text[:at])
                text = text[at + len(tag) :]
                self.thinking = not self.thinking
                self.after_tag = True
                continue
            keep = _tag_prefix_at_end(text, tag)
            if self.thinking:  # whitespace before </think> is layout too: hold it back as well
                keep += len(text[: len(text) - keep]) - len(text[: len(text) - keep].rstrip())
            self._emit(out, text[: len(text) - keep])
            self.held = text[len(text) - keep :]
            break
        return out

    def flush(self) -> list:
        out: list = []
        self._emit(out, self.held)
        self.held = ""
        return out

    def _emit(self, out: list, text: str) -> None:
        if self.after_tag:
            text = text.lstrip()
            if not text:
                return
            self.after_tag = False
        if text:
            out.append(Reasoning(text) if self.thinking else text)


def _tag_prefix_at_end(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a proper beginning of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0
