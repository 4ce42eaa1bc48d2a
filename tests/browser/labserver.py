"""A real ``jupyter lab`` subprocess for browser tests, with its Jupyter state kept apart.

Every Jupyter, JupyterLab and XDG directory points into the server's temp dir, so neither the
developer's config, settings and workspaces nor their data are read or written. The extension
stays enabled all the same: its config JSON and anywidget's labextension live under
``sys.prefix``, which stays on Jupyter's search paths.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Optional, Sequence

import nbformat

from server_process import free_port, isolated_env

READY_GUARD = 60.0  # seconds for JupyterLab to answer /api/status; a hang guard only
STOP_GUARD = 15.0  # seconds for a clean exit after SIGTERM before we kill it
LOG_TAIL = 60  # lines of the server log quoted in failure messages

# User settings written into the isolated settings dir: no toast asking whether to fetch
# Jupyter news (it would cover part of the page, and there is no network to fetch from).
USER_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
}


# The flags that differ between the two front ends this class can run.
APP_FLAGS = {
    "lab": [
        # window.jupyterapp, through which the tests run JupyterLab commands.
        "--LabApp.expose_app_in_browser=True",
        # Nothing may try to reach the internet: there is only loopback here.
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ],
    # Notebook 7 has neither a news feed nor an update check of its own to turn off.
    "notebook": ["--JupyterNotebookApp.expose_app_in_browser=True"],
}


class LabServer:
    """``jupyter lab`` on 127.0.0.1, started by :meth:`start` (or ``with LabServer(...)``).

    ``args`` are extra command-line arguments, e.g. ``["--EchoAgent.delay=0.05"]``; ``env``
    sets environment variables of the server on top of the isolated ones (None removes one).
    ``base_dir`` holds the root dir, the Jupyter state and the log; without one a temp dir is
    made and removed again by :meth:`stop`. ``app="notebook"`` runs Jupyter Notebook 7
    (``jupyter notebook``) instead of JupyterLab, with the same extensions and isolation.
    ``disabled_plugins`` names front-end plugins the page leaves out (e.g.
    ``"jupyter-streamchat:sidebar"``).
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        base_dir: Optional[Path] = None,
        port: Optional[int] = None,
        base_url: str = "/",
        env: Optional[dict] = None,
        token: Optional[str] = None,
        app: str = "lab",
        disabled_plugins: Sequence[str] = (),
    ):
        if app not in APP_FLAGS:
            raise ValueError(f"app must be one of {sorted(APP_FLAGS)}, not {app!r}")
        self.app = app
        self._own_base = base_dir is None
        self.base = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="lab-"))
        self.root = self.base / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.base_url = "/" + base_url.strip("/") + "/" if base_url.strip("/") else "/"
        self.token = token or uuid.uuid4().hex  # a restart may keep the token, or not
        self.log_path = self.base / f"lab-{self.port}.log"
        self.env = isolated_env(
            self.base,
            JUPYTERLAB_SETTINGS_DIR=str(self.base / "lab/settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(self.base / "lab/workspaces"),
            **(env or {}),
        )
        self.args = [
            sys.executable,
            "-m",
            "jupyter",
            app,
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            *APP_FLAGS[app],
            *([f"--ServerApp.base_url={self.base_url}"] if self.base_url != "/" else []),
            *(["--allow-root"] if os.geteuid() == 0 else []),
            *args,
        ]
        self.disabled_plugins = list(disabled_plugins)
        self.proc: Optional[subprocess.Popen] = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> "LabServer":
        for name, settings in USER_SETTINGS.items():
            path = Path(self.env["JUPYTERLAB_SETTINGS_DIR"]) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(settings))
        if self.disabled_plugins:  # JupyterLab's page config: plugins it does not activate
            page_config = Path(self.env["JUPYTER_CONFIG_DIR"]) / "labconfig" / "page_config.json"
            page_config.parent.mkdir(parents=True, exist_ok=True)
            page_config.write_text(
                json.dumps({"disabledExtensions": {name: True for name in self.disabled_plugins}})
            )
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.args,
                env=self.env,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group, so a Ctrl-C meant for pytest does not reach it first
                # and stop() alone decides when it goes.
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, guard: float = READY_GUARD) -> None:
        deadline = time.monotonic() + guard
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"jupyter {self.app} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                self.api("GET", "api/status", timeout=2)
                break
            except (OSError, RuntimeError):
                pass  # not listening yet, or not done starting
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyter lab not ready after {guard} s:\n{self.log_tail()}")
            time.sleep(0.2)
        # Our tests are pointless if the extension did not load: say so at once.
        try:
            self.api("GET", "streamchat/api/agents")
        except RuntimeError as exc:
            raise RuntimeError(f"jupyter_streamchat is not loaded ({exc}):\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM (JupyterLab shuts its kernels down), then SIGKILL if it lingers.
        Safe to call more than once."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_GUARD)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_GUARD)
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> "LabServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = LOG_TAIL) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- HTTP ------------------------------------------------------------------------------

    def url(self, path: str = "", port: Optional[int] = None) -> str:
        """``http://127.0.0.1:<port><base_url><path>``; ``port`` defaults to the server's
        (pass a proxy's port to go through the proxy)."""
        return f"http://127.0.0.1:{port or self.port}{self.base_url}{path.lstrip('/')}"

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """One authenticated request under base_url; returns the parsed JSON reply (None if
        empty). Raises RuntimeError with the status and body if the status is not 2xx."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url(path),
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as err:
            raise RuntimeError(
                f"{method} {path} -> {err.code}: {err.read().decode(errors='replace')[:500]}"
            ) from None
        return json.loads(payload) if payload else None

    # -- notebooks and kernels -------------------------------------------------------------

    def write_notebook(self, path: str, cells: Sequence[str]) -> str:
        """Save a notebook of code cells (with a Python 3 kernelspec, so JupyterLab starts
        its kernel without asking) through the contents API; returns ``path``."""
        nb = nbformat.v4.new_notebook(
            cells=[nbformat.v4.new_code_cell(source) for source in cells],
            metadata={
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
            },
        )
        self.api(
            "PUT",
            f"api/contents/{urllib.parse.quote(path)}",
            {"type": "notebook", "format": "json", "content": nb},
        )
        return path

    def sessions(self) -> list:
        return self.api("GET", "api/sessions")

    def kernel_for(self, path: str) -> Optional[dict]:
        """The kernel model (``id``, ``execution_state``, ...) of the session of ``path``."""
        for session in self.sessions():
            if session.get("path") == path and session.get("kernel"):
                return session["kernel"]
        return None

    def wait_kernel_idle(self, path: str, timeout: float = 60.0) -> dict:
        """Poll the sessions until the kernel of ``path`` exists and is idle; its model.

        The server learns the state from the kernel's status messages, and a fresh kernel
        sends "idle" only after its first request: a kernel that no client (such as the page)
        has talked to stays "starting" here."""
        deadline = time.monotonic() + timeout
        kernel = None
        while time.monotonic() < deadline:
            kernel = self.kernel_for(path)
            if kernel and kernel.get("execution_state") == "idle":
                return kernel
            time.sleep(0.2)
        raise AssertionError(
            f"kernel of {path} not idle after {timeout} s (last: {kernel}); "
            f"sessions: {self.sessions()}\n{self.log_tail()}"
        )

    def restart_kernel(self, kernel_id: str) -> dict:
        return self.api("POST", f"api/kernels/{kernel_id}/restart", timeout=60)

    def put_notebook(self, path: str, nb: Any) -> str:
        """Save a notebook built by the caller (an ``nbformat`` node, outputs and all) through
        the contents API, as if a user had saved it; returns ``path``."""
        self.api(
            "PUT",
            f"api/contents/{urllib.parse.quote(path)}",
            {"type": "notebook", "format": "json", "content": nb},
        )
        return path

    def read_notebook(self, path: str) -> dict:
        """The notebook at ``path`` as saved on the server (its JSON, outputs included)."""
        return self.api("GET", f"api/contents/{urllib.parse.quote(path)}?content=1")["content"]
