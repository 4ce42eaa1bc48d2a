"""Benchmark of the JupyterLab "Chat" side panel: the list in large stores, long conversations.

Run ``python bench/bench_panel.py`` (about 3 minutes) or ``--quick`` (about one; stores of 10
and 1,000 conversations only, fewer repeats). It needs the built labextension (``cd js && npm
run build``), Playwright's Python package and a Chromium (Debian's ``/usr/bin/chromium`` by
default, ``--chromium`` to point elsewhere).

Set-up: before any server starts, SQLite files are seeded through the store's own code
(``SQLiteStore.create_exchange`` and ``append`` with status ``complete``, so the schema, the
indexes and the search index are the real ones): one file per list size, each conversation one
question and a short finished answer, and one file holding two long conversations whose
answers are generated markdown documents of 10,000 tokens each (``make_document`` of
bench/harness/documents.py, the documents bench_render.py streams: headings, paragraphs,
lists, tables, fenced code), stored as a model's reply is, a frame of a few tokens per chunk.
One real ``jupyter lab`` subprocess per file (the browser tests' ``LabServer``: every Jupyter
and XDG dir in a temp dir) runs with ``--SQLiteStore.path`` on it and
``--StreamChatApp.log_level=DEBUG``: jupyter_server logs each request with the time it took at
debug level, through the log of the app that owns the handler (``[D ... StreamChatApp] 200 GET
/streamchat/api/conversations?limit=50 (...) 3.21ms``; ``--ServerApp.log_level`` does not
reach those lines). The servers run side by side and every measurement goes round them in
turn, so that noise on a busy machine hits every size alike.

1. The list, for stores of 10, 1,000 and 10,000 conversations.

   a. The first page, ``GET {base}streamchat/api/conversations?limit=50``, as the panel asks
      for it: timed from Python on a kept-alive connection (client), and as the server logged
      it (server: from the request's headers being read to its reply being written). Each
      round also times what the request is made of: ``GET streamchat/api/agents`` on the
      same server (the same path through Jupyter's auth and the extension's handlers, with no
      store behind it), and, in this process on the same file, the store's call
      (``SQLiteStore.list_conversations(51)``: the handler asks for one more than a page to
      know whether another follows), the JSON encoding of the page as the handler does it,
      and two raw ``sqlite3`` queries on an open connection: the floor, the store's own
      SELECT (its column list imported from the store, so it is the same SQL), and the bare
      walk of the ``(updated_at, id)`` index that any keyset page must do. The query plan of
      the store's SELECT on the largest file is printed beneath.

   b. In Chromium: the JupyterLab page is loaded afresh (``?reset``, so no saved layout opens
      the panel early); as soon as the panel's tab shows, Playwright clicks it. Timed in the
      page, from the click's ``pointerdown`` to the first animation frame in which an entry
      of the list is visible (the frame then painted shows it), under a trace that gives the
      main thread's CPU time and longest task in that window (see 2). The panel asks for the
      list when its WebSocket opens, while JupyterLab starts, whether or not it is shown: the
      table says whether the list had arrived before the click, when (ms after the
      navigation began), and how long its request took in the browser's resource timing and
      in the server's log. One load per store before the timed ones fills the browser cache.

   The goal: the store of 10,000 costs at most 1.5 times the store of 10, for the server's
   time and for the click to the list (medians). The store of 10 shows 10 entries and the
   others a full page of 50, so the ratios of 10,000 to 1,000 are printed too: they compare
   the same page in stores ten times apart.

2. Switching between the two long conversations in the panel. The first one is opened from
   the list; then, several times, the back button (``streamchat-back``) and the other entry:
   each switch is done once the last message of the conversation opened is the stored reply,
   ``data-status="complete"``, and rendered (no block left waiting as plain text). Each
   switch runs under a Chromium trace (as in bench_render.py): its main-thread tasks are the
   top-level ``ThreadControllerImpl::RunTask`` events of the ``CrRendererMain`` thread that
   logged the window's ``console.timeStamp`` marks, from the press on the back button to two
   animation frames after the conversation was shown. Reported: the longest of those tasks,
   on the clock and in the thread's CPU time (a shared machine's other processes inflate the
   first), what it did (its largest trace events, the script call that took longest in it,
   its largest layout), the main thread's busy time, the page's own count of long tasks (a
   ``PerformanceObserver`` for ``longtask``, which sees only tasks over 50 ms: a
   cross-check of the trace), and the time from the click on the entry to the conversation
   shown. Beside it, the server's share: SUBSCRIBE to HISTORY of one long conversation over
   the WebSocket, from Python. Goal: the longest task under 50 ms (median over the
   switches). The trace slows the page a little, so these figures err on the high side.

``--profile`` adds one click on the tab (largest store) and one switch under the CDP sampling
profiler, without a trace, and prints the functions that took the time (the labextension is
minified, but its methods keep their names).

Everything listens on 127.0.0.1 only; every wait has a timeout, every loop a bound.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import http.client
import json
import os
import platform
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from jupyter_streamchat import protocol as p
from jupyter_streamchat.agents.base import split_tokens
from jupyter_streamchat.store import Append, SQLiteStore, local_user

# The store's own column list: the floor must run the very SQL the store runs.
from jupyter_streamchat.store.sqlite import _CONVERSATION_COLUMNS

from harness.chromium import (
    TRACE_CATEGORIES,
    add_chromium_option,
    launch,
    sampled_stacks,
    self_and_inclusive,
    start_profiler,
)
from harness.client import connect, frame_of, send
from harness.documents import make_document
from harness.report import publish, table, verdict
from harness.stats import median, p90
from harness.stores import store_reply
from harness.traces import Window

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO / "tests" / "browser"), str(REPO / "tests")]
from labserver import LabServer  # noqa: E402  (the browser tests' `jupyter lab` launcher)

RESULTS = HERE / "results" / "panel.md"
LABEXTENSION = REPO / "jupyter_streamchat" / "labextension" / "package.json"

SIZES = (10, 1_000, 10_000)
QUICK_SIZES = (10, 1_000)
PAGE = p.LIST_PAGE  # what the panel asks for (limit=50)
LONG_TOKENS = 10_000
TOKENS_PER_FRAME = 4  # a stored reply's chunks: what a fast model sends per 16 ms frame
GOAL_RATIO = 1.5
GOAL_TASK_MS = 50.0

SEED_BATCH = 1_000  # exchanges created at once: the store's writer commits them together
LIST_PATH = f"streamchat/api/conversations?limit={PAGE}"  # as the panel asks for it
# This script's own requests carry a parameter the handlers ignore, so that their lines in the
# server's log are told apart from the page's and from the launcher's readiness check.
API_LIST_PATH = LIST_PATH + "&from=bench"
AGENTS_PATH = "streamchat/api/agents?from=bench"  # the cheapest path through the extension
LOG_GUARD = 10.0  # seconds for a request's log line to appear (written after the reply)

GUARD_MS = 60_000  # page loads and waits; a hang guard, never a performance claim
SIDEBAR_TAB = '[data-id="streamchat-sidebar"]'
ENTRY = '[data-testid="streamchat-conversation"]'
BACK = '[data-testid="streamchat-back"]'


@dataclass
class Settings:
    sizes: tuple
    api_repeats: int  # GETs per size (after the warm-up)
    loads: int  # page loads per size
    switches: int


def settings_from(args) -> Settings:
    if args.quick:
        return Settings(QUICK_SIZES, 40, 3, 4)
    return Settings(SIZES, 200, 10, 10)


# -- the stores -----------------------------------------------------------------------------------


def in_thread(coroutine):
    """Run a coroutine to its end on an event loop of its own, in a thread of its own:
    Playwright's sync API may already run an event loop in this one."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def short_answer(i: int) -> str:
    return (
        f"Answer {i}: the hub streams the reply, the store keeps every frame, and a "
        f"client that comes back asks for what it lacks by sequence number."
    )


async def seed_list(path: Path, count: int) -> None:
    """``count`` finished conversations, ``conv-00000`` the oldest."""
    store = SQLiteStore(path=str(path))
    await store.open()
    try:
        for first in range(0, count, SEED_BATCH):
            numbers = range(first, min(count, first + SEED_BATCH))
            # Submitted together, the writer thread takes them in one transaction.
            exchanges = await asyncio.gather(
                *(
                    store.create_exchange(
                        f"conv-{i:05d}",
                        "echo",
                        f"Seeded question {i}: how "
                        "does the chat keep a reply when the kernel dies?",
                        f"m-{i}",
                    )
                    for i in numbers
                )
            )
            await asyncio.gather(
                *(
                    store.append(Append(e.message_id, 1, [short_answer(i)], status=p.COMPLETE))
                    for i, e in zip(numbers, exchanges)
                )
            )
    finally:
        await store.close()


async def seed_long(path: Path, documents: dict) -> dict:
    """One conversation per document, the reply stored frame by frame; -> {id: reply id}."""
    store = SQLiteStore(path=str(path))
    await store.open()
    replies = {}
    try:
        for conversation_id, document in documents.items():
            exchange = await store.create_exchange(
                conversation_id,
                "echo",
                f"Tell me everything ({conversation_id})",
                f"m-{conversation_id}",
            )
            tokens = split_tokens(document)
            frames = [
                "".join(tokens[i : i + TOKENS_PER_FRAME])
                for i in range(0, len(tokens), TOKENS_PER_FRAME)
            ]
            await store_reply(store, exchange.message_id, frames)
            replies[conversation_id] = exchange.message_id
    finally:
        await store.close()
    return replies


# -- part 1a: the list API and its floors ------------------------------------------------------

USER = local_user()  # whose conversations the stores below list

BARE_SQL = (
    "SELECT id FROM conversations WHERE user_id = ? ORDER BY updated_at DESC, id DESC LIMIT ?"
)
STORE_SQL = (
    f"SELECT {_CONVERSATION_COLUMNS} FROM conversations c WHERE c.user_id = ? "
    "ORDER BY c.updated_at DESC, c.id DESC LIMIT ?"
)


def query_plan(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("EXPLAIN QUERY PLAN " + STORE_SQL, (USER, PAGE + 1)).fetchall()
    finally:
        conn.close()
    return "; ".join(row[-1] for row in rows)


def encode_page(records: list) -> bytes:
    """The page as ConversationsHandler writes it."""
    page = records[:PAGE]
    last = page[-1] if len(records) > PAGE else None
    return json.dumps(
        {
            "conversations": [p.conversation_wire(c) for c in page],
            "next": p.list_cursor(last.updated_at, last.conversation_id) if last else None,
        }
    ).encode()


class Client:
    """GETs on a kept-alive connection, as a browser keeps one."""

    def __init__(self, lab: LabServer):
        self.lab = lab
        self.conn = http.client.HTTPConnection("127.0.0.1", lab.port, timeout=30)

    def get(self, path: str) -> tuple:
        """(seconds, parsed reply)."""
        target = lab_path(self.lab, path)
        started = time.perf_counter()
        self.conn.request("GET", target, headers={"Authorization": f"token {self.lab.token}"})
        response = self.conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"GET {target} -> {response.status}: {body[:300]!r}")
        return elapsed, json.loads(body)

    def close(self) -> None:
        self.conn.close()


def lab_path(lab: LabServer, path: str) -> str:
    """``path`` under the server's base URL, as it goes on the request line."""
    return lab.base_url + path


def logged_times(lab: LabServer, path: str, count: int = 0) -> list:
    """Seconds of every successful GET of ``path`` the server logged, in order, waiting (within
    a bound) until there are ``count``: the server logs a request once its reply is sent, so
    the client may be done before the line is written. At debug level jupyter_server logs
    "200 GET /streamchat/api/agents (user@ip) 1.24ms"."""
    line = re.compile(r"\b200 GET " + re.escape(lab_path(lab, path)) + r" \(.*?\) ([0-9.]+)ms")
    deadline = time.monotonic() + LOG_GUARD
    while True:
        found = [float(ms) / 1000 for ms in line.findall(lab.log_text())]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def check_page(size: int, page: dict) -> None:
    ids = [c["conversationId"] for c in page["conversations"]]
    if len(ids) != min(size, PAGE) or ids[0] != f"conv-{size - 1:05d}":
        raise AssertionError(
            f"store of {size}: the first page lists {len(ids)} conversations "
            f"starting {ids[:1]}, not the latest {min(size, PAGE)}"
        )


async def measure_api(s: Settings, labs: dict, files: dict) -> dict:
    """Per size: seconds of each GET and of each floor, measured round-robin."""
    clients = {size: Client(lab) for size, lab in labs.items()}
    conns = {size: sqlite3.connect(files[size]) for size in s.sizes}
    stores = {size: SQLiteStore(path=str(files[size])) for size in s.sizes}
    times = {
        size: {k: [] for k in ("client", "store", "encode", "sql_store", "sql_bare")}
        for size in s.sizes
    }
    warm_up = max(10, s.api_repeats // 10)  # first connections, lazy imports, page cache
    try:
        for store in stores.values():
            await store.open()
        for i in range(warm_up + s.api_repeats):
            for size in s.sizes:
                client_s, page = clients[size].get(API_LIST_PATH)
                check_page(size, page)
                clients[size].get(AGENTS_PATH)  # its time is read from the server's log
                # The blocking calls stall this loop, which has nothing else to do.
                started = time.perf_counter()
                records = await stores[size].list_conversations(PAGE + 1)
                store_s = time.perf_counter() - started
                started = time.perf_counter()
                encode_page(records)
                encode_s = time.perf_counter() - started
                sql = {}
                for name, query in (("sql_store", STORE_SQL), ("sql_bare", BARE_SQL)):
                    started = time.perf_counter()
                    conns[size].execute(query, (USER, PAGE + 1)).fetchall()
                    sql[name] = time.perf_counter() - started
                if i >= warm_up:
                    for name, value in (
                        ("client", client_s),
                        ("store", store_s),
                        ("encode", encode_s),
                        *sql.items(),
                    ):
                        times[size][name].append(value)
    finally:
        for client in clients.values():
            client.close()
        for conn in conns.values():
            conn.close()
        for store in stores.values():
            await store.close()
    for size, lab in labs.items():
        for path, key in ((API_LIST_PATH, "server"), (AGENTS_PATH, "agents_server")):
            logged = logged_times(lab, path, warm_up + s.api_repeats)
            if len(logged) != warm_up + s.api_repeats:
                raise RuntimeError(
                    f"store of {size}: {len(logged)} log lines for "
                    f"{warm_up + s.api_repeats} GETs of {path} (is "
                    "StreamChatApp.log_level DEBUG?)"
                )
            times[size][key] = logged[warm_up:]
    return times


# -- traces -------------------------------------------------------------------------------------

# The harness's trace categories, and the script stack of each forced layout, which names the
# function that asked for it (the bundle is minified, but keeps the names of methods).
PANEL_TRACE_CATEGORIES = [*TRACE_CATEGORIES, "disabled-by-default-devtools.timeline.stack"]


def window_tasks(trace: bytes, start_mark: str) -> dict:
    """The main thread's top-level tasks from ``start_mark`` to ``panel-shown``."""
    window = Window(trace, start_mark, "panel-shown", "panel-", label=start_mark)
    # Times in the description count from the click that opened something.
    click = next(
        (window.marks[m] for m in ("panel-entry", "panel-tab") if m in window.marks), window.start
    )
    return {
        **window.figures(),
        **window.work_ms(),
        "longest_what": describe(window, window.longest, click),
    }


def describe(window: Window, task: dict, click: float) -> str:
    """When a task ran (ms after the click; the window ends two frames after the result
    showed), its largest parts (wall ms), the script it ran longest, its largest style
    recalculation and layout."""
    inside = window.inside(task)
    words = [f"at {(task['ts'] - click) / 1000:+.0f} of {(window.end - click) / 1000:.0f} ms"]
    words += [f"{name} {ms:.0f}" for name, ms in window.parts(task).most_common(3) if ms >= 1]
    call = max(
        (e for e in inside if e["name"] == "FunctionCall"), key=lambda e: e["dur"], default=None
    )
    if call is not None:
        data = call.get("args", {}).get("data", {})
        where = data.get("url", "").rsplit("/", 1)[-1].split("?")[0]
        words.append(
            f"longest call {data.get('functionName') or '(anonymous)'} in "
            f"{where or '?'}:{data.get('lineNumber', 0) + 1}:"
            f"{data.get('columnNumber', 0) + 1}"
        )
    style = max(
        (e for e in inside if e["name"] == "UpdateLayoutTree"), key=lambda e: e["dur"], default=None
    )
    if style is not None and style["dur"] >= 1000 and "elementCount" in style.get("args", {}):
        words.append(
            f"largest style recalculation {style['dur'] / 1000:.0f} ms over "
            f"{style['args']['elementCount']} elements"
        )
    layout = max((e for e in inside if e["name"] == "Layout"), key=lambda e: e["dur"], default=None)
    if layout is not None and layout["dur"] >= 1000:
        begin = layout.get("args", {}).get("beginData", {})
        stack = [
            frame.get("functionName") or "(anonymous)" for frame in begin.get("stackTrace", [])[:3]
        ]
        words.append(
            f"largest layout {layout['dur'] / 1000:.0f} ms over "
            f"{begin.get('dirtyObjects', '?')} of {begin.get('totalObjects', '?')} "
            "layout objects" + (f", forced by {' < '.join(stack)}" if stack else "")
        )
    return ", ".join(words) or "-"


# -- part 1b: click on the panel's tab to the first page shown ---------------------------------

# Runs before JupyterLab's own scripts on every load: the page's clock of the presses that
# start a measurement, the marks of a trace window, and the browser's long tasks.
INIT_JS = r"""
(() => {
  const bench = window.__bench = { marks: {}, longtasks: [], done: null };
  try {
    new PerformanceObserver(list => {
      for (const e of list.getEntries()) bench.longtasks.push([e.startTime, e.duration]);
    }).observe({ type: 'longtask', buffered: true });
  } catch (e) {
    bench.longtasks = null;  // not supported: said so in the report
  }
  // A click starts with pointerdown, and Lumino's tab bar acts on it already.
  document.addEventListener('pointerdown', event => {
    const target = event.target instanceof Element ? event.target : null;
    const hit = target && target.closest(
      '[data-id="streamchat-sidebar"], [data-testid="streamchat-back"], ' +
      '[data-testid="streamchat-conversation"]');
    if (hit) {
      const name = hit.dataset.id ? 'tab'
        : hit.dataset.testid === 'streamchat-back' ? 'back' : 'entry';
      bench.marks[name] = performance.now();
      console.timeStamp('panel-' + name);
    }
  }, true);

  // Check `shown` in every animation frame from now on; the first frame where it holds is
  // when it became visible (that frame is painted next). Two frames later the window ends.
  // (`shown` reads only the DOM: see inView below.)
  bench.watch = (shown, guardMs) => {
    bench.done = null;
    const since = performance.now();
    const poll = () => {
      let seen = false;
      try { seen = shown(); } catch (e) { bench.done = { error: String(e) }; return; }
      if (seen) {
        const at = performance.now();
        requestAnimationFrame(() => requestAnimationFrame(() => {
          console.timeStamp('panel-shown');
          bench.done = { at, end: performance.now(), marks: { ...bench.marks } };
        }));
      } else if (performance.now() - since > guardMs) {
        bench.done = { error: `not shown after ${guardMs} ms` };
      } else {
        requestAnimationFrame(poll);
      }
    };
    requestAnimationFrame(poll);
  };

  // Shown: in the document and under no hidden element (Lumino hides a widget with the
  // lm-mod-hidden class, the panel its list or chat with the hidden attribute). Only the DOM
  // is read: asking for style or layout here would make the browser lay out the page in the
  // middle of the work being measured, and maybe twice in a frame.
  const inView = el => el.isConnected && el.closest('.lm-mod-hidden, [hidden]') === null;

  bench.listShown = () => {
    const entry = bench.marks.tab !== undefined && document.querySelector(
      '[data-testid="streamchat-sidebar"] [data-testid="streamchat-conversation"]');
    return !!entry && inView(entry);
  };

  bench.conversationShown = (conversationId, replyId) => {
    const sidebar = document.getElementById('streamchat-sidebar');
    if (!sidebar || sidebar.dataset.openConversation !== conversationId) return false;
    const messages = sidebar.querySelectorAll(
      '[data-testid="streamchat"] [data-testid="streamchat-message"]');
    const last = messages[messages.length - 1];
    return messages.length === 2 && last.dataset.messageId === replyId &&
      last.dataset.status === 'complete' && !last.querySelector('.streamchat-raw') &&
      last.querySelector('.streamchat-block') !== null && inView(last);
  };
})();
"""


def wait_done(page) -> dict:
    # Polled on a timer, not in every animation frame: the page's frames are what is timed.
    page.wait_for_function("() => window.__bench.done !== null", polling=100, timeout=GUARD_MS)
    done = page.evaluate("() => window.__bench.done")
    if "error" in done:
        raise RuntimeError(done["error"])
    return done


def load_lab(page, lab: LabServer) -> None:
    page.goto(f"{lab.url('lab')}?reset&token={lab.token}", timeout=GUARD_MS)
    page.locator(SIDEBAR_TAB).wait_for(state="visible", timeout=GUARD_MS)


def open_list_once(browser, page, lab: LabServer, size: int) -> dict:
    load_lab(page, lab)
    page.evaluate("ms => window.__bench.watch(window.__bench.listShown, ms)", GUARD_MS)
    browser.start_tracing(page=page, categories=PANEL_TRACE_CATEGORIES)
    try:
        page.locator(SIDEBAR_TAB).click()
        done = wait_done(page)
    finally:
        trace = browser.stop_tracing()
    click = done["marks"]["tab"]
    found = page.evaluate("""() => {
      const entries = document.querySelectorAll(
        '[data-testid="streamchat-sidebar"] [data-testid="streamchat-conversation"]');
      const request = performance.getEntriesByType('resource')
        .find(e => e.name.includes('/streamchat/api/conversations'));
      return { count: entries.length, first: entries[0].dataset.conversationId,
               request: request && { start: request.startTime, end: request.responseEnd } };
    }""")
    if found["count"] != min(size, PAGE) or found["first"] != f"conv-{size - 1:05d}":
        raise AssertionError(
            f"store of {size}: the panel shows {found['count']} entries from {found['first']}"
        )
    request = found["request"]
    if request is None:
        raise AssertionError("no list request in the page's resource timing")
    return {
        "shown_ms": done["at"] - click,
        "loaded_at": request["end"],  # ms after the navigation began
        "request_ms": request["end"] - request["start"],
        "before_click": request["end"] <= click,
        **window_tasks(trace, "panel-tab"),
    }


def measure_clicks(s: Settings, browser, labs: dict) -> dict:
    runs = {size: [] for size in s.sizes}
    pages = {}
    try:
        for size in s.sizes:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.add_init_script(INIT_JS)
            pages[size] = context.new_page()
        for i in range(s.loads + 1):  # the first round fills the browser's cache: not counted
            order = s.sizes if i % 2 == 0 else s.sizes[::-1]
            for size in order:
                print(f"  load {i}/{s.loads}: {size:,} conversations", file=sys.stderr)
                run = open_list_once(browser, pages[size], labs[size], size)
                if i:
                    runs[size].append(run)
                # An idle JupyterLab still polls the server: only one page is live at a time.
                pages[size].goto("about:blank")
    finally:
        for page in pages.values():
            page.context.close()
    for size, lab in labs.items():
        # The page's requests of the list, but for the uncounted first load's (each load's
        # request was answered before its click, so the lines come in the order of the loads).
        runs[size] = {"runs": runs[size], "server": logged_times(lab, LIST_PATH, 1 + s.loads)[1:]}
    return runs


# -- part 2: switching between two long conversations ------------------------------------------


def open_conversation(browser, page, conversation_id: str, reply_id: str, back: bool) -> dict:
    """(Back to the list, then) click the conversation's entry; wait until it is shown."""
    start_mark = "panel-back" if back else "panel-entry"
    browser.start_tracing(page=page, categories=PANEL_TRACE_CATEGORIES)
    try:
        if back:
            page.locator(BACK).click()
            page.locator(f"{ENTRY}[data-conversation-id='{conversation_id}']").wait_for(
                state="visible", timeout=GUARD_MS
            )
        page.evaluate(
            "([id, reply, ms]) => window.__bench.watch("
            "() => window.__bench.conversationShown(id, reply), ms)",
            [conversation_id, reply_id, GUARD_MS],
        )
        page.locator(f"{ENTRY}[data-conversation-id='{conversation_id}']").click()
        done = wait_done(page)
    finally:
        trace = browser.stop_tracing()
    marks = done["marks"]
    window_start = marks["back"] if back else marks["entry"]
    longtasks = page.evaluate(
        "([a, b]) => window.__bench.longtasks && window.__bench.longtasks"
        ".filter(([at, ms]) => at + ms > a && at < b).map(t => t[1])",
        [window_start, done["end"]],
    )
    return {
        "shown_ms": done["at"] - marks["entry"],
        "observed": longtasks,  # None when the browser has no longtask entries
        **window_tasks(trace, start_mark),
    }


def check_text(page, document: str) -> None:
    """The reply shown ends as the document does (its last paragraph is plain words)."""
    tail = document.rsplit("\n\n", 1)[-1]
    if re.search(r"[*`\[|#>_-]", tail):
        return  # markdown in it: the rendered text differs from the source, skip the check
    shown = page.evaluate("""() => {
      const all = document.querySelectorAll(
        '#streamchat-sidebar [data-testid="streamchat-message"]');
      return all[all.length - 1].textContent;
    }""")
    squash = lambda text: re.sub(r"\s+", "", text)  # noqa: E731
    if not squash(shown).endswith(squash(tail)):
        raise AssertionError(f"the reply shown ends {shown[-80:]!r}, not {tail[-80:]!r}")


def measure_switches(s: Settings, browser, lab: LabServer, replies: dict, documents: dict) -> dict:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(INIT_JS)
    page = context.new_page()
    try:
        load_lab(page, lab)
        page.locator(SIDEBAR_TAB).click()
        page.locator(ENTRY).first.wait_for(state="visible", timeout=GUARD_MS)
        ids = list(replies)
        first = open_conversation(browser, page, ids[0], replies[ids[0]], back=False)
        check_text(page, documents[ids[0]])
        switches = []
        for i in range(s.switches):
            target = ids[(i + 1) % 2]
            print(f"  switch {i + 1}/{s.switches}: to {target}", file=sys.stderr)
            switches.append(open_conversation(browser, page, target, replies[target], back=True))
            if i < 2:
                check_text(page, documents[target])
        return {"first": first, "switches": switches}
    finally:
        context.close()


async def measure_history(lab: LabServer, replies: dict, documents: dict, repeats: int) -> list:
    """Seconds from SUBSCRIBE to the HISTORY of a long conversation, from Python: what the
    server and the socket add to a switch before the page renders anything."""
    ws = await connect(lab.url("streamchat/ws").replace("http://", "ws://"), lab.token)
    times = []
    try:
        for i in range(repeats + 1):  # the first one warms up
            conversation_id = list(replies)[i % 2]
            started = time.perf_counter()
            await send(ws, "SUBSCRIBE", conversationId=conversation_id)
            # Frames of other kinds may come first.
            frame, size = await asyncio.wait_for(
                frame_of(ws, ("HISTORY",), conversation_id, max_frames=100), GUARD_MS / 1000
            )
            if frame["type"] == "ERROR":
                raise RuntimeError(f"SUBSCRIBE refused: {frame}")
            elapsed = time.perf_counter() - started
            reply = frame["messages"][-1]
            if (
                reply["messageId"] != replies[conversation_id]
                or reply["text"] != documents[conversation_id]
            ):
                raise AssertionError(f"HISTORY of {conversation_id} lacks the stored reply")
            if i:
                times.append((elapsed, size))
            await send(ws, "UNSUBSCRIBE", conversationId=conversation_id)
    finally:
        ws.close()
    return times


# -- profile (--profile) -------------------------------------------------------------------------

PROFILE_TOP = 12  # functions listed per profile


def profiled(context, page, act) -> dict:
    """Run ``act()`` (which clicks and waits until the result is shown) under the CDP sampling
    profiler; -> {"inclusive": Counter, "self": Counter} of microseconds by (function, where)."""
    cdp = context.new_cdp_session(page)
    start_profiler(cdp)
    try:
        act()
    finally:
        profile = cdp.send("Profiler.stop")["profile"]
        cdp.detach()

    def name(node: dict) -> tuple:
        frame = node["callFrame"]
        where = frame["url"].rsplit("/", 1)[-1].split("?")[0]
        if "/jupyter-streamchat/" in frame["url"]:
            where = "streamchat " + where
        return (
            frame["functionName"] or "(anonymous)",
            f"{where}:{frame['lineNumber'] + 1}" if where else "native",
        )

    # Left out: waiting, and the browser's own work outside script.
    own, inclusive = self_and_inclusive(
        sampled_stacks(profile, name, skip=("(idle)", "(root)", "(program)"))
    )
    return {"inclusive": inclusive, "self": own}


def profile_panel(
    browser, list_lab: LabServer, size: int, long_lab: LabServer, replies: dict
) -> str:
    """Where the script time goes: one click on the tab (the list loaded already, as in the
    timed runs) and one switch, each under the sampling profiler."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(INIT_JS)
    page = context.new_page()
    try:
        for _ in range(2):  # the first load fills the cache; the second is profiled
            load_lab(page, list_lab)
        page.wait_for_function(
            "() => performance.getEntriesByType('resource').some("
            "e => e.name.includes('/streamchat/api/conversations'))",
            timeout=GUARD_MS,
        )

        def click_tab():
            page.evaluate("ms => window.__bench.watch(window.__bench.listShown, ms)", GUARD_MS)
            page.locator(SIDEBAR_TAB).click()
            wait_done(page)

        click = profiled(context, page, click_tab)
        load_lab(page, long_lab)
        page.locator(SIDEBAR_TAB).click()
        first, other = list(replies)
        for target in (first, other):  # a first open, then a switch (its back click is not in)
            if target == other:
                page.locator(BACK).click()
            entry = page.locator(f"{ENTRY}[data-conversation-id='{target}']")
            entry.wait_for(state="visible", timeout=GUARD_MS)

            def open_it(target=target, entry=entry):
                page.evaluate(
                    "([id, reply, ms]) => window.__bench.watch("
                    "() => window.__bench.conversationShown(id, reply), ms)",
                    [target, replies[target], GUARD_MS],
                )
                entry.click()
                wait_done(page)

            switch = profiled(context, page, open_it)
    finally:
        context.close()
    out = []
    for title, found in (
        (f"one click on the tab, store of {size:,}", click),
        ("one switch to a long conversation (entry click to shown)", switch),
    ):
        busy = sum(found["self"].values())
        ours = [
            (key, us)
            for key, us in found["inclusive"].most_common()
            if key[1].startswith("streamchat ")
        ][:PROFILE_TOP]
        out += [
            "",
            f"Profile of {title}: {busy / 1000:.0f} ms of script samples (CDP sampling "
            "every 0.1 ms, which slows the page; layouts and style recalculations forced by "
            "script count in the function that forced them). The functions with the most "
            "time of their own, then the extension's functions by inclusive time:",
            "",
        ]
        for rows in (found["self"].most_common(PROFILE_TOP), ours):
            out += ["| function | where | self ms | inclusive ms |", "|---|---|---:|---:|"]
            out += [
                f"| {fn} | {where} | {found['self'][fn, where] / 1000:.1f} | "
                f"{found['inclusive'][fn, where] / 1000:.1f} |"
                for (fn, where), _ in rows
            ]
            out.append("")
    return "\n".join(out)


# -- report ---------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def report(
    s: Settings,
    api: dict,
    clicks: dict,
    switching: dict,
    history: list,
    plan: str,
    browser_version: str,
    load: tuple,
    elapsed: float,
) -> str:
    small, large = s.sizes[0], s.sizes[-1]
    out = [
        f"Chromium {browser_version}; Python {platform.python_version()}; "
        f"{os.cpu_count()} CPUs, load average {load[0]:.1f} before and {load[1]:.1f} after; "
        f"first page of {PAGE}; medians (/ p90) of {s.api_repeats} GETs and {s.loads} page "
        "loads per store, the stores taken in turn.",
        "",
        "The list API, first page: time per request (ms)",
        "",
    ]
    rows = []
    for size in s.sizes:
        t = {k: v for k, v in api[size].items()}
        rows.append(
            [
                f"{size:,}",
                f"{ms(median(t['client']))} / {ms(p90(t['client']))}",
                f"{ms(median(t['server']))} / {ms(p90(t['server']))}",
                ms(median(t["agents_server"])),
                ms(median(t["store"])),
                ms(median(t["encode"])),
                ms(median(t["sql_store"])),
                ms(median(t["sql_bare"])),
                f"{median(t['server']) / median(t['sql_store']):.0f}",
            ]
        )
    out += table(
        [
            "conversations",
            "GET, client",
            "server (log)",
            "GET api/agents, server",
            "store call",
            "JSON encode",
            "SQL: store's query (floor)",
            "SQL: index walk",
            "server / floor",
        ],
        rows,
    )
    out += [
        "",
        "(GET api/agents: the same request path through Jupyter's auth and the "
        "extension's handlers, without the store; store call, encode and SQL: in this "
        "process, on the same file.)",
        "",
        f"Query plan of the store's query ({large:,} conversations): {plan}.",
        "",
        "Click on the panel's tab to the first page shown, in Chromium (ms; the list "
        "request as the browser and the server saw it during the page load)",
        "",
    ]
    rows = []
    for size in s.sizes:
        runs, server = clicks[size]["runs"], clicks[size]["server"]
        pick = lambda key: [r[key] for r in runs]  # noqa: E731
        rows.append(
            [
                f"{size:,}",
                f"{median(pick('shown_ms')):.0f} / {p90(pick('shown_ms')):.0f}",
                f"{median(pick('busy_cpu_ms')):.0f}",
                " / ".join(
                    f"{median(pick(k)):.0f}"
                    for k in ("script_ms", "style_ms", "layout_ms", "paint_ms")
                ),
                f"{median(pick('longest_ms')):.0f}",
                f"{median(pick('loaded_at')):.0f}",
                f"{median(pick('request_ms')):.0f}",
                f"{ms(median(server))}",
                f"{sum(pick('before_click'))} of {len(runs)}",
            ]
        )
    out += table(
        [
            "conversations",
            "click → shown",
            "main thread CPU in it",
            "script / style / layout / paint",
            "longest task",
            "list loaded at (after navigation)",
            "list request (browser)",
            "list request, server (log)",
            "loaded before the click",
        ],
        rows,
    )
    out += [
        "",
        "(script / style / layout / paint: wall ms of each kind of work from the click "
        "to two frames after the list showed; a layout forced by script counts in both.)",
        "",
        "The longest task between the click and the list shown, in the load of median "
        "click → shown (wall ms):",
    ]
    for size in s.sizes:
        runs = sorted(clicks[size]["runs"], key=lambda r: r["shown_ms"])
        middle = runs[len(runs) // 2]
        out.append(f"- {size:,}: {middle['longest_ms']:.0f} ({middle['longest_what']})")

    def ratio(values: dict, a: int, b: int) -> float:
        return median(values[b]) / median(values[a])

    server = {size: api[size]["server"] for size in s.sizes}
    shown = {size: [r["shown_ms"] for r in clicks[size]["runs"]] for size in s.sizes}
    shown_cpu = {size: [r["busy_cpu_ms"] for r in clicks[size]["runs"]] for size in s.sizes}
    # (what, figures by store, how to print a median, judged against the goal)
    whole = lambda millis: f"{millis:.0f}"  # noqa: E731
    comparisons = [
        ("list API, server (log)", server, ms, True),
        ("list API, client", {size: api[size]["client"] for size in s.sizes}, ms, False),
        (
            "SQL floor (store's query)",
            {size: api[size]["sql_store"] for size in s.sizes},
            ms,
            False,
        ),
        ("click → first page shown", shown, whole, True),
        ("main thread CPU, click → shown", shown_cpu, whole, False),
    ]
    full = [size for size in s.sizes if size >= PAGE]  # stores whose first page is full
    pairs = [(small, large)] + ([(full[0], large)] if len(full) > 1 and full[0] != small else [])
    rows = []
    for a, b in pairs:
        for label, values, show, judged in comparisons:
            value = ratio(values, a, b)
            rows.append(
                [
                    label,
                    f"{a:,}",
                    show(median(values[a])),
                    f"{b:,}",
                    show(median(values[b])),
                    f"{value:.2f}",
                    verdict(value <= GOAL_RATIO) if judged and (a, b) == pairs[0] else "",
                ]
            )
    out += [
        "",
        f"Larger store against smaller (ratio of medians, ms; goal: {large:,} against "
        f"{small:,} ≤ {GOAL_RATIO}). The store of {small:,} lists {min(small, PAGE)} "
        f"entries, the others a full page of {PAGE}.",
        "",
    ]
    out += table(["measure", "store", "ms", "store", "ms", "ratio", "goal"], rows)

    first, switches = switching["first"], switching["switches"]
    longest = [r["longest_ms"] for r in switches]
    longest_cpu = [r["longest_cpu_ms"] for r in switches]
    history_ms = [t * 1000 for t, _ in history]
    out += [
        "",
        f"Switching between two conversations of {LONG_TOKENS:,} tokens each in the "
        f"panel ({len(switches)} switches: back to the list, click the other one), under "
        "a trace (ms)",
        "",
    ]

    def row(label: str, runs: list, pick) -> list:
        return [
            label,
            *(
                f"{pick(r[k] for r in runs):.0f}"
                for k in (
                    "shown_ms",
                    "longest_ms",
                    "longest_cpu_ms",
                    "busy_ms",
                    "busy_cpu_ms",
                    "script_cpu_ms",
                )
            ),
            "-" if runs[0]["observed"] is None else f"{pick(len(r['observed']) for r in runs):.0f}",
        ]

    out += table(
        [
            "",
            "click → shown",
            "longest task",
            "longest task, CPU",
            "main-thread busy",
            "main-thread CPU",
            "scripting CPU",
            "tasks > 50 ms seen by the page",
        ],
        [
            row("first open (creates the chat view)", [first], max),
            row("switch, median", switches, median),
            row("switch, max", switches, max),
        ],
    )
    out += [
        "",
        f"(SUBSCRIBE to HISTORY of one of them from Python over the WebSocket, the "
        f"server's share of a switch: median {median(history_ms):.1f} ms, p90 "
        f"{p90(history_ms):.1f} ms, a frame of {history[0][1] / 1024:.0f} KiB.)",
        "",
        "Every switch: click → shown / longest task, wall (what it did: when it began, in "
        "ms after the click on the entry, of the window's length; its largest parts) / "
        "longest task, CPU, ms:",
    ]
    labelled = [("first open", first)] + [(str(i + 1), r) for i, r in enumerate(switches)]
    out += [
        f"- {label}: {r['shown_ms']:.0f} / {r['longest_ms']:.0f} ({r['longest_what']}) / "
        f"{r['longest_cpu_ms']:.0f}"
        for label, r in labelled
    ]

    server_ratio = ratio(server, small, large)
    shown_ratio = ratio(shown, small, large)
    out += [
        "",
        "Verdicts:",
        "",
        f"- list API server time, {large:,} against {small:,} ≤ {GOAL_RATIO}: "
        f"{verdict(server_ratio <= GOAL_RATIO)} ({server_ratio:.2f}: "
        f"{ms(median(server[large]))} against {ms(median(server[small]))} ms)",
        f"- click on the tab to the first page, {large:,} against {small:,} ≤ {GOAL_RATIO}: "
        f"{verdict(shown_ratio <= GOAL_RATIO)} ({shown_ratio:.2f}: "
        f"{median(shown[large]):.0f} against {median(shown[small]):.0f} ms)",
        f"- longest task while switching < {GOAL_TASK_MS:.0f} ms: "
        f"{verdict(median(longest) < GOAL_TASK_MS)} (median {median(longest):.0f} ms, "
        f"max {max(longest):.0f} ms on the clock; in CPU time median "
        f"{median(longest_cpu):.0f}, max {max(longest_cpu):.0f} ms)",
    ]
    if large != SIZES[-1]:
        out.append(f"- (--quick: the store of {SIZES[-1]:,} was not measured)")
    if switches[0]["observed"] is None:
        out.append("- (this Chromium reports no longtask entries to the page)")
    out.append(f"\n(total {elapsed:.0f} s)")
    return "\n".join(out)


# -- main -----------------------------------------------------------------------------------------


def start_servers(tmp: Path, files: dict) -> dict:
    """One ``jupyter lab`` per store file, started side by side."""
    labs = {
        key: LabServer(
            [f"--SQLiteStore.path={path}", "--StreamChatApp.log_level=DEBUG"],
            base_dir=tmp / f"lab-{key}",
        )
        for key, path in files.items()
    }
    started = {}
    with concurrent.futures.ThreadPoolExecutor(len(labs)) as pool:
        futures = {key: pool.submit(lab.start) for key, lab in labs.items()}
        problems = []
        for key, future in futures.items():
            try:
                started[key] = future.result()
            except Exception as exc:  # stop the others below, then report
                problems.append(f"server for {key}: {exc}")
    if problems:
        for lab in started.values():
            lab.stop()
        raise RuntimeError("\n".join(problems))
    return labs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"stores of {QUICK_SIZES[0]:,} and {QUICK_SIZES[-1]:,} only, fewer repeats",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile one click on the tab and one switch (CDP sampling)",
    )
    add_chromium_option(parser)
    args = parser.parse_args()
    s = settings_from(args)
    if not LABEXTENSION.exists():
        raise SystemExit(f"{LABEXTENSION} is missing: build it with `cd js && npm run build`")

    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="streamchat-bench-panel-"))
    labs: dict = {}
    try:
        print("seeding the stores...", file=sys.stderr)
        files = {size: tmp / f"list-{size}.db" for size in s.sizes}
        for size, path in files.items():
            in_thread(seed_list(path, size))
        documents = {
            f"long-{name}": make_document(LONG_TOKENS, seed) for name, seed in (("a", 1), ("b", 2))
        }
        replies = in_thread(seed_long(tmp / "long.db", documents))
        plan = query_plan(files[s.sizes[-1]])

        print("starting the servers...", file=sys.stderr)
        labs = start_servers(tmp, {**files, "long": tmp / "long.db"})
        list_labs = {size: labs[size] for size in s.sizes}
        print("the list API...", file=sys.stderr)
        api = in_thread(measure_api(s, list_labs, files))
        with sync_playwright() as pw:
            browser = launch(pw, args.chromium)
            try:
                print("click on the panel's tab...", file=sys.stderr)
                clicks = measure_clicks(s, browser, list_labs)
                print("switching conversations...", file=sys.stderr)
                switching = measure_switches(s, browser, labs["long"], replies, documents)
                profile = ""
                if args.profile:
                    print("profiling...", file=sys.stderr)
                    profile = profile_panel(
                        browser, labs[s.sizes[-1]], s.sizes[-1], labs["long"], replies
                    )
                version = browser.version
            finally:
                browser.close()
        print("HISTORY over the WebSocket...", file=sys.stderr)
        history = in_thread(measure_history(labs["long"], replies, documents, s.switches))
        load_after = os.getloadavg()[0]
    except Exception:
        for key, lab in labs.items():
            print(f"--- jupyter lab log for {key} (tail) ---\n{lab.log_tail(20)}", file=sys.stderr)
        raise
    finally:
        for lab in labs.values():
            lab.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    text = report(
        s,
        api,
        clicks,
        switching,
        history,
        plan,
        version,
        (load_before, load_after),
        time.monotonic() - started,
    )
    if profile:
        text += "\n" + profile
    publish(text, RESULTS, REPO)


if __name__ == "__main__":
    main()
