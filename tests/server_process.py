"""A real ``jupyter server`` subprocess with isolated Jupyter state, and clients for it.

Used by test_server_process.py. Every Jupyter and XDG directory points into a temp dir, so
neither the developer's config nor their data is read or written; STREAMCHAT_STORE_URL is
removed from the environment unless a test sets it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Optional

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from helpers import ChatClient

# Server extensions that are not ours, switched off in the isolated user config (which ranks
# above the environment's) so that servers start faster; jupyter_streamchat stays enabled by
# its own shipped config. Names of extensions that are not installed are ignored.
OTHER_EXTENSIONS = (
    "jupyterlab",
    "notebook",
    "notebook_shim",
    "nbclassic",
    "jupyter_lsp",
    "jupyter_server_terminals",
    "jupyter_server_ydoc",
    "jupyter_collaboration",
)

READY_GUARD = 30.0  # seconds for a server to answer /api/status; a hang guard only
EXIT_GUARD = 20.0  # seconds for a server to exit after a stop request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def isolated_env(base: Path, **overrides: Optional[str]) -> dict:
    """The environment of a server (or of ``jupyter ...`` commands) whose state lives in ``base``.

    ``overrides`` set variables; a value of None removes one.
    """
    env = dict(os.environ)
    for name in (
        "STREAMCHAT_STORE_URL",
        "JUPYTER_TOKEN",
        "JUPYTER_PASSWORD",
        "JUPYTER_CONFIG_PATH",
        "JUPYTER_PATH",
        "JUPYTER_PREFER_ENV_PATH",
    ):
        env.pop(name, None)
    dirs = {
        "JUPYTER_CONFIG_DIR": "config",
        "JUPYTER_DATA_DIR": "data",
        "JUPYTER_RUNTIME_DIR": "runtime",
        "IPYTHONDIR": "ipython",
        "XDG_CONFIG_HOME": "xdg/config",
        "XDG_DATA_HOME": "xdg/data",
        "XDG_CACHE_HOME": "xdg/cache",
        "XDG_STATE_HOME": "xdg/state",
        "XDG_RUNTIME_DIR": "xdg/runtime",
    }
    for name, sub in dirs.items():
        path = base / sub
        path.mkdir(parents=True, exist_ok=True)
        env[name] = str(path)
    os.chmod(base / "xdg/runtime", 0o700)
    env["PYTHONUNBUFFERED"] = "1"
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


class JupyterServer:
    """``jupyter server`` on 127.0.0.1 and a free port; its log goes to a file."""

    def __init__(
        self,
        base: Path,
        *args: str,
        env: Optional[dict] = None,
        base_url: str = "/",
        name: str = "server",
        other_extensions: bool = False,
    ):
        self.base = Path(base)
        self.root = self.base / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = env if env is not None else isolated_env(self.base)
        self.data_dir = Path(self.env["JUPYTER_DATA_DIR"])
        if not other_extensions:
            config = Path(self.env["JUPYTER_CONFIG_DIR"]) / "jupyter_server_config.json"
            config.write_text(
                json.dumps(
                    {"ServerApp": {"jpserver_extensions": dict.fromkeys(OTHER_EXTENSIONS, False)}}
                )
            )
        self.token = uuid.uuid4().hex
        self.port = free_port()
        self.base_url = base_url
        self.log_path = self.base / f"{name}-{self.port}.log"
        self.args = [
            "jupyter",
            "server",
            "--allow-root",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            *([f"--ServerApp.base_url={base_url}"] if base_url != "/" else []),
            *args,
        ]
        self.proc: Optional[subprocess.Popen] = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> "JupyterServer":
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.args,
                env=self.env,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait_ready(self, guard: float = READY_GUARD) -> "JupyterServer":
        deadline = time.monotonic() + guard
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"jupyter server exited with {self.proc.returncode}:\n{self.log()}"
                )
            try:
                status, _, _ = self.request("GET", "api/status")
                if status == 200:
                    assert "jupyter_streamchat | extension was successfully loaded" in self.log()
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"jupyter server not ready after {guard} s:\n{self.log()}")
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def wait_exit(self, guard: float = EXIT_GUARD) -> int:
        try:
            return self.proc.wait(guard)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"jupyter server did not exit in {guard} s:\n{self.log()}")

    def stop(self) -> None:
        """Teardown: SIGTERM, then SIGKILL if it lingers. Safe to call more than once."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> "JupyterServer":
        try:
            return self.start().wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- clients ---------------------------------------------------------------------------

    def path(self, path: str) -> str:
        return self.base_url.rstrip("/") + "/" + path.lstrip("/")

    def http_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{self.path(path)}"

    def ws_url(self, path: str = "streamchat/ws") -> str:
        return f"ws://127.0.0.1:{self.port}{self.path(path)}"

    def auth_headers(self) -> dict:
        return {"Authorization": f"token {self.token}"}

    def request(
        self,
        method: str,
        path: str,
        token: bool = True,
        body: Optional[bytes] = None,
        headers: Optional[dict] = None,
        timeout: float = 10.0,
        prefixed: bool = True,
    ) -> tuple:
        """One HTTP request, redirects not followed -> (status, headers, body bytes); the
        headers are an ``http.client.HTTPMessage`` (case-insensitive, ``get_all``).

        ``path`` is under the server's base_url unless ``prefixed`` is false."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            all_headers = dict(self.auth_headers() if token else {})
            all_headers.update(headers or {})
            target = self.path(path) if prefixed else "/" + path.lstrip("/")
            conn.request(method, target, body=body, headers=all_headers)
            response = conn.getresponse()
            return response.status, response.msg, response.read()
        finally:
            conn.close()

    def get_json(self, path: str):
        status, _, body = self.request("GET", path)
        assert status == 200, (status, body)
        return json.loads(body)

    async def chat(
        self, token: bool = True, headers: Optional[dict] = None, path: str = "streamchat/ws"
    ) -> ChatClient:
        """An (authenticated unless token=False) WebSocket to streamchat/ws."""
        all_headers = dict(self.auth_headers() if token else {})
        all_headers.update(headers or {})
        request = HTTPRequest(
            self.ws_url(path), headers=all_headers, connect_timeout=10, request_timeout=10
        )
        ws = await asyncio.wait_for(websocket_connect(request), 15)
        return ChatClient(ws)
