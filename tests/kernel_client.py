"""A kernel started through a real Jupyter server's REST API, and code run in it over the
kernel's channels WebSocket (the JSON protocol JupyterLab speaks), for tests and benchmarks.

The kernel is a notebook session's, so it knows its notebook's path (``JPY_SESSION_NAME``) and
finds the server that started it (``JPY_PARENT_PID``) as a kernel behind JupyterLab does.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
import uuid

from faultfs import WireClient
from server_process import JupyterServer

KERNEL_GUARD = 60.0  # seconds for a kernel to start and run a cell; a hang guard only


class Kernel:
    """A kernel of a notebook session started through the server's REST API; code runs in it
    over its channels WebSocket (the JSON protocol JupyterLab speaks)."""

    def __init__(self, server: JupyterServer, path: str):
        self.server = server
        self.path = path
        body = {"path": path, "name": path, "type": "notebook", "kernel": {"name": "python3"}}
        status, _, answer = server.request(
            "POST",
            "api/sessions",
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert status == 201, (status, answer)
        self.id = json.loads(answer)["kernel"]["id"]
        self.session = uuid.uuid4().hex
        self.connect()
        self.pid = int(self.run("import os; print(os.getpid())").strip())

    def connect(self) -> None:
        """(Re)open the channels WebSocket; a thread reads it into ``inbox``."""
        path = self.server.path(f"api/kernels/{self.id}/channels?session_id={self.session}")
        self.ws = WireClient(
            "127.0.0.1", self.server.port, path, self.server.auth_headers(), timeout=None
        )
        self.inbox: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, args=(self.ws, self.inbox), daemon=True).start()

    @staticmethod
    def _read(ws: WireClient, inbox: queue.Queue) -> None:
        try:
            for _ in range(10_000_000):  # bounded; the socket's end stops it
                inbox.put(ws.recv())
        except Exception:  # closed
            return

    def submit(self, code: str) -> str:
        """Send an execute_request; returns its msg_id without waiting."""
        request = execute_request(code, self.session)
        self.ws.send(request)
        return request["header"]["msg_id"]

    def result(self, msg_id: str, guard: float = KERNEL_GUARD) -> dict:
        """{"status", "stdout", "ename", "evalue"} of a submitted request, once it replied."""
        out, reply, idle = [], None, False
        deadline = time.monotonic() + guard
        while reply is None or not idle:
            assert time.monotonic() < deadline, f"no answer to {msg_id} after {guard} s"
            try:
                message = self.inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream" and content["name"] == "stdout":
                out.append(content["text"])
            elif kind == "execute_reply":
                reply = content
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
        return {
            "status": reply["status"],
            "stdout": "".join(out),
            "ename": reply.get("ename"),
            "evalue": reply.get("evalue"),
        }

    def run(self, code: str, guard: float = KERNEL_GUARD) -> str:
        """Run ``code``; its stdout. Fails on an error in the cell."""
        result = self.result(self.submit(code), guard)
        assert result["status"] == "ok", result
        return result["stdout"]

    def state(self) -> str:
        return self.server.get_json(f"api/kernels/{self.id}")["execution_state"]

    def hub_sockets(self) -> int:
        """Established TCP connections from this kernel's process to the server's port."""
        inodes = set()
        for fd in os.listdir(f"/proc/{self.pid}/fd"):
            try:
                target = os.readlink(f"/proc/{self.pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        count = 0
        for table in ("tcp", "tcp6"):
            with open(f"/proc/{self.pid}/net/{table}") as f:
                for row in list(f)[1:]:
                    cols = row.split()
                    remote_port = int(cols[2].rsplit(":", 1)[1], 16)
                    if remote_port == self.server.port and cols[3] == "01" and cols[9] in inodes:
                        count += 1
        return count

    def shutdown(self) -> None:
        self.ws.close()
        self.server.request("DELETE", f"api/kernels/{self.id}", timeout=30)


def execute_request(code: str, session: str, username: str = "test") -> dict:
    """An execute_request message (Jupyter messaging 5.3) for a kernel's channels WebSocket."""
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "username": username,
            "session": session,
            "msg_type": "execute_request",
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "channel": "shell",
        "buffers": [],
        "content": {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
    }
