"""The fence around server/wsframes.py, which writes WebSocket frames into Tornado's stream.

These fail when Tornado's internals move: its frames and ours differ, the connection no longer
looks as the fast path expects, or the installed Tornado is outside the range pyproject.toml
allows.
"""

import re
import tomllib
from pathlib import Path

import pytest
import tornado
from tornado.websocket import WebSocketProtocol13

from jupyter_streamchat.server.wsframes import encode_text_frames, fast_path_fits

TEXTS = [
    "",
    "a",
    "é" * 62,
    "x" * 125,
    "x" * 126,
    "ü" * 40_000,
    "x" * 65_535,
    "x" * 65_536,
    '{"type":"MESSAGE_CHUNK","chunk":"\\u2603"}',
]


class _Capture:
    def __init__(self):
        self.written = []

    def write(self, data):
        self.written.append(bytes(data))


def _tornado_frame(text: str) -> bytes:
    """The bytes Tornado's own server side writes for one text message."""
    protocol = WebSocketProtocol13.__new__(WebSocketProtocol13)
    protocol.mask_outgoing = False
    protocol._wire_bytes_out = 0
    protocol.stream = _Capture()
    protocol._write_frame(True, 0x1, text.encode("utf-8"))
    return b"".join(protocol.stream.written)


@pytest.mark.parametrize("text", TEXTS, ids=lambda t: f"{len(t)}-chars")
def test_each_frame_is_byte_for_byte_tornados(text):
    assert encode_text_frames([text]) == _tornado_frame(text)


def test_many_frames_are_tornados_frames_back_to_back():
    assert encode_text_frames(TEXTS) == b"".join(map(_tornado_frame, TEXTS))


def test_the_installed_tornado_is_in_the_range_the_package_allows():
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    (spec,) = [d for d in pyproject["project"]["dependencies"] if d.startswith("tornado")]
    upper = int(re.search(r"<\s*(\d+)", spec).group(1))
    assert tornado.version_info[0] < upper, spec


async def test_a_live_connection_takes_the_fast_path(chat, streamchat_app):
    client = await chat()
    await client.send_message("hello")
    await client.expect("MESSAGE_ACCEPTED")
    (subscriber,) = streamchat_app.hub.fanout.clients
    handler = subscriber.transport
    assert fast_path_fits(handler.ws_connection)


def test_a_connection_unlike_tornado_6s_takes_the_slow_path():
    class Compressing:
        mask_outgoing = False
        _compressor = object()
        stream = _Capture()

    class NoStream:
        mask_outgoing = False
        _compressor = None

    assert not fast_path_fits(Compressing())
    assert not fast_path_fits(NoStream())
