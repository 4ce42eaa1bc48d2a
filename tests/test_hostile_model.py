"""The `openai` agent against a hostile model server (tests/hostile_model.py), through a real
`jupyter server` process and real WebSockets.

What must hold, whatever the model server sends: the API key never leaves the Jupyter server
(reply errors, frames, REST answers, the export, its log at DEBUG); every part of what it sends
is bounded (an event, an error body, the time an event takes, the text of a reply), and a delta
longer than a frame's chunk limit is cut into frames that respect it; a malformed stream ends
the reply with a sentence naming the model server, keeping the text that came before.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faultfs import WireClient
from helpers import assert_contiguous, text_of
from hostile_model import (
    DONE,
    HostileModel,
    Script,
    answer,
    chunk,
    delta,
    event,
    finish,
    huge_delta,
    leaks,
)
from server_process import JupyterServer, isolated_env

from jupyter_streamchat.core.reply import MAX_CHUNK_CHARS

pytestmark = pytest.mark.subprocess

PLUGINS = Path(__file__).parent / "plugins"

# Random-looking, with no English word in it: any run of its characters in a text is a leak.
KEY = "sk-Q7f3Zp9LmX2vB8nR4tW6yK1cH5jD0gSx"
ENV_KEY = "sk-EnvVar8d7F6g5H4j3K2l1ZxCvBnM0qW"
AGENT_TIMEOUT = 2.0  # seconds: the agent's read timeout, and the most an event may take
MAX_EVENT = 1024 * 1024  # the agent's default max_event_bytes
MAX_ERROR = 256 * 1024  # and max_error_bytes


@pytest.fixture(scope="module")
def model():
    with HostileModel() as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory, model):
    base = tmp_path_factory.mktemp("hostile")
    env = isolated_env(base, OPENAI_API_KEY=ENV_KEY, PYTHONPATH=str(PLUGINS))
    # With the other extensions, as `jupyter lab --debug` runs: linking them logs the whole
    # config at DEBUG, with the key given in the config file and on the command line.
    jupyter = JupyterServer(
        base,
        "--debug",
        f"--OpenAIAgent.api_key={KEY}",
        "--EchoAgent.delay=0.001",
        env=env,
        other_extensions=True,
    )
    config_file = base / "config" / "jupyter_server_config.json"
    config = {"OpenAIAgent": {"api_key": KEY}}
    config["StreamChatApp"] = {
        "agents": {
            "hostile": {
                "class": "openai",
                "base_url": model.url,
                "model": "hostile",
                "api_key": KEY,
                "max_retries": 0,
                "timeout": AGENT_TIMEOUT,
            },
            "leaky": {"class": "streamchat_test_agents:LeakyAgent", "api_key": KEY},
        }
    }
    config_file.write_text(json.dumps(config))
    with jupyter:
        yield jupyter


def ask(server, text: str, agent: str = "hostile", guard: float = 60.0) -> list:
    """Send ``text`` and read its reply's frames to the final one."""
    client = WireClient.to(server, timeout=guard)
    try:
        client.send(
            {
                "type": "SEND_MESSAGE",
                "conversationId": f"c-{uuid.uuid4().hex}",
                "agentId": agent,
                "text": text,
                "clientMessageId": uuid.uuid4().hex,
            }
        )
        frames = []
        while not (frames and frames[-1].get("isComplete")):
            frame = client.recv()
            assert frame["type"] != "ERROR", frame
            if frame["type"] == "MESSAGE_CHUNK":
                frames.append(frame)
        assert_contiguous(frames)
        return frames
    finally:
        client.close()


def run(server, model, script: Script, **kwargs) -> list:
    name = f"script-{uuid.uuid4().hex}"
    model.scripts[name] = script
    return ask(server, name, **kwargs)


def names_the_server(error: str, model) -> bool:
    return error.startswith(f"The model server at {model.url}") and not re.search(
        r"Traceback|JSONDecodeError|UnicodeDecodeError|Exception\b", error
    )


# -- 1. the key never leaves -----------------------------------------------------------------


def key_bodies():
    """Error bodies that quote the key in the ways servers do, at offsets around the cut."""
    said = {
        "raw": f"Incorrect API key provided: {KEY}.",
        "url": f"bad request to /v1?key={quote(KEY)}",
        "split": f"key {KEY[:11]}\n{KEY[11:23]}\r\n{KEY[23:]} refused",
        "escaped line": f"key {KEY[:15]}\\n{KEY[15:]}",
        "cut": f"you sent {KEY[:19]}…",
        "cut dots": f"you sent {KEY[:9]}...",
        "start": f"{KEY[-12:]} is not a key",
        "twice": f"{KEY} and again {KEY}",
    }
    for offset in (0, 1, 150, 270, 280, 290, 295, 299, 300, 310, 1000):
        said[f"at {offset}"] = "x" * offset + KEY + " ends"
    return said


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 429, 500, 503])
def test_error_bodies_quoting_the_key_never_show_it(server, model, status):
    for name, message in key_bodies().items():
        for body in (
            json.dumps({"error": {"message": message, "type": "x", "code": KEY}}),
            json.dumps({"error": message}),
            message,
        ):
            frames = run(
                server,
                model,
                Script([body.encode()], status=status, content_type="application/json"),
            )
            error = frames[-1]["error"]
            assert frames[-1]["status"] == "error" and names_the_server(error, model), error
            assert not leaks(json.dumps(frames), KEY), (status, name, body, error)


def test_a_midstream_error_quoting_the_key_never_shows_it(server, model):
    for name, message in key_bodies().items():
        frames = run(
            server,
            model,
            Script([delta("so far "), event({"error": {"message": message, "param": KEY}}), DONE]),
        )
        assert text_of(frames) == "so far "
        assert frames[-1]["status"] == "error" and names_the_server(frames[-1]["error"], model)
        assert not leaks(json.dumps(frames), KEY), (name, frames[-1]["error"])


def test_a_plugin_whose_exception_quotes_its_key(server):
    frames = ask(server, "hello", agent="leaky")
    assert text_of(frames) == "some text "
    assert (
        frames[-1]["status"] == "error" and "RuntimeError: auth failed for" in frames[-1]["error"]
    )
    assert not leaks(json.dumps(frames), KEY), frames[-1]["error"]


def test_a_model_that_sends_the_key_back_in_its_reply(server, model):
    """A model server is sent the key; what it streams back never shows it, however the
    deltas cut it (whole, in part, escaped, split over lines), in the answer or the thinking."""
    said = f"Your key is {KEY}, or {KEY[3:20]}, or {quote(KEY)}, or {KEY[:15]}\n{KEY[15:]}."
    for size in (1, 2, 3, 5, 7, 13, 40):
        pieces = [said[i : i + size] for i in range(0, len(said), size)]
        thoughts = [event(chunk({"reasoning_content": p})) for p in pieces]
        frames = run(server, model, Script(thoughts + answer(pieces)))
        assert frames[-1]["status"] == "complete"
        shown = text_of(frames)
        assert shown.startswith("Your key is ***, or ***") and shown.endswith(".")
        thinking = "".join(f.get("reasoning", "") for f in frames)
        assert thinking == shown
        assert not leaks(json.dumps(frames), KEY), (size, shown)
    status, _, body = server.request(
        "GET", f"streamchat/api/conversations/{frames[-1]['conversationId']}"
    )
    assert status == 200 and not leaks(body.decode(), KEY)


def test_the_key_is_in_no_rest_answer_export_or_log_line(server, model):
    """After replies that failed with the key in the server's words (and in its content), and
    a plug-in's traceback quoting it."""
    ask(server, "hello", agent="leaky")
    run(
        server,
        model,
        Script(
            [json.dumps({"error": {"message": KEY}}).encode()],
            status=400,
            content_type="application/json",
        ),
    )
    frames = run(server, model, Script([delta("a"), b"data: {" + KEY.encode() + b"\n\n"]))
    conversation = frames[-1]["conversationId"]
    for path in (
        "streamchat/api/conversations",
        f"streamchat/api/conversations/{conversation}",
        f"streamchat/api/conversations/{conversation}/export",
        "streamchat/api/agents",
    ):
        status, _, body = server.request("GET", path)
        assert status == 200, (path, status)
        assert not leaks(body.decode(), KEY), path
    log = server.log()
    assert "Config changed" in log  # the DEBUG dump of the config was made, and read here
    assert "Traceback" in log and "RuntimeError: auth failed for" in log
    assert not leaks(log, KEY), [line for line in log.splitlines() if leaks(line, KEY)][:3]
    assert not leaks(log, ENV_KEY)


# -- 2. bounded -----------------------------------------------------------------------------


def test_a_delta_longer_than_a_frame_is_cut_into_frames_that_respect_the_limit(server, model):
    text = "".join(f"{i:07d} " for i in range(40_000))  # 320,000 characters in one delta
    frames = run(server, model, Script([delta("before "), delta(text), finish(), DONE]))
    assert frames[-1]["status"] == "complete"
    assert text_of(frames) == "before " + text
    assert max(len(f["chunk"]) for f in frames) <= MAX_CHUNK_CHARS
    assert len(frames) >= len(text) // MAX_CHUNK_CHARS


def peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_50_mb_delta_ends_the_reply_and_costs_the_server_little_memory(server, model):
    run(server, model, Script(answer(["warm ", "up"])))
    before = peak_rss(server.pid)
    frames = run(server, model, Script(huge_delta(50 * 1024 * 1024)))
    grown = peak_rss(server.pid) - before
    assert frames[-1]["status"] == "error"
    assert names_the_server(frames[-1]["error"], model)
    assert "larger than 1 MiB" in frames[-1]["error"]
    assert text_of(frames) == "before "
    # Unbounded, the server grew by 12 times the delta; the bound is the event limit and a
    # reply's buffers, a few MiB, with room for the allocator's own slack.
    assert grown < 32 * 1024 * 1024, f"the server grew by {grown / 2**20:.1f} MiB"


def test_an_event_that_never_ends_is_cut_off(server, model):
    def endless():
        yield delta("before ")
        yield b"data: "
        for _ in range(100_000):  # 6 GB: far more than the bound lets through
            yield b"x" * 65536

    frames = run(server, model, Script(endless))
    assert frames[-1]["status"] == "error" and text_of(frames) == "before "
    assert "sent an event larger than 1 MiB" in frames[-1]["error"]


def test_an_event_that_trickles_in_forever_is_cut_off(server, model):
    def trickle():
        yield delta("before ")
        yield b'data: {"choices": ['
        for _ in range(200):  # a byte every 0.3 s: never silent for a whole read timeout
            yield 0.3
            yield b" "

    frames = run(server, model, Script(trickle))
    assert frames[-1]["status"] == "error" and text_of(frames) == "before "
    assert f"left an event unfinished for more than {AGENT_TIMEOUT:g} s" in frames[-1]["error"]


def test_a_huge_error_body_is_not_read_whole(server, model):
    body = json.dumps({"error": {"message": "y" * (8 * MAX_ERROR)}}).encode()
    frames = run(server, model, Script([body], status=500, content_type="application/json"))
    assert names_the_server(frames[-1]["error"], model)
    assert "response body larger than 256 KiB" in frames[-1]["error"]


MALFORMED = {
    "bad JSON first": ([b"data: {not json\n\n"], "", "not valid JSON"),
    "bad JSON later": ([delta("hello "), b'data: {"choices": [\n\n'], "hello ", "not valid JSON"),
    "choices a string": (
        [delta("a "), event({"choices": "many"})],
        "a ",
        "'choices' is a string, not a list",
    ),
    "content a number": ([event(chunk({"content": 5}))], "", "'content' is a number, not a string"),
    "delta a list": (
        [event({"choices": [{"index": 0, "delta": [1, 2]}]})],
        "",
        "'delta' is a list, not an object",
    ),
    "chunk a number": (
        [delta("b "), b"data: 5\n\n"],
        "b ",
        "a chunk that is a number, not an object",
    ),
    "chunk a string": ([b'data: "text"\n\n'], "", "a chunk that is a string, not an object"),
    "index a string": (
        [event({"choices": [{"index": "0", "delta": {}}]})],
        "",
        "'index' is a string, not a whole number",
    ),
    "not UTF-8 first": ([b"data: \xff\xfe\x00\n\n"], "", "not UTF-8"),
    "not UTF-8 later": (
        [delta("ok "), b'data: {"choices": [{"index": 0, "delta": {"content": "\xc3\x28"}}]}\n\n'],
        "ok ",
        "not UTF-8",
    ),
    "a line cut off": (
        [delta("partial "), b'data: {"choices": [{"ind'],
        "partial ",
        "stream broke off",
    ),
    "no finish": ([delta("all "), delta("of it")], "all of it", "stream broke off"),
    # The redactor holds back an end that may begin a part of the key ("Q7f" is in it).
    "an error after text held back": (
        [delta("ends in Q7f"), b"data: {bad\n\n"],
        "ends in Q7f",
        "not valid JSON",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_stream_ends_with_a_sentence_naming_the_server(server, model, case):
    body, kept, said = MALFORMED[case]
    frames = run(server, model, Script(body))
    final = frames[-1]
    assert final["status"] == "error", final
    assert names_the_server(final["error"], model), final["error"]
    assert said in final["error"], final["error"]
    assert text_of(frames) == kept


# -- fuzzed ------------------------------------------------------------------------------------

FUZZ = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)

words = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)


@st.composite
def hostile_streams(draw):
    """A well-formed reply, cut into reads at random points, perhaps spoilt at one place."""
    pieces = draw(st.lists(words, min_size=1, max_size=12))
    events = answer(pieces)
    spoil = draw(
        st.sampled_from(
            [
                "none",
                "truncate",
                "not utf-8",
                "bad json",
                "huge event",
                "error status",
                "key in content",
            ]
        )
    )
    at = draw(st.integers(0, len(events) - 1))
    if spoil == "truncate":
        whole = b"".join(events)
        events = [whole[: draw(st.integers(0, len(whole) - 1))]]
    elif spoil == "not utf-8":
        events.insert(
            at, b'data: {"choices": [{"index": 0, "delta": {"content": "\xed\xa0"}}]}\n\n'
        )
    elif spoil == "bad json":
        events.insert(
            at, b"data: " + draw(st.binary(min_size=1, max_size=30)).replace(b"\n", b"") + b"}{\n\n"
        )
    elif spoil == "huge event":
        events.insert(at, b"data: " + b"z" * (MAX_EVENT + 1) + b"\n\n")
    elif spoil == "error status":
        offset = draw(st.integers(0, 400))
        message = draw(st.sampled_from(list(key_bodies().values())))
        body = json.dumps({"error": {"message": "m" * offset + message}}).encode()
        status = draw(st.sampled_from([400, 403, 404, 500, 502]))
        return pieces, spoil, Script([body], status=status, content_type="application/json")
    elif spoil == "key in content":
        pass  # the content itself is the user's business; the key must not be in errors
    whole = b"".join(events)
    cuts = sorted(set(draw(st.lists(st.integers(0, len(whole)), max_size=8))))
    reads = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)]) if b > a]
    return pieces, spoil, Script(reads)


@FUZZ
@given(case=hostile_streams())
def test_fuzzed_streams_end_cleanly_and_never_leak(server, model, case):
    pieces, spoil, script = case
    frames = run(server, model, script, guard=30)
    final, text = frames[-1], text_of(frames)
    assert final["status"] in ("complete", "error")
    if final["status"] == "complete":
        assert text == "".join(pieces)
    else:
        assert "".join(pieces).startswith(text)
        assert names_the_server(final["error"], model), final["error"]
    if spoil == "none":
        assert final["status"] == "complete"
    if final.get("error"):
        assert not leaks(final["error"], KEY)


def test_other_replies_stream_while_a_model_server_floods(server, model):
    """A never-ending flood of tiny deltas on one reply; an echo reply beside it completes."""

    def flood():
        for i in range(30_000):  # bounded: about 3 s at full speed
            yield delta("t")
        yield finish()
        yield DONE

    name = f"script-{uuid.uuid4().hex}"
    model.scripts[name] = Script(flood)
    flooded = WireClient.to(server)
    flooded.send(
        {
            "type": "SEND_MESSAGE",
            "conversationId": f"c-{uuid.uuid4().hex}",
            "agentId": "hostile",
            "text": name,
            "clientMessageId": uuid.uuid4().hex,
        }
    )
    try:
        for _ in range(3):
            frames = ask(server, "bystander " * 50, agent="echo")
            assert frames[-1]["status"] == "complete"
            assert text_of(frames) == "bystander " * 50
        frames = []
        deadline = time.monotonic() + 60
        while not (frames and frames[-1].get("isComplete")) and time.monotonic() < deadline:
            frame = flooded.recv()
            if frame["type"] == "MESSAGE_CHUNK":
                frames.append(frame)
        assert frames[-1]["status"] == "complete" and text_of(frames) == "t" * 30_000
    finally:
        flooded.close()
