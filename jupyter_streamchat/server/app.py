"""The server extension: configuration, and wiring the store, the agents and the hub."""

from __future__ import annotations

import gc
import os

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Dict, Float, Int, TraitError, Type, Unicode, default, validate

from .. import redact
from ..agents import load_agents
from .handlers import handlers
from ..core.hub import Hub
from ..store import SQLiteStore, Store, StoreError, local_user, store_from_url


class StreamChatApp(ExtensionApp):
    """Streaming chat with AI agents: a WebSocket hub and REST API inside the Jupyter server."""

    name = "jupyter_streamchat"
    load_other_extensions = True

    store_url = Unicode(
        help="""Where to store messages, as a URL, e.g. sqlite:////abs/path/chat.db.
        Empty: use store_class with its own settings (by default SQLite, streamchat.db in the
        Jupyter data dir). Defaults to the STREAMCHAT_STORE_URL environment variable.""",
    ).tag(config=True)

    @default("store_url")
    def _default_store_url(self):
        return os.environ.get("STREAMCHAT_STORE_URL", "")

    store_class = Type(
        default_value=SQLiteStore,
        klass=Store,
        help="The message store class, used when store_url is empty.",
    ).tag(config=True)

    user = Unicode(
        help="""The user this server's conversations belong to, on a store that several users'
        servers may share: each user sees, searches, resumes and changes only their own.
        Default: $JUPYTERHUB_USER (the hub's user, under JupyterHub), else the operating-system
        user. Conversations stored before conversations had users belong to this user.""",
    ).tag(config=True)

    @default("user")
    def _default_user(self):
        return local_user()

    users_from_identity = Bool(
        False,
        help="""For one server that serves several named users (an identity provider that
        names each one): each client's conversations are those of the user name the identity
        provider gives it, rather than all of them being this server's user's.""",
    ).tag(config=True)

    def user_for(self, identity) -> str:
        """Whose conversations a request authenticated as ``identity`` may touch."""
        if self.users_from_identity and identity is not None:
            name = getattr(identity, "username", None) or (
                identity.get("name") if isinstance(identity, dict) else None
            )
            if name:
                return str(name)
        return self.user

    agents = Dict(
        help="""Named agents, beside the installed ones: {"local": {"class": "openai",
        "model": "llama3.2", "base_url": "http://127.0.0.1:11434/v1"}}. "class" is an agent
        plug-in's name or an import path (package.module:Class); the other keys set that
        agent's settings over the class's own config. A broken entry is logged and skipped.""",
    ).tag(config=True)

    batch_window = Float(
        0.016,
        help="""Seconds within which an agent's tokens are merged into one frame (one frame at
        60 fps reads as smooth), for a reply streaming alone. At most 0.05.""",
    ).tag(config=True)

    max_batch_window = Float(
        0.05,
        help="""The window that replies stretch to when many stream at once (ten or more at
        the default batch_window), so that they cost the disk a few pages per frame of several
        tokens rather than per token. Also the most a SIGKILL can lose of a reply. At most
        0.1.""",
    ).tag(config=True)

    freeze_gc = Bool(
        True,
        help="""Move the objects that exist once the server has started out of the garbage
        collector's view (gc.freeze), so that its full collections, which then scan only newer
        objects, pause streaming for milliseconds instead of some 200 ms.""",
    ).tag(config=True)

    @validate("batch_window", "max_batch_window")
    def _check_batch_window(self, proposal):
        name, most = proposal["trait"].name, {"batch_window": 0.05, "max_batch_window": 0.1}
        if not 0 <= proposal["value"] <= most[name]:
            raise TraitError(f"{name} must be between 0 and {most[name]:g} seconds")
        return proposal["value"]

    approval_timeout = Float(
        600.0,
        help="""Seconds a tool call waits for the user's approval (Allow / Always / Reject)
        before its reply ends with an error saying nobody answered; the call is not run.""",
    ).tag(config=True)

    max_message_bytes = Int(
        1024 * 1024,
        help="Largest user message accepted, in UTF-8 bytes; larger ones get an ERROR frame.",
    ).tag(config=True)

    client_buffer_bytes = Int(
        4 * 1024 * 1024,
        help="""How much may wait unsent to one client before its live frames are dropped;
        it catches up from the store once its connection drains.""",
    ).tag(config=True)

    history_page_messages = Int(
        100,
        help="""Most messages in one HISTORY (the latest) or HISTORY_PAGE (older ones, on
        request), so a long conversation opens as fast as a short one.""",
    ).tag(config=True)

    history_page_chars = Int(
        512 * 1024,
        help="""About how much text one HISTORY or HISTORY_PAGE carries; a single reply longer
        than this comes cut short and the client resumes it from the store.""",
    ).tag(config=True)

    max_subscriptions = Int(
        1000,
        help="""Most conversations one connection may follow (SUBSCRIBE) at once; past it a
        SUBSCRIBE gets an ERROR (too_many_subscriptions). Bounds what one socket holds.""",
    ).tag(config=True)

    store_retry_seconds = Float(
        5.0,
        help="""How long a reply keeps retrying a write the store refuses (locked, disk full)
        before it ends with an error, keeping exactly the text that was stored.""",
    ).tag(config=True)

    agent_host_ping_interval = Float(
        2.0,
        help="""Seconds between pings on a connection that has notebook agents (a kernel's).
        A kernel that dies or restarts closes its socket, and its replies end interrupted at
        once; these pings notice one that went silent without closing it (a frozen process,
        a lost network).""",
    ).tag(config=True)

    agent_host_timeout = Float(
        10.0,
        help="""Seconds without an answer to those pings after which the connection is taken
        as gone: its notebook agents are removed and the replies they were writing end
        interrupted, keeping their text. So a silent kernel is noticed within this plus
        agent_host_ping_interval.""",
    ).tag(config=True)

    @property
    def max_frame_bytes(self) -> int:
        # JSON escaping can inflate text up to 6x; above this Tornado closes the socket.
        return 8 * self.max_message_bytes + 64 * 1024

    def _make_store(self) -> Store:
        if self.store_url:
            return store_from_url(self.store_url, parent=self)
        return self.store_class(parent=self)

    def initialize_settings(self):
        # Secrets in the config (model API keys, a store URL's password) and in the
        # environment are kept out of every log line from now on, whatever logs it.
        redact.install_log_redaction()
        redact.register_environment()
        redact.register_config(self.config)  # the server's, merged into the extension's
        redact.register_url(self.store_url)
        self.store = self._make_store()
        self.store.default_user = self.user
        self.agent_instances = load_agents(self, self.log, self.agents)
        self.hub = Hub(
            self.store,
            self.agent_instances,
            batch_window=self.batch_window,
            max_batch_window=self.max_batch_window,
            log=self.log,
            history_messages=self.history_page_messages,
            history_chars=self.history_page_chars,
            retry_seconds=self.store_retry_seconds,
            approval_timeout=self.approval_timeout,
            max_subscriptions=self.max_subscriptions,
        )
        self.log.info("streamchat: messages are stored in %s", self.store.describe())
        self.log.info("streamchat: agents: %s", ", ".join(sorted(self.agent_instances)) or "none")
        for name, agent in sorted(self.agent_instances.items()):
            # Where each model agent points (never its key; a password in the URL is masked).
            if agent.has_trait("base_url") and agent.has_trait("model"):
                self.log.info(
                    "streamchat: agent %s: model %s at %s",
                    name,
                    agent.model or "(none)",
                    redact.without_password(agent.base_url or "") or "(no base URL)",
                )

    def initialize_handlers(self):
        self.handlers.extend(handlers)

    async def _start_jupyter_server_extension(self, serverapp):
        if self.freeze_gc:
            # Everything the server has built by now lives as long as it does; frozen, it is
            # no longer scanned by the garbage collector's full collections, which otherwise
            # stop the event loop for a fifth of a second every few seconds of streaming.
            gc.collect()
            gc.freeze()
        # Open the store now to report problems early; requests also open it on first use,
        # as not every host runs this hook.
        try:
            await self.hub.ensure_open()
        except StoreError as e:
            self.log.error("streamchat: %s", e)

    async def stop_extension(self):
        await self.hub.shutdown()
