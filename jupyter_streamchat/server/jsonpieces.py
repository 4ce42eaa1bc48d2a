"""JSON text made in pieces, for answers that may be huge (a whole conversation over REST).

``json.dumps`` of a large value is one call that holds the event loop (and the GIL) until the
whole text is made: a conversation of tens of MB would stall every other client for as long.
:func:`json_pieces` yields the same text in pieces of about ``size`` characters, cutting long
strings in slices (escaping is per character, so the slices' escaped forms join into the
escaped whole), and the caller gives the event loop back between pieces.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii  # C-accelerated
from typing import AsyncIterable, Iterator

PIECE_CHARS = 64 * 1024


def json_pieces(value, size: int = PIECE_CHARS) -> Iterator[str]:
    """The text of ``json.dumps(value)``, in pieces of about ``size`` characters."""
    pieces = _Pieces(size)
    for part in _parts(value, size):
        yield from pieces.add(part)
    yield from pieces.rest()


async def streamed_json_pieces(
    value: dict, key: str, items: AsyncIterable, size: int = PIECE_CHARS
) -> AsyncIterable[str]:
    """The text of ``json.dumps(value)`` with, for ``value[key]``, the list of what ``items``
    yields, in pieces of about ``size`` characters, each item made into text as it comes."""
    before, after = _around(value, key, size)
    pieces = _Pieces(size)
    for piece in pieces.add(before + "["):
        yield piece
    first = True
    async for item in items:
        if not first:
            for piece in pieces.add(", "):
                yield piece
        first = False
        for part in _parts(item, size):
            for piece in pieces.add(part):
                yield piece
    for piece in pieces.add("]" + after):
        yield piece
    for piece in pieces.rest():
        yield piece


class _Pieces:
    """Parts held until they make a piece of ``size`` characters."""

    def __init__(self, size: int):
        self.size = size
        self.held: list = []
        self.chars = 0

    def add(self, part: str) -> Iterator[str]:
        self.held.append(part)
        self.chars += len(part)
        if self.chars >= self.size:
            yield from self.rest()

    def rest(self) -> Iterator[str]:
        if self.held:
            piece = "".join(self.held)
            self.held, self.chars = [], 0
            yield piece


def _around(value: dict, key: str, size: int) -> tuple:
    """The text of ``json.dumps(value)`` before ``value[key]``'s, and after it."""
    before, after = ["{"], []
    out = before
    for i, (name, item) in enumerate(value.items()):
        out.append((", " if i else "") + encode_basestring_ascii(str(name)) + ": ")
        if name == key:
            out = after
        else:
            out.extend(_parts(item, size))
    after.append("}")
    return "".join(before), "".join(after)


def _parts(value, size: int) -> Iterator[str]:
    if isinstance(value, str):
        if len(value) <= size:
            yield encode_basestring_ascii(value)
            return
        yield '"'
        for start in range(0, len(value), size):
            yield encode_basestring_ascii(value[start : start + size])[1:-1]
        yield '"'
    elif isinstance(value, dict):
        yield "{"
        for i, (key, item) in enumerate(value.items()):
            yield (", " if i else "") + encode_basestring_ascii(str(key)) + ": "
            yield from _parts(item, size)
        yield "}"
    elif isinstance(value, (list, tuple)):
        yield "["
        for i, item in enumerate(value):
            if i:
                yield ", "
            yield from _parts(item, size)
        yield "]"
    else:
        yield json.dumps(value)
