"""Clients of jupyterlab-chat's collaborative chat documents, for bench/bench_models.py.

Run with the peer environment's Python (it needs ``pycrdt``); it speaks to the peer's
``jupyter server`` as JupyterLab does: ``PUT api/collaboration/session/<path>`` for the file id
and session id, then the y-websocket protocol on ``api/collaboration/room/text:chat:<file id>``
(SYNC_STEP1 / SYNC_STEP2 handshake, then SYNC_UPDATE messages applied to a local ``pycrdt.Doc``).

Reads one JSON object on stdin: ``{"base": "http://127.0.0.1:PORT/", "token": ..., "paths":
[...], "tokens": 200, "timeout": 60}``. Connects one client per chat and syncs it, prints
``READY`` and waits for a line on stdin (the driver starts then), and from that moment reads:
each update is applied, the bench message's ``body`` read, and every token new in it
(`` <index>@<microseconds>``, see bench/plugins/paced_tokens.py) gets a latency: this process's
monotonic clock when the update had been applied, minus the token's stamp. When every chat holds
all its tokens (or at the timeout) it prints one JSON line: the latencies in microseconds, the
tokens seen, the updates received and their bytes, this process's CPU seconds. It leaves the
rooms when a second line comes.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from urllib.parse import quote

from pycrdt import Array, Doc, YMessageType, create_sync_message, handle_sync_message
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

sys.path.insert(0, sys.argv[1] if len(sys.argv) > 1 else ".")  # bench/plugins
from paced_tokens import TOKEN, now_us  # noqa: E402


class ChatClient:
    def __init__(self, base: str, token: str, path: str, expected: int):
        self.base, self.token, self.path, self.expected = base, token, path, expected
        self.doc = Doc()
        self.messages = self.doc.get("messages", type=Array)
        self.seen = 0  # characters of the body already parsed
        self.tokens = 0
        self.latencies: list = []
        self.updates = 0
        self.update_bytes = 0
        self.synced = asyncio.Event()
        self.done = asyncio.Event()
        self.recording = False

    async def connect(self):
        headers = {"Authorization": f"token {self.token}"}
        response = await AsyncHTTPClient().fetch(
            HTTPRequest(
                f"{self.base}api/collaboration/session/{quote(self.path)}",
                method="PUT",
                body=json.dumps({"format": "text", "type": "chat"}),
                headers=headers,
                request_timeout=30,
            )
        )
        session = json.loads(response.body)
        url = (
            f"{self.base.replace('http', 'ws', 1)}api/collaboration/room/"
            f"text:chat:{session['fileId']}?sessionId={session['sessionId']}"
        )
        self.ws = await websocket_connect(
            HTTPRequest(url, headers=headers, connect_timeout=30, request_timeout=30),
            max_message_size=256 * 1024 * 1024,
        )
        await self.ws.write_message(create_sync_message(self.doc), binary=True)
        self.reader = asyncio.ensure_future(self.read())

    async def read(self):
        while True:
            message = await self.ws.read_message()
            if message is None:
                return
            if not isinstance(message, bytes) or message[0] != YMessageType.SYNC:
                continue  # awareness and the server's own message types
            kind = message[1]
            reply = handle_sync_message(message[1:], self.doc)
            if reply is not None:
                await self.ws.write_message(reply, binary=True)
            if kind == 1:  # SYNC_STEP2: the document as the server holds it
                self.synced.set()
            elif kind == 2 and self.recording:
                self.updates += 1
                self.update_bytes += len(message)
                self.collect()

    def collect(self):
        if not len(self.messages):
            return
        body = self.messages[len(self.messages) - 1].get("body") or ""
        if len(body) <= self.seen:
            return
        received = now_us()
        for match in TOKEN.finditer(body, self.seen):
            self.latencies.append(received - int(match.group(2)))
            self.tokens += 1
        self.seen = len(body)
        if self.tokens >= self.expected:
            self.done.set()

    def close(self):
        self.reader.cancel()
        self.ws.close()


async def main():
    request = json.loads(sys.stdin.readline())
    clients = [
        ChatClient(request["base"], request["token"], path, request["tokens"])
        for path in request["paths"]
    ]
    # Opened ten at a time, as the peer's rooms share one YStore database: many rooms
    # initialising it at the same moment fail with "database is locked".
    for first in range(0, len(clients), 10):
        batch = clients[first : first + 10]
        try:
            await asyncio.wait_for(asyncio.gather(*(c.connect() for c in batch)), 60)
            await asyncio.wait_for(asyncio.gather(*(c.synced.wait() for c in batch)), 60)
        except asyncio.TimeoutError:
            raise RuntimeError(
                f"{sum(not c.synced.is_set() for c in batch)} of {len(batch)} "
                "clients got no SYNC_STEP2 within 60 s"
            ) from None
    for client in clients:
        client.recording = True
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    started, cpu = time.monotonic(), time.process_time()
    try:
        await asyncio.wait_for(
            asyncio.gather(*(c.done.wait() for c in clients)), request["timeout"]
        )
        error = None
    except asyncio.TimeoutError:
        error = (
            f"timed out after {request['timeout']} s: "
            f"{sum(c.done.is_set() for c in clients)} of {len(clients)} chats complete"
        )
    elapsed = time.monotonic() - started
    print(
        json.dumps(
            {
                "latencies": [x for c in clients for x in c.latencies],
                "tokens": sum(c.tokens for c in clients),
                "updates": sum(c.updates for c in clients),
                "update_bytes": sum(c.update_bytes for c in clients),
                "seconds": elapsed,
                "client_cpu": time.process_time() - cpu,
                "error": error,
            }
        ),
        flush=True,
    )
    # Stay in the rooms until told (the server may still be writing what it was sent: a room
    # left by its last client is cleaned up, and its pending writes with it).
    await loop.run_in_executor(None, sys.stdin.readline)
    for client in clients:
        client.close()


if __name__ == "__main__":
    asyncio.run(main())
