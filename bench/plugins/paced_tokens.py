"""Tokens at a model's pace, each carrying the moment it was produced.

Shared by the ``paced`` agent (bench/plugins) and the jupyterlab-chat driver (bench/peer), so
both chat stacks stream the very same text at the very same pace. Plain Python, no imports
beyond the standard library: the peer runs in an environment of its own.

A token is `` <index>@<microseconds>``: its index in the reply and ``time.monotonic_ns() //
1000`` when it was handed to the chat stack. CLOCK_MONOTONIC is one clock for every process on
a Linux machine, so a client in another process subtracts it from its own reading to get the
token-to-client latency.
"""

import asyncio
import re
import time

TOKEN = re.compile(r" (\d+)@(\d+)")


def now_us() -> int:
    return time.monotonic_ns() // 1000


async def paced_tokens(count: int, rate: float):
    """Yield ``count`` tokens at ``rate`` per second on a fixed schedule (a late token does not
    push the later ones back), each stamped as it is yielded."""
    start = time.monotonic()
    for index in range(count):
        delay = start + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        yield f" {index}@{now_us()}"


def parse_request(text: str) -> tuple:
    """``"200 50"`` -> (200 tokens, 50 per second)."""
    words = text.split()
    if len(words) != 2 or not words[0].isdigit():
        raise ValueError(f"send '<tokens> <tokens per second>', e.g. '200 50', not {text!r}")
    count, rate = int(words[0]), float(words[1])
    if not 0 < count <= 1_000_000 or not 0 < rate <= 1_000_000:
        raise ValueError("tokens and rate must be positive (at most 1,000,000)")
    return count, rate
