"""Bad input gets an ERROR frame with a machine-readable code, the socket stays open, and
nothing already stored changes."""

import base64
import json

import pytest

from helpers import assert_contiguous, new_id, streamchat_config, text_of

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
        (
            json.dumps({"type": "SEND_MESSAGE", **{k: v for k, v in VALID.items() if k != "text"}}),
            "bad_field",
        ),
        (json.dumps({"type": "SEND_MESSAGE", **VALID, "text": 42}), "bad_field"),
        (json.dumps({"type": "SEND_MESSAGE", **VALID, "conversationId": ""}), "bad_field"),
        (json.dumps({"type": "SEND_MESSAGE", **VALID, "clientMessageId": ["x"]}), "bad_field"),
        (json.dumps({"type": "RESUME", "messageId": "x", "afterSeq": "3"}), "bad_field"),
        (json.dumps({"type": "RESUME", "messageId": "x", "afterSeq": -1}), "bad_field"),
        (json.dumps({"type": "RESUME", "messageId": "x"}), "bad_field"),
        (json.dumps({"type": "STOP_GENERATING"}), "bad_field"),
        (json.dumps({"type": "SUBSCRIBE", "conversationId": None}), "bad_field"),
        (
            json.dumps({"type": "RESUME", "messageId": "no-such-message", "afterSeq": 0}),
            "unknown_message",
        ),
        (
            json.dumps({"type": "STOP_GENERATING", "messageId": "no-such-message"}),
            "unknown_message",
        ),
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


# -- REST: every parameter, every class of bad value -------------------------------------------
#
# Sent as raw URLs and bodies (percent-encoding exactly as written), so the server sees the bytes
# a hostile client would send. Each must be a 400 whose JSON says what is wrong: never a 500, and
# never a 503 store_unavailable, which would tell the user their database is broken.


def _cursor(value) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


DEEP = "[" * 5000 + "]" * 5000
BAD_QUERIES = {
    "limit": [
        "\u0661\u0662",
        "%D9%A1%D9%A2",
        "%C2%B2",
        "\u00b2",
        "12.0",
        "-1",
        "0",
        "501",
        "",
        "+5",
        "%205",
        "1e3",
        "0x10",
        "9" * 5000,
        "%ED%A0%80",
        "%FF",
        "%C0%AF",
        "%00",
        "\uff15",
    ],
    "after": [
        "nonsense",
        "WzEsMl0",
        _cursor('[1e999, "c"]'),
        _cursor('[NaN, "c"]'),
        _cursor('[%d, "c"]' % 2**70),
        _cursor('[1, "\\ud800"]'),
        _cursor('[1, ""]'),
        _cursor('[true, "c"]'),
        _cursor('{"a": 1}'),
        _cursor(DEEP),
        _cursor("[1, " + DEEP + "]"),
        "A" * 5000,
        "W!zEsMl0",
        "%ED%A0%80",
        "%FF",
        _cursor('[1, "c"]') + "%00",
        "\u0661" * 8,
    ],
    "q": ["x" * 201, "%ED%A0%80", "%FF", "a%ED%B0%80b", "%F4%90%80%80"],
}
REPEATED = [
    "limit=5&limit=6",
    "limit=5&limit=5",
    "after=" + _cursor('[1, "c"]') + "&after=x",
    "q=a&q=b",
    "q=ab&limit=3&q=ab",
]


@pytest.fixture
def raw(jp_serverapp, http_server_client, jp_http_port, jp_base_url):
    """``await raw(method, path, body)`` -> (status, parsed JSON body): the path is sent as
    written (percent-escapes included) under {base_url}streamchat/api/."""
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    token = jp_serverapp.identity_provider.token

    async def fetch(method, path, body=None):
        url = f"http://127.0.0.1:{jp_http_port}{jp_base_url}streamchat/api/{path}"
        request = HTTPRequest(
            url,
            method=method,
            body=body,
            allow_nonstandard_methods=True,
            headers={"Authorization": f"token {token}"},
        )
        response = await AsyncHTTPClient().fetch(request, raise_error=False)
        return response.code, json.loads(response.body) if response.body else None

    return fetch


def _assert_bad_request(status, body, what):
    assert status == 400, (what, status, body)
    assert isinstance(body, dict) and isinstance(body.get("message"), str), (what, body)
    assert body["message"] and body.get("reason") != "store_unavailable", (what, body)


@pytest.mark.parametrize("name", sorted(BAD_QUERIES))
async def test_bad_list_and_search_parameters_are_400(chat, rest, raw, name):
    client = await chat()
    await client.send_message("stored before", conversation=new_id("c-"))
    accepted = await client.expect("MESSAGE_ACCEPTED")
    await client.chunks_until_complete(accepted["messageId"])
    before = await snapshot(rest)
    for value in BAD_QUERIES[name]:
        for rest_of_query in ("", "&q=stored"):  # the list, and the search
            if name == "q" and rest_of_query:
                continue
            status, body = await raw("GET", f"conversations?{name}={value}{rest_of_query}")
            _assert_bad_request(status, body, (name, value[:40], rest_of_query))
            if name != "after" or value.isascii():
                assert name in body["message"], (name, value[:40], body)
    assert await snapshot(rest) == before


async def test_repeated_parameters_are_400(raw):
    for query in REPEATED:
        status, body = await raw("GET", f"conversations?{query}")
        _assert_bad_request(status, body, query)
        assert "once" in body["message"], body
    status, body = await raw("GET", "conversations?limit=5&other=1&other=2")
    assert status == 200, body  # parameters this API does not read are ignored


BAD_IDS = ["%ED%A0%80", "a%ED%BF%BFb", "%FF", "%C0%AF", "%E2%82", "x" * 201]


@pytest.mark.parametrize(
    "method, suffix", [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("GET", "/export")]
)
async def test_bad_conversation_ids_in_the_path_are_400(raw, method, suffix):
    body = json.dumps({"title": "x"}) if method == "PATCH" else None
    for bad in BAD_IDS:
        status, answer = await raw(method, f"conversations/{bad}{suffix}", body)
        _assert_bad_request(status, answer, (method, suffix, bad[:20]))
    # An id that is well-formed but unknown is a 404, not a 400.
    status, answer = await raw(method, f"conversations/no-such-{new_id()}{suffix}", body)
    assert status == 404, answer


BAD_BODIES = [
    b"not json",
    b"",
    b"null",
    b"[]",
    b'"title"',
    b"{}",
    b'{"title": 5}',
    b'{"title": null}',
    b'{"title": ["a"]}',
    b'{"title": {"deep": ' + DEEP.encode() + b"}}",
    DEEP.encode(),
    b"[" * 200000,
    b'{"title": "\\ud800"}',
    b'{"title": "ok\\udfff"}',
    b'{"title": "\xff\xfe"}',
    b'{"title": "\xed\xa0\x80"}',
    b'{"title": NaN}',
    b'{"title": "' + b"x" * 201 + b'"}',
    b'{"title": "' + "\u00e9".encode() * 201 + b'"}',
    b"\x00" * 100,
    b'{"title": "a"} trailing',
]


async def test_bad_rename_bodies_are_400_and_change_nothing(chat, rest, raw):
    client = await chat()
    conversation = new_id("c-")
    await client.send_message("a title to keep", conversation=conversation)
    accepted = await client.expect("MESSAGE_ACCEPTED")
    await client.chunks_until_complete(accepted["messageId"])
    before = await snapshot(rest)
    for body in BAD_BODIES:
        status, answer = await raw("PATCH", f"conversations/{conversation}", body)
        _assert_bad_request(status, answer, body[:40])
    assert await snapshot(rest) == before
    # Odd but valid Unicode is a title like any other.
    title = "\U0001f600 \u0661\u0662 \ufeff \uffff \x7f"
    status, answer = await raw(
        "PATCH", f"conversations/{conversation}", json.dumps({"title": title})
    )
    assert status == 200 and answer["title"] == " ".join(title.split()), answer


# -- the WebSocket: requests about unknown ids leave nothing behind -----------------------------


def _only_subscriber(streamchat_app):
    (subscriber,) = streamchat_app.hub.fanout.clients
    return subscriber


def _socket_state(subscriber, fanout) -> tuple:
    return (
        len(subscriber.sent),
        len(subscriber.replies),
        len(subscriber.conversations),
        len(subscriber.lagging),
        len(subscriber._held),
        len(fanout._replies),
        len(fanout._conversations),
    )


async def test_requests_about_made_up_ids_leave_no_state_on_the_socket(chat, streamchat_app):
    client = await chat()
    await client.send_message("a real one")
    accepted = await client.expect("MESSAGE_ACCEPTED")
    await client.chunks_until_complete(accepted["messageId"])
    subscriber, fanout = _only_subscriber(streamchat_app), streamchat_app.hub.fanout
    before = _socket_state(subscriber, fanout)

    count = 20000
    for i in range(count):  # sent without waiting for the answers, as a hostile client would
        if i % 10 == 0:
            await client.send("STOP_GENERATING", messageId=f"ghost-stop-{i}")
        elif i % 10 == 1:
            await client.send(
                "LOAD_HISTORY", conversationId=f"ghost-c-{i}", beforeMessageId=f"ghost-m-{i}"
            )
        else:
            await client.send("RESUME", messageId=f"ghost-{i}-" + "x" * 150, afterSeq=i)
    codes = set()
    for _ in range(count):
        error = await client.expect("ERROR")
        codes.add(error["code"])
    assert codes == {"unknown_message"}
    assert _socket_state(subscriber, fanout) == before

    # A RESUME past the end of a reply that is still streaming is refused, and does not leave
    # a number behind that would drop its live frames.
    # (With this module's instant echo the reply may have ended already: the final frame then
    # comes again.) Either way the socket holds the reply's real last seq afterwards.
    await client.send_message(" ".join(f"w{i}" for i in range(150)))
    accepted = await client.expect("MESSAGE_ACCEPTED")
    first = await client.expect("MESSAGE_CHUNK")
    await client.send("RESUME", messageId=accepted["messageId"], afterSeq=10**9)
    frames = [first]
    while not frames[-1].get("isComplete"):
        frame = await client.recv()
        if frame["type"] == "ERROR":
            assert frame["code"] == "bad_field", frame
            continue
        frames.append(frame)
    assert_contiguous(frames)
    assert frames[-1]["status"] == "complete"
    assert subscriber.sent.get(accepted["messageId"]) == frames[-1]["seq"]


async def test_subscriptions_per_socket_are_bounded(chat, streamchat_app):
    streamchat_app.hub.max_subscriptions = 5
    client = await chat()
    for i in range(5):  # conversations that do not exist yet: a new chat subscribes first
        await client.send("SUBSCRIBE", conversationId=f"c-bound-{i}")
        assert (await client.expect("HISTORY"))["messages"] == []
    await client.send("SUBSCRIBE", conversationId="c-bound-5")
    error = await client.expect("ERROR")
    assert error["code"] == "too_many_subscriptions" and error["conversationId"] == "c-bound-5"
    assert "UNSUBSCRIBE" in error["message"]
    subscriber = _only_subscriber(streamchat_app)
    assert len(subscriber.conversations) == 5
    assert "c-bound-5" not in streamchat_app.hub.fanout._conversations
    await client.send("SUBSCRIBE", conversationId="c-bound-2")  # followed already: fine
    await client.expect("HISTORY")
    await client.send("UNSUBSCRIBE", conversationId="c-bound-0")
    await client.send("SUBSCRIBE", conversationId="c-bound-5")
    assert (await client.expect("HISTORY"))["conversationId"] == "c-bound-5"
    # Subscribing thousands of made-up conversations keeps the socket at the bound.
    for i in range(2000):
        await client.send("SUBSCRIBE", conversationId=f"c-flood-{i}")
    for _ in range(2000):
        assert (await client.expect("ERROR"))["code"] == "too_many_subscriptions"
    assert len(subscriber.conversations) == 5
    # And the socket still works.
    await client.send_message("still here")
    accepted = await client.expect("MESSAGE_ACCEPTED")
    assert text_of(await client.chunks_until_complete(accepted["messageId"])) == "still here"
