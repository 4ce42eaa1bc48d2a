"""Encoding many server-to-client WebSocket text frames into one buffer (RFC 6455, section 5.2).

Tornado's ``write_message`` costs about 11 us of CPU per message, most of it a socket write
each time. A RESUME of a long reply sends thousands of frames at once; encoding them here
and handing the stream a single buffer makes that replay a few milliseconds instead of a
tenth of a second. The bytes on the wire are the same frames Tornado would send: server
frames are not masked, and our handler negotiates no compression.

Tornado has no public call for this, so it writes into the connection's ``stream``, which is
Tornado's own. The fence: the dependency stays below Tornado 7, :func:`fast_path_fits` falls
back to one ``write_message`` per frame when the connection is not what this was written for,
and tests/test_wsframes.py fails when Tornado's frames and these differ.
"""

from __future__ import annotations

import struct

_FIN_TEXT = 0x81  # FIN bit + opcode 1 (text)

# Frame headers by payload length, each made once: a replay's frames are a few hundred bytes
# long, so a few hundred headers serve them all. Longer frames' headers (their payload costs
# more than the header anyway) are made each time, so this holds at most _KEPT of them.
_HEADERS: dict = {}
_KEPT = 4096


def _header(length: int) -> bytes:
    if length < 126:
        header = bytes((_FIN_TEXT, length))
    elif length < 1 << 16:
        header = struct.pack("!BBH", _FIN_TEXT, 126, length)
    else:
        header = struct.pack("!BBQ", _FIN_TEXT, 127, length)
    if length < _KEPT:
        _HEADERS[length] = header
    return header


def encode_text_frames(texts: list) -> bytes:
    """The frames of ``texts``, back to back. Each one costs a UTF-8 encode and a header
    looked up, both from C-level loops: a replay of thousands of frames takes a millisecond
    or so."""
    payloads = list(map(str.encode, texts))
    parts = [b""] * (2 * len(payloads))
    parts[1::2] = payloads
    known = _HEADERS.get
    parts[::2] = [known(n) or _header(n) for n in map(len, payloads)]
    return b"".join(parts)


def fast_path_fits(connection) -> bool:
    """Whether frames may go straight into this Tornado WebSocket connection's stream: an
    unmasked server side without compression, with the stream where Tornado 6 keeps it."""
    return (
        getattr(connection, "mask_outgoing", True) is False
        and getattr(connection, "_compressor", None) is None
        and callable(getattr(getattr(connection, "stream", None), "write", None))
    )
