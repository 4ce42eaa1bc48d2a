"""The bench's agent plug-ins, installed through a real entry-point distribution.

bench/bench_render.py, bench/bench_core.py and bench/bench_models.py put this folder on the
server's PYTHONPATH, so ``recite``, ``bulk`` and ``paced`` are found the way any installed agent
is: through the entry-point group ``jupyter_streamchat.agents``.
"""

import asyncio
import os
from pathlib import Path

from traitlets import default

from jupyter_streamchat import Agent
from jupyter_streamchat.agents.base import split_tokens
from paced_tokens import paced_tokens, parse_request


class ReciteAgent(Agent):
    """Replies to the message "N" with ``doc-N.md`` from the dir in $STREAMCHAT_BENCH_DOCS.

    So the user's message stays short while the reply is long. Like the echo agent with delay
    0, it yields one token per turn of the event loop: the hub's batch window alone decides
    which tokens share a frame.
    """

    @default("description")
    def _default_description(self):
        return "Recites a bench document; send its token count, e.g. 20000."

    async def stream(self, request):
        count = request.text.strip()
        if not count.isdigit():  # also keeps the file name inside the documents' dir
            raise ValueError(f"send a document's token count, not {count!r}")
        document = Path(os.environ["STREAMCHAT_BENCH_DOCS"]) / f"doc-{count}.md"
        for piece in split_tokens(document.read_text(encoding="utf-8")):
            await asyncio.sleep(0)
            yield piece


BULK_PIECE_BYTES = 4096
_UNITS = {"": 1, "K": 1024, "M": 1024 * 1024}


def parse_size(word: str) -> int:
    """``"50M"`` -> 50 MiB, ``"200K"`` -> 200 KiB, ``"123"`` -> 123 bytes."""
    word = word.strip().upper()
    unit = word[-1:] if word[-1:] in ("K", "M") else ""
    number = word[: len(word) - len(unit)]
    if not number.isdigit():
        raise ValueError(f"not a size: {word!r} (say 50M, 200K or 123)")
    return int(number) * _UNITS[unit]


def bulk_pieces(size: int, piece_bytes: int = BULK_PIECE_BYTES):
    """ASCII text of exactly ``size`` bytes, in pieces of ``piece_bytes``.

    Each piece starts with its number, so a reply with a piece lost or doubled does not add up.
    Plain ASCII letters and spaces: JSON carries it unescaped, one byte per character.
    """
    filler = "lorem ipsum dolor sit amet " * (piece_bytes // 27 + 1)
    for number, start in enumerate(range(0, size, piece_bytes)):
        yield (f"{number:>9} " + filler)[: min(piece_bytes, size - start)]


class BulkAgent(Agent):
    """Replies with as much text as the message's first word asks for: "50M", "200K", "123".

    The rest of the message is ignored, so a long user message can ask for a long reply. The
    text comes in pieces of a few KiB with one turn of the event loop between them, as fast as
    the hub takes it; the agent itself never holds more than one piece.
    """

    @default("description")
    def _default_description(self):
        return "Replies with N bytes of filler text; send e.g. 50M, 200K or 123."

    async def stream(self, request):
        words = request.text.split(maxsplit=1)
        size = parse_size(words[0] if words else "")
        for piece in bulk_pieces(size):
            await asyncio.sleep(0)
            yield piece


class PacedAgent(Agent):
    """Replies to "200 50" with 200 tokens at 50 per second, as a model streams.

    Each token is `` <index>@<microseconds>``, stamped (monotonic clock) as it is yielded, so a
    client can tell how long each one took to reach it. bench/peer drives jupyterlab-chat with
    the same generator.
    """

    @default("description")
    def _default_description(self):
        return "Streams timestamped tokens at a set pace; send e.g. '200 50'."

    async def stream(self, request):
        count, rate = parse_request(request.text)
        async for token in paced_tokens(count, rate):
            yield token
