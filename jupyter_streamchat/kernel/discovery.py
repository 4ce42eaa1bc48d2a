"""Finding the Jupyter server whose chat hub a kernel should talk to.

A kernel started by a Jupyter server talks to that server's hub, so that the notebook's widget
and the kernel's Python follow the same conversation. The order:

1. ``STREAMCHAT_SERVER_URL`` (and ``STREAMCHAT_TOKEN``): an explicit choice. If that server
   does not answer, :class:`ServerUnavailable` is raised rather than quietly using a different
   hub and store.
2. The running server that launched this kernel: the ``jpserver-<pid>.json`` in the Jupyter
   runtime dir whose pid is ``JPY_PARENT_PID`` (set by jupyter_client for the kernels it
   launches) or this process's parent.

A server found the second way is used only if ``GET streamchat/api/agents`` answers 200: the
extension may be disabled there, or the kernel may not be allowed to reach it.
Without one, :func:`find_server` returns None and callers use the in-process hub.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

log = logging.getLogger("jupyter_streamchat.discovery")

SERVER_URL_ENV = "STREAMCHAT_SERVER_URL"
TOKEN_ENV = "STREAMCHAT_TOKEN"

# Addresses a server listens on that a client cannot connect to as such; the server is on
# this machine (it launched the kernel), so its loopback address reaches it.
_WILDCARD_HOSTS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "*": "127.0.0.1", "::": "[::1]"}


@dataclass(frozen=True)
class ServerInfo:
    url: str  # http(s) base URL of the server, base_url included, ending in "/"
    token: str = field(default="", repr=False)  # kept out of reprs and logs


class ServerUnavailable(ConnectionError):
    """The server named by STREAMCHAT_SERVER_URL cannot be used."""


def find_server(timeout: float = 2.0) -> Optional[ServerInfo]:
    """The Jupyter server to use for chat, or None to use a hub in this process."""
    url = os.environ.get(SERVER_URL_ENV)
    if url:
        server = ServerInfo(_with_slash(url), os.environ.get(TOKEN_ENV, ""))
        problem = check_server(server, timeout)
        if problem:
            raise ServerUnavailable(
                f"{SERVER_URL_ENV}={url}: {problem}. Fix the URL or {TOKEN_ENV}, "
                f"or unset {SERVER_URL_ENV} to use a chat hub inside this process."
            )
        return server
    info = parent_server_info()
    if info is None:
        log.debug("streamchat: no running Jupyter server launched this process")
        return None
    if info.get("sock"):
        log.debug(
            "streamchat: the parent Jupyter server listens on a Unix socket (%s); "
            "set %s to reach it over TCP",
            info["sock"],
            SERVER_URL_ENV,
        )
        return None
    server = ServerInfo(server_url(info), info.get("token") or "")
    problem = check_server(server, timeout)
    if problem:
        log.debug("streamchat: not using the parent Jupyter server %s: %s", server.url, problem)
        return None
    return server


def running_servers(runtime_dir: Optional[str] = None) -> list:
    """The runtime info (``jpserver-<pid>.json``) of every Jupyter server running on this
    machine for this user.

    What ``jupyter_server.serverapp.list_running_servers`` reads, without importing
    jupyter_server: that import costs seconds (its JSON schemas), which every kernel and script
    would pay on its first chat. Files of servers that are gone are skipped, not deleted.
    """
    from jupyter_core.paths import jupyter_runtime_dir

    folder = Path(runtime_dir or jupyter_runtime_dir())
    found = []
    for path in sorted(folder.glob("jpserver-*.json")) if folder.is_dir() else ():
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # being written, or gone meanwhile
            continue
        if isinstance(info, dict) and isinstance(info.get("pid"), int) and _alive(info["pid"]):
            found.append(info)
    return sorted(found, key=lambda info: info["pid"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    except OSError:
        return False
    return True


def parent_server_info(runtime_dir: Optional[str] = None) -> Optional[dict]:
    """The runtime info (``jpserver-<pid>.json``) of the server that launched this process."""
    pids = []
    try:
        pids.append(int(os.environ["JPY_PARENT_PID"]))
    except (KeyError, ValueError):  # not launched by jupyter_client, or a Windows handle
        pass
    pids.append(os.getppid())
    servers = {info["pid"]: info for info in running_servers(runtime_dir)}
    for pid in pids:
        if pid in servers:
            return servers[pid]
    return None


def server_url(info: dict) -> str:
    """A URL this machine can connect to, from a server's runtime info."""
    host = str(info.get("hostname", ""))
    if host in _WILDCARD_HOSTS and info.get("port"):
        scheme = "https" if info.get("secure") else "http"
        url = f"{scheme}://{_WILDCARD_HOSTS[host]}:{info['port']}{info.get('base_url') or '/'}"
    else:
        url = info["url"]
    return _with_slash(url)


def check_server(server: ServerInfo, timeout: float = 2.0) -> Optional[str]:
    """None if the server's chat API answers; else why not, in words."""
    request = urllib.request.Request(server.url + "streamchat/api/agents")
    if server.token:
        request.add_header("Authorization", f"token {server.token}")
    # No proxies: the server is local, and an HTTP(S)_PROXY meant for the internet would
    # swallow the request.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as e:
        status = e.code
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        return f"cannot reach {server.url}: {reason}"
    if status == 200:
        return None
    return _explain_status(status)


def _explain_status(status: int) -> str:
    if status in (401, 403):
        return f"HTTP {status}: the server refused the token"
    if status == 404:
        return "HTTP 404: the jupyter_streamchat server extension is not enabled there"
    return f"HTTP {status} from the chat API"


def _with_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"
