"""HTTP surface: the chat WebSocket and the REST API, both behind Jupyter's auth.

Every handler authorizes against resource ``streamchat``: the WebSocket asks for action
``execute`` (it starts agents), REST reads ask ``read``, DELETE asks ``write``.
"""

from __future__ import annotations

import json

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from .. import protocol as p
from ..store import StoreError
from .delivery import Subscriber
from .export import content_disposition, conversation_markdown
from .wsframes import encode_text_frames

AUTH_RESOURCE = "streamchat"


class _HubAccess(ExtensionHandlerMixin):
    auth_resource = AUTH_RESOURCE

    @property
    def hub(self):
        return self.extensionapp.hub


class ChatWebSocketHandler(_HubAccess, WebSocketMixin, WebSocketHandler, JupyterHandler):
    """``{base_url}streamchat/ws``: the wire contract, one JSON text per frame."""

    subscriber: Subscriber

    def set_default_headers(self):
        """JupyterHandler's default headers make no sense on a WebSocket."""

    def get_compression_options(self):
        # Replays write pre-encoded frames (wsframes.py), which assumes no compression.
        return None

    @property
    def max_message_size(self):
        # Above this Tornado closes the socket; below it, oversize text gets an ERROR frame.
        return self.extensionapp.max_frame_bytes

    async def pre_get(self):
        allowed = await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, "execute", AUTH_RESOURCE)
        )
        if not allowed:
            raise web.HTTPError(403)

    @ws_authenticated
    async def get(self, *args, **kwargs):
        await self.pre_get()
        await super().get(*args, **kwargs)

    def open(self, *args, **kwargs):
        super().open(*args, **kwargs)  # starts WebSocketMixin's keep-alive pings
        # Frames are small and latency matters: without this, Nagle's algorithm holds a
        # final frame sent right after a chunk until the client's delayed ACK (~40 ms).
        self.set_nodelay(True)
        self.subscriber = self.hub.connect(
            Subscriber(self, max_buffer=self.extensionapp.client_buffer_bytes)
        )

    async def on_message(self, message):
        await self.hub.handle_text(self.subscriber, message, self.extensionapp.max_message_bytes)

    def on_close(self):
        subscriber = getattr(self, "subscriber", None)
        if subscriber is not None:
            self.hub.disconnect(subscriber)

    def write_frames(self, frames: list):
        """Transport for :class:`Subscriber`: one WebSocket message per frame."""
        if len(frames) == 1:
            return self.write_message(frames[0])
        connection = self.ws_connection
        if connection is None or connection.is_closing():
            raise WebSocketClosedError()
        try:
            return connection.stream.write(encode_text_frames(frames))
        except StreamClosedError as e:
            raise WebSocketClosedError() from e


class _RestHandler(_HubAccess, APIHandler):
    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None))[1]
        if isinstance(exc, StoreError):
            self.set_status(503)
            self.finish(json.dumps({"message": str(exc), "reason": "store_unavailable"}))
            return
        super().write_error(status_code, **kwargs)


class AgentsHandler(_RestHandler):
    @web.authenticated
    @authorized
    async def get(self):
        agents = [agent.info() for _, agent in sorted(self.hub.agents.items())]
        self.finish(json.dumps({"agents": agents}))


class ConversationsHandler(_RestHandler):
    @web.authenticated
    @authorized
    async def get(self):
        """A page of the list, most recent first; ``next`` (or null at the end) is the
        ``after`` of the next page. With ``q``, only the conversations holding that text."""
        limit = self._limit()
        after = self._after()
        query = self._query()
        await self.hub.ensure_open()
        if query:
            page = await self.hub.store.search_conversations(query, limit + 1, after)
        else:
            page = await self.hub.store.list_conversations(limit + 1, after)
        more, page = len(page) > limit, page[:limit]
        last = page[-1] if more else None
        self.finish(json.dumps({
            "conversations": [p.conversation_wire(c) for c in page],
            "next": p.list_cursor(last.updated_at, last.conversation_id) if last else None,
        }))

    def _limit(self) -> int:
        text = self.get_query_argument("limit", str(p.LIST_PAGE))
        if not text.isdigit() or not 1 <= int(text) <= p.LIST_PAGE_MAX:
            raise web.HTTPError(400, f"limit must be a whole number from 1 to {p.LIST_PAGE_MAX}")
        return int(text)

    def _after(self):
        cursor = self.get_query_argument("after", "")
        if not cursor:
            return None
        try:
            return p.parse_list_cursor(cursor)
        except ValueError:
            raise web.HTTPError(400, "after is not a cursor this server gave out (use `next`)")

    def _query(self) -> str:
        """The text searched for ("" to list everything). Tornado has taken the spaces around
        it off, and made control characters (NUL among them) spaces."""
        query = self.get_query_argument("q", "", strip=True)
        if len(query) > p.SEARCH_MAX:
            raise web.HTTPError(400, f"q is at most {p.SEARCH_MAX} characters")
        return query


class ConversationHandler(_RestHandler):
    @web.authenticated
    @authorized
    async def get(self, conversation_id):
        messages = await self.hub.get_conversation(conversation_id)
        if messages is None:
            raise web.HTTPError(404, f"no conversation {conversation_id!r}")
        body = {"conversationId": conversation_id, "messages": [p.message_wire(m) for m in messages]}
        self.finish(json.dumps(body))

    @web.authenticated
    @authorized
    async def patch(self, conversation_id):
        """Rename: ``{"title": "..."}`` (at most TITLE_MAX characters; "" for the first words
        of the conversation again)."""
        try:
            body = json.loads(self.request.body or b"null")
        except ValueError:
            raise web.HTTPError(400, "the body is not JSON")
        title = body.get("title") if isinstance(body, dict) else None
        if not isinstance(title, str) or len(title) > p.TITLE_MAX:
            raise web.HTTPError(400, f'send {{"title": "..."}}, at most {p.TITLE_MAX} characters')
        title = " ".join(title.split())
        if not await self.hub.rename_conversation(conversation_id, title):
            raise web.HTTPError(404, f"no conversation {conversation_id!r}")
        self.finish(json.dumps({"conversationId": conversation_id, "title": title}))

    @web.authenticated
    @authorized
    async def delete(self, conversation_id):
        if not await self.hub.delete_conversation(conversation_id):
            raise web.HTTPError(404, f"no conversation {conversation_id!r}")
        self.set_status(204)
        self.finish()


class ConversationExportHandler(_RestHandler):
    @web.authenticated
    @authorized
    async def get(self, conversation_id):
        """The conversation as a Markdown file to download."""
        await self.hub.ensure_open()
        conversation = await self.hub.store.get_conversation_record(conversation_id)
        messages = await self.hub.get_conversation(conversation_id)
        if conversation is None or messages is None:
            raise web.HTTPError(404, f"no conversation {conversation_id!r}")
        self.set_header("Content-Disposition", content_disposition(conversation.title))
        self.finish(conversation_markdown(conversation, messages).encode("utf-8"),
                    set_content_type="text/markdown; charset=utf-8")


handlers = [
    (r"/streamchat/ws", ChatWebSocketHandler),
    (r"/streamchat/api/agents", AgentsHandler),
    (r"/streamchat/api/conversations", ConversationsHandler),
    (r"/streamchat/api/conversations/(?P<conversation_id>[^/]+)", ConversationHandler),
    (r"/streamchat/api/conversations/(?P<conversation_id>[^/]+)/export",
     ConversationExportHandler),
]
