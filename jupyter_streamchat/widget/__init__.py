"""The chat widget for notebooks: ``ChatWidget(agent="demo")``.

The view in the browser streams over its own WebSocket to the hub in the Jupyter server, so a
busy, restarting or dead kernel never holds a reply up. The Python object follows the same
conversation through its own connection (or an in-process hub when there is no server, as in
a notebook run headless), so ``send``, ``stop`` and ``messages`` work from code as well.
Where the page's server runs no hub (VS Code, Colab, a server without the extension), the view
sends its frames through the kernel instead, over the widget's comm (comm.py).
"""

from __future__ import annotations

import pathlib
import time
import uuid
from typing import Optional

import anywidget
from traitlets import Float, List, Unicode, observe

from ..kernel.follower import ChatReply, Conversation, connect
from .comm import CommRelay, transport_like
from . import transcript

_STATIC = pathlib.Path(__file__).parent / "static"  # built by the Python build from js/

# The output a ChatWidget leaves in the notebook, beside the widget view: what JupyterLab's
# extension needs to draw the chat with no kernel behind it (after a kernel restart, a server
# restart, or in a notebook opened tomorrow). Front ends without the extension ignore it.
OUTPUT_MIME = "application/vnd.jupyter.streamchat+json"


class ChatWidget(anywidget.AnyWidget):
    """A chat with the server's agents, streaming in a notebook cell.

    ``ChatWidget(agent="demo")`` starts a new conversation; ``ChatWidget(conversation_id=...)``
    re-attaches to a stored one and shows its history.

    Which agent the view's next message goes to: a pick in the view; else ``agent`` if it was
    chosen (given to the constructor, set from Python, or picked in a view) after the
    conversation's last message; else the agent of that last message, so a conversation
    re-opened after a reload or a server restart carries on with the agent it last used. When
    that is not the agent the conversation last used, the view says so under its picker.
    """

    _esm = _STATIC / "widget.js"
    _css = _STATIC / "widget.css"

    conversation_id = Unicode(help="The conversation this chat shows and adds to.").tag(sync=True)
    agent = Unicode("demo", help="Id of the agent that answers (the view's picker sets it).").tag(
        sync=True
    )
    image_hosts = List(
        Unicode(),
        help="""Hosts whose images in agent replies load without a click (e.g. "example.org"
        or "*.example.org"). Any other image shows as a placeholder naming its host until
        clicked, so a reply cannot make the browser send requests on its own.""",
    ).tag(sync=True)
    _output_key = Unicode(help="Ties the saved output to this live widget's model.").tag(sync=True)
    _agent_set_at = Float(
        0.0,
        help="When ``agent`` was chosen (seconds since the epoch; 0: the default, not chosen).",
    ).tag(sync=True)
    messages = List(
        read_only=True,
        help="The conversation as last stored: updated per message, never per token.",
    ).tag(sync=True)

    def __init__(
        self, agent: Optional[str] = None, conversation_id: Optional[str] = None, **kwargs
    ):
        # An agent named here is a choice made now; none is the default ("demo"), which a
        # stored conversation's own last agent overrides in the view.
        chosen = {"agent": agent, "_agent_set_at": time.time()} if agent else {}
        super().__init__(
            conversation_id=conversation_id or uuid.uuid4().hex,
            _output_key=uuid.uuid4().hex,
            **chosen,
            **kwargs,
        )
        self._conversation: Conversation = self._follow(self.conversation_id)
        # Views without a hub of their own talk to the one this object uses, through it.
        self._relay = CommRelay(self, lambda: transport_like(self._conversation.transport))
        self.on_msg(self._relay.handle)

    def send(self, text: str, agent: Optional[str] = None) -> ChatReply:
        """Send ``text`` to ``agent`` (default: the widget's); returns the reply at once.

        ``reply.wait()`` blocks until it ends; ``reply.text`` and ``reply.status`` follow it.
        """
        return self._conversation.send(text, agent or self.agent)

    def stop(self) -> None:
        """Stop every reply of this conversation that is still generating."""
        self._conversation.stop()

    def close(self) -> None:
        if getattr(self, "_relay", None) is not None:  # None if __init__ failed before it
            self._relay.close()
        self._conversation.close()
        super().close()

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, metadata = bundle
        data[OUTPUT_MIME] = {
            "conversationId": self.conversation_id,
            "agentId": self.agent,
            "outputKey": self._output_key,
        }
        if self._agent_set_at:
            data[OUTPUT_MIME]["agentChosenAt"] = self._agent_set_at
        return data, metadata

    @property
    def _ipython_display_(self):
        # Headless (no Jupyter server, no live view): shown with the conversation as Markdown
        # beside the view, kept current after each cell (transcript.py). Otherwise None, and
        # IPython displays it from _repr_mimebundle_ as any widget.
        return transcript.display_method(self)

    @property
    def remote(self) -> bool:
        """True when this object talks to a Jupyter server's hub, False when to an in-process
        one."""
        return self._conversation.remote

    def _follow(self, conversation_id: str) -> Conversation:
        return connect(conversation_id, on_change=self._snapshot)

    @observe("agent")
    def _agent_chosen(self, change) -> None:
        # Set from Python, or picked in a view (the model tells the kernel): a choice made now.
        self._agent_set_at = time.time()

    def _snapshot(self, messages: list) -> None:
        self.set_trait("messages", messages)

    @observe("conversation_id")
    def _conversation_changed(self, change) -> None:
        if getattr(self, "_conversation", None) is None:
            return  # still in __init__
        self._conversation.close()
        self.set_trait("messages", [])
        self._conversation = self._follow(change["new"])
