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
from typing import Iterator

PIECE_CHARS = 64 * 1024


def json_pieces(value, size: int = PIECE_CHARS) -> Iterator[str]:
    """The text of ``json.dumps(value)``, in pieces of about ``size`` characters."""
    held: list = []
    held_chars = 0
    for part in _parts(value, size):
        held.append(part)
        held_chars += len(part)
        if held_chars >= size:
            yield "".join(held)
            held, held_chars = [], 0
    if held:
        yield "".join(held)


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
