"""A throwaway Postgres cluster of the tests' own: made with ``initdb`` in a temp dir, listening
on 127.0.0.1 and a unix socket in that dir, stopped, restarted or killed at will.

The tests that restart or kill Postgres cannot use a shared service, so every pytest session
starts one of these (fixture ``pg_cluster``) and gives each test a fresh database of it
(``pg_url``). The server binaries come from Debian's ``postgresql`` package (or whatever
``pg_config --bindir`` names). Postgres refuses to run as root, so as root the cluster belongs to
the ``postgres`` OS user and ``initdb``/``pg_ctl`` run through ``runuser``.

The store connects as the role ``streamchat`` with a password (random per cluster) over TCP, as
a real deployment would; the tests' own administration (creating databases, terminating
backends) runs as the superuser over the unix socket, which needs no password.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from typing import Optional

import pytest

INSTALL = "apt-get install postgresql"
SUPERUSER = "postgres"
ROLE = "streamchat"
# Every database a test gets is a copy of this one, which already holds pg_trgm (the store's
# search index needs it, and only a superuser may create it).
TEMPLATE = "streamchat_template"
TIMEOUT = 60  # seconds: a hang guard for initdb, pg_ctl and psql, never a performance claim

# Settings for speed and for the tests that open many connections. No fsync: nothing here
# must survive a machine crash; but commits are still written to the OS at once
# (synchronous_commit stays on), so what was committed survives a kill of the server.
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
    "password_encryption": "'scram-sha-256'",
    "log_min_messages": "warning",
    "log_connections": "off",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


def find_bin() -> Optional[str]:
    """The directory of the Postgres server binaries (``initdb``, ``pg_ctl``, ``postgres``):
    the newest /usr/lib/postgresql/<version>/bin, else ``pg_config --bindir``; None if there
    are none."""

    def version(path: str) -> tuple:
        name = Path(path).parent.parent.name
        return tuple(int(p) for p in re.findall(r"\d+", name)) or (0,)

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True)
    if found:
        return str(Path(found[0]).parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            bindir = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=TIMEOUT
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            bindir = ""
        if bindir and os.access(os.path.join(bindir, "initdb"), os.X_OK):
            return bindir
    return None


def require_bin() -> str:
    """``find_bin()``, or the test fails (CI) or skips saying what to install."""
    bindir = find_bin()
    if bindir is None:
        message = (
            "the Postgres tests need the Postgres server binaries (initdb, pg_ctl), not found "
            f"in /usr/lib/postgresql/*/bin or by pg_config: install them ({INSTALL}, as root)"
        )
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return bindir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not: nobody may reap the postmaster's children
    here, as PID 1 in a container often does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2 :].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _children(pid: int) -> list:
    """The processes whose parent is ``pid`` (Linux; none found elsewhere)."""
    found = []
    for entry in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(entry, "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat[stat.rindex(b")") + 2 :].split()[1]) == pid:
            found.append(int(entry.split("/")[2]))
    return found


class PgCluster:
    """One Postgres cluster in a temp dir. ``start()`` makes it (the first time) and starts it;
    ``url(db)`` is how the store connects; ``cleanup()`` stops it and removes everything."""

    def __init__(self, bindir: Optional[str] = None):
        self.bindir = bindir or require_bin()
        self.password = secrets.token_urlsafe(18)
        self.port = 0
        self.as_root = hasattr(os, "geteuid") and os.geteuid() == 0
        if self.as_root:
            try:
                self._pg_user = pwd.getpwnam(SUPERUSER)
            except KeyError:
                message = (
                    "the Postgres tests run as root need the OS user 'postgres' to own their "
                    f"cluster (Debian's postgresql package makes it: {INSTALL})"
                )
                if in_ci():
                    pytest.fail(message, pytrace=False)
                pytest.skip(message)
        # /tmp rather than $TMPDIR: as root the postgres user must be able to reach the dir.
        base = "/tmp" if self.as_root and os.path.isdir("/tmp") else None
        self.dir = Path(tempfile.mkdtemp(prefix="streamchat-pg-", dir=base))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self._made = False
        self._orphan_shmid: Optional[int] = None
        self._databases = 0
        self._version = 0  # server_version_num
        # The next database a test will get, being made while the current test runs: a CREATE
        # DATABASE takes a few hundred milliseconds on a busy machine. (name, psql process)
        self._spare: Optional[tuple] = None
        # A session that dies without its finaliser (an interrupt at a bad moment) must not
        # leave a postmaster behind.
        self._finalizer = weakref.finalize(self, _emergency_stop, str(self.dir))
        if self.as_root:
            os.chown(self.dir, self._pg_user.pw_uid, self._pg_user.pw_gid)

    # -- running the binaries ---------------------------------------------------------------

    def _env(self) -> dict:
        # A developer's PG* settings (PGHOST, PGPASSWORD...) must not reach the tools.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_MESSAGES"] = "C"
        return env

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a server tool (initdb, pg_ctl) as the cluster's owner."""
        command = [os.path.join(self.bindir, tool), *args]
        if self.as_root:
            command = ["runuser", "-u", SUPERUSER, "--", *command]
        result = subprocess.run(
            command,
            cwd=self.dir,
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}): {self._why(result)}")
        return result

    def _why(self, result: subprocess.CompletedProcess) -> str:
        text = (result.stderr or "") + (result.stdout or "")
        try:
            text += "\n" + self.log.read_text(errors="replace")[-2000:]
        except OSError:
            pass
        return text.replace(self.password, "<password>").strip()

    def _psql_command(self, dbname: str) -> list:
        return [
            os.path.join(self.bindir, "psql"),
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(self.dir),
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            dbname,
        ]

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run ``sql`` as the superuser over the unix socket; its output, unaligned and
        without headers (``-At``). The SQL goes through stdin, never the command line."""
        result = subprocess.run(
            self._psql_command(dbname),
            input=sql,
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        if result.returncode != 0:
            stderr = result.stderr.replace(self.password, "<password>").strip()
            raise RuntimeError(f"psql failed ({result.returncode}): {stderr}")
        return result.stdout.strip()

    # -- lifecycle --------------------------------------------------------------------------

    def _initdb(self) -> None:
        # C.UTF-8 where there is one: lower() then folds letters beyond ASCII (search ignores
        # case), and sorting stays byte order, as in the C locale.
        try:
            locales = subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout
        except OSError:
            locales = ""
        locale = "C.UTF-8" if re.search(r"(?im)^c\.utf-?8$", locales) else "C"
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            f"--locale={locale}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
            "--no-instructions",
        )
        # Only the superuser over the socket goes without a password; everyone else comes over
        # TCP on loopback with SCRAM.
        (self.data / "pg_hba.conf").write_text(
            f"local all {SUPERUSER} trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        )
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\ninclude 'streamchat.conf'\n")

    def _write_settings(self) -> None:
        lines = [f"{name} = {value}" for name, value in SETTINGS.items()]
        lines += [f"port = {self.port}", f"unix_socket_directories = '{self.dir}'"]
        path = self.data / "streamchat.conf"
        path.write_text("\n".join(lines) + "\n")
        if self.as_root:
            os.chown(path, self._pg_user.pw_uid, self._pg_user.pw_gid)

    def _pg_ctl_start(self) -> subprocess.CompletedProcess:
        return self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start",
            check=False,
        )  # fmt: skip

    def start(self) -> None:
        """Start the cluster (made on the first call, on a free port it keeps from then on)."""
        if self.running:
            return
        first = not self._made
        if first:
            self._initdb()
            self._made = True
        for attempt in range(5):  # bounded: another process may take the port we picked
            if first:
                self.port = _free_port()
            self._write_settings()
            result = self._pg_ctl_start()
            if result.returncode == 0:
                break
            why = self._why(result)
            if not first and "shared memory block is still in use" not in why:
                raise RuntimeError(f"pg_ctl start failed: {why}")
            if first and "already in use" not in why:
                raise RuntimeError(f"pg_ctl start failed: {why}")
            time.sleep(0.2)
        else:
            raise RuntimeError(f"pg_ctl start failed 5 times: {self._why(result)}")
        self._orphan_shmid = None
        if first:
            self._setup()

    def _setup(self) -> None:
        # The password goes through psql's stdin only; SCRAM stores a verifier, not it.
        self.psql(
            f"CREATE ROLE {ROLE} LOGIN PASSWORD '{self.password}';\nCREATE DATABASE {TEMPLATE};\n"
        )
        self.psql("CREATE EXTENSION IF NOT EXISTS pg_trgm;", TEMPLATE)
        self._version = int(self.psql("SHOW server_version_num;"))

    @property
    def pid(self) -> Optional[int]:
        """The postmaster's pid, if one runs."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast`` (sessions are ended, the server checkpoints) or
        ``immediate`` (everything ends at once; the next start recovers from the log)."""
        if mode not in ("fast", "immediate", "smart"):
            raise ValueError(f"unknown stop mode {mode!r}")
        if not self.running:
            return
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-m", mode, "stop")

    def restart(self, mode: str = "fast") -> None:
        """Stop, then start again on the same port."""
        self.stop(mode)
        self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would; its backends, which notice the
        postmaster's death on their own, are killed too if they have not exited within a few
        seconds, so that the next ``start()`` (which recovers) finds its shared memory free."""
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The shared memory segment, left for the next start to remove (or cleanup()).
            self._orphan_shmid = int(
                (self.data / "postmaster.pid").read_text().split("\n")[6].split()[1]
            )
        children = _children(pid)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        for _ in range(500):  # bounded by the deadline too
            if not any(_alive(p) for p in [pid, *children]) or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        for child in children:
            if _alive(child):
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for _ in range(500):  # hang guard: 5 s
            if not any(_alive(p) for p in [pid, *children]):
                break
            time.sleep(0.01)
        else:
            raise RuntimeError(f"the killed postmaster {pid} or its backends still run")
        # Until PID 1 reaps it (at once under a real init, seconds later in some containers)
        # the dead postmaster is a zombie, which Postgres takes for a live one holding its
        # lock files: the next start would refuse. It is dead, so they can go.
        if os.path.exists(f"/proc/{pid}"):
            for lock in (self.data / "postmaster.pid", self.dir / f".s.PGSQL.{self.port}.lock"):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()

    def cleanup(self) -> None:
        """Stop the cluster (at once) and remove its directory."""
        try:
            self._take_spare()
            if self.running:
                self.stop("immediate")
            elif self._orphan_shmid is not None:  # killed, never started again
                subprocess.run(["ipcrm", "-m", str(self._orphan_shmid)], capture_output=True)
        finally:
            self._finalizer.detach()
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- databases and sessions -------------------------------------------------------------

    def url(self, dbname: str) -> str:
        return f"postgresql://{ROLE}:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def _create_sql(self, name: str) -> str:
        # FILE_COPY (Postgres 15+; the only way before) copies the template's files, which
        # for a template this small beats writing them all to the WAL.
        strategy = " STRATEGY FILE_COPY" if self._version >= 150000 else ""
        return f"CREATE DATABASE {name} TEMPLATE {TEMPLATE} OWNER {ROLE}{strategy};"

    def _new_name(self) -> str:
        self._databases += 1
        return f"t{self._databases}_{secrets.token_hex(4)}"

    def _make_spare(self) -> None:
        name = self._new_name()
        process = subprocess.Popen(
            self._psql_command("postgres"),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self._env(),
            text=True,
        )
        process.stdin.write(self._create_sql(name))
        process.stdin.close()
        self._spare = (name, process)

    def _take_spare(self) -> Optional[str]:
        """The spare database's name if it was made (the cluster may have been stopped or
        killed meanwhile), else None."""
        if self._spare is None:
            return None
        (name, process), self._spare = self._spare, None
        try:
            made = process.wait(TIMEOUT) == 0
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            made = False
        return name if made and self.running else None

    def create_database(self, name: Optional[str] = None) -> str:
        """A fresh database owned by ``streamchat``, pg_trgm installed in it; its URL."""
        if name is None:
            name = self._take_spare()
            if name is None:
                name = self._new_name()
                self.psql(self._create_sql(name))
            self._make_spare()
            return self.url(name)
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"not a plain database name: {name!r}")
        self.psql(self._create_sql(name))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending the sessions still connected to it."""
        self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);")

    def terminate(self, condition: str = f"usename = '{ROLE}'") -> int:
        """End the sessions of ``pg_stat_activity`` that match ``condition`` (SQL) as if
        an administrator did (``pg_terminate_backend``); how many."""
        return int(
            self.psql(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                f"WHERE pid <> pg_backend_pid() AND ({condition});"
            )
        )


def _emergency_stop(directory: str) -> None:
    try:
        pid = int((Path(directory) / "data" / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, signal.SIGQUIT)  # the postmaster's immediate shutdown
        for _ in range(500):  # hang guard: 5 s
            if not _alive(pid):
                break
            time.sleep(0.01)
    except (OSError, ValueError):
        pass
    shutil.rmtree(directory, ignore_errors=True)
