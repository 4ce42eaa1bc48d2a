"""A store file (or store URL) used directly, with no Jupyter server: ``--store``.

``send`` and ``agents`` run the hub in this process
(:class:`~jupyter_streamchat.kernel.embedded.BackgroundHub`, as for a notebook run headless),
over the same store code as the server's, so a store shared with running servers stays
consistent: replies carry leases. The agents are the installed ones, configured by the Jupyter
server config files (``jupyter_server_config.py``/``.json`` in the Jupyter config path), as a
server's would be; named agents (``StreamChatApp.agents``) are a server's only. The other
commands read or delete through the store alone.
"""

from __future__ import annotations

import asyncio
import os
from typing import BinaryIO, Optional

from traitlets.config import LoggingConfigurable

from .. import protocol as p
from ..redact import redact, without_password
from ..server.export import markdown_pieces
from ..store import SearchTooCostly, StoreError, store_from_url
from .errors import CliError, NoServer, NotFound, UsageError
from .target import sqlite_path

SHUTDOWN_GUARD = 15.0  # seconds for the hub to store its last writes and close the store


def server_config():
    """The traitlets config of the Jupyter server config files, for the agents' settings."""
    from jupyter_core.application import JupyterApp

    class ServerConfigFiles(JupyterApp):
        name = "jupyter-streamchat"
        config_file_name = "jupyter_server_config"

    app = ServerConfigFiles()
    app.load_config_file()  # a file that fails to load is logged and skipped
    return app.config


class StoreClient:
    """The chat of one store. ``hub``: run a hub with the agents (``send``, ``agents``); the
    other commands only read or delete, and open just the store (loading the agents costs
    more than the rest of such a command). ``create``: a missing SQLite file may be created
    (``send``); the other commands refuse it, rather than leave an empty database behind a
    typo."""

    def __init__(self, store_url: str, hub: bool = False, create: bool = False):
        self.store_url = store_url
        path = sqlite_path(store_url)
        if path is not None and not create and not os.path.isfile(path):
            raise NoServer(f"no store file at {path}")
        self.config = server_config()
        self.hub = self._loop = None
        try:
            if hub:
                from ..kernel.embedded import BackgroundHub  # (the agents come with it)

                self.background = BackgroundHub.get(store_url, self.config)
                self.hub = self.background.hub
                self.store = self.hub.store
            else:
                self.store = store_from_url(
                    store_url, parent=LoggingConfigurable(config=self.config)
                )
                self._loop = asyncio.new_event_loop()
        except ValueError as e:  # not a store URL this package knows
            raise UsageError(f"--store: {e}") from None
        self._run(self.hub.ensure_open() if hub else self.store.open())

    def describe(self) -> str:
        """The store, as errors name it (no password: a URL's is masked)."""
        path = sqlite_path(self.store_url)
        return f"the store {path if path is not None else without_password(self.store_url)}"

    def close(self) -> None:
        """Store what is left and give up this process's lease on the store."""
        if self.hub is not None:
            self._run(self.hub.shutdown(), SHUTDOWN_GUARD)
        else:
            self._run(self.store.close())
            self._loop.close()

    # -- the API, in the REST API's shapes -----------------------------------------------

    def agents(self) -> dict:
        assert self.hub is not None, "open with hub=True"
        from ..kernel.connection import MAX_MESSAGE_BYTES

        agents = [agent.info() for _, agent in sorted(self.hub.agents.items())]
        return {"agents": agents, "maxMessageBytes": MAX_MESSAGE_BYTES}

    def conversations(self, query: str, limit: Optional[int]) -> tuple:
        store, query = self.store, query.strip()
        if len(query) > p.SEARCH_MAX:
            raise UsageError(f"--search is at most {p.SEARCH_MAX} characters")
        ask = 0 if limit is None else limit + 1  # one more, to know whether there are more
        if query:
            records = self._run(store.search_conversations(query, ask))
        else:
            records = self._run(store.list_conversations(ask))
        more = limit is not None and len(records) > limit
        return [p.conversation_wire(c) for c in records[:limit]], more

    def conversation(self, conversation_id: str) -> dict:
        messages = self._run(self.store.get_conversation(conversation_id))
        if messages is None:
            raise NotFound(f"no conversation {conversation_id!r} in {self.describe()}")
        return {
            "conversationId": conversation_id,
            "messages": [p.message_wire(m) for m in messages],
        }

    def export_markdown(self, conversation_id: str, thinking: bool, out: BinaryIO) -> None:
        record = self._run(self.store.get_conversation_record(conversation_id))
        messages = self._run(self.store.get_conversation(conversation_id))
        if record is None or messages is None:
            raise NotFound(f"no conversation {conversation_id!r} in {self.describe()}")
        for piece in markdown_pieces(record, messages, thinking):
            out.write(piece.encode("utf-8"))

    def delete(self, conversation_id: str) -> None:
        # Through the store: replies of this process there are none; a reply another
        # process (a server) is writing there ends when its next write finds it gone.
        if not self._run(self.store.delete_conversation(conversation_id)):
            raise NotFound(f"no conversation {conversation_id!r} in {self.describe()}")

    def transport(self):
        """The hub of this process, as a transport (``send`` opens the client with hub=True)."""
        from ..kernel.connection import EmbeddedTransport

        return EmbeddedTransport(self.store_url, self.config)

    # -- the event loop ------------------------------------------------------------------

    def _run(self, coroutine, timeout: Optional[float] = None):
        """Run a coroutine on the hub's event loop (its own thread), or on this thread's
        loop when there is no hub; its result."""
        try:
            if self._loop is not None:
                return self._loop.run_until_complete(coroutine)
            future = asyncio.run_coroutine_threadsafe(coroutine, self.background.loop)
            return future.result(timeout)
        except SearchTooCostly as e:
            raise UsageError(str(e)) from None
        except StoreError as e:
            raise CliError(f"the store failed: {redact(str(e))}") from None
