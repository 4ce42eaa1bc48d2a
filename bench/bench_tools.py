"""Benchmark of tool calls: replay, rendering, approvals, and the acp agent's throughput.

Run ``python bench/bench_tools.py`` (2 minutes on a quiet machine, 3 or 4 on a busy one) or
``--quick`` (about one; ``--parts 14`` runs some of the four parts). It needs the built
bundle (``cd js && npm run build``), Playwright's Python package and a Chromium (Debian's
``/usr/bin/chromium`` by default, ``--chromium`` to point elsewhere). It prints one markdown
table, keeps it in bench/results/tools.md, and then notes on every run. Each figure is a
median of runs interleaved with its floor, so that noise on a busy machine hits both alike.

The replies come from two agents of bench/plugins (tool_steps.py): ``toolsteps`` recites a
generated markdown document (bench/harness/documents.py) of exactly 20,000 tokens with 200
tool calls spread evenly through it, each one pending, running, then completed with a short
result; ``approvals`` asks for one approval after another and writes down when each answer
reached it (``time.time()`` as ``await request.approve(call)`` returns).

1. RESUME from seq 0 of that finished reply, as bench_hub.py measures RESUME: a ``Hub`` over a
   fresh SQLite file runs in this process behind a Tornado WebSocket handler with the
   extension's own transport (``ChatWebSocketHandler.write_frames``). The reply is stored by
   that hub from the ``toolsteps`` agent at a fast model's pace (4 tokens, then 2 ms; a batch
   window of 2 ms, so the frames hold a few tokens each as they do from a model at 16 ms, and
   the states of a call come a step apart, as a tool takes a while). Timed: from sending
   RESUME to holding the final frame, over a WebSocket whose client reads the bytes off the
   socket and looks for the final frame's marker (the frames are split and checked after the
   timing, and a separate run checks every frame against the store; Tornado's client, which
   spends tens of microseconds of Python on each frame, is timed for the notes), and the
   server's share (the handler's receiving RESUME to ``hub.handle`` returning). Floor: the raw
   ``sqlite3`` SELECT of the reply's frames (seq, chunk, reasoning, tool_calls) on an open
   connection to the same file. Beside it, a second floor: the very frames RESUME sent,
   pushed from memory by a bare handler with the same transport to the same client (what any
   replay over a WebSocket costs this client). The same for the document without tool calls,
   for reference.

2. The view's longest main-thread task, in Chromium: a page served by a real ``jupyter
   server`` subprocess mounts the project's ``ChatView`` (the widget's view, as
   bench_render.py does). (a) Playwright types "20000 200" and clicks Send; the agent streams
   flat out (one token per turn of the event loop; the hub's 16 ms window makes the frames,
   each tool call splits one). The window runs from the click on Send to two animation frames
   after the reply is ``complete``, every block rendered and every card ``completed``. (b) The
   same view switches (``setConversation``, over its open socket, as the side panel does) to
   the conversation holding that reply: history load and render, to two frames after it is
   shown whole. The main thread's tasks come from a Chrome trace (bench/harness/traces.py:
   the top-level tasks of the ``CrRendererMain`` thread that logged the window's
   ``console.timeStamp`` marks); the page's own ``PerformanceObserver`` of ``longtask``
   entries (tasks over 50 ms) is a cross-check. Floor: the same for the document without
   tool calls. Goal: under 50 ms, on the clock and in the thread's CPU time (a shared
   machine's other processes stretch the first).

3. Approval round trip: from the click on ``[data-testid=streamchat-approve]`` (the event's
   timestamp, on the page's epoch clock ``performance.timeOrigin + event.timeStamp``) to the
   agent's ``time.time()`` as its ``await request.approve(call)`` returns, in the server
   process. Floor, in turn with each approval: a page served by a bare Tornado server in a
   process of its own sends one WebSocket frame on a click on its button, and the server
   notes the frame's arrival by ``time.time()``. The two clocks are one (the machine's wall
   clock); the page's offset to Python's is measured and shown. Goal: under 50 ms.

4. The ``acp`` agent's throughput: tests/acp_standin.py (an ACP agent over stdio, on the
   ``agent-client-protocol`` SDK) answers "fast 20000 8" with 20,000 text chunks of 8
   characters as fast as it can. Through the hub: a named ``acp`` agent of the jupyter server
   runs it (one process per conversation, started by a first, untimed message), and a
   WebSocket client times SEND_MESSAGE to the reply's final frame. Floor: the same stand-in
   run by this script, whose JSON-RPC lines (initialize, session/new, then the prompt) it
   writes and reads raw from the pipe, timed from writing the prompt to reading its answer.
   Reported as characters per second and their ratio. Goal: at least 0.9.

Everything listens on 127.0.0.1 only; every wait has a timeout, every loop a bound.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import json
import os
import platform
import select
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import tornado
from tornado.web import Application, RequestHandler
from tornado.websocket import WebSocketHandler

from jupyter_streamchat import protocol as p
from jupyter_streamchat.core.hub import Hub
from jupyter_streamchat.server.handlers import ChatWebSocketHandler
from jupyter_streamchat.store import SQLiteStore

from bench_hub import ResumeHandler
from harness.chromium import TRACE_CATEGORIES, add_chromium_option, launch
from harness.client import connect, read_reply, send, send_message
from harness.documents import make_document
from harness.report import first_line, ms, publish, verdict
from harness.servers import HOST, free_port, serve_raw
from harness.stats import median, p90
from harness.traces import Window

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PLUGINS = HERE / "plugins"  # tool_steps.py: the toolsteps and approvals agents
sys.path[:0] = [str(PLUGINS), str(REPO / "tests")]
from server_process import JupyterServer, isolated_env  # noqa: E402  (the tests' launcher)
from tool_steps import ToolStepsAgent  # noqa: E402

STATIC = REPO / "jupyter_streamchat" / "widget" / "static"
STANDIN = REPO / "tests" / "acp_standin.py"
RESULTS = HERE / "results" / "tools.md"

TOKENS = 20_000
CALLS = 200
MODEL_PACE = "4 0.002"  # tokens per step, seconds per step: the stored reply of part 1
RECORD_WINDOW = 0.002  # the in-process hub's batch window while it stores that reply
ACP_CHUNKS, ACP_CHUNK_CHARS = 20_000, 8

GOAL_RESUME_RATIO = 2.0
GOAL_TASK_MS = 50.0
GOAL_APPROVAL_MS = 50.0
GOAL_ACP_RATIO = 0.9

RUN_TIMEOUT = 120.0  # seconds for one timed run; only turns a hang into an error
GUARD_MS = 120_000  # page loads and waits in the browser; a hang guard
READY_TIMEOUT = 60.0  # seconds for a child process to say it is ready
MAX_FRAMES = 1_000_000  # bound of every frame-reading loop


@dataclass
class Settings:
    resume_repeats: int
    streams: int  # streamed replies per kind (with tool calls, without)
    opens: int  # switches to each conversation
    approvals: int
    acp_repeats: int
    chromium: str


def settings_from(args) -> Settings:
    if args.quick:
        return Settings(3, 2, 3, 6, 2, args.chromium)
    return Settings(9, 5, 7, 25, 9, args.chromium)


def in_thread(coroutine):
    """Run a coroutine on an event loop of its own, in a thread of its own: Playwright's sync
    API runs an event loop in this one."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def write_documents(tmp: Path) -> Path:
    """The dir the toolsteps agent reads ``doc-N.md`` from."""
    docs = tmp / "docs"
    docs.mkdir()
    (docs / f"doc-{TOKENS}.md").write_text(make_document(TOKENS), encoding="utf-8")
    return docs


# -- 1. RESUME ------------------------------------------------------------------------------------

FINAL = '"isComplete":true'  # only the final frame has it (inside a JSON string " is escaped)
FINAL_BYTES = FINAL.encode()


class RawFramesHandler(WebSocketHandler):
    """The floor of the WebSocket leg: on any frame, push ``frames`` (encoded already) with the
    hub's transport, nothing read from a store."""

    write_frames = ChatWebSocketHandler.write_frames

    def initialize(self, frames: dict):
        self.frames = frames  # message id -> the frames RESUME sent for it

    def get_compression_options(self):
        return None

    def on_message(self, message):
        self.write_frames(self.frames[json.loads(message)["messageId"]])


async def record(url: str, text: str) -> tuple:
    """Have the in-process hub store a toolsteps reply to ``text``; -> (message id, frames)."""
    ws = await connect(url)
    try:
        await send_message(ws, "toolsteps", text)
        reply = await asyncio.wait_for(read_reply(ws, max_frames=MAX_FRAMES), RUN_TIMEOUT)
    finally:
        ws.close()
    if reply.status != p.COMPLETE:
        raise RuntimeError(f"the {text!r} reply ended {reply.status}: {reply.error}")
    return reply.message_id, reply.frames


async def resume_frames(url: str, message_id: str) -> list:
    """Every frame a RESUME from seq 0 sends, as received (untimed)."""
    ws = await connect(url)
    try:
        await send(ws, "RESUME", messageId=message_id, afterSeq=0)
        frames = []
        for _ in range(MAX_FRAMES):
            raw = await asyncio.wait_for(ws.read_message(), RUN_TIMEOUT)
            if raw is None:
                raise RuntimeError("the server closed the WebSocket")
            frames.append(raw)
            if FINAL in raw:
                return frames
        raise RuntimeError("no final frame")
    finally:
        ws.close()


class RawSocket:
    """A WebSocket client that only reads bytes: the handshake, one masked text frame out,
    then the server's frames as they come off the socket, unparsed until the timing is over.

    Tornado's client spends tens of microseconds of Python per frame read (a queue, a future,
    a decode), a browser's WebSocket a fraction of that; with thousands of frames that is most
    of the time, and it is the client's. So the timed read looks for the final frame's marker
    in the bytes and nothing else."""

    async def open(self, host: str, port: int, path: str) -> "RawSocket":
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=1 << 22), RUN_TIMEOUT
        )
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        self.writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), RUN_TIMEOUT)
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"no WebSocket: {head[:200]!r}")
        return self

    def send(self, type: str, **fields) -> None:
        payload = json.dumps({"type": type, **fields}).encode()
        mask = os.urandom(4)
        size = len(payload)
        head = bytes([0x81]) + (
            bytes([0x80 | size]) if size < 126 else bytes([0x80 | 126]) + size.to_bytes(2, "big")
        )
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(head + mask + masked)

    async def read_until_final(self) -> bytes:
        """The bytes received up to and including the final frame's marker."""
        received, edge = [], len(FINAL_BYTES)
        for _ in range(MAX_FRAMES):
            data = await asyncio.wait_for(self.reader.read(1 << 20), RUN_TIMEOUT)
            if not data:
                raise RuntimeError("the server closed the connection")
            # The marker may straddle two reads.
            seam = received[-1][-edge:] + data[:edge] if received else b""
            received.append(data)
            if FINAL_BYTES in data or FINAL_BYTES in seam:
                return b"".join(received)
        raise RuntimeError("no final frame")

    def close(self) -> None:
        self.writer.close()


def frames_in(data: bytes) -> list:
    """The text payloads of the server's (unmasked) frames in ``data``."""
    frames, at = [], 0
    while at < len(data):
        size = data[at + 1] & 0x7F
        at += 2
        if size == 126:
            size, at = int.from_bytes(data[at : at + 2], "big"), at + 2
        elif size == 127:
            size, at = int.from_bytes(data[at : at + 8], "big"), at + 8
        frames.append(data[at : at + size].decode())
        at += size
    return frames


async def timed_replay(port: int, path: str, message_id: str, due: int, request: str) -> float:
    """Seconds from sending ``request`` to holding the final frame of ``message_id``, read off
    the socket as bytes; the frames are checked after the timing."""
    ws = await RawSocket().open(HOST, port, path)
    try:
        started = time.perf_counter()
        ws.send(request, messageId=message_id, afterSeq=0)
        data = await ws.read_until_final()
        elapsed = time.perf_counter() - started
    finally:
        ws.close()
    frames = frames_in(data)
    final = json.loads(frames[-1])
    if final.get("messageId") != message_id or final.get("seq") != due or len(frames) != due:
        raise RuntimeError(f"{request} gave {len(frames)} frames ending {frames[-1][:200]}")
    return elapsed


async def tornado_replay(url: str, message_id: str, due: int) -> float:
    """Seconds from sending RESUME to the final frame with Tornado's client reading each frame
    (for the notes: what a Python client of the chat sees)."""
    ws = await connect(url)
    try:
        started = time.perf_counter()
        await send(ws, "RESUME", messageId=message_id, afterSeq=0)
        for count in range(1, due + 1):
            raw = await asyncio.wait_for(ws.read_message(), RUN_TIMEOUT)
            if raw is None or FINAL in raw:
                break
        elapsed = time.perf_counter() - started
    finally:
        ws.close()
    if count != due or raw is None:
        raise RuntimeError(f"RESUME gave {count} frames, not {due}")
    return elapsed


async def handler_time(timings: list, before: int) -> float:
    """The handler's time for the request after the first ``before``: it notes it once
    ``hub.handle`` returns, which may be just after the client holds the last frame."""
    for _ in range(1000):
        if len(timings) > before:
            return timings[before]
        await asyncio.sleep(0.001)
    raise RuntimeError("the handler noted no time for the RESUME")


def check_resumed(frames: list, chunks: list, document: str, calls: int) -> None:
    """The frames RESUME sent are the stored ones, and add up to the reply."""
    parsed = [json.loads(raw) for raw in frames]
    sent = [(f["seq"], f["chunk"], f.get("toolCalls")) for f in parsed]
    stored = [(seq, chunk, tools) for seq, chunk, _, tools in chunks]
    if sent != stored:
        raise AssertionError(f"RESUME sent {len(sent)} frames that differ from the stored ones")
    if "".join(f["chunk"] for f in parsed) != document:
        raise AssertionError("RESUME's text is not the document")
    latest = {}
    for frame in parsed:
        for state in frame.get("toolCalls") or ():
            latest[state["id"]] = state
    if len(latest) != calls or any(s["status"] != "completed" for s in latest.values()):
        raise AssertionError(f"RESUME holds {len(latest)} calls, not {calls} completed ones")


def select_frames(conn: sqlite3.Connection, message_id: str) -> float:
    """The floor: seconds for the raw SELECT of the reply's frames."""
    started = time.perf_counter()
    conn.execute(
        "SELECT seq, chunk, reasoning, tool_calls FROM chunks "
        "WHERE message_id = ? AND seq > ? ORDER BY seq",
        (message_id, 0),
    ).fetchall()
    return time.perf_counter() - started


async def bench_resume(s: Settings, tmp: Path, docs: Path) -> dict:
    os.environ["STREAMCHAT_BENCH_DOCS"] = str(docs)  # read by the in-process agent
    document = (docs / f"doc-{TOKENS}.md").read_text(encoding="utf-8")
    db_path = tmp / "resume.db"
    store = SQLiteStore(path=str(db_path))
    hub = Hub(store, agents={"toolsteps": ToolStepsAgent("toolsteps")}, batch_window=RECORD_WINDOW)
    await hub.ensure_open()
    timings: list = []
    pushed: dict = {}
    app = Application(
        [
            (r"/ws", ResumeHandler, {"hub": hub, "timings": timings}),
            (r"/raw", RawFramesHandler, {"frames": pushed}),
        ]
    )
    port = free_port()
    server = app.listen(port, address=HOST)
    url = f"ws://{HOST}:{port}/ws"
    kinds = {"tools": CALLS, "plain": 0}
    replies, results = {}, {}
    try:
        for kind, calls in kinds.items():
            print(f"  storing the {kind} reply at a model's pace...", file=sys.stderr)
            message_id, frames = await record(url, f"{TOKENS} {calls} {MODEL_PACE}")
            _, chunks = await store.replay(message_id, 0)
            resumed = await resume_frames(url, message_id)
            check_resumed(resumed, chunks, document, calls)
            pushed[message_id] = resumed
            replies[kind] = (message_id, frames, sum(map(len, resumed)))
        conn = sqlite3.connect(db_path)
        try:
            times = {
                k: {"client": [], "server": [], "raw": [], "sql": [], "tornado": []} for k in kinds
            }
            for i in range(s.resume_repeats + 1):  # the first round warms up, not counted
                for kind, (message_id, frames, _) in replies.items():
                    handled = len(timings)
                    client = await timed_replay(port, "/ws", message_id, frames, "RESUME")
                    server_side = await handler_time(timings, handled)
                    raw = await timed_replay(port, "/raw", message_id, frames, "PUSH")
                    sql = select_frames(conn, message_id)
                    tornado_client = await tornado_replay(url, message_id, frames)
                    if i:
                        for key, value in zip(
                            ("client", "server", "raw", "sql", "tornado"),
                            (client, server_side, raw, sql, tornado_client),
                        ):
                            times[kind][key].append(value)
        finally:
            conn.close()
    finally:
        server.stop()
        await hub.shutdown()
    for kind, (message_id, frames, size) in replies.items():
        results[kind] = {
            "frames": frames,
            "bytes": size,
            **{key: median(values) for key, values in times[kind].items()},
            "client_all": times[kind]["client"],
        }
    return results


# -- 2 and 3: the browser ----------------------------------------------------------------------

PAGE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>streamchat tools bench</title>
<link rel="stylesheet" href="widget.css">
<style>body { margin: 8px; } #host { width: 900px; }</style>
</head>
<body>
<div id="host"></div>
<script type="module" src="tools-bench.js"></script>
</body>
</html>
"""

PAGE_JS = r"""
const { ChatView, serverSettings } = await import('./widget.js');

const nextFrame = () => new Promise(resolve => requestAnimationFrame(() => resolve()));
const bench = window.bench = { view: null, clicks: {}, longtasks: [], done: null, start: 0 };
try {
  new PerformanceObserver(list => {
    for (const e of list.getEntries()) bench.longtasks.push([e.startTime, e.duration]);
  }).observe({ type: 'longtask', buffered: true });
} catch (e) {
  bench.longtasks = null; // not supported: the report says so
}

// Capturing listeners run before the view's own: the click on Send opens a window, a click on
// Allow once is stamped on the page's epoch clock (the event's own time).
document.addEventListener('click', event => {
  const target = event.target instanceof Element ? event.target : null;
  if (!target) return;
  if (target.closest('[data-testid=streamchat-send]')) {
    bench.start = performance.now();
    console.timeStamp('tools-start');
  }
  const approve = target.closest('[data-testid=streamchat-approve]');
  if (approve) {
    const card = approve.closest('[data-testid=streamchat-tool-call]');
    bench.clicks[card.dataset.toolCallId] = performance.timeOrigin + event.timeStamp;
  }
}, true);

function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The reply is shown whole: complete, no block left as plain text, every card completed. */
function replyShown(replyId, calls) {
  const root = bench.view.root;
  const messages = root.querySelectorAll('[data-testid=streamchat-message]');
  const last = messages[messages.length - 1];
  if (!last || last.dataset.role !== 'assistant' || last.dataset.status !== 'complete') {
    return false;
  }
  if (replyId && last.dataset.messageId !== replyId) return false;
  if (last.querySelector('.streamchat-raw') || !last.querySelector('.streamchat-block')) {
    return false;
  }
  const done = last.querySelectorAll(
    '[data-testid=streamchat-tool-call][data-status=completed]').length;
  return done === calls;
}

Object.assign(bench, {
  async mount({ token, conversationId, agentId, timeoutMs }) {
    bench.view = new ChatView(document.getElementById('host'), {
      server: serverSettings(location.origin + '/', token),
      conversationId,
      agentId
    });
    const root = bench.view.root;
    await within(new Promise(resolve => {
      const poll = () => {
        const picker = root.querySelector('[data-testid=streamchat-agent]');
        const listed = Array.from(picker.options)
          .some(o => o.value === agentId && !o.textContent.includes('not on'));
        if (root.dataset.connection === 'connected' && listed) resolve();
        else setTimeout(poll, 20);
      };
      poll();
    }), timeoutMs, `view connected with the ${agentId} agent`);
  },

  async settle() { await nextFrame(); await nextFrame(); },

  /** Check in every animation frame whether the reply is shown whole; two frames after the
   * first frame where it is, the window ends. Only the DOM is read. */
  watch(replyId, calls, guardMs) {
    bench.done = null;
    const since = performance.now();
    const poll = () => {
      let seen = false;
      try { seen = replyShown(replyId, calls); } catch (e) { bench.done = { error: String(e) }; return; }
      if (seen) {
        const at = performance.now();
        requestAnimationFrame(() => requestAnimationFrame(() => {
          console.timeStamp('tools-end');
          bench.done = { at, end: performance.now(), start: bench.start };
        }));
      } else if (performance.now() - since > guardMs) {
        bench.done = { error: `not shown after ${guardMs} ms` };
      } else {
        requestAnimationFrame(poll);
      }
    };
    requestAnimationFrame(poll);
  },

  /** Open another conversation in the same view, over its open socket. */
  open(conversationId, replyId, calls, guardMs) {
    bench.watch(replyId, calls, guardMs);
    bench.start = performance.now();
    console.timeStamp('tools-start');
    bench.view.setConversation(conversationId);
  },

  longtasksIn(a, b) {
    return bench.longtasks && bench.longtasks.filter(([at, ms]) => at + ms > a && at < b)
      .map(t => t[1]);
  },

  lastReply() {
    const messages = bench.view.root.querySelectorAll('[data-testid=streamchat-message]');
    const last = messages[messages.length - 1];
    return {
      id: last.dataset.messageId,
      cards: last.querySelectorAll('[data-testid=streamchat-tool-call]').length,
      text: last.querySelector('[data-testid=streamchat-message-text]').textContent.length
    };
  }
});
window.benchReady = true;
"""

# The floor page of part 3, served by the floor server itself.
FLOOR_HTML = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>floor</title></head>
<body>
<button id="go" type="button">Send a frame</button>
<script>
const floor = window.floor = { clicks: {}, arrived: {}, sent: 0 };
const ws = new WebSocket(`ws://${location.host}/ws`);
floor.ready = new Promise(resolve => { ws.onopen = resolve; });
ws.onmessage = event => {
  const answer = JSON.parse(event.data);
  floor.arrived[answer.id] = answer.arrived;
};
document.getElementById('go').addEventListener('click', event => {
  const id = String(++floor.sent);
  floor.clicks[id] = performance.timeOrigin + event.timeStamp;
  ws.send(JSON.stringify({ id }));
});
</script>
</body>
</html>
"""


class FloorPage(RequestHandler):
    def get(self):
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(FLOOR_HTML)


class FloorEcho(WebSocketHandler):
    """Notes when each frame arrived (``time.time()``, first thing) and says so back."""

    def get_compression_options(self):
        return None  # as the hub's handler

    def on_message(self, message):
        arrived = time.time()
        self.write_message(json.dumps({"id": json.loads(message)["id"], "arrived": arrived}))


def prepare_static(tmp: Path) -> Path:
    """The bench page and copies of the bundle, in a dir the server serves under /static/."""
    static = tmp / "static"
    static.mkdir()
    for name in ("widget.js", "widget.css"):
        if not (STATIC / name).exists():
            raise SystemExit(f"{STATIC / name} is missing: build it with `cd js && npm run build`")
        shutil.copy(STATIC / name, static / name)
    if b"streamchat-approve" not in (STATIC / "widget.js").read_bytes():
        raise SystemExit(f"{STATIC / 'widget.js'} has no tool-call cards: rebuild it")
    (static / "tools-bench.html").write_text(PAGE_HTML)
    (static / "tools-bench.js").write_text(PAGE_JS)
    return static


def bench_server(tmp: Path, docs: Path, static: Path, stamps: Path) -> JupyterServer:
    """The server (started by ``with``): the bench agents, and a named ``acp`` agent that runs
    the ACP stand-in."""
    base = tmp / "server"
    path = os.pathsep.join(filter(None, (str(PLUGINS), os.environ.get("PYTHONPATH"))))
    env = isolated_env(
        base,
        PYTHONPATH=path,
        STREAMCHAT_BENCH_DOCS=str(docs),
        STREAMCHAT_BENCH_STAMPS=str(stamps),
    )
    server = JupyterServer(
        base, f"--ServerApp.extra_static_paths={json.dumps([str(static)])}", env=env
    )
    config_path = Path(env["JUPYTER_CONFIG_DIR"]) / "jupyter_server_config.json"
    config = json.loads(config_path.read_text())
    config["StreamChatApp"] = {
        "agents": {"acp": {"class": "acp", "command": [sys.executable, str(STANDIN)]}}
    }
    config_path.write_text(json.dumps(config))
    return server


def start_floor(tmp: Path) -> tuple:
    """The floor server of part 3, this script as ``--serve-floor``; -> (process, port)."""
    log = open(tmp / "floor.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve-floor"],
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT)
    line = proc.stdout.readline().decode().strip() if ready else ""
    if not line.isdigit():
        stop_process(proc)
        raise RuntimeError(f"the floor server did not start: {line!r}")
    return proc, int(line)


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def open_view(browser, server: JupyterServer, agent: str, conversation_id: str):
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    page = context.new_page()
    page.set_default_timeout(GUARD_MS)
    page.goto(server.http_url("static/tools-bench.html"), wait_until="load")
    page.wait_for_function("window.benchReady === true")
    page.evaluate(
        "o => bench.mount(o)",
        {
            "token": server.token,
            "agentId": agent,
            "timeoutMs": GUARD_MS,
            "conversationId": conversation_id,
        },
    )
    return context, page


def wait_done(page) -> dict:
    # Polled on a timer, not in every animation frame: the page's frames are what is timed.
    page.wait_for_function("() => bench.done !== null", polling=100, timeout=GUARD_MS)
    done = page.evaluate("() => bench.done")
    if "error" in done:
        raise RuntimeError(done["error"])
    return done


def traced(browser, page, act, label: str) -> dict:
    """Run ``act()`` (which starts the window and waits for its end) under a trace; -> the
    window's main-thread figures and the page's own long tasks in it."""
    browser.start_tracing(page=page, categories=TRACE_CATEGORIES)
    try:
        act()
        done = wait_done(page)
    finally:
        trace = browser.stop_tracing()
    window = Window(trace, "tools-start", "tools-end", "tools-", label=label)
    observed = page.evaluate("([a, b]) => bench.longtasksIn(a, b)", [done["start"], done["end"]])
    return {
        **window.figures(),
        "shown_ms": done["at"] - done["start"],
        "observed": observed,
        "longest_parts": ", ".join(
            f"{name} {value:.0f}" for name, value in window.parts(window.longest).most_common(3)
        ),
    }


def stream_once(browser, server: JupyterServer, calls: int) -> dict:
    """One reply streamed into a fresh view, under a trace."""
    conversation_id = f"tools-{calls}-{uuid.uuid4().hex[:8]}"
    context, page = open_view(browser, server, "toolsteps", conversation_id)
    try:
        page.locator("[data-testid=streamchat-input]").fill(f"{TOKENS} {calls}")
        page.evaluate("bench.settle()")

        def act():
            page.evaluate("([c, ms]) => bench.watch(null, c, ms)", [calls, GUARD_MS])
            page.locator("[data-testid=streamchat-send]").click()

        run = traced(browser, page, act, f"stream, {calls} calls")
        reply = page.evaluate("bench.lastReply()")
    finally:
        context.close()
    if reply["cards"] != calls:
        raise AssertionError(f"the reply shows {reply['cards']} cards, not {calls}")
    status, _, body = server.request("GET", f"streamchat/api/conversations/{conversation_id}")
    if status != 200:
        raise RuntimeError(f"GET the conversation: {status}")
    stored = json.loads(body)["messages"][-1]
    if stored["messageId"] != reply["id"] or len(stored.get("toolCalls") or ()) != calls:
        raise AssertionError("the stored reply is not the one shown")
    return {**run, "frames": stored["lastSeq"], "conversation": conversation_id, "reply": reply}


def bench_view(s: Settings, browser, server: JupyterServer) -> dict:
    kinds = {"tools": CALLS, "plain": 0}
    streams = {kind: [] for kind in kinds}
    for i in range(s.streams):
        order = list(kinds) if i % 2 == 0 else list(kinds)[::-1]
        for kind in order:
            print(f"  stream {i + 1}/{s.streams}: {kind}", file=sys.stderr)
            streams[kind].append(stream_once(browser, server, kinds[kind]))

    # Opening: one view switches between the two conversations, as the side panel does.
    opens = {kind: [] for kind in kinds}
    context, page = open_view(browser, server, "toolsteps", f"tools-empty-{uuid.uuid4().hex[:8]}")
    try:
        for i in range(s.opens + 1):  # the first round warms up, not counted
            for kind, calls in kinds.items():
                last = streams[kind][-1]
                print(f"  open {i}/{s.opens}: {kind}", file=sys.stderr)
                run = traced(
                    browser,
                    page,
                    lambda: page.evaluate(
                        "([c, r, n, ms]) => bench.open(c, r, n, ms)",
                        [last["conversation"], last["reply"]["id"], calls, GUARD_MS],
                    ),
                    f"open, {calls} calls",
                )
                shown = page.evaluate("bench.lastReply()")
                if shown != last["reply"]:
                    raise AssertionError(f"opened {shown}, not the streamed {last['reply']}")
                if i:
                    opens[kind].append(run)
    finally:
        context.close()
    return {"stream": streams, "open": opens}


def clock_offset(page) -> tuple:
    """(the page's epoch clock minus Python's ``time.time()``, the round trip of the reading
    it comes from), both in seconds: the reading with the shortest round trip of 15."""
    best = None
    for _ in range(15):
        before = time.time()
        at = page.evaluate("performance.timeOrigin + performance.now()") / 1000
        after = time.time()
        if best is None or after - before < best[1]:
            best = (at - (before + after) / 2, after - before)
    return best


def read_stamps(stamps: Path, call_id: str) -> float:
    """When the agent got the answer to ``call_id`` (it writes the line right after)."""
    deadline = time.monotonic() + GUARD_MS / 1000
    while time.monotonic() < deadline:
        if stamps.exists():
            for line in stamps.read_text().splitlines():
                found, decision, at = line.split()
                if found == call_id:
                    if decision != "allow_once":
                        raise AssertionError(f"{call_id}: the agent got {decision}")
                    return float(at)
        time.sleep(0.01)
    raise RuntimeError(f"the agent noted no answer to {call_id}")


def bench_approvals(s: Settings, browser, server: JupyterServer, floor_port: int, stamps: Path):
    count = s.approvals + 1  # the first one warms up, not counted
    context, page = open_view(browser, server, "approvals", f"approve-{uuid.uuid4().hex[:8]}")
    floor_context = browser.new_context(viewport={"width": 600, "height": 400})
    floor = floor_context.new_page()
    floor.set_default_timeout(GUARD_MS)
    try:
        floor.goto(f"http://{HOST}:{floor_port}/", wait_until="load")
        floor.evaluate("floor.ready.then(() => true)")
        offsets = {"hub": clock_offset(page), "floor": clock_offset(floor)}
        page.locator("[data-testid=streamchat-input]").fill(str(count))
        page.locator("[data-testid=streamchat-send]").click()
        hub, raw = [], []
        for number in range(1, count + 1):
            call_id = f"approve-{number}"
            button = page.locator(
                f"[data-testid=streamchat-tool-call][data-tool-call-id='{call_id}']"
                "[data-status=waiting] [data-testid=streamchat-approve]"
            )
            button.wait_for(state="visible", timeout=GUARD_MS)
            page.evaluate("bench.settle()")  # clicked on a page at rest, as a person clicks
            button.click()
            answered = read_stamps(stamps, call_id)
            clicked = page.evaluate("id => bench.clicks[id]", call_id) / 1000
            floor.evaluate("() => new Promise(r => requestAnimationFrame(() => r()))")
            floor.locator("#go").click()
            floor.wait_for_function(
                "n => floor.arrived[String(n)] !== undefined", arg=number, timeout=GUARD_MS
            )
            floor_clicked, arrived = floor.evaluate(
                "n => [floor.clicks[String(n)], floor.arrived[String(n)]]", number
            )
            if number > 1:
                hub.append(answered - clicked)
                raw.append(arrived - floor_clicked / 1000)
        page.locator(
            "[data-testid=streamchat-message][data-role=assistant][data-status=complete]"
        ).wait_for(timeout=GUARD_MS)
        offsets_after = {"hub": clock_offset(page), "floor": clock_offset(floor)}
    finally:
        floor_context.close()
        context.close()
    return {"hub": hub, "floor": raw, "offsets": offsets, "offsets_after": offsets_after}


# -- 4. the acp agent ---------------------------------------------------------------------------


class RawACP:
    """The stand-in run by this script; JSON-RPC lines written and read raw on its pipes."""

    def __init__(self):
        self.proc = None
        self.next_id = 0

    async def start(self, cwd: Path) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(STANDIN),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=64 * 1024 * 1024,
        )
        await self.call("initialize", {"protocolVersion": 1, "clientCapabilities": {}})
        answer = await self.call("session/new", {"cwd": str(cwd), "mcpServers": []})
        self.session = answer["sessionId"]

    async def call(self, method: str, params: dict) -> dict:
        """Send a request; read lines until its answer; -> its result."""
        self.next_id += 1
        line = json.dumps(
            {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        )
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        for _ in range(MAX_FRAMES):
            raw = await asyncio.wait_for(self.proc.stdout.readline(), RUN_TIMEOUT)
            if not raw:
                raise RuntimeError(f"the stand-in exited (status {self.proc.returncode})")
            if b'"method"' in raw:  # a notification (session/update): read, not parsed
                continue
            answer = json.loads(raw)
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
        raise RuntimeError(f"no answer to {method}")

    async def prompt(self, text: str) -> float:
        """Seconds from writing the prompt to reading its answer."""
        started = time.perf_counter()
        result = await self.call(
            "session/prompt",
            {"sessionId": self.session, "prompt": [{"type": "text", "text": text}]},
        )
        elapsed = time.perf_counter() - started
        if result.get("stopReason") != "end_turn":
            raise RuntimeError(f"the prompt ended {result}")
        return elapsed

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def hub_reply(url: str, token: str, conversation_id: str, text: str) -> tuple:
    """(seconds from SEND_MESSAGE to the final frame, the reply's text) of agent ``acp``."""
    ws = await connect(url, token)
    try:
        started = time.perf_counter()
        await send_message(ws, "acp", text, conversation_id)
        reply = await asyncio.wait_for(read_reply(ws, max_frames=MAX_FRAMES), RUN_TIMEOUT)
    finally:
        ws.close()
    if reply.status != p.COMPLETE:
        raise RuntimeError(f"the acp reply ended {reply.status}: {reply.error}")
    return reply.done_at - started, reply.text


async def bench_acp(s: Settings, server: JupyterServer, tmp: Path) -> dict:
    text = f"fast {ACP_CHUNKS} {ACP_CHUNK_CHARS}"
    chars = ACP_CHUNKS * ACP_CHUNK_CHARS
    expected = (("x" * (ACP_CHUNK_CHARS - 1)) + " ") * ACP_CHUNKS
    conversation_id = f"acp-{uuid.uuid4().hex[:8]}"
    url = server.ws_url()
    raw = RawACP()
    try:
        await raw.start(tmp)
        # First messages start the conversation's process and warm both paths; not counted.
        _, got = await hub_reply(url, server.token, conversation_id, "echo warm up")
        await raw.prompt("echo warm up")
        hub_rates, raw_rates = [], []
        for i in range(s.acp_repeats + 1):
            elapsed, got = await hub_reply(url, server.token, conversation_id, text)
            if got != expected:
                raise AssertionError(f"the acp reply holds {len(got)} characters, not {chars}")
            raw_elapsed = await raw.prompt(text)
            if i:
                hub_rates.append(chars / elapsed)
                raw_rates.append(chars / raw_elapsed)
    finally:
        await raw.stop()
    return {"hub": hub_rates, "raw": raw_rates, "chars": chars}


# -- report ---------------------------------------------------------------------------------------


def row(*cells) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def report(s: Settings, parts: dict, version: str, load: tuple, elapsed: float) -> str:
    out = [
        f"Chromium {version}; Python {platform.python_version()}, Tornado {tornado.version}; "
        f"{os.cpu_count()} CPUs, load average {load[0]:.1f} before and {load[1]:.1f} after; "
        f"a reply of {TOKENS:,} tokens with {CALLS} tool calls (pending, running, completed); "
        f"medians of {s.resume_repeats} RESUMEs, {s.streams} streams and {s.opens} opens per "
        f"kind, {s.approvals} approvals, {s.acp_repeats} acp replies.",
        "",
        row("measurement", "ours", "floor", "ratio", "goal", ""),
        "|---|---:|---:|---:|---|---|",
    ]
    resume = parts["resume"]
    if isinstance(resume, str):
        out.append(row("RESUME", f"not measured: {resume}", "", "", "", ""))
    else:
        for kind, what in (("tools", f"{CALLS} tool calls"), ("plain", "no tool calls")):
            r = resume[kind]
            ratio = r["client"] / r["sql"]
            judged = kind == "tools"
            out.append(
                row(
                    f"RESUME from seq 0, {what} ({r['frames']:,} frames, "
                    f"{r['bytes'] / 1024:.0f} KiB): send to final frame",
                    ms(r["client"]),
                    f"{ms(r['sql'])} (sqlite3 SELECT)",
                    f"{ratio:.1f}",
                    f"≤ {GOAL_RESUME_RATIO:g} x" if judged else "(reference)",
                    verdict(ratio <= GOAL_RESUME_RATIO) if judged else "",
                )
            )
            out.append(
                row(
                    f"RESUME, {what}: server side (RESUME in to last frame handed over)",
                    ms(r["server"]),
                    ms(r["sql"]),
                    f"{r['server'] / r['sql']:.1f}",
                    "",
                    "",
                )
            )
            out.append(
                row(
                    f"RESUME, {what}: against the same frames pushed from memory",
                    ms(r["client"]),
                    f"{ms(r['raw'])} (bare push)",
                    f"{r['client'] / r['raw']:.2f}",
                    "",
                    "",
                )
            )
    view = parts["view"]
    if isinstance(view, str):
        out.append(row("the view's longest task", f"not measured: {view}", "", "", "", ""))
    else:
        for phase, what in (("stream", "while the reply streams"), ("open", "opening it")):
            ours = view[phase]["tools"]
            base = view[phase]["plain"]
            for key, clock in (("longest_ms", "wall"), ("longest_cpu_ms", "CPU")):
                mine, theirs = median(r[key] for r in ours), median(r[key] for r in base)
                out.append(
                    row(
                        f"view's longest task {what} ({clock})",
                        f"{mine:.1f} ms",
                        f"{theirs:.1f} ms (no tool calls)",
                        f"{mine / theirs:.2f}",
                        f"< {GOAL_TASK_MS:g} ms",
                        verdict(mine < GOAL_TASK_MS),
                    )
                )
    approvals = parts["approvals"]
    if isinstance(approvals, str):
        out.append(row("approval round trip", f"not measured: {approvals}", "", "", "", ""))
    else:
        hub, floor = approvals["hub"], approvals["floor"]
        out.append(
            row(
                f"approval: click to the agent's await returning (p90 {ms(p90(hub))})",
                ms(median(hub)),
                f"{ms(median(floor))} (WebSocket frame, p90 {ms(p90(floor))})",
                f"{median(hub) / median(floor):.1f}",
                f"< {GOAL_APPROVAL_MS:g} ms",
                verdict(median(hub) < GOAL_APPROVAL_MS / 1000),
            )
        )
    acp = parts["acp"]
    if isinstance(acp, str):
        out.append(row("acp agent throughput", f"not measured: {acp}", "", "", "", ""))
    else:
        ours, theirs = median(acp["hub"]), median(acp["raw"])
        out.append(
            row(
                f"acp agent: characters/s through a hub reply ({ACP_CHUNKS:,} chunks of "
                f"{ACP_CHUNK_CHARS})",
                f"{ours:,.0f}",
                f"{theirs:,.0f} (stand-in, pipe read raw)",
                f"{ours / theirs:.2f}",
                f"≥ {GOAL_ACP_RATIO:g}",
                verdict(ours / theirs >= GOAL_ACP_RATIO),
            )
        )

    out += ["", "Notes:", ""]
    if not isinstance(resume, str):
        for kind in ("tools", "plain"):
            r = resume[kind]
            out.append(
                f"- RESUME {kind}, every run: "
                + ", ".join(ms(t) for t in r["client_all"])
                + f"; the same with Tornado's client reading every frame: {ms(r['tornado'])}"
            )
    if not isinstance(view, str):
        for phase in ("stream", "open"):
            for kind in ("tools", "plain"):
                runs = view[phase][kind]
                frames = (
                    f"{median(r['frames'] for r in runs):.0f} frames; " if phase == "stream" else ""
                )
                observed = (
                    "no longtask entries in this Chromium"
                    if runs[0]["observed"] is None
                    else "tasks over 50 ms seen by the page, all runs: "
                    f"{sum(len(r['observed']) for r in runs)}"
                )
                out.append(
                    f"- {phase} {kind}: {frames}shown in {median(r['shown_ms'] for r in runs):.0f}"
                    f" ms; main thread busy {median(r['busy_ms'] for r in runs):.0f} ms (CPU "
                    f"{median(r['busy_cpu_ms'] for r in runs):.0f}); {observed}; longest task per "
                    "run, wall / CPU ms (its largest parts): "
                    + "; ".join(
                        f"{r['longest_ms']:.0f} / {r['longest_cpu_ms']:.0f} ({r['longest_parts']})"
                        for r in runs
                    )
                )
    if not isinstance(approvals, str):
        offsets = ", ".join(
            f"{name} {before[0] * 1000:+.2f} ms (read in {before[1] * 1000:.1f} ms), after "
            f"{approvals['offsets_after'][name][0] * 1000:+.2f} ms"
            for name, before in approvals["offsets"].items()
        )
        out.append(
            "- approvals, every one (ms): "
            + ", ".join(f"{t * 1000:.1f}" for t in approvals["hub"])
            + "; floor: "
            + ", ".join(f"{t * 1000:.1f}" for t in approvals["floor"])
        )
        out.append(
            f"- the pages' epoch clocks minus Python's time.time() (not corrected for): {offsets}"
        )
    if not isinstance(acp, str):
        out.append(
            "- acp, every run (characters/s): hub "
            + ", ".join(f"{r:,.0f}" for r in acp["hub"])
            + "; stand-in raw "
            + ", ".join(f"{r:,.0f}" for r in acp["raw"])
        )
    out.append(f"\n(total {elapsed:.0f} s)")
    return "\n".join(out)


# -- main -----------------------------------------------------------------------------------------


def attempt(name: str, make):
    """Run one part; a failure becomes the reason shown in the table, not a crash."""
    print(f"{name}...", file=sys.stderr)
    try:
        return make()
    except Exception as e:  # reported in the table; the other parts still run
        print(f"{name} failed: {e!r}", file=sys.stderr)
        return f"{type(e).__name__}: {first_line(e)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (about a minute)")
    parser.add_argument(
        "--parts", default="1234", help="which parts to run, e.g. 14 (default: all four)"
    )
    parser.add_argument("--serve-floor", action="store_true", help=argparse.SUPPRESS)
    add_chromium_option(parser)
    args = parser.parse_args()
    if args.serve_floor:
        asyncio.run(serve_raw([(r"/", FloorPage), (r"/ws", FloorEcho)]))
        return
    s = settings_from(args)

    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="streamchat-bench-tools-"))
    parts: dict = dict.fromkeys(("resume", "view", "approvals", "acp"), "skipped (--parts)")
    version = "?"
    floor_proc = None
    try:
        docs = write_documents(tmp)
        browsing = "2" in args.parts or "3" in args.parts
        static = prepare_static(tmp) if browsing else tmp
        if "1" in args.parts:
            parts["resume"] = attempt("RESUME", lambda: in_thread(bench_resume(s, tmp, docs)))
        stamps = tmp / "stamps.txt"
        print("starting the servers...", file=sys.stderr)
        with bench_server(tmp, docs, static, stamps) as server:
            if browsing:
                floor_proc, floor_port = start_floor(tmp)
                with sync_playwright() as pw:
                    browser = launch(pw, s.chromium)
                    try:
                        version = browser.version
                        if "2" in args.parts:
                            parts["view"] = attempt(
                                "the view", lambda: bench_view(s, browser, server)
                            )
                        if "3" in args.parts:
                            parts["approvals"] = attempt(
                                "approvals",
                                lambda: bench_approvals(s, browser, server, floor_port, stamps),
                            )
                    finally:
                        browser.close()
                stop_process(floor_proc)
            if "4" in args.parts:
                parts["acp"] = attempt(
                    "the acp agent", lambda: in_thread(bench_acp(s, server, tmp))
                )
            load_after = os.getloadavg()[0]
    except Exception:
        log = next((tmp / "server").glob("server-*.log"), None)
        if log:
            print(
                "--- jupyter server log (tail) ---\n"
                + "\n".join(log.read_text(errors="replace").splitlines()[-30:]),
                file=sys.stderr,
            )
        raise
    finally:
        if floor_proc is not None:
            stop_process(floor_proc)
        shutil.rmtree(tmp, ignore_errors=True)
    text = report(s, parts, version, (load_before, load_after), time.monotonic() - started)
    publish(text, RESULTS, REPO)


if __name__ == "__main__":
    main()
