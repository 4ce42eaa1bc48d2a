"""A loopback TCP proxy that can cut chosen connections, to test how clients recover.

The browser loads JupyterLab through the proxy's port (or a kernel-side client connects
through it), so every HTTP request and WebSocket passes through it. ``cut("/streamchat/ws")``
then drops the chat socket the way a network failure would (a TCP reset, no WebSocket close
frame) while everything else stays up; ``down()`` also refuses new connections until ``up()``.

All sockets are owned by one thread running a selector loop; the public methods hand work to
that thread and wait for it, so no socket is ever touched by two threads at once.
"""

from __future__ import annotations

import collections
import queue
import selectors
import socket
import struct
import threading
from concurrent.futures import Future
from typing import Callable, Optional

BUFFER_LIMIT = 1 << 20  # bytes queued per direction before we stop reading from the sender
RECV_SIZE = 65536
FIRST_LINE_LIMIT = 8192  # a request line longer than this is recorded truncated
HISTORY_LIMIT = 10000  # first request lines remembered for opened(), newest kept
CALL_GUARD = 10.0  # seconds a public method waits for the proxy thread; a hang guard only


class _Connection:
    """One accepted client socket and its upstream socket, with a buffer per direction."""

    def __init__(self, client: socket.socket, upstream: socket.socket):
        self.client = client
        self.upstream = upstream
        self.to_upstream = bytearray()
        self.to_client = bytearray()
        self.client_eof = False  # the client will send nothing more
        self.upstream_eof = False
        self.sent_eof_upstream = False  # we passed the client's EOF on (shutdown SHUT_WR)
        self.sent_eof_client = False
        self.head = bytearray()  # the client's first bytes until the first line is complete
        self.first_line: Optional[str] = None

    def done(self) -> bool:
        return (
            self.sent_eof_upstream
            and self.sent_eof_client
            and not self.to_upstream
            and not self.to_client
        )

    def matches(self, match: str) -> bool:
        line = self.first_line if self.first_line is not None else self.head.decode("latin-1")
        return match in line


class TcpProxy:
    """Listens on 127.0.0.1:``port`` and forwards every connection to the target."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self._selector = selectors.DefaultSelector()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        # The loop thread sleeps in select(); a byte on this pair wakes it for queued calls.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._calls: "queue.Queue[tuple[Callable, Future]]" = queue.Queue()
        self._connections: list[_Connection] = []
        self._history: collections.deque[str] = collections.deque(maxlen=HISTORY_LIMIT)
        self._closed = False
        self._refusing = False  # down(): new connections are reset at once
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._run, name=f"TcpProxy:{self.port}", daemon=True)
        self._thread.start()

    # -- public API (any thread) -----------------------------------------------------------

    def cut(self, match: str) -> int:
        """Reset, on both sides, every live connection whose first request line contains
        ``match``; returns how many were cut."""
        return self._call(lambda: self._cut(match))

    def down(self) -> None:
        """The path is gone: cut every connection and refuse new ones until :meth:`up`."""

        def go_down():
            self._refusing = True
            return self._cut("")

        self._call(go_down)

    def up(self) -> None:
        self._call(lambda: setattr(self, "_refusing", False))

    def connections(self, match: str = "") -> int:
        """How many live connections have a first request line containing ``match``."""
        return self._call(lambda: sum(c.matches(match) for c in self._connections))

    def opened(self, match: str = "") -> int:
        """How many connections, live or closed, had a first request line containing ``match``.

        A page reconnects so fast that a live count may show the new socket already right
        after a cut; this count rising proves that a new connection was made."""
        return self._call(lambda: sum(match in line for line in self._history))

    def request_lines(self) -> list[str]:
        """The first request lines of the live connections (for failure messages)."""
        return self._call(
            lambda: [c.first_line or c.head.decode("latin-1") for c in self._connections]
        )

    def close(self) -> None:
        """Stop listening, reset every connection and end the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._wake()
        self._thread.join(CALL_GUARD)

    def __enter__(self) -> "TcpProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- hand-over to the loop thread ------------------------------------------------------

    def _call(self, fn: Callable):
        if self._closed:
            raise RuntimeError("TcpProxy is closed")
        future: Future = Future()
        self._calls.put((fn, future))
        self._wake()
        return future.result(CALL_GUARD)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass  # already woken (buffer full) or shutting down: either way the loop runs

    # -- the loop thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._closed:
                for key, mask in self._selector.select():
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        self._drain_wake()
                    else:
                        self._service(key.data, key.fileobj, mask)
                self._run_calls()
        finally:
            for conn in list(self._connections):
                self._abort(conn)
            # Fail any call that raced with close() rather than leave its caller waiting.
            self._run_calls(error=RuntimeError("TcpProxy is closed"))
            self._selector.close()
            for sock in (self._listener, self._wake_r, self._wake_w):
                sock.close()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _run_calls(self, error: Optional[Exception] = None) -> None:
        while True:
            try:
                fn, future = self._calls.get_nowait()
            except queue.Empty:
                return
            if error is not None:
                future.set_exception(error)
                continue
            try:
                future.set_result(fn())
            except Exception as exc:  # report to the caller, keep the proxy running
                future.set_exception(exc)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except BlockingIOError:
                return
            if self._refusing:
                _reset(client)
                continue
            try:
                # Loopback connects complete (or are refused) at once, so a blocking connect
                # here does not stall the other connections noticeably.
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)  # the target is down: the client sees a refused request
                continue
            for sock in (client, upstream):
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(client, upstream)
            self._connections.append(conn)
            self._update(conn)

    def _service(self, conn: _Connection, sock: socket.socket, mask: int) -> None:
        if conn not in self._connections:
            return  # cut earlier in this same round of events
        outgoing = conn.to_upstream if sock is conn.client else conn.to_client
        incoming = conn.to_client if sock is conn.client else conn.to_upstream
        try:
            if mask & selectors.EVENT_READ:
                data = sock.recv(RECV_SIZE)
                if data:
                    if sock is conn.client and conn.first_line is None:
                        self._record_first_line(conn, data)
                    outgoing.extend(data)
                elif sock is conn.client:
                    conn.client_eof = True
                else:
                    conn.upstream_eof = True
            if mask & selectors.EVENT_WRITE and incoming:
                sent = sock.send(incoming)
                del incoming[:sent]
            # Pass a half-close on once everything before it has been delivered.
            if conn.client_eof and not conn.to_upstream and not conn.sent_eof_upstream:
                conn.upstream.shutdown(socket.SHUT_WR)
                conn.sent_eof_upstream = True
            if conn.upstream_eof and not conn.to_client and not conn.sent_eof_client:
                conn.client.shutdown(socket.SHUT_WR)
                conn.sent_eof_client = True
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            # A reset or a broken pipe on one side: the other side must see it too.
            self._abort(conn)
            return
        if conn.done():
            self._close(conn)
        else:
            self._update(conn)

    def _record_first_line(self, conn: _Connection, data: bytes) -> None:
        conn.head.extend(data[:FIRST_LINE_LIMIT])
        end = conn.head.find(b"\r\n")
        if end >= 0 or len(conn.head) >= FIRST_LINE_LIMIT:
            conn.first_line = bytes(conn.head[: end if end >= 0 else FIRST_LINE_LIMIT]).decode(
                "latin-1"
            )
            conn.head = bytearray()
            self._history.append(conn.first_line)

    def _update(self, conn: _Connection) -> None:
        """Register the events each socket of ``conn`` should wake us for."""
        for sock, eof, outgoing, incoming in (
            (conn.client, conn.client_eof, conn.to_upstream, conn.to_client),
            (conn.upstream, conn.upstream_eof, conn.to_client, conn.to_upstream),
        ):
            events = 0
            # Stop reading from a sender whose receiver lags (back-pressure), and after EOF.
            if not eof and len(outgoing) < BUFFER_LIMIT:
                events |= selectors.EVENT_READ
            if incoming:
                events |= selectors.EVENT_WRITE
            try:
                key = self._selector.get_key(sock)
            except KeyError:
                key = None
            if key is None and events:
                self._selector.register(sock, events, conn)
            elif key is not None and not events:
                self._selector.unregister(sock)
            elif key is not None and key.events != events:
                self._selector.modify(sock, events, conn)

    def _cut(self, match: str) -> int:
        victims = [c for c in self._connections if c.matches(match)]
        for conn in victims:
            self._abort(conn)
        return len(victims)

    def _forget(self, conn: _Connection) -> None:
        self._connections.remove(conn)
        for sock in (conn.client, conn.upstream):
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass

    def _close(self, conn: _Connection) -> None:
        """Both sides finished cleanly."""
        self._forget(conn)
        conn.client.close()
        conn.upstream.close()

    def _abort(self, conn: _Connection) -> None:
        """Drop both sides at once with a TCP reset, as a failing network would."""
        if conn in self._connections:
            self._forget(conn)
        _reset(conn.client)
        _reset(conn.upstream)


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0, which sends RST instead of an orderly FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()
