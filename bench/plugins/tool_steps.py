"""Agents whose replies are made of tool calls, for bench/bench_tools.py.

Installed with the other bench agents (the entry points of streamchat_bench_agents-0.1.dist-info),
so a server with bench/plugins on its PYTHONPATH lists them:

- ``toolsteps`` recites ``doc-N.md`` from the dir in $STREAMCHAT_BENCH_DOCS (as ``recite``
  does) with tool calls spread evenly through it, each one pending, running, then completed
  with a short result;
- ``approvals`` asks the user to approve one call after another and notes, in the file named
  by $STREAMCHAT_BENCH_STAMPS, the moment each answer reached it.
"""

import asyncio
import json
import os
import time
from dataclasses import replace
from pathlib import Path

from traitlets import default

from jupyter_streamchat import Agent
from jupyter_streamchat.agents import REJECT, ToolCall
from jupyter_streamchat.agents.base import COMPLETED, RUNNING, split_tokens

MAX_CALLS = 10_000  # the hub's own bound on the calls of one reply
MAX_APPROVALS = 1_000


def parse_steps(text: str) -> tuple:
    """``"20000 200"`` -> (20000 tokens, 200 calls, 0 tokens per step, 0 s): flat out, one turn
    of the event loop per token; ``"20000 200 4 0.002"``: 4 tokens, then 2 ms, and so on, as a
    model streams (a tool call's states are a step apart too, as a tool takes a while)."""
    words = text.split()
    if len(words) not in (2, 4) or not (words[0].isdigit() and words[1].isdigit()):
        raise ValueError(
            f"send '<tokens> <calls> [<tokens per step> <seconds per step>]', not {text!r}"
        )
    tokens, calls = int(words[0]), int(words[1])
    per_step, pause = (int(words[2]), float(words[3])) if len(words) == 4 else (0, 0.0)
    if calls > MAX_CALLS or per_step < 0 or not 0 <= pause <= 1:
        raise ValueError(f"at most {MAX_CALLS} calls; a step of at most 1 s")
    return tokens, calls, per_step, pause


def call_states(number: int) -> list:
    """The states of the call ``number``: pending, running, completed."""
    path = f"src/module_{number}.py"
    call = ToolCall(
        f"call-{number}",
        "read_file",
        arguments=json.dumps({"path": path}),
        title=f"Read {path}",
        kind="read",
    )
    running = replace(call, status=RUNNING)
    return [call, running, replace(running, status=COMPLETED, result=f"{40 + number % 60} lines")]


class ToolStepsAgent(Agent):
    """Replies to "N C" with ``doc-N.md`` and C tool calls spread evenly through it (after
    every N // C tokens); see :func:`parse_steps` for the pace."""

    @default("description")
    def _default_description(self):
        return "Recites a bench document with tool calls in it; send e.g. '20000 200'."

    async def stream(self, request):
        count, calls, per_step, pause = parse_steps(request.text)
        document = Path(os.environ["STREAMCHAT_BENCH_DOCS"]) / f"doc-{count}.md"
        tokens = split_tokens(document.read_text(encoding="utf-8"))
        every = len(tokens) // calls if calls else 0
        made = 0
        for index, token in enumerate(tokens, 1):
            if per_step == 0:
                await asyncio.sleep(0)  # flat out, as the recite agent
            elif (index - 1) % per_step == 0:
                await asyncio.sleep(pause)
            yield token
            if every and index % every == 0 and made < calls:
                made += 1
                for state in call_states(made):
                    await asyncio.sleep(pause)
                    yield state


class ApprovalsAgent(Agent):
    """Replies to "N" by asking N approvals, one after the other.

    Each call waits for the user; the moment ``request.approve`` returns is written, with the
    call's id and the decision, as a line of the file named by $STREAMCHAT_BENCH_STAMPS (read
    by the bench, which knows when the button was clicked). An allowed call then runs and
    completes.
    """

    @default("description")
    def _default_description(self):
        return "Asks for N approvals in a row and notes when each answer came; send e.g. '20'."

    async def stream(self, request):
        words = request.text.split()
        if len(words) != 1 or not words[0].isdigit() or int(words[0]) > MAX_APPROVALS:
            raise ValueError(f"send the number of approvals (at most {MAX_APPROVALS})")
        stamps = Path(os.environ["STREAMCHAT_BENCH_STAMPS"])
        for number in range(1, int(words[0]) + 1):
            yield f"Step {number}. "
            path = f"out/step_{number}.txt"
            call = ToolCall(
                f"approve-{number}",
                "write_file",
                arguments=json.dumps({"path": path, "text": f"step {number}"}),
                title=f"Write {path}",
                kind="edit",
                diff={"path": path, "oldText": "", "newText": f"step {number}\n"},
            )
            decision = await request.approve(call)
            answered = time.time()  # first thing: the file write below is not part of it
            with open(stamps, "a", encoding="utf-8") as f:
                f.write(f"{call.id} {decision} {answered!r}\n")
            if decision == REJECT:
                continue
            yield replace(call, status=RUNNING)
            yield replace(call, status=COMPLETED, result=f"wrote {path}")
        yield "Done."
