"""The pieces of the printed reports: markdown tables, verdicts, number formats, and a part of
a bench that fails shown in the table as a reason rather than ending the run."""

from __future__ import annotations

import sys
from pathlib import Path

MiB = 1024 * 1024


def table(header: list, rows: list, align: str = "") -> list:
    """Markdown table lines; ``align`` has "l" or "r" per column, by default the first column
    left and the figures right."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = "|" + "".join("---|" if a == "l" else "---:|" for a in align)
    return [
        "| " + " | ".join(map(str, header)) + " |",
        rule,
        *("| " + " | ".join(map(str, row)) + " |" for row in rows),
    ]


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def ms(seconds: float | None) -> str:
    """Seconds as milliseconds, with three decimals below one."""
    if seconds is None:
        return "–"
    return f"{seconds * 1000:.1f} ms" if abs(seconds) >= 0.001 else f"{seconds * 1000:.3f} ms"


def mib(size: float) -> str:
    return f"{size / MiB:.1f} MiB"


def first_line(error: Exception) -> str:
    """An error's message on one line, for a table cell."""
    text = " ".join(str(error).split())
    return text[:300] + ("…" if len(text) > 300 else "")


def not_measured(what: str, error: str) -> None:
    """A row of a six-column table (measurement, ours, floor, ratio, goal, verdict)."""
    print(f"| {what} | not measured: {error} | | | | |")


async def attempt(name: str, make):
    """Run one part of a bench; a failure becomes the reason shown in the table, not a crash."""
    print(f"{name}...", file=sys.stderr)
    try:
        return await make()
    except Exception as e:  # reported in the table; the other parts still run
        print(f"{name} failed: {e!r}", file=sys.stderr)
        return f"{type(e).__name__}: {first_line(e)}"


def publish(text: str, path: Path, repo: Path) -> None:
    """Print the report, and keep it in bench/results/ (git-ignored) as well."""
    print(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    print(f"\n(saved to {path.relative_to(repo)})", file=sys.stderr)
