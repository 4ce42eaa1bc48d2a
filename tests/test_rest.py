"""REST API under {base_url}streamchat/api/, and its auth (pytest-jupyter's base_url is not /)."""

import asyncio
import json
import time

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClosedError, websocket_connect

from helpers import new_id, text_of
from jupyter_streamchat.store import SearchTooCostly


async def test_agents_lists_id_name_description(rest):
    agents = (await rest("agents"))["agents"]
    echo = next(a for a in agents if a["id"] == "echo")
    assert set(echo) == {"id", "name", "description"}
    assert any(a["id"] == "demo" for a in agents)


async def test_conversations_list_get_delete(chat, rest, jp_fetch):
    client = await chat()
    conversation = new_id("c-")
    await client.send_message("first words", conversation=conversation)
    accepted = await client.expect("MESSAGE_ACCEPTED")
    frames = await client.chunks_until_complete(accepted["messageId"])

    listed = (await rest("conversations"))["conversations"]
    entry = next(c for c in listed if c["conversationId"] == conversation)
    assert entry["messageCount"] == 2 and entry["title"] == "first words"

    body = await rest("conversations", conversation)
    assert body["conversationId"] == conversation
    user, reply = (dict(m) for m in body["messages"])
    # When each was made, in seconds since the epoch, in the order they were made.
    assert time.time() - 60 < user.pop("createdAt") <= reply.pop("createdAt") <= time.time()
    assert user == {
        "messageId": accepted["userMessageId"],
        "role": "user",
        "agentId": "echo",
        "text": "first words",
        "status": "complete",
        "lastSeq": 0,
    }
    usage = reply.pop("usage")  # the hub's timings; echo reports no model or tokens
    assert set(usage) == {"firstTokenSeconds", "durationSeconds"}
    assert 0 <= usage["firstTokenSeconds"] <= usage["durationSeconds"]
    assert reply == {
        "messageId": accepted["messageId"],
        "role": "assistant",
        "agentId": "echo",
        "text": text_of(frames),
        "status": "complete",
        "lastSeq": frames[-1]["seq"],
    }

    # Same message shape as HISTORY.
    await client.send("SUBSCRIBE", conversationId=conversation)
    reply["usage"] = usage
    assert (await client.expect("HISTORY"))["messages"] == body["messages"]

    response = await jp_fetch("streamchat", "api", "conversations", conversation, method="DELETE")
    assert response.code == 204
    with pytest.raises(HTTPClientError) as e:
        await rest("conversations", conversation)
    assert e.value.code == 404
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("streamchat", "api", "conversations", conversation, method="DELETE")
    assert e.value.code == 404
    await client.send("RESUME", messageId=accepted["messageId"], afterSeq=0)
    assert (await client.expect("ERROR"))["code"] == "unknown_message"


async def test_delete_stops_a_streaming_reply(chat, jp_fetch):
    client = await chat()
    conversation = new_id("c-")
    await client.send_message(" ".join(["many"] * 200), conversation=conversation)
    accepted = await client.expect("MESSAGE_ACCEPTED")
    await client.expect("MESSAGE_CHUNK")
    response = await jp_fetch("streamchat", "api", "conversations", conversation, method="DELETE")
    assert response.code == 204
    frames = await client.chunks_until_complete(accepted["messageId"])
    assert frames[-1]["status"] == "stopped"


@pytest.mark.parametrize(
    "path",
    [("agents",), ("conversations",), ("conversations", "x"), ("conversations", "x", "export")],
)
async def test_rest_without_token_is_403(jp_fetch, path):
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("streamchat", "api", *path, headers={"Authorization": ""})
    assert e.value.code == 403
    assert b"conversation" not in (e.value.response.body or b"")


async def test_websocket_without_token_is_403(jp_ws_fetch):
    with pytest.raises(HTTPClientError) as e:
        await jp_ws_fetch("streamchat", "ws", headers={"Authorization": ""})
    assert e.value.code == 403


async def test_cross_origin_websocket_is_refused(jp_fetch, jp_serverapp, jp_http_port, jp_base_url):
    # A browser page elsewhere carries the user's login cookie, not the token: Jupyter skips
    # the origin check only for token-authenticated requests.
    token = jp_serverapp.identity_provider.token
    response = await jp_fetch(
        "api", "status", params={"token": token}, headers={"Authorization": ""}
    )
    cookie = response.headers["Set-Cookie"].split(";", 1)[0]  # named for 127.0.0.1:port
    url = f"ws://127.0.0.1:{jp_http_port}{jp_base_url}streamchat/ws"

    def connect(origin):
        headers = {"Cookie": cookie, "Origin": origin}
        return websocket_connect(HTTPRequest(url, headers=headers))

    with pytest.raises((HTTPClientError, WebSocketClosedError)) as e:
        await connect("http://evil.example")
    assert getattr(e.value, "code", 403) == 403
    ws = await connect(f"http://127.0.0.1:{jp_http_port}")  # same origin: accepted
    ws.close()


async def test_store_errors_are_503_with_a_reason(streamchat_app, jp_fetch, tmp_path):
    # Point the store at a directory that cannot hold a database file.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    streamchat_app.hub.store.path = str(blocker / "chat.db")
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("streamchat", "api", "conversations")
    assert e.value.code == 503
    body = json.loads(e.value.response.body)
    assert body["reason"] == "store_unavailable" and "not-a-dir" in body["message"]


async def test_conversation_list_is_paged_most_recent_first(chat, rest, jp_fetch):
    client = await chat()
    made = []
    for i in range(7):
        conversation = new_id(f"c-page{i}-")
        await client.send_message(f"  topic   number {i}  ", conversation=conversation)
        accepted = await client.expect("MESSAGE_ACCEPTED")
        await client.chunks_until_complete(accepted["messageId"])
        made.append(conversation)
    slow = new_id("c-live-")  # one reply still streaming
    await client.send_message(" ".join(f"w{i}" for i in range(400)), conversation=slow)
    await client.expect("MESSAGE_ACCEPTED")
    await client.expect("MESSAGE_CHUNK")

    async def page(**query):
        response = await jp_fetch("streamchat", "api", "conversations", params=query)
        return json.loads(response.body)

    first = await page(limit=3)
    assert [c["conversationId"] for c in first["conversations"]] == [slow, made[6], made[5]]
    live, done = first["conversations"][0], first["conversations"][1]
    assert live["streaming"] is True and done["streaming"] is False
    assert done["title"] == "topic number 6" and done["agentId"] == "echo"
    seen, cursor = [c["conversationId"] for c in first["conversations"]], first["next"]
    while cursor:
        more = await page(limit=3, after=cursor)
        seen += [c["conversationId"] for c in more["conversations"]]
        cursor = more["next"]
    assert len(seen) == len(set(seen))  # no conversation twice
    assert seen[:8] == [slow, *reversed(made)]
    everything = (await rest("conversations"))["conversations"]  # default: a page of 50
    assert [c["conversationId"] for c in everything][:8] == seen[:8]

    for bad in (
        {"limit": "0"},
        {"limit": "501"},
        {"limit": "x"},
        {"after": "nonsense"},
        {"after": "WzEsMl0"},
    ):  # the last: a well-formed cursor of the wrong shape
        with pytest.raises(HTTPClientError) as failed:
            await jp_fetch("streamchat", "api", "conversations", params=bad)
        assert failed.value.code == 400, bad


async def test_rename_a_conversation(chat, rest, jp_fetch):
    client = await chat()
    conversation, other = new_id("c-rename-"), new_id("c-after-")
    for cid, text in ((conversation, "what was said first"), (other, "later one")):
        await client.send_message(text, conversation=cid)
        accepted = await client.expect("MESSAGE_ACCEPTED")
        await client.chunks_until_complete(accepted["messageId"])

    async def patch(cid, body):
        response = await jp_fetch(
            "streamchat",
            "api",
            "conversations",
            cid,
            method="PATCH",
            body=body if isinstance(body, str) else json.dumps(body),
        )
        return json.loads(response.body)

    def listed(listing, cid):
        return next(c for c in listing["conversations"] if c["conversationId"] == cid)

    assert await patch(conversation, {"title": "  My   plan "}) == {
        "conversationId": conversation,
        "title": "My plan",
    }
    listing = await rest("conversations")
    assert listed(listing, conversation)["title"] == "My plan"
    ids = [c["conversationId"] for c in listing["conversations"]]
    assert ids.index(other) < ids.index(conversation)  # renaming does not move it up
    await patch(conversation, {"title": ""})
    assert listed(await rest("conversations"), conversation)["title"] == "what was said first"
    for bad in ("not json", {"title": 5}, ["title"], {"title": "x" * 201}):
        with pytest.raises(HTTPClientError) as failed:
            await patch(conversation, bad)
        assert failed.value.code == 400, bad
    with pytest.raises(HTTPClientError) as failed:
        await patch("no-such-conversation", {"title": "x"})
    assert failed.value.code == 404


async def test_a_search_whose_client_goes_away_is_cancelled(
    chat, jp_fetch, streamchat_app, jp_serverapp, jp_http_port, jp_base_url, monkeypatch
):
    client = await chat()
    await client.send_message("something to find later")
    accepted = await client.expect("MESSAGE_ACCEPTED")
    await client.chunks_until_complete(accepted["messageId"])
    store = streamchat_app.hub.store
    real_search = store.search_conversations
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def long_search(*args, **kwargs):
        """The real search, after a wait that stands for a query running long."""
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return await real_search(*args, **kwargs)

    monkeypatch.setattr(store, "search_conversations", long_search)
    token = jp_serverapp.identity_provider.token
    reader, writer = await asyncio.open_connection("127.0.0.1", jp_http_port)
    writer.write(
        f"GET {jp_base_url}streamchat/api/conversations?q=find HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{jp_http_port}\r\nAuthorization: token {token}\r\n\r\n".encode()
    )
    await writer.drain()
    await asyncio.wait_for(started.wait(), 15)
    writer.close()  # the client goes away mid-search
    await asyncio.wait_for(cancelled.wait(), 15)  # hang guard only: it is at once

    monkeypatch.setattr(store, "search_conversations", real_search)
    response = await jp_fetch("streamchat", "api", "conversations", params={"q": "find later"})
    found = json.loads(response.body)["conversations"]
    assert [c["conversationId"] for c in found] == [accepted["conversationId"]]


async def test_a_search_over_its_cost_budget_is_a_400(streamchat_app, jp_fetch, monkeypatch):
    # (When the store refuses a search as too costly is the store's tests' business; here,
    # that the refusal reaches the client as its own mistake, in words, and not as an outage.)
    store = streamchat_app.hub.store
    real_search = store.search_conversations

    async def refusing_search(query, *args, **kwargs):
        if query == "aaa":
            raise SearchTooCostly(
                "searching for this text would take longer than this server "
                "allows one search; try a longer or more distinctive text"
            )
        return await real_search(query, *args, **kwargs)

    monkeypatch.setattr(store, "search_conversations", refusing_search)
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("streamchat", "api", "conversations", params={"q": "aaa"})
    assert e.value.code == 400
    body = json.loads(e.value.response.body)
    assert body["reason"] == "search_too_costly" and "distinctive" in body["message"]
    response = await jp_fetch("streamchat", "api", "conversations", params={"q": "aab"})
    assert response.code == 200
