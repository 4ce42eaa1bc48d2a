"""A conversation as a Markdown file: GET api/conversations/{id}/export, through a real server."""

import json
import sqlite3
from datetime import datetime, timezone
from urllib.parse import quote

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from helpers import new_id
from jupyter_streamchat import redact
from jupyter_streamchat.redact import MASK

CODE = "Show me code:\n```python\nprint('*hi*')\n```\nThanks"


async def export(jp_fetch, conversation):
    return await jp_fetch("streamchat", "api", "conversations", conversation, "export")


def times(streamchat_app, conversation) -> list:
    """When each message of the conversation was written, as the export shows it."""
    with sqlite3.connect(streamchat_app.store.path) as db:
        rows = db.execute(
            "SELECT created_at FROM messages WHERE conversation_id = ? ORDER BY pos",
            (conversation,),
        ).fetchall()
    return [local(t) for (t,) in rows]


def local(timestamp: float) -> str:
    """``2026-12-07 10:22 +01:00``: the server's (this process's) local time and its offset."""
    moment = datetime.fromtimestamp(timestamp, timezone.utc).astimezone()
    offset = moment.strftime("%z")
    return moment.strftime("%Y-%m-%d %H:%M ") + offset[:3] + ":" + offset[3:]


HEADER = (
    "*Each message with its author and time (the server's local time, with its offset from "
    "UTC). Thinking is not included. Token usage is not included.*\n"
)


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
    await jp_fetch(
        "streamchat",
        "api",
        "conversations",
        conversation,
        method="PATCH",
        body=json.dumps({"title": "Code review: naïve ✓"}),
    )
    stopped = (await rest("conversations", conversation))["messages"][3]["text"]
    assert stopped and long_text.startswith(stopped) and stopped != long_text

    response = await export(jp_fetch, conversation)
    asked, answered, asked_again, answered_again = times(streamchat_app, conversation)
    assert response.headers["Content-Type"] == "text/markdown; charset=utf-8"
    assert response.headers["Content-Disposition"] == (
        'attachment; filename="Code review_ naive.md"; '
        "filename*=UTF-8''" + quote("Code review_ naïve ✓.md", safe="")
    )
    assert response.body.decode("utf-8") == (
        "# Code review: naïve ✓\n"
        "\n" + HEADER + "\n"
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
    await jp_fetch(
        "streamchat",
        "api",
        "conversations",
        conversation,
        method="PATCH",
        body=json.dumps({"title": "Plain/simple"}),
    )
    response = await export(jp_fetch, conversation)  # an ASCII title needs no filename*
    assert response.headers["Content-Disposition"] == 'attachment; filename="Plain_simple.md"'


# -- headings nested, local times, thinking on request (issue 14, point 5) -------------------

import time  # noqa: E402


async def test_a_messages_own_headings_sit_below_the_message_headings(chat, jp_fetch):
    client = await chat()
    conversation = new_id("c-")
    text = (
        "# Plan\n## Steps\nSetext title\n===\n\n- item\n---\n"
        "```markdown\n# not a heading: code\n```\n##### five\n###### six\n#hashtag\n"
    )
    await client.send_message(text, conversation=conversation)  # echo: the reply is the same
    accepted = await client.expect("MESSAGE_ACCEPTED")
    await client.chunks_until_complete(accepted["messageId"])
    body = (await export(jp_fetch, conversation)).body.decode("utf-8")
    nested = (
        "### Plan\n#### Steps\n### Setext title\n\n- item\n---\n"
        "```markdown\n# not a heading: code\n```\n###### five\n###### six\n#hashtag\n"
    )
    assert body.count(nested) == 2  # the user's message and the echo
    headings = [
        line
        for line in body.splitlines()
        if re.match(r"#{1,2} ", line) and line != "# not a heading: code"
    ]  # (in a code block, twice)
    assert len(headings) == 3  # the title and the two messages' headings, nothing else
    assert headings[0].startswith("# ")
    assert all(
        re.fullmatch(r"## (You|echo) \(\d{4}-\d\d-\d\d \d\d:\d\d [+-]\d\d:\d\d\)", h)
        for h in headings[1:]
    ), headings


@pytest.fixture
def india_time(monkeypatch):
    """The server's local time zone: UTC+05:30 all year (POSIX TZ, no tz database needed)."""
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is not available")
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


async def test_times_are_the_servers_local_time_with_its_offset(chat, jp_fetch, india_time):
    client = await chat()
    conversation = new_id("c-")
    before = time.time()
    await client.send_message("what time is it?", conversation=conversation)
    accepted = await client.expect("MESSAGE_ACCEPTED")
    await client.chunks_until_complete(accepted["messageId"])
    body = (await export(jp_fetch, conversation)).body.decode("utf-8")
    headings = re.findall(r"^## (?:You|echo) \((.*)\)$", body, re.M)
    assert len(headings) == 2
    shown = datetime.strptime(headings[0], "%Y-%m-%d %H:%M %z")
    assert headings[0].endswith(" +05:30")
    assert abs(shown.timestamp() - before) < 120  # that moment, not UTC read as local
    assert ex.local_time(0) == "1970-01-01 05:30 +05:30"
    assert "their offset from UTC" in body or "its offset from UTC" in body


async def test_thinking_is_included_on_request_and_said_either_way(
    chat, rest, jp_fetch, streamchat_app
):
    think = streamchat_app.agent_instances["think"]
    think.delay, think.thoughts = 0, 5
    client = await chat()
    conversation = new_id("c-")
    await client.send_message("Why?", agent="think", conversation=conversation)
    accepted = await client.expect("MESSAGE_ACCEPTED")
    await client.chunks_until_complete(accepted["messageId"])
    thoughts = "thought000 thought001 thought002 thought003 thought004 "

    without = (await export(jp_fetch, conversation)).body.decode("utf-8")
    assert "Thinking is not included." in without.splitlines()[2]
    assert "thought000" not in without and "<details>" not in without
    assert "Answer: Why?" in without

    response = await jp_fetch(
        "streamchat", "api", "conversations", conversation, "export", params={"thinking": "1"}
    )
    with_thinking = response.body.decode("utf-8")
    assert "Each reply's thinking comes before its text" in with_thinking.splitlines()[2]
    assert "Thinking is not included" not in with_thinking
    assert (
        f"\n<details>\n<summary>Thinking</summary>\n\n{thoughts}\n\n</details>\n\nAnswer: Why?\n"
    ) in with_thinking
    assert with_thinking.count("<details>") == 1  # the user's message has no thinking
    explicit = await jp_fetch(
        "streamchat", "api", "conversations", conversation, "export", params={"thinking": "0"}
    )
    assert explicit.body.decode("utf-8") == without


@pytest.mark.parametrize(
    "query", ["thinking=2", "thinking=yes", "thinking=", "thinking=true", "thinking=1&thinking=1"]
)
async def test_a_thinking_other_than_0_or_1_is_a_400(
    chat, jp_serverapp, http_server_client, jp_http_port, jp_base_url, query
):
    client = await chat()
    conversation = new_id("c-")
    await client.send_message("hi", conversation=conversation)
    await client.expect("MESSAGE_ACCEPTED")
    url = (
        f"http://127.0.0.1:{jp_http_port}{jp_base_url}streamchat/api/conversations/"
        f"{conversation}/export?{query}"
    )
    token = jp_serverapp.identity_provider.token
    response = await AsyncHTTPClient().fetch(
        HTTPRequest(url, headers={"Authorization": f"token {token}"}), raise_error=False
    )
    assert response.code == 400
    assert "thinking" in json.loads(response.body)["message"]


# -- tool calls and attached context ---------------------------------------------------------

# Random-looking: any part of it in the export would be a leak.
KEY = "sk-Tq3Wm8Xv1Lb6Nd9Rc4Hz7Jf2Kp5Gy0Su"
# A cell the user attached: it quotes the key, and holds a fence of its own.
CELL = f'client = OpenAI(api_key="{KEY}")\n```\nnot the end of the block\n```'


async def tools_reply(client, text, conversation, context=None, answer=None, stop_on=None):
    """Send ``text`` to the ``tools`` test agent; answer its waiting call with ``answer``, or
    stop the reply once a call is ``stop_on``; -> the reply's frames."""
    fields = {"context": context} if context else {}
    await client.send(
        "SEND_MESSAGE",
        conversationId=conversation,
        agentId="tools",
        text=text,
        clientMessageId=new_id("m-"),
        **fields,
    )
    message_id = (await client.expect("MESSAGE_ACCEPTED"))["messageId"]
    frames = []
    while not (frames and frames[-1]["isComplete"]):
        frames.append(await client.expect("MESSAGE_CHUNK"))
        for call in frames[-1].get("toolCalls", []):
            if call["status"] == "waiting" and answer:
                await client.send(
                    "ANSWER_TOOL_CALL", messageId=message_id, toolCallId=call["id"], decision=answer
                )
            if call["status"] == stop_on:
                await client.send("STOP_GENERATING", messageId=message_id)
    return frames


async def test_tool_calls_and_attached_context_in_the_export(chat, jp_fetch, streamchat_app):
    redact.register(KEY)  # as the server does for every key in its config
    client = await chat()
    conversation = new_id("c-")
    attached = {
        "kind": "cell",
        "label": "In [3]",
        "text": CELL,
        "language": "python",
        "path": "work/nb.ipynb",
        "cell": 2,
    }
    frames = await tools_reply(
        client, "tool fail approve", conversation, context=[attached], answer="allow_once"
    )
    assert frames[-1]["status"] == "complete"
    frames = await tools_reply(client, "hold 60", conversation, stop_on="running")
    assert frames[-1]["status"] == "stopped"

    body = (await export(jp_fetch, conversation)).body.decode("utf-8")
    assert KEY[6:12] not in body and "api_key=" in body  # the key is masked, the rest is there
    asked, answered, held, stopped = times(streamchat_app, conversation)
    took = re.compile(r" · \d+\.\d s$", re.M)  # how long each call took: varies
    assert took.sub(" · T", body) == (
        "# tool fail approve\n"
        "\n" + HEADER + "\n"
        f"## You ({asked})\n"
        "\n"
        "tool fail approve\n"
        "\n"
        "**Attached cell:** In \\[3\\] (work/nb.ipynb, cell 3)\n"
        "\n"
        "````python\n"
        f'client = OpenAI(api_key="{MASK}")\n'
        "```\nnot the end of the block\n```\n"
        "````\n"
        "\n"
        f"## tools ({answered})\n"
        "\n"
        "**🔧 read\\_file** · Read f1.txt · completed · T\n"
        "\n"
        "Arguments:\n"
        "\n"
        '```json\n{\n  "path": "f1.txt"\n}\n```\n'
        "\n"
        "Result:\n"
        "\n"
        "```text\ncontents of f1.txt\n```\n"
        "\n"
        "**🔧 run** · failed · T\n"
        "\n"
        "Arguments:\n"
        "\n"
        "```json\n{}\n```\n"
        "\n"
        "Error:\n"
        "\n"
        "```text\nexit status 1\n```\n"
        "\n"
        "**🔧 write\\_file** · Write f3.txt · completed (allowed once) · T\n"
        "\n"
        "Arguments:\n"
        "\n"
        '```json\n{\n  "path": "f3.txt",\n  "text": "new"\n}\n```\n'
        "\n"
        "Change to f3.txt:\n"
        "\n"
        "```diff\n--- a/f3.txt\n+++ b/f3.txt\n@@ -1 +1 @@\n-old\n+new\n```\n"
        "\n"
        "Result:\n"
        "\n"
        "```text\nwrote f3.txt\n```\n"
        "\n"
        "Reading 1. Writing 3. Written (allow_once). Done.\n"
        "\n"
        f"## You ({held})\n"
        "\n"
        "hold 60\n"
        "\n"
        f"## tools ({stopped})\n"
        "\n"
        "**🔧 sleep** · failed · T\n"
        "\n"
        "Arguments:\n"
        "\n"
        "```json\n{}\n```\n"
        "\n"
        "Error:\n"
        "\n"
        "```text\nnot run: the reply ended first\n```\n"
        "\n"
        "*Stopped before the end.*\n"
    )


async def test_export_of_an_unknown_conversation_is_404(jp_fetch):
    with pytest.raises(HTTPClientError) as failed:
        await export(jp_fetch, "no-such-conversation")
    assert failed.value.code == 404


# -- hostile titles and huge conversations (issue 13, point 5) ------------------------------

import email.policy  # noqa: E402
import email.utils  # noqa: E402
import re  # noqa: E402
import unicodedata  # noqa: E402
from email.message import EmailMessage  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from urllib.parse import unquote  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from jupyter_streamchat.server import export as ex  # noqa: E402

# RFC 6266 over RFC 7230 and RFC 8187, strictly: nothing the grammar does not allow.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_EXT_VALUE = r"(?i:UTF-8)'[A-Za-z0-9-]*'(?:[!#$&+.^_`|~0-9A-Za-z-]|%[0-9A-Fa-f]{2})*"
_PARAM = re.compile(rf"\s*;\s*({_TOKEN})\s*=\s*({_QUOTED}|{_EXT_VALUE}|{_TOKEN})")
_SAFE_FILENAME = re.compile(r"[A-Za-z0-9 _.()+=@&!~#$'\[\]{}^-]+\.md")


def parse_content_disposition(header: str) -> tuple:
    """``(type, {name: value})`` of a Content-Disposition, or an AssertionError where the
    header is not RFC 6266 or repeats a parameter."""
    assert header.isascii() and not re.search(r"[\x00-\x1f\x7f]", header), header
    kind = re.match(_TOKEN, header)
    assert kind, header
    params, at = {}, kind.end()
    while at < len(header):
        param = _PARAM.match(header, at)
        assert param, f"not a parameter at {at}: {header!r}"
        name, value = param.group(1).lower(), param.group(2)
        assert name not in params, f"{name} twice: {header!r}"
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[name] = value
        at = param.end()
    return kind.group(0).lower(), params


HOSTILE = [
    '"',
    "\\",
    ";",
    "/",
    "＂",
    "／",
    "＼",
    "；",
    "\r",
    "\n",
    "\r\n",
    "\x00",
    "\t",
    "\u202e",
    "\u202d",
    "\u2066",
    "\u200b",
    "\u2028",
    "\ufeff",
    "%",
    "%22",
    "'",
    "=",
    "*",
    "filename=",
    "filename*=UTF-8''x",
    " ",
    ".",
    "..",
    "../",
    "..\\",
    "：",
    "｜",
    "＊",
    "？",
    "＜",
    "＞",
    "ﬁ",
    "™",
    "ß",
    "é",
    "e\u0301",
    "ℌ",
    "①",
    "⁄",
    "∕",
    "\u2215",
    "\uff0e\uff0e\uff0f",
    "CON",
    "nul",
    "a" * 50,
    "日本語",
    "🙂",
    "\U0001f1fa\U0001f1f8",
]
titles = st.lists(
    st.one_of(
        st.sampled_from(HOSTILE), st.text(st.characters(exclude_categories=("Cs",)), max_size=8)
    ),
    max_size=30,
).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(titles)
def test_no_title_breaks_out_of_content_disposition(title):
    header = ex.content_disposition(title)
    kind, params = parse_content_disposition(header)
    assert kind == "attachment"
    assert set(params) <= {"filename", "filename*"} and "filename" in params
    ascii_name = params["filename"]
    assert _SAFE_FILENAME.fullmatch(ascii_name), header
    assert not set(unicodedata.normalize("NFKC", ascii_name)) & set('/\\";:%'), header
    name = ex._file_name(title) or "conversation"
    real = (
        unquote(params["filename*"].split("'", 2)[2], errors="strict")
        if "filename*" in params
        else ascii_name
    )
    assert real == (name if "filename*" in params else ascii_name[:-3]) + ".md"
    assert params["filename*"].lower().startswith("utf-8''") if "filename*" in params else True
    for form in ("NFC", "NFD", "NFKC", "NFKD"):  # whatever a client normalises it to
        shown = unicodedata.normalize(form, real)
        assert not set(shown) & set('/\\":;*?<>|'), (title, real)
        assert not any(unicodedata.category(c) in ("Cc", "Cf") for c in shown), (title, real)
    assert real.strip(" .") == real[:-3].strip(" .") + ".md" or real == ".md"
    # Python's own parser of MIME headers finds no defect, and its RFC 2231 decoder (the
    # encoding of RFC 8187) reads filename* as the name.
    message = EmailMessage(policy=email.policy.default)
    message["Content-Disposition"] = header
    parsed = message["Content-Disposition"]
    assert parsed.content_disposition == "attachment"
    # (To RFC 2231, filename and filename* are one parameter said twice: its one complaint.)
    assert all("duplicate parameter" in str(d) and "filename*" in params for d in parsed.defects), (
        parsed.defects
    )
    if "filename*" in params:
        charset, _language, encoded = email.utils.decode_rfc2231(params["filename*"])
        assert unquote(encoded, encoding=charset, errors="strict") == real


async def test_a_hostile_title_through_the_server(chat, jp_fetch):
    client = await chat()
    conversation = new_id("c-")
    await client.send_message("hi", conversation=conversation)
    await client.chunks_until_complete((await client.expect("MESSAGE_ACCEPTED"))["messageId"])
    title = "＂; filename=／etc／passwd；x\u202egpj.md ..\\..\\ naïve"
    await jp_fetch(
        "streamchat",
        "api",
        "conversations",
        conversation,
        method="PATCH",
        body=json.dumps({"title": title}),
    )
    header = (await export(jp_fetch, conversation)).headers["Content-Disposition"]
    kind, params = parse_content_disposition(header)
    assert params == {
        "filename": "__ filename=_etc_passwd_xgpj.md .._.._ naive.md",
        "filename*": "UTF-8''" + quote("__ filename=_etc_passwd_xgpj.md .._.._ naïve.md", safe=""),
    }


def reference_closed_fences(text: str) -> str:
    """The export's code-fence closing as it was before it worked in pieces."""
    opened = None
    for line in text.splitlines():
        fence = ex._FENCE.match(line)
        if fence is None:
            continue
        marks, rest = fence.groups()
        if opened is None:
            if not (marks[0] == "`" and "`" in rest):
                opened = marks
        elif marks[0] == opened[0] and len(marks) >= len(opened) and not rest.strip():
            opened = None
    text = text if text.endswith("\n") else text + "\n"
    return text + f"{opened}\n" if opened else text


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["```", "~~~", "````", "   ", "    ", "`", "~", "a", " b", "python", "\n", "\r\n"]
        ),
        max_size=40,
    ).map("".join)
)
def test_fences_are_closed_as_before_in_pieces(text):
    assert ex._closed_fences(text) == reference_closed_fences(text)


def test_a_huge_conversation_is_made_in_small_pieces():
    lines = "\n".join(f"line {i} " + "x" * (i % 300) for i in range(40_000))
    one_line = "y" * 3_000_000  # a reply of one line of 3 MB
    messages = [
        SimpleNamespace(
            role="user", agent_id="echo", created_at=0, text="go", status="complete", error=None
        ),
        SimpleNamespace(
            role="assistant",
            agent_id="echo",
            created_at=0,
            text=f"```\n{lines}",
            status="stopped",
            error=None,
        ),
        SimpleNamespace(
            role="assistant",
            agent_id="echo",
            created_at=0,
            text=one_line,
            status="complete",
            error=None,
        ),
    ]
    conversation = SimpleNamespace(title="Big")
    pieces = list(ex.markdown_pieces(conversation, messages))
    assert max(map(len, pieces)) <= ex.PIECE_CHARS
    document = "".join(pieces)
    assert document == ex.conversation_markdown(conversation, messages)
    assert f"```\n{lines}\n```\n\n*Stopped before the end.*\n" in document
    assert document.endswith(f"\n{one_line}\n")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "# ",
                "## ",
                "###### ",
                "#",
                "   # ",
                "    # ",
                "```",
                "~~~",
                "a",
                " b",
                "\n",
                "\n\n",
                "x" * 9,
            ]
        ),
        max_size=40,
    ).map("".join)
)
def test_headings_are_moved_the_same_in_small_pieces(text):
    """A piece may end anywhere, even inside a heading's marks: the document is the same."""
    whole = ex._closed_fences(text)
    saved = ex.PIECE_CHARS
    try:
        for size in (1, 2, 3, 7):
            ex.PIECE_CHARS = size
            assert ex._closed_fences(text) == whole, size
    finally:
        ex.PIECE_CHARS = saved
    shown = [line for line in whole.splitlines() if re.match(r" {0,3}#{1,2}(\s|$)", line)]
    assert not shown or "```" in text or "~~~" in text  # outside code, none at level 1 or 2
