"""The `openai` agent's tools: function calling with the official client against the stand-in
model server (tests/openai_standin.py, real streamed ``tool_calls`` deltas over HTTP), tools of
a real MCP server (tests/mcp_servers/notes_server.py) run over stdio and over streamable HTTP,
tools of a plug-in installed as a real entry point, approvals, bounds, and attached context.

The agent is driven directly, as the hub drives it: an AgentRequest whose ``approve`` records
what it is asked and answers as the test says.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import HANG_GUARD
from openai_standin import ARGUMENT_PIECE, TOOL_PREAMBLE, StandIn

from jupyter_streamchat.agents import AgentError, AgentRequest, ToolCall, Usage
from jupyter_streamchat.agents.openai import REJECTED, ROUNDS_NOTE, OpenAIAgent

NOTES_SERVER = Path(__file__).parent / "mcp_servers" / "notes_server.py"
# Random-looking, so that any run of their characters in a text is a leak.
HTTP_TOKEN = "tok-Vq8Lr3Zx7Kp2Wm5Tn9Bc"
ENV_SECRET = "ghp_Hs4Jd8Fk2Lq6Pz0Xv3Nm7Rt"


@pytest.fixture(scope="module")
def standin():
    with StandIn() as server:
        yield server


@pytest.fixture
def notes(tmp_path):
    return tmp_path / "notes.txt"


@pytest.fixture
def stdio_server(notes):
    return {"command": [sys.executable, str(NOTES_SERVER)], "env": {"NOTES_FILE": str(notes)}}


@pytest.fixture(scope="module")
def http_server(tmp_path_factory):
    """The notes server over streamable HTTP, as a subprocess on a free loopback port; it
    refuses requests without ``Authorization: Bearer HTTP_TOKEN``."""
    notes = tmp_path_factory.mktemp("http-notes") / "notes.txt"
    env = {**os.environ, "MCP_TEST_TOKEN": HTTP_TOKEN, "NOTES_FILE": str(notes)}
    process = subprocess.Popen(
        [sys.executable, str(NOTES_SERVER), "--http"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        line = _read_line(process, HANG_GUARD)
        assert line.startswith("PORT "), line
        port = int(line.split()[1])
        _wait_for_port(port, HANG_GUARD)
        yield {"url": f"http://127.0.0.1:{port}/mcp", "notes": notes}
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _read_line(process, timeout: float) -> str:
    got = []
    reader = threading.Thread(target=lambda: got.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    assert got, "the MCP server did not say its port"
    return got[0].strip()


def _wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on port {port}"
            time.sleep(0.05)


def agent_for(standin, **settings) -> OpenAIAgent:
    settings.setdefault("model", "standin")
    return OpenAIAgent("openai", base_url=standin.url, max_retries=0, **settings)


class Asker:
    """``request.approve``: records each call it is asked about and answers ``decision``."""

    def __init__(self, decision="allow_once"):
        self.decision = decision
        self.asked: list = []

    async def __call__(self, call: ToolCall) -> str:
        self.asked.append(call)
        return self.decision


async def reply(agent, text, approve=None, context=None, history=None):
    """Everything the agent yields for ``text``, and the AgentError that ended it (or None)."""
    request = AgentRequest(
        "c-tools",
        text,
        history=history or [],
        context=context or [],
        approve=approve or Asker(),
    )
    events, error = [], None

    async def run():
        async for event in agent.stream(request):
            events.append(event)

    try:
        await asyncio.wait_for(run(), HANG_GUARD * 2)
    except AgentError as e:
        error = e
    return events, error


def text_of(events) -> str:
    return "".join(e for e in events if isinstance(e, str))


def states(events, name=None) -> list:
    return [e for e in events if isinstance(e, ToolCall) and name in (None, e.name)]


def statuses(events, name) -> list:
    return [e.status for e in states(events, name)]


def final(events) -> dict:
    """The latest state of each call, by id."""
    return {e.id: e for e in states(events)}


def requests_since(standin, count: int) -> list:
    return standin.requests[count:]


def calls_text(*calls) -> str:
    return "\n".join(f"call {name} {json.dumps(arguments)}" for name, arguments in calls)


def test_a_tool_call_goes_through_the_model_and_an_mcp_server_over_stdio(standin, stdio_server):
    async def scenario():
        agent = agent_for(standin, mcp_servers={"notes": stdio_server})
        asker = Asker()
        before = len(standin.requests)
        try:
            events, error = await reply(agent, calls_text(("add", {"a": 2, "b": 3})), asker)
        finally:
            await agent.close()
        return events, error, asker, requests_since(standin, before)

    events, error, asker, requests = asyncio.run(scenario())
    assert error is None
    assert text_of(events) == TOOL_PREAMBLE + "The tools said: [add: 5]."
    assert asker.asked == []  # add is read-only: nobody is asked
    assert statuses(events, "add") == ["pending", "pending", "running", "completed"]
    first, *_, done = states(events, "add")
    assert first.arguments == ""  # shown as soon as its name is known
    assert done.arguments == '{"a": 2, "b": 3}' and done.result == "5"
    assert len({e.id for e in states(events)}) == 1

    assert len(requests) == 2
    offered = {t["function"]["name"]: t for t in requests[0]["body"]["tools"]}
    assert set(offered) == {"add", "write_note", "fail", "sleep", "pid"}
    assert offered["add"]["type"] == "function"
    assert offered["add"]["function"]["description"] == "Adds two whole numbers."
    assert offered["add"]["function"]["parameters"]["required"] == ["a", "b"]
    assistant, tool = requests[1]["messages"][-2:]
    assert assistant["role"] == "assistant" and assistant["content"] == TOOL_PREAMBLE
    [sent] = assistant["tool_calls"]
    assert sent["function"] == {"name": "add", "arguments": '{"a": 2, "b": 3}'}
    assert tool == {"role": "tool", "tool_call_id": sent["id"], "content": "5"}
    # Each request's usage counts: the reply's is their sum.
    usages = [e for e in events if isinstance(e, Usage)]
    assert usages[-1].output_tokens > usages[0].output_tokens > 0


def test_several_calls_are_put_together_from_their_deltas(standin, stdio_server, notes):
    note = 'a "quoted" note — ünïcode, {braces} and \\ a backslash, cut over many deltas'
    wanted = [("add", {"a": 40, "b": 2}), ("write_note", {"text": note}), ("add", {"a": 1, "b": 1})]

    async def scenario():
        agent = agent_for(standin, mcp_servers={"notes": stdio_server})
        before = len(standin.requests)
        try:
            events, error = await reply(agent, calls_text(*wanted))
        finally:
            await agent.close()
        return events, error, requests_since(standin, before)

    events, error, requests = asyncio.run(scenario())
    assert error is None
    assert all(len(json.dumps(a)) > 2 * ARGUMENT_PIECE for _, a in wanted)  # 3+ deltas each
    calls = list(final(events).values())
    assert [(c.name, json.loads(c.arguments)) for c in calls] == wanted
    assert [c.status for c in calls] == ["completed"] * 3
    assert [c.result for c in calls] == ["42", f"noted: {note}", "2"]
    assert notes.read_text(encoding="utf-8") == note + "\n"
    sent = requests[1]["messages"][-4]["tool_calls"]
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in sent] == [
        (name, json.dumps(arguments)) for name, arguments in wanted
    ]
    assert text_of(events).endswith(
        f"The tools said: [add: 42] [write_note: noted: {note}] [add: 2]."
    )


def test_a_tool_that_changes_things_waits_for_approval_over_streamable_http(standin, http_server):
    server = {"url": http_server["url"], "headers": {"Authorization": f"Bearer {HTTP_TOKEN}"}}
    text = calls_text(("add", {"a": 1, "b": 2}), ("write_note", {"text": "over http"}))

    async def scenario():
        agent = agent_for(standin, mcp_servers={"web": server})
        asker = Asker("allow_once")
        try:
            events, error = await reply(agent, text, asker)
        finally:
            await agent.close()
        return events, error, asker

    events, error, asker = asyncio.run(scenario())
    assert error is None
    assert [c.name for c in asker.asked] == ["write_note"]
    [asked] = asker.asked
    assert asked.status == "pending" and json.loads(asked.arguments) == {"text": "over http"}
    assert statuses(events, "write_note")[-2:] == ["running", "completed"]
    assert "over http\n" in http_server["notes"].read_text(encoding="utf-8")
    assert text_of(events).endswith("[add: 3] [write_note: noted: over http].")


def test_a_rejected_call_is_not_run_and_the_model_is_told(standin, stdio_server, notes):
    async def scenario():
        agent = agent_for(standin, mcp_servers={"notes": stdio_server})
        asker = Asker("reject")
        before = len(standin.requests)
        try:
            events, error = await reply(agent, calls_text(("write_note", {"text": "no"})), asker)
        finally:
            await agent.close()
        return events, error, asker, requests_since(standin, before)

    events, error, asker, requests = asyncio.run(scenario())
    assert error is None
    assert [c.name for c in asker.asked] == ["write_note"]
    assert "running" not in statuses(events, "write_note")
    [call] = final(events).values()
    assert (call.status, call.error) == ("failed", "rejected by the user")
    assert not notes.exists()
    assert requests[1]["messages"][-1]["content"] == REJECTED
    assert text_of(events).endswith(f"The tools said: [write_note: {REJECTED}].")


def test_approval_is_configured_per_tool(standin, stdio_server, notes):
    text = calls_text(("add", {"a": 1, "b": 1}), ("write_note", {"text": "free"}))

    async def asked_with(policy):
        agent = agent_for(standin, mcp_servers={"notes": stdio_server}, tool_approval=policy)
        asker = Asker()
        try:
            _, error = await reply(agent, text, asker)
        finally:
            await agent.close()
        assert error is None
        return [c.name for c in asker.asked]

    async def scenario():
        return [
            await asked_with({"add": True, "write_note": False}),
            await asked_with({"*": True}),
            await asked_with({"*": False}),
            await asked_with({"*": False, "write_note": True}),
        ]

    assert asyncio.run(scenario()) == [["add"], ["add", "write_note"], [], ["write_note"]]


def test_a_reply_stops_after_max_tool_rounds_with_a_note(standin, stdio_server):
    async def scenario():
        agent = agent_for(
            standin,
            mcp_servers={"notes": stdio_server},
            max_tool_rounds=2,
            extra_body={"standin_tool_rounds": 5},  # a model that keeps calling
        )
        before = len(standin.requests)
        try:
            events, error = await reply(agent, calls_text(("add", {"a": 1, "b": 2})))
        finally:
            await agent.close()
        return events, error, requests_since(standin, before)

    events, error, requests = asyncio.run(scenario())
    assert error is None
    assert len(requests) == 3  # two rounds run, the third response's calls are not
    calls = list(final(events).values())
    assert len(calls) == 3  # ids unique within the reply, across rounds
    assert [c.status for c in calls] == ["completed", "completed", "failed"]
    assert calls[-1].error == "not run: the reply reached max_tool_rounds (2)"
    assert text_of(events).endswith(ROUNDS_NOTE.format(rounds=2))


def test_tool_failures_are_shown_and_told_to_the_model(standin, stdio_server):
    text = (
        calls_text(
            ("fail", {"reason": "disk full"}),
            ("no_such_tool", {}),
            ("sleep", {"seconds": 60}),
        )
        + "\ncall add {not json"
    )

    async def scenario():
        agent = agent_for(standin, mcp_servers={"notes": stdio_server}, tool_timeout=1.0)
        try:
            return await reply(agent, text)
        finally:
            await agent.close()

    events, error = asyncio.run(scenario())
    assert error is None
    fail, missing, slow, broken = final(events).values()
    assert fail.status == "failed" and "failed on purpose: disk full" in fail.error
    assert (missing.status, missing.error) == ("failed", "no tool named 'no_such_tool'")
    assert (slow.status, slow.error) == ("failed", "took longer than 1 s (tool_timeout)")
    assert broken.status == "failed" and broken.error.startswith("the arguments are not valid JSON")
    said = text_of(events)
    assert "[fail: Error: " in said and "disk full" in said
    assert "[no_such_tool: Error: there is no tool named 'no_such_tool'.]" in said
    assert "[sleep: Error: took longer than 1 s (tool_timeout)]" in said


def test_one_session_serves_every_reply_and_ends_on_close(standin, stdio_server):
    async def scenario():
        agent = agent_for(standin, mcp_servers={"notes": stdio_server})
        try:
            first, _ = await reply(agent, calls_text(("pid", {})))
            # A stop while a tool runs cancels the agent there; the session goes on.
            request = AgentRequest("c-tools", calls_text(("sleep", {"seconds": 60})))
            stream = agent.stream(request)

            async def until_running():
                async for event in stream:
                    if isinstance(event, ToolCall) and event.status == "running":
                        return

            await asyncio.wait_for(until_running(), HANG_GUARD)
            task = asyncio.ensure_future(stream.__anext__())
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            second, _ = await reply(agent, calls_text(("pid", {})))
        finally:
            await agent.close()
        return first, second

    first, second = asyncio.run(scenario())
    pids = [[c.result for c in final(events).values()][0] for events in (first, second)]
    assert pids[0] == pids[1] and pids[0].isdigit()
    with pytest.raises(ProcessLookupError):
        os.kill(int(pids[0]), 0)  # closed with the agent


def test_an_mcp_server_that_cannot_start_ends_the_reply_naming_it(standin, http_server):
    crash = {"command": [sys.executable, str(NOTES_SERVER), "--crash"]}
    cases = {
        "gone": (
            {"command": ["no-such-mcp-server-xyz", "--serve"], "env": {"GITHUB_TOKEN": ENV_SECRET}},
            "MCP server 'gone' could not start: no program 'no-such-mcp-server-xyz' was found",
        ),
        "crashing": (crash, "cannot open the notes database"),
        "locked": (
            {"url": http_server["url"], "headers": {"Authorization": "Bearer " + ENV_SECRET[::-1]}},
            f"MCP server 'locked' could not start: {http_server['url']} answered with HTTP status 401",
        ),
        "typo": ({"comand": ["x"]}, "MCP server 'typo' is misconfigured"),
    }

    async def scenario():
        errors = {}
        for name, (settings, _) in cases.items():
            agent = agent_for(standin, mcp_servers={name: settings})
            try:
                events, errors[name] = await reply(agent, "call add {}")
            finally:
                await agent.close()
            assert events == []
        return errors

    before = len(standin.requests)
    errors = asyncio.run(scenario())
    assert len(standin.requests) == before  # no model request without the tools
    for name, (_, words) in cases.items():
        assert errors[name] is not None and words in str(errors[name]), (name, errors[name])
        for secret in (ENV_SECRET, ENV_SECRET[::-1], HTTP_TOKEN):
            assert secret[:8] not in str(errors[name]) and secret[-8:] not in str(errors[name])


def test_a_model_server_cannot_ask_for_unbounded_tool_calls(standin, stdio_server):
    many = calls_text(*[("add", {"a": i, "b": i}) for i in range(40)])

    async def scenario():
        agent = agent_for(standin, mcp_servers={"notes": stdio_server})
        try:
            return await reply(agent, many)
        finally:
            await agent.close()

    events, error = asyncio.run(scenario())
    assert error is not None
    assert "more than 32 tool calls in one response (max_tool_calls)" in str(error)
    assert not [e for e in states(events) if e.status in ("running", "completed")]


def test_plugin_tools_come_from_entry_points(standin, tmp_path, monkeypatch):
    (tmp_path / "shout_tool.py").write_text(
        "from jupyter_streamchat.agents.tools import FunctionTool\n"
        "shout = FunctionTool('shout', lambda text: text.upper(), 'Shouts.',\n"
        "    {'type': 'object', 'properties': {'text': {'type': 'string'}}}, read_only=True)\n"
        "def broken():\n"
        "    raise RuntimeError('this plug-in is broken')\n"
    )
    info = tmp_path / "shout_tool-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shout-tool\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[jupyter_streamchat.tools]\nshout = shout_tool:shout\nbroken = shout_tool:broken\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    async def scenario():
        agent = agent_for(standin)
        asker = Asker()
        before = len(standin.requests)
        events, error = await reply(agent, calls_text(("shout", {"text": "quiet words"})), asker)
        return events, error, asker, requests_since(standin, before)

    events, error, asker, requests = asyncio.run(scenario())
    assert error is None and asker.asked == []
    assert [t["function"]["name"] for t in requests[0]["body"]["tools"]] == ["shout"]
    assert text_of(events).endswith("The tools said: [shout: QUIET WORDS].")


def test_no_tools_means_no_tools_field(standin):
    async def scenario():
        before = len(standin.requests)
        events, error = await reply(agent_for(standin, plugin_tools=[]), "call add {}")
        return events, error, requests_since(standin, before)

    events, error, [request] = asyncio.run(scenario())
    assert error is None and "tools" not in request["body"]
    assert text_of(events) == "call add {}" and not states(events)


def test_attached_context_goes_before_the_users_text(standin):
    code = "print('```')\nx = 1"
    context = [
        {"kind": "cell", "label": "cell 3", "text": code, "language": "python", "cell": 2},
        {"kind": "error", "label": "ZeroDivisionError", "text": "division by zero"},
    ]
    history = [
        {
            "role": "user",
            "text": "earlier",
            "context": [{"kind": "file", "label": "a.csv", "text": "x,y", "path": "data/a.csv"}],
        },
        {"role": "assistant", "text": "seen"},
    ]

    async def scenario():
        before = len(standin.requests)
        agent = agent_for(standin, plugin_tools=[])
        await reply(agent, "What is wrong?", context=context, history=history)
        return requests_since(standin, before)

    [request] = asyncio.run(scenario())
    earlier, seen, new = request["messages"][1:]
    assert new["role"] == "user"
    assert new["content"] == (
        "[The user attached the following context]\n\n"
        "Attached cell 3 (python, cell index 2):\n````python\nprint('```')\nx = 1\n````\n\n"
        "Attached error: ZeroDivisionError:\n```\ndivision by zero\n```\n\n"
        "[End of attached context; the user's message follows]\n\n"
        "What is wrong?"
    )
    assert earlier["content"].startswith("[The user attached the following context]")
    assert "Attached file: a.csv (data/a.csv):\n```\nx,y\n```" in earlier["content"]
    assert earlier["content"].endswith("\n\nearlier")
    assert seen == {"role": "assistant", "content": "seen"}


def test_named_agents_have_the_class_servers_unless_they_set_their_own(stdio_server):
    from traitlets.config import Config, LoggingConfigurable

    from jupyter_streamchat.agents import load_agents

    parent = LoggingConfigurable(
        config=Config(
            {"OpenAIAgent": {"mcp_servers": {"notes": stdio_server}, "max_tool_rounds": 3}}
        )
    )
    named = {
        "local": {"class": "openai", "model": "llama3.2"},
        "bare": {"class": "openai", "mcp_servers": {}},
    }
    agents = load_agents(parent, parent.log, named)
    assert agents["openai"].mcp_servers == {"notes": stdio_server}
    assert agents["local"].mcp_servers == {"notes": stdio_server}
    assert agents["local"].max_tool_rounds == 3
    assert agents["bare"].mcp_servers == {}


def test_a_secret_in_a_call_is_blanked_where_it_shows(standin, stdio_server, notes):
    key = "sk-Wd3Qm8Zr5Xt1Lp7Vn2Ks"  # the agent's API key, which a model might echo

    async def scenario():
        agent = agent_for(standin, api_key=key, mcp_servers={"notes": stdio_server})
        try:
            return await reply(agent, calls_text(("write_note", {"text": f"key {key}"})))
        finally:
            await agent.close()

    events, error = asyncio.run(scenario())
    assert error is None
    assert notes.read_text(encoding="utf-8") == f"key {key}\n"  # the tool got what was sent
    shown = states(events, "write_note")
    assert shown[-1].status == "completed"
    for state in shown:
        for text in (state.arguments, state.result or ""):
            assert key[3:9] not in text and key[-6:] not in text
    assert shown[-1].result == "noted: key ***"
    assert key[-6:] not in text_of(events)
