"""A tool call waiting for approval when the server stops or dies: after the restart its reply
is ``interrupted`` with its text kept, and the call is shown as never run.

Real ``jupyter server`` subprocesses on one SQLite file (see server_process.py).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from helpers import assert_contiguous, new_id, text_of
from server_process import JupyterServer, isolated_env

pytestmark = pytest.mark.subprocess

PLUGINS = Path(__file__).parent / "plugins"  # the ``tools`` agent


async def wait_for_approval(server: JupyterServer, conversation: str):
    """Start a reply whose tool call waits -> (client, accepted, frames up to the waiting)."""
    client = await server.chat()
    await client.send_message("approve", agent="tools", conversation=conversation)
    accepted = await client.expect("MESSAGE_ACCEPTED")
    frames = []
    while not any(c["status"] == "waiting" for f in frames for c in f.get("toolCalls", ())):
        frame = await client.recv()
        if frame["type"] == "MESSAGE_CHUNK" and frame["messageId"] == accepted["messageId"]:
            frames.append(frame)
            assert not frame["isComplete"], frames
    return client, accepted, frames


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_a_waiting_call_is_shown_never_run_after_a_restart(tmp_path, how):
    env = isolated_env(tmp_path, PYTHONPATH=str(PLUGINS))
    conversation = new_id("c-")
    first = JupyterServer(tmp_path, env=env, name="first")
    again = JupyterServer(tmp_path, env=env, name="again")
    with first:

        async def until_waiting():
            client, accepted, frames = await wait_for_approval(first, conversation)
            if how == "kill":
                first.signal(signal.SIGKILL)
            client.close()
            return accepted, frames

        accepted, frames = asyncio.run(until_waiting())
        if how == "stop":
            first.stop()  # SIGTERM: the hub ends its replies interrupted on the way out
        else:
            assert first.wait_exit() == -signal.SIGKILL
    message_id = accepted["messageId"]

    with again:
        stored = again.get_json(f"streamchat/api/conversations/{conversation}")
        reply = stored["messages"][1]
        assert reply["status"] == "interrupted"
        assert reply["text"] == text_of(frames) == "Writing 1. "
        (call,) = reply["toolCalls"]
        assert (call["id"], call["status"]) == ("call-1", "failed")
        assert call["error"] == "not run: the reply ended first"
        assert "decision" not in call

        async def resume():
            client = await again.chat()
            try:
                await client.send("RESUME", messageId=message_id, afterSeq=frames[-1]["seq"])
                rest = await client.chunks_until_complete(message_id)
                # Answering the call now is refused: it no longer waits.
                await client.send(
                    "ANSWER_TOOL_CALL",
                    messageId=message_id,
                    toolCallId="call-1",
                    decision="allow_once",
                )
                error = await client.expect("ERROR")
                return rest, error
            finally:
                client.close()

        rest, error = asyncio.run(resume())
    assert_contiguous(frames + rest)
    assert rest[-1]["status"] == "interrupted"
    assert error["code"] == "not_waiting"
