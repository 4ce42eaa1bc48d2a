"""How a client in the kernel reaches a hub: over a WebSocket to the Jupyter server, or in-process.

Both transports have the same small interface, used by :mod:`jupyter_streamchat.kernel.follower`:

- ``start(on_frame, on_connect)``: begin; ``on_connect()`` is called on every (re)connection,
  ``on_frame(frame)`` for every server frame (a dict in the wire format). Both are called from
  the transport's own thread, one at a time.
- ``send(frame)``: send a client frame (a dict); callable from any thread.
- ``close()``; ``connected``: whether frames currently reach the hub.

Ordering: frames sent from within ``on_connect`` go out first, then every other frame in the
order ``send`` was called, including frames sent while disconnected, which wait in a queue.
So a client re-subscribes and resumes before anything it asked for while offline. A frame
that was being written when the connection dropped may be lost or may arrive twice; every
request of the contract is safe to repeat, and a client redoes in ``on_connect`` what must
not be lost (unanswered SEND_MESSAGEs, pending stops).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import threading
from collections import deque
from typing import Callable, Optional

from tornado.httpclient import HTTPRequest
from tornado.ioloop import IOLoop
from tornado.websocket import WebSocketClosedError, websocket_connect

from .discovery import ServerInfo
from .embedded import BackgroundHub, _InProcess
from ..core.delivery import Subscriber

log = logging.getLogger("jupyter_streamchat.kernel.connection")

OnFrame = Callable[[dict], None]
OnConnect = Callable[[], None]

# StreamChatApp.max_message_bytes' default: the in-process hub refuses what the server would.
MAX_MESSAGE_BYTES = 1024 * 1024

# A HISTORY frame carries a whole conversation; Tornado's client default (10 MiB) would turn a
# long conversation into a connection that closes on every attempt.
MAX_INCOMING_BYTES = 1 << 30


class RemoteTransport:
    """A WebSocket to ``{server.url}streamchat/ws``, kept open by a daemon thread.

    The thread runs its own event loop, so the stream keeps flowing while the kernel's main
    thread is busy running a cell. When the socket drops, it reconnects with exponential
    backoff (``min_backoff`` doubling up to ``max_backoff``) and jitter, until :meth:`close`.
    """

    def __init__(
        self,
        server: ServerInfo,
        *,
        min_backoff: float = 0.25,
        max_backoff: float = 5.0,
        connect_timeout: float = 10.0,
        ping_interval: float = 20.0,
    ):
        self.server = server
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.connect_timeout = connect_timeout
        self.ping_interval = ping_interval
        self.connected = False
        self.connections = 0  # how many times a connection was made
        self.last_error: Optional[str] = None  # why the last attempt or connection failed
        self._lock = threading.Lock()
        self._outbox: deque = deque()  # JSON texts waiting to be written
        self._first: Optional[list] = None  # frames sent by on_connect, while it runs
        self._closed = False
        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._wake: Optional[asyncio.Event] = None
        self._main: Optional[asyncio.Task] = None

    @property
    def ws_url(self) -> str:
        url = self.server.url
        scheme = "wss" if url.startswith("https:") else "ws"
        return scheme + url[url.index(":") :] + "streamchat/ws"

    def start(self, on_frame: OnFrame, on_connect: OnConnect) -> None:
        self._on_frame, self._on_connect = on_frame, on_connect
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="streamchat-remote", daemon=True
        )
        self._thread.start()
        ready.wait()

    def send(self, frame: dict) -> None:
        text = json.dumps(frame)
        with self._lock:
            if self._closed:
                log.debug("streamchat: transport closed; dropping %s", frame.get("type"))
                return
            if self._first is not None and threading.current_thread() is self._thread:
                self._first.append(text)
                return  # written once on_connect returns
            self._outbox.append(text)
        self._wake_writer()

    @property
    def backlog(self) -> int:
        """Frames waiting to be written: a sender that can wait (a notebook agent's output)
        holds back while the socket is slower than it."""
        return len(self._outbox)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.connected = False
        if self._thread is None:  # never started
            return
        try:
            self._loop.call_soon_threadsafe(self._main.cancel)
        except RuntimeError:  # the loop has already stopped
            pass
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    # -- the transport's thread ----------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._wake = asyncio.Event()
        self._main = loop.create_task(self._keep_connected())
        ready.set()
        try:
            loop.run_until_complete(self._main)
        except asyncio.CancelledError:
            pass
        finally:
            # Closes the asyncio loop too, and any socket Tornado still holds.
            IOLoop.current().close(all_fds=True)

    def _wake_writer(self) -> None:
        if self._loop is None:
            return  # not started: the frame waits for the first connection
        try:
            self._loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:  # the loop has stopped: closed
            pass

    async def _keep_connected(self) -> None:
        failures = 0
        while not self._closed:
            try:
                ws = await websocket_connect(
                    self._request(),
                    ping_interval=self.ping_interval,
                    ping_timeout=self.ping_interval,
                    max_message_size=MAX_INCOMING_BYTES,
                )
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._note_failure(f"cannot connect to {self.ws_url}: {e}", first=failures == 0)
                failures += 1
            else:
                failures = 0
                try:
                    await self._serve(ws)
                finally:
                    ws.close()
                if self._closed:
                    return
                self.last_error = f"connection to {self.ws_url} lost"
                log.info("streamchat: %s; reconnecting", self.last_error)
            await asyncio.sleep(self._backoff(failures))

    def _backoff(self, failures: int) -> float:
        delay = min(self.max_backoff, self.min_backoff * 2**failures)
        # Jitter, so kernels cut off by one server restart do not all come back in lockstep.
        return delay * random.uniform(0.5, 1.0)

    def _note_failure(self, message: str, first: bool) -> None:
        self.last_error = message
        # A server that stays down would fill the log (and, in a kernel, the output of
        # whichever cell runs): the first failure says enough.
        log.log(logging.WARNING if first else logging.DEBUG, "streamchat: %s", message)

    def _request(self) -> HTTPRequest:
        headers = {"Authorization": f"token {self.server.token}"} if self.server.token else {}
        return HTTPRequest(
            self.ws_url,
            headers=headers,
            connect_timeout=self.connect_timeout,
            request_timeout=self.connect_timeout,
        )

    async def _serve(self, ws) -> None:
        """Read frames until the socket closes; a writer task drains the outbox meanwhile."""
        self.connections += 1
        self.last_error = None
        with self._lock:
            self._first = []
        # Connected before on_connect runs: a client that sees ``connected`` false may rely
        # on the coming on_connect to send for it.
        self.connected = True
        try:
            self._on_connect()
        except Exception:
            log.exception("streamchat: on_connect failed")
        with self._lock:
            self._outbox.extendleft(reversed(self._first))
            self._first = None
        self._wake.set()
        writer = asyncio.ensure_future(self._write(ws))
        try:
            while True:
                text = await ws.read_message()
                if text is None:
                    return
                self._dispatch(text)
        finally:
            self.connected = False
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _write(self, ws) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                with self._lock:
                    if not self._outbox:
                        break
                    text = self._outbox.popleft()
                try:
                    await ws.write_message(text)
                except WebSocketClosedError:
                    with self._lock:  # not sent: first in line on the next connection
                        self._outbox.appendleft(text)
                    return

    def _dispatch(self, text) -> None:
        try:
            frame = json.loads(text)
        except (TypeError, ValueError):
            log.warning("streamchat: ignoring a frame that is not JSON text: %.200r", text)
            return
        try:
            self._on_frame(frame)
        except Exception:
            log.exception("streamchat: handling a %s frame failed", frame.get("type"))


class EmbeddedTransport:
    """The hub in this process (:class:`~jupyter_streamchat.kernel.embedded.BackgroundHub`), for
    kernels without a Jupyter server. Requests are handled one at a time in the order sent,
    as the WebSocket handler does; frames are delivered on the hub's thread.

    ``config`` (traitlets, e.g. ``{"EchoAgent": {"delay": 0}}``) applies when this process
    first uses that store.
    """

    def __init__(self, store_url: str = "", config=None):
        self.store_url = store_url
        self.config = config
        self.connected = False
        self._background: Optional[BackgroundHub] = None
        self._subscriber: Optional[Subscriber] = None
        self._queue: Optional[asyncio.Queue] = None
        self._worker: Optional[asyncio.Task] = None

    def start(self, on_frame: OnFrame, on_connect: OnConnect) -> None:
        self._on_frame, self._on_connect = on_frame, on_connect
        self._background = BackgroundHub.get(self.store_url, self.config)
        if self._background.in_hub_thread():
            raise RuntimeError("start an EmbeddedTransport from outside the hub's own thread")
        # Waits for the store to open, so a store that cannot be opened fails here, loudly.
        asyncio.run_coroutine_threadsafe(self._open(), self._background.loop).result()

    async def _open(self) -> None:
        hub = self._background.hub
        await hub.ensure_open()
        self._queue = asyncio.Queue()
        self._subscriber = hub.connect(_InProcess(self._deliver))
        self._worker = asyncio.ensure_future(self._serve())
        self.connected = True
        try:
            self._on_connect()
        except Exception:
            log.exception("streamchat: on_connect failed")

    def send(self, frame: dict) -> None:
        if not self.connected:
            log.debug("streamchat: transport closed; dropping %s", frame.get("type"))
            return
        text = json.dumps(frame)  # as on the wire: the hub sees exactly what a socket carries
        try:
            self._background.loop.call_soon_threadsafe(self._queue.put_nowait, text)
        except RuntimeError:  # the interpreter is shutting down
            pass

    def close(self) -> None:
        if not self.connected:
            return
        self.connected = False
        future = asyncio.run_coroutine_threadsafe(self._close(), self._background.loop)
        if not self._background.in_hub_thread():
            future.result(timeout=5)

    async def _close(self) -> None:
        self._worker.cancel()
        self._background.hub.disconnect(self._subscriber)

    # -- the hub's thread -----------------------------------------------------------------

    async def _serve(self) -> None:
        hub, subscriber = self._background.hub, self._subscriber
        while True:
            await hub.handle_text(subscriber, await self._queue.get(), MAX_MESSAGE_BYTES)

    def _deliver(self, frame: dict) -> None:
        # The hub calls this inside its own fan-out: an exception here would make the
        # subscriber look closed and stop its frames.
        try:
            self._on_frame(frame)
        except Exception:
            log.exception("streamchat: handling a %s frame failed", frame.get("type"))
