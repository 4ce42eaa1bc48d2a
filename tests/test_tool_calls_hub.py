"""Tool calls, approvals and attached context over a real WebSocket to a real Jupyter server.

The ``tools`` test agent (tests/plugins) makes tool calls and asks for approval on cue.
"""

import asyncio
import json

import pytest
from helpers import HANG_GUARD, assert_contiguous, new_id, streamchat_config, text_of


@pytest.fixture
def jp_server_config():
    return streamchat_config(EchoAgent={"delay": 0.02}, StreamChatApp={"approval_timeout": 3.0})


async def start(client, text, conversation=None, context=None):
    fields = dict(
        conversationId=conversation or new_id("c-"),
        agentId="tools",
        text=text,
        clientMessageId=new_id("m-"),
    )
    if context is not None:
        fields["context"] = context
    await client.send("SEND_MESSAGE", **fields)
    return await client.expect("MESSAGE_ACCEPTED")


def calls_of(frames: list) -> dict:
    """Each call's latest state, in first-appearance order, as a reader merges them."""
    calls: dict = {}
    for frame in frames:
        for state in frame.get("toolCalls", ()):
            calls[state["id"]] = state
    return calls


async def until_call(client, message_id, call_id, status, frames):
    """Read frames of the reply until the call has ``status``."""

    async def read():
        while True:
            frame = await client.recv()
            if frame["type"] == "MESSAGE_CHUNK" and frame["messageId"] == message_id:
                frames.append(frame)
                if calls_of(frames).get(call_id, {}).get("status") == status:
                    return
                assert not frame["isComplete"], frames

    await asyncio.wait_for(read(), HANG_GUARD)


async def test_tool_calls_stream_in_order_with_text_and_are_stored(chat, rest):
    client = await chat()
    accepted = await start(client, "tool fail tool")
    frames = await client.chunks_until_complete(accepted["messageId"])
    assert_contiguous(frames)
    assert text_of(frames) == "Reading 1. Reading 3. Done."
    calls = calls_of(frames)
    assert list(calls) == ["call-1", "call-2", "call-3"]
    assert [c["status"] for c in calls.values()] == ["completed", "failed", "completed"]
    one = calls["call-1"]
    assert one["name"] == "read_file" and json.loads(one["arguments"]) == {"path": "f1.txt"}
    assert one["result"] == "contents of f1.txt" and one["kind"] == "read"
    assert one["endedAt"] >= one["startedAt"] > 0
    assert calls["call-2"]["error"] == "exit status 1"
    # In stream order: call-1 comes after "Reading 1. " and before "Reading 3. ".
    seen = ""
    for frame in frames:
        seen += frame["chunk"]
        for state in frame.get("toolCalls", ()):
            if state["id"] == "call-1":
                assert seen.endswith("Reading 1. ") or "Reading 3" not in seen
            if state["id"] == "call-3":
                assert seen.endswith("Reading 3. ")

    stored = await rest("conversations", accepted["conversationId"])
    reply = stored["messages"][1]
    assert [c["id"] for c in reply["toolCalls"]] == ["call-1", "call-2", "call-3"]
    assert reply["toolCalls"] == list(calls.values())

    # RESUME from the start gives the same frames, tool calls included.
    await client.send("RESUME", messageId=accepted["messageId"], afterSeq=0)
    again = await client.chunks_until_complete(accepted["messageId"])
    assert [(f["seq"], f["chunk"], f.get("toolCalls")) for f in again] == [
        (f["seq"], f["chunk"], f.get("toolCalls")) for f in frames
    ]


async def test_approval_allow_once_reaches_every_view_first_answer_wins(chat, rest):
    one, two = await chat(), await chat()
    conversation = new_id("c-")
    await two.send("SUBSCRIBE", conversationId=conversation)
    await two.expect("HISTORY")
    accepted = await start(one, "approve", conversation)
    message_id = accepted["messageId"]
    frames_one, frames_two = [], []
    await until_call(one, message_id, "call-1", "waiting", frames_one)
    await two.expect("MESSAGE_ACCEPTED")
    await until_call(two, message_id, "call-1", "waiting", frames_two)
    waiting = calls_of(frames_one)["call-1"]
    assert waiting["diff"] == {"path": "f1.txt", "oldText": "old\n", "newText": "new\n"}
    assert "decision" not in waiting

    # Both views answer; the first wins, the second is told the call no longer waits.
    answer = dict(messageId=message_id, toolCallId="call-1")
    await one.send("ANSWER_TOOL_CALL", decision="allow_once", **answer)
    await two.send("ANSWER_TOOL_CALL", decision="reject", **answer)
    rest_of_two = []
    while True:
        frame = await two.recv()
        if frame["type"] == "ERROR":
            assert frame["code"] == "not_waiting" and frame["messageId"] == message_id
            continue
        rest_of_two.append(frame)
        if frame.get("isComplete"):
            break
    frames_one += await one.chunks_until_complete(message_id)
    frames_two += [f for f in rest_of_two if f["type"] == "MESSAGE_CHUNK"]
    for frames in (frames_one, frames_two):
        call = calls_of(frames)["call-1"]
        assert (call["status"], call["decision"]) == ("completed", "allow_once")
        assert text_of(frames) == "Writing 1. Written (allow_once). Done."

    stored = (await rest("conversations", conversation))["messages"][1]
    assert stored["toolCalls"][0]["decision"] == "allow_once"
    # Answering an ended call is refused too.
    await one.send("ANSWER_TOOL_CALL", decision="allow_once", **answer)
    error = await one.expect("ERROR")
    assert error["code"] == "not_waiting"


async def test_reject_ends_the_call_failed_and_the_agent_goes_on(chat):
    client = await chat()
    accepted = await start(client, "approve")
    frames = []
    await until_call(client, accepted["messageId"], "call-1", "waiting", frames)
    await client.send(
        "ANSWER_TOOL_CALL",
        messageId=accepted["messageId"],
        toolCallId="call-1",
        decision="reject",
    )
    frames += await client.chunks_until_complete(accepted["messageId"])
    call = calls_of(frames)["call-1"]
    assert (call["status"], call["decision"], call["error"]) == (
        "failed",
        "reject",
        "rejected by the user",
    )
    assert frames[-1]["status"] == "complete"
    assert text_of(frames) == "Writing 1. Not written (reject). Done."


async def test_allow_always_holds_for_the_conversation(chat):
    client = await chat()
    conversation = new_id("c-")
    accepted = await start(client, "approve", conversation)
    frames = []
    await until_call(client, accepted["messageId"], "call-1", "waiting", frames)
    await client.send(
        "ANSWER_TOOL_CALL",
        messageId=accepted["messageId"],
        toolCallId="call-1",
        decision="allow_always",
    )
    await client.chunks_until_complete(accepted["messageId"])
    # The next call of that tool in this conversation is not asked.
    accepted = await start(client, "approve", conversation)
    frames = await client.chunks_until_complete(accepted["messageId"])
    assert "waiting" not in [s["status"] for f in frames for s in f.get("toolCalls", ())]
    assert calls_of(frames)["call-1"]["decision"] == "allow_always"
    assert text_of(frames) == "Writing 1. Written (allow_always). Done."
    # Another conversation is asked again.
    accepted = await start(client, "approve")
    frames = []
    await until_call(client, accepted["messageId"], "call-1", "waiting", frames)
    await client.send("STOP_GENERATING", messageId=accepted["messageId"])
    await client.chunks_until_complete(accepted["messageId"])


async def test_stop_while_waiting_ends_the_reply_stopped_and_the_call_failed(chat, rest):
    client = await chat()
    accepted = await start(client, "approve")
    frames = []
    await until_call(client, accepted["messageId"], "call-1", "waiting", frames)
    await client.send("STOP_GENERATING", messageId=accepted["messageId"])
    frames += await client.chunks_until_complete(accepted["messageId"])
    assert frames[-1]["status"] == "stopped"
    call = calls_of(frames)["call-1"]
    assert call["status"] == "failed" and call["error"].startswith("not run")
    stored = (await rest("conversations", accepted["conversationId"]))["messages"][1]
    assert stored["toolCalls"][0]["status"] == "failed"


async def test_an_unanswered_approval_times_out_and_the_reply_says_so(chat):
    client = await chat()  # approval_timeout is 3 s in this module's config
    accepted = await start(client, "approve")
    frames = await client.chunks_until_complete(accepted["messageId"], timeout=HANG_GUARD)
    assert frames[-1]["status"] == "error"
    assert "within 3 seconds" in frames[-1]["error"] and "not run" in frames[-1]["error"]
    call = calls_of(frames)["call-1"]
    assert call["status"] == "failed" and "no answer" in call["error"]


async def test_a_waiting_call_survives_a_reconnect_and_is_answered_after(chat):
    client = await chat()
    conversation = new_id("c-")
    accepted = await start(client, "approve", conversation)
    frames = []
    await until_call(client, accepted["messageId"], "call-1", "waiting", frames)
    client.close()
    # A new socket (a reload) sees the call waiting in HISTORY and answers it.
    again = await chat()
    await again.send("SUBSCRIBE", conversationId=conversation)
    history = await again.expect("HISTORY")
    reply = history["messages"][1]
    assert reply["status"] == "streaming"
    assert reply["toolCalls"][0]["status"] == "waiting"
    await again.send(
        "ANSWER_TOOL_CALL",
        messageId=accepted["messageId"],
        toolCallId="call-1",
        decision="allow_once",
    )
    # SUBSCRIBE follows the streaming reply from its HISTORY on.
    rest_frames = await again.chunks_until_complete(accepted["messageId"])
    assert rest_frames[-1]["status"] == "complete"
    assert reply["text"] + text_of(rest_frames) == "Writing 1. Written (allow_once). Done."


async def test_the_list_says_which_conversation_waits(chat, rest):
    watcher, client = await chat(), await chat()
    await watcher.send("WATCH_CONVERSATIONS")
    accepted = await start(client, "approve")
    conversation = accepted["conversationId"]
    frames = []
    await until_call(client, accepted["messageId"], "call-1", "waiting", frames)

    async def entry_until(waiting: bool):
        while True:
            frame = await watcher.recv()
            if frame["type"] == "CONVERSATION_UPDATED" and frame["conversationId"] == conversation:
                if frame["conversation"].get("waiting", False) == waiting:
                    return frame["conversation"]

    await asyncio.wait_for(entry_until(True), HANG_GUARD)
    listed = await rest("conversations")
    entry = next(c for c in listed["conversations"] if c["conversationId"] == conversation)
    assert entry["waiting"] is True
    await client.send(
        "ANSWER_TOOL_CALL",
        messageId=accepted["messageId"],
        toolCallId="call-1",
        decision="allow_once",
    )
    await asyncio.wait_for(entry_until(False), HANG_GUARD)
    await client.chunks_until_complete(accepted["messageId"])
    listed = await rest("conversations")
    entry = next(c for c in listed["conversations"] if c["conversationId"] == conversation)
    assert "waiting" not in entry


async def test_bad_answers_get_clear_errors(chat):
    client = await chat()
    await client.send(
        "ANSWER_TOOL_CALL", messageId="nope", toolCallId="call-1", decision="allow_once"
    )
    assert (await client.expect("ERROR"))["code"] == "unknown_message"
    await client.send("ANSWER_TOOL_CALL", messageId="m", toolCallId="call-1", decision="yes")
    error = await client.expect("ERROR")
    assert error["code"] == "bad_field" and "allow_once" in error["message"]
    await client.send("ANSWER_TOOL_CALL", messageId="m", decision="reject")
    assert (await client.expect("ERROR"))["code"] == "bad_field"
    accepted = await start(client, "tool")
    await client.chunks_until_complete(accepted["messageId"])
    await client.send(
        "ANSWER_TOOL_CALL",
        messageId=accepted["userMessageId"],
        toolCallId="call-1",
        decision="reject",
    )
    assert (await client.expect("ERROR"))["code"] == "not_a_reply"


async def test_context_is_stored_with_the_message_and_reaches_the_agent(chat, rest):
    client = await chat()
    context = [
        {
            "kind": "cell",
            "label": "Cell 3",
            "text": "df.describe()",
            "cell": 2,
            "language": "python",
        },
        {"kind": "variable", "label": "df", "text": "DataFrame (3, 2)"},
    ]
    accepted = await start(client, "context", context=context)
    frames = await client.chunks_until_complete(accepted["messageId"])
    assert text_of(frames) == "cell: Cell 3 = df.describe()\nvariable: df = DataFrame (3, 2)\nDone."
    assert accepted["context"] == context
    stored = (await rest("conversations", accepted["conversationId"]))["messages"]
    assert stored[0]["context"] == context
    assert "context" not in stored[1]
    await client.send("SUBSCRIBE", conversationId=accepted["conversationId"])
    assert (await client.expect("HISTORY"))["messages"][0]["context"] == context


@pytest.mark.parametrize(
    "context, code",
    [
        ("cell", "bad_field"),
        ([{"kind": "nope", "text": "x"}], "bad_field"),
        ([{"kind": "cell"}], "bad_field"),
        ([{"kind": "cell", "text": "x", "cell": -1}], "bad_field"),
        ([{"kind": "cell", "text": "x"}] * 21, "bad_field"),
        ([{"kind": "file", "text": "x" * (1024 * 1024 + 1)}], "too_large"),
    ],
)
async def test_bad_context_is_refused_and_nothing_is_stored(chat, rest, context, code):
    client = await chat()
    conversation = new_id("c-")
    await client.send(
        "SEND_MESSAGE",
        conversationId=conversation,
        agentId="tools",
        text="context",
        clientMessageId=new_id("m-"),
        context=context,
    )
    error = await client.expect("ERROR")
    assert error["code"] == code
    with pytest.raises(Exception) as missing:
        await rest("conversations", conversation)
    assert "404" in str(missing.value)
