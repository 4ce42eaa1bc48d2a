"""The hub without a Jupyter server: for notebooks run headless (nbclient, papermill) and scripts.

Same hub, same store code, same agents; frames arrive in-process instead of over a WebSocket.

    async with EmbeddedChat() as chat:
        reply = await chat.ask("Hello", agent="demo", on_chunk=lambda c: print(c, end=""))

:class:`BackgroundHub` runs the same hub on a thread of its own, for callers that are not
async (a widget's Python object, through :class:`~jupyter_streamchat.transport.EmbeddedTransport`).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from typing import Callable, Optional

from traitlets.config import Config, LoggingConfigurable

from . import protocol as p
from .agents import load_agents
from .hub import Hub
from .store import SQLiteStore, Store, store_from_url
from .subscriber import Subscriber


def _make_store(store_url: str, parent: LoggingConfigurable) -> Store:
    if store_url:
        return store_from_url(store_url, parent=parent)
    # A file of its own: opening a store ends the replies it finds streaming, and
    # those of a running server's hub are alive.
    store = SQLiteStore(parent=parent)
    store.path = os.path.join(os.path.dirname(store.path), "streamchat-embedded.db")
    return store


def make_hub(store_url: str = "", config: Optional[Config] = None) -> Hub:
    """A hub over ``store_url``; by default ``streamchat-embedded.db`` in the Jupyter data dir."""
    parent = LoggingConfigurable(config=config or Config())
    return Hub(_make_store(store_url, parent), load_agents(parent, parent.log))


class _InProcess:
    """Subscriber transport that hands frames to a callback."""

    def __init__(self, on_frame: Callable[[dict], None]):
        self.on_frame = on_frame

    def write_frames(self, frames: list):
        for frame in frames:
            self.on_frame(json.loads(frame))


class EmbeddedChat:
    def __init__(self, store_url: str = "", config: Optional[Config] = None):
        self.hub = make_hub(store_url, config)
        self._asked: dict = {}  # clientMessageId -> (reply future, on_chunk)
        self._waiting: dict = {}  # reply id -> (reply future, on_chunk, chunks so far)
        self._subscriber = self.hub.connect(Subscriber(_InProcess(self._on_frame)))

    async def __aenter__(self) -> "EmbeddedChat":
        await self.hub.ensure_open()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.hub.shutdown()

    def _on_frame(self, frame: dict) -> None:
        if frame["type"] == "MESSAGE_ACCEPTED":
            asked = self._asked.pop(frame["clientMessageId"], None)
            if asked is not None:  # follow the reply before its first chunk can arrive
                self._waiting[frame["messageId"]] = (*asked, [])
        elif frame["type"] == "MESSAGE_CHUNK" and frame["messageId"] in self._waiting:
            future, on_chunk, parts = self._waiting[frame["messageId"]]
            parts.append(frame["chunk"])
            if on_chunk is not None and frame["chunk"]:
                on_chunk(frame["chunk"])
            if frame["isComplete"]:
                del self._waiting[frame["messageId"]]
                future.set_result({"text": "".join(parts), "status": frame["status"],
                                   "error": frame.get("error")})

    async def ask(self, text: str, agent: str = "demo", conversation_id: str = "default",
                  on_chunk: Optional[Callable[[str], None]] = None) -> dict:
        """Send ``text`` and wait for the whole reply: ``{"text", "status", "error"}``."""
        client_id = uuid.uuid4().hex
        reply = asyncio.get_running_loop().create_future()
        self._asked[client_id] = (reply, on_chunk)
        try:
            await self.hub.handle(self._subscriber, p.SendMessage(conversation_id, agent, text, client_id))
        except p.ProtocolError as e:
            raise ValueError(e.message) from None
        finally:
            self._asked.pop(client_id, None)
        return await reply


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
