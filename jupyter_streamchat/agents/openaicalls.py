"""A chat-completions stream's tool calls, put together from their deltas: the model's calls
of one request (a round) and what the rounds of one reply share. A model server is a remote
party, so every part is bounded (calls per response, id, name and argument sizes, the reply's
characters) and anything the API does not send is refused with :class:`Malformed`, naming
what was wrong.
"""

from __future__ import annotations

import json
import re

from .. import redact
from .base import PENDING, ToolCall, Usage
from .tools import function_name

# Longest tool-call id, name and arguments a model server may send (real ones: about 40, 64
# and a few thousand characters).
_MAX_CALL_ID = 256
_MAX_CALL_NAME = 256
MAX_ARGUMENT_CHARS = 1024 * 1024
# Ids shown as they come from the model when they look like one.
_SHOWN_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class Malformed(Exception):
    """The stream holds something the chat-completions API does not send; says what."""


def field_of(obj: dict, name: str, kind: type):
    """``obj[name]`` when it is of ``kind``, or None when absent or null: a value of another
    type is a malformed stream."""
    value = obj.get(name)
    if value is None or (isinstance(value, kind) and not (kind is int and isinstance(value, bool))):
        return value
    wanted = {dict: "an object", list: "a list", str: "a string", int: "a whole number"}[kind]
    raise Malformed(f"sent a chunk whose {name!r} is {json_kind(value)}, not {wanted}")


def json_kind(value) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)


def by_unique_name(tools: list) -> dict:
    """The tools by the function name the model sees: their own where it is valid and free,
    else prefixed with where they come from (and numbered when that is taken too)."""
    named: dict = {}
    for tool in tools:
        name = function_name(tool.name)
        if name in named:
            source = getattr(getattr(tool, "connection", None), "name", None) or "plugin"
            name = function_name(f"{source}_{tool.name}")
        base, n = name, 2
        while name in named and n < 10_000:
            name, n = function_name(f"{base[:58]}_{n}"), n + 1
        named[name] = tool
    return named


class UsageTotal:
    """The usage of a reply of several requests: their tokens added up."""

    def __init__(self):
        self.model = self.input_tokens = self.output_tokens = None

    def add(self, usage: Usage) -> Usage:
        self.model = usage.model or self.model
        if usage.input_tokens is not None:
            self.input_tokens = (self.input_tokens or 0) + usage.input_tokens
        if usage.output_tokens is not None:
            self.output_tokens = (self.output_tokens or 0) + usage.output_tokens
        return Usage(self.model, self.input_tokens, self.output_tokens)


class ReplyCalls:
    """What the requests of one reply share: the characters the model may still send, and the
    ids of the tool calls shown so far (unique within the reply)."""

    def __init__(self, max_chars: int, max_calls: int):
        self.max_chars = max_chars
        self.left = max_chars
        self.max_calls = max_calls
        self.shown_ids: set = set()

    def round(self, offers_tools: bool) -> "Round":
        return Round(self, offers_tools)

    def shown_id(self, model_id: str) -> str:
        """The id a call is shown with: the model's where it looks like one and is new."""
        shown = model_id if model_id and _SHOWN_ID.match(model_id) else ""
        n = len(self.shown_ids)
        while not shown or shown in self.shown_ids:
            n += 1
            shown = f"call-{n}"
        self.shown_ids.add(shown)
        return shown


class Call:
    """A tool call as its deltas come: the model's id and name, and the arguments so far."""

    def __init__(self, index: int):
        self.index = index
        self.model_id = ""
        self.id = ""  # as shown, given when its name is known
        self.name = ""
        self.pieces: list = []
        self.size = 0
        self.told = ""  # what the model is told of it

    @property
    def arguments(self) -> str:
        return "".join(self.pieces)

    def shown(self) -> ToolCall:
        return ToolCall(self.id, self.name, PENDING, arguments=redact.redact(self.arguments))

    def message(self) -> dict:
        """The call as it goes back to the model in the assistant message."""
        arguments = self.arguments
        try:
            json.loads(arguments or "{}")
        except ValueError:
            arguments = "{}"  # some servers parse it; the tool message says what was wrong
        return {
            "id": self.model_id,
            "type": "function",
            "function": {"name": self.name, "arguments": arguments or "{}"},
        }


class Round:
    """One request of a reply: the tool calls it streams, put together from their deltas
    (bounded: calls, id, name and arguments sizes), and how it finished."""

    def __init__(self, reply: ReplyCalls, offers_tools: bool):
        self.reply = reply
        self.offers_tools = offers_tools
        self.start()

    def start(self) -> None:
        """A new attempt: nothing streamed yet."""
        self._calls: dict = {}
        self._last = None
        self.finish = None

    def spend(self, chars: int) -> None:
        self.reply.left -= chars
        if self.reply.left < 0:
            raise Malformed(
                f"sent more than {self.reply.max_chars:,} characters in one reply (max_reply_chars)"
            )

    def feed(self, deltas: list) -> list:
        """Take a delta's ``tool_calls``; the calls whose names just became known."""
        named = []
        for delta in deltas:
            if not isinstance(delta, dict):
                raise Malformed(f"sent a tool call that is {json_kind(delta)}, not an object")
            index = field_of(delta, "index", int)
            model_id = field_of(delta, "id", str)
            function = field_of(delta, "function", dict) or {}
            name = field_of(function, "name", str)
            arguments = field_of(function, "arguments", str)
            if index is None:  # servers that leave it out send each call whole, with an id
                new = model_id and (self._last is None or self._last.model_id != model_id)
                index = len(self._calls) if new or self._last is None else self._last.index
            call = self._calls.get(index)
            if call is None:
                if len(self._calls) >= self.reply.max_calls:
                    raise Malformed(
                        f"sent more than {self.reply.max_calls} tool calls in one response "
                        "(max_tool_calls)"
                    )
                call = self._calls[index] = Call(index)
            self._last = call
            if model_id and not call.model_id:
                if len(model_id) > _MAX_CALL_ID:
                    raise Malformed(f"sent a tool call id over {_MAX_CALL_ID} characters")
                call.model_id = model_id
            if name and not call.name:
                if len(name) > _MAX_CALL_NAME:
                    raise Malformed(f"sent a tool name over {_MAX_CALL_NAME} characters")
                call.name = name
                call.id = self.reply.shown_id(call.model_id)
                named.append(call)
            if arguments:
                self.spend(len(arguments))
                call.size += len(arguments)
                if call.size > MAX_ARGUMENT_CHARS:
                    raise Malformed(
                        f"sent tool call arguments over {MAX_ARGUMENT_CHARS:,} characters"
                    )
                call.pieces.append(arguments)
        return named

    def calls(self) -> list:
        """The calls with a name, in the order of their index; each with an id for the model
        (the server's, or the one shown)."""
        calls = sorted((c for c in self._calls.values() if c.name), key=lambda c: c.index)
        for call in calls:
            call.model_id = call.model_id or call.id
        return calls
