"""The hub without a Jupyter server: for notebooks run headless (nbclient, papermill) and scripts.

Same hub, same store code, same agents; frames arrive in-process instead of over a WebSocket.
:class:`BackgroundHub` runs it on a thread of its own, so callers need no event loop: a
widget's Python object or :func:`jupyter_streamchat.follower.connect` reach it through
:class:`~jupyter_streamchat.transport.EmbeddedTransport`.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from typing import Callable, Optional

from traitlets.config import Config, LoggingConfigurable

from .agents import load_agents
from .hub import Hub
from .store import SQLiteStore, Store, store_from_url


def _make_store(store_url: str, parent: LoggingConfigurable) -> Store:
    if store_url:
        return store_from_url(store_url, parent=parent)
    # A file of its own: opening a store ends the replies it finds streaming, and
    # those of a running server's hub are alive.
    store = SQLiteStore(parent=parent)
    store.path = os.path.join(os.path.dirname(store.path), "streamchat-embedded.db")
    return store


class _InProcess:
    """Subscriber transport that hands frames to a callback."""

    def __init__(self, on_frame: Callable[[dict], None]):
        self.on_frame = on_frame

    def write_frames(self, frames: list):
        for frame in frames:
            self.on_frame(json.loads(frame))


class BackgroundHub:
    """An embedded hub on a daemon thread with its own event loop; one per store per process.

    One per store because opening a store marks every reply it finds streaming as
    interrupted: a second hub over the same file would cut off the first one's live replies,
    and clients of two hubs would not see each other's messages. The hub lives as long as the
    process; replies still generating when it exits are marked interrupted by the next open.
    """

    _hubs: dict = {}  # store description -> BackgroundHub
    _hubs_lock = threading.Lock()

    @classmethod
    def get(cls, store_url: str = "", config: Optional[Config] = None) -> "BackgroundHub":
        """The process's hub for that store, started on first use (``config`` applies then)."""
        parent = LoggingConfigurable(config=config or Config())
        store = _make_store(store_url, parent)
        key = store.describe()
        with cls._hubs_lock:
            running = cls._hubs.get(key)
            if running is None:
                running = cls._hubs[key] = cls(Hub(store, load_agents(parent, parent.log)))
            return running

    def __init__(self, hub: Hub):
        self.hub = hub
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="streamchat-embedded-hub", daemon=True
        )
        self.thread.start()

    def in_hub_thread(self) -> bool:
        return threading.current_thread() is self.thread
