"""HTTP surface: the chat WebSocket and the REST API, both behind Jupyter's auth.

Every handler authorizes against resource ``streamchat``: the WebSocket asks for action
``execute`` (it starts agents), REST reads ask ``read``, DELETE asks ``write``.
"""

from __future__ import annotations

import asyncio
import json
import re

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web
from tornado.ioloop import IOLoop, PeriodicCallback
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from .. import protocol as p
from ..redact import redact
from ..core.delivery import Subscriber
from ..core.pages import ConversationGone
from ..store import SearchTooCostly, StoreError
from .export import content_disposition, head_pieces, message_pieces
from .jsonpieces import streamed_json_pieces
from .wsframes import encode_text_frames, fast_path_fits

AUTH_RESOURCE = "streamchat"


class _HubAccess(ExtensionHandlerMixin):
    auth_resource = AUTH_RESOURCE

    @property
    def hub(self):
        return self.extensionapp.hub

    @property
    def chat_user(self) -> str:
        """Whose conversations this request reads and writes (StreamChatApp.user_for)."""
        return self.extensionapp.user_for(self.current_user)


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
            self, self.extensionapp.client_buffer_bytes, self.chat_user
        )

    async def on_message(self, message):
        self._heard = IOLoop.current().time()
        await self.hub.handle_text(self.subscriber, message, self.extensionapp.max_message_bytes)
        if self._liveness is None and self.hub.kernel_agents.owns(self.subscriber):
            self._watch_agent_host()

    def on_close(self):
        self._stop_watching()
        subscriber = getattr(self, "subscriber", None)
        if subscriber is not None:
            self.hub.disconnect(subscriber)

    # A connection with notebook agents (a kernel's) is pinged more often than Jupyter's
    # keep-alive does (30 s, closing after 90 s without a pong): its silence strands replies
    # that browsers are watching. See StreamChatApp.agent_host_ping_interval.

    _liveness = None
    _heard = 0.0  # when the client was last heard from: a frame or a pong

    def _watch_agent_host(self):
        app = self.extensionapp
        self._heard = IOLoop.current().time()
        self._liveness = PeriodicCallback(self._probe, app.agent_host_ping_interval * 1000)
        self._liveness.start()

    def _stop_watching(self):
        if self._liveness is not None:
            self._liveness.stop()

    def _probe(self):
        connection = self.ws_connection
        if connection is None or connection.is_closing():
            self._stop_watching()
            return
        silent = IOLoop.current().time() - self._heard
        if silent > self.extensionapp.agent_host_timeout:
            self.log.warning(
                "streamchat: a connection with notebook agents answered nothing "
                "for %.1f s; taking it as gone",
                silent,
            )
            self._stop_watching()
            # Its replies end now, not after the closing handshake's own timeout.
            self.hub.disconnect(self.subscriber)
            self.close(1001, "no answer to pings")
            return
        try:
            self.ping(b"")
        except WebSocketClosedError:
            self._stop_watching()

    def on_pong(self, data):
        super().on_pong(data)
        self._heard = IOLoop.current().time()

    def write_frames(self, frames: list):
        """Transport for :class:`Subscriber`: one WebSocket message per frame."""
        if len(frames) == 1:
            return self.write_message(frames[0])
        connection = self.ws_connection
        if connection is None or connection.is_closing():
            raise WebSocketClosedError()
        if not fast_path_fits(connection):
            future = None
            for frame in frames:
                future = self.write_message(frame)
            return future
        try:
            return connection.stream.write(encode_text_frames(frames))
        except StreamClosedError as e:
            raise WebSocketClosedError() from e


class _RestHandler(_HubAccess, APIHandler):
    # Most of a large answer that waits in memory for a slow client before it is flushed.
    SEND_BUFFER_BYTES = 1024 * 1024

    async def send_pieces(self, pieces, content_type: str) -> None:
        """Answer with the text of ``pieces`` (an iterable, or an async one that reads as it
        goes), made and sent one at a time: a huge answer holds the event loop for a piece at
        a time, and no more than SEND_BUFFER_BYTES of it wait in memory for a slow client.

        An error while the pieces are made is answered as usual (404, 503...) if nothing was
        sent yet; once part of the answer is out, the connection is closed before its end,
        so that every HTTP client sees an answer cut short rather than a whole one whose text
        stops midway (which finishing it, as Tornado does after an error, would send)."""
        self.set_header("Content-Type", content_type)
        waiting = 0
        try:
            async for piece in _each(pieces):
                data = piece.encode("utf-8")
                self.write(data)
                waiting += len(data)
                if waiting >= self.SEND_BUFFER_BYTES:
                    waiting = 0
                    await self.flush()
                else:
                    await asyncio.sleep(0)  # the other clients' turn
        except StreamClosedError:
            return  # the client went away
        except Exception as e:
            if not self._headers_written:
                raise
            self.log.warning(
                "streamchat: %s cut short after its start: %s", self.request.path, redact(str(e))
            )
            self.request.connection.close()
            self.finish()  # nothing more is sent: the connection is closed
            return
        self.finish(set_content_type=content_type)

    """A client's bad input is a 400 whose JSON ``message`` says what is wrong, decided before
    the store is asked (so it is never answered as a store outage); Tornado itself answers 400
    for bytes in the path or query that are not UTF-8 (a lone surrogate among them)."""

    async def prepare(self):
        await super().prepare()
        # The conversation id in the path, for every method of every handler. A request
        # without credentials is left to the method's own check, which answers 403.
        conversation_id = self.path_kwargs.get("conversation_id")
        if conversation_id is not None and self.current_user is not None:
            problem = p.id_problem(conversation_id)
            if problem:
                raise web.HTTPError(400, f"the conversation id in the path {problem}")

    def _argument(self, name: str, default: str, strip: bool = False) -> str:
        """A query parameter given at most once (twice is ambiguous: which one was meant?)."""
        values = self.get_query_arguments(name, strip=strip)
        if len(values) > 1:
            raise web.HTTPError(400, f"{name} is given {len(values)} times; give it at most once")
        return values[0] if values else default

    def _json_body(self):
        """The request's body as JSON (``None`` when empty); 400 for anything else."""
        try:
            return json.loads(self.request.body or b"null", parse_constant=_not_json)
        except RecursionError:
            raise web.HTTPError(400, "the body is nested too deeply") from None
        except ValueError:
            raise web.HTTPError(400, "the body is not JSON (UTF-8)") from None

    def log_exception(self, typ, value, tb):
        if isinstance(value, SearchTooCostly):  # a 400 (below), not a bug: no traceback
            self.log.info("streamchat: a search was refused: %s", value)
            return
        super().log_exception(typ, value, tb)

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None))[1]
        if isinstance(exc, SearchTooCostly):  # the client's query, not the store, is at fault
            self.set_status(400)
            self.finish(json.dumps({"message": redact(str(exc)), "reason": "search_too_costly"}))
            return
        if isinstance(exc, StoreError):  # its words may name the store's URL
            self.set_status(503)
            self.finish(json.dumps({"message": redact(str(exc)), "reason": "store_unavailable"}))
            return
        super().write_error(status_code, **kwargs)


async def _each(pieces):
    if hasattr(pieces, "__aiter__"):
        async for piece in pieces:
            yield piece
    else:
        for piece in pieces:
            yield piece


async def _messages(conversation):
    """The messages of a ``core.pages.ConversationPages``, one by one; one deleted while it
    is read is a 404 if nothing of the answer was sent yet."""
    try:
        async for page in conversation.pages():
            for message in page:
                yield message
    except ConversationGone:
        raise web.HTTPError(404, f"no conversation {conversation.conversation_id!r}") from None


def _not_json(name: str):
    raise ValueError(f"{name} is not JSON")


# Whole numbers in a query, ASCII digits only: str.isdigit() takes "١٢" and "²", and int()
# reads the first as 12 and fails on the second.
_WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")


class AgentsHandler(_RestHandler):
    @web.authenticated
    @authorized
    async def get(self):
        body = p.agents_body(
            self.hub.agent_infos(self.chat_user), self.extensionapp.max_message_bytes
        )
        self.finish(json.dumps(body))


class ConversationsHandler(_RestHandler):
    @web.authenticated
    @authorized
    async def get(self):
        """A page of the list, most recent first; ``next`` (or null at the end) is the
        ``after`` of the next page. With ``q``, only the conversations holding that text."""
        limit = self._limit()
        after = self._after()
        query = self._query()
        page = await self._unless_gone(
            self.hub.list_conversations(limit + 1, after, query, self.chat_user)
        )
        if page is None:
            return  # the client went away; its search was cancelled
        more, page = len(page) > limit, page[:limit]
        waiting = self.hub.approvals.waiting_conversations(self.chat_user)
        self.finish(json.dumps(p.conversation_list_body(page, more, waiting)))

    _gone = False
    _pending = None  # the store read under way, for on_connection_close

    async def _unless_gone(self, work):
        """Await a store read as a task that :meth:`on_connection_close` cancels, so a client
        that goes away mid-search frees the reader at once (the store interrupts the query
        whose task is cancelled). None if it was cancelled so."""
        if self._gone:
            work.close()
            return None
        task = self._pending = asyncio.ensure_future(work)
        try:
            return await task
        except asyncio.CancelledError:
            if self._gone and task.cancelled():
                return None
            raise
        finally:
            self._pending = None

    def on_connection_close(self):
        super().on_connection_close()
        self._gone = True
        if self._pending is not None:
            self._pending.cancel()

    def _limit(self) -> int:
        text = self._argument("limit", str(p.LIST_PAGE))
        if not _WHOLE_NUMBER.fullmatch(text) or not 1 <= int(text) <= p.LIST_PAGE_MAX:
            raise web.HTTPError(
                400, f"limit must be a whole number from 1 to {p.LIST_PAGE_MAX} in ASCII digits"
            )
        return int(text)

    def _after(self):
        cursor = self._argument("after", "")
        if not cursor:
            return None
        try:
            return p.parse_list_cursor(cursor)
        except ValueError:
            raise web.HTTPError(400, "after is not a cursor this server gave out (use `next`)")

    def _query(self) -> str:
        """The text searched for ("" to list everything), without the spaces around it.
        Tornado has made control characters (NUL among them) spaces. The limit holds for the
        text as sent, so that what is refused does not depend on its spaces."""
        query = self._argument("q", "")
        if len(query) > p.SEARCH_MAX:
            raise web.HTTPError(400, f"q is at most {p.SEARCH_MAX} characters")
        return query.strip()


class ConversationHandler(_RestHandler):
    @web.authenticated
    @authorized
    async def get(self, conversation_id):
        """The whole conversation. It may hold tens of MB: it is read a page at a time as the
        answer goes out (core/pages.py says what a reader sees of a conversation that changes
        meanwhile), its JSON made and sent a piece at a time."""
        conversation = await self.hub.read_conversation(conversation_id, self.chat_user)
        if conversation is None:
            raise web.HTTPError(404, f"no conversation {conversation_id!r}")
        messages = (p.message_wire(m) async for m in _messages(conversation))
        body = p.conversation_body(conversation_id, [])
        await self.send_pieces(streamed_json_pieces(body, "messages", messages), "application/json")

    @web.authenticated
    @authorized
    async def patch(self, conversation_id):
        """Rename: ``{"title": "..."}`` (at most TITLE_MAX characters; "" for the first words
        of the conversation again)."""
        body = self._json_body()
        title = body.get("title") if isinstance(body, dict) else None
        if not isinstance(title, str) or len(title) > p.TITLE_MAX:
            raise web.HTTPError(400, f'send {{"title": "..."}}, at most {p.TITLE_MAX} characters')
        problem = p.text_problem(title)
        if problem:
            raise web.HTTPError(400, f"the title {problem}")
        title = " ".join(title.split())
        if not await self.hub.rename_conversation(conversation_id, title, self.chat_user):
            raise web.HTTPError(404, f"no conversation {conversation_id!r}")
        self.finish(json.dumps(p.renamed_body(conversation_id, title)))

    @web.authenticated
    @authorized
    async def delete(self, conversation_id):
        if not await self.hub.delete_conversation(conversation_id, self.chat_user):
            raise web.HTTPError(404, f"no conversation {conversation_id!r}")
        self.set_status(204)
        self.finish()


class ConversationExportHandler(_RestHandler):
    @web.authenticated
    @authorized
    async def get(self, conversation_id):
        """The conversation as a Markdown file to download, made and sent in pieces: the
        export of a huge conversation holds the event loop for a piece at a time, and no more
        than SEND_BUFFER_BYTES of it wait in memory for a slow client. ``thinking=1``
        includes each reply's thinking; ``0`` (the default) leaves it out."""
        thinking = self._argument("thinking", "0")
        if thinking not in ("0", "1"):
            raise web.HTTPError(
                400,
                "thinking is 0 (leave each reply's thinking out, the default) or 1 (include it)",
            )
        conversation = await self.hub.read_conversation(
            conversation_id, self.chat_user, record=True
        )
        if conversation is None:
            raise web.HTTPError(404, f"no conversation {conversation_id!r}")
        self.set_header("Content-Disposition", content_disposition(conversation.record.title))

        async def document():  # read a page at a time, as for GET
            for piece in head_pieces(conversation.record, thinking == "1"):
                yield piece
            async for message in _messages(conversation):
                for piece in message_pieces(message, thinking == "1"):
                    yield piece

        await self.send_pieces(document(), "text/markdown; charset=utf-8")


handlers = [
    (r"/streamchat/ws", ChatWebSocketHandler),
    (r"/streamchat/api/agents", AgentsHandler),
    (r"/streamchat/api/conversations", ConversationsHandler),
    (r"/streamchat/api/conversations/(?P<conversation_id>[^/]+)", ConversationHandler),
    (r"/streamchat/api/conversations/(?P<conversation_id>[^/]+)/export", ConversationExportHandler),
]
