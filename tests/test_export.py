"""A conversation as a Markdown file: GET api/conversations/{id}/export, through a real server."""

import json
import sqlite3
from datetime import datetime, timezone
from urllib.parse import quote

import pytest
from tornado.httpclient import HTTPClientError

from helpers import new_id

CODE = "Show me code:\n```python\nprint('*hi*')\n```\nThanks"


async def export(jp_fetch, conversation):
    return await jp_fetch("streamchat", "api", "conversations", conversation, "export")


def times(streamchat_app, conversation) -> list:
    """When each message of the conversation was written, as the export shows it."""
    with sqlite3.connect(streamchat_app.store.path) as db:
        rows = db.execute("SELECT created_at FROM messages WHERE conversation_id = ? "
                          "ORDER BY pos", (conversation,)).fetchall()
    return [datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            for (t,) in rows]


async def stopped_reply(client, text, conversation):
    """Send ``text`` and stop its reply after three frames; returns the reply's frames."""
    await client.send_message(text, conversation=conversation)
    mid = (await client.expect("MESSAGE_ACCEPTED"))["messageId"]
    frames = [await client.expect("MESSAGE_CHUNK") for _ in range(3)]
    await client.send("STOP_GENERATING", messageId=mid)
    return frames + await client.chunks_until_complete(mid)


async def test_export_is_the_conversation_in_markdown(chat, rest, jp_fetch, streamchat_app):
    client = await chat()
    conversation = new_id("c-")
    await client.send_message(CODE, conversation=conversation)
    accepted = await client.expect("MESSAGE_ACCEPTED")
    await client.chunks_until_complete(accepted["messageId"])
    long_text = " ".join(f"word{i}" for i in range(200))
    frames = await stopped_reply(client, long_text, conversation)
    assert frames[-1]["status"] == "stopped"
    await jp_fetch("streamchat", "api", "conversations", conversation, method="PATCH",
                   body=json.dumps({"title": "Code review: naïve ✓"}))
    stopped = (await rest("conversations", conversation))["messages"][3]["text"]
    assert stopped and long_text.startswith(stopped) and stopped != long_text

    response = await export(jp_fetch, conversation)
    asked, answered, asked_again, answered_again = times(streamchat_app, conversation)
    assert response.headers["Content-Type"] == "text/markdown; charset=utf-8"
    assert response.headers["Content-Disposition"] == (
        'attachment; filename="Code review_ naive.md"; '
        "filename*=UTF-8''" + quote("Code review_ naïve ✓.md", safe=""))
    assert response.body.decode("utf-8") == (
        "# Code review: naïve ✓\n"
        "\n"
        f"## You ({asked})\n"
        "\n"
        "Show me code:\n```python\nprint('*hi*')\n```\nThanks\n"
        "\n"
        f"## echo ({answered})\n"
        "\n"
        "Show me code:\n```python\nprint('*hi*')\n```\nThanks\n"
        "\n"
        f"## You ({asked_again})\n"
        "\n"
        f"{long_text}\n"
        "\n"
        f"## echo ({answered_again})\n"
        "\n"
        f"{stopped}\n"
        "\n"
        "*Stopped before the end.*\n"
    )


async def test_a_code_block_cut_short_is_closed(chat, rest, jp_fetch):
    """A reply stopped inside a code block gets the closing fence it lacks, so the headings
    after it are not shown as code."""
    client = await chat()
    conversation = new_id("c-")
    lines = "\n".join(f"x = {i}" for i in range(300))
    await stopped_reply(client, f"~~~~\n{lines}\n~~~~", conversation)
    stopped = (await rest("conversations", conversation))["messages"][1]["text"]
    assert stopped.startswith("~~~~\nx") and not stopped.endswith("~~~~")
    body = (await export(jp_fetch, conversation)).body.decode("utf-8")
    assert body.endswith(f"\n\n{stopped}\n~~~~\n\n*Stopped before the end.*\n")
    await jp_fetch("streamchat", "api", "conversations", conversation, method="PATCH",
                   body=json.dumps({"title": "Plain/simple"}))
    response = await export(jp_fetch, conversation)  # an ASCII title needs no filename*
    assert response.headers["Content-Disposition"] == 'attachment; filename="Plain_simple.md"'


async def test_export_of_an_unknown_conversation_is_404(jp_fetch):
    with pytest.raises(HTTPClientError) as failed:
        await export(jp_fetch, "no-such-conversation")
    assert failed.value.code == 404
