"""What the commands print for people; ``--json`` prints the REST API's shapes instead."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import TextIO

from .. import protocol as p
from ..kernel.markdown import context_line, tool_call_line

TITLE_WIDTH = 60


def print_json(document, out: TextIO = None) -> None:
    """One JSON document, on one line, ending with a line break."""
    out = out or sys.stdout
    out.write(json.dumps(document, ensure_ascii=False) + "\n")
    out.flush()


def local_time(seconds) -> str:
    """``2026-05-10 14:03``, this machine's local time."""
    if not isinstance(seconds, (int, float)):
        return "-"
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M")


def one_line(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def conversations_table(entries: list) -> str:
    """One line per conversation: id, last update, messages, latest agent, title; a search
    result's snippet on the line below it."""
    if not entries:
        return ""
    rows = [("ID", "UPDATED", "MESSAGES", "AGENT", "TITLE")]
    for entry in entries:
        title = one_line(entry["title"], TITLE_WIDTH) or "(untitled)"
        if entry.get("streaming"):
            title += " [streaming]"
        rows.append(
            (
                entry["conversationId"],
                local_time(entry["updatedAt"]),
                str(entry["messageCount"]),
                entry["agentId"] or "-",
                title,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for index, row in enumerate(rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths)] + [row[4]]
        lines.append("  ".join(cells).rstrip())
        snippet = entries[index - 1].get("snippet") if index else None
        if snippet:
            lines.append(" " * (sum(widths) + 8) + "… " + one_line(snippet, TITLE_WIDTH * 2))
    return "\n".join(lines) + "\n"


def agents_table(body: dict) -> str:
    rows = [("ID", "NAME", "DESCRIPTION")]
    rows += [
        (a["id"], a.get("name") or a["id"], one_line(a.get("description") or "", 80))
        for a in body["agents"]
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    return "".join(
        "  ".join([row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2]]).rstrip() + "\n"
        for row in rows
    )


def conversation_text(body: dict) -> str:
    """Each message under a line saying who wrote it, when, and (for a reply) its status and
    error; a reply's tool calls, a line each, before its text; the text as stored (Markdown);
    what a user message had attached, a line each, after it."""
    blocks = []
    for message in body["messages"]:
        when = local_time(message.get("createdAt"))
        if message["role"] == "user":
            head = f"── user · {when}"
        else:
            status = message["status"]
            head = f"── assistant · {message['agentId']} · {status} · {when}"
        text = message["text"]
        block = head + "\n"
        block += "".join(tool_call_line(call) + "\n" for call in message.get("toolCalls") or ())
        block += text + ("" if not text or text.endswith("\n") else "\n")
        block += "".join(context_line(item) + "\n" for item in message.get("context") or ())
        if message.get("error"):
            block += f"[{p.ERROR}: {' '.join(message['error'].split())}]\n"
        blocks.append(block)
    return "\n".join(blocks)
