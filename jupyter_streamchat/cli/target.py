"""Which hub a command talks to: a running Jupyter server, or a store file with no server.

In order:

1. ``--store PATH|URL``: the store itself, through a hub in this process (no server needed).
2. ``--url URL`` (or ``$STREAMCHAT_SERVER_URL``): that server. Its token is ``--token`` (or
   ``$STREAMCHAT_TOKEN``), a ``?token=`` in the URL, or, for a server of this machine, the
   token in its runtime info (the ``jpserver-<pid>.json`` files ``jupyter server list`` reads).
3. Otherwise the running servers of this user whose chat API answers: the only one is used;
   with several, the command stops and lists them, since guessing could send a message to, or
   delete a conversation from, the wrong server.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

from ..kernel.discovery import (
    SERVER_URL_ENV,
    TOKEN_ENV,
    ServerInfo,
    check_server,
    running_servers,
    server_url,
)
from .errors import NoServer, UsageError

# Host names that all mean this machine, so a --url of localhost finds the runtime info of a
# server that wrote 127.0.0.1.
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "::", ""}

CHECK_TIMEOUT = 5.0  # seconds for a running server's chat API to answer the discovery check


@dataclass(frozen=True)
class Target:
    server: Optional[ServerInfo] = None
    store_url: Optional[str] = None  # set when the command works on a store directly

    def describe(self) -> str:
        return self.server.url if self.server else f"the store {self.store_url}"


def choose(url: Optional[str], token: Optional[str], store: Optional[str]) -> Target:
    """The target from the command's options (``None``: not given) and the environment."""
    if store is not None:
        if url is not None:
            raise UsageError("give either --url or --store, not both")
        return Target(store_url=store_url(store))
    if url is None:
        url = os.environ.get(SERVER_URL_ENV) or None
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    if url is not None:
        return Target(server=explicit_server(url, token))
    return Target(server=only_running_server(token))


def store_url(value: str) -> str:
    """A store URL from ``--store``: a URL as it is, a path as ``sqlite:///<absolute path>``."""
    if not value:
        raise UsageError("--store needs a path to a SQLite file or a store URL")
    if "://" in value:
        return value
    path = os.path.abspath(os.path.expanduser(value))
    return "sqlite:///" + quote(path)  # and the absolute path its own slash: sqlite:////


def sqlite_path(url: str) -> Optional[str]:
    """The file of a ``sqlite://`` store URL (as SQLiteStore.from_url reads it), else None."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite" or not parts.path:
        return None
    return unquote(parts.path[1:])


def explicit_server(url: str, token: Optional[str]) -> ServerInfo:
    """The server at ``url``; its token as the module docstring says."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"--url must be a server's http(s) URL, e.g. http://127.0.0.1:8888/ "
            f"(got {_without_query(url)!r})"
        )
    if token is None:
        token = (parse_qs(parts.query).get("token") or [None])[0]
    base = urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", ""))
    base = base if base.endswith("/") else base + "/"
    if token is None:
        token = runtime_token(base)
    return ServerInfo(base, token or "")


def runtime_token(url: str) -> Optional[str]:
    """The token a running server of this machine at ``url`` wrote in its runtime info."""
    wanted = _url_key(url)
    if wanted is None:
        return None
    for info in running_servers():
        urls = {info.get("url") or ""}
        if info.get("port"):
            urls.add(server_url(info))
        if any(_url_key(u) == wanted for u in urls if u):
            return info.get("token") or ""
    return None


def only_running_server(token: Optional[str]) -> ServerInfo:
    """The one running server whose chat API answers; NoServer if none or several."""
    answering, others = [], []
    for info in running_servers():
        if info.get("sock"):
            others.append(f"{info['sock']}: listens on a Unix socket (give its --url over TCP)")
            continue
        server = ServerInfo(
            server_url(info), token if token is not None else (info.get("token") or "")
        )
        problem = check_server(server, CHECK_TIMEOUT)
        if problem is None:
            answering.append(server)
        else:
            others.append(f"{server.url}: {problem}")
    if len(answering) == 1:
        return answering[0]
    if answering:
        listed = "".join(f"\n  {server.url}" for server in answering)
        raise NoServer(
            f"{len(answering)} running Jupyter servers have the chat; choose one "
            f"with --url:{listed}"
        )
    from jupyter_core.paths import jupyter_runtime_dir

    seen = "".join(f"\n  {line}" for line in others)
    raise NoServer(
        "no running Jupyter server with the chat was found (looked in "
        f"{jupyter_runtime_dir()}); start one (jupyter lab), give its --url, or work on a "
        f"store file with --store PATH" + (f"; servers found:{seen}" if seen else "")
    )


def _url_key(url: str) -> Optional[tuple]:
    """What makes two URLs of a server on this machine the same server."""
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if host in _LOOPBACK:
        host = "loopback"
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return parts.scheme, host, port, path


def _without_query(url: str) -> str:
    """A URL fit to show: without its query, which may hold a token."""
    return url.split("?", 1)[0]
