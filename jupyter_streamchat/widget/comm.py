"""A chat view's frames through the kernel, for front ends whose server runs no hub.

In VS Code, in Colab, or under a Jupyter server without the streamchat extension, the view in
the browser has no WebSocket to a hub. It sends the same frames (the wire contract,
docs/protocol.md) as the widget's custom messages instead; :class:`CommRelay` hands them to a
hub connection of its own in the kernel and sends the hub's frames back the same way. Each
message is an envelope naming the view (js/src/widget/commtransport.ts is the other end)::

    view -> kernel   {"streamchat": "open" | "frame" | "close", "view": id, "frame": {...}}
    kernel -> view   {"streamchat": "opened" | "frame" | "closed", "view": id, "frame": {...},
                      "reason": "..."}

A view's context picker also asks for the kernel's variables (the values live here)::

    view -> kernel   {"streamchat": "variables", "view": id, "id": request id,
                      "request": {"op": "list", "query": ...} | {"op": "describe", "name": ...}}
    kernel -> view   {"streamchat": "variables", "view": id, "id": request id, "answer": {...}}

One hub connection per live view, not per widget: the contract is per connection (a view's
subscriptions, the answers to its requests, a RESUME's replay, an ERROR about its frame belong
to it, as on a socket), and one widget may be shown twice, or in two browser tabs. A widget's
custom messages reach all of its views, so every frame names the view it is for. A view whose
page was reloaded never says goodbye, so a widget keeps at most :data:`MAX_VIEWS` connections
and lets the least recently used go (it tells that view "closed"; a view still alive opens
again).

The hub connection reaches the hub the widget's Python object uses (:func:`transport_like`):
the kernel's in-process hub when the kernel found no Jupyter server with the extension, else
that server's. So ``w.send()``, ``w.stop()`` and ``w.messages`` follow the same conversation as
the view.

Threads: requests arrive on the kernel's main thread, where comm messages are handled one at a
time with the cells, so they queue behind a running cell (a stop too: it reaches the hub when
the cell ends, and the agent stops at its next chunk). The hub's frames come on the hub
connection's thread and are sent from there: ipykernel's IOPub socket takes messages from any
thread (as ``print`` in a thread does), whereas the kernel's main loop, held by a running cell,
would hold them back. So a reply streams into the view while a cell runs, even one waiting for
it (``w.send("hi").wait()``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from typing import Any, Callable

from ipywidgets import Widget

from .. import protocol as p
from ..redact import redact
from ..kernel import variables
from ..kernel.connection import MAX_MESSAGE_BYTES, EmbeddedTransport, RemoteTransport

log = logging.getLogger("jupyter_streamchat.widget.comm")

ENVELOPE = "streamchat"  # the key of a chat envelope in a widget custom message

# Hub connections one widget keeps for its views (see the module's docstring).
MAX_VIEWS = 16

# The largest frame a view may send, as the WebSocket layer's (StreamChatApp.max_frame_bytes
# at the default max_message_bytes); a message text over MAX_MESSAGE_BYTES inside a smaller
# frame gets the hub's own ERROR too_large.
MAX_FRAME_BYTES = 8 * MAX_MESSAGE_BYTES + 64 * 1024

# View ids are made by the view (32 hex digits); anything longer is not one.
MAX_VIEW_ID = p.MAX_ID_LENGTH


def transport_like(transport: Any):
    """A new, unstarted connection to the hub that ``transport`` reaches."""
    transport = getattr(transport, "shared", transport)  # a channel of the kernel's link
    if isinstance(transport, RemoteTransport):
        return RemoteTransport(transport.server)
    if isinstance(transport, EmbeddedTransport):
        return EmbeddedTransport(transport.store_url, transport.config)
    return EmbeddedTransport()


class CommRelay:
    """The frames of a widget's views, between their custom messages and the hub.

    ``make_transport()`` makes a new, unstarted hub connection (the interface of
    :mod:`jupyter_streamchat.kernel.connection`); one is made for each view that opens.
    Register :meth:`handle` with ``widget.on_msg``; :meth:`close` ends every connection.
    """

    def __init__(self, widget, make_transport: Callable[[], Any]):
        self._widget = widget
        self._make_transport = make_transport
        # view id -> its hub connection, least recently used first. Changed on the kernel's
        # main thread only; the hub's threads only read it.
        self._views: OrderedDict = OrderedDict()
        self._send_lock = threading.Lock()  # one message at a time, whichever thread sends
        self._closed = False

    @property
    def views(self) -> int:
        """How many views hold a hub connection."""
        return len(self._views)

    def handle(self, widget, content, buffers=None) -> None:
        """``widget.on_msg`` callback: one custom message from a view."""
        if not isinstance(content, dict) or not isinstance(content.get(ENVELOPE), str):
            return  # not the chat's
        view = content.get("view")
        if not isinstance(view, str) or not 0 < len(view) <= MAX_VIEW_ID:
            log.warning("streamchat: ignoring a chat message that names no view")
            return
        kind = content[ENVELOPE]
        if kind == "variables":
            # Not a frame for the hub: the view's context picker asks for the kernel's
            # variables, on any page (with a hub of its own or not).
            self._variables(view, content.get("id"), content.get("request"))
            return
        # A view speaks through the kernel: the page it is on has no hub of its own.
        self._widget._view_attached = True
        if self._closed:
            self._post(view, "closed", reason="this chat widget was closed")
        elif kind == "open":
            self._open(view)
        elif kind == "frame":
            self._forward(view, content.get("frame"))
        elif kind == "close":
            self._drop(view)
        else:
            log.debug("streamchat: ignoring a chat message of kind %.40r", kind)

    def close(self) -> None:
        self._closed = True
        while self._views:
            self._views.popitem(last=False)[1].close()

    # -- requests (the kernel's main thread) -----------------------------------------------

    def _open(self, view: str) -> None:
        # A view that opens again (after "closed", or a second "open") starts afresh, as a
        # socket that reconnects: it re-sends whatever it still needs.
        self._drop(view)
        transport = self._make_transport()
        self._views[view] = transport  # before start: its first frames may come during it

        def on_frame(frame: dict) -> None:
            if self._views.get(view) is transport:  # not a connection let go meanwhile
                self._post(view, "frame", frame=frame)

        def on_connect() -> None:
            if self._views.get(view) is transport:
                self._post(view, "opened")

        try:
            transport.start(on_frame, on_connect)
        except Exception as e:
            log.warning("streamchat: cannot connect a chat view to the hub: %s", e)
            self._views.pop(view, None)
            self._post(view, "closed", reason=redact(f"the chat hub cannot be reached: {e}"))
            return
        while len(self._views) > MAX_VIEWS:
            gone, oldest = self._views.popitem(last=False)
            oldest.close()
            self._post(
                gone,
                "closed",
                reason=f"this chat is shown in more than {MAX_VIEWS} "
                "places; the one used least recently was let go",
            )

    def _forward(self, view: str, frame: Any) -> None:
        transport = self._views.get(view)
        if transport is None:
            # Let go (too many views, or the kernel's relay is new): the view opens again.
            self._post(view, "closed", reason="the kernel holds no connection for this view")
            return
        self._views.move_to_end(view)
        problem = _frame_problem(frame)
        if problem is not None:
            self._post(view, "frame", frame=problem)
            return
        transport.send(frame)  # the hub checks the rest, as for a socket's frame

    def _variables(self, view: str, request_id: Any, request: Any) -> None:
        """Answer a view's question about the kernel's variables (kernel/variables.py): the
        widget lives in the kernel, so the values are at hand. On the main thread, as the
        cells: the namespace does not change while it is read."""
        if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_VIEW_ID:
            return
        self._post(view, "variables", id=request_id, answer=variables.respond(request, _user_ns()))

    def _drop(self, view: str) -> None:
        transport = self._views.pop(view, None)
        if transport is not None:
            transport.close()

    # -- to the views (any thread) ---------------------------------------------------------

    def _post(self, view: str, kind: str, **fields: Any) -> None:
        content = {ENVELOPE: kind, "view": view, **fields}
        try:
            with self._send_lock:
                # ipywidgets' custom message: ChatWidget.send is the chat's own (a message).
                Widget.send(self._widget, content)
        except Exception:  # the kernel is shutting down, say: the view learns it from the comm
            log.debug("streamchat: cannot send to a chat view", exc_info=True)


def _user_ns() -> dict:
    """The namespace of the user's cells."""
    from IPython import get_ipython

    shell = get_ipython()
    return shell.user_ns if shell is not None else {}


def _frame_problem(frame: Any) -> dict | None:
    """The ERROR a socket's frame would get before the hub reads it (not a JSON object, too
    large), or None."""
    if not isinstance(frame, dict):
        return p.error_frame(p.BAD_JSON, "frame must be a JSON object")
    try:
        size = len(json.dumps(frame))  # ASCII: characters are bytes
    except (TypeError, ValueError, RecursionError):
        return p.error_frame(p.BAD_JSON, "frame is not JSON", **p.frame_ids(frame))
    if size > MAX_FRAME_BYTES:
        return p.error_frame(
            p.TOO_LARGE,
            f"frame is {size} bytes; the limit is {MAX_FRAME_BYTES}",
            **p.frame_ids(frame),
        )
    return None
