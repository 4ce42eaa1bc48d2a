"""Benchmark of the streamchat hub: streaming throughput, RESUME replay, stop latency.

Run ``python bench/bench_hub.py`` (about 2 minutes) or ``--quick`` (well under one). It prints
one markdown table; every figure is the median of several runs, interleaved with its floor so
that noise on a busy machine hits both alike. Each floor is measured in the same process run.

1. Streaming throughput: tokens per second a WebSocket client sees for ``echo`` replies with
   ``c.EchoAgent.delay=0``, through a real ``jupyter server`` subprocess (SQLite store on,
   default ``batch_window`` unless ``--batch-window`` says otherwise), for one conversation and
   for 100 concurrent ones (100 sockets, one SEND_MESSAGE each, sent at once; total tokens over
   the wall time from the first send to the last final frame).

   Floor: a bare Tornado WebSocket server in its own subprocess (``--serve-raw``, this file)
   that runs the very same EchoAgent generator (one ``await asyncio.sleep(0)`` per token) and
   pushes one MESSAGE_CHUNK-shaped frame per token with ``write_message``: nothing stored,
   nothing batched, no auth. It is the cheapest honest way to stream the same tokens over the
   same server stack, so hub/raw says what storage, fan-out and the Jupyter server cost, minus
   what batching saves. The hub merges the tokens produced within ``batch_window`` into one
   frame (see DESIGN.md), so it sends far fewer frames; the table shows how many. With one
   frame per token the floor is bound by the client, which spends more CPU per frame (Tornado
   client read + json.loads) than the server does, so "tokens/s seen by the client" mostly
   rewards batching; the server CPU per token (from /proc, Linux only) is shown beside it.

2. RESUME of a stored 10,000-chunk reply. The chunks are written through the store API
   (``SQLiteStore.create_exchange`` and ``append``) into a fresh database; a ``Hub`` over that
   store runs in this process behind a Tornado WebSocket handler that uses the extension's own
   transport (``ChatWebSocketHandler.write_frames``). Server side is the time from the handler
   receiving the RESUME text to ``hub.handle`` returning, i.e. every frame handed to the socket.
   Client side is the time from sending RESUME to holding all 10,000 frames.
   Floor: a plain ``sqlite3`` SELECT of the same 10,000 rows on an open connection, the least
   any replay from this store must do.

3. Stop latency: from the client sending STOP_GENERATING to it receiving the reply's final
   frame with status ``stopped``, against the jupyter server subprocess; once while an ``echo``
   reply streams flat out (server busy), once for the ``demo`` agent at its default pace
   (an LLM-like 50 tokens/s; server idle). No floor: the goal is absolute (< 100 ms).

Everything listens on 127.0.0.1 only, every wait has a timeout, every loop a bound.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import tornado
from tornado.web import Application
from tornado.websocket import WebSocketHandler

from jupyter_streamchat import protocol as p
from jupyter_streamchat.agents import AgentRequest
from jupyter_streamchat.agents.echo import EchoAgent
from jupyter_streamchat.server.app import StreamChatApp
from jupyter_streamchat.server.handlers import ChatWebSocketHandler
from jupyter_streamchat.core.hub import Hub
from jupyter_streamchat.store import SQLiteStore

from harness.client import connect, next_frame, read_reply, send, send_message
from harness.processes import Children, process_cpu
from harness.report import ms, verdict
from harness.servers import HOST, PushHandler, free_port, serve_raw, start_jupyter, start_raw
from harness.stats import median, p90
from harness.stores import store_reply

RUN_TIMEOUT = 60.0  # seconds for any one timed run; only turns a hang into an error
RESUME_CHUNKS = 10_000


@dataclass
class Settings:
    repeats: int
    tokens_one: int  # tokens of the single long reply
    conversations: int
    tokens_each: int  # tokens per reply when many conversations stream at once
    stop_tries: int
    stop_tokens: int  # length of the echo reply that gets stopped mid-stream
    batch_window: float


def settings_from(args) -> Settings:
    if args.quick:
        return Settings(3, 5_000, 100, 500, 10, 20_000, args.batch_window)
    return Settings(5, 20_000, 100, 2_000, 20, 20_000, args.batch_window)


def words(n: int, tag: str = "w") -> str:
    """A text that split_tokens cuts into exactly ``n`` tokens."""
    return "".join(f" {tag}{i}" for i in range(n))


# -- the floor server: bare Tornado, one frame per token (runs as `--serve-raw`) ----------------


class RawPushHandler(PushHandler):
    """Answers a SEND_MESSAGE by echoing its text, one write_message per token, nothing stored."""

    agent = EchoAgent("echo", delay=0)  # the same token source the hub's echo agent uses

    async def push(self, request):
        message_id, conversation_id = uuid.uuid4().hex, request["conversationId"]
        self.write_message(
            p.dumps(
                {  # same first frame as the hub, so one client reads both
                    "type": "MESSAGE_ACCEPTED",
                    "clientMessageId": request["clientMessageId"],
                    "conversationId": conversation_id,
                    "userMessageId": uuid.uuid4().hex,
                    "messageId": message_id,
                    "agentId": "echo",
                    "text": request["text"],
                }
            )
        )
        frames = p.ChunkFrames(message_id, conversation_id, "echo")
        seq, previous = 0, None
        # Hold back one token so the last one can travel in the final frame.
        async for token in self.agent.stream(AgentRequest(conversation_id, request["text"])):
            if previous is not None:
                seq += 1
                self.write_message(frames.chunk(seq, previous))
            previous = token
        self.write_message(frames.final(seq + 1, previous or "", p.COMPLETE))


async def start_hub(tmp: Path, batch_window: float):
    """The hub in a real ``jupyter server``, its SQLite store in ``tmp``."""
    return await start_jupyter(
        tmp / "jupyter",
        [
            "--EchoAgent.delay=0",
            f"--StreamChatApp.batch_window={batch_window}",
            f"--SQLiteStore.path={tmp / 'hub.db'}",
        ],
        agents=("echo", "demo"),
    )


# -- streaming throughput ---------------------------------------------------------------------


@dataclass
class Run:
    rate: float  # tokens per second
    frames: int  # MESSAGE_CHUNK frames received
    server_cpu: float  # CPU seconds the server process spent on the run


async def stream_run(
    url: str, token: str | None, server_pid: int, conversations: int, tokens_each: int
) -> Run:
    """One timed run: ``conversations`` sockets each ask for a reply of ``tokens_each`` tokens."""
    sockets = await asyncio.gather(*(connect(url, token) for _ in range(conversations)))
    try:
        texts = [words(tokens_each, f"t{i}x") for i in range(conversations)]
        # Bounded by the frames due, + MESSAGE_ACCEPTED and the odd stray frame.
        readers = [
            asyncio.ensure_future(read_reply(ws, max_frames=tokens_each + 10)) for ws in sockets
        ]
        cpu_before = process_cpu(server_pid)
        started = time.perf_counter()
        await asyncio.gather(*(send_message(ws, "echo", text) for ws, text in zip(sockets, texts)))
        replies = await asyncio.wait_for(asyncio.gather(*readers), RUN_TIMEOUT)
        elapsed = max(r.done_at for r in replies) - started
        server_cpu = process_cpu(server_pid) - cpu_before
        for reply, text in zip(replies, texts):
            if reply.text != text or reply.status != p.COMPLETE:
                raise RuntimeError(
                    f"reply mangled: status {reply.status}, "
                    f"{len(reply.text)} of {len(text)} characters"
                )
        return Run(
            conversations * tokens_each / elapsed, sum(r.frames for r in replies), server_cpu
        )
    finally:
        for ws in sockets:
            ws.close()


@dataclass
class Server:
    url: str
    token: str | None
    pid: int


async def bench_streaming(s: Settings, hub: Server, raw: Server) -> dict:
    results = {}
    for label, conversations, tokens_each in [
        ("one", 1, s.tokens_one),
        ("many", s.conversations, s.tokens_each),
    ]:
        runs: dict = {"hub": [], "raw": []}
        for server in (hub, raw):
            # Warm-up, not counted: first connections, SQLite pages, lazy imports.
            await stream_run(server.url, server.token, server.pid, conversations, 200)
        for _ in range(s.repeats):
            for name, server in (("hub", hub), ("raw", raw)):  # interleaved: noise hits both
                runs[name].append(
                    await stream_run(
                        server.url, server.token, server.pid, conversations, tokens_each
                    )
                )
        tokens = conversations * tokens_each
        results[label] = dict(
            conversations=conversations,
            tokens_each=tokens_each,
            **{
                f"{name}_{key}": value
                for name, rs in runs.items()
                for key, value in [
                    ("rate", median(r.rate for r in rs)),
                    ("frames", median(r.frames for r in rs)),
                    ("cpu_per_token", median(r.server_cpu for r in rs) / tokens),
                    ("all", [r.rate for r in rs]),
                ]
            },
        )
    return results


# -- RESUME: an in-process hub behind a real WebSocket ---------------------------------------


class ResumeHandler(WebSocketHandler):
    """The extension's request path minus Jupyter auth, timing each request server side."""

    hub: Hub
    timings: list

    # The hub's real transport: many frames encoded into one buffer, one stream write.
    write_frames = ChatWebSocketHandler.write_frames

    def initialize(self, hub: Hub, timings: list):
        self.hub, self.timings = hub, timings

    def get_compression_options(self):
        return None  # as ChatWebSocketHandler (write_frames assumes no compression)

    def open(self):
        self.subscriber = self.hub.connect(self)

    async def on_message(self, message):
        started = time.perf_counter()
        request = p.parse_request(message, 1024 * 1024)
        await self.hub.handle(self.subscriber, request)
        self.timings.append(time.perf_counter() - started)

    def on_close(self):
        self.hub.disconnect(self.subscriber)


async def make_stored_reply(store: SQLiteStore, chunks: list) -> str:
    """A complete reply of exactly len(chunks) frames, written through the store API."""
    exchange = await store.create_exchange("c-resume", "echo", "resume me", "m-resume")
    await store_reply(store, exchange.message_id, chunks)
    return exchange.message_id


def sqlite_floor(db_path: str, message_id: str, repeats: int) -> float:
    """Median seconds for a bare SELECT of the reply's rows on an already open connection."""
    conn = sqlite3.connect(db_path)
    try:
        query = "SELECT seq, chunk FROM chunks WHERE message_id = ? AND seq > ? ORDER BY seq"
        conn.execute(query, (message_id, 0)).fetchall()  # warm the page cache, as the hub's is
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            rows = conn.execute(query, (message_id, 0)).fetchall()
            times.append(time.perf_counter() - started)
            assert len(rows) == RESUME_CHUNKS, len(rows)
        return median(times)
    finally:
        conn.close()


async def bench_resume(s: Settings, tmp: Path) -> dict:
    db_path = str(tmp / "resume.db")
    store = SQLiteStore(path=db_path)
    hub = Hub(store, agents={}, batch_window=s.batch_window)
    await hub.ensure_open()
    chunks = [f" tok{i}" for i in range(RESUME_CHUNKS)]
    message_id = await make_stored_reply(store, chunks)

    timings: list = []
    app = Application([(r"/ws", ResumeHandler, {"hub": hub, "timings": timings})])
    port = free_port()
    server = app.listen(port, address=HOST)
    server_times, client_times = [], []
    try:
        for attempt in range(s.repeats + 1):  # the first one warms up and is not counted
            ws = await connect(f"ws://{HOST}:{port}/ws")
            try:
                started = time.perf_counter()
                await send(ws, "RESUME", messageId=message_id, afterSeq=0)
                reply = await asyncio.wait_for(
                    read_reply(ws, message_id, RESUME_CHUNKS + 10), RUN_TIMEOUT
                )
            finally:
                ws.close()
            if reply.frames != RESUME_CHUNKS or reply.text != "".join(chunks):
                raise RuntimeError(f"RESUME gave {reply.frames} frames, not {RESUME_CHUNKS}")
            if attempt:
                client_times.append(reply.done_at - started)
                server_times.append(timings[-1])
    finally:
        server.stop()
        await hub.shutdown()
    floor = sqlite_floor(db_path, message_id, max(s.repeats, 5))
    return dict(
        server=median(server_times),
        client=median(client_times),
        floor=floor,
        server_all=server_times,
    )


# -- stop latency ------------------------------------------------------------------------------


async def stop_once(url: str, token: str, agent: str, text: str) -> float:
    """Start a reply, wait for its first chunk, stop it; seconds from STOP to final frame."""
    ws = await connect(url, token)
    try:
        await send_message(ws, agent, text)
        message_id = None
        for _ in range(100):  # ACCEPTED, then the first chunk
            frame, _ = await asyncio.wait_for(next_frame(ws), RUN_TIMEOUT)
            if frame["type"] == "MESSAGE_ACCEPTED":
                message_id = frame["messageId"]
            elif frame["type"] == "MESSAGE_CHUNK":
                break
        started = time.perf_counter()
        await send(ws, "STOP_GENERATING", messageId=message_id)
        reply = await asyncio.wait_for(read_reply_rest(ws, message_id), RUN_TIMEOUT)
        if reply != p.STOPPED:
            raise RuntimeError(f"the reply ended {reply!r}, not stopped: make it longer")
        return time.perf_counter() - started
    finally:
        ws.close()


async def read_reply_rest(ws, message_id: str, max_frames: int = 1_000_000) -> str:
    """Skip frames up to the reply's final one; return its status."""
    for _ in range(max_frames):
        frame, _ = await next_frame(ws)
        if (
            frame["type"] == "MESSAGE_CHUNK"
            and frame["messageId"] == message_id
            and frame["isComplete"]
        ):
            return frame["status"]
    raise RuntimeError("no final frame")


async def bench_stop(s: Settings, url: str, token: str) -> dict:
    results = {}
    busy_text = words(s.stop_tokens, "s")
    for label, agent, text in [("busy", "echo", busy_text), ("paced", "demo", "Stop me.")]:
        times = [await stop_once(url, token, agent, text) for _ in range(s.stop_tries)]
        # The tail matters here as much as the median: report the 90th percentile too.
        results[label] = dict(median=median(times), p90=p90(times), worst=max(times))
    return results


# -- report -----------------------------------------------------------------------------------


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def print_report(s: Settings, stream: dict, resume: dict, stop: dict) -> None:
    print(
        f"batch_window = {s.batch_window * 1000:g} ms; medians of {s.repeats} runs "
        f"(stop: {s.stop_tries} tries); {os.cpu_count()} CPUs; Python "
        f"{platform.python_version()}, Tornado {tornado.version}\n"
    )
    print("| measurement | hub | floor | ratio hub/floor | goal | |")
    print("|---|---:|---:|---:|---|---|")
    for label in ("one", "many"):
        r = stream[label]
        if r["conversations"] == 1:
            what = f"1 conversation × {r['tokens_each']:,} tokens"
        else:
            what = f"{r['conversations']} conversations × {r['tokens_each']:,} tokens"
        ratio = r["hub_rate"] / r["raw_rate"]
        print(
            f"| {what}: tokens/s seen by the client | {fmt_rate(r['hub_rate'])} | "
            f"{fmt_rate(r['raw_rate'])} (raw push) | {ratio:.2f} | ≥ 0.8 | "
            f"{verdict(ratio >= 0.8)} |"
        )
        print(
            f"| {what}: frames sent | {r['hub_frames']:,.0f} | {r['raw_frames']:,.0f} | "
            f"{r['hub_frames'] / r['raw_frames']:.4f} | | |"
        )
        hub_cpu, raw_cpu = r["hub_cpu_per_token"] * 1e6, r["raw_cpu_per_token"] * 1e6
        print(
            f"| {what}: server CPU per token | {hub_cpu:.1f} µs | {raw_cpu:.1f} µs | "
            f"{hub_cpu / raw_cpu:.2f} | | |"
        )
    ratio = resume["server"] / resume["floor"]
    worst = max(resume["server_all"])
    print(
        f"| RESUME {RESUME_CHUNKS:,} chunks: server side (worst {ms(worst)}) | "
        f"{ms(resume['server'])} | "
        f"{ms(resume['floor'])} (sqlite3 SELECT) | {ratio:.1f} | ≤ 25 ms | "
        f"{verdict(resume['server'] <= 0.025)} |"
    )
    print(
        f"| RESUME {RESUME_CHUNKS:,} chunks: client holds all frames | {ms(resume['client'])} "
        f"| | | | |"
    )
    for label, what in [
        ("busy", "echo reply streaming flat out"),
        ("paced", "demo agent, 50 tokens/s"),
    ]:
        r = stop[label]
        print(
            f"| stop latency, {what} (p90 {ms(r['p90'])}, worst {ms(r['worst'])}) | "
            f"{ms(r['median'])} | | | "
            f"< 100 ms | {verdict(r['median'] < 0.1)} |"
        )
    print()
    for label in ("one", "many"):
        r = stream[label]
        print(
            f"all runs, {label}: hub {', '.join(map(fmt_rate, r['hub_all']))}; "
            f"raw {', '.join(map(fmt_rate, r['raw_all']))} tokens/s"
        )
    print(f"all runs, RESUME server side: {', '.join(ms(t) for t in resume['server_all'])}")


# -- main -------------------------------------------------------------------------------------


async def run(s: Settings) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="streamchat-bench-"))
    try:
        async with Children() as children:
            print("starting servers...", file=sys.stderr)
            jupyter = await start_hub(tmp, s.batch_window)
            children.append(jupyter.child)
            raw, raw_port = await start_raw(__file__, tmp / "raw.log", "raw push server")
            children.append(raw)
            hub = Server(jupyter.ws_url, jupyter.token, jupyter.child.pid)
            floor = Server(f"ws://{HOST}:{raw_port}/ws", None, raw.pid)

            print("streaming throughput...", file=sys.stderr)
            stream = await bench_streaming(s, hub, floor)
            print("stop latency...", file=sys.stderr)
            stop = await bench_stop(s, hub.url, hub.token)
            await raw.stop()  # idle servers only from here: the RESUME runs in this process
            await jupyter.child.stop()
            print("RESUME replay...", file=sys.stderr)
            resume = await bench_resume(s, tmp)
        print_report(s, stream, resume, stop)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tokens and runs (~30 s)")
    parser.add_argument(
        "--batch-window",
        type=float,
        default=StreamChatApp.class_traits()["batch_window"].default_value,
        help="c.StreamChatApp.batch_window for the hub, in seconds (default: the app's)",
    )
    parser.add_argument("--serve-raw", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_raw:
        asyncio.run(serve_raw([(r"/ws", RawPushHandler)]))
        return
    started = time.monotonic()
    asyncio.run(run(settings_from(args)))
    print(f"\n(total {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
