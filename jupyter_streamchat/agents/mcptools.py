"""Tools from MCP servers, through the ``mcp`` SDK (``pip install "jupyter-streamchat[mcp]"``).

One :class:`MCPConnection` per configured server and agent: a program run over stdio
(``{"command": [...], "env": {...}}``) or a streamable-HTTP endpoint (``{"url": ...,
"headers": {...}}``). It starts on first use, lists the server's tools once, serves every reply
after that, and ends with :meth:`MCPConnection.close`.

The SDK's transports and sessions are anyio task groups, which must be left by the task that
entered them, while replies run in tasks of their own: so each session lives in a task of its
own (:meth:`MCPConnection._run`), and replies only send requests through it.

Environment values and headers often hold secrets (tokens): they are registered with
``redact.py`` and never put in a message; what a server prints on stderr is kept (its last
lines, redacted) to say why it did not start.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import json
import os
import re
import shlex
import threading
from typing import Optional

from .. import redact
from .tools import Tool, ToolError

# What a server may list: enough for any real server, bounded for a broken one.
MAX_TOOLS = 1000
MAX_PAGES = 50
MAX_SCHEMA_CHARS = 64 * 1024
MAX_DESCRIPTION_CHARS = 8 * 1024
# Lines of a stdio server's stderr kept to explain a failure.
STDERR_LINES = 20
# Seconds a session is given to end on close before its task is cancelled.
CLOSE_SECONDS = 10.0

# Environment variable names whose values are secrets (tokens, keys, passwords...).
_SECRET_NAME = re.compile(
    r"(?:^|[_-])(?:KEY|APIKEY|TOKEN|SECRET|PASSWORD|PASSWD|PASS|PAT|CREDENTIALS?|AUTH)(?:$|[_-])",
    re.IGNORECASE,
)
_AUTH_SCHEME = re.compile(r"^(?:Bearer|Basic|Token)\s+", re.IGNORECASE)
_KNOWN_KEYS = {"command", "args", "env", "cwd", "url", "headers"}


class MCPStartError(Exception):
    """A server could not start or be reached; the message says why, for the user (no secret
    in it)."""


def register_secrets(settings) -> None:
    """Register the secrets one server's settings may hold: every header value (without its
    scheme word), environment values of secret-looking names, and URL passwords anywhere."""
    if not isinstance(settings, dict):
        return
    headers = settings.get("headers")
    if isinstance(headers, dict):
        for value in headers.values():
            if isinstance(value, str):
                redact.register(value.strip())
                redact.register(_AUTH_SCHEME.sub("", value.strip()))
    env = settings.get("env")
    if isinstance(env, dict):
        for name, value in env.items():
            if isinstance(value, str):
                if isinstance(name, str) and _SECRET_NAME.search(name):
                    redact.register(value)
                redact.register_url(value)
    for key in ("url", "command", "args"):
        value = settings.get(key)
        for item in value if isinstance(value, list) else [value]:
            redact.register_url(item)


def parse_settings(name: str, settings) -> dict:
    """One server's settings, checked: ``{"stdio": [program, *args], "env", "cwd"}`` or
    ``{"url", "headers"}``; a mistake raises :class:`MCPStartError` saying what to fix."""

    def wrong(what: str) -> MCPStartError:
        return MCPStartError(
            f"MCP server {name!r} is misconfigured (OpenAIAgent.mcp_servers): {what}"
        )

    if not isinstance(settings, dict):
        raise wrong('expected {"command": [...]} or {"url": "..."}')
    unknown = sorted(set(settings) - _KNOWN_KEYS, key=str)
    if unknown:
        raise wrong(f"unknown setting {', '.join(map(repr, unknown))}")
    if ("command" in settings) == ("url" in settings):
        raise wrong('give either "command" (a program and its arguments) or "url"')
    if "url" in settings:
        url, headers = settings["url"], settings.get("headers") or {}
        if not isinstance(url, str) or not re.match(r"^https?://", url):
            raise wrong('"url" must be an http:// or https:// URL')
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise wrong('"headers" must map header names to strings')
        return {"url": url, "headers": dict(headers)}
    command = settings["command"]
    if isinstance(command, str):
        command = shlex.split(command)
    args = settings.get("args") or []  # as other MCP clients' configs have it
    if not isinstance(command, list) or not isinstance(args, list):
        raise wrong('"command" must be a list: the program and its arguments')
    command = command + args
    if not command or not all(isinstance(part, str) and part for part in command):
        raise wrong('"command" must be a non-empty list of strings')
    env, cwd = settings.get("env") or {}, settings.get("cwd")
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise wrong('"env" must map variable names to strings')
    if cwd is not None and not isinstance(cwd, str):
        raise wrong('"cwd" must be a directory path')
    return {"stdio": command, "env": dict(env), "cwd": cwd}


class MCPTool(Tool):
    """A tool of an MCP server. ``name`` is the name the model sees (unique among the agent's
    tools); ``remote_name`` the server's own."""

    def __init__(self, connection: "MCPConnection", listed: dict):
        self.connection = connection
        self.remote_name = listed["name"]
        self.name = listed["name"]
        description = listed.get("description")
        self.description = (
            description[:MAX_DESCRIPTION_CHARS] if isinstance(description, str) else ""
        )
        schema = listed.get("inputSchema")
        self.parameters = schema if isinstance(schema, dict) else None
        annotations = listed.get("annotations")
        # The server's own word that the tool changes nothing (MCP's readOnlyHint).
        self.read_only = isinstance(annotations, dict) and annotations.get("readOnlyHint") is True
        self.origin = f"MCP server {connection.name!r}"

    async def call(self, arguments: dict) -> str:
        return await self.connection.call(self.remote_name, arguments)


class MCPConnection:
    """The session with one MCP server, started on first use and kept for later replies."""

    def __init__(self, name: str, settings, log, start_timeout: float = 30.0):
        self.name = name
        self.settings = settings
        self.log = log
        self.start_timeout = start_timeout
        self._task: Optional[asyncio.Task] = None
        self._ready: Optional[asyncio.Future] = None
        self._closing: Optional[asyncio.Event] = None
        self._session = None
        self._tools: list = []
        self._broken = False
        self._stderr: collections.deque = collections.deque(maxlen=STDERR_LINES)
        self._statuses: list = []  # HTTP error statuses the server answered while starting
        register_secrets(settings)

    async def tools(self) -> list:
        """The server's tools (:class:`MCPTool`), starting the session if it is not running;
        raises :class:`MCPStartError`."""
        parsed = parse_settings(self.name, self.settings)
        if self._task is not None and (self._task.done() or self._broken):
            await self.close()  # the server went away: start it again
        if self._task is None:
            self._broken = False
            self._stderr.clear()
            self._statuses.clear()
            self._ready = asyncio.get_running_loop().create_future()
            self._closing = asyncio.Event()
            self._task = asyncio.create_task(self._run(parsed), name=f"mcp-{self.name}")
        try:
            # Shielded: a stop of the reply that started it leaves the start to finish, for
            # the next reply; the session's task bounds the start by itself.
            await asyncio.wait_for(asyncio.shield(self._ready), self.start_timeout + 5)
        except asyncio.TimeoutError:
            await self.close()
            raise self._failed(f"it did not answer within {self.start_timeout:g} s") from None
        except MCPStartError:
            await self.close()
            raise
        return list(self._tools)

    async def call(self, name: str, arguments: dict) -> str:
        """Call a tool; its result as text, or :class:`ToolError` with the server's words."""
        session = self._session
        if session is None:
            raise ToolError(f"the MCP server {self.name!r} is not running")
        try:
            result = await session.call_tool(name, arguments)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            leaf = _leaf(error)
            if _connection_gone(leaf):
                self._broken = True  # started again on the next reply
                raise ToolError(f"the MCP server {self.name!r} went away") from None
            raise ToolError(redact.redact(_words(leaf) or type(leaf).__name__)) from None
        dumped = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        text = _text_of(dumped)
        if dumped.get("isError"):
            raise ToolError(text or "the tool reported an error")
        return text

    async def close(self) -> None:
        """End the session (and the server program); safe to call again."""
        task, self._task = self._task, None
        self._session = None
        if task is None:
            return
        if self._closing is not None:
            self._closing.set()
        done, _ = await asyncio.wait([task], timeout=CLOSE_SECONDS)
        if not done:
            task.cancel()
            await asyncio.wait([task], timeout=CLOSE_SECONDS)
        if self._ready is not None and self._ready.done() and not self._ready.cancelled():
            self._ready.exception()  # retrieved: no "never retrieved" warning

    # -- the session's own task -------------------------------------------------------------

    async def _run(self, parsed: dict) -> None:
        ready = self._ready
        try:
            # Seconds of imports: on a thread, not on the server's event loop.
            await asyncio.to_thread(_load_sdk)
            from mcp import ClientSession
        except ImportError:
            ready.set_exception(
                self._failed('the "mcp" package is not installed (pip install "mcp>=1.20")')
            )
            return
        try:
            async with contextlib.AsyncExitStack() as stack:
                streams = await self._transport(stack, parsed)
                session = await stack.enter_async_context(ClientSession(streams[0], streams[1]))
                with _deadline(self.start_timeout):
                    await session.initialize()
                    listed = await _list_tools(session)
                self._tools = self._made(listed)
                self._session = session
                ready.set_result(None)
                await self._closing.wait()
        except asyncio.CancelledError:
            if not ready.done():
                ready.set_exception(self._failed("its start was cancelled"))
            raise
        except BaseException as error:
            if not ready.done():
                ready.set_exception(self._failed(self._reason(error, parsed)))
            else:
                self.log.warning(
                    "streamchat: MCP server %r ended: %s", self.name, self._reason(error, parsed)
                )
        finally:
            self._session = None
            if not ready.done():  # ended on close before it was ready
                ready.set_exception(self._failed("it was closed"))

    async def _transport(self, stack: contextlib.AsyncExitStack, parsed: dict):
        if "url" in parsed:
            return await stack.enter_async_context(_http_transport(parsed, self._statuses))
        from mcp.client.stdio import StdioServerParameters, stdio_client

        program, *args = parsed["stdio"]
        params = StdioServerParameters(
            command=program, args=args, env=parsed["env"] or None, cwd=parsed["cwd"]
        )
        errlog = self._stderr_pipe()
        try:
            return await stack.enter_async_context(stdio_client(params, errlog=errlog))
        finally:
            errlog.close()  # the program holds its own copy; EOF when it exits

    def _stderr_pipe(self):
        """A file for the program's stderr whose lines are kept (the last few) and logged at
        debug, read by a thread that ends when the program closes it."""
        read_fd, write_fd = os.pipe()
        lines, log, name = self._stderr, self.log, self.name

        def drain():
            with os.fdopen(read_fd, "r", encoding="utf-8", errors="replace") as stderr:
                for line in stderr:
                    line = line.rstrip()[:2000]
                    if line:
                        lines.append(line)
                        log.debug("streamchat: MCP server %r: %s", name, line)

        threading.Thread(target=drain, name=f"mcp-{name}-stderr", daemon=True).start()
        return os.fdopen(write_fd, "w")

    def _made(self, listed: list) -> list:
        tools = []
        for item in listed:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                continue
            schema = item.get("inputSchema")
            if len(json.dumps(schema)) > MAX_SCHEMA_CHARS:
                self.log.warning(
                    "streamchat: MCP server %r: tool %r left out: its schema is over %d characters",
                    self.name,
                    item["name"],
                    MAX_SCHEMA_CHARS,
                )
                continue
            tools.append(MCPTool(self, item))
        return tools

    def _failed(self, reason: str) -> MCPStartError:
        end = "" if reason.endswith((".", "?", "!", ")")) else "."
        return MCPStartError(
            redact.redact(f"MCP server {self.name!r} could not start: {reason}{end}")
        )

    def _reason(self, error: BaseException, parsed: dict) -> str:
        leaf = _leaf(error)
        program = parsed["stdio"][0] if "stdio" in parsed else None
        where = redact.without_password(parsed.get("url") or "")
        if isinstance(leaf, TimeoutError):
            return f"it did not answer within {self.start_timeout:g} s"
        if isinstance(leaf, OSError) and program is not None:
            if leaf.errno == errno.ENOENT or isinstance(leaf, FileNotFoundError):
                return f'no program {program!r} was found (check its "command")'
            if isinstance(leaf, PermissionError):
                return f"{program!r} cannot be run: permission denied"
            return f"{program!r} cannot be run: {leaf.strerror or leaf}"
        kind = type(leaf).__name__
        if where and kind in ("ConnectError", "ConnectTimeout"):
            return f"cannot connect to {where}: is the server running?"
        if where and self._statuses:
            status = self._statuses[-1]
            hint = ' (check its "headers")' if status in (401, 403) else ""
            return f"{where} answered with HTTP status {status}{hint}"
        words = _words(leaf) or kind
        if program is not None:
            if _connection_gone(leaf):
                words = f"{program!r} exited before it answered"
            if self._stderr:
                tail = " | ".join(list(self._stderr)[-3:])
                return f"{words} (its stderr ends: {tail[:600]})"
        return f"{words} ({where})" if where else words


def _load_sdk() -> None:
    """Import what the SDK imports on first use (the client, its transports, and jsonschema,
    which it loads lazily to check the first tool result)."""
    import importlib

    import mcp.client.stdio  # noqa: F401
    import mcp.client.streamable_http  # noqa: F401

    for optional in ("jsonschema", "jsonschema.validators", "referencing"):
        try:
            importlib.import_module(optional)
        except ImportError:
            pass


@contextlib.asynccontextmanager
async def _http_transport(parsed: dict, statuses: list):
    """The streamable-HTTP transport of the installed SDK, with the configured headers; the
    status of each HTTP error answer goes into ``statuses`` (the SDK's error does not say it)."""
    from mcp.client import streamable_http
    from mcp.shared._httpx_utils import create_mcp_http_client

    async def seen(response) -> None:
        if response.status_code >= 400:
            statuses.append(response.status_code)

    headers = parsed["headers"] or None
    if hasattr(streamable_http, "streamable_http_client"):
        async with create_mcp_http_client(headers=headers) as http:
            http.event_hooks["response"].append(seen)
            async with streamable_http.streamable_http_client(parsed["url"], http_client=http) as s:
                yield s
    else:  # mcp 1.x before streamable_http_client
        async with streamable_http.streamablehttp_client(parsed["url"], headers=headers) as s:
            yield s


async def _list_tools(session) -> list:
    """Every tool the server lists (its pages followed), as the wire's JSON (camelCase)."""
    from mcp.types import PaginatedRequestParams

    tools, cursor = [], None
    for _ in range(MAX_PAGES):
        if cursor is None:
            page = await session.list_tools()
        else:
            page = await session.list_tools(params=PaginatedRequestParams(cursor=cursor))
        dumped = page.model_dump(mode="json", by_alias=True, exclude_none=True)
        tools += dumped.get("tools") or []
        cursor = dumped.get("nextCursor")
        if not cursor or len(tools) >= MAX_TOOLS:
            break
    return tools[:MAX_TOOLS]


def _text_of(result: dict) -> str:
    """A tool result's content as text: text parts as they are, others named."""
    parts = []
    for item in result.get("content") or []:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "text":
            parts.append(str(item.get("text", "")))
        elif kind in ("image", "audio"):
            parts.append(f"[{kind} {item.get('mimeType', '')}]")
        elif kind == "resource":
            resource = item.get("resource") or {}
            parts.append(str(resource.get("text") or f"[resource {resource.get('uri', '')}]"))
        elif kind == "resource_link":
            parts.append(f"[resource {item.get('uri', '')}]")
        else:
            parts.append(f"[{kind}]")
    if not parts and result.get("structuredContent") is not None:
        return json.dumps(result["structuredContent"], ensure_ascii=False)
    return "\n".join(parts)


@contextlib.contextmanager
def _deadline(seconds: float):
    import anyio

    with anyio.fail_after(seconds):
        yield


def _leaf(error: BaseException) -> BaseException:
    """The first error inside exception groups (the SDK's task groups wrap what failed)."""
    for _ in range(20):
        inner = getattr(error, "exceptions", None)
        if not inner:
            return error
        error = inner[0]
    return error


def _connection_gone(error: BaseException) -> bool:
    names = {"ClosedResourceError", "BrokenResourceError", "EndOfStream"}
    return type(error).__name__ in names or "connection closed" in str(error).lower()


def _words(error: BaseException) -> str:
    return " ".join(str(error).split())[:500]
