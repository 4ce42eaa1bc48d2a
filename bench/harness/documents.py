"""Generated markdown documents in the shape of a long technical answer from an assistant:
headings, paragraphs, lists, tables, fenced code. The same seed gives the same document, and
its length is exact in tokens as ``split_tokens`` counts them."""

from __future__ import annotations

import random

from jupyter_streamchat.agents.base import split_tokens

WORDS = (
    "the a of to and in is it that for on with as this by be are from at or an was which "
    "stream token frame server client message reply hub store chunk batch window socket "
    "render block list table code kernel widget notebook browser agent conversation latency "
    "throughput sequence resume replay cursor buffer queue event loop task thread process "
    "memory cache index query commit transaction schema column row value result error status "
    "request response handler route config setting option default timeout retry backoff "
    "connection origin token session user model data file path format parse encode decode "
    "fast slow large small first last next previous every each many few more less new old "
    "simple careful stable bounded linear constant quadratic measured expected observed"
).split()
IDENTS = (
    "value count items result frame chunk total text offset limit index store reply buffer window"
).split()


class MarkdownWriter:
    """Deterministic markdown in the shape of a long technical answer from an assistant."""

    def __init__(self, seed: int):
        self.r = random.Random(seed)

    def words(self, lo: int, hi: int, plain: bool = False) -> str:
        r = self.r
        out = []
        for _ in range(r.randint(lo, hi)):
            word = r.choice(WORDS)
            roll = 1.0 if plain else r.random()
            if roll < 0.03:
                word = f"**{word}**"
            elif roll < 0.05:
                word = f"*{word}*"
            elif roll < 0.08:
                word = f"`{r.choice(IDENTS)}_{r.randint(0, 99)}()`"
            elif roll < 0.09:
                word = f"[{word}](https://example.org/docs/{r.choice(IDENTS)}#{r.randint(1, 99)})"
            out.append(word)
        return " ".join(out)

    def sentence(self, lo: int = 6, hi: int = 18) -> str:
        text = self.words(lo, hi)
        return text[0].upper() + text[1:] + "."

    def paragraph(self) -> str:
        return " ".join(self.sentence() for _ in range(self.r.randint(2, 6)))

    def heading(self) -> str:
        return "#" * self.r.choice((2, 2, 3)) + " " + self.words(2, 6, plain=True).title()

    def bullets(self) -> str:
        lines = []
        for _ in range(self.r.randint(3, 7)):
            lines.append("- " + self.sentence(4, 16))
            if self.r.random() < 0.25:
                lines += ["  - " + self.sentence(3, 10) for _ in range(self.r.randint(1, 3))]
        return "\n".join(lines)

    def numbered(self) -> str:
        return "\n".join(
            f"{i}. " + self.sentence(5, 18) for i in range(1, self.r.randint(3, 6) + 1)
        )

    def table(self) -> str:
        r = self.r
        cols = r.randint(3, 5)
        head = [self.words(1, 2, plain=True).title() for _ in range(cols)]
        rows = ["| " + " | ".join(head) + " |", "|" + "---|" * cols]
        for _ in range(r.randint(4, 12)):
            cells = [r.choice(IDENTS)] + [
                f"{r.uniform(0, 1000):.1f}" if r.random() < 0.5 else self.words(1, 3)
                for _ in range(cols - 1)
            ]
            rows.append("| " + " | ".join(cells) + " |")
        return "\n".join(rows)

    def code(self) -> str:
        r = self.r
        lang = r.choice(("python", "javascript", "bash", "sql"))
        a, b = r.sample(IDENTS, 2)
        if lang == "python":
            body = [f"def {a}_{b}({a}, {b}=None):", f'    """{self.sentence(4, 9)}"""']
            for _ in range(r.randint(3, 14)):
                body.append(
                    f"    {r.choice(IDENTS)} = {r.choice(IDENTS)}.get({r.randint(0, 9)})"
                    f" + {r.randint(1, 500)}"
                )
                if r.random() < 0.15:
                    body.append("")  # blank lines inside a fence must not end the block
            body.append(f"    return {a}")
        elif lang == "javascript":
            body = [f"export function {a}{b.title()}({a}) {{"]
            body += [
                f"  const {r.choice(IDENTS)}{r.randint(0, 9)} = "
                f"{a}.{r.choice(IDENTS)}({r.randint(0, 99)});"
                for _ in range(r.randint(3, 14))
            ]
            body += [f"  return {a};", "}"]
        elif lang == "bash":
            body = [f"python -m {a} --{b}={r.randint(1, 64)} \\", f"  --out /tmp/{a}.json"]
            body += [
                f"grep -n '{r.choice(WORDS)}' /var/log/{b}.log | head -{r.randint(5, 50)}"
                for _ in range(r.randint(1, 5))
            ]
        else:
            body = [
                f"SELECT {a}, {b}, count(*) AS n",
                f"FROM {a}s",
                f"WHERE {b} > {r.randint(0, 999)}",
                f"GROUP BY {a}, {b}",
                "ORDER BY n DESC",
                f"LIMIT {r.randint(5, 100)};",
            ]
        return f"```{lang}\n" + "\n".join(body) + "\n```"

    def quote(self) -> str:
        return "> " + self.sentence(8, 24)

    def section(self) -> list:
        blocks = [self.heading(), self.paragraph()]
        for _ in range(self.r.randint(1, 3)):
            kind = self.r.choices(
                (self.paragraph, self.bullets, self.numbered, self.table, self.code, self.quote),
                weights=(4, 2, 1.5, 1, 2, 0.5),
            )[0]
            blocks.append(kind())
        return blocks


def make_document(tokens: int, seed: int = 2024) -> str:
    """A markdown document of exactly ``tokens`` pieces of ``split_tokens``.

    The same seed gives the same sections, so a smaller document reads like the start of a
    larger one. Whole sections are added while they fit, then one paragraph of the tokens left.
    """
    writer = MarkdownWriter(seed)
    blocks = ["# " + writer.words(3, 7, plain=True).title()]
    count = len(split_tokens(blocks[0]))
    while True:
        section = writer.section()
        # Blocks start with a non-blank character, so the "\n\n" between blocks joins the
        # next block's first token and the counts add up.
        need = sum(len(split_tokens(block)) for block in section)
        if count + need > tokens:
            break
        blocks += section
        count += need
    if tokens > count:
        blocks.append(
            " ".join(writer.r.choice(WORDS) for _ in range(tokens - count)).capitalize() + "."
        )
    text = "\n\n".join(blocks)
    got = len(split_tokens(text))
    if got != tokens:
        raise AssertionError(f"generated {got} tokens, wanted {tokens}")
    return text
