"""When a streaming reply's accumulated tokens become a frame.

Each frame is one commit, and each commit of a reply writes at least one database page of its
own (its chunks are stored together): with a frame per token, a model's reply costs a page
per token. So frames merge the tokens of a window, and two things keep the pages few when many
replies stream at once:

- The window stretches with the number of replies streaming into the store (this process's,
  and on a shared store every other server's, as their hints tell), from
  ``batch_window`` (16 ms) for one alone to ``max_window`` (50 ms) for ten or more: a hundred
  replies at 50 tokens/s then put two or three tokens in a frame, not one.
- Every reply flushes on the same ticks (multiples of the window on the event loop's clock),
  so their frames reach the store's writer together and share one commit, rather than each
  paying for a commit and the pages it rewrites.

The first frame of a reply goes out at once, whatever the window.
"""

from __future__ import annotations

import math
from typing import Callable


class FlushClock:
    def __init__(self, batch_window: float, max_window: float, live: Callable[[], int]):
        self.batch_window = batch_window
        self.max_window = max(max_window, batch_window)
        self.live = live  # how many replies are streaming now

    def window(self) -> float:
        return min(self.max_window, self.batch_window * math.sqrt(max(1, self.live())))

    def next_flush(self, now: float, last_flush: float) -> float:
        """The time at which a reply last flushed at ``last_flush`` flushes what it has now."""
        window = self.window()
        if last_flush == -math.inf or window <= 0:
            return now
        return math.ceil(now / window) * window
