"""Bounds on what a model server may send: a model server is a remote party, so whatever it
sends costs the Jupyter server a bounded amount of memory and time.

The official ``openai`` client reads server-sent events with no limit on the size of a line or
an event, and reads a whole error body before it raises. So the bound sits below it, on the
bytes: :func:`bounded_http_client` makes the client's HTTP client with a response hook that
wraps every response's byte stream in :class:`BoundedStream`, which raises
:class:`ServerMisbehaved` as soon as

- one event of a stream (the bytes up to the blank line that ends it) grows past
  ``max_event_bytes``, or stays unfinished for ``event_seconds``;
- a body that is not a stream (an error's JSON) grows past ``max_body_bytes``.

The client never holds more than one event's bytes (plus one read of the socket), whatever the
server sends.
"""

from __future__ import annotations

import sys
import time

import openai

# What ends an event: a blank line, with any of the three line ends SSE allows.
_EVENT_ENDS = (b"\n\n", b"\r\r", b"\r\n\r\n")
_TAIL = max(map(len, _EVENT_ENDS)) - 1


class ServerMisbehaved(Exception):
    """The model server sent something outside the bounds; the message says what, for a user."""


def _http_library():
    """The HTTP library the installed ``openai`` client is built on (httpx, or a successor)."""
    for cls in openai.DefaultAsyncHttpxClient.__mro__:
        if cls.__name__ == "AsyncClient":
            return sys.modules[cls.__module__.split(".")[0]]
    raise ImportError("cannot tell which HTTP library the openai client uses")


def _human(size: int) -> str:
    if size >= 1024 * 1024 and size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)} MiB"
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} bytes"


def bounded_http_client(max_event_bytes: int, max_body_bytes: int, event_seconds: float, **kwargs):
    """An HTTP client for ``openai.AsyncOpenAI(http_client=...)`` whose responses are bounded."""
    library = _http_library()

    class Stream(BoundedStream, library.AsyncByteStream):
        pass

    async def bound(response) -> None:
        kind = response.headers.get("content-type", "")
        response.stream = Stream(
            response.stream,
            streaming=kind.startswith("text/event-stream"),
            max_event_bytes=max_event_bytes,
            max_body_bytes=max_body_bytes,
            event_seconds=event_seconds,
        )

    return openai.DefaultAsyncHttpxClient(event_hooks={"response": [bound]}, **kwargs)


class BoundedStream:
    """A response's byte stream that stops with :class:`ServerMisbehaved` past its bounds."""

    def __init__(
        self,
        inner,
        streaming: bool,
        max_event_bytes: int,
        max_body_bytes: int,
        event_seconds: float,
    ):
        self.inner = inner
        self.streaming = streaming
        self.max_event_bytes = max_event_bytes
        self.max_body_bytes = max_body_bytes
        self.event_seconds = event_seconds

    async def __aiter__(self):
        if self.streaming:
            async for chunk in self._events():
                yield chunk
            return
        total = 0
        async for chunk in self.inner:
            total += len(chunk)
            if total > self.max_body_bytes:
                raise ServerMisbehaved(
                    f"sent a response body larger than {_human(self.max_body_bytes)}"
                )
            yield chunk

    async def _events(self):
        pending = 0  # bytes of the event under way
        started = 0.0  # when its first byte came
        tail = b""  # the last bytes before this read, where an event end may have begun
        async for chunk in self.inner:
            if not chunk:
                continue
            now = time.monotonic()
            seen = tail + chunk
            end = max(
                (seen.rfind(mark) + len(mark) for mark in _EVENT_ENDS if mark in seen), default=-1
            )
            if end >= 0:
                pending = len(seen) - end
                started = now if pending else 0.0
            else:
                if not pending:
                    started = now
                pending += len(chunk)
            if pending > self.max_event_bytes:
                raise ServerMisbehaved(f"sent an event larger than {_human(self.max_event_bytes)}")
            if pending and now - started > self.event_seconds:
                raise ServerMisbehaved(
                    f"left an event unfinished for more than {self.event_seconds:g} s"
                )
            tail = seen[-_TAIL:]
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()
