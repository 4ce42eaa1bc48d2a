"""The hub without a Jupyter server: for notebooks run headless (nbclient, papermill) and scripts.

Same hub, same store code, same agents; frames arrive in-process instead of over a WebSocket.
:class:`BackgroundHub` runs it on a thread of its own, so callers need no event loop: a
widget's Python object or :func:`jupyter_streamchat.kernel.follower.connect` reach it through
:class:`~jupyter_streamchat.kernel.connection.EmbeddedTransport`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Callable, Optional

from traitlets.config import Config, LoggingConfigurable

from ..agents import load_agents
from ..core.hub import Hub
from ..store import SQLiteStore, Store, store_from_url


def _make_store(store_url: str, parent: LoggingConfigurable) -> Store:
    # The same default database as the Jupyter server's: replies carry leases, so a hub here
    # and a server's hub (or a second server) share the file without ending each other's.
    if store_url:
        return store_from_url(store_url, parent=parent)
    return SQLiteStore(parent=parent)


class _InProcess:
    """Subscriber transport that hands frames to a callback."""

    def __init__(self, on_frame: Callable[[dict], None]):
        self.on_frame = on_frame

    def write_frames(self, frames: list):
        for frame in frames:
            self.on_frame(json.loads(frame))

    def close(self, code=None, reason=None) -> None:
        """Nothing waits unsent in-process, so the hub never has to close this client."""


class BackgroundHub:
    """An embedded hub on a daemon thread with its own event loop; one per store per process.

    One per store, so that every client in this process sees the others' live frames (the
    bus between hubs is in-process). The hub lives as long as the process; replies still
    generating when it exits are marked interrupted once its lease on them expires, or at once
    by the next process on this machine to open the store.
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
