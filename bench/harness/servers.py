"""Isolated ``jupyter server`` subprocesses on 127.0.0.1, and the bare Tornado servers that
benches measure the hub against.

A server's Jupyter and XDG dirs all point into its temp dir (the tests' ``isolated_env``), so
no developer setting or data leaks into a measurement, and server extensions that are not ours
are switched off in that user config so that servers start faster and carry less.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tornado.httpserver
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.web import Application
from tornado.websocket import WebSocketHandler

from harness.processes import STARTUP_TIMEOUT, Child, start_announcing

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from server_process import OTHER_EXTENSIONS, free_port  # noqa: E402  (the tests' launcher)
from server_process import isolated_env as tests_isolated_env  # noqa: E402

HOST = "127.0.0.1"

# Settings of the developer's shell that would reach a server's agents or its Python.
DROPPED = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL", "VIRTUAL_ENV")


def isolated_env(base: Path, python_path=(), own_env: bool = False) -> dict:
    """Jupyter state in ``base``, no developer setting, ``python_path`` first on the path (and
    nothing else of this environment's path when the server runs a Python of its ``own_env``)."""
    env = tests_isolated_env(base, **dict.fromkeys(DROPPED))
    inherited = [] if own_env else [env.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [*map(str, python_path), *inherited]))
    return env


def quiet_config(**sections) -> dict:
    """A server's user config: other server extensions off, then ``sections``."""
    return {
        "ServerApp": {"jpserver_extensions": dict.fromkeys(OTHER_EXTENSIONS, False)},
        **sections,
    }


@dataclass
class Jupyter:
    child: Child
    base_url: str  # http://127.0.0.1:PORT/
    token: str
    base: Path  # its temp dir: Jupyter state, root dir, log

    @property
    def ws_url(self) -> str:
        """The chat's WebSocket."""
        return self.base_url.replace("http", "ws", 1) + "streamchat/ws"

    @property
    def auth(self) -> dict:
        return {"Authorization": f"token {self.token}"}


async def start_jupyter(
    base: Path,
    args=(),
    *,
    config: dict | None = None,
    python: str = sys.executable,
    python_path=(),
    ready: str = "streamchat/api/agents",
    agents=(),
    name: str = "jupyter server",
) -> Jupyter:
    """A ``jupyter server`` of ``python`` with ``config`` (default: ``quiet_config()``) as its
    user config and ``args`` on its command line; up once ``ready`` answers 200 and it has
    the chat ``agents`` named."""
    base.mkdir(parents=True)
    env = isolated_env(base, python_path, own_env=python != sys.executable)
    (Path(env["JUPYTER_CONFIG_DIR"]) / "jupyter_server_config.json").write_text(
        json.dumps(quiet_config() if config is None else config)
    )
    (base / "root").mkdir()
    port, token = free_port(), secrets.token_hex(16)
    log_path = base / "server.log"
    with open(log_path, "wb") as log:
        proc = await asyncio.create_subprocess_exec(
            python,
            "-m",
            "jupyter_server",
            "--allow-root",
            "--no-browser",
            f"--ServerApp.ip={HOST}",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={base / 'root'}",
            *args,
            stdout=log,
            stderr=log,
            stdin=asyncio.subprocess.DEVNULL,
            env=env,
            cwd=base,
        )
    server = Jupyter(Child(name, proc, log_path), f"http://{HOST}:{port}/", token, base)
    try:
        await wait_until_up(server, ready)
        if agents:
            await require_agents(server, *agents)
    except BaseException:
        await server.child.stop()
        raise
    return server


async def wait_until_up(server: Jupyter, path: str) -> None:
    """Poll ``GET path`` until it answers 200; any other answer is an error at once."""
    client = AsyncHTTPClient()
    child = server.child
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline and child.proc.returncode is None:
        try:
            await client.fetch(server.base_url + path, headers=server.auth, request_timeout=5)
            return
        except HTTPClientError as e:
            if e.code != 599:  # the server is up and says no: 404 if the extension did not load
                raise RuntimeError(
                    f"{child.name}: GET {path} answered {e.code}: {extension_errors(child)}"
                ) from None
        except OSError:  # not listening yet
            pass
        await asyncio.sleep(0.2)
    state = (
        "exited" if child.proc.returncode is not None else f"no answer in {STARTUP_TIMEOUT:.0f} s"
    )
    raise RuntimeError(f"{child.name} did not come up ({state}): {extension_errors(child)}")


def extension_errors(child: Child) -> str:
    """The server log's error lines about the extension, or its last lines."""
    lines = child.log_tail(400).splitlines()
    errors = [
        line
        for line in lines
        if "streamchat" in line.lower()
        and line.startswith(("[E", "[W", "[C"))
        and "GET /streamchat" not in line
    ]
    return " / ".join(errors[-3:]) or "\n" + "\n".join(lines[-15:])


async def api(server: Jupyter, method: str, path: str, body=None, timeout: float = 30):
    """One REST request; -> the parsed JSON answer (None for an empty one)."""
    response = await AsyncHTTPClient().fetch(
        HTTPRequest(
            server.base_url + path,
            method=method,
            body=None if body is None else json.dumps(body),
            headers=server.auth,
            request_timeout=timeout,
        )
    )
    return json.loads(response.body) if response.body else None


async def agent_ids(server: Jupyter) -> set:
    return {a["id"] for a in (await api(server, "GET", "streamchat/api/agents"))["agents"]}


def agent_skipped_reason(server: Jupyter, agent: str) -> str:
    """Why the server lacks ``agent``, from its log."""
    lines = [
        line
        for line in server.child.log_tail(600).splitlines()
        if "skipping" in line and agent in line
    ]
    return " ".join(lines[-1].split()[4:])[:200] if lines else "not among the server's agents"


async def require_agents(server: Jupyter, *agents: str) -> set:
    """The server's agents, or an error naming the missing ones and why they are missing."""
    found = await agent_ids(server)
    missing = [agent for agent in agents if agent not in found]
    if missing:
        reasons = "; ".join(f"{a}: {agent_skipped_reason(server, a)}" for a in missing)
        raise RuntimeError(
            f"the server lacks the {'/'.join(missing)} agent(s) (agents: "
            f"{sorted(found)}; {reasons})"
        )
    return found


# -- floor servers: bare Tornado in a process of its own ------------------------------------------


class PushHandler(WebSocketHandler):
    """Runs ``push(request)`` as a task for each frame received; no compression, as the hub's
    handler."""

    pushes: set = set()  # running push tasks (asyncio keeps only weak references)

    def get_compression_options(self):
        return None

    def on_message(self, message):
        task = asyncio.ensure_future(self.push(json.loads(message)))
        self.pushes.add(task)
        task.add_done_callback(self.pushes.discard)

    async def push(self, request: dict) -> None:
        raise NotImplementedError


async def serve_raw(handlers: list) -> None:
    """Serve ``handlers`` on a free port of 127.0.0.1, print the port, run until terminated
    (the body of a bench's ``--serve-raw``)."""
    from tornado.netutil import bind_sockets

    sockets = bind_sockets(0, HOST)
    server = tornado.httpserver.HTTPServer(Application(handlers))
    server.add_sockets(sockets)
    print(sockets[0].getsockname()[1], flush=True)  # the parent reads the port from stdout
    await asyncio.Event().wait()


async def start_raw(script: str, log_path: Path, name: str) -> tuple:
    """``python script --serve-raw`` (a bench script whose ``--serve-raw`` runs
    ``serve_raw``); -> (child, port)."""
    command = [sys.executable, str(Path(script).resolve()), "--serve-raw"]
    child, line = await start_announcing(name, command, log_path)
    try:
        return child, int(line)
    except ValueError:
        await child.stop()
        raise RuntimeError(f"{name} printed {line!r}, not a port:\n{child.log_tail()}") from None
