"""Tools a model may call: a name, a description, a JSON schema of the arguments, whether the tool
only reads, and an async ``call(arguments) -> text``.

Tools come from MCP servers (``mcptools.py``) and from plug-ins: every entry point in the group
``jupyter_streamchat.tools`` whose value is a :class:`Tool` instance, a :class:`Tool` subclass
(made with no arguments), or a callable that returns a :class:`Tool` or a list of them::

    # pyproject.toml of a plug-in
    [project.entry-points."jupyter_streamchat.tools"]
    word_count = "my_package.tools:word_count"

    # my_package/tools.py
    from jupyter_streamchat.agents.tools import FunctionTool

    def count(text: str) -> str:
        return str(len(text.split()))

    word_count = FunctionTool(
        "word_count", count, "Counts the words of a text.",
        {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        read_only=True,
    )

A broken plug-in is logged and skipped, as a broken agent plug-in is.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from importlib.metadata import entry_points
from typing import Callable, Optional

TOOLS_ENTRY_POINT_GROUP = "jupyter_streamchat.tools"

# What OpenAI (and most compatible servers) accept as a function name.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NOT_NAME = re.compile(r"[^A-Za-z0-9_-]")


class ToolError(Exception):
    """A tool failed; its message is shown to the user and told to the model as it is."""


class Tool:
    """A tool a model may call. Subclasses set the attributes and implement :meth:`call`."""

    name: str = ""
    description: str = ""
    # JSON schema of the arguments (an object); the default takes none.
    parameters: Optional[dict] = None
    # True for a tool that changes nothing: by default it runs without asking the user.
    read_only: bool = False
    # Where the tool comes from, for messages: "plug-in 'x'", "MCP server 'y'".
    origin: str = ""

    async def call(self, arguments: dict) -> str:
        """Run the tool with the model's arguments; return its result as text, or raise
        :class:`ToolError` with words for the user (and the model)."""
        raise NotImplementedError

    def schema(self) -> dict:
        """The arguments' JSON schema, as sent to the model."""
        parameters = self.parameters if isinstance(self.parameters, dict) else None
        return dict(parameters) if parameters else {"type": "object", "properties": {}}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}{' read-only' if self.read_only else ''}>"


class FunctionTool(Tool):
    """A tool made of a function (sync or async) that takes the arguments as keywords and
    returns text (anything else is turned into text with ``str``)."""

    def __init__(
        self,
        name: str,
        function: Callable,
        description: str = "",
        parameters: Optional[dict] = None,
        read_only: bool = False,
    ):
        self.name = name
        self.function = function
        self.description = description or inspect.getdoc(function) or ""
        self.parameters = parameters
        self.read_only = read_only

    async def call(self, arguments: dict) -> str:
        if inspect.iscoroutinefunction(self.function):
            result = await self.function(**arguments)
        else:
            # A function may block (files, subprocesses): not on the server's event loop.
            result = await asyncio.to_thread(self.function, **arguments)
        return result if isinstance(result, str) else str(result)


def function_name(name: str) -> str:
    """``name`` as a valid function name for the model: other characters become ``_``, cut to
    64 characters."""
    if _NAME.match(name or ""):
        return name
    return (_NOT_NAME.sub("_", name or "") or "tool")[:64]


def load_plugin_tools(log, wanted=("*",)) -> list:
    """The tools of the installed plug-ins whose entry-point names are in ``wanted`` (``"*"``:
    all). A broken plug-in is logged and skipped."""
    wanted = set(wanted)
    tools: list = []
    for ep in sorted(entry_points(group=TOOLS_ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        if "*" not in wanted and ep.name not in wanted:
            continue
        try:
            found = _tools_of(ep.load())
        except Exception:
            log.exception("streamchat: skipping tool plug-in %r (%s)", ep.name, ep.value)
            continue
        for tool in found:
            tool.origin = tool.origin or f"plug-in {ep.name!r}"
            tools.append(tool)
    return tools


def _tools_of(value) -> list:
    if isinstance(value, Tool):
        return [_checked(value)]
    if isinstance(value, type) and issubclass(value, Tool):
        return [_checked(value())]
    if callable(value):
        made = value()
        if isinstance(made, Tool):
            return [_checked(made)]
        made = list(made)[:1000]  # a plug-in is trusted code, but a bounded one all the same
        return [_checked(tool) for tool in made]
    raise TypeError(f"{value!r} is not a Tool, a Tool subclass, or a function that returns Tools")


def _checked(tool) -> Tool:
    if not isinstance(tool, Tool):
        raise TypeError(f"{tool!r} is not a jupyter_streamchat Tool")
    if not isinstance(tool.name, str) or not tool.name:
        raise TypeError(f"{tool!r} has no name")
    return tool
