"""The echo agent: replies with the user's text, word by word. Offline; used by the tests."""

from __future__ import annotations

import asyncio

from traitlets import Float, default

from .base import Agent, AgentRequest, split_tokens


class EchoAgent(Agent):
    delay = Float(0.05, help="Seconds to sleep before each chunk.").tag(config=True)

    @default("description")
    def _default_description(self):
        return "Replies with your own words, streamed word by word."

    async def stream(self, request: AgentRequest):
        for piece in split_tokens(request.text):
            # sleep(0) still yields to the event loop, so a fast agent cannot starve the server.
            await asyncio.sleep(self.delay)
            yield piece
