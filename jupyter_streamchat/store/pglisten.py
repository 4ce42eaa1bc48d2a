"""Hints between the servers sharing one Postgres store: NOTIFY to send, LISTEN to receive.

A committed write batch sends its hints (``hints.py``) with ``pg_notify`` inside its own
transaction, so they are delivered when, and only if, it commits. A notification's payload is
JSON: ``{"origin": ..., "hints": [...]}``, where ``origin`` names the store instance that sent
it (a server ignores its own). Postgres refuses payloads of 8000 bytes or more, so a batch's
hints are split over as many notifications as they need, each well under that.

:class:`Listener` holds one connection of its own (never one of the pool's: a pooled
connection goes back to the pool, and a LISTEN with it), listens, and hands each hint of
another origin to a callback on the event loop. When that connection drops (the backend is
terminated, Postgres restarts, the network goes) it reconnects with backoff, and then hands
over :class:`Resync`: hints may have been lost meanwhile, so whoever follows something reads
it again from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from dataclasses import asdict
from typing import Awaitable, Callable, Iterable, Optional

from ..redact import redact
from .hints import (
    ConversationChanged,
    ExchangeCreated,
    FramesCommitted,
    Resync,
    StopRequested,
    ToolCallAnswered,
)

CHANNEL = "streamchat"

# Postgres's limit is 8000 bytes; leave room for the envelope.
MAX_PAYLOAD_BYTES = 7500

_KINDS = {
    cls.__name__: cls
    for cls in (
        FramesCommitted,
        ExchangeCreated,
        ConversationChanged,
        StopRequested,
        ToolCallAnswered,
        Resync,
    )
}

log = logging.getLogger(__name__)


def encode(origin: str, hints: Iterable) -> list:
    """The payloads that carry ``hints``: one, or several when one would be too large."""
    envelope = len(json.dumps({"origin": origin, "hints": []}).encode())
    payloads, current, size = [], [], envelope
    for hint in hints:
        item = {"kind": type(hint).__name__, **asdict(hint)}
        item_size = len(json.dumps(item).encode()) + 2  # and a separator
        if current and size + item_size > MAX_PAYLOAD_BYTES:
            payloads.append(json.dumps({"origin": origin, "hints": current}))
            current, size = [], envelope
        current.append(item)
        size += item_size
    if current:
        payloads.append(json.dumps({"origin": origin, "hints": current}))
    return payloads


def decode(payload: str) -> tuple:
    """``(origin, [hint, ...])`` from a payload; hints of unknown kinds are skipped (a newer
    release may send more)."""
    data = json.loads(payload)
    hints = []
    for item in data.get("hints", ()):
        cls = _KINDS.get(item.pop("kind", None))
        if cls is None:
            continue
        try:
            hints.append(cls(**item))
        except TypeError:  # fields this release does not know
            continue
    return str(data.get("origin", "")), hints


def merge(hints: list) -> list:
    """One FramesCommitted per reply (its latest) and the others as they came, in order."""
    latest: dict = {}
    for hint in hints:
        if isinstance(hint, FramesCommitted):
            seen = latest.get(hint.message_id)
            if seen is None or (hint.last_seq, hint.final) >= (seen.last_seq, seen.final):
                latest[hint.message_id] = hint
    out, done = [], set()
    for hint in hints:
        if isinstance(hint, FramesCommitted):
            if hint.message_id in done:
                continue
            done.add(hint.message_id)
            hint = latest[hint.message_id]
        out.append(hint)
    return out


async def notify(conn, origin: str, hints: list) -> None:
    """Send ``hints`` on ``conn``, inside its transaction if it is in one."""
    payloads = encode(origin, merge(hints))
    if payloads:
        await conn.execute(
            "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p", (CHANNEL, payloads)
        )


class Listener:
    """LISTEN on a connection of its own; ``deliver(hint)`` for each hint of another origin."""

    def __init__(
        self,
        connect: Callable[[], Awaitable],
        origin: Callable[[], str],
        deliver: Callable,
        logger: Optional[logging.Logger] = None,
        probe_seconds: float = 10.0,
        max_backoff: float = 5.0,
    ):
        self._connect = connect
        self._origin = origin
        self._deliver = deliver
        self.log = logger or log
        self.probe_seconds = probe_seconds
        self.max_backoff = max_backoff
        self._conn = None
        self._task: Optional[asyncio.Task] = None
        self.reconnects = 0  # how many times the connection was made again (tests)

    async def start(self) -> None:
        """Connect and listen (raises if that fails), then listen on in a task."""
        self._conn = await self._listen()
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await self._close()

    async def _listen(self):
        conn = await self._connect()
        try:
            await conn.execute(f"LISTEN {CHANNEL}")
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.close()
            raise
        return conn

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _run(self) -> None:
        while True:
            try:
                await self._receive(self._conn)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.log.warning(
                    "streamchat: lost the connection that hears other servers' writes (%s); "
                    "reconnecting",
                    redact(_first_line(e)),
                )
            await self._close()
            await self._reconnect()
            self._hand(Resync())

    async def _receive(self, conn) -> None:
        """Until the connection fails: each notification's hints, and a probe of the
        connection whenever none came for ``probe_seconds`` (a silent network is found out)."""
        while True:
            async for notification in conn.notifies(timeout=self.probe_seconds):
                self._dispatch(notification.payload)
            await asyncio.wait_for(conn.execute("SELECT 1"), self.probe_seconds)

    async def _reconnect(self) -> None:
        delay = 0.1
        while True:
            await asyncio.sleep(delay * (0.5 + random.random()))
            try:
                self._conn = await self._listen()
            except Exception as e:
                self.log.debug(
                    "streamchat: reconnecting the listener failed: %s", redact(_first_line(e))
                )
                delay = min(self.max_backoff, delay * 2)
                continue
            self.reconnects += 1
            self.log.info("streamchat: hearing other servers' writes again")
            return

    def _dispatch(self, payload: str) -> None:
        try:
            origin, hints = decode(payload)
        except (ValueError, AttributeError, TypeError) as e:
            self.log.debug("streamchat: ignoring a notification that is not a hint: %s", e)
            return
        if origin == self._origin():
            return
        for hint in hints:
            self._hand(hint)

    def _hand(self, hint) -> None:
        try:
            self._deliver(hint)
        except Exception:
            self.log.exception("streamchat: handling a hint from another server failed")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
