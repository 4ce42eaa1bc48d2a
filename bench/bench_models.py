"""Benchmark of streamchat with model-like agents: the hub's overhead on an OpenAI-compatible
endpoint, and the cost of many replies at a model's pace beside jupyterlab-chat.

Run ``python bench/bench_models.py`` (about 8 minutes) or ``--quick`` (under 3). It prints one
markdown table, then the raw numbers behind it. Figures are medians of repeated runs (or
percentiles of all samples) interleaved with the floor or peer they are compared with, measured
in the same process run, so that noise on a busy machine hits both alike. Servers are real
``jupyter server`` subprocesses on 127.0.0.1 with Jupyter state in a temp dir; every wait has a
timeout and every loop a bound. Server CPU is utime + stime of the server process from
/proc/<pid>/stat; disk is write_bytes minus cancelled_write_bytes of /proc/<pid>/io (bytes
the process, all its threads, sent towards storage: page-cache pages it dirtied, a page
counted once until it is written back), Linux only.

A. Overhead on an OpenAI-compatible endpoint. The stand-in server of tests/openai_standin.py
   runs as its own process; it streams one reply of 5,000 tokens as fast as it can
   (``extra_body={"standin_tokens": 5000, "standin_rate": 0}``). Interleaved, run after run:

   - direct: the official ``openai`` client (``AsyncOpenAI``, one client kept open, streaming
     chat completions with usage) reads the reply in this process; tokens/s is 5,000 over the
     time from the request to the last content delta, TTFT the time to the first content delta;
   - through the hub: agent ``openai`` of a streamchat server configured with
     ``OpenAIAgent.base_url`` = the stand-in, ``model`` = ``standin`` and that ``extra_body``; a
     WebSocket client sends SEND_MESSAGE and reads the reply; tokens/s is 5,000 over the time
     from SEND_MESSAGE to the final frame, TTFT the time to the first frame with text. The
     reply's text is checked against the direct one.

   Reported: the tokens/s ratio, the median of (hub / direct) over the interleaved pairs
   (goal >= 0.9; the ratio of the two medians is shown beside it), and the TTFT the hub adds,
   the median of (hub TTFT - direct TTFT) over the same pairs (goal < 5 ms). For context,
   also the TTFT of agent ``echo`` (no model call), i.e. what the hub's own path takes.

   The pairs run twice: with all processes sharing the CPUs, then with the stand-in on a CPU
   of its own (the last one; the hub server and this process on the others), as a model server
   has hardware of its own. Streaming flat out, the stand-in keeps a core busy; sharing the
   cores with it, the SQLite writer thread that the hub wakes for the first frame's commit can
   wait milliseconds for a core while another sits idle, so the added TTFT is judged with the
   stand-in apart. Tokens/s is judged with the CPUs shared: on a 2-CPU machine the stand-in
   apart leaves the hub and its client one core between them, where the direct client has one
   to itself. Both placements are shown.

B. A model's pace: 100 replies at once, 200 tokens each at 50 tokens/s (4 s of streaming).

   - streamchat: 100 WebSocket clients each send SEND_MESSAGE "200 50" to the ``paced`` agent
     (bench/plugins, installed as an entry point through PYTHONPATH). It yields tokens
     `` <index>@<microseconds>`` stamped with the monotonic clock as it yields them, on a fixed
     50/s schedule. Every token is stored (the hub's batched SQLite appends) and reaches its
     client in a MESSAGE_CHUNK; the client's monotonic clock when it has parsed the frame,
     minus the stamp, is that token's latency.
   - jupyterlab-chat (the reference Jupyter chat stack: jupyterlab-chat on jupyter-collaboration,
     installed in a virtual environment of its own, by default bench/.peer-venv, made by this
     script on first use with pip). A small server extension (bench/peer) streams into 100 chat
     documents the way a jupyter-ai persona does: one ``YChat.add_message``, then one
     ``YChat.update_message(..., append=True)`` per token, tokens from the same generator at the
     same pace, inside the server process. 100 clients (bench/peer/peer_clients.py, the peer's
     Python with ``pycrdt``) are joined to the chats' rooms over the collaboration WebSocket
     (y-websocket sync protocol) as JupyterLab is; a token's latency is the client's monotonic
     clock once the update holding it is applied to its document, minus the stamp. The peer
     runs with its defaults (YStore in SQLite, the .chat file saved 1 s after a change, files
     polled every second) except ``document_cleanup_delay`` = 1 s, so that the rooms of one
     round are gone before the next round starts.

   Each round uses fresh conversations or chats; clients connect and the server settles for
   1 s before the window opens. The window runs from the first request to the last token
   seen, then on while the server still works: at least 2 s (the peer saves its files 1 s
   after the last change), until a second passes with no byte written and under 0.2 s of CPU,
   at most 30 s more. The clients stay connected meanwhile (a room left by its last client is
   cleaned up, its pending writes dropped). CPU and disk per token are the window's deltas
   over 20,000 tokens. The peer's YStore (one SQLite row per Y update, each in its own
   transaction, on one database file shared by all rooms) falls far behind; the table says
   how many of the updates it had stored when the window closed, so its disk figure is a
   floor. Latencies are percentiles over all tokens of all rounds of a side. Also shown: the
   time the 20,000 tokens took (4 s if nothing falls behind) and the growth of the files each
   server writes.

   With ``tests/openai_standin.py`` and the ``openai`` agent present, one more streamchat row
   per round: the same 100 x 200 tokens at 50/s from the stand-in through agent ``openai``
   (a named agent ``standin-paced``), so the server's CPU then includes the OpenAI client
   reading 100 server-sent-event streams. The stand-in's tokens carry no timestamps, so no
   latency for that row.

A part that cannot run (the agent missing, the peer not installable) is reported in the table
as not measured, with the reason; the other parts still run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import tornado

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PLUGINS = HERE / "plugins"  # the ``paced`` agent and its token generator
PEER_DIR = HERE / "peer"  # the jupyterlab-chat driver extension and clients
STANDIN = REPO / "tests" / "openai_standin.py"
sys.path.insert(0, str(PLUGINS))
from paced_tokens import TOKEN, now_us  # noqa: E402

from harness.client import connect, read_reply, send_message  # noqa: E402
from harness.processes import Children, process_cpu, start_announcing  # noqa: E402
from harness.report import attempt, first_line, ms, not_measured, verdict  # noqa: E402
from harness.servers import (
    HOST,
    OTHER_EXTENSIONS,
    Jupyter,
    agent_ids,
    agent_skipped_reason,
    api,
    free_port,
    quiet_config,
    start_jupyter,
)  # noqa: E402
from harness.stats import median, percentile  # noqa: E402

RUN_TIMEOUT = 120.0  # seconds for any one timed run; only turns a hang into an error
PEER_TIMEOUT = 240.0  # the peer takes a minute where 4 s are due, longer on a busy machine
PEER_PACKAGES = ("jupyterlab-chat", "jupyter-collaboration")
PEER_INSTALL_TIMEOUT = 900.0

A_TOKENS = 5_000
B_CONVERSATIONS = 100
B_TOKENS = 200
B_RATE = 50.0
SETTLE_BEFORE = 1.0  # seconds between the clients being ready and the window opening
SETTLE_AFTER = 2.0  # seconds the window stays open after the last token
KiB = 1024


@dataclass
class Settings:
    a_repeats: int
    b_rounds: int
    parts: str = "AB"
    peer_venv: Path = HERE / ".peer-venv"


def settings_from(args) -> Settings:
    if args.quick:
        return Settings(a_repeats=5, b_rounds=1)
    return Settings(a_repeats=15, b_rounds=3)


# -- processes --------------------------------------------------------------------------------


def process_write_bytes(pid: int) -> int:
    """Bytes the process (all its threads) has sent to storage: /proc/<pid>/io write_bytes
    minus cancelled_write_bytes (pages dirtied, then truncated or deleted before write-back)."""
    with open(f"/proc/{pid}/io") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return int(fields["write_bytes"]) - int(fields["cancelled_write_bytes"])


def tree_bytes(*paths: Path) -> int:
    """Total size of the files under ``paths`` (a file or a directory each)."""
    total = 0
    for path in paths:
        if path.is_file():
            total += path.stat().st_size
        elif path.is_dir():
            for child in path.rglob("*"):
                try:
                    if child.is_file():
                        total += child.stat().st_size
                except OSError:
                    pass  # deleted meanwhile (a -journal, a temp file)
    return total


def ystore_rows(db_path: Path) -> int:
    """Rows in the peer's YStore (one per stored Y update), read-only."""
    if not db_path.exists():
        return 0
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT count(*) FROM yupdates").fetchone()[0]
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


@dataclass
class Meter:
    """CPU seconds, disk bytes, file bytes (and the peer's YStore rows) of a server."""

    pid: int
    files: tuple
    ystore: Path | None = None

    def read(self, rows: bool = True) -> tuple:
        """(CPU s, disk bytes, file bytes, YStore rows, when); the rows (a read of the peer's
        database, which could delay its writers) only when asked."""
        rows = ystore_rows(self.ystore) if self.ystore and rows else 0
        return (
            process_cpu(self.pid),
            process_write_bytes(self.pid),
            tree_bytes(*self.files),
            rows,
            time.monotonic(),
        )

    async def settled(self, minimum: float = SETTLE_AFTER, limit: float = 30.0) -> tuple:
        """A reading once the server is done with the run: at least ``minimum`` seconds from
        now, then until one second passes with no byte written and under 0.2 s of CPU (so that
        writes queued behind a backlog are counted; the peer polls its open files meanwhile),
        at most ``limit`` seconds more."""
        await asyncio.sleep(minimum)
        last = self.read(rows=False)
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            now = self.read(rows=False)
            if now[0] - last[0] < 0.2 and now[1] == last[1]:
                break
            last = now
        return self.read()

    @staticmethod
    def delta(before: tuple, after: tuple) -> dict:
        return dict(
            cpu=after[0] - before[0],
            disk=after[1] - before[1],
            files=after[2] - before[2],
            stored=after[3] - before[3],
            closed_at=after[4],
        )


# -- the OpenAI stand-in ------------------------------------------------------------------------


async def start_standin(base: Path) -> tuple:
    """tests/openai_standin.py as a process of its own; (child, base url ending in /v1)."""
    port = free_port()
    child, _ = await start_announcing(
        "OpenAI stand-in", [sys.executable, str(STANDIN), "--port", str(port)], base / "standin.log"
    )
    return child, f"http://{HOST}:{port}/v1"


# -- streamchat servers -----------------------------------------------------------------------


def streamchat_config(standin_url: str | None) -> dict:
    config = quiet_config()
    if standin_url:
        config["OpenAIAgent"] = {
            "base_url": standin_url,
            "model": "standin",
            "api_key": "bench",
            "extra_body": {"standin_tokens": A_TOKENS, "standin_rate": 0},
        }
        config["StreamChatApp"] = {
            "agents": {
                "standin-paced": {
                    "class": "openai",
                    "base_url": standin_url,
                    "model": "standin",
                    "api_key": "bench",
                    "extra_body": {"standin_tokens": B_TOKENS, "standin_rate": B_RATE},
                }
            }
        }
    return config


async def start_streamchat(base: Path, standin_url: str | None) -> Jupyter:
    return await start_jupyter(
        base,
        [f"--SQLiteStore.path={base / 'chat.db'}", "--EchoAgent.delay=0"],
        config=streamchat_config(standin_url),
        python_path=[PLUGINS],
        name="streamchat server",
    )


def chat(server: Jupyter):
    """A WebSocket to the server's chat."""
    return connect(server.ws_url, server.token)


async def read_stamped(ws) -> tuple:
    """A reply, and the latency (µs) of each of its stamped tokens: the clock once its frame
    is parsed, minus the stamp."""
    latencies: list = []

    def on_text(chunk: str) -> None:
        at = now_us()
        latencies.extend(at - int(m.group(2)) for m in TOKEN.finditer(chunk))

    return await read_reply(ws, on_text=on_text), latencies


# -- A: overhead on an OpenAI-compatible endpoint --------------------------------------------


A_PROMPT = "alpha beta gamma delta"


async def direct_run(client) -> dict:
    started = time.perf_counter()
    first, parts = None, []
    stream = await client.chat.completions.create(
        model="standin",
        messages=[{"role": "user", "content": A_PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"standin_tokens": A_TOKENS, "standin_rate": 0},
    )
    last = started
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            last = time.perf_counter()
            if first is None:
                first = last
            parts.append(chunk.choices[0].delta.content)
    if len(parts) != A_TOKENS:
        raise RuntimeError(f"the stand-in sent {len(parts)} content deltas, not {A_TOKENS}")
    return dict(rate=A_TOKENS / (last - started), ttft=first - started, text="".join(parts))


async def hub_run(server: Jupyter, agent: str = "openai") -> dict:
    ws = await chat(server)
    try:
        reader = asyncio.ensure_future(read_reply(ws))
        started = time.perf_counter()
        await send_message(ws, agent, A_PROMPT)
        reply = await asyncio.wait_for(reader, RUN_TIMEOUT)
    finally:
        ws.close()
    if reply.status != "complete":
        raise RuntimeError(f"the reply ended {reply.status!r}: {reply.error}")
    return dict(
        rate=A_TOKENS / (reply.done_at - started),
        ttft=reply.first_text_at - started,
        text=reply.text,
        frames=reply.frames,
    )


def set_cpus(pid: int, cpus: set) -> None:
    """CPU affinity of every thread of ``pid`` (threads started later inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except (ProcessLookupError, FileNotFoundError):
            pass  # the thread ended meanwhile


@contextlib.contextmanager
def model_on_own_cpu(model_pid: int, others: list):
    """Give the stand-in a CPU of its own for part A, as a model server has hardware of its
    own. Streaming flat out it keeps a core busy; sharing the cores with it, a thread the hub
    wakes (the SQLite writer, for the first frame's commit) can wait milliseconds for a core
    while another sits idle, which measures the kernel's scheduler rather than the hub.
    Yields a description for the report."""
    everything = set(range(os.cpu_count() or 1))
    if len(everything) < 2 or not hasattr(os, "sched_setaffinity"):
        yield "all processes share the CPUs"
        return
    own = {max(everything)}
    try:
        set_cpus(model_pid, own)
        for pid in others:
            set_cpus(pid, everything - own)
        yield (
            f"the stand-in has CPU {max(own)} to itself (a model server runs on hardware of "
            f"its own); the hub, its client and the direct client share the other "
            f"{len(everything) - 1}"
        )
    finally:
        for pid in [model_pid, *others]:
            try:
                set_cpus(pid, everything)
            except OSError:
                pass


async def bench_overhead(s: Settings, server: Jupyter, standin_url: str) -> dict:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=standin_url, api_key="bench", max_retries=0, timeout=60)
    try:
        direct = [await direct_run(client)]  # warm-up, not counted
        hub = [await hub_run(server)]
        if hub[0]["text"] != direct[0]["text"]:
            raise RuntimeError(
                f"the hub's reply ({len(hub[0]['text'])} characters) is not the "
                f"stand-in's ({len(direct[0]['text'])})"
            )
        await hub_run(server, "echo")
        direct, hub, echo = [], [], []
        for i in range(s.a_repeats):
            # Interleaved, and the order alternates so that neither always runs second.
            order = ["direct", "hub"]
            for name in order if i % 2 == 0 else order[::-1]:
                if name == "direct":
                    direct.append(await direct_run(client))
                else:
                    hub.append(await hub_run(server))
            echo.append(await hub_run(server, "echo"))
    finally:
        await client.close()
    return dict(
        direct_rate=median(r["rate"] for r in direct),
        hub_rate=median(r["rate"] for r in hub),
        direct_ttft=median(r["ttft"] for r in direct),
        hub_ttft=median(r["ttft"] for r in hub),
        added_ttft=median(h["ttft"] - d["ttft"] for h, d in zip(hub, direct)),
        # Like the TTFT, the ratio is taken pair by pair (each hub run beside the direct run
        # next to it), so that the machine's speed drifting during the run cancels out.
        paired_ratio=median(h["rate"] / d["rate"] for h, d in zip(hub, direct)),
        hub_frames=median(r["frames"] for r in hub),
        echo_ttft=median(r["ttft"] for r in echo),
        direct_all=[r["rate"] for r in direct],
        hub_all=[r["rate"] for r in hub],
        added_all=[h["ttft"] - d["ttft"] for h, d in zip(hub, direct)],
    )


# -- B: 100 replies at a model's pace ---------------------------------------------------------


def paced_text() -> str:
    return f"{B_TOKENS} {B_RATE:g}"


async def ours_round(server: Jupyter, agent: str, stamped: bool) -> dict:
    """100 clients, one reply each from ``agent``; the server's CPU and disk over the window."""
    meter = Meter(
        server.child.pid,
        (server.base / "chat.db", server.base / "chat.db-wal", server.base / "chat.db-shm"),
    )
    sockets = await asyncio.gather(*(chat(server) for _ in range(B_CONVERSATIONS)))
    try:
        read = read_stamped if stamped else read_reply
        readers = [asyncio.ensure_future(read(ws)) for ws in sockets]
        await asyncio.sleep(SETTLE_BEFORE)
        before = meter.read()
        started, client_cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(send_message(ws, agent, paced_text()) for ws in sockets))
        results = await asyncio.wait_for(asyncio.gather(*readers), RUN_TIMEOUT)
        replies = [r[0] for r in results] if stamped else results
        latencies = [r[1] for r in results] if stamped else []
        seconds = max(r.done_at for r in replies) - started
        client_cpu = time.process_time() - client_cpu
        last_token = time.monotonic()
        window = Meter.delta(before, await meter.settled())
        window["tail"] = window.pop("closed_at") - last_token
    finally:
        for ws in sockets:
            ws.close()
    bad = [r for r in replies if r.status != "complete"]
    if bad:
        raise RuntimeError(f"{len(bad)} replies ended {bad[0].status!r}: {bad[0].error}")
    if stamped:
        counts = {len(each) for each in latencies}
        if counts != {B_TOKENS}:
            raise RuntimeError(f"tokens per reply: {sorted(counts)}, not {B_TOKENS}")
    return dict(
        window,
        seconds=seconds,
        frames=sum(r.frames for r in replies),
        latencies=[x for each in latencies for x in each],
        client_cpu=client_cpu,
    )


def peer_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_peer_venv(venv: Path) -> None:
    """The peer's own virtual environment, made with venv + pip on first use."""
    python = peer_python(venv)
    check = [str(python), "-c", "import jupyterlab_chat, jupyter_server_ydoc, pycrdt"]
    if python.exists() and subprocess.run(check, capture_output=True, timeout=120).returncode == 0:
        return
    print(f"  installing {' and '.join(PEER_PACKAGES)} into {venv} (once)...", file=sys.stderr)
    subprocess.run(
        [sys.executable, "-m", "venv", str(venv)], check=True, timeout=120, capture_output=True
    )
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES],
        capture_output=True,
        text=True,
        timeout=PEER_INSTALL_TIMEOUT,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"pip install {' '.join(PEER_PACKAGES)} failed: {last}")
    subprocess.run(check, check=True, timeout=120, capture_output=True)


def peer_versions(venv: Path) -> str:
    code = (
        "from importlib.metadata import version as v; print(', '.join(f'{n} {v(n)}' for n in "
        "('jupyterlab-chat', 'jupyter-collaboration', 'jupyter-server-ydoc', "
        "'pycrdt-websocket', 'pycrdt')))"
    )
    done = subprocess.run(
        [str(peer_python(venv)), "-c", code], capture_output=True, text=True, timeout=60
    )
    return done.stdout.strip()


async def start_peer(base: Path, venv: Path) -> Jupyter:
    # The collaboration extensions stay as the peer's install leaves them, but for those named.
    extensions = {
        name: False
        for name in OTHER_EXTENSIONS
        if name not in ("jupyter_server_ydoc", "jupyter_collaboration")
    }
    extensions.update(
        {
            "streamchat_bench_peer": True,
            "jupyterlab_chat": True,
            "jupyter_server_ydoc": True,
            "jupyter_server_fileid": True,
        }
    )
    config = {"ServerApp": {"jpserver_extensions": extensions}}
    return await start_jupyter(
        base,
        [
            f"--SQLiteYStore.db_path={base / 'ystore.db'}",
            "--YDocExtension.document_cleanup_delay=1",
        ],
        config=config,
        python=str(peer_python(venv)),
        python_path=[PEER_DIR, PLUGINS],
        ready="bench-peer/stream",
        name="jupyterlab-chat server",
    )


async def peer_round(
    server: Jupyter, venv: Path, label: str, chats: int = B_CONVERSATIONS, tokens: int = B_TOKENS
) -> dict:
    root = server.base / "root"
    paths = [f"{label}-chat{i:03}.chat" for i in range(chats)]
    for path in paths:
        (root / path).write_text("")  # what "New chat" creates: an empty file
    meter = Meter(
        server.child.pid,
        (
            root,
            server.base / "ystore.db",
            server.base / "ystore.db-wal",
            server.base / "ystore.db-journal",
        ),
        ystore=server.base / "ystore.db",
    )
    proc = await asyncio.create_subprocess_exec(
        str(peer_python(venv)),
        str(PEER_DIR / "peer_clients.py"),
        str(PLUGINS),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=64 * 1024 * 1024,
    )  # one JSON line of latencies
    try:
        proc.stdin.write(
            json.dumps(
                {
                    "base": server.base_url,
                    "token": server.token,
                    "paths": paths,
                    "tokens": tokens,
                    "timeout": PEER_TIMEOUT,
                }
            ).encode()
            + b"\n"
        )
        await proc.stdin.drain()
        line = await asyncio.wait_for(proc.stdout.readline(), RUN_TIMEOUT)
        if line.strip() != b"READY":
            error = (await proc.stderr.read()).decode(errors="replace").strip().splitlines()
            raise RuntimeError(
                f"the peer's clients did not connect: {line!r} {error[-1] if error else ''}"
            )
        await asyncio.sleep(SETTLE_BEFORE)
        log_offset = server.child.log_path.stat().st_size
        before = meter.read()
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        await api(
            server, "POST", "bench-peer/stream", {"paths": paths, "tokens": tokens, "rate": B_RATE}
        )
        line = await asyncio.wait_for(proc.stdout.readline(), PEER_TIMEOUT + 30)
        if not line:
            error = (await proc.stderr.read()).decode(errors="replace").strip().splitlines()
            raise RuntimeError(f"the peer's clients failed: {error[-1] if error else '?'}")
        result = json.loads(line)
        last_token = time.monotonic()
        window = Meter.delta(before, await meter.settled())
        window["tail"] = window.pop("closed_at") - last_token
        with open(server.child.log_path, "rb") as log:
            log.seek(log_offset)
            window["locked"] = log.read().count(b"database is locked")
        proc.stdin.write(b"close\n")  # the clients leave the rooms
        await proc.stdin.drain()
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    status = await api(server, "GET", "bench-peer/stream")
    if status["errors"]:
        raise RuntimeError(f"the driver failed: {status['errors'][-1].strip().splitlines()[-1]}")
    if result["error"]:
        raise RuntimeError(result["error"])
    if result["tokens"] != chats * tokens:
        raise RuntimeError(f"the clients saw {result['tokens']} tokens, not {chats * tokens}")
    await asyncio.sleep(3.0)  # the rooms are cleaned up (1 s after the clients left)
    return dict(
        window,
        seconds=result["seconds"],
        frames=result["updates"],
        update_bytes=result["update_bytes"],
        latencies=result["latencies"],
        client_cpu=result["client_cpu"],
    )


def summarize(rounds: list) -> dict:
    tokens = B_CONVERSATIONS * B_TOKENS
    latencies = [x for r in rounds for x in r["latencies"]]
    return dict(
        rounds=len(rounds),
        cpu=median(r["cpu"] for r in rounds) / tokens,
        disk=median(r["disk"] for r in rounds) / tokens,
        files=median(r["files"] for r in rounds) / tokens,
        seconds=median(r["seconds"] for r in rounds),
        frames=median(r["frames"] for r in rounds),
        p50=percentile(latencies, 50) / 1e6 if latencies else None,
        p99=percentile(latencies, 99) / 1e6 if latencies else None,
        worst=max(latencies) / 1e6 if latencies else None,
        cpu_all=[r["cpu"] / tokens for r in rounds],
        disk_all=[r["disk"] / tokens for r in rounds],
        seconds_all=[r["seconds"] for r in rounds],
        update_bytes=median(r.get("update_bytes", 0) for r in rounds),
        stored=median(r["stored"] for r in rounds),
        tail=median(r["tail"] for r in rounds),
        stored_all=[r["stored"] for r in rounds],
        tail_all=[r["tail"] for r in rounds],
        locked=sum(r.get("locked", 0) for r in rounds),
        client_cpu_all=[r["client_cpu"] for r in rounds],
    )


async def bench_pace(s: Settings, ours: Jupyter, peer, standin_agent: bool) -> dict:
    """Rounds of (streamchat paced, [streamchat via the stand-in], jupyterlab-chat),
    interleaved. ``peer`` is a Jupyter, or the reason it is missing."""
    runs: dict = {"ours": [], "standin": [], "peer": []}
    errors: dict = {}
    if isinstance(peer, str):
        errors["peer"] = peer
    if not standin_agent:
        errors["standin"] = "no stand-in agent"
    # Warm-up, not counted: first connections, SQLite pages, lazy imports, room machinery
    # (and the peer's YStore database is created by one room, not by a hundred at once).
    await ours_round(ours, "paced", True)
    if "peer" not in errors:
        try:
            await peer_round(peer, s.peer_venv, "warmup", chats=1, tokens=20)
        except Exception as e:
            print(f"  peer warm-up failed: {e!r}", file=sys.stderr)
            errors["peer"] = f"{type(e).__name__}: {first_line(e)}"
    for r in range(s.b_rounds):
        print(f"  round {r + 1} of {s.b_rounds}", file=sys.stderr)
        sides = [("ours", lambda: ours_round(ours, "paced", True))]
        if "standin" not in errors:
            sides.append(("standin", lambda: ours_round(ours, "standin-paced", False)))
        if "peer" not in errors:
            sides.append(("peer", lambda r=r: peer_round(peer, s.peer_venv, f"r{r}")))
        if r % 2:
            sides.reverse()
        for name, run in sides:
            if name in errors:
                continue
            try:
                runs[name].append(await run())
            except Exception as e:
                print(f"  {name} failed: {e!r}", file=sys.stderr)
                errors[name] = f"{type(e).__name__}: {first_line(e)}"
    return dict(errors=errors, **{name: summarize(rs) for name, rs in runs.items() if rs})


# -- report -----------------------------------------------------------------------------------


def report_overhead(shared, own) -> None:
    """``shared``: all processes on all CPUs; ``own``: the stand-in on a CPU of its own. The
    goal of each figure is judged where it measures the hub (see the module's docstring)."""
    what = f"A. one reply of {A_TOKENS:,} tokens from the stand-in at full speed"
    rows = [
        (shared, "CPUs shared", "rate"),
        (own, "stand-in on its own CPU", "ttft"),
        (shared, "CPUs shared", "ttft"),
        (own, "stand-in on its own CPU", "rate"),
    ]
    for i, (a, where, figure) in enumerate(rows):
        goal = i < 2  # the first two rows carry the goals, the others are for context
        if isinstance(a, str):
            if goal:
                not_measured(f"{what} ({where})", a)
            continue
        if figure == "rate":
            ratio = a["paired_ratio"]
            print(
                f"| {what}, {where}: tokens/s seen by the client | {a['hub_rate']:,.0f} "
                f"(through the hub, {a['hub_frames']:,.0f} frames) | {a['direct_rate']:,.0f} "
                f"(`openai` client, direct) | {ratio:.2f} (median of pairs; of the medians: "
                f"{a['hub_rate'] / a['direct_rate']:.2f}) | "
                + (f"≥ 0.9 | {verdict(ratio >= 0.9)} |" if goal else "(context) | |")
            )
        else:
            print(
                f"| {what}, {where}: time to first token | {ms(a['hub_ttft'])} | "
                f"{ms(a['direct_ttft'])} | +{ms(a['added_ttft'])} (median of pairs) | "
                + (
                    f"added < 5 ms | {verdict(a['added_ttft'] < 0.005)} |"
                    if goal
                    else "(context) | |"
                )
            )
    for a in (shared, own):
        if not isinstance(a, str):
            print(
                f"| for context: time to first token of agent `echo` (no model call: the "
                f"hub's own path, SEND_MESSAGE to the first text frame) | "
                f"{ms(a['echo_ttft'])} | | | | |"
            )
            break


def report_pace(b) -> None:
    what = f"B. {B_CONVERSATIONS} replies × {B_TOKENS} tokens at {B_RATE:g} tokens/s"
    if isinstance(b, str):
        not_measured(what, b)
        return
    errors = b["errors"]
    ours, peer, standin = b.get("ours"), b.get("peer"), b.get("standin")
    if ours is None:
        not_measured(f"{what} (streamchat)", errors.get("ours", "no round completed"))
        return
    peer_cell = (
        (lambda key, fmt: fmt(peer[key]))
        if peer
        else (lambda key, fmt: f"not measured: {errors.get('peer', 'no round completed')}")
    )
    us = lambda x: f"{x * 1e6:.1f} µs"  # noqa: E731
    cpu_ratio = peer["cpu"] / ours["cpu"] if peer else None
    ok_cpu = ours["cpu"] <= 0.0003 and (cpu_ratio is None or cpu_ratio >= 4)
    print(
        f"| {what}: server CPU per token | {us(ours['cpu'])} | {peer_cell('cpu', us)} | "
        f"{f'{cpu_ratio:.1f} × (peer/ours)' if cpu_ratio else '–'} | ≤ 300 µs, and ≥ 4 × "
        f"less than the peer | {verdict(ok_cpu) if peer else verdict(ours['cpu'] <= 0.0003)}"
        f"{'' if peer else ' (ours only)'} |"
    )
    size = lambda x: f"{x / KiB:.2f} KiB"  # noqa: E731
    disk_ratio = f"{peer['disk'] / ours['disk']:.2f} (peer/ours)" if peer and ours["disk"] else "–"
    peer_disk = peer_cell("disk", size)
    if peer:
        peer_disk += (
            f" (its YStore held {peer['stored']:,.0f} of the {peer['frames']:,.0f} "
            f"updates when the window closed, {peer['tail']:.0f} s after the last "
            f'token; its log: {peer["locked"] / peer["rounds"]:,.0f} × "database is '
            f'locked" per round)'
        )
    print(
        f"| {what}: disk bytes written per token (/proc write_bytes) | {size(ours['disk'])} | "
        f"{peer_disk} | {disk_ratio} | ≤ 2 KiB | {verdict(ours['disk'] <= 2 * KiB)} |"
    )
    print(
        f"| {what}: growth of the files written, per token | {size(ours['files'])} "
        f"(chat.db + WAL) | {peer_cell('files', size)} (.chat files + YStore) | | | |"
    )
    lat = lambda r: f"{ms(r['p50'])} / {ms(r['p99'])}"  # noqa: E731
    if peer:
        peer_lat, lat_ratio = lat(peer), f"{peer['p99'] / ours['p99']:.1f} × (p99, peer/ours)"
        lat_verdict = f"{verdict(ours['p99'] < 0.1)} (peer: {verdict(peer['p99'] < 0.1)})"
    else:
        peer_lat, lat_ratio = peer_cell("p50", str), "–"
        lat_verdict = verdict(ours["p99"] < 0.1)
    print(
        f"| {what}: token-to-client latency p50 / p99 | {lat(ours)} | {peer_lat} | "
        f"{lat_ratio} | p99 < 100 ms | {lat_verdict} |"
    )
    secs = lambda x: f"{x:.2f} s"  # noqa: E731
    peer_time = peer_cell("seconds", secs)
    if peer:
        peer_time += (
            f" ({peer['frames']:,.0f} Y updates, "
            f"{peer['update_bytes'] / 2**20:.1f} MiB to the clients)"
        )
    print(
        f"| {what}: time for all tokens to arrive (4 s if nobody falls behind) | "
        f"{secs(ours['seconds'])} ({ours['frames']:,.0f} frames) | {peer_time} | | | |"
    )
    what_s = f"{what}, from the stand-in through agent `openai`"
    if standin:
        print(
            f"| {what_s}: server CPU / disk per token | {us(standin['cpu'])} / "
            f"{size(standin['disk'])} | | | ≤ 300 µs / ≤ 2 KiB | "
            f"{verdict(standin['cpu'] <= 0.0003 and standin['disk'] <= 2 * KiB)} |"
        )
        print(
            f"| {what_s}: time for all tokens to arrive | {secs(standin['seconds'])} "
            f"({standin['frames']:,.0f} frames) | | | | |"
        )
    else:
        not_measured(what_s, errors.get("standin", "no round completed"))


def print_report(s: Settings, parts: dict) -> None:
    print(
        f"{os.cpu_count()} CPUs; Python {platform.python_version()}, Tornado "
        f"{tornado.version}, openai {parts.get('openai_version', '?')}; A: medians of "
        f"{s.a_repeats} interleaved pairs; B: medians of {s.b_rounds} interleaved rounds, "
        f"latency percentiles over all their tokens\n"
    )
    if parts.get("placement"):
        print(f"A: {parts['placement']}\n")
    if parts.get("peer_versions"):
        print(f"peer: {parts['peer_versions']}\n")
    print("| measurement | streamchat | floor / peer | ratio | goal | |")
    print("|---|---:|---:|---:|---|---|")
    report_overhead(parts["overhead"], parts.get("overhead_own_cpu", "not run"))
    report_pace(parts["pace"])
    print()
    for key, where in (
        ("overhead", "CPUs shared"),
        ("overhead_own_cpu", "stand-in on its own CPU"),
    ):
        a = parts.get(key)
        if isinstance(a, dict):
            rates = lambda xs: ", ".join(f"{x:,.0f}" for x in xs)  # noqa: E731
            print(
                f"all runs, A ({where}) tokens/s: hub {rates(a['hub_all'])}; "
                f"direct {rates(a['direct_all'])}"
            )
            print(f"all pairs, A ({where}) added TTFT: {', '.join(ms(x) for x in a['added_all'])}")
    b = parts["pace"]
    if not isinstance(b, str):
        for name in ("ours", "standin", "peer"):
            r = b.get(name)
            if r:
                print(
                    f"all rounds, B {name}: CPU/token "
                    f"{', '.join(f'{x * 1e6:.1f} µs' for x in r['cpu_all'])}; disk/token "
                    f"{', '.join(f'{x:,.0f} B' for x in r['disk_all'])}; seconds "
                    f"{', '.join(f'{x:.2f}' for x in r['seconds_all'])}; window closed "
                    f"{', '.join(f'{x:.1f}' for x in r['tail_all'])} s after the last token; "
                    f"clients' CPU "
                    f"{', '.join(f'{x:.2f} s' for x in r['client_cpu_all'])}"
                    + (f"; worst latency {ms(r['worst'])}" if r["worst"] is not None else "")
                )
        for name, error in b["errors"].items():
            print(f"B {name} not measured: {error}")


# -- main -------------------------------------------------------------------------------------


async def run(s: Settings) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="streamchat-bench-models-"))
    parts: dict = {}
    try:
        async with Children() as children:
            await measure(s, tmp, parts, children)
        print_report(s, parts)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def measure(s: Settings, tmp: Path, parts: dict, children: Children) -> None:
    try:
        import openai

        parts["openai_version"] = openai.__version__
    except ImportError:
        pass
    standin_url = None
    if not STANDIN.exists():
        parts["overhead"] = f"{STANDIN.relative_to(REPO)} is missing"
    else:
        try:
            standin, standin_url = await start_standin(tmp)
            children.append(standin)
        except Exception as e:
            parts["overhead"] = f"the stand-in did not start: {first_line(e)}"
    print("starting the streamchat server...", file=sys.stderr)
    ours = await start_streamchat(tmp / "streamchat", standin_url)
    children.append(ours.child)
    agents = await agent_ids(ours)
    if "paced" not in agents:
        raise RuntimeError(
            f"the server lacks the paced bench agent: {agent_skipped_reason(ours, 'paced')}"
        )
    if "A" not in s.parts:
        parts["overhead"] = "not run (--part)"
    elif "overhead" not in parts:
        if "openai" not in agents:
            parts["overhead"] = (
                f"the server has no agent `openai` ({agent_skipped_reason(ours, 'openai')})"
            )
        else:
            parts["overhead"] = await attempt(
                "A. overhead on the OpenAI stand-in, CPUs shared",
                lambda: bench_overhead(s, ours, standin_url),
            )
            with model_on_own_cpu(standin.pid, [ours.child.pid, os.getpid()]) as placement:
                parts["overhead_own_cpu"] = await attempt(
                    "A. overhead on the OpenAI stand-in, the stand-in on a CPU of its own",
                    lambda: bench_overhead(s, ours, standin_url),
                )
            parts["placement"] = placement
    standin_agent = standin_url is not None and "standin-paced" in agents
    if "B" not in s.parts:
        parts["pace"] = "not run (--part)"
        return

    print("setting up jupyterlab-chat...", file=sys.stderr)
    try:
        await asyncio.get_running_loop().run_in_executor(None, ensure_peer_venv, s.peer_venv)
        parts["peer_versions"] = peer_versions(s.peer_venv)
        peer = await start_peer(tmp / "peer", s.peer_venv)
        children.append(peer.child)
    except Exception as e:
        print(f"jupyterlab-chat failed: {e!r}", file=sys.stderr)
        peer = f"{type(e).__name__}: {first_line(e)}"
    parts["pace"] = await attempt(
        f"B. {B_CONVERSATIONS} replies at {B_RATE:g} tokens/s",
        lambda: bench_pace(s, ours, peer, standin_agent),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--quick", action="store_true", help="fewer runs (under 3 minutes)")
    parser.add_argument(
        "--peer-venv",
        type=Path,
        default=HERE / ".peer-venv",
        help="virtual environment for jupyterlab-chat (made with pip if "
        "missing; default: bench/.peer-venv)",
    )
    parser.add_argument(
        "--part",
        choices=("A", "B", "AB"),
        default="AB",
        help="A: one fast reply beside the endpoint read directly; B: 100 "
        "replies at a model's pace beside jupyterlab-chat (default: both)",
    )
    args = parser.parse_args()
    s = settings_from(args)
    s.parts = args.part
    s.peer_venv = args.peer_venv.resolve()
    started = time.monotonic()
    asyncio.run(run(s))
    print(f"\n(total {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
