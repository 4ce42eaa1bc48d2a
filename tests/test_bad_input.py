"""Bad input gets an ERROR frame with a machine-readable code, the socket stays open, and
nothing already stored changes."""

import json

import pytest

from helpers import new_id, streamchat_config, text_of

VALID = {"conversationId": "c-ok", "agentId": "echo", "text": "hi", "clientMessageId": "m-ok"}


async def snapshot(rest):
    conversations = (await rest("conversations"))["conversations"]
    return conversations, [await rest("conversations", c["conversationId"]) for c in conversations]


@pytest.mark.parametrize(
    "raw, code",
    [
        ("this is not json", "bad_json"),
        ("[1, 2, 3]", "bad_json"),
        (b"\x00\x01binary", "bad_json"),
        (json.dumps({"type": "DANCE"}), "unknown_type"),
        (json.dumps({"no": "type"}), "unknown_type"),
        (json.dumps({"type": "SEND_MESSAGE", **{k: v for k, v in VALID.items() if k != "text"}}),
         "bad_field"),
        (json.dumps({"type": "SEND_MESSAGE", **VALID, "text": 42}), "bad_field"),
        (json.dumps({"type": "SEND_MESSAGE", **VALID, "conversationId": ""}), "bad_field"),
        (json.dumps({"type": "SEND_MESSAGE", **VALID, "clientMessageId": ["x"]}), "bad_field"),
        (json.dumps({"type": "RESUME", "messageId": "x", "afterSeq": "3"}), "bad_field"),
        (json.dumps({"type": "RESUME", "messageId": "x", "afterSeq": -1}), "bad_field"),
        (json.dumps({"type": "RESUME", "messageId": "x"}), "bad_field"),
        (json.dumps({"type": "STOP_GENERATING"}), "bad_field"),
        (json.dumps({"type": "SUBSCRIBE", "conversationId": None}), "bad_field"),
        (json.dumps({"type": "RESUME", "messageId": "no-such-message", "afterSeq": 0}),
         "unknown_message"),
        (json.dumps({"type": "STOP_GENERATING", "messageId": "no-such-message"}),
         "unknown_message"),
        (json.dumps({"type": "SEND_MESSAGE", **VALID, "agentId": "nobody"}), "unknown_agent"),
    ],
)
async def test_bad_frame_gets_error_and_socket_stays_open(chat, rest, raw, code):
    client = await chat()
    await client.send_message("kept", conversation="c-kept")
    kept = await client.expect("MESSAGE_ACCEPTED")
    await client.chunks_until_complete(kept["messageId"])
    before = await snapshot(rest)

    await client.send_raw(raw)
    error = await client.expect("ERROR")
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]

    assert await snapshot(rest) == before  # nothing stored changed
    # The same socket goes on working.
    await client.send_message("next one")
    accepted = await client.expect("MESSAGE_ACCEPTED")
    assert text_of(await client.chunks_until_complete(accepted["messageId"])) == "next one"


async def test_error_names_the_offending_request(chat):
    client = await chat()
    await client.send("SEND_MESSAGE", **{**VALID, "agentId": "nobody", "clientMessageId": "m-42"})
    error = await client.expect("ERROR")
    assert (error["code"], error["clientMessageId"]) == ("unknown_agent", "m-42")
    await client.send("RESUME", messageId="ghost", afterSeq=0)
    error = await client.expect("ERROR")
    assert (error["code"], error["messageId"]) == ("unknown_message", "ghost")


async def test_resume_of_a_user_message_is_refused(chat):
    client = await chat()
    await client.send_message("hello")
    accepted = await client.expect("MESSAGE_ACCEPTED")
    await client.chunks_until_complete(accepted["messageId"])
    await client.send("RESUME", messageId=accepted["userMessageId"], afterSeq=0)
    assert (await client.expect("ERROR"))["code"] == "not_a_reply"


@pytest.fixture
def jp_server_config():
    return streamchat_config(EchoAgent={"delay": 0.0}, StreamChatApp={"max_message_bytes": 1000})


async def test_text_over_the_limit_is_refused(chat, rest):
    client = await chat()
    conversation = new_id("c-")
    await client.send_message("é" * 501, conversation=conversation)  # 1002 UTF-8 bytes
    error = await client.expect("ERROR")
    assert error["code"] == "too_large" and "1000" in error["message"]
    await client.send_message("a" * 1000, conversation=conversation)  # exactly the limit
    accepted = await client.expect("MESSAGE_ACCEPTED")
    assert text_of(await client.chunks_until_complete(accepted["messageId"])) == "a" * 1000
    assert len((await rest("conversations", conversation))["messages"]) == 2
