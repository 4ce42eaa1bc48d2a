"""The demo agent: an offline stand-in for an LLM that answers in realistic markdown."""

from __future__ import annotations

import asyncio

from traitlets import Float, default

from .base import Agent, AgentRequest, split_tokens

_REPLY = """## Streaming chat in Jupyter

You asked: *{question}*

I am the **demo agent**: I run offline, so everything below is canned, but it streams to you
token by token exactly as a real model's reply would.

What this chat does for you:

1. Shows the first token as soon as the agent produces it.
2. Keeps every message, **partial replies included**, in a database.
3. Resumes a reply after a dropped connection or a page reload, with no gap and no duplicate.
4. Stops generating the moment you click *Stop*.

| Agent | Needs network | Good for |
|-------|---------------|----------|
| `echo` | no | tests, repeats your words |
| `demo` | no | trying the chat out |

A small analysis, as an agent might suggest it (standard library only: *Insert* puts it in a
cell, and it runs as it is):

```python
import statistics

runs = {{"tokens": [120, 340, 95], "seconds": [1.2, 3.1, 0.9]}}
tokens_per_second = [t / s for t, s in zip(runs["tokens"], runs["seconds"])]
print(f"mean {{statistics.mean(tokens_per_second):.1f}} tokens/s, "
      f"best {{max(tokens_per_second):.1f}} tokens/s")
```

> Tip: pick another agent above to talk to a real model.
"""


class DemoAgent(Agent):
    delay = Float(0.02, help="Seconds to sleep before each token.").tag(config=True)

    @default("description")
    def _default_description(self):
        return "Offline demo: answers in markdown (headings, lists, a table, code)."

    async def stream(self, request: AgentRequest):
        question = " ".join(request.text.split())[:200]
        for piece in split_tokens(_REPLY.format(question=question)):
            await asyncio.sleep(self.delay)
            yield piece
