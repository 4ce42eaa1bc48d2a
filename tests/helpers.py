"""Test clients that speak the wire contract over real sockets."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import uuid

from tornado.websocket import WebSocketClientConnection

HANG_GUARD = 15.0  # seconds; only to turn a hang into a failure, never a performance claim


def streamchat_config(**sections) -> dict:
    """Server config with the extension on; a test module overrides ``jp_server_config``
    with this to set its own traits, e.g. ``streamchat_config(EchoAgent={"delay": 0})``."""
    return {"ServerApp": {"jpserver_extensions": {"jupyter_streamchat": True}}, **sections}


def new_id(prefix: str = "") -> str:
    return prefix + uuid.uuid4().hex[:12]


class ChatClient:
    """A WebSocket client of ``streamchat/ws`` with helpers to read frames."""

    def __init__(self, ws: WebSocketClientConnection):
        self.ws = ws

    async def send(self, type: str, **fields) -> None:
        await self.ws.write_message(json.dumps({"type": type, **fields}))

    async def send_raw(self, data) -> None:
        await self.ws.write_message(data, binary=isinstance(data, bytes))

    async def send_message(
        self,
        text: str,
        agent: str = "echo",
        conversation: str | None = None,
        client_id: str | None = None,
    ) -> None:
        await self.send(
            "SEND_MESSAGE",
            conversationId=conversation or new_id("c-"),
            agentId=agent,
            text=text,
            clientMessageId=client_id or new_id("m-"),
        )

    async def recv(self, timeout: float = HANG_GUARD) -> dict:
        raw = await asyncio.wait_for(self.ws.read_message(), timeout)
        assert raw is not None, "the server closed the WebSocket"
        return json.loads(raw)

    async def expect(self, type: str, timeout: float = HANG_GUARD) -> dict:
        frame = await self.recv(timeout)
        assert frame["type"] == type, frame
        return frame

    async def no_frame(self, seconds: float) -> None:
        try:
            frame = await asyncio.wait_for(self.ws.read_message(), seconds)
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"unexpected frame: {frame}")

    async def chunks_until_complete(self, message_id: str, timeout: float = HANG_GUARD) -> list:
        """MESSAGE_CHUNK frames of one reply up to its final frame; other frames are skipped."""
        frames = []

        async def read():
            while True:
                frame = await self.recv(timeout)
                if frame["type"] == "MESSAGE_CHUNK" and frame["messageId"] == message_id:
                    frames.append(frame)
                    if frame["isComplete"]:
                        return frames

        return await asyncio.wait_for(read(), timeout)

    def close(self) -> None:
        self.ws.close()


def assert_contiguous(frames: list, first_seq: int = 1) -> None:
    seqs = [f["seq"] for f in frames]
    assert seqs == list(range(first_seq, first_seq + len(frames))), seqs
    assert [f["isComplete"] for f in frames].count(True) <= 1
    assert all(not f["isComplete"] for f in frames[:-1])


def text_of(frames: list) -> str:
    return "".join(f["chunk"] for f in frames)


class RawWebSocket:
    """A bare RFC 6455 client on a plain socket: it reads only when told to, so the server
    sees a client whose network is stuck (its receive window fills and stays full)."""

    def __init__(self, host: str, port: int, path: str, headers: dict, rcvbuf: int = 4096):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect((host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            data = self.sock.recv(4096)
            assert data, "server closed during the handshake"
            self.buffer += data
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def send(self, frame: dict) -> None:
        payload = json.dumps(frame).encode()
        mask = os.urandom(4)
        header = bytes([0x81])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            data = self.sock.recv(1 << 20)
            assert data, "server closed the connection"
            self.buffer += data
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def recv(self) -> dict:
        """One text frame (blocking; call with a socket timeout set)."""
        while True:
            b0, b1 = self._read_exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read_exact(8))[0]
            payload = self._read_exact(n)
            if b0 & 0x0F == 0x1:
                return json.loads(payload)
            # pings and other control frames are skipped

    def close(self) -> None:
        self.sock.close()
