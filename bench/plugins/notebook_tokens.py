"""One token source run three ways by bench/bench_kernel.py: as a sync notebook agent, as an
async notebook agent (both in a kernel, which imports this module from bench/plugins on the
server's PYTHONPATH, inherited by its kernels), and as a server plug-in (:class:`TokensAgent`,
named in ``StreamChatApp.agents`` by its import path ``notebook_tokens:TokensAgent``).

The message says what to stream: ``"<count> <interval> <first delay> [tag]"``, e.g.
``"20000 0 0"`` (20,000 tokens as fast as the agent can hand them over), ``"100000 0.01 0"``
(a token every 10 ms) or ``"5 0.01 0.2 r7x"`` (0.2 s, then `` r7x0``, `` r7x1``...). The tag
lets a client recognise the first token of one particular reply.
"""

import asyncio
import time

from jupyter_streamchat import Agent


def parse(text: str) -> tuple:
    """``"5 0.01 0.2 r7x"`` -> (5, 0.01, 0.2, "r7x")."""
    words = text.split()
    if not 3 <= len(words) <= 4 or not words[0].isdigit():
        raise ValueError(f"send '<count> <interval> <first delay> [tag]', not {text!r}")
    count, interval, first = int(words[0]), float(words[1]), float(words[2])
    if not 0 < count <= 1_000_000 or not 0 <= interval <= 10 or not 0 <= first <= 60:
        raise ValueError("count 1 to 1,000,000; interval 0 to 10 s; first delay 0 to 60 s")
    return count, interval, first, words[3] if len(words) == 4 else "t"


def tokens(count: int, tag: str = "t"):
    """`` t0``, `` t1``... : the text every agent here streams."""
    for index in range(count):
        yield f" {tag}{index}"


def expected(text: str) -> str:
    """The whole reply to the message ``text``."""
    count, _, _, tag = parse(text)
    return "".join(tokens(count, tag))


def sync_stream(text: str):
    """What the sync notebook agent yields: its thread sleeps between tokens."""
    count, interval, first, tag = parse(text)
    if first:
        time.sleep(first)
    for token in tokens(count, tag):
        if interval:
            time.sleep(interval)
        yield token


async def async_stream(text: str):
    """What the async notebook agent and the plug-in yield: they await between tokens. With
    no interval, one ``await asyncio.sleep(0)`` per token (as the echo agent with delay 0): a
    plug-in shares the server's event loop and must not hold it."""
    count, interval, first, tag = parse(text)
    if first:
        await asyncio.sleep(first)
    for token in tokens(count, tag):
        await asyncio.sleep(interval)
        yield token


class TokensAgent(Agent):
    """The plug-in twin of the notebook agents: the same tokens, in the server's process."""

    async def stream(self, request):
        async for token in async_stream(request.text):
            yield token
