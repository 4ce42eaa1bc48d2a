"""Chromium for Playwright's sync API, and the CDP sampling profiler."""

from __future__ import annotations

import os
from collections import Counter

CHROMIUM = "/usr/bin/chromium"  # Debian's
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# What a trace records: tasks (toplevel), their parts (timeline) and script (v8.execute).
TRACE_CATEGORIES = [
    "devtools.timeline",
    "disabled-by-default-devtools.timeline",
    "v8.execute",
    "toplevel",
]


def add_chromium_option(parser) -> None:
    parser.add_argument(
        "--chromium",
        default=os.environ.get("STREAMCHAT_CHROMIUM", CHROMIUM),
        help=f"Chromium binary (default {CHROMIUM})",
    )


def launch(playwright, executable: str):
    return playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)


def start_profiler(cdp) -> None:
    """The CDP sampling profiler on ``cdp``'s page, a sample every 0.1 ms."""
    cdp.send("Profiler.enable")
    cdp.send("Profiler.setSamplingInterval", {"interval": 100})  # microseconds
    cdp.send("Profiler.start")


def sampled_stacks(profile: dict, name, skip=("(idle)", "(root)")):
    """(microseconds, [name of the sampled function, its caller, ..., the root]) per sample of a
    CDP profile; ``name(node)`` names a node, samples in a function of ``skip`` are left out."""
    nodes = {n["id"]: n for n in profile["nodes"]}
    parent = {child: n["id"] for n in profile["nodes"] for child in n.get("children", ())}
    for node_id, delta in zip(profile["samples"], profile["timeDeltas"]):
        if nodes[node_id]["callFrame"]["functionName"] in skip:
            continue
        stack, at = [], node_id
        while at is not None:
            stack.append(name(nodes[at]))
            at = parent.get(at)
        yield delta, stack


def self_and_inclusive(stacks) -> tuple:
    """(self, inclusive) microseconds by name; a function counts once per sample in its
    inclusive time, however deep it recursed."""
    own, inclusive = Counter(), Counter()
    for delta, stack in stacks:
        own[stack[0]] += delta
        for key in set(stack):
            inclusive[key] += delta
    return own, inclusive
