"""Encoding many server-to-client WebSocket text frames into one buffer (RFC 6455, section 5.2).

Tornado's ``write_message`` costs about 11 us of CPU per message, most of it a socket write
each time. A RESUME of a long reply sends thousands of frames at once; encoding them here
and handing the stream a single buffer makes that replay a few milliseconds instead of a
tenth of a second. The bytes on the wire are the same frames Tornado would send: server
frames are not masked, and our handler negotiates no compression.
"""

from __future__ import annotations

import struct

_FIN_TEXT = 0x81  # FIN bit + opcode 1 (text)


def _header(length: int) -> bytes:
    if length < 126:
        return bytes((_FIN_TEXT, length))
    if length < 1 << 16:
        return struct.pack("!BBH", _FIN_TEXT, 126, length)
    return struct.pack("!BBQ", _FIN_TEXT, 127, length)


def encode_text_frames(texts: list) -> bytes:
    parts = []
    for text in texts:
        payload = text.encode("utf-8")
        parts.append(_header(len(payload)))
        parts.append(payload)
    return b"".join(parts)
