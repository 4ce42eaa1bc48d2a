"""Server-sent events, read from bytes as they arrive: the wire format of streamed chat
completions.

The ``openai`` agent reads the stream itself rather than through the client's stream objects:
those build a typed object per event without checking it, at some 100 microseconds an event,
and a model server sending ten thousand tiny deltas a second would then keep the Jupyter
server's event loop busy for other users' streams. Here an event costs one ``json.loads`` of
its data, done by the caller.

What an event may hold is bounded below this, on the bytes (``bounded.py``); here only the
``data`` lines matter (``event``, ``id``, ``retry`` and comments are read past, as the client
does for chat completions). The data comes as bytes, decoded by the caller in order (so the
events before one that is not UTF-8 are still read).
"""

from __future__ import annotations

DONE = b"[DONE]"


class EventReader:
    """``feed(bytes)`` returns the data of each event completed by those bytes."""

    def __init__(self):
        self._buffer = b""
        self._cr = False  # the last byte fed was a CR: a LF right after it ends the same line

    def feed(self, data: bytes) -> list:
        if self._cr and data.startswith(b"\n"):
            data = data[1:]
        self._cr = data.endswith(b"\r")
        if b"\r" in data:  # CRLF and lone CR end lines too; make them all LF
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._buffer + data if self._buffer else data
        if b"\n\n" not in buffer:
            self._buffer = buffer
            return []
        blocks = buffer.split(b"\n\n")
        self._buffer = blocks.pop()  # what follows the last blank line: not ended yet
        return [text for text in map(_data_of, blocks) if text is not None]


def _data_of(block: bytes):
    """The data of one event (its ``data:`` lines joined by line breaks), or None if it has
    none."""
    if block.startswith(b"data:") and b"\n" not in block:  # the usual case: one data line
        value = block[5:]
        return value[1:] if value.startswith(b" ") else value
    parts = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
        elif line == b"data":
            parts.append(b"")
    if not parts:
        return None
    return b"\n".join(parts)
