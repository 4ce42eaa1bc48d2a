"""The `acp` agent against a real ACP agent process: tests/acp_standin.py, written with the
SDK's agent side, run as a subprocess. Most tests drive ``ACPAgent.stream`` as the hub does;
the last ones go through a real Jupyter server and its WebSocket."""

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from helpers import HANG_GUARD, assert_contiguous, new_id, streamchat_config, text_of

from jupyter_streamchat import redact
from jupyter_streamchat.agents import (
    ALLOW_ALWAYS,
    ALLOW_ONCE,
    REJECT,
    AgentError,
    AgentRequest,
    Reasoning,
    ToolCall,
)
from jupyter_streamchat.agents.acp import ACPAgent
from jupyter_streamchat.agents.acpprocess import QUEUE_CHARS

STANDIN = [sys.executable, str(Path(__file__).with_name("acp_standin.py"))]
MISSING = "no-such-acp-agent-7f3e"


@pytest.fixture
def make_agent(tmp_path, jp_asyncio_loop):
    """``make_agent(**traits)``: an ACPAgent running the stand-in in ``tmp_path/root``; its
    processes are closed after the test."""
    agents = []
    root = tmp_path / "root"
    root.mkdir()

    def make(**traits):
        traits.setdefault("command", STANDIN)
        traits.setdefault("root_dir", str(root))
        agent = ACPAgent(traits.pop("agent_id", "standin"), **traits)
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        jp_asyncio_loop.run_until_complete(agent.close())


@pytest.fixture
def root(tmp_path):
    return tmp_path / "root"


@pytest.fixture
def forget_secrets():
    yield
    redact.forget_all()


async def reply(agent, text, conversation="c1", approve=None, **fields):
    """Every event of one reply, as the hub would iterate it (bounded by a hang guard)."""
    request = AgentRequest(conversation, text, approve=approve, **fields)

    async def collect():
        return [event async for event in agent.stream(request)]

    return await asyncio.wait_for(collect(), HANG_GUARD)


def answer(events):
    return "".join(e for e in events if isinstance(e, str))


def calls(events):
    return [e for e in events if isinstance(e, ToolCall)]


def latest(events):
    """The latest state of each call, by id."""
    return {call.id: call for call in calls(events)}


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone too: it has exited, its parent has not reaped it yet.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def wait_until(condition, what):
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for: {what}"
        await asyncio.sleep(0.02)


async def started_reply(agent, text, conversation="c1", first=1, approve=None):
    """A reply that has produced ``first`` events, still running: (task, events so far)."""
    events = []
    got = asyncio.Event()

    async def run():
        async for event in agent.stream(AgentRequest(conversation, text, approve=approve)):
            events.append(event)
            if len(events) >= first:
                got.set()

    task = asyncio.ensure_future(run())
    await asyncio.wait_for(got.wait(), HANG_GUARD)
    return task, events


async def stop(task):
    """What the hub does on STOP_GENERATING: cancel the reply's task."""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- what the agent says --------------------------------------------------------------------


async def test_message_chunks_are_the_answer(make_agent):
    agent = make_agent()
    events = await reply(agent, "echo hello there  world")
    assert answer(events) == "hello there world"
    assert all(isinstance(e, str) for e in events)


async def test_thought_chunks_are_reasoning_apart_from_the_answer(make_agent):
    events = await reply(make_agent(), "think")
    thinking = "".join(e.text for e in events if isinstance(e, Reasoning))
    assert thinking == "Let me think. About it."
    assert answer(events) == "Thought about it."
    # The thinking comes first, as the agent sent it.
    assert isinstance(events[0], Reasoning)


async def test_tool_calls_become_tool_call_states_in_stream_order(make_agent):
    events = await reply(make_agent(), "tools")
    assert answer(events) == "Reading. Editing. Running. Done."
    # Text and calls interleave as the agent sent them.
    order = [e if isinstance(e, str) else (e.id, e.status) for e in events]
    assert order == [
        "Reading. ",
        ("t1", "pending"),
        ("t1", "running"),
        ("t1", "completed"),
        "Editing. ",
        ("t2", "running"),
        ("t2", "completed"),
        "Running. ",
        ("t3", "pending"),
        ("t3", "failed"),
        "Done.",
    ]
    t1, t2, t3 = latest(events).values()
    assert (t1.title, t1.kind, t1.name) == ("Read a.txt", "read", "read")
    assert json.loads(t1.arguments) == {"path": "a.txt"}
    assert t1.result == "contents of a.txt"
    assert t2.diff == {"path": "/work/b.py", "oldText": "x = 1\n", "newText": "y = 2\n"}
    assert json.loads(t2.arguments) == {"path": "b.py", "new": "y = 2"}
    assert (t3.kind, t3.status, t3.result, t3.error) == (
        "execute",
        "failed",
        "exit status 1",
        "exit status 1",
    )


async def test_a_turn_cut_short_says_so_and_an_agent_error_ends_the_reply(make_agent):
    agent = make_agent()
    events = await reply(agent, "maxtokens")
    assert answer(events) == "cut here\n\n*[cut at the token limit]*"
    with pytest.raises(AgentError, match="failed: model quota exhausted"):
        await reply(agent, "error")
    # The process survived its own error and answers the next message.
    assert answer(await reply(agent, "echo still here")) == "still here"


# -- permissions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "decision, few, outcome",
    [
        (ALLOW_ONCE, False, "opt-allow_once"),
        (ALLOW_ALWAYS, False, "opt-allow_always"),
        (REJECT, False, "opt-reject_once"),
        # An agent that offers no "allow always" gets the closest it offers.
        (ALLOW_ALWAYS, True, "opt-allow_once"),
        (REJECT, True, "opt-reject_once"),
    ],
)
async def test_permission_is_asked_of_the_user_and_answered_with_the_agents_option(
    make_agent, decision, few, outcome
):
    asked = []

    async def approve(call):
        asked.append(call)
        return decision

    events = await reply(make_agent(), "permission few" if few else "permission", approve=approve)
    [call] = asked
    assert (call.id, call.title, call.kind, call.status) == ("p1", "Write c.txt", "edit", "pending")
    assert f"outcome: {outcome}. " in answer(events)
    final = latest(events)["p1"]
    if decision == REJECT:
        # The hub shows the call failed when the user rejects; the agent's own update says
        # nothing new, so nothing overrides that.
        assert final.status != "completed"
    else:
        assert (final.status, final.result) == ("completed", "wrote c.txt")


async def test_stop_while_the_user_is_asked_answers_cancelled_and_cancels_the_turn(make_agent):
    agent = make_agent()
    asked = asyncio.Event()

    async def approve(call):
        asked.set()
        await asyncio.sleep(3600)  # nobody answers; the stop comes first

    task = asyncio.ensure_future(reply(agent, "permission", approve=approve))
    await asyncio.wait_for(asked.wait(), HANG_GUARD)
    await stop(task)
    # The next message waits for the cancelled turn to end; the agent was told both.
    log = json.loads(answer(await reply(agent, "log")))
    assert log == {"cancels": 1, "outcomes": ["cancelled"]}


# -- stop -----------------------------------------------------------------------------------


async def test_stop_sends_cancel_and_an_agent_that_honours_it_keeps_its_process(make_agent):
    agent = make_agent(cancel_timeout=30)
    pid = int(answer(await reply(agent, "pid")))
    task, events = await started_reply(agent, "long 60", first=3)
    await stop(task)
    assert events[:3] == ["tick "] * 3
    # The next message waits for the cancelled turn to end, and is answered by the same
    # process: it was not killed.
    log = json.loads(answer(await reply(agent, "log")))
    assert log["cancels"] == 1
    assert int(answer(await reply(agent, "pid"))) == pid and alive(pid)


async def test_stop_kills_an_agent_that_ignores_cancel_and_the_next_message_starts_anew(
    make_agent,
):
    agent = make_agent(cancel_timeout=0.5)
    pid = int(answer(await reply(agent, "pid")))
    task, events = await started_reply(agent, "stubborn")
    assert events == ["ignoring cancel "]
    await stop(task)
    await wait_until(lambda: not alive(pid), "the stubborn agent to be killed")
    fresh = int(answer(await reply(agent, "pid")))
    assert fresh != pid and alive(fresh)


# -- failures -------------------------------------------------------------------------------


async def test_a_crash_mid_reply_ends_it_with_the_exit_status_and_last_stderr_lines(
    make_agent, forget_secrets
):
    key = "sk-standin-0123456789abcdef"
    agent = make_agent(env={"STANDIN_API_KEY": key})
    events = []
    with pytest.raises(AgentError) as raised:
        async for event in agent.stream(AgentRequest("c1", "crash")):
            events.append(event)
    assert answer(events) == "about to crash "
    message = str(raised.value)
    assert "exited with status 3" in message
    assert "Traceback: something broke for good" in message
    assert "stderr line 30" in message
    assert "stderr line 1\n" not in message  # only the last lines
    assert len(message) < 2000
    assert key not in message and "using key ***" in message
    # The next message gets a new process.
    assert answer(await reply(agent, "echo back again")) == "back again"


async def test_a_missing_command_is_listed_and_each_reply_ends_naming_it(make_agent):
    agent = make_agent(agent_id="ghost", command=[MISSING, "--acp"])
    info = agent.info()
    assert info["id"] == "ghost" and MISSING in info["description"]
    assert agent.processes() == {}
    for _ in range(2):
        with pytest.raises(AgentError, match=f"command '{MISSING}' was not found"):
            await reply(agent, "hello")


def test_without_the_sdk_the_agent_is_listed_and_says_what_to_install(tmp_path):
    # In a Python where `acp` cannot be imported (the optional extra is not installed).
    script = f"""
import asyncio, sys
sys.modules["acp"] = None
from jupyter_streamchat.agents import AgentError, AgentRequest
from jupyter_streamchat.agents.acp import ACPAgent
agent = ACPAgent("claude", command={STANDIN!r})
print(agent.info()["id"])
async def main():
    try:
        async for _ in agent.stream(AgentRequest("c", "hi")):
            pass
    except AgentError as e:
        print(e)
asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=HANG_GUARD * 4
    )
    assert done.returncode == 0, done.stderr
    listed, said = done.stdout.splitlines()[:2]
    assert listed == "claude"
    assert 'pip install "jupyter-streamchat[acp]"' in said


async def test_an_agent_without_a_command_says_how_to_set_one(make_agent):
    agent = make_agent(agent_id="acp", command=[])
    assert "no command configured" in agent.info()["description"]
    with pytest.raises(AgentError, match="has no command configured: set ACPAgent.command"):
        await reply(agent, "hello")


async def test_an_agent_that_exits_at_start_says_so(make_agent):
    agent = make_agent(command=STANDIN + ["--die-at-start"])
    with pytest.raises(AgentError) as raised:
        await reply(agent, "hello")
    assert "exited with status 2 as it started" in str(raised.value)
    assert "cannot start: no configuration found" in str(raised.value)


async def test_what_an_agent_sends_is_bounded(make_agent):
    agent = make_agent(max_message_bytes=64 * 1024, max_tool_calls=5, max_reply_chars=50_000)
    with pytest.raises(AgentError, match="sent a message larger than 65,536 bytes"):
        await reply(agent, "big 100000", conversation="big")
    with pytest.raises(AgentError, match="more than 5 tool calls"):
        await reply(agent, "many 6", conversation="many")
    with pytest.raises(AgentError, match="more than 50,000 characters"):
        await reply(agent, "fast 2000 100", conversation="fast")
    assert answer(await reply(agent, "many 5", conversation="many")).endswith("Done.")


# -- processes ------------------------------------------------------------------------------


async def test_one_process_per_conversation_reused_while_alive(make_agent):
    agent = make_agent()
    a1 = int(answer(await reply(agent, "pid", conversation="a")))
    b1 = int(answer(await reply(agent, "pid", conversation="b")))
    assert a1 != b1
    assert int(answer(await reply(agent, "pid", conversation="a"))) == a1
    assert agent.processes() == {"a": a1, "b": b1}


async def test_an_idle_process_ends(make_agent):
    agent = make_agent(idle_timeout=0.2)
    pid = int(answer(await reply(agent, "pid")))
    await wait_until(lambda: not agent.processes(), "the idle process to end")
    await wait_until(lambda: not alive(pid), "the idle process to exit")
    assert int(answer(await reply(agent, "pid"))) != pid


async def test_at_most_max_processes_the_least_recently_used_idle_one_ends(make_agent):
    agent = make_agent(max_processes=2)
    a = int(answer(await reply(agent, "pid", conversation="a")))
    b = int(answer(await reply(agent, "pid", conversation="b")))
    await reply(agent, "pid", conversation="a")  # b is now the least recently used
    c = int(answer(await reply(agent, "pid", conversation="c")))
    assert set(agent.processes()) == {"a", "c"}
    await wait_until(lambda: not alive(b), "the least recently used process to exit")
    assert alive(a) and alive(c)


async def test_a_new_process_gets_the_conversation_so_far_then_only_new_text(make_agent):
    agent = make_agent()
    history = [
        {"role": "user", "text": "first question"},
        {"role": "assistant", "text": "an answer"},
    ]
    context = [{"kind": "cell", "label": "cell 3", "text": "x = 1", "language": "python"}]
    blocks = json.loads(answer(await reply(agent, "prompt", history=history, context=context)))
    texts = [b["text"] for b in blocks]
    assert len(texts) == 3 and texts[-1] == "prompt"
    assert "User: first question" in texts[0] and "Assistant: an answer" in texts[0]
    assert "x = 1" in texts[1] and "cell 3" in texts[1]
    # The session remembers: the next prompt carries only the new text.
    blocks = json.loads(answer(await reply(agent, "prompt", history=history * 2)))
    assert [b["text"] for b in blocks] == ["prompt"]


async def test_a_reader_slower_than_the_agent_gets_every_character(make_agent):
    # While the reply is behind, the agent's output waits in its pipe, not in memory: what
    # is queued for the reply never grows much past QUEUE_CHARS.
    agent = make_agent()
    got = []
    async for event in agent.stream(AgentRequest("c1", "fast 3000 1000")):
        got.append(event)
        await asyncio.sleep(0.3)
    text = answer(got)
    assert text == ("x" * 999 + " ") * 3000
    assert max(map(len, got)) <= QUEUE_CHARS + 1000


async def test_close_ends_every_process(make_agent):
    agent = make_agent()
    pids = [int(answer(await reply(agent, "pid", conversation=c))) for c in ("a", "b")]
    task, _ = await started_reply(agent, "long 60", conversation="c")
    pids.append(agent.processes()["c"])
    await asyncio.wait_for(agent.close(), HANG_GUARD)
    assert agent.processes() == {}
    with pytest.raises(AgentError):  # the reply under way ends, rather than hang
        await asyncio.wait_for(task, HANG_GUARD)
    await wait_until(lambda: not any(map(alive, pids)), "processes to exit")
    with pytest.raises(AgentError, match="shutting down"):
        await reply(agent, "pid")


# -- files ----------------------------------------------------------------------------------


async def test_the_client_advertises_files_and_no_terminal(make_agent):
    caps = json.loads(answer(await reply(make_agent(), "caps")))
    assert caps["fs"] == {"readTextFile": True, "writeTextFile": True}
    assert caps["terminal"] is False


async def test_files_inside_the_root_are_read(make_agent, root):
    (root / "sub").mkdir()
    (root / "sub" / "notes.txt").write_text("one\ntwo\nthree\n")
    agent = make_agent()
    assert answer(await reply(agent, f"read {root}/sub/notes.txt")) == "read: one\ntwo\nthree\n"
    assert answer(await reply(agent, f"read {root}/sub/notes.txt 2 1")) == "read: two\n"
    assert answer(await reply(agent, "read sub/notes.txt")) == "read: one\ntwo\nthree\n"
    said = answer(await reply(agent, f"read {root}/sub/none.txt"))
    assert said.startswith("error:") and "no such file" in said


async def test_paths_outside_the_root_are_refused(make_agent, root, tmp_path):
    secret = tmp_path / "outside.txt"
    secret.write_text("not for agents")
    (root / "escape").symlink_to(tmp_path)
    (root / "link.txt").symlink_to(secret)
    agent = make_agent()
    for path in (
        str(secret),
        f"{root}/../outside.txt",
        "../outside.txt",
        f"{root}/escape/outside.txt",
        f"{root}/link.txt",
    ):
        said = answer(await reply(agent, f"read {path}"))
        assert said.startswith("error:") and "outside" in said, (path, said)
        assert "not for agents" not in said
    for path in (str(tmp_path / "new.txt"), f"{root}/escape/new.txt", "../new.txt"):
        said = answer(await reply(agent, f"write {path} planted"))
        assert said.startswith("error:") and "outside" in said, (path, said)
    assert not (tmp_path / "new.txt").exists()


async def test_files_inside_the_root_are_written(make_agent, root):
    (root / "keep.sh").write_text("old\n")
    (root / "keep.sh").chmod(0o750)
    agent = make_agent()
    assert answer(await reply(agent, f"write {root}/keep.sh echo new")) == "wrote"
    assert (root / "keep.sh").read_text() == "echo new\n"
    assert (root / "keep.sh").stat().st_mode & 0o777 == 0o750
    assert answer(await reply(agent, f"write {root}/made/up/dir.txt fresh")) == "wrote"
    assert (root / "made" / "up" / "dir.txt").read_text() == "fresh\n"
    assert sorted(p.name for p in root.iterdir()) == ["keep.sh", "made"]  # no temp files


async def test_a_notebook_written_without_a_server_goes_through_a_contents_manager(
    make_agent, root
):
    agent = make_agent()
    assert answer(await reply(agent, f"writenb {root}/made.ipynb")) == "wrote"
    text = (root / "made.ipynb").read_text()
    nb = nbformat.reads(text, as_version=4)
    assert text == nbformat.writes(nb) + "\n"  # as Jupyter writes notebooks, not as sent
    assert nb.cells[0].source == "print('from the agent')"
    assert "trusted" not in nb.cells[0].metadata
    said = answer(await reply(agent, f"write {root}/bad.ipynb not a notebook"))
    assert said.startswith("error:") and "not a valid notebook" in said
    assert not (root / "bad.ipynb").exists()


# -- through a Jupyter server ---------------------------------------------------------------


def saved_by_jupyter(model, path, contents_manager, **kwargs):
    """A ContentsManager.pre_save_hook: marks notebooks saved through the server's manager."""
    if model.get("type") == "notebook":
        model["content"]["metadata"]["saved_by"] = type(contents_manager).__name__


@pytest.fixture
def jp_server_config():
    return streamchat_config(
        StreamChatApp={
            "agents": {
                "standin": {"class": "acp", "command": STANDIN},
                "ghost": {"class": "acp", "command": [MISSING]},
            }
        },
    )


@pytest.fixture
def server_agents(streamchat_app, jp_serverapp, jp_asyncio_loop):
    jp_serverapp.contents_manager.register_pre_save_hook(saved_by_jupyter)
    yield streamchat_app.agent_instances
    for agent in streamchat_app.agent_instances.values():
        if isinstance(agent, ACPAgent):
            jp_asyncio_loop.run_until_complete(agent.close())


async def ask(client, text, agent):
    await client.send_message(text, agent=agent)
    accepted = await client.expect("MESSAGE_ACCEPTED")
    frames = await client.chunks_until_complete(accepted["messageId"])
    assert_contiguous(frames)
    return frames


async def test_through_the_server_text_and_tool_calls_reach_the_client(chat, rest, server_agents):
    listed = {a["id"]: a for a in (await rest("agents"))["agents"]}
    assert {"standin", "ghost"} <= set(listed)
    # The plug-in's own instance has no command: it is not offered (named ones are).
    assert "acp" not in listed
    assert MISSING in listed["ghost"]["description"]
    assert server_agents["ghost"].processes() == {}  # listed without starting anything

    client = await chat()
    frames = await ask(client, "tools", "standin")
    assert frames[-1]["status"] == "complete"
    assert text_of(frames) == "Reading. Editing. Running. Done."
    states = {}
    for frame in frames:
        for state in frame.get("toolCalls") or ():
            states[state["id"]] = state
    assert {k: v["status"] for k, v in states.items()} == {
        "t1": "completed",
        "t2": "completed",
        "t3": "failed",
    }
    assert states["t1"]["result"] == "contents of a.txt"
    assert states["t2"]["diff"]["newText"] == "y = 2\n"

    frames = await ask(client, "hello", "ghost")
    assert frames[-1]["status"] == "error"
    assert MISSING in frames[-1]["error"] and "not found" in frames[-1]["error"]


async def test_through_the_server_notebooks_are_saved_by_its_contents_manager(
    server_agents, jp_root_dir
):
    agent = server_agents["standin"]
    assert os.path.realpath(agent.root_dir) == os.path.realpath(jp_root_dir)
    conversation = new_id("c-")
    said = answer(await reply(agent, f"writenb {jp_root_dir}/by-agent.ipynb", conversation))
    assert said == "wrote"
    nb = nbformat.read(jp_root_dir / "by-agent.ipynb", as_version=4)
    assert nb.metadata["saved_by"]  # the server's pre_save_hook ran: its manager saved it
    assert nb.cells[0].source == "print('from the agent')"
    said = answer(await reply(agent, f"read {jp_root_dir.parent}/x.txt", conversation))
    assert said.startswith("error:") and "outside" in said
