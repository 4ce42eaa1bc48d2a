"""A model server that sends exactly the bytes it is told to: for tests and benches of how the
``openai`` agent holds up against a hostile or broken OpenAI-compatible server.

It speaks HTTP/1.1 on a raw socket so that nothing between the script and the wire tidies up
what is sent: events of any size, bytes that are not UTF-8, a line cut off, an event that never
ends, an error body of any size. What it answers is a :class:`Script`, chosen by the request's
last user message (or else its ``model``): ``server.scripts["name"] = Script(...)``, then send
"name" as the message (or ask with ``model="name"``).

The well-formed parts are in the real wire format (``chat.completion.chunk`` events, ``data:
[DONE]``, ``{"error": {...}}`` bodies): :func:`delta`, :func:`finish`, :data:`DONE`.

Use: ``HostileModel().start()`` runs it on a thread of its own (``.url`` ends in ``/v1``).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Union

DONE = b"data: [DONE]\n\n"

# A piece of a script's body: bytes to send, or a pause in seconds.
Piece = Union[bytes, float]


def event(obj) -> bytes:
    """One server-sent event carrying ``obj`` as JSON."""
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def chunk(delta: dict, finish_reason: Optional[str] = None) -> dict:
    return {
        "id": "chatcmpl-hostile",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "hostile",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def delta(text: str) -> bytes:
    """An event with one content delta."""
    return event(chunk({"content": text}))


def finish(reason: str = "stop") -> bytes:
    return event(chunk({}, reason))


def answer(pieces: Iterable[str]) -> list:
    """A whole well-formed reply: a delta per piece, the finish, [DONE]."""
    return [delta(p) for p in pieces] + [finish(), DONE]


@dataclass
class Script:
    """What to answer: a status, a content type, and a body sent piece by piece.

    ``body`` is a list of pieces, or a callable returning an iterator of them (for bodies too
    large to hold, or that never end: sending stops when the client goes). An error status
    sends its body with a Content-Length; a stream has none and ends when the body does.
    """

    body: Union[list, Callable[[], Iterable[Piece]]] = field(default_factory=list)
    status: int = 200
    content_type: str = "text/event-stream"
    headers: dict = field(default_factory=dict)

    def pieces(self) -> Iterable[Piece]:
        return self.body() if callable(self.body) else list(self.body)


class HostileModel:
    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.port = 0
        self.scripts: dict = {}
        self.requests: list = []  # (model, headers) of each request
        self.closed_early = 0  # replies whose client went before the body ended
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> "HostileModel":
        self._thread = threading.Thread(target=self._run, name="hostile-model", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the hostile model server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> "HostileModel":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, self.host, 0, limit=1 << 20)
        )
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            tasks = asyncio.all_tasks(self._loop)
            for task in tasks:  # answers still being sent
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            try:
                request = json.loads(body)
                model = request.get("model", "")
                said = [
                    m.get("content") for m in request.get("messages", []) if m.get("role") == "user"
                ]
            except (ValueError, AttributeError):
                model, said = "", []
            self.requests.append((model, headers))
            script = self.scripts.get(said[-1] if said else None) or self.scripts.get(model)
            if script is None:
                script = Script(
                    [json.dumps({"error": {"message": f"no script {model!r}"}}).encode()],
                    status=404,
                    content_type="application/json",
                )
            await self._answer(writer, script)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.closed_early += 1
        finally:
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, script: Script) -> None:
        head = [
            f"HTTP/1.1 {script.status} Whatever",
            f"Content-Type: {script.content_type}",
            "Connection: close",
        ]
        head += [f"{k}: {v}" for k, v in script.headers.items()]
        pieces = script.pieces()
        if script.status != 200:
            pieces = [p for p in pieces if isinstance(p, bytes)]
            head.append(f"Content-Length: {sum(map(len, pieces))}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        deadline = time.monotonic() + 600  # a bound on any one answer
        for piece in pieces:
            if time.monotonic() > deadline:
                break
            if isinstance(piece, (int, float)):
                await writer.drain()
                await asyncio.sleep(piece)
                continue
            writer.write(piece)
            await writer.drain()  # raises once the client has gone


def leaks(text: str, secret: str) -> list:
    """The parts of ``secret`` found in ``text``: any run of 6 of its characters (with white
    space or line-break escapes between them taken out), or a 4-character beginning of it where
    a text was cut (before an ellipsis or at the end)."""
    squeezed = re.sub(r"\s+|(?:\\[nrt])+", "", text)
    found = [secret[i : i + 6] for i in range(len(secret) - 5) if secret[i : i + 6] in squeezed]
    for n in range(4, 6):
        if re.search(re.escape(secret[:n]) + r"(\.\.\.|…|$)", squeezed):
            found.append(secret[:n])
    return found


# -- scripts by name, for benches and trying the agent by hand --------------------------------


def stamped(rate: float, count: int):
    """``count`` deltas at ``rate`` a second, each the time it was sent ("1765000000.123456 "),
    so a client can tell how long each token took to reach it."""

    def pieces():
        start = time.monotonic()
        for i in range(count):
            wait = start + i / rate - time.monotonic()
            if wait > 0:
                yield wait
            yield delta(f"{time.time():.6f} ")
        yield finish()
        yield DONE

    return pieces


def huge_delta(size: int):
    """One event holding a delta of ``size`` characters, made as it is sent, 64 KiB a time."""

    def pieces():
        yield delta("before ")
        yield b'data: {"choices": [{"index": 0, "delta": {"content": "'
        for _ in range(size // 65536):
            yield b"a" * 65536
        yield b'"}}]}\n\n'
        yield finish()
        yield DONE

    return pieces


def endless_event(limit_bytes: int = 1 << 40):
    """An event that never ends: ``data: xxxx...`` with no line end, for as long as read."""

    def pieces():
        yield delta("before ")
        yield b"data: "
        for _ in range(limit_bytes // 65536):
            yield b"x" * 65536

    return pieces


def flood(rate: float, count: int):
    """``count`` one-character deltas at ``rate`` a second (sent in bursts of a millisecond)."""

    def pieces():
        start, burst = time.monotonic(), max(1, int(rate / 1000))
        for i in range(0, count, burst):
            wait = start + i / rate - time.monotonic()
            if wait > 0:
                yield wait
            yield b"".join(delta("t") for _ in range(min(burst, count - i)))
        yield finish()
        yield DONE

    return pieces


def long_reply(size: int):
    """A well-formed reply of ``size`` characters, in deltas of 16 KiB: a long conversation."""

    def pieces():
        line = "".join(f"{i:05d} " for i in range(2730)) + "\n"  # 16,381 characters
        for _ in range(size // len(line)):
            yield delta(line)
        yield finish()
        yield DONE

    return pieces


def builtin(name: str) -> Optional[Script]:
    """``stamped-RATE-COUNT``, ``huge-MIB``, ``endless``, ``flood-RATE-COUNT``, ``long-MIB``."""
    kind, *numbers = name.split("-")
    try:
        values = [float(n) for n in numbers]
    except ValueError:
        return None
    if kind == "stamped" and len(values) == 2:
        return Script(stamped(values[0], int(values[1])))
    if kind == "huge" and len(values) == 1:
        return Script(huge_delta(int(values[0] * 1024 * 1024)))
    if kind == "endless" and not values:
        return Script(endless_event())
    if kind == "long" and len(values) == 1:
        return Script(long_reply(int(values[0] * 1024 * 1024)))
    if kind == "flood" and len(values) == 2:
        return Script(flood(values[0], int(values[1])))
    return None


class _Builtins(dict):
    def get(self, key, default=None):
        found = super().get(key)
        if found is None and isinstance(key, str):
            found = builtin(key)
        return found if found is not None else default


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()
    server = HostileModel()
    server.scripts = _Builtins()
    server.port = args.port
    loop = asyncio.new_event_loop()
    loop.run_until_complete(
        asyncio.start_server(server._serve, server.host, args.port, limit=1 << 20)
    )
    print(f"hostile model server at {server.url}", flush=True)
    loop.run_forever()


if __name__ == "__main__":
    main()
