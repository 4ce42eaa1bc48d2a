"""The Python API of a chat, the same in a kernel behind JupyterLab, in a notebook run headless
(nbclient, papermill) and in a plain script::

    from jupyter_streamchat import Chat

    chat = Chat(agent="echo")
    chat.send("Hello").wait().text          # blocks until the reply has ended
    for piece in chat.send("And then?"):    # the text as it arrives
        print(piece, end="", flush=True)

Behind a Jupyter server it talks to the server's hub, so the conversation is the one the Chat
panel lists; without one, to a hub in this process over the same store (``streamchat.db`` in
the Jupyter data dir by default).

A reply's tool calls are ``reply.tool_calls`` (dicts with the wire's names: ``name``,
``status``, ``arguments``, ``result``, ``error``...); ``reply.stream()`` and the Markdown a
notebook keeps show them as lines (``🔧 read_file — completed (0.1 s)``). A call the agent must
have approved waits for the user, who answers in the Chat panel or with ``reply.answer(id,
"allow_once")``; a run with nobody to ask (CI, a script) answers with a policy::

    chat = Chat(agent="coder", approve=lambda call: "allow_once" if call["name"] == "read_file"
                else "reject")

``approve(call)`` gets the waiting call's state and returns ``"allow_once"``,
``"allow_always"`` (that tool, for the rest of the conversation) or ``"reject"`` (``True`` and
``False`` stand for allow_once and reject), or ``None`` to leave the call to someone else. It
answers the calls of the replies this ``Chat`` sent, on a thread of its own (it may block, to
ask someone); if it raises, the call is rejected. Without it (the default), a waiting call
waits for another view's answer until the server's approval timeout ends the reply with an
error saying so.
"""

from __future__ import annotations

import uuid
from typing import Optional

from .follower import Approve, ChatReply, Conversation, connect
from .markdown import conversation_markdown

# How long ``messages`` waits for a conversation's history to arrive from the hub.
SYNC_TIMEOUT = 30.0


class Chat:
    """One conversation: ``Chat(agent="echo")`` starts a new one, ``Chat(conversation_id=...)``
    carries on a stored one. ``agent`` answers each :meth:`send` that names none.
    ``approve``: answers the tool calls of this chat's replies that wait for approval (see the
    module's docstring); None leaves them waiting for an answer from elsewhere."""

    def __init__(
        self,
        agent: str = "demo",
        conversation_id: Optional[str] = None,
        store_url: str = "",
        approve: Optional[Approve] = None,
    ):
        self.agent = agent
        self._conversation: Conversation = connect(
            conversation_id or uuid.uuid4().hex, store_url=store_url, approve=approve
        )

    @property
    def conversation_id(self) -> str:
        return self._conversation.conversation_id

    @property
    def remote(self) -> bool:
        """True when the hub is a Jupyter server's, False when it runs in this process."""
        return self._conversation.remote

    @property
    def messages(self) -> list:
        """The conversation as the hub has told it (waiting for its history first): each
        ``{"messageId", "role", "agentId", "text", "status"}``, and ``error`` if it failed; a
        reply's ``toolCalls`` and a user message's ``context`` where they have some."""
        self._conversation.wait_synced(SYNC_TIMEOUT)
        return self._conversation.messages

    def send(
        self, text: str, agent: Optional[str] = None, context: Optional[list] = None
    ) -> ChatReply:
        """Send ``text`` to ``agent`` (default: this chat's); returns the reply at once.

        ``reply.wait()`` blocks until it ends; ``for piece in reply`` gives its text as it
        arrives; ``reply.text``, ``reply.status`` and ``reply.tool_calls`` follow it.
        ``context``: items to attach, each ``{"kind": "cell" | "selection" | "error" | "file" |
        "variable", "label": ..., "text": ...}`` (see :meth:`Conversation.send`).
        """
        return self._conversation.send(text, agent or self.agent, context)

    def stop(self) -> None:
        """Stop every reply of this conversation still being written (partial text kept)."""
        self._conversation.stop()

    def close(self) -> None:
        """Stop following the conversation; a reply still being written goes on in the hub."""
        self._conversation.close()

    def __enter__(self) -> "Chat":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self._conversation.server_url or "in-process hub"
        count = len(self._conversation.messages)
        plural = "" if count == 1 else "s"
        return (
            f"<Chat {self.conversation_id!r} agent={self.agent!r}, {count} message{plural}, "
            f"via {where}>"
        )

    def _repr_markdown_(self) -> str:
        return conversation_markdown(self.messages)
