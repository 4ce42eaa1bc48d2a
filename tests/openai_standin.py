"""A stand-in for an OpenAI-compatible chat-completions server, for tests and benches.

It speaks the real streaming wire format byte for byte (server-sent events over HTTP/1.1):

    data: {"id": ..., "object": "chat.completion.chunk", ..., "choices": [{"index": 0,
           "delta": {"role": "assistant", "content": ""}, ...}], "usage": null}

    data: {... "delta": {"content": "Hello"} ...}            one per token
    data: {... "delta": {}, "finish_reason": "stop"} ...}
    data: {... "choices": [], "usage": {"prompt_tokens": ..., ...}}   with include_usage
    data: [DONE]

and errors as ``{"error": {"message", "type", "param", "code"}}`` bodies.

What it answers is chosen by the request's ``model``:

- ``standin`` (and any model not named below): the last user message, echoed back word by word
  (the content deltas concatenate to exactly that text);
- ``standin-reasoning-content``: first :data:`REASONING` as ``reasoning_content`` deltas
  (DeepSeek, vLLM), then the echo;
- ``standin-reasoning``: the same with the ``reasoning`` field (Ollama, OpenRouter);
- ``standin-think``: :data:`REASONING` inside ``<think>...</think>`` in the content, with the tags
  cut across deltas, then the echo;
- ``error-401``, ``error-404``, ``error-429`` (with ``Retry-After``), ``error-500``: that status
  with a JSON error body (the 401 one names the key it was given, as a careless server might);
- ``midstream-error``: half the echo, then a ``data: {"error": {...}}`` event, then the end;
- ``cutoff``: half the echo, then the body ends with neither a finish reason nor ``[DONE]``;
- ``length``: the echo up to ``max_tokens`` deltas (half of it without), ``finish_reason: length``;
- ``slow``: headers and the role delta at once, the first token after ``standin_delay`` seconds.

Tool calls, whatever the model: when the request offers ``tools`` and the last user message has
lines ``call NAME JSON``, the answer is "Let me use the tools. " and those calls, streamed as
OpenAI streams them: a call's first delta holds ``index``, ``id``, ``type`` and
``function.name`` (with empty arguments), its ``function.arguments`` follow in pieces of a few
characters over several deltas, the calls one after the other in one response, and the
response ends with ``finish_reason: "tool_calls"``. Once the conversation after that user
message holds ``standin_tool_rounds`` (default 1) rounds of calls with their ``tool`` results,
the answer is text quoting the last round's results: ``The tools said: [add: 5] [write_note:
noted].`` As OpenAI does, a request whose tool messages do not answer the calls before them
(every call answered, no unknown id) gets a 400.

Knobs in the request body (``extra_body`` of the OpenAI client):

- ``standin_tokens``: N content deltas instead of the echo, cycling through the user's words;
- ``standin_rate``: tokens per second (0, the default, as fast as possible);
- ``standin_delay``: seconds before the first token of ``slow`` (default 5);
- ``standin_retry_after``: the ``Retry-After`` of ``error-429`` in seconds (default 30);
- ``standin_fail_times``: answer 500 to the first N requests with the same model and messages
  (a retried request), then normally;
- ``standin_tool_rounds``: rounds of tool calls before the answer (default 1).

Every request is recorded in ``StandIn.requests`` (model, messages, the whole body, headers
minus ``Authorization``), with the monotonic times it arrived, finished, and at which the client
closed the connection before the end (``closed_at``).

Use: ``StandIn().start()`` runs it on a thread of its own (``.url`` ends in ``/v1``; ``.stop()``),
or ``python tests/openai_standin.py --port 8765`` for benches and trying the chat by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import threading
import time
import uuid

from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

REASONING = "Let me think. The user wants their own words back, so I will echo them."

_WORD = re.compile(r"\s*\S+")
_HOST = "127.0.0.1"


def split_words(text: str) -> list:
    """Word-sized deltas with their leading whitespace; they concatenate to ``text``."""
    pieces = _WORD.findall(text)
    tail = text[sum(map(len, pieces)) :]
    if tail:
        pieces = pieces[:-1] + [pieces[-1] + tail] if pieces else [tail]
    return pieces


def _text_of(content) -> str:
    """A message's content: a string, or a list of parts of which the text parts count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


_CALL = re.compile(r"^call (\S+) (.*)$", re.M)
ARGUMENT_PIECE = 7  # characters of a call's arguments per delta
TOOL_PREAMBLE = "Let me use the tools. "


def tool_plan(body: dict):
    """What a request that offers tools is answered: None (no ``call`` lines: as without
    tools), ``("call", [(name, arguments), ...])`` or ``("answer", text)``."""
    messages = body.get("messages") or []
    last_user = max(
        (i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"),
        default=None,
    )
    if not body.get("tools") or last_user is None:
        return None
    calls = _CALL.findall(_text_of(messages[last_user].get("content")))
    if not calls:
        return None
    after = messages[last_user + 1 :]
    rounds = [m for m in after if m.get("role") == "assistant" and m.get("tool_calls")]
    if len(rounds) < int(body.get("standin_tool_rounds") or 1):
        return "call", calls
    names = {c["id"]: c["function"]["name"] for m in rounds for c in m["tool_calls"]}
    last_round = {c["id"] for c in rounds[-1]["tool_calls"]}
    said = [
        f"[{names[m['tool_call_id']]}: {_text_of(m.get('content'))}]"
        for m in after
        if m.get("role") == "tool" and m.get("tool_call_id") in last_round
    ]
    return "answer", "The tools said: " + " ".join(said) + "."


def tool_messages_error(messages: list):
    """OpenAI's 400 for tool messages that do not answer the calls before them, or None."""
    waiting: set = set()
    for m in messages:
        if not isinstance(m, dict):
            return "Each message must be an object."
        role = m.get("role")
        if role == "tool":
            if m.get("tool_call_id") not in waiting:
                return (
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'."
                )
            if not isinstance(m.get("content"), str):
                return "Invalid type for 'content' of a tool message: expected a string."
            waiting.discard(m["tool_call_id"])
            continue
        if waiting:
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages "
                "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                f"response messages: {', '.join(sorted(waiting))}"
            )
        calls = (m.get("tool_calls") or []) if role == "assistant" else []
        if not isinstance(calls, list):
            return "Invalid type for 'tool_calls': expected an array."
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            if (
                not isinstance(call.get("id"), str)
                or call.get("type") != "function"
                or not isinstance(function, dict)
                or not isinstance(function.get("name"), str)
                or not isinstance(function.get("arguments"), str)
            ):
                return "Invalid 'tool_calls': each needs id, type 'function', function.name and function.arguments."
            waiting.add(call["id"])
    if waiting:
        return "An assistant message with 'tool_calls' must be followed by tool messages."
    return None


def _error_body(message: str, type_: str, code) -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


class _State:
    """What the handlers share: the record of requests and the retry counters."""

    def __init__(self, api_key):
        self.api_key = api_key
        self.requests: list = []
        self.failures: dict = {}  # (model, messages) -> 500s answered so far
        self.lock = threading.Lock()


class ChatCompletions(RequestHandler):
    def initialize(self, state: _State):
        self.state = state
        self.closed = asyncio.Event()
        self.record: dict = {}

    def on_connection_close(self):
        # Tornado calls this only when the client goes away before the response is finished.
        if "closed_at" not in self.record:
            self.record["closed_at"] = time.monotonic()
        self.closed.set()

    def check_xsrf_cookie(self):
        pass  # an API server, not a web page

    async def post(self):
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            return self._error(
                400,
                "We could not parse the JSON body of your request.",
                "invalid_request_error",
                None,
            )
        headers = {k: v for k, v in self.request.headers.get_all() if k.lower() != "authorization"}
        self.record.update(
            model=body.get("model"),
            messages=body.get("messages"),
            stream=body.get("stream"),
            stream_options=body.get("stream_options"),
            temperature=body.get("temperature"),
            max_tokens=body.get("max_tokens"),
            body=body,
            headers=headers,
            received_at=time.monotonic(),
        )
        self.state.requests.append(self.record)
        try:
            await self._answer(body)
        except StreamClosedError:
            self.on_connection_close()
        finally:
            self.record.setdefault("finished_at", time.monotonic())

    async def _answer(self, body: dict):
        model = str(body.get("model") or "standin")
        key = self.request.headers.get("Authorization", "").removeprefix("Bearer ")
        if model == "error-401" or (self.state.api_key is not None and key != self.state.api_key):
            return self._error(
                401,
                f"Incorrect API key provided: {key}.",
                "invalid_request_error",
                "invalid_api_key",
            )
        if model == "error-404":
            return self._error(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
            )
        if model == "error-429":
            self.set_header("Retry-After", str(body.get("standin_retry_after", 30)))
            return self._error(
                429,
                f"Rate limit reached for {model} on requests per min (RPM).",
                "requests",
                "rate_limit_exceeded",
            )
        if model == "error-500" or self._fail_this_time(body):
            return self._error(
                500,
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                None,
            )
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return self._error(
                400, "'messages' must be a non-empty array.", "invalid_request_error", None
            )
        if not body.get("stream"):
            return self._error(
                400, "This stand-in only streams: send stream=true.", "invalid_request_error", None
            )
        wrong = tool_messages_error(body["messages"])
        if wrong:
            return self._error(400, wrong, "invalid_request_error", None)
        await self._stream(body, model)

    def _fail_this_time(self, body: dict) -> bool:
        times = int(body.get("standin_fail_times") or 0)
        if not times:
            return False
        key = (body.get("model"), json.dumps(body.get("messages"), sort_keys=True))
        with self.state.lock:
            done = self.state.failures.get(key, 0)
            self.state.failures[key] = done + 1
        return done < times

    def _error(self, status: int, message: str, type_: str, code):
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(_error_body(message, type_, code)))

    # -- streaming --------------------------------------------------------------------------

    async def _stream(self, body: dict, model: str):
        messages = body["messages"]
        user = next(
            (
                _text_of(m.get("content"))
                for m in reversed(messages)
                if isinstance(m, dict) and m.get("role") == "user"
            ),
            "",
        )
        answer = split_words(user) or [""]
        if body.get("standin_tokens") is not None:
            words = user.split() or ["token"]
            answer = [words[i % len(words)] + " " for i in range(int(body["standin_tokens"]))]
        rate = float(body.get("standin_rate") or 0)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        # A served model name differs from the requested one on real servers too (a dated
        # snapshot); clients should report what served them.
        self.served = f"{model}-2025-01-01"
        self.chunk_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        self.include_usage = include_usage
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")

        await self._send(self._chunk({"role": "assistant", "content": ""}))
        if model == "slow" and await self._pause(float(body.get("standin_delay", 5))):
            return

        deltas: list = []
        if model == "standin-reasoning-content":
            deltas += [{"content": None, "reasoning_content": p} for p in split_words(REASONING)]
        elif model == "standin-reasoning":
            deltas += [{"content": "", "reasoning": p} for p in split_words(REASONING)]
        elif model == "standin-think":
            deltas += [
                {"content": p}
                for p in ["<th", "ink>\n", *split_words(REASONING), "\n</thi", "nk>", "\n\n"]
            ]
        finish = "stop"
        if model in ("midstream-error", "cutoff"):
            answer = answer[: max(1, len(answer) // 2)]
            finish = None
        elif model == "length":
            limit = body.get("max_tokens") or max(1, len(answer) // 2)
            answer, finish = answer[:limit], "length"
        plan = tool_plan(body)
        if plan is not None and plan[0] == "answer":
            answer = split_words(plan[1])
        elif plan is not None:
            answer, finish = [TOOL_PREAMBLE], "tool_calls"
        deltas += [{"content": p} for p in answer]
        if finish == "tool_calls":
            deltas += _call_deltas(plan[1])

        for i, delta in enumerate(deltas):
            if i and rate and await self._pause(1 / rate):
                return
            await self._send(self._chunk(delta))
            if self.closed.is_set():
                return
        if model == "midstream-error":
            await self._send(
                {
                    "error": {
                        "message": "The model crashed while generating.",
                        "type": "server_error",
                        "param": None,
                        "code": "internal_error",
                    }
                }
            )
            return self.finish()
        if finish is None:
            return self.finish()  # the body ends cleanly, but nothing says the reply is done
        await self._send(self._chunk({}, finish_reason=finish))
        if include_usage:
            prompt = sum(
                len(_text_of(m.get("content")).split()) for m in messages if isinstance(m, dict)
            )
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": len(deltas),
                "total_tokens": prompt + len(deltas),
            }
            await self._send(self._chunk(None, usage=usage))
        self.write(b"data: [DONE]\n\n")
        await self.flush()
        self.finish()

    def _chunk(self, delta, finish_reason=None, usage=None) -> dict:
        chunk = {
            "id": self.chunk_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.served,
            "system_fingerprint": "fp_standin",
            "choices": [],
        }
        if delta is not None:
            chunk["choices"] = [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ]
        if self.include_usage:
            chunk["usage"] = usage  # null on every chunk but the last, as OpenAI does
        return chunk

    async def _send(self, event: dict):
        self.write(b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n")
        await self.flush()

    async def _pause(self, seconds: float) -> bool:
        """Sleep, waking early if the client goes away; True when it did."""
        try:
            await asyncio.wait_for(self.closed.wait(), seconds)
        except asyncio.TimeoutError:
            return False
        return True


def _call_deltas(calls: list) -> list:
    """The deltas of tool calls as OpenAI streams them."""
    deltas = []
    for index, (name, arguments) in enumerate(calls):
        first = {
            "index": index,
            "id": "call_" + uuid.uuid4().hex[:24],
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        deltas.append({"tool_calls": [first]})
        for at in range(0, len(arguments), ARGUMENT_PIECE):
            piece = arguments[at : at + ARGUMENT_PIECE]
            deltas.append({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    return deltas


class Models(RequestHandler):
    def get(self):
        names = ["standin", "standin-reasoning-content", "standin-reasoning", "standin-think"]
        self.write(
            {
                "object": "list",
                "data": [
                    {"id": n, "object": "model", "created": 0, "owned_by": "standin"} for n in names
                ],
            }
        )


def make_app(state: _State, quiet: bool = False) -> Application:
    settings = {"log_function": lambda handler: None} if quiet else {}
    return Application(
        [
            (r"/v1/chat/completions", ChatCompletions, {"state": state}),
            (r"/v1/models", Models),
        ],
        **settings,
    )


class StandIn:
    """The stand-in server on a thread with its own event loop, so it runs beside any test."""

    def __init__(self, port: int = 0, api_key=None):
        self.state = _State(api_key)
        self.port = port
        self._loop = None
        self._thread = None
        self._server = None

    @property
    def url(self) -> str:
        return f"http://{_HOST}:{self.port}/v1"

    @property
    def requests(self) -> list:
        return self.state.requests

    def start(self) -> "StandIn":
        sockets = bind_sockets(self.port, _HOST)
        self.port = sockets[0].getsockname()[1]
        ready = threading.Event()

        def run():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._server = HTTPServer(make_app(self.state, quiet=True))
            self._server.add_sockets(sockets)
            self._loop.call_soon(ready.set)
            self._loop.run_forever()
            self._server.stop()
            self._loop.close()

        self._thread = threading.Thread(target=run, name="openai-standin", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the stand-in server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


async def _serve(port: int, api_key) -> None:
    server = HTTPServer(make_app(_State(api_key)))
    server.add_sockets(bind_sockets(port, _HOST))
    print(f"OpenAI stand-in on http://{_HOST}:{port}/v1 (Ctrl-C stops it)", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--api-key", default=None, help="refuse other keys with 401")
    args = parser.parse_args()
    try:
        asyncio.run(_serve(args.port, args.api_key))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
