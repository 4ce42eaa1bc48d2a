"""The `openai` agent through a real Jupyter server and a real WebSocket, against a stand-in
model server that speaks OpenAI's streaming chat completions (tests/openai_standin.py)."""

import socket
import time

import pytest
from helpers import HANG_GUARD, assert_contiguous, new_id, streamchat_config, text_of
from openai_standin import REASONING, StandIn, split_words

from jupyter_streamchat.agents.openai import LENGTH_NOTE, OpenAIAgent

SECRET = "sk-test-secret"
WRONG_KEY = "sk-wrong-key-1234"
WORDS = "alpha beta  gamma delta\nepsilon"


def half(text):
    """What the stand-in sends of the echo before it fails on purpose."""
    pieces = split_words(text)
    return "".join(pieces[: max(1, len(pieces) // 2)])


@pytest.fixture(scope="module")
def standin():
    with StandIn(api_key=SECRET) as server:  # any other key gets a 401
        yield server


@pytest.fixture(scope="module")
def closed_port():
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def named(model, **settings):
    return {"class": "openai", "model": model, **settings}


@pytest.fixture
def jp_argv(standin):
    # As `jupyter lab --OpenAIAgent.base_url=... --OpenAIAgent.model=...` would set them.
    return [f"--OpenAIAgent.base_url={standin.url}", "--OpenAIAgent.model=standin"]


@pytest.fixture
def jp_server_config(closed_port):
    no_retry = {"max_retries": 0}
    return streamchat_config(
        OpenAIAgent={"api_key": SECRET},
        StreamChatApp={
            "agents": {
                "tuned": named(
                    "standin",
                    temperature=0.25,
                    max_tokens=50,
                    system_prompt="Be brief.",
                    extra_body={"standin_tokens": 5, "top_k": 7},
                ),
                "reasoning-content": named("standin-reasoning-content"),
                "reasoning": named("standin-reasoning"),
                "think": named("standin-think"),
                "streaming": named(
                    "standin", extra_body={"standin_tokens": 400, "standin_rate": 50}
                ),
                "length": named("length"),
                "flaky": named("standin", extra_body={"standin_fail_times": 1}, max_retries=2),
                "down": named("error-500", max_retries=2),
                "e401": named("error-401", **no_retry),
                "wrong-key": named("standin", api_key=WRONG_KEY, **no_retry),
                "no-key": named("standin", api_key="", **no_retry),
                "e404": named("error-404", **no_retry),
                "e429": named("error-429", max_retries=2),  # Retry-After 30 s: too long to wait
                "e500": named("error-500", **no_retry),
                "midstream": named("midstream-error", **no_retry),
                "cutoff": named("cutoff", **no_retry),
                "slow": named("slow", timeout=0.5, extra_body={"standin_delay": 5}, **no_retry),
                "refused": named(
                    "standin", base_url=f"http://127.0.0.1:{closed_port}/v1", **no_retry
                ),
                "broken-class": {"class": "no_such_package.agents:Nothing"},
                "broken-trait": named("standin", colour="blue"),
            }
        },
    )


async def ask(client, text, agent="openai", conversation=None):
    await client.send_message(text, agent=agent, conversation=conversation)
    accepted = await client.expect("MESSAGE_ACCEPTED")
    frames = await client.chunks_until_complete(accepted["messageId"])
    assert_contiguous(frames)
    return accepted, frames


def reasoning_of(frames):
    return "".join(f.get("reasoning", "") for f in frames)


def requests_for(standin, text):
    """What the stand-in received for the user message ``text``."""
    return [
        r
        for r in standin.requests
        if isinstance(r.get("messages"), list) and r["messages"][-1].get("content") == text
    ]


async def test_streams_the_answer_with_the_conversation_so_far(chat, rest, standin):
    client = await chat()
    conversation = new_id("c-")
    first, second = f"{WORDS} {new_id()}", f"and then {new_id()}"
    _, frames = await ask(client, first, conversation=conversation)
    assert frames[-1]["status"] == "complete" and text_of(frames) == first
    _, frames = await ask(client, second, conversation=conversation)
    assert frames[-1]["status"] == "complete" and text_of(frames) == second

    [request] = requests_for(standin, second)
    assert request["model"] == "standin"
    assert request["stream"] is True
    assert request["stream_options"] == {"include_usage": True}
    assert request["messages"] == [
        {"role": "system", "content": OpenAIAgent.system_prompt.default_value},
        {"role": "user", "content": first},
        {"role": "assistant", "content": first},
        {"role": "user", "content": second},
    ]
    for unset in ("temperature", "max_tokens"):
        assert unset not in request["body"]  # None means the server's own default
    assert "authorization" not in {k.lower() for k in request["headers"]}  # not recorded

    usage = frames[-1]["usage"]
    words = sum(len(m["content"].split()) for m in request["messages"])
    assert usage["model"] == "standin-2025-01-01"  # what served it, from the stream
    assert (usage["inputTokens"], usage["outputTokens"]) == (words, len(split_words(second)))
    assert 0 <= usage["firstTokenSeconds"] <= usage["durationSeconds"]

    stored = (await rest("conversations", conversation))["messages"]
    assert [m["text"] for m in stored] == [first, first, second, second]
    assert stored[-1]["usage"]["model"] == "standin-2025-01-01"


async def test_settings_reach_the_model_server(chat, standin):
    client = await chat()
    text = f"one two {new_id()}"
    _, frames = await ask(client, text, agent="tuned")
    # standin_tokens from extra_body: 5 tokens cycling through the user's words.
    words = text.split()
    assert text_of(frames) == "".join(words[i % 3] + " " for i in range(5))
    [request] = requests_for(standin, text)
    body = request["body"]
    assert (body["temperature"], body["max_tokens"], body["top_k"]) == (0.25, 50, 7)
    assert request["messages"][0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize("agent", ["reasoning-content", "reasoning", "think"])
async def test_reasoning_is_kept_apart_from_the_answer(agent, chat, standin):
    client = await chat()
    conversation = new_id("c-")
    text = f"{WORDS} {new_id()}"
    accepted, frames = await ask(client, text, agent=agent, conversation=conversation)
    assert frames[-1]["status"] == "complete"
    assert reasoning_of(frames) == REASONING
    assert text_of(frames) == text  # no thinking, and no <think> tag, in the answer

    viewer = await chat()
    await viewer.send("SUBSCRIBE", conversationId=conversation)
    history = (await viewer.expect("HISTORY"))["messages"]
    reply = next(m for m in history if m["messageId"] == accepted["messageId"])
    assert (reply["text"], reply["reasoning"], reply["status"]) == (text, REASONING, "complete")
    assert reply["usage"]["model"] == f"{standin.requests[-1]['model']}-2025-01-01"

    # The thinking is not sent back as context on the next turn.
    follow_up = f"more {new_id()}"
    await ask(client, follow_up, agent=agent, conversation=conversation)
    [request] = requests_for(standin, follow_up)
    assert request["messages"][-2] == {"role": "assistant", "content": text}


async def test_stop_closes_the_model_connection_at_once(chat, rest, standin):
    client = await chat()
    conversation, text = new_id("c-"), f"tick tock {new_id()}"
    await client.send_message(text, agent="streaming", conversation=conversation)
    mid = (await client.expect("MESSAGE_ACCEPTED"))["messageId"]
    seen = [await client.expect("MESSAGE_CHUNK") for _ in range(3)]
    stopped_at = time.monotonic()
    await client.send("STOP_GENERATING", messageId=mid)
    frames = seen + await client.chunks_until_complete(mid)
    assert_contiguous(frames)
    assert frames[-1]["status"] == "stopped"

    [request] = requests_for(standin, text)
    deadline = time.monotonic() + HANG_GUARD
    while "closed_at" not in request and time.monotonic() < deadline:
        await client.no_frame(0.02)
    assert "closed_at" in request, "the model server never saw the connection close"
    # A generous bound on loopback: the response is closed as the stop arrives, not later.
    print(
        f"model connection closed {(request['closed_at'] - stopped_at) * 1000:.1f} ms "
        "after the stop was sent"
    )
    assert request["closed_at"] - stopped_at < 0.1

    reply = (await rest("conversations", conversation))["messages"][1]
    words = text.split()
    full = "".join(words[i % 3] + " " for i in range(400))
    assert reply["status"] == "stopped" and reply["text"] == text_of(frames)
    assert 0 < len(reply["text"]) < len(full) and full.startswith(reply["text"])


def _errors(standin_url, closed_port):
    at = f"The model server at {standin_url}"
    return {
        "e401": [f"{at} refused the API key (401)"],
        "wrong-key": [f"{at} refused the API key (401)"],
        "no-key": [f"{at} needs an API key (401)"],
        "e404": [f"{at} has no model 'error-404' (404)", "does not exist"],
        "e429": [f"{at} is rate limiting requests (429)", "try again in 30 s"],
        "e500": [f"{at} failed (500)"],
        "midstream": [f"{at} reported an error mid-reply", "The model crashed while generating"],
        "cutoff": [f"{at} ended the reply early: the stream broke off"],
        "slow": [f"{at} sent no reply within 0.5 s"],
        "refused": [f"Cannot reach http://127.0.0.1:{closed_port}/v1: is the server running?"],
    }


@pytest.mark.parametrize(
    "agent",
    [
        "e401",
        "wrong-key",
        "no-key",
        "e404",
        "e429",
        "e500",
        "midstream",
        "cutoff",
        "slow",
        "refused",
    ],
)
async def test_failures_end_the_reply_with_words_a_user_understands(
    agent, chat, rest, standin, closed_port
):
    client = await chat()
    conversation, text = new_id("c-"), f"{WORDS} {new_id()}"
    _, frames = await ask(client, text, agent=agent, conversation=conversation)
    final = frames[-1]
    assert final["status"] == "error"
    for words in _errors(standin.url, closed_port)[agent]:
        assert words in final["error"], final["error"]
    # The stand-in's 401 quotes the key it got; the message never does.
    for secret in (SECRET, WRONG_KEY, "Authorization", "Bearer", "Traceback"):
        assert secret not in final["error"]
    # What streamed before a failure stays; nothing else does.
    partial = half(text) if agent in ("midstream", "cutoff") else ""
    assert text_of(frames) == partial
    reply = (await rest("conversations", conversation))["messages"][1]
    assert (reply["status"], reply["text"], reply["error"]) == ("error", partial, final["error"])
    if agent == "slow":  # the request given up on is closed, not left generating
        [request] = requests_for(standin, text)
        assert "closed_at" in request


async def test_retries_before_the_first_token_are_bounded(chat, standin):
    client = await chat()
    text = f"{WORDS} {new_id()}"
    _, frames = await ask(client, text, agent="flaky")  # one 500, then an answer
    assert (frames[-1]["status"], text_of(frames)) == ("complete", text)
    assert len(requests_for(standin, text)) == 2

    text = f"{WORDS} {new_id()}"
    _, frames = await ask(client, text, agent="down")  # 500 every time
    assert frames[-1]["status"] == "error"
    assert "(after 3 attempts)" in frames[-1]["error"]
    assert len(requests_for(standin, text)) == 3  # the first try and max_retries=2

    text = f"{WORDS} {new_id()}"
    await ask(client, text, agent="e429")  # asked to wait 30 s: told, not retried
    assert len(requests_for(standin, text)) == 1


async def test_token_limit_completes_with_a_note(chat):
    client = await chat()
    text = f"{WORDS} {new_id()}"
    _, frames = await ask(client, text, agent="length")
    assert frames[-1]["status"] == "complete"
    assert text_of(frames) == half(text) + LENGTH_NOTE


async def test_named_agents_and_broken_entries(capfd, rest, streamchat_app, standin):
    # capfd comes first: it captures the server's log from its start.
    agents = {a["id"]: a for a in (await rest("agents"))["agents"]}
    assert agents["openai"]["description"] == f"standin at {standin.url}"
    assert agents["reasoning"]["description"] == f"standin-reasoning at {standin.url}"
    assert agents["e404"]["description"] == f"error-404 at {standin.url}"
    assert {"echo", "demo", "tuned", "think"} <= set(agents)
    # Named agents take the class config (here from the command line) under their own settings.
    instances = streamchat_app.agent_instances
    assert (instances["openai"].base_url, instances["openai"].model) == (standin.url, "standin")
    assert (instances["tuned"].api_key, instances["tuned"].temperature) == (SECRET, 0.25)
    # Broken entries are left out and named in the log; the server carries on.
    assert not {"broken-class", "broken-trait"} & set(agents)
    log = capfd.readouterr().err
    assert "skipping agent 'broken-class'" in log and "no_such_package" in log
    assert "skipping agent 'broken-trait'" in log and "colour" in log
