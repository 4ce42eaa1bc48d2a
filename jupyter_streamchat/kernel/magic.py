"""The ``%%chat`` cell magic. After ``%load_ext jupyter_streamchat``::

    %%chat echo
    Hello!

sends the cell's text to the agent and streams the reply into the cell's output as it arrives,
then shows it as Markdown once it has ended (with how it ended, when it did not complete). In a
kernel the output is one display, redrawn at most every ``REDRAW_SECONDS`` while the reply
streams, so a headless run (nbclient, ``jupyter nbconvert --execute``, papermill) saves the
whole reply; in a terminal IPython the text goes to stdout as it arrives. The reply's tool calls
show as a line each (``🔧 read_file — completed (0.1 s)``), before its text in a kernel; a call
that waits for approval says so while it waits (it is answered in the Chat panel).

Later ``%%chat`` cells in the same shell carry on the same conversation, with the agent named
last, unless told otherwise (``--new``, ``--conversation ID``). Interrupting the kernel stops
the reply and keeps what it had said.
"""

from __future__ import annotations

import sys
import time
from typing import Optional

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .chat import Chat
from .follower import ChatReply
from .markdown import SHOWN_TOOL_STATUSES, reply_markdown, reply_text, status_note, tool_call_line

DEFAULT_AGENT = "demo"

# A streaming reply is redrawn at most this often: each redraw is a message to every front end
# (and a re-render there), so not one per token.
REDRAW_SECONDS = 0.08

# After an interrupt, how long to wait for the stopped reply's last frame.
STOP_GRACE_SECONDS = 5.0


class ChatError(Exception):
    """The hub refused the message (an unknown agent, a text too large...), or the chat cannot
    be reached: shown as one line, not a traceback."""

    def _render_traceback_(self) -> list:
        return [f"ChatError: {self}"]


class ChatInterrupted(KeyboardInterrupt):
    """The kernel was interrupted during a reply: the reply was stopped, its text kept. Still a
    KeyboardInterrupt, so the cells queued after this one do not run."""

    def _render_traceback_(self) -> list:
        return ["KeyboardInterrupt: the reply was stopped; what it had said is kept above."]


@magics_class
class ChatMagics(Magics):
    """``%%chat``; one instance per IPython shell, which holds the conversation."""

    def __init__(self, shell=None):
        super().__init__(shell)
        self.current: Optional[Chat] = None  # the conversation the next %%chat carries on
        self.agent = DEFAULT_AGENT  # the agent named last
        self.last_reply: Optional[ChatReply] = None

    @magic_arguments("%chat")  # IPython's help puts one more % before it: %%chat
    @argument(
        "agent",
        nargs="?",
        help=f"Id of the agent that answers (default: the one named last, else {DEFAULT_AGENT!r}).",
    )
    @argument(
        "--conversation",
        metavar="ID",
        help="Carry on the conversation with this id (and make it the one later cells carry on).",
    )
    @argument("--new", action="store_true", help="Start a new conversation.")
    @cell_magic
    def chat(self, line: str, cell: str) -> None:
        """Send the cell's text to an agent and stream its reply into the cell's output.

        Later %%chat cells carry on the same conversation unless given --new or
        --conversation. Interrupting the kernel stops the reply and keeps its text.
        """
        args = parse_argstring(self.chat, line)
        text = cell.strip()
        if not text:
            raise UsageError("%%chat sends the text of its cell, and this cell has none.")
        if args.new and args.conversation:
            raise UsageError("%%chat: give --new or --conversation, not both.")
        agent = args.agent or self.agent
        chat = self._conversation(agent, args.new, args.conversation)
        reply = self.last_reply = chat.send(text, agent)
        if getattr(self.shell, "kernel", None) is not None:
            interrupted = _show_in_kernel(reply)
        else:
            interrupted = _show_in_terminal(reply)
        if reply.error_code is not None:
            raise ChatError(reply.error)
        self.agent = agent
        if interrupted:
            raise ChatInterrupted()

    def _conversation(self, agent: str, new: bool, conversation_id: Optional[str]) -> Chat:
        current = self.current
        if current is not None and not new and conversation_id in (None, current.conversation_id):
            return current
        try:
            chat = Chat(agent, conversation_id=conversation_id)
        except ConnectionError as e:  # STREAMCHAT_SERVER_URL names a server that is not there
            raise ChatError(str(e)) from None
        self.current = chat
        if current is not None:
            current.close()
        return chat


def _show_in_kernel(reply: ChatReply) -> bool:
    """The reply in one display, redrawn as it streams, then as Markdown; True if interrupted."""
    from IPython.display import display

    handle = None

    def show(bundle: dict) -> None:
        nonlocal handle
        if handle is None:
            handle = display(bundle, raw=True, display_id=True)
        else:
            handle.update(bundle, raw=True)

    shown = None
    interrupted = False
    try:
        seen, drawn = 0, -REDRAW_SECONDS
        while not _ended(reply, 0):
            # The first text shows as soon as it arrives; later redraws wait their turn.
            pause = drawn + REDRAW_SECONDS - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            seen = reply.news(seen, timeout=1.0)
            # The tool calls come first, as in the chat's view: a call waiting for approval
            # shows while it waits.
            text = reply_text(reply.text, "complete", None, reply.tool_calls)
            if text != shown and reply.message_id is not None:  # accepted: it will come
                show({"text/plain": text or "…"})
                shown, drawn = text, time.monotonic()
    except KeyboardInterrupt:
        interrupted = True
        _stop(reply)
    if reply.error_code is None:  # a refused message has no reply to show
        calls = reply.tool_calls
        show(
            {
                "text/markdown": reply_markdown(reply.text, reply.status, reply.error, calls),
                "text/plain": reply_text(reply.text, reply.status, reply.error, calls),
            }
        )
    return interrupted


def _show_in_terminal(reply: ChatReply) -> bool:
    """The reply on stdout as it arrives; True if interrupted."""
    out = sys.stdout
    written = 0
    interrupted = False
    line_start = True
    after_call = False  # the output so far ends with a tool call's line
    try:
        for item in reply.events():
            if isinstance(item, str):
                try:
                    out.write(item)
                finally:  # counted even if the interrupt comes as it is written
                    written += len(item)
                line_start, after_call = item.endswith("\n"), False
            elif item.get("status") in SHOWN_TOOL_STATUSES:
                out.write(("" if line_start else "\n") + tool_call_line(item) + "\n")
                line_start = after_call = True
            out.flush()
    except KeyboardInterrupt:
        interrupted = True
        _stop(reply)
        rest = reply.text[written:]
        out.write(rest)
        after_call = after_call and not rest
    if reply.error_code is None:
        note = status_note(reply.status, reply.error)
        if after_call:
            out.write(f"{note}\n" if note else "")
        else:
            out.write(f"\n{note}\n" if note else "\n")
        out.flush()
    return interrupted


def _stop(reply: ChatReply) -> None:
    """Stop the reply and wait a little for its last frame (a second interrupt: no more)."""
    reply.stop()
    try:
        _ended(reply, STOP_GRACE_SECONDS)
    except KeyboardInterrupt:
        pass


def _ended(reply: ChatReply, timeout: float) -> bool:
    try:
        reply.wait(timeout)
    except TimeoutError:
        return False
    except ConnectionError:  # the conversation was closed: nothing more will come
        return True
    return True


def load_ipython_extension(ipython) -> None:
    ipython.register_magics(ChatMagics)
