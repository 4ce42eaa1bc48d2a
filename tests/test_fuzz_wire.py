"""Property tests of the wire contract: generated frames, valid and not, against one real server.

After every frame the socket must still answer (a SUBSCRIBE of a conversation nobody writes
gets its HISTORY), a refused frame must leave the store as it was, no frame may produce
``internal_error``, and a bystander client that streams replies all the while must get every
one of them complete, with exactly its text.

One ``jupyter server`` subprocess serves the whole module; clients are blocking sockets
(faultfs.WireClient), so Hypothesis drives plain synchronous code.
"""

from __future__ import annotations

import json
import threading
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faultfs import Closed, WireClient
from helpers import assert_contiguous, text_of
from server_process import JupyterServer

pytestmark = pytest.mark.subprocess

MAX_MESSAGE_BYTES = 2048  # small, so oversize text is cheap to send
CONVERSATIONS = ["c-fuzz-0", "c-fuzz-1", "c-fuzz-2"]
PING = "c-ping"  # never written: its HISTORY is the "still answering" probe
BYSTANDER = "c-bystander"
READ_LIMIT = 20000  # frames read after one generated frame; a bound, far above what it takes

# Codes a request may get, per the contract; internal_error is only for bugs.
CODES = {"bad_json", "unknown_type", "bad_field", "too_large", "unknown_message", "not_a_reply",
         "unknown_agent", "conversation_deleted", "store_unavailable"}
# Codes a well-formed request must never get: they mean the server misread a valid frame.
MALFORMED_CODES = {"bad_json", "unknown_type", "bad_field", "too_large"}

EXAMPLES = settings(max_examples=200, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- the server, the bystander ----------------------------------------------------------------------


class Bystander(threading.Thread):
    """Sends a message, reads its reply to the end, checks it, again, until told to stop."""

    def __init__(self, server: JupyterServer):
        super().__init__(name="bystander", daemon=True)
        self.client = WireClient.to(server)
        self.stopping = threading.Event()
        self.failures: list = []
        self.replies = 0

    def run(self) -> None:
        try:
            for i in range(100000):  # bounded; stopped long before
                if self.stopping.is_set():
                    return
                text = f"bystander {i}: " + " ".join(f"b{j}" for j in range(100))
                client_id = f"m-bystander-{i}"
                self.client.send({"type": "SEND_MESSAGE", "conversationId": BYSTANDER,
                                  "agentId": "echo", "text": text, "clientMessageId": client_id})
                accepted = self.client.recv()
                if accepted.get("clientMessageId") != client_id:
                    self.failures.append(f"expected MESSAGE_ACCEPTED, got {accepted}")
                    return
                frames = []
                while not (frames and frames[-1]["isComplete"]):
                    frame = self.client.recv()
                    if frame["type"] == "MESSAGE_CHUNK":
                        frames.append(frame)
                if frames[-1]["status"] != "complete" or text_of(frames) != text:
                    self.failures.append(f"reply {i} ended {frames[-1]['status']} with "
                                         f"{text_of(frames)!r}, expected {text!r}")
                self.replies += 1
        except Exception as e:  # a closed socket, a timeout: the bystander was harmed
            self.failures.append(repr(e))
        finally:
            self.client.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    with JupyterServer(base, "--EchoAgent.delay=0",
                       f"--StreamChatApp.max_message_bytes={MAX_MESSAGE_BYTES}",
                       name="fuzz") as s:
        yield s


@pytest.fixture(scope="module")
def bystander(server):
    thread = Bystander(server)
    thread.start()
    yield thread
    thread.stopping.set()
    thread.join(30)
    assert not thread.failures, thread.failures
    assert thread.replies > 0


class Fuzzer:
    """The client that sends generated frames, and what it learned of the server so far."""

    def __init__(self, server: JupyterServer):
        self.server = server
        self.client = None
        self.message_ids: list = []  # ids seen in MESSAGE_ACCEPTED (replies and user messages)

    def snapshot(self) -> tuple:
        """All stored conversations but the bystander's, with their messages."""
        listing = [c for c in self.server.get_json("streamchat/api/conversations?limit=500")
                   ["conversations"] if c["conversationId"] != BYSTANDER]
        return listing, [self.server.get_json(f"streamchat/api/conversations/{c['conversationId']}")
                         for c in listing]

    def exchange(self, send) -> list:
        """Send one frame, then the probe; read until the probe's HISTORY is in and every reply
        this client was told about has ended. -> the frames read, probe excluded."""
        if self.client is None:
            self.client = WireClient.to(self.server)
        try:
            return self._exchange(send)
        except BaseException:
            # A failed example must not leave a broken socket to the next one (Hypothesis
            # replays the failure, and must see the same failure, not a closed socket).
            self.close()
            raise

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def _exchange(self, send) -> list:
        send(self.client)
        self.client.send({"type": "SUBSCRIBE", "conversationId": PING})
        frames, open_replies, answered = [], set(), False
        for _ in range(READ_LIMIT):
            if answered and not open_replies:
                return frames
            try:
                frame = self.client.recv()
            except Closed as e:
                raise AssertionError(f"the server closed the socket ({e.code} {e.reason!r}) "
                                     f"after {frames[:5]}") from None
            if frame["type"] == "HISTORY" and frame["conversationId"] == PING:
                assert frame["messages"] == [], frame
                answered = True
                continue
            frames.append(frame)
            if frame["type"] == "MESSAGE_ACCEPTED":
                open_replies.add(frame["messageId"])
                self.message_ids += [frame["messageId"], frame["userMessageId"]]
            elif frame["type"] == "MESSAGE_CHUNK" and frame["isComplete"]:
                open_replies.discard(frame["messageId"])
        raise AssertionError(f"no end after {READ_LIMIT} frames: {open_replies}")


@pytest.fixture(scope="module")
def fuzzer(server, bystander):
    fuzzer = Fuzzer(server)
    yield fuzzer
    fuzzer.close()


# -- strategies --------------------------------------------------------------------------------------

conversation_ids = st.sampled_from(CONVERSATIONS)
texts = st.text(min_size=1, max_size=60)  # any Unicode but lone surrogates
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20) | st.sampled_from(["echo", "c-fuzz-0", "SEND_MESSAGE", ""]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)
lone_surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
REQUEST_FIELDS = {
    "SEND_MESSAGE": ["conversationId", "agentId", "text", "clientMessageId"],
    "STOP_GENERATING": ["messageId"],
    "SUBSCRIBE": ["conversationId"],
    "RESUME": ["messageId", "afterSeq"],
    "LOAD_HISTORY": ["conversationId", "beforeMessageId"],
}


def valid_send(data) -> dict:
    reuse = data.draw(st.none() | st.integers(1, 3))
    return {"type": "SEND_MESSAGE", "conversationId": data.draw(conversation_ids),
            "agentId": "echo", "text": data.draw(texts),
            # A few fixed ids come back now and then: a re-send must be idempotent.
            "clientMessageId": f"m-again-{reuse}" if reuse else f"m-{uuid.uuid4().hex}"}


def valid_request(data, fuzzer: Fuzzer) -> dict:
    kind = data.draw(st.sampled_from(sorted(REQUEST_FIELDS)))
    # An index rather than a sampled id: the list grows as the server answers, and a replayed
    # example must draw the same values as the first time.
    ids = fuzzer.message_ids
    known = st.integers(0, 10**6).map(lambda i: ids[i % len(ids)] if ids else "m-none")
    if kind == "SEND_MESSAGE":
        return valid_send(data)
    if kind == "STOP_GENERATING":
        return {"type": kind, "messageId": data.draw(known)}
    if kind == "SUBSCRIBE":
        return {"type": kind, "conversationId": data.draw(conversation_ids)}
    if kind == "RESUME":
        return {"type": kind, "messageId": data.draw(known),
                "afterSeq": data.draw(st.integers(0, 2**53 - 1) | st.integers(0, 5))}
    return {"type": kind, "conversationId": data.draw(conversation_ids),
            "beforeMessageId": data.draw(known)}


def malformed(data) -> tuple:
    """-> (how to send it, the ERROR code the contract names, or None when several fit)."""
    kind = data.draw(st.sampled_from(
        ["json value", "fields of any type", "text", "binary", "lone surrogate", "oversize",
         "not strict JSON", "too deep", "type of another JSON type"]))
    if kind == "json value":  # anything that is not an object
        value = data.draw(json_values.filter(lambda v: not isinstance(v, dict)))
        return _text(json.dumps(value)), "bad_json"
    if kind == "fields of any type":
        request = data.draw(st.sampled_from(sorted(REQUEST_FIELDS)))
        fields = data.draw(st.fixed_dictionaries(
            {}, optional={name: json_values for name in REQUEST_FIELDS[request]}))
        return _text(json.dumps({"type": request, **fields})), None
    if kind == "text":
        text = data.draw(st.text(min_size=1, max_size=200))
        try:
            parsed = json.loads(text)
        except ValueError:
            return _text(text), "bad_json"
        return _text(text), None if isinstance(parsed, dict) else "bad_json"
    if kind == "binary":
        return _binary(data.draw(st.binary(max_size=200))), "bad_json"
    if kind == "lone surrogate":
        request = valid_send(data)
        field = data.draw(st.sampled_from(["conversationId", "agentId", "text", "clientMessageId"]))
        prefix, suffix = data.draw(st.text(max_size=5)), data.draw(st.text(max_size=5))
        request[field] = prefix + data.draw(lone_surrogates) + suffix
        return _text(json.dumps(request)), "bad_field"  # ensure_ascii: sent as \\udxxx escapes
    if kind == "oversize":
        request = valid_send(data)
        request["text"] = "x" * data.draw(st.integers(MAX_MESSAGE_BYTES + 1, 8 * MAX_MESSAGE_BYTES))
        return _text(json.dumps(request)), "too_large"
    if kind == "not strict JSON":
        word = data.draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
        return _text('{"type": "RESUME", "messageId": "m-x", "afterSeq": %s}' % word), "bad_json"
    if kind == "too deep":
        depth = data.draw(st.integers(33, 3000))
        return _text('{"type": "SUBSCRIBE", "conversationId": "c-fuzz-0", "x": '
                     + "[" * depth + "]" * depth + "}"), "bad_json"
    value = data.draw(json_values.filter(lambda v: not isinstance(v, str)))
    return _text(json.dumps({"type": value, "conversationId": "c-fuzz-0"})), "bad_field"


def _text(text: str):
    return lambda client: client.send_text(text)


def _binary(data: bytes):
    return lambda client: client.send_binary(data)


# -- checks ------------------------------------------------------------------------------------------


def check_frames(frames: list) -> list:
    """Contract checks on what one frame caused -> the ERROR frames among them."""
    errors = [f for f in frames if f["type"] == "ERROR"]
    for error in errors:
        assert error["code"] in CODES, error
        assert isinstance(error["message"], str) and error["message"], error
    accepted = {f["messageId"]: f for f in frames if f["type"] == "MESSAGE_ACCEPTED"}
    for message_id, answer in accepted.items():
        chunks = [f for f in frames if f["type"] == "MESSAGE_CHUNK" and f["messageId"] == message_id]
        assert_contiguous(chunks)  # from seq 1: a new reply, or a re-send's full replay
        assert chunks[-1]["status"] == "complete", chunks[-1]
        assert text_of(chunks) == answer["text"]  # echo says back the stored user message
    return errors


def check_refusal_changed_nothing(fuzzer: Fuzzer, before, frames: list, errors: list) -> None:
    if errors and not any(f["type"] == "MESSAGE_ACCEPTED" for f in frames):
        assert fuzzer.snapshot() == before, f"a refused frame changed the store: {errors}"


# -- properties --------------------------------------------------------------------------------------


@EXAMPLES
@given(data=st.data())
def test_malformed_frames_are_refused_precisely_and_harmlessly(fuzzer, bystander, data):
    send, code = malformed(data)
    before = fuzzer.snapshot()
    frames = fuzzer.exchange(send)
    errors = check_frames(frames)
    if code is not None:
        assert [e["code"] for e in errors] == [code], frames[:5]
    check_refusal_changed_nothing(fuzzer, before, frames, errors)
    assert not bystander.failures, bystander.failures


@EXAMPLES
@given(data=st.data())
def test_valid_requests_are_answered_and_replies_end_exactly(fuzzer, bystander, data):
    request = valid_request(data, fuzzer)
    before = fuzzer.snapshot()
    frames = fuzzer.exchange(_text(json.dumps(request)))
    errors = check_frames(frames)
    assert not {e["code"] for e in errors} & MALFORMED_CODES, (request, errors)
    check_refusal_changed_nothing(fuzzer, before, frames, errors)
    if request["type"] == "SEND_MESSAGE":
        accepted = frames[0] if frames else {}
        assert accepted.get("type") == "MESSAGE_ACCEPTED", frames[:3]
        # clientMessageId is scoped to its conversation: a reused one never answers for another
        assert (accepted["conversationId"], accepted["clientMessageId"]) == \
            (request["conversationId"], request["clientMessageId"]), accepted
    if request["type"] == "RESUME" and not errors:  # never silence: at least the final frame
        chunks = [f for f in frames if f["type"] == "MESSAGE_CHUNK"]
        assert chunks and chunks[-1]["isComplete"], (request, frames[:3])
        assert_contiguous(chunks, chunks[0]["seq"])
        after = request["afterSeq"]
        assert chunks[0]["seq"] == after + 1 or (len(chunks) == 1 and after >= chunks[0]["seq"])
    assert not bystander.failures, bystander.failures
