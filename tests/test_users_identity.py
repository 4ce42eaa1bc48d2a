"""One server serving several named users (StreamChatApp.users_from_identity): each client's
conversations are those of the user its identity provider names, and nothing crosses users.

The identity provider here names the user from a request header, as a proxy that authenticates
users in front of a shared server would; the chat is the same code the default provider uses.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from jupyter_server.auth.identity import IdentityProvider, User

from helpers import ChatClient, new_id, streamchat_config


class HeaderUsers(IdentityProvider):
    """Users named by the ``X-Chat-User`` header (a test stand-in for a proxy's login)."""

    def get_user(self, handler):
        name = handler.request.headers.get("X-Chat-User")
        return User(username=name) if name else None


@pytest.fixture
def jp_server_config():
    return {
        **streamchat_config(
            EchoAgent={"delay": 0.005},
            StreamChatApp={"users_from_identity": True, "user": "server-owner"},
        ),
        "ServerApp": {
            "jpserver_extensions": {"jupyter_streamchat": True},
            "identity_provider_class": f"{__name__}.HeaderUsers",
        },
    }


@pytest.fixture
def as_user(jp_ws_fetch, jp_fetch):
    clients = []

    async def socket(name: str) -> ChatClient:
        ws = await jp_ws_fetch("streamchat", "ws", headers={"X-Chat-User": name})
        client = ChatClient(ws)
        clients.append(client)
        return client

    async def rest(name: str, *parts, **params):
        response = await jp_fetch(
            "streamchat", "api", *parts, headers={"X-Chat-User": name}, params=params or None
        )
        return json.loads(response.body)

    yield socket, rest
    for client in clients:
        client.close()


async def test_each_named_user_has_their_own_conversations(as_user, streamchat_app):
    socket, rest = as_user
    conversation = new_id("c-")
    bob_watch = await socket("bob")
    await bob_watch.send("WATCH_CONVERSATIONS")
    alice = await socket("alice")
    await alice.send_message("alice only", conversation=conversation)
    accepted = await alice.expect("MESSAGE_ACCEPTED")
    await alice.chunks_until_complete(accepted["messageId"])

    listed = await rest("alice", "conversations")
    assert [c["conversationId"] for c in listed["conversations"]] == [conversation]
    assert (await rest("bob", "conversations"))["conversations"] == []
    assert (await rest("bob", "conversations", q="alice"))["conversations"] == []

    bob = await socket("bob")
    await bob.send("SUBSCRIBE", conversationId=conversation)
    assert (await bob.expect("HISTORY"))["messages"] == []
    await bob.send("RESUME", messageId=accepted["messageId"], afterSeq=0)
    assert (await bob.expect("ERROR"))["code"] == "unknown_message"

    # Bob's own conversation of the same id is his, and alice's stays as it was.
    await bob.send_message("bob's", conversation=conversation)
    frame = await bob.recv()
    while frame["type"] != "MESSAGE_ACCEPTED":
        frame = await bob.recv()
    await bob.chunks_until_complete(frame["messageId"])
    mine = await rest("alice", "conversations", conversation)
    assert [m["text"] for m in mine["messages"]][0] == "alice only" and len(mine["messages"]) == 2
    theirs = await rest("bob", "conversations", conversation)
    assert [m["text"] for m in theirs["messages"]][0] == "bob's"

    # Bob's list heard of his own conversation only, never of alice's message.
    heard = []
    try:
        while True:
            heard.append(await bob_watch.recv(0.5))
    except asyncio.TimeoutError:
        pass
    assert heard and all("alice only" not in json.dumps(f) for f in heard)
    assert streamchat_app.hub.store.default_user == "server-owner"
