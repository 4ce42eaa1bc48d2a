"""Replies written straight through the store's API, as the hub writes them."""

from __future__ import annotations

from jupyter_streamchat.store import Append
from jupyter_streamchat.store.records import COMPLETE

BATCH = 500  # chunks per append: the hub appends what a batch window gathered, often hundreds


async def append_chunks(store, message_id: str, chunks: list, first_seq: int = 1) -> None:
    """Store ``chunks`` as frames ``first_seq``, ``first_seq + 1``, ... of a streaming reply."""
    for first in range(0, len(chunks), BATCH):
        await store.append(Append(message_id, first_seq + first, chunks[first : first + BATCH]))


async def store_reply(store, message_id: str, chunks: list) -> None:
    """A complete reply of exactly ``len(chunks)`` frames, the last one final."""
    await append_chunks(store, message_id, chunks[:-1])
    await store.append(Append(message_id, len(chunks), chunks[-1:], status=COMPLETE))
