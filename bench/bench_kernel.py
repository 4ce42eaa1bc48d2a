"""Benchmark of the kernel side: notebook agents streaming and stopping through the hub, and
``%%chat``'s first token on screen.

Run ``python bench/bench_kernel.py`` (about 1.5 minutes on 2 shared cores) or ``--quick`` (about
one). It prints one
markdown table per part; figures are medians (and p90 where the goal is one) of repeated runs,
each interleaved with its floor in the same process run, so that noise on a busy machine hits
both alike. Everything listens on 127.0.0.1; every wait has a timeout and every loop a bound.

The agents: one token source, bench/plugins/notebook_tokens.py, run three ways. In a kernel as
a sync notebook agent ``nb-sync`` (``@jupyter_streamchat.agent`` on a generator, which the
kernel runs on a worker thread) and an async one ``nb-async`` (an async generator, run on the
kernel's agent event loop), and in the server as the plug-in ``tokens`` (a named agent of
class ``notebook_tokens:TokensAgent``). The message says how many tokens, the pause before
each and before the first. With no pause, the sync agent yields as fast as its thread runs;
the async agent and the plug-in await ``asyncio.sleep(0)`` before each token (the echo agent's
way: a plug-in must not hold the server's event loop).

1. Throughput. A real ``jupyter server`` (Jupyter state in a temp dir, its SQLite store on),
   a real ipykernel started through its REST API as a notebook session, the agents defined by
   running a cell in it over its channels WebSocket (as JupyterLab does). A WebSocket client of
   the hub sends SEND_MESSAGE for a reply of N tokens; tokens/s is N over the time from its
   MESSAGE_ACCEPTED to its final frame. The text is compared with what the agent yielded; a
   reply that differs is counted in its own row (and its missing tokens listed), its rate
   kept. The floor is the plug-in, the same generator inside the server (no kernel, no second
   connection): kernel / plug-in is the ratio the goal names. The time from MESSAGE_ACCEPTED to
   the first text and the frames sent are shown beside it. Runs are interleaved (sync, async,
   plug-in, sync, ...), after one warm-up run each.

2. Stop latency while the kernel is busy. The kernel runs a cell ``time.sleep(600)`` (sent over
   its channels, not waited for; the server's REST API says ``busy`` before and after the
   samples); meanwhile each sample asks an agent for a token every 10 ms, waits for three
   frames, sends STOP_GENERATING and times it until the final frame (status ``stopped``). The
   floor is the same stop of the plug-in at the same pace. Interleaved; p50 and p90. The cell
   is interrupted afterwards.

3. ``%%chat`` first token on screen. JupyterLab in Chromium (Playwright) opens a notebook of
   ``%%chat <agent>`` cells whose text asks for 5 tokens after a set delay; Shift+Enter is
   pressed on each (a real key press on the notebook in command mode). The page stamps the
   key press (``keydown`` listener in the capture phase, ``performance.now()``), and a
   MutationObserver on the cell stamps the moment the reply's first token is in the cell's
   output, then the next animation frame (what is measured: the frame that shows it). The
   agent's own delay is subtracted. Agents: the plug-in ``tokens``, and the sync notebook
   agent defined in the same kernel. Floor: a plain ``print(...)`` cell, Shift+Enter to its
   output in the same way. ``%%chat`` redraws the output at most every 80 ms (its
   REDRAW_SECONDS, a poll), so the first token waits for the next redraw: the delay varies in
   10 ms steps over 80 ms (0.20 to 0.27 s) so that the median covers every phase. The
   kernel's first ``%%chat`` runs before the agents are defined, so it opens the kernel's
   connection to the hub: shown apart, one run. A column gives %%chat minus print (medians):
   what the chat path adds to JupyterLab's own round trip. The same is measured from the
   kernel side too (part 1's kernel, after part 2): execute_request over the channels to the
   first display_data/update_display_data holding the token, beside ``print`` to its stream
   message; that kernel's first ``%%chat`` too, before its agents were defined.

Options: ``--quick`` (fewer tokens and repeats), ``--skip-browser`` (part 3 from the kernel
side only), ``--chromium`` (default /usr/bin/chromium).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import textwrap
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from harness.chromium import add_chromium_option, launch
from harness.client import connect, frame_of, next_frame, read_reply, send, send_message
from harness.processes import Children
from harness.report import attempt, first_line, ms, publish, table, verdict
from harness.servers import Jupyter, api, quiet_config, require_agents, start_jupyter
from kernel_client import execute_request  # noqa: E402  (tests/, on the path by harness)
from harness.stats import median, p90

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PLUGINS = HERE / "plugins"  # notebook_tokens.py: the generators and the plug-in
RESULTS = HERE / "results" / "kernel.md"
sys.path.insert(0, str(PLUGINS))
from notebook_tokens import expected  # noqa: E402

RUN_TIMEOUT = 120.0  # seconds for one timed run; only turns a hang into an error
KERNEL_TIMEOUT = 90.0  # seconds for a kernel to start or a cell to run; a hang guard
MAX_FRAMES = 1_000_000  # bound of every frame-reading loop

PLUGIN = "tokens"
NB_SYNC, NB_ASYNC = "nb-sync", "nb-async"
AGENTS_CONFIG = {"agents": {PLUGIN: {"class": "notebook_tokens:TokensAgent"}}}

GOAL_RATIO = 0.5  # kernel tokens/s over plug-in tokens/s, at least
GOAL_STOP_P90 = 0.200  # seconds
GOAL_FIRST = 0.100  # seconds over the agent's own delay

STOP_INTERVAL = 0.01  # a token every 10 ms while a stop is measured
STOP_AFTER_FRAMES = 3
FIRST_DELAYS = [0.20 + 0.01 * i for i in range(8)]  # over %%chat's 80 ms redraw period
CHAT_TOKENS = 5

# The notebook agents, defined in the kernel (it imports notebook_tokens from PYTHONPATH).
AGENTS_CELL = textwrap.dedent(f"""
    import jupyter_streamchat as sc
    from notebook_tokens import async_stream, sync_stream

    @sc.agent({NB_SYNC!r}, description="bench tokens, sync generator")
    def nb_sync(request):
        yield from sync_stream(request.text)

    @sc.agent({NB_ASYNC!r}, description="bench tokens, async generator")
    async def nb_async(request):
        async for token in async_stream(request.text):
            yield token
""")


@dataclass
class Settings:
    repeats: int  # throughput runs per agent
    tokens: int  # tokens of the throughput reply
    stop_samples: int  # per agent
    chat_repeats: int  # %%chat and print cells per kind, browser and kernel side each
    browser: bool
    chromium: str
    quick: bool


def settings_from(args) -> Settings:
    if args.quick:
        return Settings(2, 5_000, 6, 4, not args.skip_browser, args.chromium, True)
    return Settings(5, 20_000, 20, 24, not args.skip_browser, args.chromium, False)


# -- a kernel, driven over its channels WebSocket ----------------------------------------------


class Kernel:
    """A notebook session's kernel started through the REST API; code runs in it over the
    channels WebSocket (the JSON protocol JupyterLab speaks). A task files every message by
    the request it answers, with the time it was received."""

    def __init__(self, server: Jupyter, kernel_id: str, ws):
        self.server, self.id, self.ws = server, kernel_id, ws
        self.session = uuid.uuid4().hex
        self.messages: dict = defaultdict(list)  # parent msg_id -> [(perf_counter, message)]
        self.news = asyncio.Event()
        self.reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, server: Jupyter, path: str) -> "Kernel":
        body = {"path": path, "name": path, "type": "notebook", "kernel": {"name": "python3"}}
        kernel_id = (await api(server, "POST", "api/sessions", body, KERNEL_TIMEOUT))["kernel"][
            "id"
        ]
        url = server.base_url.replace("http", "ws", 1) + f"api/kernels/{kernel_id}/channels"
        ws = await connect(f"{url}?session_id={uuid.uuid4().hex}", server.token)
        return cls(server, kernel_id, ws)

    async def _read(self) -> None:
        for _ in range(50_000_000):  # bounded; the socket's end stops it
            raw = await self.ws.read_message()
            if raw is None:
                return
            received = time.perf_counter()
            message = json.loads(raw)
            parent = message.get("parent_header", {}).get("msg_id")
            if parent:
                self.messages[parent].append((received, message))
                self.news.set()

    def submit(self, code: str) -> tuple:
        """Send an execute_request; -> (its msg_id, perf_counter when it was written)."""
        request = execute_request(code, self.session, "bench")
        self.ws.write_message(json.dumps(request))
        return request["header"]["msg_id"], time.perf_counter()

    async def first(self, msg_id: str, wanted, timeout: float = KERNEL_TIMEOUT) -> tuple:
        """The first message answering ``msg_id`` that ``wanted(message)`` accepts;
        -> (perf_counter when it was received, message)."""
        deadline = time.monotonic() + timeout
        seen = 0
        for _ in range(1_000_000):
            self.news.clear()
            answers = self.messages[msg_id]
            for received, message in answers[seen:]:
                if wanted(message):
                    return received, message
            seen = len(answers)
            if self.reader.done():
                raise RuntimeError("the kernel's channels WebSocket closed")
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(self.news.wait(), left)
            except asyncio.TimeoutError:
                break
        raise RuntimeError(
            f"no such answer to {msg_id} in {timeout:.0f} s: "
            f"{[m['msg_type'] for _, m in self.messages[msg_id]]}"
        )

    async def finished(self, msg_id: str, timeout: float = KERNEL_TIMEOUT) -> dict:
        """Wait for the request's execute_reply and the idle status after it; -> the reply's
        content, with the cell's stdout as ``stdout``."""
        _, reply = await self.first(msg_id, lambda m: m["msg_type"] == "execute_reply", timeout)
        await self.first(
            msg_id,
            lambda m: m["msg_type"] == "status" and m["content"]["execution_state"] == "idle",
            timeout,
        )
        stdout = "".join(
            m["content"]["text"]
            for _, m in self.messages[msg_id]
            if m["msg_type"] == "stream" and m["content"]["name"] == "stdout"
        )
        return {**reply["content"], "stdout": stdout}

    async def run(self, code: str, timeout: float = KERNEL_TIMEOUT) -> str:
        """Run ``code``; its stdout. An error in the cell raises."""
        result = await self.finished(self.submit(code)[0], timeout)
        if result["status"] != "ok":
            raise RuntimeError(f"the cell failed: {result.get('ename')}: {result.get('evalue')}")
        self.messages.clear()  # a run's messages are not needed after it
        return result["stdout"]

    async def state(self) -> str:
        return (await api(self.server, "GET", f"api/kernels/{self.id}"))["execution_state"]

    async def interrupt(self) -> None:
        await api(self.server, "POST", f"api/kernels/{self.id}/interrupt", {})

    async def close(self) -> None:
        self.ws.close()
        self.reader.cancel()
        try:
            await api(self.server, "DELETE", f"api/kernels/{self.id}")
        except Exception:  # the server may be gone already; it ends its kernels itself
            pass


async def bench_server(tmp: Path) -> Jupyter:
    return await start_jupyter(
        tmp / "jupyter",
        config=quiet_config(StreamChatApp=AGENTS_CONFIG),
        python_path=[PLUGINS],
        agents=(PLUGIN,),
    )


async def wait_state(kernel: Kernel, state: str, timeout: float = KERNEL_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while await kernel.state() != state:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the kernel is not {state} after {timeout:.0f} s")
        await asyncio.sleep(0.05)


# -- 1. throughput ----------------------------------------------------------------------------


async def stream_once(server: Jupyter, agent: str, count: int) -> dict:
    """One reply of ``count`` tokens as fast as ``agent`` makes them."""
    text = f"{count} 0 0"
    ws = await connect(server.ws_url, server.token)
    try:
        await send_message(ws, agent, text)
        accepted, _ = await asyncio.wait_for(frame_of(ws, ("MESSAGE_ACCEPTED",)), RUN_TIMEOUT)
        started = time.perf_counter()
        if accepted["type"] == "ERROR":
            raise RuntimeError(f"{agent}: {accepted}")
        reply = await asyncio.wait_for(read_reply(ws, accepted["messageId"]), RUN_TIMEOUT)
    finally:
        ws.close()
    if reply.status != "complete":
        raise RuntimeError(f"{agent}: reply {reply.status} ({reply.error})")
    # A reply that lost or doubled tokens is counted and shown, not dropped: its rate stands.
    sent = set(expected(text).split())
    return {
        "rate": count / (reply.done_at - started),
        "frames": reply.frames,
        "first": reply.first_text_at - started,
        "intact": reply.text == expected(text),
        "lost": sorted(sent - set(reply.text.split()), key=lambda t: int(t[1:])),
    }


async def bench_throughput(s: Settings, server: Jupyter) -> dict:
    runs = defaultdict(list)
    for agent in (NB_SYNC, NB_ASYNC, PLUGIN):  # warm-up, not counted
        await stream_once(server, agent, min(s.tokens, 2_000))
    for _ in range(s.repeats):
        for agent in (NB_SYNC, NB_ASYNC, PLUGIN):
            runs[agent].append(await stream_once(server, agent, s.tokens))
    return runs


# -- 2. stop latency while the kernel is busy -------------------------------------------------


async def stop_once(ws, agent: str) -> float:
    """Ask ``agent`` for a token every 10 ms, stop it after three frames; -> seconds from
    sending STOP_GENERATING to holding the final frame."""
    await send_message(ws, agent, f"100000 {STOP_INTERVAL} 0")
    accepted, _ = await asyncio.wait_for(frame_of(ws, ("MESSAGE_ACCEPTED",)), RUN_TIMEOUT)
    if accepted["type"] == "ERROR":
        raise RuntimeError(f"{agent}: {accepted}")
    reply = accepted["messageId"]

    async def until_stopped() -> float:
        frames, stopped_at = 0, None
        for _ in range(MAX_FRAMES):
            frame, _ = await next_frame(ws)
            if frame.get("type") == "ERROR":
                raise RuntimeError(f"{agent}: {frame}")
            if frame.get("type") != "MESSAGE_CHUNK" or frame["messageId"] != reply:
                continue
            if frame["isComplete"]:
                if stopped_at is None or frame["status"] != "stopped":
                    raise RuntimeError(f"{agent}: ended {frame['status']} before the stop")
                return time.perf_counter() - stopped_at
            frames += 1
            if frames == STOP_AFTER_FRAMES and stopped_at is None:
                stopped_at = time.perf_counter()
                await send(ws, "STOP_GENERATING", messageId=reply)
        raise RuntimeError(f"{agent}: no final frame within {MAX_FRAMES} frames")

    return await asyncio.wait_for(until_stopped(), RUN_TIMEOUT)


async def bench_stop(s: Settings, server: Jupyter, kernel: Kernel) -> dict:
    busy, _ = kernel.submit("import time; time.sleep(600)")
    await wait_state(kernel, "busy")
    samples = defaultdict(list)
    ws = await connect(server.ws_url, server.token)
    try:
        for _ in range(s.stop_samples):
            for agent in (NB_SYNC, NB_ASYNC, PLUGIN):
                samples[agent].append(await stop_once(ws, agent))
        still_busy = await kernel.state()
    finally:
        ws.close()
        await kernel.interrupt()
    result = await kernel.finished(busy)
    if result.get("ename") != "KeyboardInterrupt":
        raise RuntimeError(
            f"the busy cell ended {result['status']} ({result.get('ename')}), "
            "not interrupted: it was not running all along"
        )
    if still_busy != "busy":
        raise RuntimeError(f"the kernel was {still_busy} after the samples, not busy")
    return samples


# -- 3. %%chat first token, kernel side -------------------------------------------------------


def chat_cell(agent: str, delay: float, tag: str) -> str:
    return f"%%chat {agent}\n{CHAT_TOKENS} 0.01 {delay:.2f} {tag}"


def shows(marker: str):
    """Whether an iopub message displays ``marker`` (a %%chat display or its update)."""

    def wanted(message: dict) -> bool:
        return message["msg_type"] in ("display_data", "update_display_data") and marker in message[
            "content"
        ]["data"].get("text/plain", "")

    return wanted


def prints(marker: str):
    def wanted(message: dict) -> bool:
        return message["msg_type"] == "stream" and marker in message["content"]["text"]

    return wanted


async def timed_cell(kernel: Kernel, code: str, wanted) -> float:
    """Seconds from sending ``code`` to the first message ``wanted`` accepts; the cell must
    then end well."""
    msg_id, sent = kernel.submit(code)
    received, _ = await kernel.first(msg_id, wanted, RUN_TIMEOUT)
    result = await kernel.finished(msg_id, RUN_TIMEOUT)
    if result["status"] != "ok":
        raise RuntimeError(f"{code.splitlines()[0]}: {result.get('ename')}: {result.get('evalue')}")
    kernel.messages.clear()
    return received - sent


async def first_chat(kernel: Kernel) -> float:
    """The kernel's first ``%%chat``, before anything in it has opened its connection to the
    hub; -> seconds to the first token over the delay."""
    await kernel.run("%load_ext jupyter_streamchat")
    return await timed_cell(kernel, chat_cell(PLUGIN, 0.2, "w0x"), shows(" w0x0")) - 0.2


async def bench_chat_kernel_side(s: Settings, kernel: Kernel) -> dict:
    samples = defaultdict(list)
    await timed_cell(kernel, chat_cell(NB_SYNC, 0.2, "w1x"), shows(" w1x0"))
    await timed_cell(kernel, 'print("w2x")', prints("w2x"))
    for i in range(s.chat_repeats):
        delay = FIRST_DELAYS[i % len(FIRST_DELAYS)]
        for agent in (PLUGIN, NB_SYNC):
            tag = f"k{i}{agent[:2]}x"
            samples[agent].append(
                await timed_cell(kernel, chat_cell(agent, delay, tag), shows(f" {tag}0")) - delay
            )
        samples["print"].append(await timed_cell(kernel, f'print("k{i}p")', prints(f"k{i}p")))
    return samples


# -- 3. %%chat first token on screen, in JupyterLab -------------------------------------------

# Arms the stamps for cell ``index``: the Shift+Enter key press, and the first animation frame
# after ``marker`` is in the cell's output. Leaves that cell active, the notebook in command
# mode and focused, so that the key press runs it. -> whether the notebook has the focus.
ARM_JS = """
([index, marker]) => {
  const notebook = window.jupyterapp.shell.currentWidget.content;
  const cell = notebook.widgets[index];
  const output = cell.outputArea.node;
  const stamps = window.__bench = { pressed: null, shown: null, painted: null };
  if (marker) {
    const observer = new MutationObserver(() => {
      if (stamps.shown === null && output.textContent.includes(marker)) {
        stamps.shown = performance.now();
        observer.disconnect();
        requestAnimationFrame(() => { stamps.painted = performance.now(); });
      }
    });
    observer.observe(cell.node, { childList: true, subtree: true, characterData: true });
  }
  if (!window.__benchKeys) {
    window.__benchKeys = true;
    window.addEventListener('keydown', event => {
      const stamps = window.__bench;
      if (event.key === 'Enter' && event.shiftKey && stamps && stamps.pressed === null) {
        stamps.pressed = performance.now();
      }
    }, true);
  }
  notebook.activeCellIndex = index;
  notebook.mode = 'command';
  cell.node.focus();  // in command mode the active cell holds the focus
  return notebook.node.contains(document.activeElement);
}
"""

# True once cell ``index`` has run (its execution count is back) and the kernel is idle.
CELL_DONE_JS = """
(index) => {
  const panel = window.jupyterapp.shell.currentWidget;
  const cell = panel.content.widgets[index];
  const kernel = panel.sessionContext.session?.kernel;
  return cell.model.executionCount !== null && !!kernel && kernel.status === 'idle';
}
"""

# True once cell ``index``'s output shows ``text`` (words apart as they may be).
OUTPUT_HAS_JS = """
([index, text]) => {
  const output = window.jupyterapp.shell.currentWidget.content.widgets[index].outputArea.node;
  return output.textContent.split(/\\s+/).join(' ').includes(text);
}
"""

OUTPUT_TEXT_JS = """
(index) => window.jupyterapp.shell.currentWidget.content.widgets[index].outputArea.node.textContent
"""


@dataclass
class LabCell:
    source: str
    marker: str  # text whose arrival in the output is stamped
    kind: str  # what the sample counts as
    delay: float = 0.0  # the agent's own delay, subtracted


def lab_cells(s: Settings) -> list:
    cells = [
        LabCell("%load_ext jupyter_streamchat", "", "setup"),
        LabCell(chat_cell(PLUGIN, 0.2, "w0x"), " w0x0", "cold", 0.2),
        LabCell(AGENTS_CELL.strip(), "", "setup"),
        LabCell(chat_cell(NB_SYNC, 0.2, "w1x"), " w1x0", "warm-up", 0.2),
        LabCell('print("w2x")', "w2x", "warm-up"),
    ]
    for i in range(s.chat_repeats):
        delay = FIRST_DELAYS[i % len(FIRST_DELAYS)]
        for agent in (PLUGIN, NB_SYNC):
            tag = f"b{i}{agent[:2]}x"
            cells.append(LabCell(chat_cell(agent, delay, tag), f" {tag}0", agent, delay))
        cells.append(LabCell(f'print("b{i}p")', f"b{i}p", "print"))
    return cells


def bench_chat_in_lab(s: Settings, tmp: Path) -> dict:
    sys.path.insert(0, str(REPO / "tests" / "browser"))
    sys.path.insert(0, str(REPO / "tests"))
    import jlab
    from labserver import LabServer
    from playwright.sync_api import sync_playwright

    lab = LabServer(base_dir=tmp / "lab", env={"PYTHONPATH": str(PLUGINS)})
    (Path(lab.env["JUPYTER_CONFIG_DIR"]) / "jupyter_server_config.json").write_text(
        json.dumps({"StreamChatApp": AGENTS_CONFIG})
    )
    cells = lab_cells(s)
    samples = defaultdict(list)
    with lab, sync_playwright() as playwright:
        browser = launch(playwright, s.chromium)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            path = lab.write_notebook("chat-bench.ipynb", [c.source for c in cells])
            jlab.open_notebook(page, lab, path)
            for index, cell in enumerate(cells):
                focused = page.evaluate(ARM_JS, [index, cell.marker])
                if not focused:
                    raise RuntimeError(f"cell {index}: the notebook did not take the focus")
                page.keyboard.press("Shift+Enter")
                if cell.marker:
                    page.wait_for_function(
                        "() => window.__bench.painted !== null", timeout=RUN_TIMEOUT * 1000
                    )
                    stamps = page.evaluate("() => window.__bench")
                    if stamps["pressed"] is None:
                        raise RuntimeError(f"cell {index}: the key press was not seen")
                    samples[cell.kind].append(
                        (
                            (stamps["painted"] - stamps["pressed"]) / 1000 - cell.delay,
                            (stamps["shown"] - stamps["pressed"]) / 1000 - cell.delay,
                        )
                    )
                page.wait_for_function(CELL_DONE_JS, arg=index, timeout=RUN_TIMEOUT * 1000)
                if cell.kind in (PLUGIN, NB_SYNC, "cold"):  # the whole reply arrived
                    whole = expected(cell.source.splitlines()[1]).strip()
                    try:  # the final Markdown is rendered a moment after the cell ends
                        page.wait_for_function(
                            OUTPUT_HAS_JS, arg=[index, whole], timeout=RUN_TIMEOUT * 1000
                        )
                    except Exception:
                        shown = page.evaluate(OUTPUT_TEXT_JS, index)
                        raise RuntimeError(f"cell {index}: output {shown[:200]!r}") from None
            samples["chromium"] = browser.version
        finally:
            browser.close()
    return samples


# -- report -----------------------------------------------------------------------------------


ALIGN = "lrrrll"  # figures right, goal and verdict left


def rate(x: float) -> str:
    return f"{x:,.0f}"


def not_measured(reason: str) -> list:
    return [f"| not measured: {reason} | | | | | |"]


def report_throughput(s: Settings, runs) -> list:
    header = ["measurement", "kernel", "floor: plug-in", "ratio kernel/plug-in", "goal", ""]
    if isinstance(runs, str):
        return table(header, [], ALIGN) + not_measured(runs)
    plugin = median([r["rate"] for r in runs[PLUGIN]])
    rows = []
    for agent, what in ((NB_SYNC, "sync"), (NB_ASYNC, "async")):
        ours = median([r["rate"] for r in runs[agent]])
        rows.append(
            [
                f"{s.tokens:,} tokens, {what} notebook agent: tokens/s at the client",
                rate(ours),
                rate(plugin),
                f"{ours / plugin:.2f}",
                f"≥ {GOAL_RATIO}",
                verdict(ours / plugin >= GOAL_RATIO),
            ]
        )
    for agent, what in ((NB_SYNC, "sync"), (NB_ASYNC, "async")):
        rows.append(
            [
                f"{what} notebook agent: frames",
                f"{median([r['frames'] for r in runs[agent]]):,.0f}",
                f"{median([r['frames'] for r in runs[PLUGIN]]):,.0f}",
                "",
                "",
                "",
            ]
        )
        first, floor = (median([r["first"] for r in runs[a]]) for a in (agent, PLUGIN))
        rows.append(
            [
                f"{what} notebook agent: first text after MESSAGE_ACCEPTED",
                ms(first),
                ms(floor),
                f"{first / floor:.1f}",
                "",
                "",
            ]
        )
    floor_intact = sum(r["intact"] for r in runs[PLUGIN])
    for agent, what in ((NB_SYNC, "sync"), (NB_ASYNC, "async")):
        intact = sum(r["intact"] for r in runs[agent])
        rows.append(
            [
                f"{what} notebook agent: replies whose text is exactly what was yielded",
                f"{intact} of {len(runs[agent])}",
                f"{floor_intact} of {len(runs[PLUGIN])}",
                "",
                "all",
                verdict(intact == len(runs[agent])),
            ]
        )
    lines = table(header, rows, ALIGN)
    lines.append("")
    for agent in (NB_SYNC, NB_ASYNC, PLUGIN):
        lines.append(
            f"all runs, {agent}: {', '.join(rate(r['rate']) for r in runs[agent])} tokens/s"
        )
        lost = [", ".join(r["lost"]) or "none" for r in runs[agent] if not r["intact"]]
        if lost:
            lines.append(f"tokens missing from {agent}'s replies, run by run: {'; '.join(lost)}")
    return lines


def report_stop(s: Settings, samples) -> list:
    header = ["measurement", "p50", "p90", "floor: plug-in p50 / p90", "goal", ""]
    if isinstance(samples, str):
        return table(header, [], ALIGN) + not_measured(samples)
    floor = samples[PLUGIN]
    rows = []
    for agent, what in ((NB_SYNC, "sync"), (NB_ASYNC, "async")):
        ours = samples[agent]
        rows.append(
            [
                f"stop, {what} notebook agent at 100 tokens/s, kernel busy in a cell "
                f"(worst {ms(max(ours))})",
                ms(median(ours)),
                ms(p90(ours)),
                f"{ms(median(floor))} / {ms(p90(floor))}",
                f"p90 < {GOAL_STOP_P90 * 1000:.0f} ms",
                verdict(p90(ours) < GOAL_STOP_P90),
            ]
        )
    return table(header, rows, ALIGN)


def report_chat(s: Settings, lab, kernel_side, cold) -> list:
    header = [
        "measurement",
        "median over the delay",
        "p90",
        "floor: print median / p90",
        "%%chat − print (medians)",
        "goal",
        "",
    ]
    rows, notes = [], []
    blank = [""] * (len(header) - 2)

    def row(what, values, floor, goal: bool):
        ours = median(values)
        rows.append(
            [
                what,
                ms(ours),
                ms(p90(values)),
                f"{ms(median(floor))} / {ms(p90(floor))}",
                ms(ours - median(floor)),
                f"< {GOAL_FIRST * 1000:.0f} ms" if goal else "",
                verdict(ours < GOAL_FIRST) if goal else "",
            ]
        )

    if isinstance(lab, str):
        rows.append([f"JupyterLab: not measured: {lab}", *blank, ""])
    elif lab is not None:
        painted = {k: [v[0] for v in lab[k]] for k in ("cold", PLUGIN, NB_SYNC, "print")}
        in_dom = {k: [v[1] for v in lab[k]] for k in (PLUGIN, NB_SYNC, "print")}
        row(
            "JupyterLab, Shift+Enter to the first token on screen: `%%chat tokens` (plug-in)",
            painted[PLUGIN],
            painted["print"],
            True,
        )
        row(
            "JupyterLab, the same: `%%chat nb-sync` (notebook agent, same kernel)",
            painted[NB_SYNC],
            painted["print"],
            True,
        )
        rows.append(
            [
                "JupyterLab, the kernel's first `%%chat` (its hub connection opens), one run",
                ms(painted["cold"][0]),
                *blank,
            ]
        )
        notes.append(
            f"JupyterLab, the token in the output's DOM (before its frame): plug-in "
            f"{ms(median(in_dom[PLUGIN]))}, notebook agent "
            f"{ms(median(in_dom[NB_SYNC]))}, print {ms(median(in_dom['print']))} "
            f"(medians); Chromium {lab['chromium']}"
        )
        for kind in (PLUGIN, NB_SYNC, "print"):
            notes.append(
                f"all runs, JupyterLab, {kind}: " + ", ".join(ms(v) for v in painted[kind])
            )
    if isinstance(kernel_side, str):
        rows.append([f"kernel side: not measured: {kernel_side}", *blank, ""])
    else:
        row(
            "kernel side, execute_request to the first display holding the token: `%%chat tokens`",
            kernel_side[PLUGIN],
            kernel_side["print"],
            False,
        )
        row(
            "kernel side, the same: `%%chat nb-sync`",
            kernel_side[NB_SYNC],
            kernel_side["print"],
            False,
        )
    rows.append(
        [
            "kernel side, the kernel's first `%%chat`, one run",
            cold if isinstance(cold, str) else ms(cold),
            *blank,
        ]
    )
    return table(header, rows, "lrrrrll") + [""] + notes


async def measure(s: Settings, tmp: Path, parts: dict) -> None:
    async with Children() as children:
        print("starting the server and a kernel...", file=sys.stderr)
        server = await bench_server(tmp)
        children.append(server.child)
        kernel = await Kernel.start(server, "bench.ipynb")
        try:
            parts["chat_cold"] = await attempt(
                "3. the kernel's first %%chat", lambda: first_chat(kernel)
            )
            await kernel.run(AGENTS_CELL)
            await require_agents(server, NB_SYNC, NB_ASYNC, PLUGIN)
            parts["throughput"] = await attempt(
                "1. throughput", lambda: bench_throughput(s, server)
            )
            parts["stop"] = await attempt(
                "2. stop latency, kernel busy", lambda: bench_stop(s, server, kernel)
            )
            parts["chat_kernel"] = await attempt(
                "3. %%chat, kernel side", lambda: bench_chat_kernel_side(s, kernel)
            )
        finally:
            await kernel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer tokens and repeats (about 1.5 minutes)"
    )
    parser.add_argument(
        "--skip-browser", action="store_true", help="measure %%%%chat from the kernel side only"
    )
    add_chromium_option(parser)
    s = settings_from(parser.parse_args())
    started = time.monotonic()
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="streamchat-bench-kernel-"))
    parts: dict = {}
    try:
        asyncio.run(measure(s, tmp, parts))
        if s.browser:
            print("3. %%chat in JupyterLab...", file=sys.stderr)
            try:
                parts["chat_lab"] = bench_chat_in_lab(s, tmp)
            except Exception as e:  # reported in the table; the other parts stand
                print(f"3. %%chat in JupyterLab failed: {e!r}", file=sys.stderr)
                parts["chat_lab"] = f"{type(e).__name__}: {first_line(e)}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()
    text = "\n".join(
        [
            f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f} before and "
            f"{load_after[0]:.1f} after; Python {platform.python_version()}; "
            f"{'quick' if s.quick else 'default'} run: throughput {s.repeats} runs per agent, stop "
            f"{s.stop_samples} samples per agent, %%chat {s.chat_repeats} cells per kind "
            "(browser and kernel side)",
            "",
            f"1. Throughput: one reply of {s.tokens:,} tokens as fast as the agent makes it, "
            f"medians of {s.repeats} interleaved runs",
            "",
            *report_throughput(s, parts["throughput"]),
            "",
            "2. Stop latency, STOP_GENERATING to the final frame, while the kernel runs "
            f"`time.sleep(600)`; {s.stop_samples} samples per agent, interleaved",
            "",
            *report_stop(s, parts["stop"]),
            "",
            "3. `%%chat` first token, the agent's own delay (0.20-0.27 s) subtracted; "
            f"{s.chat_repeats} cells per kind, interleaved with the print floor",
            "",
            *report_chat(s, parts.get("chat_lab"), parts["chat_kernel"], parts["chat_cold"]),
            "",
            f"(total {time.monotonic() - started:.0f} s)",
        ]
    )
    publish(text, RESULTS, REPO)


if __name__ == "__main__":
    main()
