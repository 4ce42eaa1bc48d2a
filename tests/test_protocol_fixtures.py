"""The shared examples of the wire contract (tests/fixtures/frames.json), read by Python.

The same file is checked against js/src/view/protocol.ts by the JavaScript tests (js/test/), so the
server's parser, the kernel's follower and the browser's view agree on one set of cases:
client frames through ``protocol.parse_request``, reply sequences through the follower.
"""

import json
from pathlib import Path

import pytest

from jupyter_streamchat import protocol as p
from jupyter_streamchat.kernel.follower import Conversation

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "frames.json").read_text("utf-8"))


def _text(case: dict) -> str:
    return case["raw"] if "raw" in case else json.dumps(case["frame"])


# The usage as the follower's ``messages`` carry it: the wire's fields under Python names.
USAGE_NAMES = {
    "model": "model",
    "inputTokens": "input_tokens",
    "outputTokens": "output_tokens",
    "firstTokenSeconds": "first_token_seconds",
    "durationSeconds": "duration_seconds",
}


@pytest.mark.parametrize("case", FIXTURE["clientFrames"], ids=lambda c: c["name"])
def test_client_frame(case):
    try:
        request = p.parse_request(_text(case), FIXTURE["maxTextBytes"])
    except p.ProtocolError as e:
        assert e.code == case["expect"], e.message
    else:
        assert case["expect"] == "ok", f"parsed as {request}"
        # What the kernel's follower would send for it parses back to the same request.
        assert (
            p.parse_request(json.dumps(p.request_frame(request)), FIXTURE["maxTextBytes"])
            == request
        )


@pytest.mark.parametrize("case", FIXTURE["serverFrames"], ids=lambda c: c["name"])
def test_server_frame(case):
    try:
        frame = json.loads(_text(case))
    except ValueError:
        frame = None
    assert p.is_server_frame(frame) == case["valid"]


class ScriptedTransport:
    """A transport that plays frames to the follower and records what it sends."""

    connected = True

    def __init__(self):
        self.sent: list = []

    def start(self, on_frame, on_connect):
        self.on_frame, self.on_connect = on_frame, on_connect
        on_connect()

    def send(self, frame: dict) -> None:
        self.sent.append(frame)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("case", FIXTURE["replies"], ids=lambda c: c["name"])
def test_reply_sequence(case):
    transport = ScriptedTransport()
    conversation = Conversation(case["conversationId"], transport)
    for event in case["frames"]:
        if event.get("client") == "reconnect":
            transport.on_connect()
            continue
        text = _text(event) if "raw" in event else json.dumps(event)
        try:
            frame = json.loads(text)
        except ValueError:
            continue  # a transport drops what is not JSON before the follower sees it
        transport.on_frame(frame)
    held = {m["messageId"]: m for m in conversation.messages}
    expect = case["expect"]
    message = held.get(case["messageId"])
    assert message is not None
    assert (message["text"], message["status"]) == (expect["text"], expect["status"])
    assert message.get("error") == expect.get("error")
    # Reasoning and usage are held apart from the text, and only when there are some.
    assert message.get("reasoning", "") == expect.get("reasoning", "")
    usage = {USAGE_NAMES[k]: v for k, v in expect["usage"].items()} if "usage" in expect else None
    assert message.get("usage") == usage
    assert conversation._by_id[case["messageId"]].seq == expect["lastSeq"]
    resumes = [
        f["afterSeq"]
        for f in transport.sent
        if f["type"] == "RESUME" and f["messageId"] == case["messageId"]
    ]
    assert resumes == expect["resumes"]
