"""A page's main-thread tasks in a window of a Chrome trace.

The page marks the window with ``console.timeStamp``; the main thread is the
``CrRendererMain`` thread that logged the window's first mark, and its tasks are the top-level
``ThreadControllerImpl::RunTask`` events (category ``toplevel``). A nested run loop can run
tasks inside a task: the outer one counts. An event's ``dur`` is its wall time and ``tdur``
the thread's CPU time in it, which leaves out the time the OS ran something else: on a shared
machine that can be most of it, so the task longest on the clock need not be the one with the
most CPU time.
"""

from __future__ import annotations

import json
from collections import Counter

TASK = "ThreadControllerImpl::RunTask"  # one per task a thread runs
SCRIPT = ("FunctionCall", "EvaluateScript", "RunMicrotasks")  # the ways a task enters V8
STYLE, LAYOUT, PAINT = ("UpdateLayoutTree",), ("Layout",), ("PrePaint", "Paint", "Layerize")
# Work inside a task, named in the notes on what the longest task did.
INSIDE = (
    "FunctionCall",
    "EvaluateScript",
    "RunMicrotasks",
    "ParseHTML",
    "Layout",
    "UpdateLayoutTree",
    "PrePaint",
    "Paint",
    "Layerize",
    "MinorGC",
    "MajorGC",
    "HitTest",
)


def wall(event: dict) -> float:
    """An event's wall time, ms."""
    return event["dur"] / 1000


def cpu(event: dict) -> float:
    """The thread's CPU time in an event, ms."""
    return event.get("tdur", event["dur"]) / 1000


class Window:
    """The main thread's events from the mark ``start`` to the mark ``end``.

    ``prefix`` picks the page's marks (every ``console.timeStamp`` message starting with it),
    of which ``required`` must all be there; ``label`` starts every error message."""

    def __init__(
        self, trace: bytes, start: str, end: str, prefix: str, required=(), label: str = "trace"
    ):
        events = json.loads(trace)
        events = events["traceEvents"] if isinstance(events, dict) else events
        marks = {}
        for e in events:
            if e.get("name") == "TimeStamp":
                message = e.get("args", {}).get("data", {}).get("message") or ""
                if message.startswith(prefix):
                    marks[message] = e
        if not {start, end, *required} <= set(marks):
            raise AssertionError(
                f"{label}: the trace lacks the window's marks (found {sorted(marks)})"
            )
        pid, tid = marks[start]["pid"], marks[start]["tid"]
        names = {
            (e["pid"], e["tid"]): e["args"]["name"]
            for e in events
            if e.get("ph") == "M" and e.get("name") == "thread_name"
        }
        if names.get((pid, tid)) != "CrRendererMain":
            raise AssertionError(
                f"{label}: the marks came from thread {names.get((pid, tid))!r}, not CrRendererMain"
            )
        self.marks = {message: e["ts"] for message, e in marks.items()}  # µs
        self.start, self.end = self.marks[start], self.marks[end]
        self.main = [
            e
            for e in events
            if e.get("pid") == pid and e.get("tid") == tid and e.get("ph") == "X" and "dur" in e
        ]
        self.tasks = self.outermost((TASK,))
        if not self.tasks:
            raise AssertionError(f"{label}: no {TASK} events on the main thread in the window")
        self.longest = max(self.tasks, key=wall)
        self.longest_cpu = max(self.tasks, key=cpu)

    def outermost(self, names) -> list:
        """Events of those names that overlap the window and are not inside another one."""
        found, reach = [], -1
        for e in sorted(
            (
                e
                for e in self.main
                if e["name"] in names and e["ts"] + e["dur"] > self.start and e["ts"] < self.end
            ),
            key=lambda e: (e["ts"], -e["dur"]),
        ):
            if e["ts"] >= reach:
                found.append(e)
                reach = e["ts"] + e["dur"]
        return found

    def figures(self) -> dict:
        """The longest task on the clock and in CPU time; the main thread's busy time (the
        tasks clipped to the window) and CPU time; the CPU time of its script."""
        return {
            "longest_ms": wall(self.longest),
            "longest_cpu_ms": cpu(self.longest_cpu),
            "busy_ms": sum(
                min(e["ts"] + e["dur"], self.end) - max(e["ts"], self.start) for e in self.tasks
            )
            / 1000,
            "busy_cpu_ms": sum(map(cpu, self.tasks)),
            "script_cpu_ms": sum(map(cpu, self.outermost(SCRIPT))),
        }

    def work_ms(self) -> dict:
        """Wall time of each kind of work in the window; a layout forced by script counts in
        the script's time too."""
        return {
            f"{kind}_ms": sum(map(wall, self.outermost(names)))
            for kind, names in (
                ("script", SCRIPT),
                ("style", STYLE),
                ("layout", LAYOUT),
                ("paint", PAINT),
            )
        }

    def inside(self, task: dict) -> list:
        """The main thread's events that began within ``task``."""
        return [e for e in self.main if task["ts"] <= e["ts"] <= task["ts"] + task["dur"]]

    def parts(self, task: dict, clock=wall) -> Counter:
        """ms of each kind of work (``INSIDE``) within ``task`` on ``clock``; parts nest."""
        found = Counter()
        for e in self.inside(task):
            if e["name"] in INSIDE:
                found[e["name"]] += clock(e)
        return found
