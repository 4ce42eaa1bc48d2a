"""A stand-in coding agent that speaks the Agent Client Protocol over stdio, written with the
``agent-client-protocol`` SDK's agent side: run it as ``python tests/acp_standin.py``.

What it does is chosen by the first word of the prompt's last text block (the words after it
are arguments):

- ``echo WORDS...`` (or any other first word): the text back, one word per chunk;
- ``think``: thought chunks, then an answer;
- ``tools``: three tool calls with updates: a read that completes (text content), an edit that
  completes (diff content), a command that fails;
- ``permission [few]``: a tool call that asks for permission (all four option kinds, or with
  ``few`` only allow_once and reject_once), then says the outcome (``outcome: <optionId>`` or
  ``outcome: cancelled``) and completes or fails the call;
- ``read PATH [LINE LIMIT]``: asks the client for a file; says ``read: <content>`` or
  ``error: <message>``;
- ``write PATH WORDS...``: asks the client to write the words (and a newline) to a file;
  ``writenb PATH``: writes a notebook with one code cell; both say ``wrote`` or ``error: ...``;
- ``long SECONDS``: a chunk every 20 ms until cancelled (then stop reason ``cancelled``);
- ``stubborn``: a chunk, then ignores the cancel and never ends its turn;
- ``crash``: a chunk, 32 lines on stderr (one names $STANDIN_API_KEY), then the process
  exits with status 3;
- ``fast N [SIZE]``: N text chunks of SIZE characters (default 8) as fast as it can;
- ``many N``: N tool calls, each completed;
- ``big N``: one text chunk of N characters;
- ``pid``: its process id; ``prompt``: the prompt blocks it got, as JSON;
  ``caps``: the client capabilities it got at initialize, as JSON;
- ``log``: what it was told so far, as JSON: ``{"cancels": n, "outcomes": [...]}``;
- ``maxtokens``: an answer whose turn ends with stop reason ``max_tokens``;
- ``error``: the prompt request fails with a JSON-RPC error.

``--die-at-start`` makes it write to stderr and exit 2 before it reads anything.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid

import acp
from acp import (
    PROTOCOL_VERSION,
    InitializeResponse,
    NewSessionResponse,
    PromptResponse,
    RequestError,
    run_agent,
    start_tool_call,
    text_block,
    tool_content,
    tool_diff_content,
    update_agent_message_text,
    update_agent_thought_text,
    update_tool_call,
)
from acp.schema import AgentCapabilities, Implementation, PermissionOption

NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "execution_count": None,
            "id": "a1b2c3d4",
            # An agent may claim a cell is trusted; the client must not sign on its word.
            "metadata": {"trusted": True},
            "outputs": [],
            "source": "print('from the agent')",
        }
    ],
    "metadata": {},
    "nbformat": 4,
    "nbformat_minor": 5,
}


class StandIn:
    def __init__(self):
        self.conn = None
        self.cancelled: dict = {}  # session id -> Event, set by session/cancel
        self.client_capabilities = None
        self.cancels = 0  # session/cancel notifications received
        self.outcomes: list = []  # permission outcomes, in order

    def on_connect(self, conn):
        self.conn = conn

    async def initialize(self, protocol_version, client_capabilities=None, client_info=None, **kw):
        self.client_capabilities = client_capabilities
        return InitializeResponse(
            protocol_version=PROTOCOL_VERSION,
            agent_capabilities=AgentCapabilities(),
            agent_info=Implementation(name="acp-standin", version="1.0"),
        )

    async def new_session(self, cwd, mcp_servers=None, **kw):
        session_id = uuid.uuid4().hex
        self.cancelled[session_id] = asyncio.Event()
        return NewSessionResponse(session_id=session_id)

    async def cancel(self, session_id, **kw):
        self.cancels += 1
        self.cancelled.setdefault(session_id, asyncio.Event()).set()

    async def say(self, session_id, text):
        await self.conn.session_update(session_id, update_agent_message_text(text))

    async def update(self, session_id, update):
        await self.conn.session_update(session_id, update)

    async def prompt(self, prompt, session_id, **kw):
        cancelled = self.cancelled.setdefault(session_id, asyncio.Event())
        cancelled.clear()
        texts = [block.text for block in prompt if getattr(block, "type", None) == "text"]
        words = (texts[-1] if texts else "").split()
        command, args = (words[0], words[1:]) if words else ("echo", [])
        handler = getattr(self, f"do_{command}", None)
        if handler is None:
            handler, args = self.do_echo, words
        if command == "prompt":
            args = [
                block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in prompt
            ]
        stop_reason = await handler(session_id, cancelled, args)
        return PromptResponse(stop_reason=stop_reason or "end_turn")

    # -- behaviours -----------------------------------------------------------------------

    async def do_echo(self, sid, cancelled, args):
        for i, word in enumerate(args):
            await self.say(sid, word if i == 0 else " " + word)

    async def do_think(self, sid, cancelled, args):
        for piece in ("Let me think. ", "About it."):
            await self.update(sid, update_agent_thought_text(piece))
        await self.say(sid, "Thought about it.")

    async def do_tools(self, sid, cancelled, args):
        await self.say(sid, "Reading. ")
        await self.update(
            sid,
            start_tool_call(
                "t1", "Read a.txt", kind="read", status="pending", raw_input={"path": "a.txt"}
            ),
        )
        await self.update(sid, update_tool_call("t1", status="in_progress"))
        await self.update(
            sid,
            update_tool_call(
                "t1", status="completed", content=[tool_content(text_block("contents of a.txt"))]
            ),
        )
        await self.say(sid, "Editing. ")
        await self.update(
            sid,
            start_tool_call(
                "t2",
                "Edit b.py",
                kind="edit",
                status="in_progress",
                raw_input={"path": "b.py", "new": "y = 2"},
            ),
        )
        diff = tool_diff_content("/work/b.py", "y = 2\n", "x = 1\n")
        await self.update(sid, update_tool_call("t2", status="completed", content=[diff]))
        await self.say(sid, "Running. ")
        await self.update(
            sid, start_tool_call("t3", "Run make", kind="execute", raw_input={"command": "make"})
        )
        await self.update(
            sid,
            update_tool_call(
                "t3", status="failed", content=[tool_content(text_block("exit status 1"))]
            ),
        )
        await self.say(sid, "Done.")

    async def do_permission(self, sid, cancelled, args):
        await self.update(
            sid,
            start_tool_call(
                "p1", "Write c.txt", kind="edit", status="pending", raw_input={"path": "c.txt"}
            ),
        )
        kinds = (
            ["allow_once", "reject_once"]
            if "few" in args
            else [
                "allow_once",
                "allow_always",
                "reject_once",
                "reject_always",
            ]
        )
        options = [
            PermissionOption(option_id=f"opt-{kind}", name=kind.replace("_", " "), kind=kind)
            for kind in kinds
        ]
        answer = await self.conn.request_permission(
            session_id=sid, tool_call=update_tool_call("p1", title="Write c.txt"), options=options
        )
        outcome = answer.outcome
        chosen = getattr(outcome, "option_id", None)
        self.outcomes.append(chosen or outcome.outcome)
        await self.say(sid, f"outcome: {chosen or outcome.outcome}. ")
        if chosen and chosen.startswith("opt-allow"):
            await self.update(sid, update_tool_call("p1", status="in_progress"))
            await self.update(
                sid,
                update_tool_call(
                    "p1", status="completed", content=[tool_content(text_block("wrote c.txt"))]
                ),
            )
        else:
            await self.update(sid, update_tool_call("p1", status="failed"))
        if cancelled.is_set():
            return "cancelled"
        await self.say(sid, "Done.")

    async def do_read(self, sid, cancelled, args):
        line = int(args[1]) if len(args) > 1 else None
        limit = int(args[2]) if len(args) > 2 else None
        try:
            answer = await self.conn.read_text_file(
                session_id=sid, path=args[0], line=line, limit=limit
            )
        except RequestError as e:
            await self.say(sid, f"error: {e}")
            return
        await self.say(sid, f"read: {answer.content}")

    async def do_write(self, sid, cancelled, args):
        await self._write(sid, args[0], " ".join(args[1:]) + "\n")

    async def do_writenb(self, sid, cancelled, args):
        await self._write(sid, args[0], json.dumps(NOTEBOOK, indent=1))

    async def _write(self, sid, path, content):
        try:
            await self.conn.write_text_file(session_id=sid, path=path, content=content)
        except RequestError as e:
            await self.say(sid, f"error: {e}")
            return
        await self.say(sid, "wrote")

    async def do_long(self, sid, cancelled, args):
        seconds = float(args[0]) if args else 60.0
        loop = asyncio.get_running_loop()
        end = loop.time() + min(seconds, 600)
        while loop.time() < end:
            if cancelled.is_set():
                return "cancelled"
            await self.say(sid, "tick ")
            try:
                await asyncio.wait_for(cancelled.wait(), 0.02)
            except asyncio.TimeoutError:
                pass
        return "end_turn"

    async def do_stubborn(self, sid, cancelled, args):
        await self.say(sid, "ignoring cancel ")
        await asyncio.sleep(600)

    async def do_crash(self, sid, cancelled, args):
        await self.say(sid, "about to crash ")
        for i in range(1, 31):
            print(f"stderr line {i}", file=sys.stderr)
        print(f"using key {os.environ.get('STANDIN_API_KEY', '')}", file=sys.stderr)
        print("Traceback: something broke for good", file=sys.stderr)
        sys.stderr.flush()
        os._exit(3)

    async def do_fast(self, sid, cancelled, args):
        count = int(args[0]) if args else 1000
        size = int(args[1]) if len(args) > 1 else 8
        piece = ("x" * (size - 1)) + " "
        for _ in range(count):
            await self.say(sid, piece)

    async def do_many(self, sid, cancelled, args):
        for i in range(int(args[0]) if args else 10):
            await self.update(
                sid, start_tool_call(f"m{i}", f"Step {i}", kind="other", status="in_progress")
            )
            await self.update(sid, update_tool_call(f"m{i}", status="completed"))
        await self.say(sid, "Done.")

    async def do_big(self, sid, cancelled, args):
        await self.say(sid, "y" * int(args[0]))

    async def do_pid(self, sid, cancelled, args):
        await self.say(sid, str(os.getpid()))

    async def do_prompt(self, sid, cancelled, blocks):
        await self.say(sid, json.dumps(blocks))

    async def do_caps(self, sid, cancelled, args):
        caps = self.client_capabilities
        await self.say(
            sid, caps.model_dump_json(by_alias=True, exclude_none=True) if caps else "null"
        )

    async def do_log(self, sid, cancelled, args):
        await self.say(sid, json.dumps({"cancels": self.cancels, "outcomes": self.outcomes}))

    async def do_maxtokens(self, sid, cancelled, args):
        await self.say(sid, "cut here")
        return "max_tokens"

    async def do_error(self, sid, cancelled, args):
        raise RequestError(-32603, "model quota exhausted")


def main():
    if "--die-at-start" in sys.argv:
        print("standin: cannot start: no configuration found", file=sys.stderr)
        sys.exit(2)
    asyncio.run(run_agent(StandIn()))


if __name__ == "__main__":
    assert acp.PROTOCOL_VERSION >= 1
    main()
