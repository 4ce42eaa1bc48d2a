"""Agent plug-ins used by the tests, installed through a real entry-point distribution."""

import asyncio
import json
import time
from dataclasses import replace

from traitlets import Float, Int, Unicode

from jupyter_streamchat import Agent
from jupyter_streamchat.agents import Reasoning, ToolCall, Usage


class BoomAgent(Agent):
    """Streams a little, then fails."""

    async def stream(self, request):
        for piece in ["partial ", "text ", "before "]:
            await asyncio.sleep(0.01)
            yield piece
        raise RuntimeError("boom after three chunks")


class FloodAgent(Agent):
    """Streams ``count`` chunks of ``size`` characters as fast as it can."""

    count = Int(200).tag(config=True)
    size = Int(64 * 1024).tag(config=True)

    async def stream(self, request):
        for i in range(self.count):
            await asyncio.sleep(0)
            yield f"{i:08d}" + "x" * (self.size - 8)


class BurstAgent(Agent):
    """Has its whole reply at hand, as a model's stream read in one big TCP read is: yields
    ``count`` tokens ``t0000 t0001 ...``, each after ``work`` seconds of computing, and never
    waits on anything in between."""

    count = Int(2000).tag(config=True)
    work = Float(0.0002).tag(config=True)

    async def stream(self, request):
        for i in range(self.count):
            started = time.perf_counter()
            while time.perf_counter() - started < self.work:
                pass
            yield f"t{i:04d} "


class ThinkAgent(Agent):
    """Thinks aloud, then answers, then reports its usage, like a reasoning model.

    The reasoning is ``thoughts`` numbered words (``thought000 thought001 ...``) and the answer
    is ``Answer:`` and the user's words, each piece ``delay`` seconds apart, so a browser sees
    the phases one after the other and a gap or duplicate shows in an exact comparison.
    """

    delay = Float(0.03, help="Seconds to sleep before each piece.").tag(config=True)
    thoughts = Int(40, help="Number of reasoning words before the answer.").tag(config=True)

    async def stream(self, request):
        for i in range(self.thoughts):
            await asyncio.sleep(self.delay)
            yield Reasoning(f"thought{i:03d} ")
        answer = ["Answer:", *(f" {word}" for word in request.text.split())]
        for piece in answer:
            await asyncio.sleep(self.delay)
            yield piece
        # As a model counts them: reasoning tokens are output tokens too.
        yield Usage(model="think-1", input_tokens=12, output_tokens=self.thoughts + len(answer))


class NotAnAgent:
    """Registered as an agent, but is not one: must be skipped."""


class LeakyAgent(Agent):
    """A careless plug-in: fails with an exception that quotes its API key (whole, cut short,
    and split over lines), after a little text."""

    api_key = Unicode().tag(config=True)

    async def stream(self, request):
        yield "some text "
        key = self.api_key
        raise RuntimeError(
            f"auth failed for {key}; retried with {key[:12]}...; header was:\n{key[:9]}\n{key[9:]}"
        )


class ToolsAgent(Agent):
    """Tool calls and approvals on cue, for tests of the hub and the views. The user's text says
    what to do (words, in order):

    - ``tool``: a read-only call ``read_file`` that runs and completes;
    - ``approve``: a call ``write_file`` (with a diff) that asks the user, then runs or not;
    - ``fail``: a call that fails;
    - ``many N``: N completed calls, each between two sentences (at most 10,000);
    - ``hold S``: a running call that takes S seconds (for stop);
    - ``context``: says what was attached (kind: label = text), one line each.

    Every call's arguments name its number; the reply ends with "Done.".
    """

    async def stream(self, request):
        words = request.text.split()
        n = 0
        for i, word in enumerate(words):
            if word == "tool":
                n += 1
                yield f"Reading {n}. "
                call = ToolCall(
                    f"call-{n}", "read_file", arguments=json.dumps({"path": f"f{n}.txt"})
                )
                yield call
                call = replace(call, status="running", title=f"Read f{n}.txt", kind="read")
                yield call
                yield replace(call, status="completed", result=f"contents of f{n}.txt")
            elif word == "approve":
                n += 1
                yield f"Writing {n}. "
                call = ToolCall(
                    f"call-{n}",
                    "write_file",
                    arguments=json.dumps({"path": f"f{n}.txt", "text": "new"}),
                    title=f"Write f{n}.txt",
                    kind="edit",
                    diff={"path": f"f{n}.txt", "oldText": "old\n", "newText": "new\n"},
                )
                decision = await request.approve(call)
                if decision == "reject":
                    yield f"Not written ({decision}). "
                    continue
                yield replace(call, status="running")
                await asyncio.sleep(0.01)
                yield replace(call, status="completed", result=f"wrote f{n}.txt")
                yield f"Written ({decision}). "
            elif word == "fail":
                n += 1
                call = ToolCall(f"call-{n}", "run", arguments="{}")
                yield replace(call, status="running")
                yield replace(call, status="failed", error="exit status 1")
            elif word == "many" and i + 1 < len(words):
                for _ in range(min(int(words[i + 1]), 10_000)):
                    n += 1
                    yield f"Step {n} starts. "
                    call = ToolCall(f"call-{n}", "step", arguments=json.dumps({"n": n}))
                    yield replace(call, status="running")
                    yield replace(call, status="completed", result=f"step {n} ok")
                    yield f"Step {n} ends. "
            elif word == "hold" and i + 1 < len(words):
                n += 1
                call = ToolCall(f"call-{n}", "sleep", status="running", arguments="{}")
                yield call
                await asyncio.sleep(min(float(words[i + 1]), 600))
                yield replace(call, status="completed", result="slept")
            elif word == "context":
                for item in request.context:
                    yield f"{item['kind']}: {item.get('label', '')} = {item.get('text', '')}\n"
        yield "Done."
