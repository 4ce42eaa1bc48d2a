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
from jupyter_streamchat import protocol as p
from server_process import JupyterServer

pytestmark = pytest.mark.subprocess

MAX_MESSAGE_BYTES = 2048  # small, so oversize text is cheap to send
CONVERSATIONS = ["c-fuzz-0", "c-fuzz-1", "c-fuzz-2"]
PING = "c-ping"  # never written: its HISTORY is the "still answering" probe
BYSTANDER = "c-bystander"
LIST_FRAMES = ("CONVERSATION_UPDATED", "CONVERSATION_DELETED")
# Sent to every client when a notebook agent comes or goes (REGISTER_AGENT of any client).
NEWS_FRAMES = LIST_FRAMES + ("AGENTS_CHANGED",)
AGENT_IDS = ["nb-fuzz-0", "nb-fuzz-1", "echo"]  # REGISTER_AGENT of echo: agent_exists
READ_LIMIT = 20000  # frames read after one generated frame; a bound, far above what it takes

# Codes a request may get, per the contract; internal_error is only for bugs.
CODES = {
    "bad_json",
    "unknown_type",
    "bad_field",
    "too_large",
    "unknown_message",
    "not_a_reply",
    "unknown_agent",
    "conversation_deleted",
    "store_unavailable",
    "too_many_subscriptions",
    "not_waiting",
    "agent_exists",
    "agent_taken",
    "too_many_agents",
    "unknown_request",
}
# Codes a well-formed request must never get: they mean the server misread a valid frame.
MALFORMED_CODES = {"bad_json", "unknown_type", "bad_field", "too_large"}

EXAMPLES = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
EVERY_TYPE = settings(EXAMPLES, max_examples=300)


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
                self.client.send(
                    {
                        "type": "SEND_MESSAGE",
                        "conversationId": BYSTANDER,
                        "agentId": "echo",
                        "text": text,
                        "clientMessageId": client_id,
                    }
                )
                accepted = self.client.recv()
                while accepted["type"] == "AGENTS_CHANGED":  # the fuzzer's agents, news
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
                    self.failures.append(
                        f"reply {i} ended {frames[-1]['status']} with "
                        f"{text_of(frames)!r}, expected {text!r}"
                    )
                self.replies += 1
        except Exception as e:  # a closed socket, a timeout: the bystander was harmed
            self.failures.append(repr(e))
        finally:
            self.client.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    with JupyterServer(
        base,
        "--EchoAgent.delay=0",
        f"--StreamChatApp.max_message_bytes={MAX_MESSAGE_BYTES}",
        name="fuzz",
    ) as s:
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
        listing = [
            c
            for c in self.server.get_json("streamchat/api/conversations?limit=500")["conversations"]
            if c["conversationId"] != BYSTANDER
        ]
        return listing, [
            self.server.get_json(f"streamchat/api/conversations/{c['conversationId']}")
            for c in listing
        ]

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
                raise AssertionError(
                    f"the server closed the socket ({e.code} {e.reason!r}) after {frames[:5]}"
                ) from None
            if frame["type"] == "HISTORY" and frame["conversationId"] == PING:
                assert frame["messages"] == [], frame
                answered = True
                continue
            if frame["type"] in NEWS_FRAMES:
                # Once an example sent WATCH_CONVERSATIONS, the list's changes come whenever
                # they happen (an earlier reply's end among them): news, not an answer; and
                # every client hears of notebook agents registered (by an example).
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
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["echo", "c-fuzz-0", "SEND_MESSAGE", ""]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
lone_surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
# Every request type of the contract, with its fields and their kinds ("id", "text", "seq").
REQUEST_KINDS = {kind: dict(fields) for kind, (_, fields) in p._REQUESTS.items()}
REQUEST_FIELDS = {kind: list(fields) for kind, fields in REQUEST_KINDS.items()}
# Kinds of fields a request may leave out (a notebook agent's name, output, error, usage).
OPTIONAL_KINDS = set(p._OPTIONAL)
# Ids of the right form that name nothing stored (any Unicode but lone surrogates).
made_up_ids = st.text(min_size=1, max_size=p.MAX_ID_LENGTH).map(lambda s: "zz-" + s[:197])
# Extra fields a reader must ignore: any name but the request's own, any JSON value.
extra_fields = st.dictionaries(
    st.text(max_size=12).filter(
        lambda k: (
            k != "type"
            and k not in p._ID_FIELDS
            and k not in {f for fs in REQUEST_FIELDS.values() for f in fs}
        )
    ),
    json_values,
    max_size=3,
)


context_items = st.fixed_dictionaries(
    {"kind": st.sampled_from(sorted(p.CONTEXT_KINDS)), "text": st.text(max_size=40)},
    optional={
        "label": st.text(max_size=20),
        "path": st.text(max_size=20),
        "cell": st.integers(0, 10**6),
        "language": st.text(max_size=10),
        "mime": st.text(max_size=10),
    },
)
tool_states = st.fixed_dictionaries(
    {
        "id": st.text(min_size=1, max_size=20),
        "name": st.text(min_size=1, max_size=20),
        "status": st.sampled_from(sorted(p.AGENT_TOOL_STATUSES)),
    },
    optional={
        "arguments": st.text(max_size=40),
        "title": st.text(max_size=20),
        "result": st.text(max_size=40),
        "error": st.text(max_size=20),
    },
)


def valid_send(data) -> dict:
    reuse = data.draw(st.none() | st.integers(1, 3))
    frame = {
        "type": "SEND_MESSAGE",
        "conversationId": data.draw(conversation_ids),
        "agentId": "echo",
        "text": data.draw(texts),
        # A few fixed ids come back now and then: a re-send must be idempotent.
        "clientMessageId": f"m-again-{reuse}" if reuse else f"m-{uuid.uuid4().hex}",
    }
    if data.draw(st.booleans()):
        frame["context"] = data.draw(st.lists(context_items, max_size=3))
    return frame


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
    if kind in ("SUBSCRIBE", "UNSUBSCRIBE"):
        return {"type": kind, "conversationId": data.draw(conversation_ids)}
    if kind == "RESUME":
        return {
            "type": kind,
            "messageId": data.draw(known),
            "afterSeq": data.draw(st.integers(0, 2**53 - 1) | st.integers(0, 5)),
        }
    if kind == "LOAD_HISTORY":
        return {
            "type": kind,
            "conversationId": data.draw(conversation_ids),
            "beforeMessageId": data.draw(known),
        }
    if kind == "ANSWER_TOOL_CALL":
        return {
            "type": kind,
            "messageId": data.draw(known),
            "toolCallId": data.draw(st.text(min_size=1, max_size=20)),
            "decision": data.draw(st.sampled_from(sorted(p.DECISIONS))),
        }
    if kind in ("REGISTER_AGENT", "UNREGISTER_AGENT", "AGENT_OUTPUT", "AGENT_DONE"):
        return valid_agent_frame(data, kind)
    assert not REQUEST_FIELDS[kind], kind  # WATCH_CONVERSATIONS, UNWATCH_CONVERSATIONS
    return {"type": kind}


def valid_agent_frame(data, kind: str) -> dict:
    """A notebook agent's frame: registrations of a few names (one a server agent's), and
    outputs for a request never sent to this client (unknown_request)."""
    optional = {
        "REGISTER_AGENT": {
            "name": st.text(max_size=p.MAX_ID_LENGTH),
            "description": st.text(max_size=60),
            "owner": st.text(max_size=20),
        },
        "AGENT_OUTPUT": {
            "text": st.text(max_size=60),
            "reasoning": st.text(max_size=60),
            "usage": st.fixed_dictionaries(
                {},
                optional={
                    "model": st.text(max_size=20),
                    "inputTokens": st.integers(0, p.MAX_SEQ),
                    "outputTokens": st.integers(0, p.MAX_SEQ),
                },
            ),
            "toolCalls": st.lists(tool_states, max_size=3),
        },
        "AGENT_DONE": {"error": st.text(max_size=60)},
    }.get(kind, {})
    frame = {"type": kind, **data.draw(st.fixed_dictionaries({}, optional=optional))}
    if kind in ("REGISTER_AGENT", "UNREGISTER_AGENT"):
        frame["agentId"] = data.draw(st.sampled_from(AGENT_IDS))
    else:
        frame["requestId"] = data.draw(made_up_ids)
    return frame


def hostile_request(data, fuzzer: Fuzzer) -> dict:
    """A well-formed request of any type about ids that may exist or not (made-up ones of any
    Unicode and length), with extra fields of any JSON: refused, if at all, only for what it
    names (unknown_message, unknown_agent, ...), never as malformed."""
    request = valid_request(data, fuzzer)
    for name, check in REQUEST_KINDS[request["type"]].items():
        if check == "id" and data.draw(st.booleans()):
            if name == "conversationId" and request["type"] == "SEND_MESSAGE":
                continue  # a new conversation would be stored: that is not a refusal
            if name == "agentId" and request["type"] == "REGISTER_AGENT":
                continue  # this client would then be asked to answer made-up agent ids
            request[name] = data.draw(made_up_ids)
    if request["type"] == "SEND_MESSAGE" and data.draw(st.booleans()):
        request["agentId"] = data.draw(made_up_ids)  # unknown_agent
    request.update(data.draw(extra_fields))
    return request


def mutated(data, fuzzer: Fuzzer) -> tuple:
    """A valid request of any type with one field made wrong -> (the frame, the code the
    contract names for it)."""
    request = valid_request(data, fuzzer)
    kind = request["type"]
    fields = REQUEST_KINDS[kind]
    if not fields:  # nothing to break but the type itself
        request["type"] = data.draw(
            st.sampled_from(
                [kind.lower(), kind + " ", " " + kind, kind.replace("_", "-"), kind[:-1]]
            )
        )
        return request, "unknown_type"
    name = data.draw(st.sampled_from(sorted(fields)))
    check = fields[name]
    how = data.draw(
        st.sampled_from(
            (["missing"] if check not in OPTIONAL_KINDS else [])
            + ["wrong type", "lone surrogate"]
            + (["empty", "too long"] if check == "id" else [])
            + (["empty", "oversize"] if check == "text" else [])
            + (["oversize"] if check in ("piece", "why") else [])
            + (["too long"] if check in ("label", "about") else [])
            + (["out of range"] if check == "usage" else [])
            + (["out of range", "not whole"] if check == "seq" else [])
        )
    )
    if how == "missing":
        del request[name]
        return request, "bad_field"
    if check == "usage" and how == "out of range":
        field = data.draw(st.sampled_from(["inputTokens", "outputTokens"]))
        request[name] = {
            field: data.draw(st.integers(max_value=-1) | st.integers(min_value=p.MAX_SEQ + 1))
        }
        return request, "bad_field"
    if how == "wrong type":
        wrong = (
            (lambda v: not isinstance(v, int) or isinstance(v, bool))
            if check == "seq"
            else (lambda v: not isinstance(v, dict))
            if check == "usage"
            else (lambda v: not isinstance(v, list))
            if check in ("context", "toolcalls")
            else (lambda v: not isinstance(v, str))
        )
        request[name] = data.draw(json_values.filter(wrong))
        return request, "bad_field"
    if how == "lone surrogate":
        if check == "seq":
            request[name] = data.draw(lone_surrogates)  # a string, and not even valid Unicode
        else:
            prefix, suffix = data.draw(st.text(max_size=5)), data.draw(st.text(max_size=5))
            request[name] = prefix + data.draw(lone_surrogates) + suffix
            if check == "usage":
                request[name] = {"model": request[name]}
        return request, "bad_field"
    if how == "empty":
        request[name] = ""
        return request, "bad_field"
    if how == "too long":
        longest = p.MAX_DESCRIPTION_LENGTH if check == "about" else p.MAX_ID_LENGTH
        request[name] = "i" * data.draw(st.integers(longest + 1, 5000))
        return request, "bad_field"
    if how == "oversize":
        request[name] = "é" * data.draw(st.integers(MAX_MESSAGE_BYTES // 2 + 1, MAX_MESSAGE_BYTES))
        return request, "too_large"
    if how == "out of range":
        request[name] = data.draw(st.integers(max_value=-1) | st.integers(min_value=p.MAX_SEQ + 1))
        return request, "bad_field"
    request[name] = data.draw(
        st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f != int(f))
        | st.sampled_from([1.0, 0.0, 1e300])
    )  # not whole: not an int
    return request, "bad_field"


def malformed(data) -> tuple:
    """-> (how to send it, the ERROR code the contract names, or None when several fit)."""
    kind = data.draw(
        st.sampled_from(
            [
                "json value",
                "fields of any type",
                "text",
                "binary",
                "lone surrogate",
                "oversize",
                "not strict JSON",
                "too deep",
                "type of another JSON type",
            ]
        )
    )
    if kind == "json value":  # anything that is not an object
        value = data.draw(json_values.filter(lambda v: not isinstance(v, dict)))
        return _text(json.dumps(value)), "bad_json"
    if kind == "fields of any type":
        request = data.draw(st.sampled_from(sorted(REQUEST_FIELDS)))
        fields = data.draw(
            st.fixed_dictionaries(
                {}, optional={name: json_values for name in REQUEST_FIELDS[request]}
            )
        )
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
        return _text(
            '{"type": "SUBSCRIBE", "conversationId": "c-fuzz-0", "x": '
            + "[" * depth
            + "]" * depth
            + "}"
        ), "bad_json"
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
        chunks = [
            f for f in frames if f["type"] == "MESSAGE_CHUNK" and f["messageId"] == message_id
        ]
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
        assert (accepted["conversationId"], accepted["clientMessageId"]) == (
            request["conversationId"],
            request["clientMessageId"],
        ), accepted
    if request["type"] == "RESUME" and not errors:  # never silence: at least the final frame
        chunks = [f for f in frames if f["type"] == "MESSAGE_CHUNK"]
        assert chunks and chunks[-1]["isComplete"], (request, frames[:3])
        assert_contiguous(chunks, chunks[0]["seq"])
        after = request["afterSeq"]
        assert chunks[0]["seq"] == after + 1 or (len(chunks) == 1 and after >= chunks[0]["seq"])
    assert not bystander.failures, bystander.failures


@EVERY_TYPE
@given(data=st.data())
def test_every_request_type_mutated_gets_its_error(fuzzer, bystander, data):
    request, code = mutated(data, fuzzer)
    before = fuzzer.snapshot()
    frames = fuzzer.exchange(_text(json.dumps(request)))  # ensure_ascii: surrogates as escapes
    errors = check_frames(frames)
    assert [e["code"] for e in errors] == [code], (request, frames[:5])
    assert not [f for f in frames if f["type"] in ("MESSAGE_ACCEPTED", "MESSAGE_CHUNK")], frames
    check_refusal_changed_nothing(fuzzer, before, frames, errors)
    assert not bystander.failures, bystander.failures


@EVERY_TYPE
@given(data=st.data())
def test_every_request_type_about_made_up_ids_is_refused_harmlessly(fuzzer, bystander, data):
    request = hostile_request(data, fuzzer)
    before = fuzzer.snapshot()
    frames = fuzzer.exchange(_text(json.dumps(request)))
    errors = check_frames(frames)
    assert not {e["code"] for e in errors} & MALFORMED_CODES, (request, errors)
    check_refusal_changed_nothing(fuzzer, before, frames, errors)
    if (
        request["type"] in ("SUBSCRIBE", "LOAD_HISTORY")
        and request["conversationId"] not in CONVERSATIONS
    ):
        if request["type"] == "SUBSCRIBE" and not errors:  # not created yet: empty HISTORY
            answer = [f for f in frames if f["type"] == "HISTORY"]
            assert answer and answer[-1]["messages"] == [], frames[:3]
        elif request["type"] == "LOAD_HISTORY":
            assert [e["code"] for e in errors] == ["unknown_message"], frames[:3]
    assert not bystander.failures, bystander.failures
