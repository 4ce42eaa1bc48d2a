"""``jupyter streamchat``, the command line, run as a real subprocess (``jupyter streamchat ...``,
found by jupyter as the ``jupyter-streamchat`` console script) against a real ``jupyter server``
with the extension, and against a store file with no server.

Every Jupyter dir points into a temp dir (server_process.isolated_env), so the command finds
only the servers a test started (their runtime info is in that env's runtime dir).
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional

import pytest

from jupyter_streamchat import __version__
from server_process import JupyterServer, free_port, isolated_env

pytestmark = pytest.mark.subprocess

PLUGINS = Path(__file__).parent / "plugins"
COMMANDS = ("list", "show", "export", "delete", "send", "agents")
GUARD = 60.0  # seconds for one command; a hang guard only
ECHO_DELAY = 0.02  # the echo agent's pause before each word, in the servers here
LONG_TEXT = " ".join(f"word{i}" for i in range(300))  # about 6 s of echo at 20 ms a word
PREFIX = "jupyter streamchat: error: "

# The documented exit codes (docs/cli.md, --help).
OK, FAILED, USAGE, NO_SERVER, NOT_FOUND, AUTH, INTERRUPTED = 0, 1, 2, 3, 4, 5, 130


# -- helpers ------------------------------------------------------------------------------


def streamchat(
    env: dict, *args: str, stdin: Optional[str] = None, cwd: Optional[Path] = None
) -> subprocess.CompletedProcess:
    """``jupyter streamchat ARGS`` to its end -> the finished process (text stdout, stderr)."""
    return subprocess.run(
        ["jupyter", "streamchat", *args],
        env=env,
        cwd=cwd,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=GUARD,
    )


def start(env: dict, *args: str) -> subprocess.Popen:
    """``jupyter streamchat ARGS`` left running, its output in pipes (bytes)."""
    return subprocess.Popen(
        ["jupyter", "streamchat", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def read_some(stream, guard: float = GUARD) -> bytes:
    """What a pipe holds once something arrives (b"" at its end)."""
    ready, _, _ = select.select([stream], [], [], guard)
    assert ready, f"nothing arrived within {guard} s"
    return os.read(stream.fileno(), 65536)


def read_line(stream, guard: float = GUARD) -> bytes:
    """One line of a pipe, read a byte at a time (so nothing after it is taken)."""
    line = b""
    deadline = time.monotonic() + guard
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no whole line within {guard} s (got {line!r})"
        byte = os.read(stream.fileno(), 1)
        assert byte, f"the stream ended inside a line: {line!r}"
        line += byte
    return line


def conversation_of(stderr: str) -> str:
    found = re.search(r"^conversation: (\S+)$", stderr, re.M)
    assert found, stderr
    return found.group(1)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The command's error: exactly one line on stderr, with the prefix, no traceback."""
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith(PREFIX), result.stderr
    return lines[0]


# -- the server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server with the extension, echo at ECHO_DELAY a word, and the test agents (boom)."""
    base = tmp_path_factory.mktemp("cli-server")
    env = isolated_env(base, PYTHONPATH=str(PLUGINS))
    with JupyterServer(base, f"--EchoAgent.delay={ECHO_DELAY}", env=env, name="cli") as s:
        yield s


@pytest.fixture
def env(server) -> dict:
    """The command's environment: the server's Jupyter dirs (so it finds that server), no
    STREAMCHAT_* variables."""
    return {k: v for k, v in server.env.items() if not k.startswith("STREAMCHAT_")}


def send_echo(env: dict, text: str, *args: str) -> tuple:
    result = streamchat(env, "send", "--agent", "echo", *args, text)
    assert result.returncode == OK, result.stderr
    return conversation_of(result.stderr), result


# -- help and usage -----------------------------------------------------------------------


def test_help_of_the_command_and_every_sub_command(tmp_path):
    env = isolated_env(tmp_path)
    top = streamchat(env, "--help")
    assert top.returncode == OK, top.stderr
    assert top.stdout.startswith("usage: jupyter streamchat ")
    for name in COMMANDS:
        assert re.search(rf"^    {name} ", top.stdout, re.M), top.stdout
    for name in (None, *COMMANDS):
        result = streamchat(env, *([name] if name else []), "--help")
        assert result.returncode == OK, result.stderr
        assert result.stdout.startswith(f"usage: jupyter streamchat {name or ''}".rstrip())
        # The exit codes a script relies on, in every help.
        for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "130 "):
            assert re.search(rf"^  {code}", result.stdout, re.M), (name, result.stdout)
        assert "--url" in result.stdout and "--store" in result.stdout and "--json" in result.stdout
    version = streamchat(env, "--version")
    assert (version.returncode, version.stdout.strip()) == (OK, __version__)


def test_usage_errors_exit_2(tmp_path):
    env = isolated_env(tmp_path)
    for args in (
        [],
        ["nonsense"],
        ["list", "--limit", "0"],
        ["export", "x", "--format", "txt"],
        ["show"],
        ["--url", "http://127.0.0.1:1/", "--store", "x.db", "list"],
    ):
        result = streamchat(env, *args)
        assert result.returncode == USAGE, (args, result.stderr)
        assert "Traceback" not in result.stderr
    empty = streamchat(env, "--store", str(tmp_path / "s.db"), "send", "  ")
    assert empty.returncode == USAGE and "empty" in one_error_line(empty)
    bad_url = streamchat(env, "--url", "ftp://example/", "list")
    assert bad_url.returncode == USAGE, bad_url.stderr


# -- against a running server ---------------------------------------------------------------


def test_agents_of_the_only_running_server(server, env):
    result = streamchat(env, "agents", "--json")  # no --url: the one running server
    assert result.returncode == OK, result.stderr
    body = json.loads(result.stdout)
    assert body == server.get_json("streamchat/api/agents")
    assert {"echo", "demo", "boom"} <= {agent["id"] for agent in body["agents"]}
    text = streamchat(env, "agents")
    assert text.returncode == OK
    assert text.stdout.splitlines()[0].split() == ["ID", "NAME", "DESCRIPTION"]
    assert re.search(r"^echo\s+echo\s+Replies with your own words", text.stdout, re.M)


def test_send_then_list_show_export_delete(server, env, tmp_path):
    text = "hello from the command line"
    conversation, sent = send_echo(env, text)
    assert sent.stdout == text + "\n"  # the reply, then a line break

    listed = json.loads(streamchat(env, "list", "--json").stdout)
    assert listed["more"] is False
    entry = next(c for c in listed["conversations"] if c["conversationId"] == conversation)
    assert (entry["title"], entry["messageCount"], entry["agentId"]) == (text, 2, "echo")
    table = streamchat(env, "list").stdout
    assert re.search(rf"^{conversation}\s+\S+ \S+\s+2\s+echo\s+{text}$", table, re.M), table
    found = json.loads(streamchat(env, "list", "--search", "FROM THE COMMAND", "--json").stdout)
    assert [c["conversationId"] for c in found["conversations"]] == [conversation]
    nothing = streamchat(env, "list", "--search", "no such words anywhere")
    assert (nothing.returncode, nothing.stdout) == (OK, "")

    shown = streamchat(env, "show", conversation, "--json")
    assert json.loads(shown.stdout) == server.get_json(
        f"streamchat/api/conversations/{conversation}"
    )
    shown_text = streamchat(env, "show", conversation).stdout
    assert re.search(
        rf"^── user · .+\n{text}\n\n── assistant · echo · complete · .+\n{text}\n", shown_text, re.M
    ), shown_text

    markdown = streamchat(env, "export", conversation)
    status, _, body = server.request("GET", f"streamchat/api/conversations/{conversation}/export")
    assert (markdown.returncode, status) == (OK, 200)
    assert markdown.stdout == body.decode()
    out = tmp_path / "chat.json"
    exported = streamchat(env, "export", conversation, "-o", str(out))  # json from the name
    assert exported.returncode == OK, exported.stderr
    assert json.loads(out.read_text()) == json.loads(shown.stdout)
    md_file = tmp_path / "chat.md"
    assert streamchat(env, "export", conversation, "--output", str(md_file)).returncode == OK
    assert md_file.read_text() == body.decode()

    # Not a terminal: delete asks for --yes rather than deleting unasked.
    unasked = streamchat(env, "delete", conversation)
    assert unasked.returncode == USAGE and "--yes" in one_error_line(unasked)
    deleted = streamchat(env, "delete", conversation, "--yes", "--json")
    assert deleted.returncode == OK, deleted.stderr
    assert json.loads(deleted.stdout) == {"conversationId": conversation, "deleted": True}
    status, _, _ = server.request("GET", f"streamchat/api/conversations/{conversation}")
    assert status == 404


def test_delete_asks_on_a_terminal(server, env):
    conversation, _ = send_echo(env, "ask before deleting me")
    for answer, code in (("n", FAILED), ("y", OK)):
        primary, terminal = os.openpty()  # stdin is a terminal: the command asks
        try:
            process = subprocess.Popen(
                ["jupyter", "streamchat", "delete", conversation],
                env=env,
                stdin=terminal,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            prompt = b""
            while not prompt.endswith(b"[y/N] "):
                chunk = read_some(process.stderr)
                assert chunk, prompt
                prompt += chunk
            assert conversation.encode() in prompt and b"2 messages" in prompt
            os.write(primary, answer.encode() + b"\n")
            out, _ = process.communicate(timeout=GUARD)
        finally:
            os.close(primary)
            os.close(terminal)
        assert process.returncode == code
        status, _, _ = server.request("GET", f"streamchat/api/conversations/{conversation}")
        assert status == (200 if answer == "n" else 404)
    assert out.decode() == f"deleted conversation {conversation}\n"


def test_unknown_conversation_or_agent_exits_4(server, env, tmp_path):
    for args in (
        ["show", "no-such-conversation"],
        ["export", "no-such-conversation"],
        ["delete", "no-such-conversation", "--yes"],
        ["send", "--conversation", "no-such-conversation", "hi"],
        ["send", "--agent", "no-such-agent", "hi"],
    ):
        result = streamchat(env, *args)
        assert result.returncode == NOT_FOUND, (args, result.stderr)
        assert "no-such" in one_error_line(result)
    missing = tmp_path / "never.md"
    assert streamchat(env, "export", "no-such-conversation", "-o", str(missing)).returncode == 4
    assert not missing.exists() and not list(tmp_path.iterdir()), "no file is left behind"


def test_send_continues_a_conversation_with_its_agent(server, env):
    conversation, _ = send_echo(env, "first words")
    # No --agent: the agent the conversation last used (echo), not the default (demo).
    again = streamchat(env, "send", "--conversation", conversation, "second words")
    assert again.returncode == OK, again.stderr
    assert (again.stdout, conversation_of(again.stderr)) == ("second words\n", conversation)
    messages = server.get_json(f"streamchat/api/conversations/{conversation}")["messages"]
    assert [(m["role"], m["agentId"], m["text"]) for m in messages] == [
        ("user", "echo", "first words"),
        ("assistant", "echo", "first words"),
        ("user", "echo", "second words"),
        ("assistant", "echo", "second words"),
    ]


def test_send_reads_stdin_and_prints_json(server, env):
    result = streamchat(env, "send", "--agent", "echo", "--json", "-", stdin="from stdin\n")
    assert result.returncode == OK, result.stderr
    assert result.stderr == ""
    reply = json.loads(result.stdout)
    assert (reply["status"], reply["text"], reply["agentId"]) == ("complete", "from stdin", "echo")
    stored = server.get_json(f"streamchat/api/conversations/{reply['conversationId']}")
    assert [m["messageId"] for m in stored["messages"]] == [
        reply["userMessageId"],
        reply["messageId"],
    ]
    assert stored["messages"][1]["text"] == "from stdin"


def test_reply_that_ends_in_error_exits_1(server, env):
    result = streamchat(env, "send", "--agent", "boom", "go")
    assert result.returncode == FAILED, result.stderr
    assert result.stdout == "partial text before \n"  # what it wrote before failing
    assert "the reply ended with an error" in result.stderr
    assert "Traceback" not in result.stderr
    as_json = streamchat(env, "send", "--agent", "boom", "--json", "go")
    assert as_json.returncode == FAILED
    reply = json.loads(as_json.stdout)
    assert reply["status"] == "error" and reply["error"]


def test_send_shows_tool_calls_as_lines(server, env):
    """The reply's text on stdout, as ever; each tool call a line on stderr as it ends."""
    result = streamchat(env, "send", "--agent", "tools", "tool fail")
    assert result.returncode == OK, result.stderr
    assert result.stdout == "Reading 1. Done.\n"
    lines = result.stderr.splitlines()
    assert re.fullmatch(r"conversation: \S+", lines[0]), lines
    took = r" \(\d+\.\d s\)"
    assert len(lines) == 3, lines
    assert re.fullmatch("🔧 read_file: Read f1.txt — completed" + took, lines[1]), lines
    assert re.fullmatch("🔧 run — failed: exit status 1" + took, lines[2]), lines

    shown = streamchat(env, "show", conversation_of(result.stderr)).stdout
    assert re.search(
        r"── assistant · tools · complete · .+\n🔧 read_file: Read f1.txt — completed"
        + took
        + "\n🔧 run — failed: exit status 1"
        + took
        + "\nReading 1. Done.\n",
        shown,
    ), shown

    as_json = streamchat(env, "send", "--agent", "tools", "--json", "tool")
    assert as_json.returncode == OK and as_json.stderr == ""
    reply = json.loads(as_json.stdout)
    assert [(c["id"], c["status"], c["result"]) for c in reply["toolCalls"]] == [
        ("call-1", "completed", "contents of f1.txt")
    ]


def test_send_streams_the_reply_as_it_arrives(server, env):
    process = start(env, "send", "--agent", "echo", LONG_TEXT)
    try:
        conversation = conversation_of(read_line(process.stderr).decode())
        first = read_some(process.stdout)
        assert first and LONG_TEXT.startswith(first.decode())
        # The first words are out while the reply is still being written.
        reply = server.get_json(f"streamchat/api/conversations/{conversation}")["messages"][1]
        assert reply["status"] == "streaming", reply
        rest, _ = process.communicate(timeout=GUARD)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == OK
    assert (first + rest).decode() == LONG_TEXT + "\n"


def test_ctrl_c_stops_the_reply_and_keeps_its_text(server, env):
    process = start(env, "send", "--agent", "echo", LONG_TEXT)
    try:
        conversation = conversation_of(read_line(process.stderr).decode())
        shown = read_some(process.stdout)
        process.send_signal(signal.SIGINT)
        rest, errors = process.communicate(timeout=GUARD)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == INTERRUPTED, errors
    assert b"Traceback" not in errors and b"stopped" in errors
    printed = (shown + rest).decode()
    reply = server.get_json(f"streamchat/api/conversations/{conversation}")["messages"][1]
    assert reply["status"] == "stopped"
    # Everything the agent wrote before the stop is stored and was printed, and it is a part.
    assert reply["text"] and printed == reply["text"] + "\n"
    assert LONG_TEXT.startswith(reply["text"]) and reply["text"] != LONG_TEXT


def test_bad_token_exits_5_and_shows_no_token(server, env):
    result = streamchat(env, "--url", server.http_url("/"), "--token", "wrong-token-1234", "list")
    assert result.returncode == AUTH
    line = one_error_line(result)
    assert "refused the token" in line
    assert "wrong-token-1234" not in result.stderr + result.stdout
    assert server.token not in result.stderr + result.stdout
    by_env = streamchat(
        {
            **env,
            "STREAMCHAT_SERVER_URL": server.http_url("/"),
            "STREAMCHAT_TOKEN": "wrong-token-1234",
        },
        "agents",
    )
    assert by_env.returncode == AUTH


def test_url_finds_the_token_of_a_local_server(server, env):
    # No token given: the server's runtime info has it (localhost or 127.0.0.1 alike).
    for url in (server.http_url("/"), f"http://localhost:{server.port}"):
        result = streamchat(env, "--url", url, "agents", "--json")
        assert result.returncode == OK, (url, result.stderr)
    # A URL as Jupyter prints it, its token in the query: the token is taken from there.
    listed = streamchat(env, "list", "--url", server.http_url(f"?token={server.token}"))
    assert listed.returncode == OK, listed.stderr


def test_no_server_exits_3(tmp_path):
    env = isolated_env(tmp_path)  # a runtime dir with no server in it
    result = streamchat(env, "list")
    assert result.returncode == NO_SERVER
    assert "no running Jupyter server" in one_error_line(result)
    assert "--store" in result.stderr
    closed = streamchat(env, "--url", f"http://127.0.0.1:{free_port()}/", "agents")
    assert closed.returncode == NO_SERVER and "cannot reach" in one_error_line(closed)
    missing = streamchat(env, "--store", str(tmp_path / "absent.db"), "list")
    assert missing.returncode == NO_SERVER and "no store file" in one_error_line(missing)
    assert not (tmp_path / "absent.db").exists()


def test_several_servers_ask_for_url(server, env, tmp_path):
    with JupyterServer(tmp_path, env=server.env, name="second") as second:
        result = streamchat(env, "list")
        assert result.returncode == NO_SERVER, result.stderr
        assert "Traceback" not in result.stderr
        assert "choose one with --url" in result.stderr
        urls = set(re.findall(r"^  (http://\S+)$", result.stderr, re.M))
        assert urls == {f"http://127.0.0.1:{server.port}/", f"http://127.0.0.1:{second.port}/"}
        assert server.token not in result.stderr and second.token not in result.stderr
        chosen = streamchat(env, "--url", second.http_url("/"), "agents")
        assert chosen.returncode == OK, chosen.stderr


# -- on a store file, with no server ------------------------------------------------------------


@pytest.fixture
def store_env(tmp_path) -> dict:
    """No server anywhere; the echo agent's delay set in the Jupyter server config file, which
    a hub run by the command reads as a server would."""
    env = isolated_env(tmp_path / "jupyter")
    config = Path(env["JUPYTER_CONFIG_DIR"]) / "jupyter_server_config.json"
    config.write_text(json.dumps({"EchoAgent": {"delay": ECHO_DELAY}}))
    return env


def test_store_file_every_command(store_env, tmp_path):
    db = tmp_path / "chat.db"
    store = ["--store", str(db)]
    sent = streamchat(store_env, *store, "send", "--agent", "echo", "kept in a file")
    assert sent.returncode == OK, sent.stderr
    assert sent.stdout == "kept in a file\n" and db.is_file()
    conversation = conversation_of(sent.stderr)
    again = streamchat(store_env, "send", "-c", conversation, "and more", *store)  # after it too
    assert again.returncode == OK, again.stderr

    listed = json.loads(streamchat(store_env, *store, "list", "--json").stdout)
    assert [(c["conversationId"], c["messageCount"]) for c in listed["conversations"]] == [
        (conversation, 4)
    ]
    shown = json.loads(streamchat(store_env, *store, "show", conversation, "--json").stdout)
    assert [(m["role"], m["agentId"], m["text"], m["status"]) for m in shown["messages"]] == [
        ("user", "echo", "kept in a file", "complete"),
        ("assistant", "echo", "kept in a file", "complete"),
        ("user", "echo", "and more", "complete"),
        ("assistant", "echo", "and more", "complete"),
    ]
    markdown = streamchat(store_env, *store, "export", conversation, "--format", "md").stdout
    assert markdown.startswith("# kept in a file\n") and "\n## echo (" in markdown
    as_json = streamchat(
        store_env, f"--store=sqlite:///{db}", "export", conversation, "--format", "json"
    )
    assert json.loads(as_json.stdout) == shown
    agents = json.loads(streamchat(store_env, *store, "agents", "--json").stdout)
    assert {"echo", "demo"} <= {agent["id"] for agent in agents["agents"]}

    assert streamchat(store_env, *store, "delete", conversation, "-y").returncode == OK
    gone = streamchat(store_env, *store, "show", conversation)
    assert gone.returncode == NOT_FOUND and conversation in one_error_line(gone)


def test_store_file_ctrl_c_keeps_the_stopped_reply(store_env, tmp_path):
    db = tmp_path / "chat.db"
    process = start(store_env, "--store", str(db), "send", "--agent", "echo", LONG_TEXT)
    try:
        conversation = conversation_of(read_line(process.stderr).decode())
        shown = read_some(process.stdout)
        process.send_signal(signal.SIGINT)
        rest, errors = process.communicate(timeout=GUARD)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == INTERRUPTED, errors
    stored = streamchat(store_env, "--store", str(db), "show", conversation, "--json")
    reply = json.loads(stored.stdout)["messages"][1]
    assert reply["status"] == "stopped"
    assert reply["text"] and (shown + rest).decode() == reply["text"] + "\n"
    assert LONG_TEXT.startswith(reply["text"]) and reply["text"] != LONG_TEXT
