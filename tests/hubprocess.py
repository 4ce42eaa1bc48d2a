"""A real JupyterHub on loopback for tests: several users, each with a single-user server that
loads jupyter_streamchat.

``jupyterhub`` (from PyPI) runs with a ``jupyterhub_config.py`` written into a temp dir: a shared
password authenticator (no PAM, no system users), ``SimpleLocalProcessSpawner`` (every user's
server runs as the current OS user, told apart by ``$JUPYTERHUB_USER``), its own SQLite
database, and ``configurable-http-proxy`` from npm as the proxy. Each user's notebook dir and
Jupyter, JupyterLab and XDG dirs live under ``<base>/users/<name>``, so no server reads or writes
the developer's state; with a ``store_url`` every server keeps its messages in that one store,
without one each keeps its own SQLite file in its own Jupyter data dir.

A service with an API token made in the config (``admin_token``) drives the hub's REST API: it
starts and stops users' servers and reaches their APIs (``server_api``), as an admin would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Optional, Sequence

from server_process import free_port, isolated_env

REPO = Path(__file__).resolve().parent.parent
# Where scripts/test.sh installs configurable-http-proxy when it is not on PATH.
LOCAL_CHP = REPO / ".venv" / "chp" / "node_modules" / ".bin" / "configurable-http-proxy"

READY_GUARD = 60.0  # seconds for the hub (and its proxy) to answer; hang guards only
SPAWN_GUARD = 120.0  # seconds for a single-user server to start (JupyterLab, under load)
STOP_GUARD = 30.0  # seconds for the hub to stop its servers and proxy on SIGTERM
LOG_TAIL = 80

# Front-end settings of every user: no toast asking to fetch Jupyter news (there is only
# loopback here, and it would cover part of the page).
USER_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
}

# The Jupyter and XDG directories of each user's server, under <base>/users/<name>/.
USER_DIRS = {
    "JUPYTER_CONFIG_DIR": ".jupyter/config",
    "JUPYTER_DATA_DIR": ".jupyter/data",
    "JUPYTER_RUNTIME_DIR": ".jupyter/runtime",
    "IPYTHONDIR": ".ipython",
    "JUPYTERLAB_SETTINGS_DIR": ".jupyter/lab/settings",
    "JUPYTERLAB_WORKSPACES_DIR": ".jupyter/lab/workspaces",
    "XDG_CONFIG_HOME": ".xdg/config",
    "XDG_DATA_HOME": ".xdg/data",
    "XDG_CACHE_HOME": ".xdg/cache",
    "XDG_STATE_HOME": ".xdg/state",
}

CONFIG_TEMPLATE = """\
# Written by tests/hubprocess.py: a throwaway JupyterHub on loopback.
import os

from jupyterhub.spawner import SimpleLocalProcessSpawner

c = get_config()  # noqa: F821

SETTINGS = {settings!r}
USERS_DIR = {users_dir!r}
USER_DIRS = {user_dirs!r}

c.JupyterHub.bind_url = "http://127.0.0.1:{port}/"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = {db_url!r}
c.JupyterHub.cookie_secret_file = {cookie_secret_file!r}
c.JupyterHub.pid_file = {pid_file!r}
c.JupyterHub.log_level = "INFO"
c.JupyterHub.cleanup_servers = True
c.JupyterHub.cleanup_proxy = True
# The REST API answers a start or stop at once (202); the tests wait for the outcome themselves.
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0, "slow_stop_timeout": 0}}

c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.pid_file = {proxy_pid_file!r}
c.ConfigurableHTTPProxy.should_start = True

try:  # JupyterHub 5.3 and later
    from jupyterhub.authenticators.shared import SharedPasswordAuthenticator
except ImportError:
    c.JupyterHub.authenticator_class = "dummy"
    c.DummyAuthenticator.password = os.environ["STREAMCHAT_HUB_PASSWORD"]
else:
    c.JupyterHub.authenticator_class = SharedPasswordAuthenticator
    c.SharedPasswordAuthenticator.user_password = os.environ["STREAMCHAT_HUB_PASSWORD"]
c.Authenticator.allowed_users = set({users!r})

# The admin token of the tests: start, stop and reach every user's server.
c.JupyterHub.services = [
    {{"name": "streamchat-tests", "api_token": os.environ["STREAMCHAT_HUB_ADMIN_TOKEN"]}}
]
c.JupyterHub.load_roles = [
    {{
        "name": "streamchat-tests",
        "scopes": ["admin:users", "admin:servers", "access:servers", "read:users"],
        "services": ["streamchat-tests"],
    }}
]


def _user_dir(spawner, sub=""):
    path = os.path.join(USERS_DIR, spawner.user.name, sub)
    os.makedirs(path, exist_ok=True)
    return path


def _settings_dir(spawner):
    path = _user_dir(spawner, USER_DIRS["JUPYTERLAB_SETTINGS_DIR"])
    for name, value in SETTINGS.items():
        target = os.path.join(path, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w") as f:
            f.write(value)
    return path


c.JupyterHub.spawner_class = SimpleLocalProcessSpawner
c.SimpleLocalProcessSpawner.home_dir_template = os.path.join(USERS_DIR, "{{username}}")
c.Spawner.notebook_dir = os.path.join(USERS_DIR, "{{username}}")
c.Spawner.default_url = "/lab"
c.Spawner.cmd = [{singleuser!r}]
c.Spawner.args = {args!r}
c.Spawner.start_timeout = {spawn_guard}
c.Spawner.http_timeout = {spawn_guard}
c.Spawner.environment = {{
    **{{name: (lambda spawner, sub=sub: _user_dir(spawner, sub)) for name, sub in USER_DIRS.items()}},
    "JUPYTERLAB_SETTINGS_DIR": _settings_dir,
    "PYTHONUNBUFFERED": "1",
}}
# The one store of every user's server; its URL (and password) stays in the environment.
if os.environ.get("STREAMCHAT_STORE_URL"):
    c.Spawner.environment["STREAMCHAT_STORE_URL"] = os.environ["STREAMCHAT_STORE_URL"]
"""


def find_chp() -> Optional[str]:
    """configurable-http-proxy: $STREAMCHAT_CHP, the copy scripts/test.sh installs, or PATH."""
    for candidate in (os.environ.get("STREAMCHAT_CHP"), str(LOCAL_CHP)):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("configurable-http-proxy")


class JupyterHubProcess:
    """``jupyterhub`` on 127.0.0.1 for ``users`` (one password for all), started by
    :meth:`start` (or ``with JupyterHubProcess(...)``).

    ``store_url`` is the one store of every user's server (``STREAMCHAT_STORE_URL``; empty:
    each its own SQLite file). ``server_args`` are extra arguments of every single-user server,
    e.g. ``["--EchoAgent.delay=0.05"]``.
    """

    def __init__(
        self,
        base: Path,
        users: Sequence[str] = ("alice", "bob"),
        *,
        store_url: str = "",
        server_args: Sequence[str] = (),
        chp: Optional[str] = None,
    ):
        self.base = Path(base)
        self.users = list(users)
        self.users_dir = self.base / "users"
        self.users_dir.mkdir(parents=True, exist_ok=True)
        self.chp = chp or find_chp()
        if not self.chp:
            raise FileNotFoundError("configurable-http-proxy is not installed")
        self.port = free_port()
        self.password = uuid.uuid4().hex
        self.admin_token = uuid.uuid4().hex
        self.store_url = store_url
        self.server_args = [
            # window.jupyterapp, through which tests run JupyterLab commands.
            "--LabApp.expose_app_in_browser=True",
            # Nothing may try to reach the internet: there is only loopback here.
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            *(["--ServerApp.allow_root=True"] if os.geteuid() == 0 else []),
            *server_args,
        ]
        self.config_path = self.base / "jupyterhub_config.py"
        self.log_path = self.base / "jupyterhub.log"
        self.proc: Optional[subprocess.Popen] = None

    # -- lifecycle -------------------------------------------------------------------------

    def _config(self) -> str:
        return CONFIG_TEMPLATE.format(
            settings={name: json.dumps(value) for name, value in USER_SETTINGS.items()},
            users_dir=str(self.users_dir),
            user_dirs=USER_DIRS,
            port=self.port,
            hub_port=free_port(),
            proxy_api_port=free_port(),
            db_url=f"sqlite:///{self.base / 'jupyterhub.sqlite'}",
            cookie_secret_file=str(self.base / "jupyterhub_cookie_secret"),
            pid_file=str(self.base / "jupyterhub.pid"),
            proxy_pid_file=str(self.base / "proxy.pid"),
            chp=self.chp,
            users=sorted(self.users),
            singleuser=str(Path(sys.executable).with_name("jupyterhub-singleuser")),
            args=self.server_args,
            spawn_guard=SPAWN_GUARD,
        )

    def start(self) -> "JupyterHubProcess":
        self.config_path.write_text(self._config())
        # The secrets reach the hub through its environment, never its command line or log.
        env = isolated_env(
            self.base / "hub",
            STREAMCHAT_HUB_PASSWORD=self.password,
            STREAMCHAT_HUB_ADMIN_TOKEN=self.admin_token,
            STREAMCHAT_STORE_URL=self.store_url or None,
        )
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(self.config_path)],
                env=env,
                cwd=self.base,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group (with the proxy and the users' servers), so that a
                # Ctrl-C meant for pytest does not reach it and stop() can clear up after it.
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_GUARD
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"jupyterhub exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                self.api("GET", "", timeout=2)  # /hub/api/ through the proxy: both are up
                return
            except (OSError, RuntimeError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"jupyterhub not ready after {READY_GUARD} s:\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM (the hub stops the users' servers and its proxy), then SIGKILL to whatever
        of its process group lingers. Safe to call more than once."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_GUARD)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_GUARD)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group it led: proxy, servers
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> "JupyterHubProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = LOG_TAIL) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- HTTP ------------------------------------------------------------------------------

    def url(self, path: str = "") -> str:
        """``http://127.0.0.1:<port>/<path>``, the hub's public address (the proxy)."""
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def user_url(self, user: str, path: str = "") -> str:
        return self.url(f"user/{user}/{path.lstrip('/')}")

    def _request(self, method: str, url: str, body: Any, timeout: float) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            url,
            data=data,
            method=method,
            headers={
                "Authorization": f"token {self.admin_token}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as err:
            raise RuntimeError(
                f"{method} {url} -> {err.code}: {err.read().decode(errors='replace')[:500]}"
            ) from None
        return json.loads(payload) if payload else None

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """The hub's REST API (``/hub/api/<path>``) as the admin service."""
        return self._request(method, self.url(f"hub/api/{path}"), body, timeout)

    def server_api(
        self, user: str, method: str, path: str, body: Any = None, timeout: float = 10.0
    ) -> Any:
        """A user's single-user server (``/user/<user>/<path>``) with the admin token."""
        return self._request(method, self.user_url(user, path), body, timeout)

    # -- users' servers --------------------------------------------------------------------

    def server_model(self, user: str) -> Optional[dict]:
        return self.api("GET", f"users/{user}")["servers"].get("")

    def start_servers(self, *users: str, guard: float = SPAWN_GUARD) -> None:
        """Start these users' servers through the hub, side by side, and wait until each is
        ready (and has loaded this extension)."""
        for user in users:
            self.api("POST", f"users/{user}/server", {})
        for user in users:
            self.wait_server(user, ready=True, guard=guard)

    def start_server(self, user: str, guard: float = SPAWN_GUARD) -> dict:
        """Start ``user``'s server through the hub and wait until it is ready; returns the
        hub's model of it."""
        self.api("POST", f"users/{user}/server", {})
        return self.wait_server(user, ready=True, guard=guard)

    def stop_server(self, user: str, guard: float = STOP_GUARD) -> None:
        """Stop ``user``'s server through the hub and wait until it is gone."""
        self.api("DELETE", f"users/{user}/server")
        self.wait_server(user, ready=False, guard=guard)

    def wait_server(self, user: str, ready: bool, guard: float) -> Optional[dict]:
        deadline = time.monotonic() + guard
        while True:
            model = self.server_model(user)
            if ready and model and model.get("ready"):
                try:
                    self.server_api(user, "GET", "streamchat/api/agents")
                    return model
                except (OSError, RuntimeError):
                    pass  # routed, not answering yet
            if not ready and model is None:
                return None
            if time.monotonic() > deadline:
                state = "ready" if ready else "stopped"
                raise AssertionError(
                    f"{user}'s server not {state} after {guard} s (hub: {model}):\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.5)
