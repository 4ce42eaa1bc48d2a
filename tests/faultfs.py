"""Tools for fault tests: a small tmpfs to fill up, faults done to a database file under a
running server, and a blocking WebSocket client that can send any bytes and see how the
server closes the connection.

Everything here acts from outside the server, through the file system and real sockets, so
the tests that use it do not depend on how the server is built inside.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import sqlite3
import struct
import subprocess
from pathlib import Path
from typing import Iterator, Optional

import pytest

from helpers import RawWebSocket

# WebSocket opcodes (RFC 6455, section 5.2)
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


# -- root and mounts --------------------------------------------------------------------------


def need_root(what: str) -> None:
    """Skip (with the reason) when not root; under CI=true a missing root is a failure, as CI
    runs these tests as root and a silent skip would hide that they never ran."""
    if os.geteuid() == 0:
        return
    message = f"{what} needs root (mount a tmpfs, or make root-owned files read-only)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must run these tests as root")
    pytest.skip(message)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (mount syntax, e.g. ``4m``) mounted at ``path`` for the block."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    try:
        yield path
    finally:
        # Lazy: a server still holding a file open must not make the teardown fail.
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill_disk(directory: Path, name: str = "filler") -> Path:
    """Write zeros into ``directory/name`` until the file system is full; return the file."""
    filler = directory / name
    block = b"\0" * 65536
    with open(filler, "wb", buffering=0) as f:
        for _ in range(1 << 16):  # bounded: 4 GiB at most, far more than any test tmpfs
            try:
                f.write(block)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                break
        # Fill the last partial block too, byte runs of decreasing size.
        size = 4096
        while size:
            try:
                f.write(b"\0" * size)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                size //= 2
    return filler


# -- faults on a SQLite file under a running server ----------------------------------------------

SIDE_FILES = ("", "-wal", "-shm")


class DatabaseFault:
    """Deletes, replaces or write-protects a SQLite database (its journal files included) under
    a running server, and puts it back exactly as it was: the very same inodes, so whatever the
    server wrote through its open handles meanwhile is in the restored file too."""

    def __init__(self, db: Path, kind: str):
        assert kind in ("deleted", "replaced", "read_only"), kind
        self.db = db
        self.kind = kind
        self.kept = db.parent / f".kept-{db.name}"
        self.kept.mkdir(exist_ok=True)

    def _names(self) -> list:
        return [Path(f"{self.db}{suffix}") for suffix in SIDE_FILES]

    def apply(self) -> None:
        if self.kind == "read_only":
            for path in self._names():
                if path.exists():
                    os.chmod(path, 0o444)
            return
        for path in self._names():
            if path.exists():
                os.link(path, self.kept / path.name)
        if self.kind == "deleted":
            for path in self._names():
                if path.exists():
                    os.unlink(path)
        else:  # another, valid SQLite file takes the main file's name
            other = self.db.parent / "other.db"
            with contextlib.closing(sqlite3.connect(other)) as conn:
                conn.execute("CREATE TABLE unrelated (x)")
                conn.commit()
            os.replace(other, self.db)

    def restore(self) -> None:
        if self.kind == "read_only":
            for path in self._names():
                if path.exists():
                    os.chmod(path, 0o644)
            return
        for path in self._names():
            kept = self.kept / path.name
            if kept.exists():
                os.replace(kept, path)
            elif path.exists():  # made after the fault by someone; not part of the original
                os.unlink(path)
        shutil.rmtree(self.kept, ignore_errors=True)


# -- a blocking WebSocket client --------------------------------------------------------------


def _mask(payload: bytes, key: bytes) -> bytes:
    """RFC 6455 client masking, in one big-integer XOR (a byte loop is slow for MiB frames)."""
    n = len(payload)
    if not n:
        return b""
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


class Closed(Exception):
    """The server closed the connection; ``code`` is from its close frame, or None when the
    connection just ended (EOF or reset) without one."""

    def __init__(self, code: Optional[int], reason: str = ""):
        super().__init__(f"closed by the server: code {code} {reason!r}")
        self.code = code
        self.reason = reason


class WireClient(RawWebSocket):
    """A WebSocket client on a plain blocking socket that sends exactly the bytes it is given
    (invalid JSON, lone surrogate escapes, binary frames) and reads only when asked.

    ``bytes_read`` counts every payload byte received: for a client that stopped reading, it
    bounds what the server had queued for it.
    """

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        headers: dict,
        rcvbuf: int = 1 << 20,
        timeout: float = 15.0,
    ):
        super().__init__(host, port, path, headers, rcvbuf=rcvbuf)
        # Small frames go out at once (Nagle would hold a frame sent right after another).
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.bytes_read = 0

    @classmethod
    def to(cls, server, **kwargs) -> "WireClient":
        """Connect to a :class:`server_process.JupyterServer`."""
        return cls(
            "127.0.0.1", server.port, server.path("streamchat/ws"), server.auth_headers(), **kwargs
        )

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        key = os.urandom(4)
        n = len(payload)
        header = bytes([0x80 | opcode])
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        self.sock.sendall(header + key + _mask(payload, key))

    def send_text(self, text: str) -> None:
        """One text frame; ``text`` must be encodable as UTF-8 (send escapes, not surrogates)."""
        self._send_frame(OP_TEXT, text.encode("utf-8"))

    def send(self, frame: dict) -> None:
        self.send_text(json.dumps(frame))

    def send_binary(self, data: bytes) -> None:
        self._send_frame(OP_BINARY, data)

    def _read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            try:
                data = self.sock.recv(1 << 20)
            except ConnectionResetError:
                data = b""
            if not data:
                raise Closed(None, "connection ended without a close frame")
            self.buffer += data
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def recv(self) -> dict:
        """The next text frame as JSON; raises :class:`Closed` when the server closes."""
        while True:
            b0, b1 = self._read_exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read_exact(8))[0]
            payload = self._read_exact(n)
            self.bytes_read += n
            opcode = b0 & 0x0F
            if opcode == OP_TEXT:
                return json.loads(payload)
            if opcode == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                raise Closed(code, payload[2:].decode("utf-8", "replace"))
            if opcode == OP_PING:  # the server drops clients that do not answer its pings
                self._send_frame(OP_PONG, payload)

    def abort(self) -> None:
        """Vanish as a dropped network does: a TCP reset, no close frame."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()
