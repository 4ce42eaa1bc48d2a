"""Child processes that are always stopped however a bench ends, and what /proc says of a
process (Linux)."""

from __future__ import annotations

import asyncio
import math
import os
import sys
from pathlib import Path

STARTUP_TIMEOUT = 90.0  # seconds for a child to come up; a hang guard, never a claim
STOP_TIMEOUT = 20.0  # seconds for a child to exit after SIGTERM before it is killed


class Child:
    """A subprocess whose output goes to a log file."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log_path: Path):
        self.name, self.proc, self.log_path = name, proc, log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self) -> None:
        if self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()


class Children(list):
    """The children of a run: ``async with Children() as children``, then append each one
    started. All are stopped at the end; if the run fails, their logs' last lines are printed
    first."""

    async def __aenter__(self) -> "Children":
        return self

    async def __aexit__(self, kind, error, traceback) -> None:
        if isinstance(error, Exception):
            for child in self:
                tail = child.log_tail()
                if tail:
                    print(f"--- {child.name} log (last lines) ---\n{tail}", file=sys.stderr)
        for child in self:
            await child.stop()


async def start_announcing(
    name: str, command: list, log_path: Path, timeout: float = STARTUP_TIMEOUT
) -> tuple:
    """Start ``command``, which prints one line on stdout once it is ready (a port, a URL) and
    logs to stderr; -> (child, that line without its end)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            stdin=asyncio.subprocess.DEVNULL,
        )
    child = Child(name, proc, log_path)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"{name} exited:\n{child.log_tail()}")
    except asyncio.TimeoutError:
        await child.stop()
        raise RuntimeError(
            f"{name} did not come up in {timeout:.0f} s:\n{child.log_tail()}"
        ) from None
    except BaseException:
        await child.stop()
        raise
    return child, line.decode().strip()


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far; NaN off Linux."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return math.nan


def memory_status(pid: int) -> dict:
    """VmRSS and VmHWM (the peak RSS) of a process, in bytes."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values


def reset_peak(pid: int) -> bool:
    """Start the process's VmHWM again from its current RSS (write 5 to clear_refs); False
    where the kernel refuses."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def process_write_bytes(pid: int) -> int:
    """Bytes a process (all its threads) has sent towards storage: /proc/<pid>/io write_bytes
    minus cancelled_write_bytes (pages dirtied, then truncated or deleted before write-back);
    0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/io") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return 0
    return int(fields["write_bytes"]) - int(fields["cancelled_write_bytes"])
