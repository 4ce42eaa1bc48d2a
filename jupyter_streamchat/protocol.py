"""The wire contract, version 1: parsing client frames and building server frames.

Every frame is one JSON text. Readers ignore unknown extra fields. This module is the only
place that knows field names; the hub and the handlers speak in Python values.
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _json_str  # C-accelerated
from json.encoder import encode_basestring as _json_text  # C-accelerated, keeps non-ASCII
from typing import Any, Optional

from .agents.base import (
    ALLOW_ONCE,
    COMPLETED,
    DECISIONS,
    FAILED,
    PENDING,
    RUNNING,
    TOOL_STATUSES,
)
from .redact import redact

# What a notebook agent may report of a call ("waiting" is the hub's own).
AGENT_TOOL_STATUSES = frozenset({PENDING, RUNNING, COMPLETED, FAILED})

PROTOCOL_VERSION = 1

# Message statuses go on the wire as the store keeps them.
from .store.records import (  # noqa: E402, F401 (re-exported)
    COMPLETE,
    ERROR,
    FINAL_STATUSES,
    INTERRUPTED,
    STOPPED,
    STREAMING,
)

MAX_ID_LENGTH = 200


class ProtocolError(Exception):
    """A client request the server refuses; becomes an ``ERROR`` frame, the socket stays open."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        client_message_id: str | None = None,
        message_id: str | None = None,
        conversation_id: str | None = None,
        request_id: str | None = None,
        agent_id: str | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        # The offending request's ids, for the ERROR frame (see error_frame).
        self.ids = {
            name: value
            for name, value in (
                ("client_message_id", client_message_id),
                ("message_id", message_id),
                ("conversation_id", conversation_id),
                ("request_id", request_id),
                ("agent_id", agent_id),
            )
            if value is not None
        }


# Machine-readable ``code`` values of ERROR frames (documented in docs/protocol.md).
BAD_JSON = "bad_json"
UNKNOWN_TYPE = "unknown_type"
BAD_FIELD = "bad_field"
TOO_LARGE = "too_large"
UNKNOWN_MESSAGE = "unknown_message"
UNKNOWN_AGENT = "unknown_agent"
NOT_A_REPLY = "not_a_reply"
STORE_UNAVAILABLE = "store_unavailable"
CONVERSATION_DELETED = "conversation_deleted"
TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
INTERNAL = "internal_error"
# Notebook agents (docs/protocol.md, "Agents in a kernel").
AGENT_EXISTS = "agent_exists"  # REGISTER_AGENT of a server agent's id
AGENT_TAKEN = "agent_taken"  # REGISTER_AGENT of an id another connection registered
TOO_MANY_AGENTS = "too_many_agents"
UNKNOWN_REQUEST = "unknown_request"  # AGENT_OUTPUT or AGENT_DONE of no request of this socket
# ANSWER_TOOL_CALL of a call that is not waiting: answered already (in another view), ended,
# or not a call of that reply.
NOT_WAITING = "not_waiting"

# Numbers a JSON reader in any language holds exactly (JavaScript's safe integers).
MAX_SEQ = 2**53 - 1
# Deeper than this, a frame is not a request of this contract, and parsing it costs stack.
MAX_DEPTH = 32


@dataclass(frozen=True)
class SendMessage:
    conversation_id: str
    agent_id: str
    text: str
    client_message_id: str
    # What the user attached (cells, an error, files, variables): a list of context items
    # with wire names, as checked by _check_context; None when nothing was.
    context: Optional[list] = None


@dataclass(frozen=True)
class AnswerToolCall:
    """The user's answer to a tool call waiting for approval."""

    message_id: str
    tool_call_id: str
    decision: str  # allow_once, allow_always or reject


@dataclass(frozen=True)
class StopGenerating:
    message_id: str


@dataclass(frozen=True)
class Subscribe:
    conversation_id: str


@dataclass(frozen=True)
class Unsubscribe:
    conversation_id: str


@dataclass(frozen=True)
class Resume:
    message_id: str
    after_seq: int


@dataclass(frozen=True)
class LoadHistory:
    conversation_id: str
    before_message_id: str


@dataclass(frozen=True)
class WatchConversations:
    """From now on, tell this socket of every change to the user's conversation list."""


@dataclass(frozen=True)
class UnwatchConversations:
    pass


@dataclass(frozen=True)
class ListAgents:
    """Which agents the hub offers (answered by AGENTS): for clients without REST, such as a
    view whose frames go through the kernel."""


@dataclass(frozen=True)
class RegisterAgent:
    """A kernel offers one of its functions as an agent (a notebook agent)."""

    agent_id: str
    name: str = ""
    description: str = ""
    owner: str = ""  # what registered it, in words (a notebook's path), shown in conflicts


@dataclass(frozen=True)
class UnregisterAgent:
    agent_id: str


@dataclass(frozen=True)
class AgentOutput:
    """What a notebook agent produced for one AGENT_REQUEST since its last such frame."""

    request_id: str
    text: str = ""
    reasoning: str = ""
    usage: Optional[dict] = None  # Python names, as usage_from_wire gives them
    tool_calls: Optional[list] = None  # ToolCall states, in the order they happened


@dataclass(frozen=True)
class AgentDone:
    request_id: str
    error: Optional[str] = None


Request = (
    SendMessage
    | StopGenerating
    | Subscribe
    | Unsubscribe
    | Resume
    | LoadHistory
    | WatchConversations
    | UnwatchConversations
    | ListAgents
    | RegisterAgent
    | UnregisterAgent
    | AgentOutput
    | AgentDone
    | AnswerToolCall
)

# Field kinds that may be left out, and what a missing one stands for: "label", a short string
# (a name); "about", a longer one (a description); "piece", a text that may be empty (part of
# an agent's output); "why", an error message; "usage", a usage object as on a final frame.
# "context", the items attached to a message; "toolcalls", a notebook agent's tool-call states.
_OPTIONAL = {
    "label": "",
    "about": "",
    "piece": "",
    "why": None,
    "usage": None,
    "context": None,
    "toolcalls": None,
}
MAX_DESCRIPTION_LENGTH = 2000

# type -> (request class, [(wire field, python kind)])
_REQUESTS: dict[str, tuple[type, list[tuple[str, str]]]] = {
    "SEND_MESSAGE": (
        SendMessage,
        [
            ("conversationId", "id"),
            ("agentId", "id"),
            ("text", "text"),
            ("clientMessageId", "id"),
            ("context", "context"),
        ],
    ),
    "STOP_GENERATING": (StopGenerating, [("messageId", "id")]),
    "SUBSCRIBE": (Subscribe, [("conversationId", "id")]),
    "UNSUBSCRIBE": (Unsubscribe, [("conversationId", "id")]),
    "RESUME": (Resume, [("messageId", "id"), ("afterSeq", "seq")]),
    "LOAD_HISTORY": (LoadHistory, [("conversationId", "id"), ("beforeMessageId", "id")]),
    "WATCH_CONVERSATIONS": (WatchConversations, []),
    "UNWATCH_CONVERSATIONS": (UnwatchConversations, []),
    "LIST_AGENTS": (ListAgents, []),
    "REGISTER_AGENT": (
        RegisterAgent,
        [("agentId", "id"), ("name", "label"), ("description", "about"), ("owner", "label")],
    ),
    "UNREGISTER_AGENT": (UnregisterAgent, [("agentId", "id")]),
    "AGENT_OUTPUT": (
        AgentOutput,
        [
            ("requestId", "id"),
            ("text", "piece"),
            ("reasoning", "piece"),
            ("usage", "usage"),
            ("toolCalls", "toolcalls"),
        ],
    ),
    "AGENT_DONE": (AgentDone, [("requestId", "id"), ("error", "why")]),
    "ANSWER_TOOL_CALL": (
        AnswerToolCall,
        [("messageId", "id"), ("toolCallId", "id"), ("decision", "decision")],
    ),
}

# The id fields echoed back in an ERROR so a client can tell which request failed, by their
# wire names and as ProtocolError and error_frame take them.
_ID_FIELDS = {
    "clientMessageId": "client_message_id",
    "messageId": "message_id",
    "conversationId": "conversation_id",
    "requestId": "request_id",
}
# ... and, for these requests, the agent's id too (their ERRORs are about that agent).
_AGENT_ID_ECHOED = ("REGISTER_AGENT", "UNREGISTER_AGENT")


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value, counting no further than ``limit + 1``."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def parse_request(raw: str | bytes, max_text_bytes: int) -> Request:
    """Parse and validate one client frame; raise ProtocolError with a precise code."""
    if isinstance(raw, bytes):
        raise ProtocolError(BAD_JSON, "frames must be JSON text, not binary")
    try:
        # Strict JSON: Python's reader would take NaN and Infinity, which no other reads.
        data = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise ProtocolError(BAD_JSON, f"frame is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:
        raise ProtocolError(BAD_JSON, f"frame is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ProtocolError(BAD_JSON, "frame must be a JSON object")
    if _depth(data, MAX_DEPTH) > MAX_DEPTH:
        raise ProtocolError(BAD_JSON, f"frame is nested deeper than {MAX_DEPTH} levels")
    ids = {
        name: data[wire]
        for wire, name in _ID_FIELDS.items()
        if isinstance(data.get(wire), str) and _is_id(data[wire])
    }
    if "type" not in data:
        raise ProtocolError(UNKNOWN_TYPE, "frame has no 'type'", **ids)
    kind = data["type"]
    if not isinstance(kind, str):
        raise ProtocolError(BAD_FIELD, "'type' must be a string", **ids)
    if kind not in _REQUESTS:
        known = ", ".join(_REQUESTS)
        raise ProtocolError(
            UNKNOWN_TYPE, f"unknown type {_shown(kind)}; expected one of {known}", **ids
        )
    cls, fields = _REQUESTS[kind]
    if (
        kind in _AGENT_ID_ECHOED
        and isinstance(data.get("agentId"), str)
        and _is_id(data["agentId"])
    ):
        ids["agent_id"] = data["agentId"]
    values = []
    for name, check in fields:
        if name not in data:
            if check in _OPTIONAL:
                values.append(_OPTIONAL[check])
                continue
            raise ProtocolError(BAD_FIELD, f"{kind} needs field {name!r}", **ids)
        values.append(_check_field(kind, name, check, data[name], max_text_bytes, ids))
    return cls(*values)


def _is_unicode(value: str) -> bool:
    """False for strings with lone surrogates, which JSON can carry (as \\ud800) but UTF-8,
    the store and every other reader cannot."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_id(value: str) -> bool:
    return 0 < len(value) <= MAX_ID_LENGTH and _is_unicode(value)


def _shown(value: str) -> str:
    """A client's string, safe and short enough to quote back in an ERROR."""
    return repr(
        value[:MAX_ID_LENGTH].encode("utf-8", "backslashreplace").decode("ascii", "replace")
    )


def _check_field(
    kind: str, name: str, check: str, value: Any, max_text_bytes: int, ids: dict
) -> Any:
    if check == "seq":
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SEQ:
            raise ProtocolError(
                BAD_FIELD, f"{kind}.{name} must be an integer from 0 to {MAX_SEQ}", **ids
            )
        return value
    if check == "usage":
        return _check_usage(kind, name, value, ids)
    if check == "context":
        return _check_context(kind, name, value, max_text_bytes, ids)
    if check == "toolcalls":
        return _check_tool_calls(kind, name, value, max_text_bytes, ids)
    if check == "decision":
        if not isinstance(value, str) or value not in DECISIONS:
            raise ProtocolError(
                BAD_FIELD, f"{kind}.{name} must be one of {', '.join(sorted(DECISIONS))}", **ids
            )
        return value
    if not isinstance(value, str):
        raise ProtocolError(BAD_FIELD, f"{kind}.{name} must be a string", **ids)
    if not _is_unicode(value):
        raise ProtocolError(
            BAD_FIELD, f"{kind}.{name} is not valid Unicode (it holds a lone surrogate)", **ids
        )
    if check == "id":
        if not value or len(value) > MAX_ID_LENGTH:
            raise ProtocolError(
                BAD_FIELD, f"{kind}.{name} must be 1 to {MAX_ID_LENGTH} characters", **ids
            )
        return value
    if check in ("label", "about"):
        longest = MAX_ID_LENGTH if check == "label" else MAX_DESCRIPTION_LENGTH
        if len(value) > longest:
            raise ProtocolError(
                BAD_FIELD, f"{kind}.{name} must be at most {longest} characters", **ids
            )
        return value
    # check in ("text", "piece", "why"): a text; only "text" must not be empty
    if not value and check == "text":
        raise ProtocolError(BAD_FIELD, f"{kind}.{name} must not be empty", **ids)
    size = len(value.encode("utf-8"))
    if size > max_text_bytes:
        raise ProtocolError(
            TOO_LARGE, f"{kind}.{name} is {size} bytes; the limit is {max_text_bytes}", **ids
        )
    return value


def _check_usage(kind: str, name: str, value: Any, ids: dict) -> dict:
    """A usage object as a final MESSAGE_CHUNK carries it -> its Python names."""
    if not (
        isinstance(value, dict)
        and _usage(value)
        and len(value.get("model", "")) <= MAX_ID_LENGTH
        and _is_unicode(value.get("model", ""))
    ):
        raise ProtocolError(
            BAD_FIELD,
            f"{kind}.{name} must be an object of model (a string of at most "
            f"{MAX_ID_LENGTH} characters), inputTokens and outputTokens (integers from 0 to "
            f"{MAX_SEQ}), each optional",
            **ids,
        )
    return usage_from_wire(value)


# -- attached context and tool calls -------------------------------------------------------

CONTEXT_KINDS = frozenset({"cell", "selection", "error", "file", "variable"})
MAX_CONTEXT_ITEMS = 20
# Optional string fields of a context item, and their longest (characters).
_CONTEXT_STRINGS = {"label": MAX_DESCRIPTION_LENGTH, "path": 4096, "language": 100, "mime": 100}


def _check_context(kind: str, name: str, value: Any, max_text_bytes: int, ids: dict) -> list:
    """A SEND_MESSAGE's ``context``: at most MAX_CONTEXT_ITEMS items of a known kind whose
    texts, all together, fit in the same byte limit as the message text."""

    def refuse(why: str, code: str = BAD_FIELD):
        raise ProtocolError(code, f"{kind}.{name} {why}", **ids)

    if not isinstance(value, list):
        refuse("must be a list of context items")
    if len(value) > MAX_CONTEXT_ITEMS:
        refuse(f"has {len(value)} items; at most {MAX_CONTEXT_ITEMS} may be attached")
    items, size = [], 0
    for i, item in enumerate(value):
        if not isinstance(item, dict) or item.get("kind") not in CONTEXT_KINDS:
            refuse(
                f"[{i}] must be an object whose kind is one of {', '.join(sorted(CONTEXT_KINDS))}"
            )
        text = item.get("text")
        if not isinstance(text, str) or not _is_unicode(text):
            refuse(f"[{i}].text must be a string of valid Unicode")
        size += len(text.encode("utf-8"))
        clean = {"kind": item["kind"], "label": "", "text": text}
        for field_name, longest in _CONTEXT_STRINGS.items():
            if field_name in item:
                got = item[field_name]
                if not isinstance(got, str) or len(got) > longest or not _is_unicode(got):
                    refuse(f"[{i}].{field_name} must be a string of at most {longest} characters")
                clean[field_name] = got
        if "cell" in item:
            if not _seq(item["cell"], 0):
                refuse(f"[{i}].cell must be a cell index (an integer from 0)")
            clean["cell"] = item["cell"]
        items.append(clean)
    if size > max_text_bytes:
        refuse(f"holds {size} bytes of text; the limit is {max_text_bytes}", TOO_LARGE)
    return items or None


# Longest result, error and arguments a tool-call state carries (characters); longer ones are
# cut with a note, so one tool's output cannot swell every frame and replay after it.
MAX_TOOL_RESULT_CHARS = 16 * 1024
MAX_TOOL_ARGUMENTS_CHARS = 64 * 1024
MAX_TOOL_ERROR_CHARS = 2000
MAX_TOOL_DIFF_CHARS = 64 * 1024
# A notebook agent sends at most this many tool-call states in one AGENT_OUTPUT.
MAX_TOOL_STATES = 1000
_TOOL_STRINGS = ("title", "kind", "result", "error")
_CUT_NOTE = "\n…[cut]"


def _cut(text: str, longest: int) -> str:
    return text if len(text) <= longest else text[:longest] + _CUT_NOTE


def tool_call_wire(
    call, decision: str | None = None, started: float | None = None, ended: float | None = None
) -> dict:
    """A ``ToolCall`` state as MESSAGE_CHUNK's ``toolCalls`` carries it, cut to size; the
    hub adds what the user decided and when the call started and ended (epoch seconds)."""
    wire = {
        "id": call.id,
        "name": call.name,
        "status": call.status,
        "arguments": _cut(call.arguments or "", MAX_TOOL_ARGUMENTS_CHARS),
    }
    if call.title is not None:
        wire["title"] = _cut(call.title, MAX_DESCRIPTION_LENGTH)
    if call.kind is not None:
        wire["kind"] = call.kind[:MAX_ID_LENGTH]
    if call.result is not None:
        wire["result"] = _cut(redact(call.result), MAX_TOOL_RESULT_CHARS)
    if call.error is not None:
        wire["error"] = _cut(redact(call.error), MAX_TOOL_ERROR_CHARS)
    if call.diff is not None:
        wire["diff"] = {
            "path": str(call.diff.get("path", ""))[:4096],
            "oldText": _cut(str(call.diff.get("oldText") or ""), MAX_TOOL_DIFF_CHARS),
            "newText": _cut(str(call.diff.get("newText") or ""), MAX_TOOL_DIFF_CHARS),
        }
    if decision is not None:
        wire["decision"] = decision
    if started is not None:
        wire["startedAt"] = round(started, 3)
    if ended is not None:
        wire["endedAt"] = round(ended, 3)
    return wire


def tool_call_from_wire(state: dict):
    """The ``ToolCall`` a checked wire state (a notebook agent's) stands for."""
    from .agents.base import ToolCall

    diff = state.get("diff")
    return ToolCall(
        state["id"],
        state["name"],
        state["status"],
        state.get("arguments", ""),
        state.get("title"),
        state.get("kind"),
        state.get("result"),
        state.get("error"),
        dict(diff) if diff else None,
    )


def _check_tool_calls(kind: str, name: str, value: Any, max_text_bytes: int, ids: dict) -> list:
    """An AGENT_OUTPUT's ``toolCalls``: states a notebook agent reported, as ToolCalls."""
    if not isinstance(value, list) or len(value) > MAX_TOOL_STATES:
        raise ProtocolError(
            BAD_FIELD, f"{kind}.{name} must be a list of at most {MAX_TOOL_STATES} states", **ids
        )
    calls = []
    for i, state in enumerate(value):
        if not (
            isinstance(state, dict)
            and _id(state.get("id"))
            and _id(state.get("name"))
            and state.get("status") in AGENT_TOOL_STATUSES
            and isinstance(state.get("arguments", ""), str)
            and all(isinstance(state.get(k, ""), str) for k in _TOOL_STRINGS)
            and _diff(state.get("diff"))
            and all(_is_unicode(v) for v in state.values() if isinstance(v, str))
        ):
            raise ProtocolError(
                BAD_FIELD,
                f"{kind}.{name}[{i}] must be a tool-call state: id, name, status (one of "
                f"{', '.join(sorted(AGENT_TOOL_STATUSES))}), and optional arguments, title, kind, "
                "result, error (strings) and diff",
                **ids,
            )
        calls.append(tool_call_from_wire(state))
    return calls or None


def _diff(value: Any) -> bool:
    return value is None or (
        isinstance(value, dict)
        and all(isinstance(value.get(k, ""), str) for k in ("path", "oldText", "newText"))
    )


def _tool_state(state: Any) -> bool:
    """A tool-call state as a server frame or a stored message carries it."""
    return (
        isinstance(state, dict)
        and _id(state.get("id"))
        and isinstance(state.get("name"), str)
        and state.get("status") in TOOL_STATUSES
        and isinstance(state.get("arguments", ""), str)
        and all(isinstance(state.get(k, ""), str) for k in _TOOL_STRINGS)
        and _diff(state.get("diff"))
        and state.get("decision", ALLOW_ONCE) in DECISIONS
        and all(_seconds(state[k]) for k in ("startedAt", "endedAt") if k in state)
    )


def _tool_states(value: Any) -> bool:
    return isinstance(value, list) and all(_tool_state(s) for s in value)


# Said of a call that never finished when its reply ended (stopped, interrupted, failed).
from .store.toolcalls import NOT_RUN  # noqa: E402, F401 (re-exported)

# A frame's tool-call states, written as the stores keep them (ASCII JSON; see ChunkFrames).
from .store.base import FrameText  # noqa: E402
from .store.toolcalls import dumps as _tool_calls_json  # noqa: E402


def ended_tool_calls(states: list) -> list:
    """``states`` as an ended reply shows them: a call still pending, running or waiting never
    finished, so it is shown failed."""
    return [
        s if s["status"] in (COMPLETED, FAILED) else {**s, "status": FAILED, "error": NOT_RUN}
        for s in states
    ]


def request_frame(request: Request) -> dict:
    """A request as a client sends it (the kernel's follower): the inverse of parse_request.
    An optional field holding what its absence means is left out."""
    for kind, (cls, fields) in _REQUESTS.items():
        if isinstance(request, cls):
            frame = {"type": kind}
            for (name, check), value in zip(fields, vars(request).values()):
                if check in _OPTIONAL and value == _OPTIONAL[check]:
                    continue
                if check == "usage":
                    value = usage_wire(value)
                elif check == "toolcalls":
                    value = [tool_call_wire(call) for call in value]
                frame[name] = value
            return frame
    raise TypeError(f"not a request: {request!r}")


_WIRE_ID_NAMES = {name: wire for wire, name in _ID_FIELDS.items()}
# An ERROR about a notebook agent names it too (ProtocolError(agent_id=...)).
_ERROR_ID_NAMES = {**_WIRE_ID_NAMES, "agent_id": "agentId"}


def request_ids(request: Request) -> dict:
    """The ids of a request, for the ERROR that answers it (``ProtocolError(**ids)``)."""
    return {k: v for k, v in vars(request).items() if k in _WIRE_ID_NAMES}


def frame_ids(data: Any) -> dict:
    """The well-formed ids a client frame not parsed (yet) names, for an ERROR refusing it
    (``error_frame(code, message, **ids)``)."""
    if not isinstance(data, dict):
        return {}
    return {
        name: data[wire]
        for wire, name in _ID_FIELDS.items()
        if isinstance(data.get(wire), str) and _is_id(data[wire])
    }


# -- server frames -------------------------------------------------------------------------


def dumps(frame: dict) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


def error_frame(code: str, message: str, **ids: Any) -> dict:
    """``ids``: the offending request's ``client_message_id``, ``message_id`` and
    ``conversation_id``, where it has them."""
    frame = {"type": "ERROR", "code": code, "message": redact(message)}
    frame.update((_ERROR_ID_NAMES[name], value) for name, value in ids.items())
    return frame


def accepted_frame(accepted: Any, context: Optional[list] = None) -> dict:
    """MESSAGE_ACCEPTED; ``text`` (the user's message) and ``context`` (what was attached to
    it) are extra fields so other tabs can show it."""
    frame = {
        "type": "MESSAGE_ACCEPTED",
        "clientMessageId": accepted.client_message_id,
        "conversationId": accepted.conversation_id,
        "userMessageId": accepted.user_message_id,
        "messageId": accepted.message_id,
        "agentId": accepted.agent_id,
        "text": accepted.text,
    }
    if context:
        frame["context"] = context
    return frame


def message_wire(message) -> dict:
    """A stored message (a ``store.MessageRecord``) as HISTORY, HISTORY_PAGE and REST show it."""
    wire = {
        "messageId": message.message_id,
        "role": message.role,
        "agentId": message.agent_id,
        "text": message.text,
        "status": message.status,
        "lastSeq": message.last_seq,
        "createdAt": message.created_at,
    }
    if message.error is not None:
        wire["error"] = redact(message.error)  # as stored, perhaps before it was redacted
    if message.reasoning:
        wire["reasoning"] = message.reasoning
    if message.usage:
        wire["usage"] = usage_wire(message.usage)
    if message.truncated:
        wire["truncated"] = True  # the rest comes with RESUME {afterSeq: lastSeq}
    calls = getattr(message, "tool_calls", None)
    if calls:
        wire["toolCalls"] = ended_tool_calls(calls) if message.status != STREAMING else calls
    context = getattr(message, "context", None)
    if context:
        wire["context"] = context
    return wire


def history_frame(page) -> dict:
    """HISTORY of a ``store.HistoryPage``: the latest messages of a conversation."""
    return {
        "type": "HISTORY",
        "conversationId": page.conversation_id,
        "messages": [message_wire(m) for m in page.messages],
        "hasMore": page.has_more,
    }


def history_page_frame(page, before_message_id: str) -> dict:
    return {
        "type": "HISTORY_PAGE",
        "conversationId": page.conversation_id,
        "beforeMessageId": before_message_id,
        "messages": [message_wire(m) for m in page.messages],
        "hasMore": page.has_more,
    }


# GET api/conversations: conversations per page unless ``limit`` says otherwise, and at most.
LIST_PAGE = 50
LIST_PAGE_MAX = 500
# Longest title PATCH api/conversations/{id} takes.
TITLE_MAX = 200
# Longest text GET api/conversations?q= searches for: what the search index is made for.
from .store.search import SEARCH_MAX  # noqa: E402, F401 (re-exported)


def list_cursor(updated_at: float, conversation_id: str) -> str:
    """Where the next page of the conversation list starts: opaque to clients."""
    raw = json.dumps([updated_at, conversation_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# Longest ``after`` a client may send back: a cursor of the longest id, all of it escaped, fits.
CURSOR_MAX = 4096
_CURSOR = re.compile(r"[A-Za-z0-9_-]+")


def parse_list_cursor(cursor: str) -> tuple:
    """The ``(updated_at, conversation_id)`` of a cursor made by :func:`list_cursor`; raises
    ValueError for anything else (forged, cut, nested, out of range, not valid Unicode), so no
    client's text reaches the store as a cursor."""
    if len(cursor) > CURSOR_MAX or not _CURSOR.fullmatch(cursor):
        raise ValueError("not a cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, TypeError, RecursionError) as e:
        raise ValueError("not a cursor") from e
    if not (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], (int, float))
        and not isinstance(value[0], bool)
        and math.isfinite(value[0])
        and abs(value[0]) <= MAX_SEQ
        and isinstance(value[1], str)
        and value[1]
        and _is_unicode(value[1])
    ):
        raise ValueError("not a cursor")
    return value[0], value[1]


def id_problem(value: str) -> str | None:
    """What is wrong with an id a client sent outside a frame (a REST path), or None."""
    if not value or len(value) > MAX_ID_LENGTH:
        return f"must be 1 to {MAX_ID_LENGTH} characters"
    if not _is_unicode(value):
        return "is not valid Unicode (it holds a lone surrogate)"
    return None


def text_problem(value: str) -> str | None:
    """What is wrong with a text a client sent outside a frame (a title), or None."""
    if not _is_unicode(value):
        return "is not valid Unicode (it holds a lone surrogate)"
    return None


def conversation_wire(conversation, waiting: bool = False) -> dict:
    """A ``store.ConversationRecord`` as ``GET api/conversations`` lists it (and
    CONVERSATION_UPDATED carries it); ``snippet`` only in search results; ``waiting`` while a
    reply in it waits for the user to approve a tool call."""
    wire = {
        "conversationId": conversation.conversation_id,
        "title": conversation.title,
        "createdAt": conversation.created_at,
        "updatedAt": conversation.updated_at,
        "messageCount": conversation.message_count,
        "agentId": conversation.agent_id,
        "streaming": conversation.streaming,
    }
    if conversation.snippet is not None:
        wire["snippet"] = conversation.snippet
    if waiting:
        wire["waiting"] = True
    return wire


def agents_body(agents: list, max_message_bytes: int) -> dict:
    """GET api/agents: each agent's ``info()``, and the largest message text the hub takes, so
    a client refuses a larger one itself."""
    return {"agents": agents, "maxMessageBytes": max_message_bytes}


def agents_frame(agents: list, max_message_bytes: int | None) -> dict:
    """AGENTS, answering LIST_AGENTS: what GET api/agents answers, as a frame (without
    ``maxMessageBytes`` when the hub was not told its limit)."""
    frame = {"type": "AGENTS", **agents_body(agents, max_message_bytes)}
    if max_message_bytes is None:
        del frame["maxMessageBytes"]
    return frame


def conversation_list_body(page: list, more: bool, waiting: frozenset = frozenset()) -> dict:
    """GET api/conversations: a page of the list; ``next`` is the ``after`` of the next one.
    ``waiting``: the ids of conversations a reply of which waits for an approval."""
    last = page[-1] if more and page else None
    return {
        "conversations": [conversation_wire(c, c.conversation_id in waiting) for c in page],
        "next": list_cursor(last.updated_at, last.conversation_id) if last else None,
    }


def conversation_body(conversation_id: str, messages: list) -> dict:
    """GET api/conversations/{id}: the whole conversation."""
    return {"conversationId": conversation_id, "messages": [message_wire(m) for m in messages]}


def renamed_body(conversation_id: str, title: str) -> dict:
    """PATCH api/conversations/{id}: the title as stored."""
    return {"conversationId": conversation_id, "title": title}


def conversation_updated_frame(conversation, waiting: bool = False) -> dict:
    """CONVERSATION_UPDATED: a conversation's list entry as it is now."""
    return {
        "type": "CONVERSATION_UPDATED",
        "conversationId": conversation.conversation_id,
        "conversation": conversation_wire(conversation, waiting),
    }


def conversation_deleted_frame(conversation_id: str) -> dict:
    return {"type": "CONVERSATION_DELETED", "conversationId": conversation_id}


# -- notebook agents (a kernel's functions answering as agents) ------------------------------


def agent_request_frame(request_id: str, agent_id: str, request) -> dict:
    """AGENT_REQUEST: to the kernel that registered ``agent_id``, an ``AgentRequest`` to run."""
    return {
        "type": "AGENT_REQUEST",
        "requestId": request_id,
        "agentId": agent_id,
        "conversationId": request.conversation_id,
        "text": request.text,
        "history": [_turn_wire(m) for m in request.history],
        **({"context": request.context} if request.context else {}),
    }


def _turn_wire(message: dict) -> dict:
    turn = {"role": message["role"], "text": message["text"]}
    if message.get("context"):
        turn["context"] = message["context"]
    return turn


def agent_cancel_frame(request_id: str) -> dict:
    return {"type": "AGENT_CANCEL", "requestId": request_id}


def agent_registered_frame(agent_id: str) -> dict:
    return {"type": "AGENT_REGISTERED", "agentId": agent_id}


def agents_changed_frame(agents: list) -> dict:
    """AGENTS_CHANGED: every agent's ``info()`` (the ``agents`` of GET api/agents), sent to
    every client when a notebook agent comes, changes or goes."""
    return {"type": "AGENTS_CHANGED", "agents": agents}


# A reply's usage: Python names (as agents report them and the store keeps them) -> wire names.
USAGE_FIELDS = {
    "model": "model",
    "input_tokens": "inputTokens",
    "output_tokens": "outputTokens",
    "first_token_seconds": "firstTokenSeconds",
    "duration_seconds": "durationSeconds",
}


def usage_wire(usage: dict) -> dict:
    return {USAGE_FIELDS[k]: v for k, v in usage.items() if k in USAGE_FIELDS and v is not None}


def usage_from_wire(usage: dict) -> dict:
    names = {wire: name for name, wire in USAGE_FIELDS.items()}
    return {names[k]: v for k, v in usage.items() if k in names}


class ChunkFrames:
    """Builds the MESSAGE_CHUNK frames of one reply as JSON text.

    Replaying thousands of stored chunks is on the resume path, so the constant part of the
    frame is encoded once and each frame costs one string escape and one format. A store may
    spell the frames it replays itself (``text_shape``, ``Store.replay_frames``: SQLite does,
    in C): so the text is escaped as SQLite's json_quote() escapes it (non-ASCII characters
    as they are; the hub only sends text that UTF-8 can hold), and tool-call states are
    written as the stores keep them (``toolcalls.dumps``), so that a replayed frame is byte
    for byte the frame sent live.
    """

    def __init__(self, message_id: str, conversation_id: str, agent_id: str):
        self._head = (
            '{"type":"MESSAGE_CHUNK","messageId":%s,"conversationId":%s,"agentId":%s,"seq":'
            % (_json_str(message_id), _json_str(conversation_id), _json_str(agent_id))
        )

    def chunk(self, seq: int, chunk: str, reasoning: str = "", tool_calls=None) -> str:
        extra = f',"reasoning":{_json_text(reasoning)}' if reasoning else ""
        if tool_calls:
            extra += f',"toolCalls":{_tool_calls_json(tool_calls)}'
        return f'{self._head}{seq},"chunk":{_json_text(chunk)}{extra},"isComplete":false}}'

    def text_shape(self) -> FrameText:
        """How :meth:`chunk` spells a frame, for a store that spells frames it replays."""
        return FrameText(
            self._head, ',"chunk":', ',"reasoning":', ',"toolCalls":', ',"isComplete":false}'
        )

    @staticmethod
    def shape_of(message) -> FrameText:
        """The :meth:`text_shape` of the frames of ``message``, a store record."""
        return ChunkFrames(
            message.message_id, message.conversation_id, message.agent_id
        ).text_shape()

    def final(
        self,
        seq: int,
        chunk: str,
        status: str,
        error: str | None = None,
        reasoning: str = "",
        usage: dict | None = None,
        tool_calls: list | None = None,
    ) -> str:
        tail = (
            f',"error":{_json_str(redact(error))}' if status == ERROR and error is not None else ""
        )
        if reasoning:
            tail += f',"reasoning":{_json_text(reasoning)}'
        if usage:
            tail += f',"usage":{json.dumps(usage_wire(usage), separators=(",", ":"))}'
        if tool_calls:
            tail += f',"toolCalls":{_tool_calls_json(tool_calls)}'
        return (
            f'{self._head}{seq},"chunk":{_json_text(chunk)},"isComplete":true,'
            f'"status":{_json_str(status)}{tail}}}'
        )

    def run(
        self,
        first: int,
        chunks: list,
        thoughts: list,
        ending: tuple | None = None,
        usage: dict | None = None,
        tools: list | None = None,
    ) -> list:
        """Frames ``first, first + 1, ...`` of ``chunks`` (and their reasoning, and their
        tool-call states: ``tools``, None or a list as long, each None or a list), the last
        one final when ``ending`` (status, error) is given: ``[(seq, frame text, final)]``."""
        last = first + len(chunks) - 1
        tools = tools or [None] * len(chunks)
        return [
            (
                seq,
                self.final(seq, chunk, *ending, reasoning=thinking, usage=usage, tool_calls=calls),
                True,
            )
            if ending is not None and seq == last
            else (seq, self.chunk(seq, chunk, thinking, calls), False)
            for seq, chunk, thinking, calls in zip(range(first, last + 1), chunks, thoughts, tools)
        ]

    def stored(self, chunks: list, message) -> list:
        """The frames of stored chunks ``[(seq, chunk, reasoning, tool_calls)]`` (consecutive)
        of ``message``, a store record; the last is final if it is the reply's last frame."""
        if not chunks:
            return []
        ending = None
        if message.status in FINAL_STATUSES and chunks[-1][0] == message.last_seq:
            ending = (message.status, message.error)
        return self.run(
            chunks[0][0],
            [c[1] for c in chunks],
            [c[2] for c in chunks],
            ending,
            message.usage,
            [c[3] if len(c) > 3 else None for c in chunks],
        )


# -- reading server frames (the kernel's follower) -----------------------------------------

STATUSES = FINAL_STATUSES | {STREAMING}


def _id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH


def _seq(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and least <= value <= MAX_SEQ


def _seconds(value: Any) -> bool:
    """A duration, or a time in seconds since the epoch: a finite number from 0."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def _usage(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    counts = all(_seq(value[k], 0) for k in ("inputTokens", "outputTokens") if k in value)
    times = all(_seconds(value[k]) for k in ("firstTokenSeconds", "durationSeconds") if k in value)
    return counts and times and isinstance(value.get("model", ""), str)


def _conversation_entry(c: Any) -> bool:
    """A conversation as the list API and CONVERSATION_UPDATED show it."""
    return (
        isinstance(c, dict)
        and _id(c.get("conversationId"))
        and isinstance(c.get("title"), str)
        and _seconds(c.get("createdAt"))
        and _seconds(c.get("updatedAt"))
        and _seq(c.get("messageCount"), 0)
        and isinstance(c.get("agentId"), str)
        and isinstance(c.get("streaming"), bool)
        and isinstance(c.get("waiting", False), bool)
        and isinstance(c.get("snippet", ""), str)
    )


def _agent_info(a: Any) -> bool:
    return (
        isinstance(a, dict)
        and _id(a.get("id"))
        and isinstance(a.get("name"), str)
        and isinstance(a.get("description"), str)
        and isinstance(a.get("kernel", False), bool)
        and isinstance(a.get("owner", ""), str)
    )


def _turn(m: Any) -> bool:
    """One earlier message of an AGENT_REQUEST's ``history``."""
    return (
        isinstance(m, dict)
        and m.get("role") in ("user", "assistant")
        and isinstance(m.get("text"), str)
    )


def _stored_message(m: Any) -> bool:
    return (
        isinstance(m, dict)
        and _id(m.get("messageId"))
        and m.get("role") in ("user", "assistant")
        and isinstance(m.get("agentId"), str)
        and isinstance(m.get("text"), str)
        and m.get("status") in STATUSES
        and _seq(m.get("lastSeq"), 0)
        and isinstance(m.get("truncated", False), bool)
        and isinstance(m.get("error", ""), str)
        and isinstance(m.get("reasoning", ""), str)
        and ("usage" not in m or _usage(m["usage"]))
        and ("toolCalls" not in m or _tool_states(m["toolCalls"]))
        and ("context" not in m or isinstance(m["context"], list))
    )


def is_server_frame(frame: Any) -> bool:
    """Whether a parsed JSON value is a server frame of this contract (extra fields allowed).

    A reader drops what is not, rather than acting on half a frame.
    """
    if not isinstance(frame, dict):
        return False
    kind = frame.get("type")
    if kind == "MESSAGE_CHUNK":
        status = frame.get("status")
        complete = frame.get("isComplete")
        return (
            all(_id(frame.get(k)) for k in ("messageId", "conversationId", "agentId"))
            and _seq(frame.get("seq"), 1)
            and isinstance(frame.get("chunk"), str)
            and isinstance(complete, bool)
            and (status in FINAL_STATUSES if complete else status in (None, STREAMING))
            and isinstance(frame.get("error", ""), str)
            and isinstance(frame.get("reasoning", ""), str)
            and ("usage" not in frame or _usage(frame["usage"]))
            and ("toolCalls" not in frame or _tool_states(frame["toolCalls"]))
        )
    if kind == "MESSAGE_ACCEPTED":
        return all(
            _id(frame.get(k))
            for k in ("clientMessageId", "conversationId", "userMessageId", "messageId", "agentId")
        ) and isinstance(frame.get("text", ""), str)
    if kind in ("HISTORY", "HISTORY_PAGE"):
        page = kind == "HISTORY_PAGE"
        return (
            _id(frame.get("conversationId"))
            and isinstance(frame.get("messages"), list)
            and all(_stored_message(m) for m in frame["messages"])
            and isinstance(frame.get("hasMore", None if page else False), bool)
            and (not page or _id(frame.get("beforeMessageId")))
        )
    if kind == "CONVERSATION_UPDATED":
        entry = frame.get("conversation")
        return (
            _id(frame.get("conversationId"))
            and _conversation_entry(entry)
            and entry["conversationId"] == frame["conversationId"]
        )
    if kind == "CONVERSATION_DELETED":
        return _id(frame.get("conversationId"))
    if kind == "ERROR":
        return (
            isinstance(frame.get("code"), str)
            and bool(frame["code"])
            and isinstance(frame.get("message"), str)
        )
    if kind == "AGENTS":
        agents = frame.get("agents")
        return (
            isinstance(agents, list)
            and all(_agent_info(a) for a in agents)
            and ("maxMessageBytes" not in frame or _seq(frame["maxMessageBytes"], 1))
        )
    if kind == "AGENTS_CHANGED":
        agents = frame.get("agents")
        return isinstance(agents, list) and all(_agent_info(a) for a in agents)
    if kind == "AGENT_REQUEST":
        history = frame.get("history")
        return (
            all(_id(frame.get(k)) for k in ("requestId", "agentId", "conversationId"))
            and isinstance(frame.get("text"), str)
            and isinstance(history, list)
            and all(_turn(m) for m in history)
            and isinstance(frame.get("context", []), list)
        )
    if kind == "AGENT_CANCEL":
        return _id(frame.get("requestId"))
    if kind == "AGENT_REGISTERED":
        return _id(frame.get("agentId"))
    return False
