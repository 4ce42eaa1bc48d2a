"""The kernel's one connection to a hub, shared by everything in the kernel that chats.

However many conversations (``connect()``, ``Chat``, widgets) and notebook agents a kernel
has, it holds one connection: to the Jupyter server that launched it (found as
:func:`~.discovery.find_server` says, or named by $STREAMCHAT_SERVER_URL and
$STREAMCHAT_TOKEN), else to the hub in this process (:class:`~.embedded.BackgroundHub`).
:class:`Link` routes what comes in: a conversation's frames to every follower of that
conversation (several may follow the same one), an ERROR to the follower whose request it
answers, the agent frames to this kernel's notebook agents (:mod:`.agents`). On every
(re)connection the notebook agents register again, then every follower re-subscribes and
resumes (its ``on_connect``).

Each follower gets a :class:`Channel`, which has a transport's interface (``start``,
``send``, ``close``, ``connected``), so :class:`~.follower.Conversation` works over either.
Closing a channel unsubscribes from its conversation once no other channel follows it. The
connection closes when nothing uses it any more (no channel, no notebook agent), and the next
user opens one again, finding the server anew.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Callable, Optional

from .. import protocol as p
from .connection import EmbeddedTransport, RemoteTransport
from .discovery import find_server

if TYPE_CHECKING:
    from .agents import AgentHost

log = logging.getLogger("jupyter_streamchat.kernel.link")

# Frames for this kernel's notebook agents rather than for a conversation.
AGENT_FRAMES = frozenset({"AGENT_REQUEST", "AGENT_CANCEL", "AGENT_REGISTERED", "AGENTS_CHANGED"})

# Requests remembered for routing the ERROR that may answer them (a SEND_MESSAGE until it is
# accepted, a RESUME or STOP_GENERATING until its reply ends): at most this many of each.
MAX_ROUTES = 10_000

_REMOTE = ("remote",)  # key of the link to a Jupyter server, whatever store_url was asked


class Channel:
    """A follower's share of the link: the transport interface, for one conversation."""

    def __init__(self, link: "Link", conversation_id: str):
        self.link = link
        self.conversation_id = conversation_id
        self.closed = False
        self.on_frame: Optional[Callable[[dict], None]] = None
        self.on_connect: Optional[Callable[[], None]] = None

    def start(self, on_frame: Callable[[dict], None], on_connect: Callable[[], None]) -> None:
        self.on_frame, self.on_connect = on_frame, on_connect
        self.link._attach(self)

    def send(self, frame: dict) -> None:
        self.link._send_for(self, frame)

    def close(self) -> None:
        self.link._detach(self)

    @property
    def connected(self) -> bool:
        return not self.closed and self.link.transport.connected

    @property
    def shared(self):
        """The connection itself (a RemoteTransport or an EmbeddedTransport)."""
        return self.link.transport

    @property
    def server(self):
        return getattr(self.link.transport, "server", None)

    @property
    def last_error(self) -> Optional[str]:
        return getattr(self.link.transport, "last_error", None)

    @property
    def connections(self) -> int:
        """How many times the kernel's connection was made."""
        return self.link.connections


class Link:
    """One connection (a transport) and everything in this process that uses it."""

    _links: dict = {}  # store_url (or _REMOTE) -> Link
    _links_lock = threading.Lock()  # taken before any link's own lock

    def __init__(self, transport):
        self.transport = transport
        self.connections = 0  # how many times the connection was made
        self.closed = False
        self._lock = threading.Lock()
        self._started = False
        self._users: set = set()  # channels open (attached or about to be)
        self._channels: dict = {}  # conversation id -> [Channel] following it
        self._senders: OrderedDict = OrderedDict()  # clientMessageId -> Channel
        self._asked: OrderedDict = OrderedDict()  # reply id -> Channel (RESUME, STOP)
        self._host: Optional["AgentHost"] = None
        self._io_thread: Optional[int] = None  # the thread frames are delivered on

    # -- finding the link ------------------------------------------------------------------

    @classmethod
    def channel(cls, conversation_id: str, store_url: str = "") -> Channel:
        """A channel for a new follower of ``conversation_id``, on this process's link."""
        with cls._links_lock:
            link = cls._get(store_url)
            channel = Channel(link, conversation_id)
            with link._lock:
                link._users.add(channel)
            return channel

    @classmethod
    def host_agent(cls, entry, store_url: str = "") -> "AgentHost":
        """Keep a notebook agent (``agents._Entry``) on this process's link; its host."""
        with cls._links_lock:
            link = cls._get(store_url)
            host = link.agent_host()
            host.keep(entry)
            return host

    @classmethod
    def current_host(cls, store_url: str = "") -> Optional["AgentHost"]:
        """The agent host of the open link, if there is one (none is opened for this)."""
        with cls._links_lock:
            link = cls._links.get(store_url)
            return link._host if link is not None and not link.closed else None

    @classmethod
    def _get(cls, store_url: str) -> "Link":
        link = cls._links.get(store_url)
        if link is not None and not link.closed:
            return link
        server = find_server()
        if server is not None:
            link = cls._links.get(_REMOTE)
            if link is None or link.closed:
                link = cls._links[_REMOTE] = cls(RemoteTransport(server))
        else:
            link = cls(EmbeddedTransport(store_url))
        cls._links[store_url] = link
        return link

    def agent_host(self) -> "AgentHost":
        from .agents import AgentHost

        with self._lock:
            if self._host is None:
                self._host = AgentHost(self)
            return self._host

    # -- the connection --------------------------------------------------------------------

    def start(self) -> bool:
        """Start the connection if not yet; True if this call started it."""
        with self._lock:
            if self._started or self.closed:
                return False
            self._started = True
        try:
            self.transport.start(self._on_frame, self._on_connect)
        except BaseException:
            self._close(forget=True)
            raise
        return True

    def send(self, frame: dict) -> None:
        self.transport.send(frame)

    def on_io_thread(self) -> bool:
        """Whether this thread is the one frames arrive on (it must not wait for them)."""
        return threading.get_ident() == self._io_thread

    def close_if_idle(self) -> None:
        """Close the connection if no channel and no notebook agent uses it."""
        with Link._links_lock:
            with self._lock:
                host = self._host
                if self.closed or self._users or (host is not None and host.busy()):
                    return
                self.closed = True
            for key in [k for k, link in Link._links.items() if link is self]:
                del Link._links[key]
        self._close(forget=False)

    def _close(self, forget: bool) -> None:
        if forget:
            with Link._links_lock:
                self.closed = True
                for key in [k for k, link in Link._links.items() if link is self]:
                    del Link._links[key]
        if self._host is not None:
            self._host.stop()
        if self._started:
            try:
                self.transport.close()
            except Exception:
                log.debug("streamchat: closing the connection failed", exc_info=True)

    # -- channels --------------------------------------------------------------------------

    def _attach(self, channel: Channel) -> None:
        with self._lock:
            if self.closed or channel.closed:
                raise RuntimeError("the connection to the chat hub was closed")
            self._channels.setdefault(channel.conversation_id, []).append(channel)
        if self.start():
            return  # its on_connect (now or once connected) covers this channel
        if self.transport.connected:
            # Already connected: subscribe now. (If a reconnection races this, the channel
            # subscribes twice; every request of the contract is safe to repeat.)
            self._run(channel.on_connect)

    def _detach(self, channel: Channel) -> None:
        with self._lock:
            if channel.closed:
                return
            channel.closed = True
            self._users.discard(channel)
            followers = self._channels.get(channel.conversation_id)
            last = False
            if followers is not None and channel in followers:
                followers.remove(channel)
                if not followers:
                    del self._channels[channel.conversation_id]
                    last = True
            for routes in (self._senders, self._asked):
                for key in [k for k, c in routes.items() if c is channel]:
                    del routes[key]
        if last and self.transport.connected:
            self.send(p.request_frame(p.Unsubscribe(channel.conversation_id)))
        self.close_if_idle()

    def _send_for(self, channel: Channel, frame: dict) -> None:
        if channel.closed:
            return
        kind = frame.get("type")
        with self._lock:
            if kind == "SEND_MESSAGE":
                _remember(self._senders, frame["clientMessageId"], channel)
            elif kind in ("RESUME", "STOP_GENERATING"):
                _remember(self._asked, frame["messageId"], channel)
        self.send(frame)

    # -- the transport's thread ------------------------------------------------------------

    def _on_connect(self) -> None:
        self._io_thread = threading.get_ident()
        with self._lock:
            self.connections += 1
            host = self._host
            channels = [c for followers in self._channels.values() for c in followers]
        # Agents first: a message re-sent below may be for one of them.
        if host is not None:
            self._run(host.on_connect)
        for channel in channels:
            self._run(channel.on_connect)

    def _on_frame(self, frame) -> None:
        self._io_thread = threading.get_ident()
        if not isinstance(frame, dict):
            return
        kind = frame.get("type")
        if kind in AGENT_FRAMES:
            if self._host is not None:
                self._run(self._host.on_frame, frame)
            return
        if kind == "ERROR":
            targets = self._answered_by(frame)
            if targets is None:  # about a notebook agent
                if self._host is not None:
                    self._run(self._host.on_error, frame)
                return
        else:
            conversation_id = _key(frame.get("conversationId"))
            with self._lock:
                if kind == "MESSAGE_ACCEPTED":
                    self._senders.pop(_key(frame.get("clientMessageId")), None)
                elif kind == "MESSAGE_CHUNK" and frame.get("isComplete") is True:
                    self._asked.pop(_key(frame.get("messageId")), None)
                targets = list(self._channels.get(conversation_id, ()))
        for channel in targets:
            if not channel.closed:
                self._run(channel.on_frame, frame)

    def _answered_by(self, frame: dict) -> Optional[list]:
        """The channels an ERROR is for; None when it is for the notebook agents."""
        client_id, message_id = _key(frame.get("clientMessageId")), _key(frame.get("messageId"))
        conversation_id = _key(frame.get("conversationId"))
        with self._lock:
            if client_id in self._senders:
                return [self._senders.pop(client_id)]
            if "requestId" in frame or ("agentId" in frame and client_id is None):
                return None
            if message_id in self._asked:
                return [self._asked.pop(message_id)]
            if conversation_id in self._channels:
                return list(self._channels[conversation_id])
            if client_id is not None or message_id is not None:
                log.debug(
                    "streamchat: an ERROR for a request no follower waits for: %s",
                    frame.get("message"),
                )
                return []
            # Tied to no request: every follower hears it.
            return [c for followers in self._channels.values() for c in followers]

    @staticmethod
    def _run(callback, *args) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("streamchat: handling the hub's frames failed")


def _close_all() -> None:
    """At exit (a kernel shut down or restarted): cancel the notebook agents' runs and close
    the connection first, so the hub ends their replies ``interrupted``. IPython's own exit
    handler, which runs after this one (this module is imported later), clears the user's
    namespace, and an agent still running then would fail with a NameError instead."""
    with Link._links_lock:
        links = {id(link): link for link in Link._links.values()}
    for link in links.values():
        link._close(forget=True)


atexit.register(_close_all)


def _key(value):
    """A frame's id as a dict key: None for anything but a string (a bad frame's list)."""
    return value if isinstance(value, str) else None


def _remember(routes: OrderedDict, key, channel: Channel) -> None:
    if not isinstance(key, str):
        return
    routes[key] = channel
    routes.move_to_end(key)
    if len(routes) > MAX_ROUTES:
        routes.popitem(last=False)
