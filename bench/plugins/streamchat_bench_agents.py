"""The bench's agent plug-in, installed through a real entry-point distribution.

bench/bench_render.py puts this folder on the server's PYTHONPATH, so ``recite`` is found the
way any installed agent is: through the entry-point group ``jupyter_streamchat.agents``.
"""

import asyncio
import os
from pathlib import Path

from traitlets import default

from jupyter_streamchat import Agent
from jupyter_streamchat.agents.base import split_tokens


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
