"""Agent plug-ins used by the tests, installed through a real entry-point distribution."""

import asyncio

from traitlets import Int

from jupyter_streamchat import Agent


class BoomAgent(Agent):
    """Streams a little, then fails."""

    async def stream(self, request):
        for piece in ["partial ", "text ", "before "]:
            await asyncio.sleep(0.01)
            yield piece
        raise RuntimeError("boom after three chunks")


class FloodAgent(Agent):
    """Streams ``count`` chunks of ``size`` characters as fast as it can."""

    count = Int(200).tag(config=True)
    size = Int(64 * 1024).tag(config=True)

    async def stream(self, request):
        for i in range(self.count):
            await asyncio.sleep(0)
            yield f"{i:08d}" + "x" * (self.size - 8)


class NotAnAgent:
    """Registered as an agent, but is not one: must be skipped."""
