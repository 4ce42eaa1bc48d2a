"""Tool-call states and a user message's context as the stores keep them: JSON text, opaque.

A reply's frames each hold the tool-call states that changed in them (wire dicts, the latest
state of an id wins), and the reply's row holds them merged, as of its last stored frame.
JSON is written with ASCII escapes only, so the text never holds a NUL or any character that
``pgtext`` would have to escape, nor a lone surrogate that UTF-8 cannot hold.
"""

from __future__ import annotations

import json
import time
from typing import Iterable, Optional

# Said of a call that never finished when its reply ended (the wire's words for it).
NOT_RUN = "not run: the reply ended first"
_ENDED = ("completed", "failed")


def dumps(value) -> Optional[str]:
    """JSON text of a list (None for None)."""
    return None if value is None else json.dumps(value, separators=(",", ":"))


def loads(text: Optional[str]) -> Optional[list]:
    return None if text is None else json.loads(text)


def merge(frames: Iterable[Optional[list]]) -> Optional[list]:
    """The latest state of each call over ``frames`` (each None or a list of states), in the
    order the calls first appeared; None when there is none."""
    latest: dict = {}
    for states in frames:
        for state in states or ():
            latest[state.get("id")] = state  # a known key keeps its place
    return list(latest.values()) or None


def end_unfinished(merged: Optional[list], now: Optional[float] = None) -> tuple:
    """``(changed, merged)`` for a reply ended without its producer (recovery): each call
    still pending, running or waiting becomes failed; ``changed`` lists those new states (the
    final frame's), None when there is none."""
    if not merged:
        return None, merged
    now = time.time() if now is None else now
    changed, states = [], []
    for state in merged:
        if state.get("status") not in _ENDED:
            state = {**state, "status": "failed", "error": NOT_RUN, "endedAt": now}
            changed.append(state)
        states.append(state)
    return (changed, states) if changed else (None, merged)
