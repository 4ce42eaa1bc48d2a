"""Benchmark of the chat view's rendering: browser main-thread cost of a long streamed reply.

Run ``python bench/bench_render.py`` (under a minute) or ``--quick`` (about 15 seconds). It needs
the built bundle (``cd js && npm run build``), Playwright's Python package and a Chromium
(Debian's ``/usr/bin/chromium`` by default, ``--chromium`` to point elsewhere).

What is measured: the bench writes generated markdown documents (headings, paragraphs, lists,
tables, fenced code) of exactly N tokens as ``split_tokens`` counts them to ``doc-N.md`` in a
temp dir, and starts a real ``jupyter server`` subprocess with the extension, that dir in
``STREAMCHAT_BENCH_DOCS`` and ``bench/plugins`` on its ``PYTHONPATH``. That installs the
``recite`` agent, which answers the message "N" with ``doc-N.md``, one token per turn of the
event loop (as the echo agent with delay 0 does); the hub merges the tokens of each 16 ms
window into one frame of at most 16 KiB. The server also serves a bench page and copies of the
bundle (``--ServerApp.extra_static_paths``, so the page is same-origin with the REST API and
the WebSocket). The page mounts the project's ``ChatView`` with that agent; Playwright types
"N" and clicks Send. The user's message is a few characters, so what the window measures is
the reply.

Each run uses a fresh page and one of two body renderers (``ChatViewOptions.createRenderer``):

- ``project``: ``StreamingMarkdown``, the view's default;
- ``naive`` (the floor to compare against): re-render the whole text on every chunk,
  ``el.replaceChildren(renderMarkdown(text))``.

Both are wrapped in the same thin counter (frames, received text), so they differ only in
rendering. Runs alternate between the renderers; every figure is the median of the runs.

Columns, all over the window from the click on Send to two animation frames after the reply
turned ``complete`` (so the last layout and paint are in it). The page marks the window with
``console.timeStamp`` (Send, first frame, finish, end); the trace's main thread is the
``CrRendererMain`` thread that logged those marks, and its tasks are the top-level
``ThreadControllerImpl::RunTask`` events (category ``toplevel``).

- frames: MESSAGE_CHUNK frames the renderer was fed, counted in the page;
- longest task: the longest of those tasks in the window (in the CPU table: the one with the
  most CPU time, which may be another task); the list of runs says when it ran (before the
  first frame, streaming, "finishing": the task that took the reply's final frame and called
  the renderer's ``finish()``, or after that) and its largest parts (the trace events inside
  it);
- scripting: the delta of CDP ``Performance.getMetrics`` ``ScriptDuration`` over the window
  (in the CPU table: the CPU time of the outermost FunctionCall, EvaluateScript and
  RunMicrotasks trace events, which sum to the same on an idle machine);
- main-thread busy: the sum of the tasks, clipped to the window: script, style, layout, paint,
  GC, everything (CDP ``TaskDuration`` is shown beside it per run as a cross-check);
- style+layout: deltas of CDP ``RecalcStyleDuration`` + ``LayoutDuration``;
- stream: wall time from the first frame to the last, in the page.

Wall-clock task times include the time the OS gave the CPU to other processes: on a shared
machine that can be most of it, so a second table has the main thread's CPU time for the same
tasks (the trace's ``tdur``), and the goals are judged on both.

Ratios are time(20,000 tokens)/time(10,000 tokens) per renderer: about 2 when the cost grows
linearly with the reply, about 4 when it grows quadratically. Goals for the project's renderer:
no task over 50 ms, ratios at most 2.2. The agent streams flat out, so the hub sends about a
dozen frames of up to 16 KiB for 20,000 tokens and the naive floor re-renders only a dozen
times: it comes out about 2x worse here, and far worse at a model's pace of a frame every few
tokens.

``--profile`` adds one run of the project's renderer at 20,000 tokens under the CDP sampling
profiler (no trace), against an unminified build of the same sources made in the temp dir with
esbuild from ``js/node_modules``, and prints where the main thread's time went: by bundle
module, and by function (self and inclusive time).

The server listens on 127.0.0.1 only; every wait has a timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

from harness.chromium import (
    TRACE_CATEGORIES,
    add_chromium_option,
    launch,
    sampled_stacks,
    self_and_inclusive,
    start_profiler,
)
from harness.documents import make_document
from harness.report import publish, table, verdict
from harness.stats import median
from harness.traces import Window, cpu, wall

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))
from server_process import JupyterServer, isolated_env  # noqa: E402  (the tests' launcher)

PLUGINS = HERE / "plugins"  # the ``recite`` agent, as an installed distribution
AGENT = "recite"
STATIC = REPO / "jupyter_streamchat" / "widget" / "static"
RESULTS = HERE / "results" / "render.md"
RENDERERS = ("project", "naive")
SIZES = (10_000, 20_000)
GOAL_LONGEST_MS = 50.0
GOAL_RATIO = 2.2

PAGE_TIMEOUT_MS = 30_000  # Playwright actions and page loads
REPLY_TIMEOUT_MS = 120_000  # one reply streamed and rendered; only turns a hang into an error

# -- the page -------------------------------------------------------------------------------------

PAGE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>streamchat render bench</title>
<link rel="stylesheet" href="widget.css">
<style>body { margin: 8px; } #host { width: 900px; }</style>
</head>
<body>
<div id="host"></div>
<script type="module" src="bench.js"></script>
</body>
</html>
"""

# Loads the bundle named by ?bundle= (the profile uses an unminified build), mounts one
# ChatView and records what its renderer is fed.
PAGE_JS = r"""
const bundle = new URLSearchParams(location.search).get('bundle') || 'widget.js';
const { ChatView, renderMarkdown, serverSettings, StreamingMarkdown } = await import('./' + bundle);

// The floor: the whole message re-rendered from its full text on every chunk.
class NaiveMarkdown {
  constructor(el) { this.el = el; this.text = ''; }
  append(chunk) { this.text += chunk; this.el.replaceChildren(renderMarkdown(this.text)); }
  finish() {}
}

const RENDERERS = {
  project: el => new StreamingMarkdown(el), // what ChatView does without createRenderer
  naive: el => new NaiveMarkdown(el)
};

const nextFrame = () => new Promise(resolve => requestAnimationFrame(() => resolve()));
const settle = async () => { await nextFrame(); await nextFrame(); };

const reply = { frames: 0, chunks: [], firstFrameAt: 0, finishedAt: 0, body: null };
let replyFinished;
const finished = new Promise(resolve => { replyFinished = resolve; });
let view = null;

// Counts what the view feeds the renderer; the cost is a push per frame, the same for both.
function counted(make) {
  return body => {
    const inner = make(body);
    reply.body = body;
    return {
      append(chunk) {
        if (reply.frames++ === 0) {
          reply.firstFrameAt = performance.now();
          console.timeStamp('bench-first-frame');
        }
        reply.chunks.push(chunk);
        inner.append(chunk);
      },
      async finish() {
        console.timeStamp('bench-finish'); // the task that took the reply's final frame
        await inner.finish(); // the project's renderer settles once the last block is shown
        reply.finishedAt = performance.now();
        // The view sets data-status right after finish(): look once this task is over.
        setTimeout(replyFinished, 0);
      }
    };
  };
}

function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

window.bench = {
  /** Mount the view and wait until it is connected and the server has listed its agent. */
  async mount({ renderer, token, conversationId, agentId, timeoutMs }) {
    view = new ChatView(document.getElementById('host'), {
      server: serverSettings(location.origin + '/', token),
      conversationId,
      agentId,
      createRenderer: counted(RENDERERS[renderer])
    });
    const root = view.root;
    // The window opens at the click on Send; a capturing listener runs before the view's own.
    root.querySelector('[data-testid=streamchat-send]').addEventListener('click', () => {
      console.timeStamp('bench-send');
    }, { capture: true });
    await within(new Promise(resolve => {
      const poll = () => {
        // Until the REST list of agents arrives, the picker holds a placeholder
        // "<id> (not on this server)" option.
        const picker = root.querySelector('[data-testid=streamchat-agent]');
        const listed = Array.from(picker.options)
          .some(o => o.value === agentId && !o.textContent.includes('not on'));
        if (root.dataset.connection === 'connected' && listed) {
          resolve();
        } else {
          setTimeout(poll, 20);
        }
      };
      poll();
    }), timeoutMs, `view connected with the ${agentId} agent`);
  },

  settle,

  /** Wait for the reply's end, let two frames render, then close the window. */
  async waitFinished(timeoutMs) {
    await within(finished, timeoutMs, 'reply complete');
    await settle();
    console.timeStamp('bench-end');
    const message = reply.body.closest('[data-testid=streamchat-message]');
    return {
      frames: reply.frames,
      maxChunk: Math.max(...reply.chunks.map(c => c.length)),
      streamMs: reply.finishedAt - reply.firstFrameAt,
      status: message.dataset.status,
      role: message.dataset.role
    };
  },

  /** After the window: is what was received and shown the document? */
  check(document) {
    const received = reply.chunks.join('');
    // Block boundaries and the tail change whitespace between elements, not the words shown.
    const squash = s => s.replace(/\s+/g, '');
    const shown = squash(reply.body.textContent);
    const expected = squash(renderMarkdown(document).textContent);
    let at = 0;
    while (at < shown.length && shown[at] === expected[at]) {
      at++;
    }
    const note = reply.body.parentElement.querySelector('.streamchat-note');
    return {
      receivedEqual: received === document,
      receivedLength: received.length,
      shownEqual: shown === expected,
      shownAround: shown.slice(Math.max(0, at - 40), at + 40),
      expectedAround: expected.slice(Math.max(0, at - 40), at + 40),
      note: note && !note.hidden ? note.textContent : ''
    };
  }
};
window.benchReady = true;
"""


def prepare_static(tmp: Path, unminified: bool) -> Path:
    """The bench page and copies of the bundle, in a dir the server serves under /static/."""
    static = tmp / "static"
    static.mkdir()
    for name in ("widget.js", "widget.css"):
        if not (STATIC / name).exists():
            raise SystemExit(f"{STATIC / name} is missing: build it with `cd js && npm run build`")
        shutil.copy(STATIC / name, static / name)
    (static / "bench.html").write_text(PAGE_HTML)
    (static / "bench.js").write_text(PAGE_JS)
    if unminified:
        esbuild = REPO / "js" / "node_modules" / ".bin" / "esbuild"
        if not esbuild.exists():
            raise SystemExit(f"--profile needs {esbuild} (cd js && npm ci)")
        subprocess.run(
            [
                str(esbuild),
                "src/widget/index.ts",
                "--bundle",
                "--format=esm",
                "--target=es2020",
                "--loader:.css=css",
                f"--outfile={static / 'widget.dev.js'}",
                "--log-level=warning",
            ],
            cwd=REPO / "js",
            check=True,
            timeout=120,
        )
    return static


def write_documents(tmp: Path) -> tuple:
    """(the dir the recite agent reads, {tokens: document})."""
    docs = tmp / "docs"
    docs.mkdir()
    documents = {tokens: make_document(tokens) for tokens in SIZES}
    for tokens, document in documents.items():
        (docs / f"doc-{tokens}.md").write_text(document, encoding="utf-8")
    return docs, documents


def bench_server(tmp: Path, docs: Path, static: Path) -> JupyterServer:
    """The server (started by ``with``): the recite agent installed, reading ``docs``."""
    base = tmp / "server"
    path = os.pathsep.join(filter(None, (str(PLUGINS), os.environ.get("PYTHONPATH"))))
    env = isolated_env(base, PYTHONPATH=path, STREAMCHAT_BENCH_DOCS=str(docs))
    return JupyterServer(
        base, f"--ServerApp.extra_static_paths={json.dumps([str(static)])}", env=env
    )


# -- one run --------------------------------------------------------------------------------------


def metrics(cdp) -> dict:
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def open_view(browser, server: JupyterServer, renderer: str, bundle: str = "widget.js"):
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.goto(server.http_url(f"static/bench.html?bundle={bundle}"), wait_until="load")
    page.wait_for_function("window.benchReady === true")
    page.evaluate(
        "o => bench.mount(o)",
        {
            "renderer": renderer,
            "token": server.token,
            "agentId": AGENT,
            "timeoutMs": PAGE_TIMEOUT_MS,
            "conversationId": f"bench-{renderer}-{uuid.uuid4().hex[:8]}",
        },
    )
    return context, page


def ask_for(page, tokens: int) -> None:
    """Type the message that asks the agent for the document of ``tokens`` tokens."""
    page.locator("[data-testid=streamchat-input]").fill(str(tokens))
    page.evaluate("bench.settle()")  # the filled textarea is laid out before the window opens


def click_send_and_wait(page) -> dict:
    page.locator("[data-testid=streamchat-send]").click()
    return page.evaluate("ms => bench.waitFinished(ms)", REPLY_TIMEOUT_MS)


def check_reply(page, document: str, seen: dict, label: str) -> None:
    check = page.evaluate("document => bench.check(document)", document)
    problems = []
    if seen["role"] != "assistant" or seen["status"] != "complete":
        problems.append(f"reply ended as {seen['role']}/{seen['status']}")
    if check["note"]:
        problems.append(f"note shown: {check['note']!r}")
    if not check["receivedEqual"]:
        problems.append(
            f"received {check['receivedLength']} chars, not the document's {len(document)}"
        )
    if not check["shownEqual"]:
        problems.append(
            "rendered text differs from renderMarkdown(document):\n"
            f"  shown    ...{check['shownAround']}...\n"
            f"  expected ...{check['expectedAround']}..."
        )
    if problems:
        raise AssertionError(f"{label}: " + "; ".join(problems))


def run_once(browser, server: JupyterServer, renderer: str, document: str, tokens: int) -> dict:
    label = f"{renderer} {tokens:,} tokens"
    context, page = open_view(browser, server, renderer)
    try:
        ask_for(page, tokens)
        cdp = context.new_cdp_session(page)
        cdp.send("Performance.enable")
        before = metrics(cdp)
        browser.start_tracing(page=page, categories=TRACE_CATEGORIES)
        try:
            seen = click_send_and_wait(page)
            after = metrics(cdp)
        finally:
            trace = browser.stop_tracing()
        check_reply(page, document, seen, label)
    finally:
        context.close()
    delta = {name: (after[name] - before[name]) * 1000 for name in before}
    return {
        "frames": seen["frames"],
        "max_chunk": seen["maxChunk"],
        "stream_ms": seen["streamMs"],
        **main_thread_tasks(trace, label),
        "script_ms": delta["ScriptDuration"],
        "task_metric_ms": delta["TaskDuration"],
        "layout_ms": delta["LayoutDuration"] + delta["RecalcStyleDuration"],
    }


# -- the trace ------------------------------------------------------------------------------------

MARKS = ("bench-send", "bench-first-frame", "bench-finish", "bench-end")


def main_thread_tasks(trace: bytes, label: str) -> dict:
    """Top-level tasks of the page's main thread between the marks the page logged."""
    window = Window(trace, "bench-send", "bench-end", "bench-", MARKS, label)
    first, finish = window.marks["bench-first-frame"], window.marks["bench-finish"]

    def what(task, clock) -> str:
        """When the task ran, and its largest parts in ms of that clock."""
        parts = (
            ", ".join(
                f"{name} {ms:.0f}"
                for name, ms in window.parts(task, clock).most_common(4)
                if ms >= 1
            )
            or "-"
        )
        if task["ts"] + task["dur"] < first:
            when = "before the first frame"
        elif task["ts"] > finish:
            when = "after the finish"
        else:
            when = "finishing" if task["ts"] + task["dur"] >= finish else "streaming"
        return f"{when}: {parts}"

    return {
        **window.figures(),
        "longest_what": what(window.longest, wall),
        "longest_cpu_what": what(window.longest_cpu, cpu),
    }


# -- profile --------------------------------------------------------------------------------------


def bundle_modules(bundle: Path) -> list:
    """(first line, source path) of each module in an unminified esbuild bundle."""
    sections = []
    for number, line in enumerate(bundle.read_text().splitlines()):
        if (
            line.startswith("// ")
            and ("/" in line or line.endswith((".ts", ".js", ".mjs")))
            and " " not in line[3:]
        ):
            sections.append((number, line[3:]))
    return sections


def module_of(sections: list, line: int) -> str:
    found = "(bundle helpers)"  # esbuild's own code comes before the first module
    for first, path in sections:
        if first > line:
            break
        found = path
    return found.replace("node_modules/", "").split("/")[0] if "node_modules/" in found else found


def short(name: str, limit: int = 60) -> str:
    """A function name for a table cell (V8 names regexps by their whole source)."""
    name = name.replace("|", "\\|")
    return name if len(name) <= limit else name[: limit - 1] + "…"


def profile_once(
    browser, server: JupyterServer, static: Path, document: str, tokens: int, top: int = 15
) -> str:
    """Where the main thread's time goes while the project's renderer takes the reply."""
    context, page = open_view(browser, server, "project", bundle="widget.dev.js")
    try:
        ask_for(page, tokens)
        cdp = context.new_cdp_session(page)
        start_profiler(cdp)
        seen = click_send_and_wait(page)
        profile = cdp.send("Profiler.stop")["profile"]
        check_reply(page, document, seen, f"profile {tokens:,} tokens")
    finally:
        context.close()
    sections = bundle_modules(static / "widget.dev.js")

    def name(node) -> tuple:
        frame = node["callFrame"]
        if "widget.dev.js" in frame["url"]:
            return (
                frame["functionName"] or "(anonymous)",
                f"{module_of(sections, frame['lineNumber'])}:{frame['lineNumber'] + 1}",
            )
        return (
            frame["functionName"] or frame["url"].rsplit("/", 1)[-1] or "(anonymous)",
            "native" if not frame["url"] else frame["url"].rsplit("/", 1)[-1],
        )

    stacks = list(sampled_stacks(profile, name))
    self_us, total_us = self_and_inclusive(stacks)
    by_module = Counter()
    for delta, stack in stacks:
        # The bundle module nearest the sampled function.
        module = next((where.split(":")[0] for _, where in stack if ":" in where), None)
        if module is None:  # the browser's own work, or Playwright's script in the page
            leaf = stack[0][0]
            module = leaf if leaf in ("(program)", "(garbage collector)") else "(other)"
        by_module[module] += delta
    busy = sum(self_us.values())
    lines = [
        f"Profile of the project's renderer, {tokens:,} tokens, unminified build "
        f"(CDP sampling every 0.1 ms, {busy / 1000:.0f} ms of main-thread samples "
        "outside idle). '(program)' is the browser's own work: style, layout, paint.",
        "",
        "Main-thread time by bundle module (native calls counted in the module that made them):",
        "",
        "| module | ms | share |",
        "|---|---:|---:|",
    ]
    lines += [f"| {m} | {us / 1000:.1f} | {us / busy:.0%} |" for m, us in by_module.most_common()]
    for title, times in (("self", self_us), ("inclusive", total_us)):
        lines += [
            "",
            f"Functions by {title} time:",
            "",
            "| function | where | ms | share |",
            "|---|---|---:|---:|",
        ]
        rows = [(k, us) for k, us in times.most_common() if title == "self" or ":" in k[1]]
        lines += [
            f"| {short(fn)} | {where} | {us / 1000:.1f} | {us / busy:.0%} |"
            for (fn, where), us in rows[:top]
        ]
    return "\n".join(lines)


# -- report ---------------------------------------------------------------------------------------

COLUMNS = (
    "frames",
    "max_chunk",
    "longest_ms",
    "longest_cpu_ms",
    "script_ms",
    "script_cpu_ms",
    "busy_ms",
    "busy_cpu_ms",
    "layout_ms",
    "stream_ms",
)


def report(runs: dict, repeats: int, browser_version: str, load: tuple, elapsed: float) -> str:
    small, large = SIZES
    cells = [(renderer, tokens) for renderer in RENDERERS for tokens in SIZES]
    med = {cell: {k: median(r[k] for r in runs[cell]) for k in COLUMNS} for cell in cells}
    out = [
        f"Chromium {browser_version}; medians of {repeats} runs per renderer and size "
        f"(renderers alternated); {os.cpu_count()} CPUs, load average {load[0]:.1f} before "
        f"and {load[1]:.1f} after; Python {platform.python_version()}; the user sends "
        f'"{large}" (or "{small}") and the {AGENT} agent streams that many tokens flat '
        "out; hub batch window 16 ms.",
        "",
        "Wall-clock time, Send to the end of the reply:",
        "",
    ]
    out += table(
        [
            "renderer",
            "tokens",
            "frames",
            "longest task (ms)",
            "scripting (ms)",
            "main-thread busy (ms)",
            "style+layout (ms)",
            "stream (ms)",
        ],
        [
            [
                r,
                f"{t:,}",
                f"{m['frames']:.0f}",
                f"{m['longest_ms']:.1f}",
                f"{m['script_ms']:.1f}",
                f"{m['busy_ms']:.1f}",
                f"{m['layout_ms']:.1f}",
                f"{m['stream_ms']:.0f}",
            ]
            for (r, t), m in med.items()
        ],
    )
    out += [
        "",
        "The main thread's CPU time over the same window (what the wall-clock figures "
        "come down to when no other process competes for the cores):",
        "",
    ]
    out += table(
        ["renderer", "tokens", "longest task (ms)", "scripting (ms)", "main-thread busy (ms)"],
        [
            [
                r,
                f"{t:,}",
                f"{m['longest_cpu_ms']:.1f}",
                f"{m['script_cpu_ms']:.1f}",
                f"{m['busy_cpu_ms']:.1f}",
            ]
            for (r, t), m in med.items()
        ],
    )

    largest = max(r["max_chunk"] for rs in runs.values() for r in rs)
    growth = {
        renderer: {
            k: med[renderer, large][k] / med[renderer, small][k]
            for k in ("script_ms", "busy_ms", "script_cpu_ms", "busy_cpu_ms")
        }
        for renderer in RENDERERS
    }
    vs_project = {
        renderer: {
            k: med[renderer, large][k] / med["project", large][k]
            for k in ("busy_ms", "busy_cpu_ms")
        }
        for renderer in RENDERERS
    }
    out += ["", f"(largest frame: {largest:,} characters)", ""]
    out += table(
        [
            "renderer",
            f"scripting {large:,}/{small:,}",
            f"busy {large:,}/{small:,}",
            f"scripting CPU {large:,}/{small:,}",
            f"busy CPU {large:,}/{small:,}",
            f"busy vs project at {large:,}",
            f"busy CPU vs project at {large:,}",
        ],
        [
            [
                r,
                *(f"{g[k]:.2f}" for k in ("script_ms", "busy_ms", "script_cpu_ms", "busy_cpu_ms")),
                f"{vs_project[r]['busy_ms']:.1f}",
                f"{vs_project[r]['busy_cpu_ms']:.1f}",
            ]
            for r, g in growth.items()
        ],
    )

    project = [med["project", tokens] for tokens in SIZES]
    g = growth["project"]
    goals = [
        (
            f"no task over {GOAL_LONGEST_MS:.0f} ms",
            max(m["longest_ms"] for m in project),
            max(m["longest_cpu_ms"] for m in project),
            GOAL_LONGEST_MS,
            " ms",
        ),
        (
            f"scripting {large:,}/{small:,} ≤ {GOAL_RATIO}",
            g["script_ms"],
            g["script_cpu_ms"],
            GOAL_RATIO,
            "",
        ),
        (
            f"busy {large:,}/{small:,} ≤ {GOAL_RATIO}",
            g["busy_ms"],
            g["busy_cpu_ms"],
            GOAL_RATIO,
            "",
        ),
    ]
    out += [""] + table(
        ["goal (project's renderer; worse of the two sizes)", "wall clock", "", "CPU", ""],
        [
            [
                what,
                f"{wall:.{1 if unit else 2}f}{unit}",
                verdict(wall <= limit),
                f"{cpu:.{1 if unit else 2}f}{unit}",
                verdict(cpu <= limit),
            ]
            for what, wall, cpu, limit, unit in goals
        ],
        align="lrlrl",
    )

    out += [
        "",
        "All runs: longest task, wall ms (when; its largest parts, wall ms), and the "
        "task with the most CPU time, CPU ms (when; its largest parts, CPU ms) / scripting "
        "ms / busy ms (CDP TaskDuration beside it, a cross-check of the trace). Parts nest: "
        "a layout forced by script counts in FunctionCall too.",
    ]
    for renderer, tokens in cells:
        out.append(
            f"- {renderer} {tokens:,}: "
            + "; ".join(
                f"{r['longest_ms']:.0f} ({r['longest_what']}), CPU {r['longest_cpu_ms']:.0f} "
                f"({r['longest_cpu_what']}) / {r['script_ms']:.0f} / {r['busy_ms']:.0f} "
                f"({r['task_metric_ms']:.0f})"
                for r in runs[renderer, tokens]
            )
        )
    out.append(f"\n(total {elapsed:.0f} s)")
    return "\n".join(out)


# -- main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 runs per cell instead of 5")
    parser.add_argument("--runs", type=int, help="runs per renderer and size")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile the project's renderer (needs js/node_modules)",
    )
    add_chromium_option(parser)
    args = parser.parse_args()
    repeats = args.runs or (2 if args.quick else 5)

    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="streamchat-bench-render-"))
    try:
        docs, documents = write_documents(tmp)
        static = prepare_static(tmp, unminified=args.profile)
        with bench_server(tmp, docs, static) as server, sync_playwright() as pw:
            browser = launch(pw, args.chromium)
            try:
                runs = defaultdict(list)
                for i in range(repeats):
                    order = RENDERERS if i % 2 == 0 else RENDERERS[::-1]
                    for tokens in SIZES:
                        for renderer in order:
                            print(
                                f"run {i + 1}/{repeats}: {renderer}, {tokens:,} tokens",
                                file=sys.stderr,
                            )
                            runs[renderer, tokens].append(
                                run_once(browser, server, renderer, documents[tokens], tokens)
                            )
                load_after = os.getloadavg()[0]
                profile = (
                    profile_once(browser, server, static, documents[SIZES[-1]], SIZES[-1])
                    if args.profile
                    else ""
                )
                version = browser.version
            finally:
                browser.close()
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
        shutil.rmtree(tmp, ignore_errors=True)
    text = report(runs, repeats, version, (load_before, load_after), time.monotonic() - started)
    if profile:
        text += "\n\n" + profile
    publish(text, RESULTS, REPO)


if __name__ == "__main__":
    main()
