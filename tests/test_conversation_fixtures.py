"""The shared conversation cases (tests/fixtures/conversation.json), run by the kernel's follower.

The same cases run against the browser's conversation model (js/src/view/conversation.ts, in
js/test/conversation.test.ts), so both clients keep a conversation by one set of rules: what
they send on each (re)connection and in what order, chunks by seq, RESUME on a gap, HISTORY
merged without duplicating held text, stops that hold until honoured, refused sends.

:class:`RecordingTransport` has the interface of the real transports
(jupyter_streamchat/kernel/connection.py): the steps connect and drop it, and it records what
the follower sends while connected. The follower is driven through its public API only.
"""

from __future__ import annotations

import json
import types
from pathlib import Path
from unittest import mock

import pytest

from jupyter_streamchat.kernel import follower
from jupyter_streamchat.kernel.follower import PENDING, Conversation

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "conversation.json").read_text("utf-8"))
CASES = FIXTURE["cases"]


class RecordingTransport:
    """``start``, ``send``, ``close`` and ``connected``, as the real transports have them."""

    def __init__(self):
        self.connected = False
        self.sent: list = []
        self.on_frame = self.on_connect = None

    def start(self, on_frame, on_connect) -> None:
        self.on_frame, self.on_connect = on_frame, on_connect  # connected by a step

    def send(self, frame: dict) -> None:
        if self.connected:  # else lost, as on a dropped socket
            self.sent.append(json.loads(json.dumps(frame)))

    def close(self) -> None:
        self.connected = False


class Player:
    """One case's client: the follower, its transport, and the replies of the sends made."""

    def __init__(self, conversation_id: str):
        self.transport = RecordingTransport()
        self.conversation = Conversation(conversation_id, self.transport)
        self.replies: list = []

    def play(self, step: dict) -> None:
        if step.get("connect"):
            self.transport.connected = True
            self.transport.on_connect()
        elif step.get("disconnect"):
            self.transport.connected = False
        elif step.get("stop"):
            self.conversation.stop()
        elif "send" in step:
            send = step["send"]
            # The follower names its sends itself; the case names them.
            named = types.SimpleNamespace(hex=send["clientMessageId"])
            with mock.patch.object(follower.uuid, "uuid4", return_value=named):
                reply = self.conversation.send(send["text"], send["agentId"])
            assert reply.client_message_id == send["clientMessageId"]
            self.replies.append(reply)
        else:
            try:
                frame = json.loads(step["raw"]) if "raw" in step else step["frame"]
            except ValueError:
                return  # a transport drops what is not JSON before the follower sees it
            self.transport.on_frame(frame)

    def messages(self, expected: list) -> list:
        """The messages held, each with the keys its expectation names."""
        held = []
        for i, message in enumerate(self.conversation.messages):
            every = dict(message, lastSeq=self.conversation._by_id[message["messageId"]].seq)
            every.setdefault("reasoning", "")
            keys = expected[i].keys() if i < len(expected) else every.keys()
            held.append({key: every.get(key) for key in keys})
        return held

    def sends(self) -> list:
        """The sends not accepted, in the order sent: pending, or refused."""
        out = []
        for reply in self.replies:
            if reply.status == PENDING:
                out.append({"clientMessageId": reply.client_message_id, "status": "pending"})
            elif reply.error_code is not None:
                out.append(
                    {
                        "clientMessageId": reply.client_message_id,
                        "status": "error",
                        "code": reply.error_code,
                    }
                )
        return out


def test_fixture_has_cases():
    assert {"about", "steps", "expect"} <= FIXTURE["format"].keys()
    names = [case["name"] for case in CASES]
    assert len(names) > 10 and len(names) == len(set(names))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_conversation_case(case):
    player = Player(case["conversationId"])
    for number, step in enumerate(case["steps"], 1):
        where = f"step {number}: {json.dumps(step)[:120]}"
        before = len(player.transport.sent)
        player.play(step)
        assert player.transport.sent[before:] == step.get("sent", []), where
        if "messages" in step:
            assert player.messages(step["messages"]) == step["messages"], where
        if "sends" in step:
            assert player.sends() == step["sends"], where
