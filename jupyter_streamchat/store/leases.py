"""Who is producing each streaming reply, and recovery of replies whose producer is gone.

Every process that opens the store registers as an owner with a lease (``lease_until``) that
it renews while it runs; each reply it generates names it. Another process may end a reply
as ``interrupted`` only when that reply's owner is gone: its lease expired, its row is missing,
or it ran on this same machine (same boot) under a pid that no longer runs that process.
The last test lets a server restarted right after a crash recover at once instead of waiting
out the lease.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
import uuid
from typing import Optional

from .records import INTERRUPTED, STREAMING
from . import appends, search, toolcalls


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _started(pid: int) -> Optional[str]:
    """When process ``pid`` started (Linux: clock ticks since boot), or None if not known."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return None
    except OSError:
        return ""
    # Field 22, counted after the command name, which may hold spaces and parentheses.
    return stat[stat.rindex(b")") + 2 :].split()[19].decode()


def _machine() -> str:
    return f"{socket.gethostname()} {_boot_id()}"


class Owner:
    """This process, as the owner of the replies it produces."""

    def __init__(self):
        self.id = uuid.uuid4().hex
        self.machine = _machine()
        self.pid = os.getpid()
        self.pid_started = _started(self.pid) or ""

    def register(self, conn: sqlite3.Connection, lease_seconds: float) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO owners (id, machine, pid, pid_started, lease_until) "
            "VALUES (?, ?, ?, ?, ?)",
            (self.id, self.machine, self.pid, self.pid_started, time.time() + lease_seconds),
        )

    def renew(self, conn: sqlite3.Connection, lease_seconds: float) -> bool:
        """Extend the lease; False if it had expired already (it is then lost for good:
        others may have ended this owner's replies, and may do so any time)."""
        now = time.time()
        return (
            conn.execute(
                "UPDATE owners SET lease_until = ? WHERE id = ? AND lease_until >= ?",
                (now + lease_seconds, self.id, now),
            ).rowcount
            == 1
        )

    def release(self, conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM owners WHERE id = ?", (self.id,))


def _gone(machine: str, pid: int, pid_started: str, here: str) -> bool:
    """Whether an owner whose lease has not expired is known to be dead anyway."""
    if machine != here or not machine.split(" ", 1)[-1]:
        return False  # another machine (or no boot id to compare): only the lease tells
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, someone else's
    started = _started(pid)
    return started is not None and started != "" and pid_started != "" and started != pid_started


def recover(conn: sqlite3.Connection) -> int:
    """End as interrupted every streaming reply whose owner is gone; returns how many.

    Runs inside the caller's write transaction. A reply keeps the text its chunks hold and
    gets an empty final frame: every reply ends in exactly one. Its text is then searchable.
    Its tool calls that had not finished end failed, in that frame (``toolcalls``).
    """
    now, here = time.time(), _machine()
    alive: set = set()
    for owner_id, machine, pid, pid_started, lease_until in conn.execute(
        "SELECT id, machine, pid, pid_started, lease_until FROM owners"
    ).fetchall():
        if lease_until < now or _gone(machine, pid, pid_started, here):
            conn.execute("DELETE FROM owners WHERE id = ?", (owner_id,))
        else:
            alive.add(owner_id)
    ended = 0
    for message_id, owner, last_seq, calls in conn.execute(
        "SELECT id, owner, last_seq, tool_calls FROM messages WHERE status = ?", (STREAMING,)
    ).fetchall():
        if owner in alive:
            continue
        changed, merged = toolcalls.end_unfinished(toolcalls.loads(calls), now)
        conn.execute(
            "INSERT INTO chunks (message_id, seq, chunk, tool_calls) VALUES (?, ?, '', ?)",
            (message_id, last_seq + 1, toolcalls.dumps(changed)),
        )
        conn.execute(
            "UPDATE messages SET status = ?, last_seq = ?, owner = NULL, updated_at = ?, "
            "tool_calls = coalesce(?, tool_calls) WHERE id = ?",
            (
                INTERRUPTED,
                last_seq + 1,
                now,
                toolcalls.dumps(merged if changed else None),
                message_id,
            ),
        )
        appends.touch_conversation(conn, message_id, now)
        search.add_reply(conn, message_id)
        ended += 1
    return ended
