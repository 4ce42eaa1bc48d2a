"""The REST API of a running server (``{base_url}streamchat/api/``), for the command line.

Plain blocking HTTP (urllib): a command makes one request at a time. Errors become the
command's exit codes: 401/403 the token, 404 not found (or no extension there, for the agents),
400 the user's input, anything else a failure with the server's own words.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import BinaryIO, Optional
from urllib.parse import quote, urlencode

from .. import protocol as p
from ..kernel.discovery import ServerInfo
from .errors import AuthRefused, CliError, NoServer, NotFound, UsageError

TIMEOUT = 30.0  # seconds a request may wait on the socket (a hang guard, not a total)
COPY_BYTES = 64 * 1024


class RemoteClient:
    """One server's chat, through its REST API; ``transport()`` for its WebSocket."""

    def __init__(self, server: ServerInfo):
        self.server = server
        # No proxies: like a browser on localhost, and an HTTP(S)_PROXY meant for the internet
        # would swallow requests to a server of this machine.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def describe(self) -> str:
        return self.server.url

    def close(self) -> None:
        """Nothing held between requests."""

    # -- the API -------------------------------------------------------------------------

    def agents(self) -> dict:
        """``{"agents": [...], "maxMessageBytes": n}``; also the check that the server is
        there, has the extension and takes the token."""
        with self._get("agents", about="the chat API") as response:
            return json.load(response)

    def conversations(self, query: str, limit: Optional[int]) -> tuple:
        """(up to ``limit`` list entries (None: all), most recent first; whether there are
        more), a page of at most LIST_PAGE_MAX at a time."""
        entries, after = [], None
        while True:
            page = p.LIST_PAGE_MAX if limit is None else min(limit - len(entries), p.LIST_PAGE_MAX)
            params = {
                "limit": page,
                **({"q": query} if query else {}),
                **({"after": after} if after else {}),
            }
            with self._get("conversations?" + urlencode(params), about="the list") as response:
                body = json.load(response)
            entries += body["conversations"]
            after = body.get("next")
            if not after or (limit is not None and len(entries) >= limit):
                return entries, bool(after)

    def conversation(self, conversation_id: str) -> dict:
        """``{"conversationId", "messages": [...]}`` as ``GET api/conversations/{id}``."""
        with self._get(_path(conversation_id), conversation_id) as response:
            return json.load(response)

    def export_markdown(self, conversation_id: str, thinking: bool, out: BinaryIO) -> None:
        path = _path(conversation_id) + "/export?thinking=" + ("1" if thinking else "0")
        with self._get(path, conversation_id) as response:
            while True:
                data = response.read(COPY_BYTES)
                if not data:
                    return
                out.write(data)

    def delete(self, conversation_id: str) -> None:
        self._request("DELETE", _path(conversation_id), conversation_id).close()

    def transport(self):
        """A WebSocket to the server (imported here: only ``send`` needs it)."""
        from ..kernel.connection import RemoteTransport

        return RemoteTransport(self.server, max_backoff=2.0)

    # -- requests ------------------------------------------------------------------------

    def _get(self, path: str, conversation_id: Optional[str] = None, about: str = ""):
        return self._request("GET", path, conversation_id, about)

    def _request(
        self, method: str, path: str, conversation_id: Optional[str] = None, about: str = ""
    ):
        url = self.server.url + "streamchat/api/" + path
        request = urllib.request.Request(url, method=method)
        if self.server.token:
            request.add_header("Authorization", f"token {self.server.token}")
        try:
            return self._opener.open(request, timeout=TIMEOUT)
        except urllib.error.HTTPError as e:
            with e:
                raise self._error(e.code, _message(e), conversation_id, about) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise NoServer(f"cannot reach {self.server.url}: {reason}") from None

    def _error(
        self, status: int, message: str, conversation_id: Optional[str], about: str
    ) -> CliError:
        where = self.server.url
        if status in (401, 403):
            what = "refused the token" if self.server.token else "needs a token (--token)"
            return AuthRefused(f"{where} {what} (HTTP {status})")
        if status == 404:
            if conversation_id is not None:
                return NotFound(f"no conversation {conversation_id!r} on {where}")
            return NoServer(
                f"{where}: HTTP 404 for {about}: the jupyter_streamchat server "
                "extension is not enabled there (or --url misses the base URL)"
            )
        if status == 400:
            return UsageError(message or f"{where} refused the request (HTTP 400)")
        return CliError(f"{where}: HTTP {status}" + (f": {message}" if message else ""))


def _path(conversation_id: str) -> str:
    return "conversations/" + quote(conversation_id, safe="")


def _message(error: urllib.error.HTTPError) -> str:
    """The ``message`` of a JSON error answer (Jupyter's and ours), else ''."""
    try:
        body = json.loads(error.read(64 * 1024) or b"null")
    except (ValueError, OSError):
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    return " ".join(str(message).split()) if message else ""
