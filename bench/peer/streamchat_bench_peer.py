"""A Jupyter server extension that streams replies into jupyterlab-chat documents, for
bench/bench_models.py.

It plays the part of a jupyter-ai persona: for each chat it creates one message with
``YChat.add_message(NewMessage(body="", ...))``, then calls ``YChat.update_message(Message(...),
append=True)`` once per token, the way jupyter-ai's ``BasePersona.stream_message`` streams a
model's reply into the collaborative chat document. The tokens come from the same generator as
the ``paced`` agent of bench/plugins (timestamped, at a set pace), so the two chat stacks are
fed the same text at the same pace, in their server process.

Load it with ``--ServerApp.jpserver_extensions='{"streamchat_bench_peer": true}'`` and this
folder and bench/plugins on PYTHONPATH. It adds, behind Jupyter authentication:

- ``POST {base_url}bench-peer/stream`` with ``{"paths": [...], "tokens": 200, "rate": 50}``:
  starts one reply per chat (the chats must be open, i.e. a client joined their rooms) and
  answers once every reply's message exists;
- ``GET {base_url}bench-peer/stream``: ``{"running": n, "finished": n, "errors": [...]}``.
"""

from __future__ import annotations

import asyncio
import json
import time
import traceback

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from paced_tokens import paced_tokens

SENDER = "bench-persona"


def _jupyter_server_extension_points():
    return [{"module": "streamchat_bench_peer"}]


class _State:
    def __init__(self):
        self.tasks: set = set()
        self.finished = 0
        self.errors: list = []


def _ydoc_extension(serverapp):
    apps = serverapp.extension_manager.extension_apps.get("jupyter_server_ydoc")
    if not apps:
        raise web.HTTPError(500, "jupyter_server_ydoc (jupyter-collaboration) is not enabled")
    return next(iter(apps))


async def _stream(chat, count: int, rate: float, state: _State, created: asyncio.Future):
    from jupyterlab_chat.models import Message, NewMessage, User

    try:
        chat.set_user(User(username=SENDER, name="Bench", display_name="Bench", bot=True))
        message_id = chat.add_message(NewMessage(body="", sender=SENDER))
        created.set_result(message_id)
        async for token in paced_tokens(count, rate):
            chat.update_message(
                Message(id=message_id, body=token, time=time.time(), sender=SENDER, raw_time=False),
                append=True,
            )
        state.finished += 1
    except Exception:
        state.errors.append(traceback.format_exc(limit=5))
        if not created.done():
            created.set_result(None)


class StreamHandler(APIHandler):
    def initialize(self, state: _State):
        self.state = state

    @web.authenticated
    async def post(self):
        body = json.loads(self.request.body)
        count, rate = int(body["tokens"]), float(body["rate"])
        ydoc = _ydoc_extension(self.serverapp)
        chats = []
        for path in body["paths"]:
            chat = await ydoc.get_document(
                path=path, content_type="chat", file_format="text", copy=False
            )
            if chat is None:
                raise web.HTTPError(409, f"chat {path!r} is not open (no client in its room)")
            chats.append(chat)
        loop = asyncio.get_running_loop()
        created = []
        for chat in chats:
            future = loop.create_future()
            created.append(future)
            task = asyncio.create_task(_stream(chat, count, rate, self.state, future))
            self.state.tasks.add(task)
            task.add_done_callback(self.state.tasks.discard)
        ids = await asyncio.gather(*created)
        self.finish(json.dumps({"messageIds": ids}))

    @web.authenticated
    def get(self):
        self.finish(
            json.dumps(
                {
                    "running": len(self.state.tasks),
                    "finished": self.state.finished,
                    "errors": self.state.errors[-5:],
                }
            )
        )


def _load_jupyter_server_extension(serverapp):
    pattern = url_path_join(serverapp.web_app.settings["base_url"], "bench-peer/stream")
    serverapp.web_app.add_handlers(".*$", [(pattern, StreamHandler, {"state": _State()})])
    serverapp.log.info("streamchat_bench_peer: %s", pattern)
