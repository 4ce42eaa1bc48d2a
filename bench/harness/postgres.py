"""A throwaway Postgres cluster for the benches, set up for honest figures, and what it costs.

The cluster is the tests' own (tests/pgcluster.py: ``initdb`` in a temp dir, run as the OS
user ``postgres`` through ``runuser`` when root, listening on 127.0.0.1 and a unix socket in
that dir), never the machine's service on 5432. Where the tests turn durability off for speed,
a bench keeps it on: ``fsync``, ``full_page_writes`` and ``synchronous_commit`` as Postgres
ships them, so a commit waits for its WAL to reach the disk, as in production. Its CPU is the
postmaster's and every backend's (a backend that ended counts through the postmaster's
children's times), its WAL the distance the insert position moved.
"""

from __future__ import annotations

import os
import time

# harness.servers puts tests/ on the path (the tests' launcher); pgcluster lives there too.
import harness.servers  # noqa: F401
import pgcluster
from harness.processes import process_write_bytes

# The tests' settings, but durable. max_connections stays high: every server keeps a pool.
SETTINGS = {
    **pgcluster.SETTINGS,
    "fsync": "on",
    "full_page_writes": "on",
    "synchronous_commit": "on",
    "shared_buffers": "128MB",
    # No checkpoint in the middle of a run (neither forced by WAL volume nor timed), so the
    # data pages a checkpoint writes land in no run at random; a run's share of them is the
    # database's growth, shown apart.
    "max_wal_size": "4GB",
    "checkpoint_timeout": "1h",
}


def postgres_missing() -> str | None:
    """Why no cluster can be made here, or None."""
    if pgcluster.find_bin() is None:
        return f"no Postgres server binaries (initdb, pg_ctl): {pgcluster.INSTALL}"
    return None


class BenchCluster(pgcluster.PgCluster):
    """``PgCluster`` with durable settings; ``start()``, ``create_database()``, ``cleanup()``."""

    def __init__(self):
        missing = postgres_missing()
        if missing:
            raise RuntimeError(missing)
        try:
            super().__init__()
        except BaseException as e:  # pytest's skip or fail, which no bench catches
            if type(e).__module__.startswith("_pytest"):
                raise RuntimeError(str(e)) from None
            raise

    def _write_settings(self) -> None:
        lines = [f"{name} = {value}" for name, value in SETTINGS.items()]
        lines += [f"port = {self.port}", f"unix_socket_directories = '{self.dir}'"]
        path = self.data / "streamchat.conf"
        path.write_text("\n".join(lines) + "\n")
        if self.as_root:
            os.chown(path, self._pg_user.pw_uid, self._pg_user.pw_gid)

    def version(self) -> str:
        return self.psql("SHOW server_version;")

    def setting(self, name: str) -> str:
        return self.psql(f"SHOW {name};")

    # -- what it costs ---------------------------------------------------------------------

    def wal_lsn(self) -> str:
        """The WAL insert position now."""
        return self.psql("SELECT pg_current_wal_insert_lsn();")

    def wal_bytes(self, since: str) -> int:
        """WAL bytes written from the position ``since`` to now."""
        return int(
            self.psql(f"SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '{since}')::bigint;")
        )

    def database_bytes(self) -> int:
        """The size of every database's files (tables, indexes, TOAST) now."""
        return int(self.psql("SELECT sum(pg_database_size(oid))::bigint FROM pg_database;"))

    def processes(self) -> list:
        """The postmaster and its children (backends, WAL writer, checkpointer...)."""
        root = self.pid
        if root is None:
            return []
        return [root, *pgcluster._children(root)]

    def cpu(self) -> float:
        """CPU seconds of the cluster so far: the live processes' own, plus what its ended
        backends used (the postmaster's children's times, counted once they are reaped)."""
        total, tick = 0.0, os.sysconf("SC_CLK_TCK")
        root = self.pid
        for pid in self.processes():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile: counted in the postmaster's children's times
            own = int(fields[11]) + int(fields[12])
            if pid == root:
                own += int(fields[13]) + int(fields[14])
            total += own / tick
        return total

    def write_bytes(self) -> int:
        """Bytes the cluster's live processes sent towards storage so far (/proc/<pid>/io)."""
        return sum(process_write_bytes(pid) for pid in self.processes())


def sleep_until_quiet(cluster: BenchCluster, limit: float = 10.0) -> None:
    """Wait (at most ``limit`` seconds) until the cluster's WAL stops moving for 0.3 s: the
    writes a run left behind are counted in that run."""
    deadline = time.monotonic() + limit
    last = cluster.wal_lsn()
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = cluster.wal_lsn()
        if now == last:
            return
        last = now
