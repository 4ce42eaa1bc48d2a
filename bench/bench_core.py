"""Benchmark of the streamchat core: memory of a huge reply, latency under history traffic,
and the time to open a long conversation.

Run ``python bench/bench_core.py`` (under 10 minutes) or ``--quick`` (under 2). It prints one
markdown table, then the raw numbers behind it. Every figure is a median (or a percentile of
all samples) of several runs, interleaved with its floor so that noise on a busy machine hits
both alike; each floor is measured in the same process run. Everything speaks only the wire
and REST of a real ``jupyter server`` subprocess on 127.0.0.1, with Jupyter state in a temp
dir, the SQLite store in that dir, and the ``bulk`` agent of ``bench/plugins`` installed as a
real entry-point distribution (through PYTHONPATH).

1. Server memory for one 50 MiB reply. The ``bulk`` agent answers "50M" with 50 MiB of text in
   4 KiB pieces; one client reads the whole reply as fast as it can. The server's RSS is read
   from /proc/<pid>/status just before the request (VmRSS) and its peak during the reply
   (VmHWM, reset through /proc/<pid>/clear_refs, plus VmRSS sampled every 5 ms); growth is
   peak minus before, divided by the text size. Each run uses a fresh server (warmed up by one
   small reply), so memory that an earlier run left in Python's allocator cannot hide growth.
   Floor: this file run as ``--serve-raw``, a bare Tornado WebSocket server that pushes the
   same pieces, one frame each, awaiting each ``write_message`` (the least memory a streaming
   server can use), measured the same way.

2. Round trips of other clients while a 12 MiB conversation is read. A conversation is filled
   with 62 messages of 200 KiB (31 exchanges with ``bulk``). A reader in its own process
   (``--read-history``, this file) SUBSCRIBEs to it again and again and, where the server
   pages history (``hasMore``), pages back with LOAD_HISTORY until ``hasMore`` is false.
   Meanwhile 5 clients each SUBSCRIBE to a tiny conversation and wait for its HISTORY, as fast
   as they can. Reported: p50 and p99 of all their round trips, beside the same clients with no
   history traffic, and beside a floor: the same 5 clients against a bare Tornado echo server.

3. HISTORY open time: from sending SUBSCRIBE to holding its HISTORY, for conversations of 50
   and 5,000 messages of 200 bytes (1,000 with ``--quick``: filling a conversation over the
   wire costs O(n^2), as each SEND_MESSAGE reads the whole conversation for the agent), on an
   open socket. Floor: a plain sqlite3 SELECT of the text of the same messages (as many of the
   latest as the HISTORY carried) on an open connection to the server's database file. For
   context, also the time of one more exchange in each conversation.

4. The hub's relay throughput against a raw Tornado push is bench_hub.py's business: this
   script runs ``bench_hub.py --quick`` as a subprocess and copies its one-conversation row
   (skip with ``--skip-relay``).

A part that fails (say, a server that does not answer a newer request type) is reported in
the table as not measured, with the reason; the other parts still run. Every wait has a
timeout and every loop a bound.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import tornado
from tornado.websocket import WebSocketHandler

HERE = Path(__file__).resolve().parent
PLUGINS = HERE / "plugins"  # the ``bulk`` agent, as an installed distribution
sys.path.insert(0, str(PLUGINS))
from streamchat_bench_agents import bulk_pieces  # noqa: E402  (the very text the agent sends)

from harness.client import connect as ws_connect, frame_of, next_frame, send, send_message  # noqa: E402
from harness.processes import STARTUP_TIMEOUT, memory_status, reset_peak  # noqa: E402
from harness.report import MiB, attempt, first_line, mib, ms, not_measured, verdict  # noqa: E402
from harness.servers import (
    HOST,
    Jupyter,
    PushHandler,
    extension_errors,
    serve_raw,
    start_jupyter,
    start_raw,
)  # noqa: E402
from harness.stats import median, percentile  # noqa: E402

KiB = 1024
RUN_TIMEOUT = 120.0  # seconds for any one timed run; only turns a hang into an error
ROUND_TRIP_GUARD = 10.0  # seconds for one round trip
STALL_GUARD = 15.0  # seconds without a frame in the middle of a reply
MAX_FRAME = 1024 * MiB  # what the clients accept in one frame (a whole HISTORY may be big)

REPLY_BYTES = 50 * MiB  # part 1
BIG_MESSAGE_BYTES = 200 * KiB  # part 2: user messages and replies of this size ...
BIG_EXCHANGES = 31  # ... 62 of them, 12.1 MiB
SMALL_MESSAGE_BYTES = 200  # part 3
ROUND_TRIP_CLIENTS = 5


@dataclass
class Settings:
    memory_repeats: int  # part 1: fresh servers per side
    phases: int  # part 2: rounds of (quiet, loaded, raw echo)
    phase_seconds: float
    open_repeats: int  # part 3
    open_sizes: tuple  # part 3: messages per conversation, a short one and a long one


def settings_from(args) -> Settings:
    if args.quick:
        # Filling a conversation over the wire costs O(n^2) (each SEND_MESSAGE reads the whole
        # conversation for the agent): 1,000 messages here, not 5,000.
        return Settings(
            memory_repeats=3, phases=2, phase_seconds=3.0, open_repeats=9, open_sizes=(50, 1_000)
        )
    return Settings(
        memory_repeats=5, phases=4, phase_seconds=10.0, open_repeats=31, open_sizes=(50, 5_000)
    )


def text_of(size: int) -> str:
    """A user message of exactly ``size`` bytes whose first word asks ``bulk`` for as much."""
    return (f"{size} " + "".join(bulk_pieces(size)))[:size]


# -- the floor server: bare Tornado (runs as `--serve-raw`) -----------------------------------


class RawPushHandler(PushHandler):
    """Answers a SEND_MESSAGE for ``bulk`` with the same pieces, one frame each, nothing stored.

    Each write is awaited, so at most one frame waits in the server: the least memory any
    server that streams the reply to a client can use.
    """

    async def push(self, request):
        from streamchat_bench_agents import parse_size

        message_id, conversation_id = uuid.uuid4().hex, request["conversationId"]
        await self.write_message(
            json.dumps(
                {
                    "type": "MESSAGE_ACCEPTED",
                    "clientMessageId": request["clientMessageId"],
                    "conversationId": conversation_id,
                    "userMessageId": uuid.uuid4().hex,
                    "messageId": message_id,
                    "agentId": "bulk",
                    "text": request["text"],
                }
            )
        )
        seq = 0
        for piece in bulk_pieces(parse_size(request["text"].split()[0])):
            await asyncio.sleep(0)  # as the agent does between pieces
            seq += 1
            await self.write_message(
                json.dumps(
                    {
                        "type": "MESSAGE_CHUNK",
                        "messageId": message_id,
                        "conversationId": conversation_id,
                        "agentId": "bulk",
                        "seq": seq,
                        "chunk": piece,
                        "isComplete": False,
                    }
                )
            )
        await self.write_message(
            json.dumps(
                {
                    "type": "MESSAGE_CHUNK",
                    "messageId": message_id,
                    "conversationId": conversation_id,
                    "agentId": "bulk",
                    "seq": seq + 1,
                    "chunk": "",
                    "isComplete": True,
                    "status": "complete",
                }
            )
        )


class RawEchoHandler(WebSocketHandler):
    """Sends every frame straight back: the cheapest round trip over the same stack."""

    def get_compression_options(self):
        return None

    def on_message(self, message):
        self.write_message(message)


# -- server subprocesses ----------------------------------------------------------------------


async def start_server(base: Path) -> Jupyter:
    """A ``jupyter server`` with only jupyter_streamchat, its store at ``base/chat.db``."""
    return await start_jupyter(
        base, [f"--SQLiteStore.path={base / 'chat.db'}"], python_path=[PLUGINS], agents=("bulk",)
    )


async def start_floor(base: Path) -> tuple:
    """This file as ``--serve-raw``; -> (child, port)."""
    return await start_raw(__file__, base / f"raw-{uuid.uuid4().hex[:8]}.log", "raw Tornado server")


# -- the client side --------------------------------------------------------------------------


def connect(url: str, token: str | None = None):
    return ws_connect(url, token, max_frame=MAX_FRAME)


def send_bulk(ws, conversation_id: str, text: str):
    return send_message(ws, "bulk", text, conversation_id)


async def fill_conversation(
    url: str, token: str, conversation_id: str, exchanges: int, size: int, in_flight: int = 25
) -> None:
    """Store ``exchanges`` user messages of ``size`` bytes and ``bulk`` replies as long."""
    ws = await connect(url, token)
    try:
        for first in range(0, exchanges, in_flight):
            count = min(in_flight, exchanges - first)
            for _ in range(count):
                send_bulk(ws, conversation_id, text_of(size))
            ended = 0
            for _ in range(count * (size // 256 + 10)):  # bound: frames of these replies
                frame, _ = await asyncio.wait_for(next_frame(ws), RUN_TIMEOUT)
                if frame["type"] == "ERROR":
                    raise RuntimeError(f"filling {conversation_id}: {frame}")
                if frame["type"] == "MESSAGE_CHUNK" and frame["isComplete"]:
                    if frame["status"] != "complete":
                        raise RuntimeError(f"filling {conversation_id}: a reply ended {frame}")
                    ended += 1
                    if ended == count:
                        break
            else:
                raise RuntimeError(f"filling {conversation_id}: replies did not end")
    finally:
        ws.close()


# -- 1. memory of one huge reply --------------------------------------------------------------


class PeakWatch:
    """The highest RSS of a process while in use: VmHWM (after a reset) and 5 ms samples."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak_reset = reset_peak(pid)
        self.before = memory_status(pid)["VmRSS"]
        self.sampled = self.before
        self._done = threading.Event()
        # A thread, not a task: the client's read loop may hold the event loop for a while.
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._done.wait(0.005):
            try:
                self.sampled = max(self.sampled, memory_status(self.pid)["VmRSS"])
            except OSError:
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join(5)

    def peak(self) -> int:
        if self.peak_reset:
            return max(self.sampled, memory_status(self.pid)["VmHWM"])
        return self.sampled


@dataclass
class Progress:
    received: int = 0  # characters of the reply so far
    at: float = field(default_factory=time.monotonic)  # when the last frame came


async def read_bulk_reply(ws, size: int) -> int:
    """Read one ``bulk`` reply to its final frame; check seq order and the exact text.
    Returns the number of frames.

    Raises if no frame comes for STALL_GUARD seconds (a per-frame timeout would cost more than
    the frame); keeps only a running hash, so the client's memory does not grow with the reply.
    """
    progress = Progress()
    reader = asyncio.ensure_future(_read_bulk_reply(ws, size, progress))
    try:
        while not reader.done():
            await asyncio.wait({reader}, timeout=1.0)
            if time.monotonic() - progress.at > STALL_GUARD and not reader.done():
                raise RuntimeError(
                    f"the reply stalled after {mib(progress.received)} of "
                    f"{mib(size)}: no frame for {STALL_GUARD:.0f} s"
                )
        return reader.result()
    finally:
        reader.cancel()


async def _read_bulk_reply(ws, size: int, progress: Progress) -> int:
    expected = hashlib.sha1()
    for piece in bulk_pieces(size):
        expected.update(piece.encode())
    digest, seq, message_id = hashlib.sha1(), 0, None
    for _ in range(size // 256 + 100):  # frames carry whole 4 KiB pieces, so far fewer
        frame, _ = await next_frame(ws)
        progress.at = time.monotonic()
        if frame["type"] == "ERROR":
            raise RuntimeError(f"server error: {frame}")
        if frame["type"] == "MESSAGE_ACCEPTED" and message_id is None:
            message_id = frame["messageId"]
        elif frame["type"] == "MESSAGE_CHUNK" and frame["messageId"] == message_id:
            seq += 1
            if frame["seq"] != seq:
                raise RuntimeError(f"seq {frame['seq']} where {seq} was due")
            digest.update(frame["chunk"].encode())
            progress.received += len(frame["chunk"])
            if frame["isComplete"]:
                if frame["status"] != "complete" or digest.digest() != expected.digest():
                    raise RuntimeError(
                        f"the reply ended {frame['status']} with "
                        f"{progress.received} of {size} characters, or with "
                        "other text"
                    )
                return seq
    raise RuntimeError("no final frame")


@dataclass
class MemoryRun:
    before: int  # RSS just before the request, bytes
    peak: int  # highest RSS during the reply
    after: int  # RSS once the reply has ended and the server had a second to settle
    seconds: float  # from the request to the final frame
    frames: int
    peak_source: str


async def memory_run(url: str, token: str | None, pid: int, size: int) -> MemoryRun:
    ws = await connect(url, token)
    try:
        # Warm-up, not counted: first frames, lazy imports, the store's first writes.
        send_bulk(ws, "c-warm-" + uuid.uuid4().hex, "64K")
        await asyncio.wait_for(read_bulk_reply(ws, 64 * KiB), RUN_TIMEOUT)
        await asyncio.sleep(0.5)
        with PeakWatch(pid) as watch:
            started = time.perf_counter()
            send_bulk(ws, "c-big-" + uuid.uuid4().hex, f"{size // MiB}M")
            frames = await asyncio.wait_for(read_bulk_reply(ws, size), RUN_TIMEOUT)
            seconds = time.perf_counter() - started
            await asyncio.sleep(1.0)  # the store's last writes, a garbage collection or two
        return MemoryRun(
            watch.before,
            watch.peak(),
            memory_status(pid)["VmRSS"],
            seconds,
            frames,
            "VmHWM + samples" if watch.peak_reset else "5 ms samples",
        )
    finally:
        ws.close()


async def bench_memory(s: Settings, tmp: Path) -> dict:
    """Runs per side ("hub", "raw"); a side that fails once is not run again, and its error is
    kept in ``errors`` so that the other side's numbers still get reported."""
    runs: dict = {"hub": [], "raw": []}
    errors: dict = {}
    for i in range(s.memory_repeats):
        for side in ("hub", "raw"):  # interleaved, each on a fresh server
            if side in errors:
                continue
            print(f"  memory: {side} run {i + 1}/{s.memory_repeats}", file=sys.stderr)
            base = tmp / f"memory-{side}-{i}"
            child = None
            try:
                if side == "hub":
                    server = await start_server(base)
                    child, url, token = server.child, server.ws_url, server.token
                else:
                    child, port = await start_floor(base)
                    url, token = f"ws://{HOST}:{port}/push", None
                runs[side].append(await memory_run(url, token, child.pid, REPLY_BYTES))
            except Exception as e:
                reason = f"{type(e).__name__}: {first_line(e)}"
                if child is not None:
                    print(f"--- {child.name} log ---\n{child.log_tail()}", file=sys.stderr)
                    reason += f" (server log: {extension_errors(child)})"
                print(f"  memory: {side} failed: {reason}", file=sys.stderr)
                errors[side] = reason
            finally:
                if child is not None:
                    await child.stop()
                shutil.rmtree(base, ignore_errors=True)  # the store holds 50 MiB
    return dict(runs=runs, errors=errors)


# -- 2. round trips while a big history is read ------------------------------------------------


async def read_history_loop(url: str, token: str, conversation_id: str, seconds: float) -> None:
    """The history reader (runs as ``--read-history``, in its own process so that parsing
    12 MiB frames does not stall the measuring clients' event loop).

    Until ``seconds`` have passed: SUBSCRIBE, then LOAD_HISTORY page after page while
    ``hasMore``. Prints "started", then one JSON line of totals."""
    ws = await connect(url, token)
    passes, frames, chars, pass_times, modes = 0, 0, 0, [], set()
    deadline = time.monotonic() + seconds
    print("started", flush=True)
    for _ in range(100_000):
        if time.monotonic() >= deadline:
            break
        started = time.perf_counter()
        send(ws, "SUBSCRIBE", conversationId=conversation_id)
        frame, size = await asyncio.wait_for(
            frame_of(ws, ("HISTORY",), conversation_id), RUN_TIMEOUT
        )
        frames, chars = frames + 1, chars + size
        if frame["type"] == "ERROR":
            raise RuntimeError(f"SUBSCRIBE refused: {frame}")
        if "hasMore" not in frame:
            modes.add("one HISTORY frame with the whole conversation (no hasMore)")
        for _page in range(10_000):
            if not frame.get("hasMore") or not frame["messages"]:
                break
            send(
                ws,
                "LOAD_HISTORY",
                conversationId=conversation_id,
                beforeMessageId=frame["messages"][0]["messageId"],
            )
            frame, size = await asyncio.wait_for(
                frame_of(ws, ("HISTORY_PAGE",), conversation_id), RUN_TIMEOUT
            )
            frames, chars = frames + 1, chars + size
            if frame["type"] == "ERROR":
                modes.add(f"LOAD_HISTORY refused ({frame.get('code')}): first page only")
                break
            modes.add("paged: HISTORY, then LOAD_HISTORY until hasMore is false")
        passes += 1
        pass_times.append(time.perf_counter() - started)
    ws.close()
    print(
        json.dumps(
            {
                "passes": passes,
                "frames": frames,
                "chars": chars,
                "pass_median": median(pass_times) if pass_times else None,
                "modes": sorted(modes),
            }
        ),
        flush=True,
    )


async def round_trip_client(
    url: str, token: str | None, conversation_id: str, until: float
) -> list:
    """Round trips (seconds) of SUBSCRIBE -> HISTORY until ``until`` (perf_counter)."""
    ws = await connect(url, token)
    times = []
    try:
        for _ in range(1_000_000):
            if time.perf_counter() >= until:
                break
            started = time.perf_counter()
            send(ws, "SUBSCRIBE", conversationId=conversation_id)
            # The echo server sends the SUBSCRIBE back; the hub answers HISTORY.
            frame, _ = await asyncio.wait_for(
                frame_of(ws, ("HISTORY", "SUBSCRIBE"), conversation_id), ROUND_TRIP_GUARD
            )
            if frame["type"] == "ERROR":
                raise RuntimeError(f"round trip refused: {frame}")
            times.append(time.perf_counter() - started)
    finally:
        ws.close()
    return times


async def round_trips(url: str, token: str | None, conversation_id: str, seconds: float) -> list:
    until = time.perf_counter() + seconds
    per_client = await asyncio.gather(
        *(round_trip_client(url, token, conversation_id, until) for _ in range(ROUND_TRIP_CLIENTS))
    )
    return [t for times in per_client for t in times]


async def start_history_reader(server: Jupyter, conversation_id: str, seconds: float):
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).resolve()),
        "--read-history",
        server.ws_url,
        server.token,
        conversation_id,
        str(seconds),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    line = await asyncio.wait_for(proc.stdout.readline(), STARTUP_TIMEOUT)
    if line.strip() != b"started":
        _, err = await asyncio.wait_for(proc.communicate(), 20)
        raise RuntimeError(f"the history reader failed: {err.decode(errors='replace')[-2000:]}")
    return proc


async def finish_history_reader(proc) -> dict:
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError("the history reader did not finish") from None
    if proc.returncode != 0:
        raise RuntimeError(f"the history reader failed: {err.decode(errors='replace')[-2000:]}")
    return json.loads(out.decode().strip().splitlines()[-1])


async def bench_round_trips(s: Settings, server: Jupyter, raw_port: int) -> dict:
    big, tiny = "c-history-12MiB", "c-tiny"
    print("  filling a 12 MiB conversation...", file=sys.stderr)
    await fill_conversation(
        server.ws_url, server.token, big, BIG_EXCHANGES, BIG_MESSAGE_BYTES, in_flight=8
    )
    await fill_conversation(server.ws_url, server.token, tiny, 1, 100)
    raw_url = f"ws://{HOST}:{raw_port}/echo"
    samples: dict = {"quiet": [], "loaded": [], "raw": []}
    p99s: dict = {"quiet": [], "loaded": [], "raw": []}
    readers = []
    await round_trips(server.ws_url, server.token, tiny, 0.5)  # warm-up, not counted
    for phase in range(s.phases):
        print(f"  round trips: phase {phase + 1}/{s.phases}", file=sys.stderr)
        for condition in ("quiet", "loaded", "raw"):
            if condition == "loaded":
                reader = await start_history_reader(server, big, s.phase_seconds + 0.5)
                try:
                    times = await round_trips(server.ws_url, server.token, tiny, s.phase_seconds)
                finally:
                    readers.append(await finish_history_reader(reader))
            elif condition == "quiet":
                times = await round_trips(server.ws_url, server.token, tiny, s.phase_seconds)
            else:
                times = await round_trips(raw_url, None, tiny, s.phase_seconds)
            samples[condition].extend(times)
            p99s[condition].append(percentile(times, 99))
    result = {
        c: dict(p50=percentile(t, 50), p99=percentile(t, 99), count=len(t), p99_per_phase=p99s[c])
        for c, t in samples.items()
    }
    result["reader"] = dict(
        passes=sum(r["passes"] for r in readers),
        frames=sum(r["frames"] for r in readers),
        chars=sum(r["chars"] for r in readers),
        pass_median=median([r["pass_median"] for r in readers if r["pass_median"]] or [0]),
        modes=sorted({m for r in readers for m in r["modes"]}),
        history_bytes=2 * BIG_EXCHANGES * BIG_MESSAGE_BYTES,
    )
    return result


# -- 3. HISTORY open time ---------------------------------------------------------------------


async def open_time(ws, conversation_id: str) -> tuple[float, dict, int]:
    started = time.perf_counter()
    send(ws, "SUBSCRIBE", conversationId=conversation_id)
    frame, size = await asyncio.wait_for(frame_of(ws, ("HISTORY",), conversation_id), RUN_TIMEOUT)
    elapsed = time.perf_counter() - started
    if frame["type"] == "ERROR":
        raise RuntimeError(f"SUBSCRIBE refused: {frame}")
    return elapsed, frame, size


class SelectFloor:
    """The same messages' text read with plain sqlite3 on an open connection.

    Reads the store's table directly (messages: conversation_id, pos, text); if that layout
    has changed, ``error`` says so and the floor is left out."""

    QUERY = "SELECT text FROM messages WHERE conversation_id = ? ORDER BY pos DESC LIMIT ?"

    def __init__(self, db_path: Path):
        self.conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        self.error = None

    def time(self, conversation_id: str, count: int) -> float | None:
        if self.error:
            return None
        try:
            started = time.perf_counter()
            rows = self.conn.execute(self.QUERY, (conversation_id, count)).fetchall()
            elapsed = time.perf_counter() - started
        except sqlite3.Error as e:
            self.error = f"the store's schema is not the one this floor reads ({e})"
            return None
        if len(rows) != count:
            self.error = f"SELECT found {len(rows)} messages, HISTORY had {count}"
            return None
        return elapsed

    def close(self):
        self.conn.close()


async def exchange_time(ws, conversation_id: str) -> float:
    """Seconds from SEND_MESSAGE (200 bytes to ``bulk``) to the reply's final frame."""
    started = time.perf_counter()
    send_bulk(ws, conversation_id, text_of(SMALL_MESSAGE_BYTES))
    for _ in range(1_000):
        frame, _ = await asyncio.wait_for(next_frame(ws), RUN_TIMEOUT)
        if frame["type"] == "ERROR":
            raise RuntimeError(f"SEND_MESSAGE refused: {frame}")
        if frame["type"] == "MESSAGE_CHUNK" and frame["isComplete"]:
            return time.perf_counter() - started
    raise RuntimeError("no final frame")


async def bench_open(s: Settings, server: Jupyter) -> dict:
    conversations = {n: f"c-open-{n}" for n in s.open_sizes}
    fill_seconds = {}
    for n, conversation_id in conversations.items():
        print(f"  filling a conversation of {n:,} messages...", file=sys.stderr)
        started = time.perf_counter()
        await fill_conversation(
            server.ws_url, server.token, conversation_id, n // 2, SMALL_MESSAGE_BYTES, in_flight=50
        )
        fill_seconds[n] = time.perf_counter() - started
    floor = SelectFloor(server.base / "chat.db")
    ws = await connect(server.ws_url, server.token)
    times: dict = {n: [] for n in s.open_sizes}
    floors: dict = {n: [] for n in s.open_sizes}
    shape: dict = {}
    try:
        for round_ in range(s.open_repeats + 1):  # the first round warms up, not counted
            for n, conversation_id in conversations.items():  # interleaved with the floor
                elapsed, frame, size = await open_time(ws, conversation_id)
                count = len(frame["messages"])
                floor_time = floor.time(conversation_id, count)
                if round_:
                    times[n].append(elapsed)
                    if floor_time is not None:
                        floors[n].append(floor_time)
                shape[n] = dict(messages=count, chars=size, has_more=frame.get("hasMore"))
        # Last, as it adds messages: one more exchange in each conversation, a few times.
        exchanges: dict = {n: [] for n in s.open_sizes}
        for _ in range(5):
            for n, conversation_id in conversations.items():
                exchanges[n].append(await exchange_time(ws, conversation_id))
    finally:
        ws.close()
        floor.close()
    return dict(
        sizes=s.open_sizes,
        floor_error=floor.error,
        by_size={
            n: dict(
                median=median(times[n]),
                all=times[n],
                floor=median(floors[n]) if floors[n] else None,
                fill_seconds=fill_seconds[n],
                exchange=median(exchanges[n]),
                **shape[n],
            )
            for n in s.open_sizes
        },
    )


# -- 4. relay throughput, from bench_hub.py ---------------------------------------------------


def relay_row(timeout: float = 300.0) -> dict:
    """Run ``bench_hub.py --quick`` and keep its one-conversation tokens/s row."""
    command = [sys.executable, str(HERE / "bench_hub.py"), "--quick"]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        return dict(error=f"bench_hub.py --quick took over {timeout:.0f} s")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return dict(error=f"bench_hub.py --quick failed: {last}")
    for line in done.stdout.splitlines():
        if line.startswith("| 1 conversation") and "tokens/s" in line:
            return dict(row=line)
    return dict(error="bench_hub.py --quick printed no one-conversation tokens/s row")


# -- report -----------------------------------------------------------------------------------


def report_memory(memory) -> None:
    what = f"server RSS growth, one {REPLY_BYTES // MiB} MiB reply"
    if isinstance(memory, str):
        not_measured(what, memory)
        return
    runs, errors = memory["runs"], memory["errors"]

    def cell(side: str, key, unit=mib) -> tuple:
        """(median, its text) of ``key(run)`` over a side's runs, or (None, why not)."""
        if not runs[side]:
            return None, f"not measured: {errors.get(side, 'no run')}"
        value = median(key(r) for r in runs[side])
        return value, unit(value)

    hub, hub_text = cell("hub", lambda r: r.peak - r.before)
    raw, raw_text = cell("raw", lambda r: r.peak - r.before)
    if hub is not None:
        hub_text += f" = {hub / REPLY_BYTES:.2f} × text"
    if raw is not None:
        raw_text += f" = {raw / REPLY_BYTES:.2f} × text (raw push)"
    ratio = f"{hub / raw:.1f}" if hub is not None and raw and raw >= MiB else "–"
    ok = verdict(hub / REPLY_BYTES <= 1.5) if hub is not None else ""
    print(f"| {what}: peak | {hub_text} | {raw_text} | {ratio} | ≤ 1.5 × text | {ok} |")
    hub, hub_text = cell("hub", lambda r: r.after - r.before)
    raw, raw_text = cell("raw", lambda r: r.after - r.before)
    print(f"| {what}: still held 1 s after its end | {hub_text} | {raw_text} | | | |")
    seconds = lambda x: f"{x:.2f} s"  # noqa: E731
    hub, hub_text = cell("hub", lambda r: r.seconds, seconds)
    raw, raw_text = cell("raw", lambda r: r.seconds, seconds)
    ratio = f"{hub / raw:.1f}" if hub is not None and raw is not None else "–"
    print(f"| {what}: the client reads it all in | {hub_text} | {raw_text} | {ratio} | | |")


def report_round_trips(rt) -> None:
    what = f"round trip of {ROUND_TRIP_CLIENTS} clients (SUBSCRIBE → HISTORY, tiny conversation)"
    if isinstance(rt, str):
        not_measured(what, rt)
        return
    quiet, loaded, raw, reader = rt["quiet"], rt["loaded"], rt["raw"], rt["reader"]
    print(
        f"| {what}, no history traffic: p50 / p99 | {ms(quiet['p50'])} / {ms(quiet['p99'])} | "
        f"{ms(raw['p50'])} / {ms(raw['p99'])} (raw echo) | "
        f"{quiet['p99'] / raw['p99']:.1f} (p99) | | |"
    )
    print(
        f"| {what}, while a {mib(reader['history_bytes'])} history is read: p50 / p99 | "
        f"{ms(loaded['p50'])} / {ms(loaded['p99'])} | "
        f"{ms(raw['p50'])} / {ms(raw['p99'])} (raw echo) | "
        f"{loaded['p99'] / raw['p99']:.1f} (p99) | p99 < 50 ms | "
        f"{verdict(loaded['p99'] < 0.05)} |"
    )
    paged = any(m.startswith("paged") for m in reader["modes"])
    how = "; ".join(reader["modes"]) or "no pass completed"
    if not paged:
        how += " (**degraded**: the server does not page history, so each pass is one SUBSCRIBE)"
    print(
        f"| the history reader meanwhile: {how} | {reader['passes']} passes, "
        f"{reader['frames']} frames, {mib(reader['chars'])}; "
        f"{ms(reader['pass_median'])} per pass | | | | |"
    )


def report_open(opened) -> None:
    what = "HISTORY open time (SUBSCRIBE → HISTORY)"
    if isinstance(opened, str):
        not_measured(what, opened)
        return
    short, long = opened["sizes"]
    for n in (short, long):
        r = opened["by_size"][n]
        paged = "" if r["has_more"] is None else f", hasMore {str(r['has_more']).lower()}"
        floor = (
            f"{ms(r['floor'])} (sqlite3 SELECT)"
            if r["floor"] is not None
            else f"– ({opened['floor_error']})"
        )
        ratio = f"{r['median'] / r['floor']:.1f}" if r["floor"] else "–"
        print(
            f"| {what}, {n:,} messages (HISTORY carried {r['messages']:,}, "
            f"{r['chars'] / KiB:,.0f} KiB{paged}) | {ms(r['median'])} | {floor} | "
            f"{ratio} | | |"
        )
    ratio = opened["by_size"][long]["median"] / opened["by_size"][short]["median"]
    note = " (--quick; the full run uses 5,000)" if long < 5_000 else ""
    print(
        f"| {what}: {long:,} messages ÷ {short} messages{note} | {ratio:.1f} × | | "
        f"| ≤ 2 × (about as fast) | {verdict(ratio <= 2)} |"
    )
    exchange = {n: opened["by_size"][n]["exchange"] for n in (short, long)}
    print(
        f"| for context: SEND_MESSAGE → final frame of a 200-byte reply, in the {long:,}- vs "
        f"the {short}-message conversation | {ms(exchange[long])} | {ms(exchange[short])} | "
        f"{exchange[long] / exchange[short]:.1f} | | |"
    )


def report_relay(relay) -> None:
    what = "relay, from `python bench/bench_hub.py --quick`"
    if isinstance(relay, str) or "error" in relay:
        not_measured(what, relay if isinstance(relay, str) else relay["error"])
        return
    cells = [c.strip() for c in relay["row"].strip().strip("|").split("|")]
    print(f"| {what}: {cells[0]} | " + " | ".join(cells[1:]) + " |")


def print_report(s: Settings, parts: dict) -> None:
    print(
        f"{os.cpu_count()} CPUs; Python {platform.python_version()}, Tornado "
        f"{tornado.version}; memory: medians of {s.memory_repeats} fresh servers per side; "
        f"round trips: {s.phases} × {s.phase_seconds:g} s per condition, interleaved; "
        f"HISTORY open: medians of {s.open_repeats}\n"
    )
    print("| measurement | streamchat | floor | ratio | goal | |")
    print("|---|---:|---:|---:|---|---|")
    report_memory(parts["memory"])
    report_round_trips(parts["round_trips"])
    report_open(parts["open"])
    report_relay(parts["relay"])
    print()
    memory = parts["memory"]
    if not isinstance(memory, str):
        for side, runs in memory["runs"].items():
            if not runs:
                continue
            print(
                f"all runs, memory {side}: before {', '.join(mib(r.before) for r in runs)}; "
                f"peak growth {', '.join(mib(r.peak - r.before) for r in runs)}; "
                f"frames {', '.join(str(r.frames) for r in runs)} ({runs[0].peak_source})"
            )
    rt = parts["round_trips"]
    if not isinstance(rt, str):
        for condition in ("quiet", "loaded", "raw"):
            r = rt[condition]
            print(
                f"all phases, round trips {condition}: {r['count']} samples, p99 per phase "
                f"{', '.join(ms(x) for x in r['p99_per_phase'])}"
            )
    opened = parts["open"]
    if not isinstance(opened, str):
        for n, r in opened["by_size"].items():
            print(
                f"all runs, HISTORY open {n:,}: {', '.join(ms(t) for t in r['all'])}; "
                f"filling it over the wire took {r['fill_seconds']:.1f} s"
            )


# -- main -------------------------------------------------------------------------------------


async def run(s: Settings, skip_relay: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="streamchat-bench-core-"))
    parts: dict = {}
    try:
        parts["memory"] = await attempt(
            "server memory, one huge reply", lambda: bench_memory(s, tmp)
        )
        server = raw = None
        try:
            server = await start_server(tmp / "shared")
            raw, raw_port = await start_floor(tmp)
            parts["round_trips"] = await attempt(
                "round trips under history traffic", lambda: bench_round_trips(s, server, raw_port)
            )
            await raw.stop()
            parts["open"] = await attempt("HISTORY open time", lambda: bench_open(s, server))
        except Exception as e:
            reason = f"{type(e).__name__}: {first_line(e)}"
            parts.setdefault("round_trips", reason)
            parts.setdefault("open", reason)
        finally:
            for child in (raw, server and server.child):
                if child is not None:
                    await child.stop()
        if skip_relay:
            parts["relay"] = "skipped (--skip-relay)"
        else:
            print("relay throughput (bench_hub.py --quick)...", file=sys.stderr)
            parts["relay"] = await asyncio.get_running_loop().run_in_executor(None, relay_row)
        print_report(s, parts)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (under 2 minutes)")
    parser.add_argument(
        "--skip-relay",
        action="store_true",
        help="do not run bench_hub.py --quick for the relay row",
    )
    parser.add_argument("--serve-raw", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--read-history",
        nargs=4,
        help=argparse.SUPPRESS,
        metavar=("URL", "TOKEN", "CONVERSATION", "SECONDS"),
    )
    args = parser.parse_args()
    if args.serve_raw:
        asyncio.run(serve_raw([(r"/push", RawPushHandler), (r"/echo", RawEchoHandler)]))
        return
    if args.read_history:
        url, token, conversation_id, seconds = args.read_history
        asyncio.run(read_history_loop(url, token, conversation_id, float(seconds)))
        return
    started = time.monotonic()
    asyncio.run(run(settings_from(args), args.skip_relay))
    print(f"\n(total {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
