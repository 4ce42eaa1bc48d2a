"""What the user attached to a message (a cell, an error, a file, a variable), as prompt text
for agents that talk to a model: one place, so every agent shows the model the same thing."""

from __future__ import annotations

import re

_FENCE = re.compile(r"`{3,}")


def context_block(item: dict) -> str:
    """One attached item: a header line (kind, label, language, path, cell) and its text in a
    fence that the text's own backticks cannot close."""
    kind, label = str(item.get("kind") or "context"), str(item.get("label") or "")
    details = [str(item[key]) for key in ("language", "path", "mime") if item.get(key)]
    if isinstance(item.get("cell"), int) and not isinstance(item.get("cell"), bool):
        details.append(f"cell index {item['cell']}")
    if label.lower().startswith(kind.lower()):
        head = f"Attached {label}"  # "cell 3", not "cell cell 3"
    else:
        head = f"Attached {kind}" + (f": {label}" if label else "")
    head += f" ({', '.join(details)})" if details else ""
    body = str(item.get("text") or "")
    fence = "`" * max([3, *(len(run) + 1 for run in _FENCE.findall(body))])
    language = item.get("language") if isinstance(item.get("language"), str) else ""
    return f"{head}:\n{fence}{language}\n{body}\n{fence}"


def with_context(items, text: str) -> str:
    """The user's text with what was attached to it in front, in a delimited block."""
    if not isinstance(items, list):
        return text
    blocks = [context_block(item) for item in items if isinstance(item, dict)]
    if not blocks:
        return text
    return (
        "[The user attached the following context]\n\n"
        + "\n\n".join(blocks)
        + "\n\n[End of attached context; the user's message follows]\n\n"
        + text
    )
