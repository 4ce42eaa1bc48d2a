"""Notebook agents and the kernel's one connection, end to end.

A real ``jupyter server`` subprocess with the extension; real ipykernel kernels started through
its REST API (as notebook sessions, so each knows its notebook's path and finds the server
through JPY_PARENT_PID); code run in them over the kernel's channels WebSocket, as JupyterLab
does; and WebSocket clients of the hub (``faultfs.WireClient``), as a browser's chat is. The
store is the server's real SQLite file.

Figures (kill or restart -> ``interrupted``) are printed; run with ``-s`` to see them. No
assertion on time but the hang guards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from faultfs import WireClient
from helpers import HANG_GUARD, assert_contiguous, new_id, text_of
from jupyter_streamchat import protocol as p
from kernel_client import KERNEL_GUARD, Kernel
from server_process import JupyterServer, isolated_env

pytestmark = pytest.mark.subprocess

PING_INTERVAL, PING_TIMEOUT = 0.5, 2.0  # the server's agent_host_* settings here


# -- the server, kernels, clients -----------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("notebook-agents")
    with JupyterServer(
        base,
        "--EchoAgent.delay=0",
        f"--StreamChatApp.agent_host_ping_interval={PING_INTERVAL}",
        f"--StreamChatApp.agent_host_timeout={PING_TIMEOUT}",
        name="agents",
    ) as s:
        yield s


@pytest.fixture
def kernels(server):
    """``kernels(path)`` -> a new Kernel, shut down after the test."""
    started = []

    def start(path: str = "") -> Kernel:
        started.append(Kernel(server, path or f"{new_id('nb-')}.ipynb"))
        return started[-1]

    yield start
    for kernel in started:
        try:
            kernel.shutdown()
        except OSError:
            pass


@pytest.fixture
def browser(server):
    """``browser()`` -> a WebSocket client of the hub, as a browser's chat view is."""
    clients = []

    def connect() -> WireClient:
        clients.append(WireClient.to(server))
        return clients[-1]

    yield connect
    for client in clients:
        client.close()


def send(client: WireClient, agent: str, text: str, conversation: str = "") -> dict:
    """SEND_MESSAGE; -> its MESSAGE_ACCEPTED (frames of other kinds before it are skipped)."""
    client_id = new_id("m-")
    client.send(
        {
            "type": "SEND_MESSAGE",
            "conversationId": conversation or new_id("c-"),
            "agentId": agent,
            "text": text,
            "clientMessageId": client_id,
        }
    )
    frame = next_frame(client, lambda f: f.get("clientMessageId") == client_id)
    assert frame["type"] == "MESSAGE_ACCEPTED", frame
    return frame


def next_frame(client: WireClient, wanted, guard: float = HANG_GUARD) -> dict:
    """The first frame ``wanted`` accepts, of those not taken yet: frames read past are kept
    for a later call (the hub's frames of different kinds interleave)."""
    unread = client.__dict__.setdefault("unread", [])
    for i, frame in enumerate(unread):
        if wanted(frame):
            return unread.pop(i)
    deadline = time.monotonic() + guard
    for _ in range(100_000):  # bounded; the guard ends it long before
        assert time.monotonic() < deadline, "timed out waiting for a frame"
        frame = client.recv()
        assert p.is_server_frame(frame), frame  # every frame the hub sends fits the contract
        if wanted(frame):
            return frame
        unread.append(frame)
    raise AssertionError("no such frame")


def chunks(client: WireClient, message_id: str, count: int = 0, guard: float = HANG_GUARD):
    """The reply's MESSAGE_CHUNK frames up to its final frame (or its first ``count``)."""
    frames = []
    while not (frames and frames[-1]["isComplete"]) and (not count or len(frames) < count):
        frames.append(
            next_frame(
                client,
                lambda f: f["type"] == "MESSAGE_CHUNK" and f["messageId"] == message_id,
                guard,
            )
        )
    return frames


def listed(server: JupyterServer) -> dict:
    return {a["id"]: a for a in server.get_json("streamchat/api/agents")["agents"]}


def stored(server: JupyterServer, conversation_id: str) -> list:
    return server.get_json(f"streamchat/api/conversations/{conversation_id}")["messages"]


def wait_for(condition, what: str, guard: float = HANG_GUARD):
    deadline = time.monotonic() + guard
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def counted(prefix: str, count: int) -> str:
    return "".join(f"{prefix}{i} " for i in range(count))


# The agents the tests define in a kernel: the message text says how many pieces and how long
# before each ("50 0.02").
AGENTS = textwrap.dedent('''
    import asyncio, time
    import jupyter_streamchat as sc
    from jupyter_streamchat import AgentError, Reasoning, Usage

    events = []

    def params(text):
        count, delay = text.split()
        return int(count), float(delay)

    @sc.agent(NAME + "-sync", description="counts, a piece at a time")
    def counting(request):
        count, delay = params(request.text)
        try:
            yield Reasoning(f"{len(request.history)} earlier messages")
            for i in range(count):
                if delay:
                    time.sleep(delay)
                yield f"s{i} "
            yield Usage(model="notebook", output_tokens=count)
        finally:
            events.append(("closed", request.text))

    @sc.agent(NAME + "-async")
    async def counting_async(request):
        """Counts without a thread of its own."""
        count, delay = params(request.text)
        try:
            for i in range(count):
                await asyncio.sleep(delay)
                yield f"a{i} "
        except asyncio.CancelledError:
            events.append(("cancelled", request.text))
            raise
''')


def define_agents(kernel: Kernel, name: str) -> None:
    kernel.run(f"NAME = {name!r}\n" + AGENTS)


# -- streaming ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind,prefix", [("sync", "s"), ("async", "a")])
def test_notebook_agent_streams_stores_and_resumes(server, kernels, browser, kind, prefix):
    kernel = kernels()
    name = new_id("nb-")
    define_agents(kernel, name)
    agent = f"{name}-{kind}"
    conversation = new_id("c-")
    client, late = browser(), browser()

    accepted = send(client, agent, "40 0.03", conversation)
    reply = accepted["messageId"]
    first = chunks(client, reply, count=2)
    # The kernel stays usable while its agent streams (the agent runs off its main thread).
    assert kernel.run("print(41 + 1)") == "42\n"
    # A second client picks the reply up mid-stream from the store, then live.
    late.send({"type": "RESUME", "messageId": reply, "afterSeq": 1})
    rest = chunks(client, reply)
    resumed = chunks(late, reply)
    frames = first + rest
    assert_contiguous(frames)
    assert_contiguous(resumed, 2)
    assert frames[-1]["status"] == "complete"
    assert text_of(frames) == counted(prefix, 40)
    assert text_of(frames[:1]) + text_of(resumed) == text_of(frames)
    assert resumed[-1]["status"] == "complete"
    if kind == "sync":  # Reasoning and Usage travel as from a plug-in
        assert "".join(f.get("reasoning", "") for f in frames) == "0 earlier messages"
        assert frames[-1]["usage"]["model"] == "notebook"
        assert frames[-1]["usage"]["outputTokens"] == 40

    # Stored like any reply, and the next request gets the conversation as history.
    messages = stored(server, conversation)
    assert [(m["role"], m["status"], m["text"]) for m in messages] == [
        ("user", "complete", "40 0.03"),
        ("assistant", "complete", counted(prefix, 40)),
    ]
    again = send(client, agent, "3 0", conversation)
    if kind == "sync":
        frames = chunks(client, again["messageId"])
        assert "".join(f.get("reasoning", "") for f in frames) == "2 earlier messages"


def test_listed_while_the_kernel_lives_and_announced_live(server, kernels, browser):
    watcher = browser()
    kernel = kernels()
    name = new_id("nb-")
    define_agents(kernel, name)
    changed = next_frame(
        watcher,
        lambda f: (
            f["type"] == "AGENTS_CHANGED" and f"{name}-async" in {a["id"] for a in f["agents"]}
        ),
    )
    ids = {a["id"] for a in changed["agents"]}
    assert {f"{name}-sync", f"{name}-async", "echo"} <= ids

    agents = listed(server)
    assert agents[f"{name}-sync"]["kernel"] is True
    assert agents[f"{name}-sync"]["description"] == "counts, a piece at a time"
    assert agents[f"{name}-async"]["description"] == "Counts without a thread of its own."
    assert agents[f"{name}-sync"]["owner"].endswith(kernel.path)  # the notebook's path
    assert "kernel" not in agents["echo"]

    kernel.shutdown()
    gone = next_frame(
        watcher,
        lambda f: (
            f["type"] == "AGENTS_CHANGED" and f"{name}-sync" not in {a["id"] for a in f["agents"]}
        ),
    )
    assert "echo" in {a["id"] for a in gone["agents"]}
    assert f"{name}-sync" not in listed(server) and f"{name}-async" not in listed(server)


# -- stop, death, restart -------------------------------------------------------------------


@pytest.mark.parametrize("kind,event", [("sync", "closed"), ("async", "cancelled")])
def test_stop_reaches_the_agent_while_a_cell_is_busy(server, kernels, browser, kind, event):
    kernel = kernels()
    name = new_id("nb-")
    define_agents(kernel, name)
    client = browser()
    busy = kernel.submit("import time; time.sleep(30)")
    wait_for(lambda: kernel.state() == "busy", "the cell to run")

    reply = send(client, f"{name}-{kind}", "1000 0.02")["messageId"]
    before = chunks(client, reply, count=3)
    client.send({"type": "STOP_GENERATING", "messageId": reply})
    frames = before + chunks(client, reply)
    assert frames[-1]["status"] == "stopped"
    assert kernel.state() == "busy"  # the cell still runs: the stop did not wait for it
    text = text_of(frames)
    assert 0 < len(text) < len(counted(kind[0], 1000)) and counted(kind[0], 1000).startswith(text)
    assert [(m["status"], m["text"]) for m in stored(server, frames[0]["conversationId"])][1] == (
        "stopped",
        text,
    )

    server.request("POST", f"api/kernels/{kernel.id}/interrupt")
    assert kernel.result(busy)["ename"] == "KeyboardInterrupt"
    # The kernel is usable again, and its agent stopped (a sync one at its next piece, its
    # generator closed; an async one cancelled).
    seen = kernel.run("print(events)")
    assert repr((event, "1000 0.02")) in seen


def _wait_interrupted(client, reply, before, started: float) -> tuple:
    frames = before + chunks(client, reply)
    return frames, time.monotonic() - started


@pytest.mark.parametrize("how", ["killed", "restarted"])
def test_a_dying_kernel_ends_its_replies_interrupted(server, kernels, browser, how):
    kernel = kernels()
    name = new_id("nb-")
    define_agents(kernel, name)
    client, watcher = browser(), browser()
    reply = send(client, f"{name}-sync", "1000 0.02")["messageId"]
    before = chunks(client, reply, count=5)

    started = time.monotonic()
    if how == "killed":
        os.kill(kernel.pid, signal.SIGKILL)
    else:
        restart = threading.Thread(
            target=server.request,
            daemon=True,
            args=("POST", f"api/kernels/{kernel.id}/restart"),
            kwargs={"timeout": KERNEL_GUARD},
        )
        restart.start()
    frames, took = _wait_interrupted(client, reply, before, started)
    print(f"\nkernel {how} -> reply interrupted in {took * 1000:.0f} ms")
    assert_contiguous(frames)
    assert frames[-1]["status"] == "interrupted", frames[-1].get("error")
    text = text_of(frames)
    assert len(text) >= len(text_of(before)) and counted("s", 1000).startswith(text)
    assert stored(server, frames[0]["conversationId"])[1]["text"] == text  # kept, as streamed
    next_frame(
        watcher,
        lambda f: (
            f["type"] == "AGENTS_CHANGED" and f"{name}-sync" not in {a["id"] for a in f["agents"]}
        ),
    )
    assert f"{name}-sync" not in listed(server)
    if how == "restarted":
        restart.join(KERNEL_GUARD)
        kernel.ws.close()
        kernel.connect()
        assert kernel.run("print('fresh')") == "fresh\n"  # a new kernel, without the agent


def test_a_frozen_kernel_is_noticed_by_its_pings(server, kernels, browser):
    """SIGSTOP: the socket stays open but nothing answers; the pings notice it within
    agent_host_timeout + agent_host_ping_interval. Once it runs again it registers again."""
    kernel = kernels()
    name = new_id("nb-")
    define_agents(kernel, name)
    client, watcher = browser(), browser()
    reply = send(client, f"{name}-sync", "1000 0.02")["messageId"]
    before = chunks(client, reply, count=3)
    started = time.monotonic()
    os.kill(kernel.pid, signal.SIGSTOP)
    try:
        frames, took = _wait_interrupted(client, reply, before, started)
    finally:
        os.kill(kernel.pid, signal.SIGCONT)
    print(
        f"\nkernel frozen -> reply interrupted in {took * 1000:.0f} ms "
        f"(pings every {PING_INTERVAL} s, timeout {PING_TIMEOUT} s)"
    )
    assert frames[-1]["status"] == "interrupted"
    assert counted("s", 1000).startswith(text_of(frames))
    next_frame(
        watcher,
        lambda f: (
            f["type"] == "AGENTS_CHANGED" and f"{name}-sync" not in {a["id"] for a in f["agents"]}
        ),
    )
    # Thawed, the kernel reconnects and registers its agents again.
    next_frame(
        watcher,
        lambda f: (
            f["type"] == "AGENTS_CHANGED" and f"{name}-sync" in {a["id"] for a in f["agents"]}
        ),
    )
    again = send(client, f"{name}-sync", "5 0")["messageId"]
    assert text_of(chunks(client, again)) == counted("s", 5)


# -- names -------------------------------------------------------------------------------------


def test_running_the_cell_again_replaces_the_agent(server, kernels, browser):
    kernel = kernels()
    name = new_id("nb-")
    cell = textwrap.dedent("""
        import jupyter_streamchat as sc

        @sc.agent(NAME)
        def versioned(request):
            yield VERSION
    """)
    kernel.run(f"NAME, VERSION = {name!r}, 'one'\n" + cell)
    client = browser()
    assert text_of(chunks(client, send(client, name, "hi")["messageId"])) == "one"
    kernel.run(f"NAME, VERSION = {name!r}, 'two'\n" + cell)
    assert text_of(chunks(client, send(client, name, "hi")["messageId"])) == "two"
    assert list(listed(server)).count(name) == 1


def test_a_name_is_one_agent_the_second_kernel_is_refused(server, kernels, browser):
    first, second = kernels(), kernels()
    name = new_id("nb-")
    cell = textwrap.dedent(f"""
        import jupyter_streamchat as sc

        @sc.agent({name!r})
        def who(request):
            yield WHO
    """)
    first.run("WHO = 'first'\n" + cell)
    refused = second.result(second.submit("WHO = 'second'\n" + cell))
    assert refused["status"] == "error" and refused["ename"] == "AgentRegistrationError"
    assert name in refused["evalue"] and "another kernel" in refused["evalue"]
    assert first.path in refused["evalue"]  # says who has it
    assert listed(server)[name]["owner"].endswith(first.path)
    client = browser()
    assert text_of(chunks(client, send(client, name, "hi")["messageId"])) == "first"
    # A server agent's name is refused too.
    taken = second.result(second.submit(cell.replace(repr(name), "'echo'")))
    assert taken["ename"] == "AgentRegistrationError" and "own agents" in taken["evalue"]
    # Once the first kernel lets it go, the second may have it.
    first.run(f"sc.agent.unregister({name!r})")
    second.run("WHO = 'second'\n" + cell)
    assert text_of(chunks(client, send(client, name, "hi")["messageId"])) == "second"


def test_an_agent_that_raises_ends_its_reply_with_the_error(server, kernels, browser):
    kernel = kernels()
    name = new_id("nb-")
    kernel.run(
        textwrap.dedent(f"""
        import jupyter_streamchat as sc
        from jupyter_streamchat import AgentError

        @sc.agent({name!r} + "-bug")
        def buggy(request):
            yield "partial "
            raise ValueError("no such column: " + request.text)

        @sc.agent({name!r} + "-says")
        async def says(request):
            yield "partial "
            raise AgentError("The quota is used up")
    """)
    )
    client = browser()
    frames = chunks(client, send(client, f"{name}-bug", "price")["messageId"])
    assert (frames[-1]["status"], frames[-1]["error"]) == (
        "error",
        "ValueError: no such column: price",
    )
    assert text_of(frames) == "partial "
    frames = chunks(client, send(client, f"{name}-says", "hi")["messageId"])
    assert (frames[-1]["status"], frames[-1]["error"]) == ("error", "The quota is used up")
    assert kernel.run("print(1)") == "1\n"


# -- tool calls -----------------------------------------------------------------------------

TOOLS_AGENTS = textwrap.dedent('''
    import asyncio, json
    from dataclasses import replace
    import jupyter_streamchat as sc
    from jupyter_streamchat import ToolCall

    @sc.agent(NAME + "-tools")
    def tools(request):
        """Says what was attached, then runs N calls, each after a sentence: even ones complete,
        odd ones fail; the last call is left running."""
        for item in request.context:
            yield f"[{item['kind']} {item['label']}: {item['text']}] "
        for i in range(int(request.text)):
            yield f"before {i}. "
            call = ToolCall(f"t{i}", "lookup", arguments=json.dumps({"i": i}))
            yield call
            running = replace(call, status="running", title=f"Look up {i}")
            yield running
            if i % 2:
                yield replace(running, status="failed", error=f"no {i}")
            else:
                yield replace(running, status="completed", result=f"found {i}")
        yield "after. "
        yield ToolCall("left", "sleep", status="running")

    @sc.agent(NAME + "-asks")
    async def asks(request):
        yield "asking "
        yield ToolCall("w", "write", status="waiting")
''')


def test_a_notebook_agent_yields_tool_calls(server, kernels, browser):
    kernel = kernels()
    name = new_id("nb-")
    kernel.run(f"NAME = {name!r}\n" + TOOLS_AGENTS)
    client = browser()
    conversation = new_id("c-")
    count = 300  # more states than one AGENT_OUTPUT carries
    client_id = new_id("m-")
    client.send(
        {
            "type": "SEND_MESSAGE",
            "conversationId": conversation,
            "agentId": f"{name}-tools",
            "text": str(count),
            "clientMessageId": client_id,
            "context": [{"kind": "variable", "label": "df", "text": "3 rows"}],
        }
    )
    accepted = next_frame(client, lambda f: f.get("clientMessageId") == client_id)
    frames = chunks(client, accepted["messageId"])
    assert_contiguous(frames)
    expected = "[variable df: 3 rows] " + "".join(f"before {i}. " for i in range(count))
    assert (frames[-1]["status"], text_of(frames)) == ("complete", expected + "after. ")

    # In stream order: each call's first state comes with the text that came before it.
    text, latest, first_seen = "", {}, {}
    for frame in frames:
        text += frame["chunk"]
        for state in frame.get("toolCalls", []):
            first_seen.setdefault(state["id"], text)
            latest[state["id"]] = state
    assert list(latest) == [f"t{i}" for i in range(count)] + ["left"]
    for i in range(count):
        assert first_seen[f"t{i}"].endswith(f"before {i}. "), i
    assert all(
        (s["status"], s.get("result"), s.get("error"), json.loads(s["arguments"]), s["title"])
        == (
            ("failed", None, f"no {i}", {"i": i}, f"Look up {i}")
            if i % 2
            else ("completed", f"found {i}", None, {"i": i}, f"Look up {i}")
        )
        for i, s in enumerate(list(latest.values())[:count])
    )
    assert (latest["left"]["status"], latest["left"]["error"]) == (
        "failed",
        "not run: the reply ended first",
    )
    reply = stored(server, conversation)[1]
    assert reply["toolCalls"] == list(latest.values())

    # "waiting" is the chat's own: an agent that says it ends with why.
    frames = chunks(client, send(client, f"{name}-asks", "go")["messageId"])
    assert frames[-1]["status"] == "error"
    assert "waiting is the chat's own" in frames[-1]["error"]
    assert text_of(frames) == "asking "


# -- one connection per kernel --------------------------------------------------------------


def test_one_connection_per_kernel(server, kernels, browser):
    kernel = kernels()
    name = new_id("nb-")
    assert kernel.hub_sockets() == 0
    define_agents(kernel, name)
    out = kernel.run(
        textwrap.dedent(f"""
        a = sc.connect("c-shared-{name}")
        b = sc.connect("c-shared-{name}")   # two followers of one conversation
        c = sc.connect("c-other-{name}")
        chat = sc.Chat(agent=NAME + "-async")
        reply = a.send("3 0", NAME + "-sync").wait(30)  # this kernel asks its own agent
        print(reply.status, repr(reply.text))
        print(chat.send("2 0").wait(30).text)
    """)
    )
    assert out == "complete 's0 s1 s2 '\na0 a1 \n"
    assert kernel.hub_sockets() == 1
    # Both followers of the shared conversation hold the reply; the other holds nothing.
    assert (
        kernel.run(
            textwrap.dedent("""
        b.wait_synced(30)
        for _ in range(300):
            if [m["status"] for m in b.messages] == ["complete", "complete"]:
                break
            time.sleep(0.05)
        print([m["text"] for m in b.messages], c.messages)
    """)
        )
        == "['3 0', 's0 s1 s2 '] []\n"
    )
    # A browser sending to the shared conversation reaches both; closing one follower leaves
    # the other following.
    kernel.run("b.close()")
    client = browser()
    send(client, f"{name}-sync", "2 0", f"c-shared-{name}")
    assert (
        kernel.run(
            textwrap.dedent("""
        for _ in range(300):
            if len(a.messages) == 4 and a.messages[-1]["status"] == "complete":
                break
            time.sleep(0.05)
        print(a.messages[-1]["text"], len(b.messages))
    """)
        )
        == "s0 s1  2\n"
    )
    assert kernel.hub_sockets() == 1
    # Conversations closed, agents still there: the connection stays; without them it goes.
    kernel.run("a.close(); c.close(); chat.close()")
    assert kernel.hub_sockets() == 1
    assert f"{name}-sync" in listed(server)
    kernel.run("sc.agent.unregister(NAME + '-sync'); sc.agent.unregister(NAME + '-async')")
    wait_for(lambda: kernel.hub_sockets() == 0, "the connection to close")
    assert f"{name}-sync" not in listed(server)


# -- the wire, from any client ---------------------------------------------------------------


def test_the_agent_frames_on_the_wire(server, browser):
    """What a kernel's connection does, by hand: register, answer a request, be refused."""
    host, user, other = browser(), browser(), browser()
    name = new_id("wire-")
    host.send(
        {
            "type": "REGISTER_AGENT",
            "agentId": name,
            "name": "By hand",
            "description": "answers over the wire",
            "owner": "a test",
        }
    )
    assert next_frame(host, lambda f: f["type"] == "AGENT_REGISTERED") == {
        "type": "AGENT_REGISTERED",
        "agentId": name,
    }
    changed = next_frame(user, lambda f: f["type"] == "AGENTS_CHANGED")
    mine = next(a for a in changed["agents"] if a["id"] == name)
    assert mine == {
        "id": name,
        "name": "By hand",
        "description": "answers over the wire",
        "kernel": True,
        "owner": "a test",
    }

    conversation = new_id("c-")
    reply = send(user, name, "question", conversation)["messageId"]
    request = next_frame(host, lambda f: f["type"] == "AGENT_REQUEST")
    assert (request["agentId"], request["conversationId"], request["text"], request["history"]) == (
        name,
        conversation,
        "question",
        [],
    )
    rid = request["requestId"]
    for broken in (
        {"history": [{"role": "system", "text": "x"}]},
        {"history": None},
        {"requestId": ""},
        {"text": 1},
    ):
        assert not p.is_server_frame({**request, **broken})  # what a kernel would drop
    # Only the connection asked may answer.
    other.send({"type": "AGENT_OUTPUT", "requestId": rid, "text": "forged"})
    error = next_frame(other, lambda f: f["type"] == "ERROR")
    assert (error["code"], error["requestId"]) == ("unknown_request", rid)
    host.send({"type": "AGENT_OUTPUT", "requestId": rid, "reasoning": "hm", "text": "ans"})
    host.send(
        {
            "type": "AGENT_OUTPUT",
            "requestId": rid,
            "text": "wer",
            "usage": {"model": "hand", "inputTokens": 1, "outputTokens": 2},
        }
    )
    host.send({"type": "AGENT_DONE", "requestId": rid})
    frames = chunks(user, reply)
    assert (text_of(frames), frames[-1]["status"]) == ("answer", "complete")
    assert "".join(f.get("reasoning", "") for f in frames) == "hm"
    assert frames[-1]["usage"]["model"] == "hand" and frames[-1]["usage"]["outputTokens"] == 2

    # A stop reaches the agent as AGENT_CANCEL; what it sends after is dropped quietly.
    reply = send(user, name, "again", conversation)["messageId"]
    request = next_frame(host, lambda f: f["type"] == "AGENT_REQUEST")
    assert request["history"] == [
        {"role": "user", "text": "question"},
        {"role": "assistant", "text": "answer"},
    ]
    host.send({"type": "AGENT_OUTPUT", "requestId": request["requestId"], "text": "par"})
    next_frame(user, lambda f: f.get("messageId") == reply)
    user.send({"type": "STOP_GENERATING", "messageId": reply})
    assert next_frame(host, lambda f: f["type"] == "AGENT_CANCEL") == {
        "type": "AGENT_CANCEL",
        "requestId": request["requestId"],
    }
    host.send({"type": "AGENT_OUTPUT", "requestId": request["requestId"], "text": "late"})
    host.send({"type": "AGENT_DONE", "requestId": "never-sent"})
    error = next_frame(host, lambda f: f["type"] == "ERROR")
    assert (error["code"], error["requestId"]) == ("unknown_request", "never-sent")
    stopped = stored(server, conversation)[-1]
    assert (stopped["status"], stopped["text"]) == ("stopped", "par")

    # A name is one agent: another connection, and a server agent's id, are refused.
    other.send({"type": "REGISTER_AGENT", "agentId": name})
    error = next_frame(other, lambda f: f["type"] == "ERROR")
    assert (error["code"], error["agentId"]) == ("agent_taken", name)
    assert "a test" in error["message"] and "another kernel" in error["message"]
    other.send({"type": "REGISTER_AGENT", "agentId": "echo"})
    assert next_frame(other, lambda f: f["type"] == "ERROR")["code"] == "agent_exists"
    other.send({"type": "REGISTER_AGENT", "agentId": name, "name": 7})
    assert next_frame(other, lambda f: f["type"] == "ERROR")["code"] == "bad_field"

    # The owner's socket closes mid-reply: the reply ends interrupted with its text, and the
    # agent goes from every list.
    reply = send(user, name, "third", conversation)["messageId"]
    request = next_frame(host, lambda f: f["type"] == "AGENT_REQUEST")
    host.send({"type": "AGENT_OUTPUT", "requestId": request["requestId"], "text": "kept"})
    next_frame(user, lambda f: f.get("messageId") == reply)
    host.close()
    frames = chunks(user, reply)
    assert frames[-1]["status"] == "interrupted"
    assert stored(server, conversation)[-1]["text"] == "kept"
    next_frame(
        user, lambda f: f["type"] == "AGENTS_CHANGED" and name not in {a["id"] for a in f["agents"]}
    )
    user.send({"type": "UNREGISTER_AGENT", "agentId": name})  # not its own: nothing happens
    user.send(
        {
            "type": "SEND_MESSAGE",
            "conversationId": conversation,
            "agentId": name,
            "text": "hi",
            "clientMessageId": new_id("m-"),
        }
    )
    assert next_frame(user, lambda f: f["type"] == "ERROR")["code"] == "unknown_agent"


def test_a_connection_has_at_most_a_hundred_agents(server, browser):
    host = browser()
    prefix = new_id("many-")
    for i in range(100):
        host.send({"type": "REGISTER_AGENT", "agentId": f"{prefix}-{i}"})
    for _ in range(100):
        next_frame(host, lambda f: f["type"] == "AGENT_REGISTERED")
    host.send({"type": "REGISTER_AGENT", "agentId": f"{prefix}-{100}"})
    assert next_frame(host, lambda f: f["type"] == "ERROR")["code"] == "too_many_agents"
    host.send({"type": "REGISTER_AGENT", "agentId": f"{prefix}-{7}"})  # replacing is fine
    assert (
        next_frame(host, lambda f: f["type"] in ("ERROR", "AGENT_REGISTERED"))["type"]
        == "AGENT_REGISTERED"
    )


# -- without a Jupyter server ----------------------------------------------------------------


HEADLESS = textwrap.dedent("""
    import asyncio, json
    import jupyter_streamchat as sc
    from jupyter_streamchat import AgentError

    @sc.agent("helper")
    def helper(request):
        for word in request.text.split():
            yield word.upper() + " "

    @sc.agent("later")
    async def later(request):
        await asyncio.sleep(0.01)
        return "done: " + request.text

    @sc.agent("refuses")
    def refuses(request):
        raise AgentError("not today")

    conversation = sc.connect("headless")
    results = [conversation.remote]
    for agent in ("helper", "later", "refuses"):
        reply = conversation.send("a few words", agent).wait(30)
        results.append([reply.status, reply.text, reply.error])
    print(json.dumps(results))
""")


def _run_headless(script: str, tmp_path: Path) -> tuple:
    """Run ``script`` in a plain Python process with no Jupyter server to find; -> (its last
    line of output as JSON, its environment)."""
    env = isolated_env(tmp_path, JPY_PARENT_PID=None, STREAMCHAT_SERVER_URL=None)
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=KERNEL_GUARD,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]), env


def test_headless_the_decorator_over_the_in_process_hub(tmp_path):
    results, env = _run_headless(HEADLESS, tmp_path)
    assert results == [
        False,
        ["complete", "A FEW WORDS ", None],
        ["complete", "done: a few words", None],
        ["error", "", "not today"],
    ]
    assert (Path(env["JUPYTER_DATA_DIR"]) / "streamchat.db").exists()


FAST_TOKENS = textwrap.dedent("""
    import json
    import jupyter_streamchat as sc

    @sc.agent("fast")
    def fast(request):
        for i in range(20_000):
            yield f"t{i} "

    conversation = sc.connect("fast-tokens")
    expected = "".join(f"t{i} " for i in range(20_000))
    print(json.dumps([conversation.send(f"go {n}", "fast").wait(60).text == expected
                      for n in range(5)]))
""")


def test_every_token_of_a_fast_sync_agent_arrives(tmp_path):
    """A generator that yields as fast as it can races the sender that takes its output: no
    token may fall between them (each reply is exactly what was yielded)."""
    results, _ = _run_headless(FAST_TOKENS, tmp_path)
    assert results == [True] * 5
