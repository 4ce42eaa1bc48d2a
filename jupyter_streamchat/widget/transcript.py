"""A ChatWidget's conversation as Markdown beside its view, for a notebook run with no live view
(nbclient, papermill, ``jupyter nbconvert --execute``): the saved notebook then reads right where
no widget can be drawn (GitHub, nbviewer): who said what, the replies as Markdown, how a reply
ended when it did not complete.

The conversation changes after the widget was displayed (later cells send to it), so the widget
is displayed with a display id and that output is updated after each cell that changed the
conversation (headless runners apply such updates to the saved output). That happens only in a
kernel with no Jupyter server behind it (``widget.remote`` is False) and while no view has
spoken over the widget's comm (``widget._view_attached``): a live view draws the chat itself,
and redrawing its output at each message would render it again and again.
"""

from __future__ import annotations

import logging
import uuid
import weakref
from typing import Callable, Optional

from ..kernel.markdown import conversation_markdown

log = logging.getLogger("jupyter_streamchat.widget.transcript")

# How long a displayed widget waits for its conversation's history (a stored conversation
# re-opened), so that the first saved output already holds it.
SYNC_SECONDS = 5.0


class _Shown:
    """Where a widget was displayed headless, and the Markdown last put there."""

    __slots__ = ("display_id", "markdown")

    def __init__(self):
        self.display_id = uuid.uuid4().hex
        self.markdown: Optional[str] = None


_shown: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # widget -> _Shown
_hooked: "weakref.WeakSet" = weakref.WeakSet()  # shells whose post_execute refreshes them


def display_method(widget) -> Optional[Callable[[], None]]:
    """The widget's ``_ipython_display_`` when headless; else None, and IPython displays it as
    any widget, from its ``_repr_mimebundle_``."""
    shell = _kernel_shell()
    if shell is None or not _headless(widget):
        return None
    return lambda: _display(shell, widget)


def _display(shell, widget) -> None:
    from IPython.display import display

    try:
        widget._conversation.wait_synced(SYNC_SECONDS)
    except TimeoutError:
        pass  # shown as far as it is known; the next cell's refresh brings the rest
    bundle = _bundle(widget)
    if bundle is None:  # closed
        return
    data, metadata = bundle
    shown = _shown.setdefault(widget, _Shown())
    display(data, metadata=metadata, raw=True, display_id=shown.display_id)
    shown.markdown = data["text/markdown"]
    if shell not in _hooked:
        shell.events.register("post_execute", _refresh)
        _hooked.add(shell)


def _refresh() -> None:
    """After each cell: every widget displayed headless whose conversation changed is shown
    again (the update goes out in that cell's context, where a headless runner takes it)."""
    from IPython.display import update_display

    for widget, shown in list(_shown.items()):
        try:
            bundle = _bundle(widget) if _headless(widget) else None
            if bundle is None:  # closed, or a view now draws it
                _shown.pop(widget, None)
                continue
            data, metadata = bundle
            if data["text/markdown"] != shown.markdown:
                update_display(data, metadata=metadata, raw=True, display_id=shown.display_id)
                shown.markdown = data["text/markdown"]
        except Exception:  # never fail the user's cell for a saved output
            log.exception("streamchat: updating a chat's saved output failed")


def _bundle(widget) -> Optional[tuple]:
    if getattr(widget, "comm", None) is None:  # closed: it has no view to show any more
        return None
    bundle = widget._repr_mimebundle_()
    if bundle is None:
        return None
    data, metadata = bundle
    return {**data, "text/markdown": conversation_markdown(widget.messages)}, metadata


def _headless(widget) -> bool:
    return not widget.remote and not getattr(widget, "_view_attached", False)


def _kernel_shell():
    """The IPython shell of a kernel (one that can display rich output), else None."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return shell if getattr(shell, "kernel", None) is not None else None
