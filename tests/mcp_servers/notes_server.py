"""A real MCP server, written with the SDK's server class (``MCPServer``; ``FastMCP`` before
mcp 2), for the tests of the `openai` agent's tools.

Tools:

- ``add(a, b)``: their sum; marked read-only (``readOnlyHint``);
- ``write_note(text)``: appends a line to the file ``$NOTES_FILE``; not read-only;
- ``fail(reason)``: raises, so the result is an MCP error (``isError``);
- ``sleep(seconds)``: sleeps, then answers "slept"; read-only;
- ``pid()``: the server's process id; read-only.

Run:

- ``python notes_server.py``: over stdio;
- ``python notes_server.py --http``: streamable HTTP on a free loopback port, printed as the
  first line of stdout (``PORT 12345``), path ``/mcp``; with ``$MCP_TEST_TOKEN`` set, a request
  without ``Authorization: Bearer $MCP_TEST_TOKEN`` gets 401;
- ``python notes_server.py --crash``: says why on stderr and exits 3, before it speaks MCP.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys

try:
    from mcp.server.mcpserver import MCPServer as Server  # mcp 2
    from mcp.server.mcpserver.exceptions import ToolError
except ImportError:  # mcp 1.x
    from mcp.server.fastmcp import FastMCP as Server
    from mcp.server.fastmcp.exceptions import ToolError
from mcp.types import ToolAnnotations

server = Server("notes")


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def add(a: int, b: int) -> str:
    """Adds two whole numbers."""
    return str(a + b)


@server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False))
def write_note(text: str) -> str:
    """Appends a note to the notes file."""
    with open(os.environ["NOTES_FILE"], "a", encoding="utf-8") as notes:
        notes.write(text + "\n")
    return f"noted: {text}"


@server.tool()
def fail(reason: str) -> str:
    """Always fails, with the reason given."""
    raise ToolError(f"failed on purpose: {reason}")


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
async def sleep(seconds: float) -> str:
    """Sleeps that many seconds."""
    await asyncio.sleep(min(seconds, 600))
    return "slept"


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def pid() -> str:
    """This server's process id."""
    return str(os.getpid())


def _guarded(app, token: str):
    """The ASGI app, refusing HTTP requests without the bearer token."""
    expected = f"Bearer {token}".encode()

    async def guarded(scope, receive, send):
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != expected:
            body = json.dumps({"error": "unauthorized"}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    return guarded


def serve_http() -> None:
    import uvicorn

    app = server.streamable_http_app()
    token = os.environ.get("MCP_TEST_TOKEN")
    if token:
        app = _guarded(app, token)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    if "--crash" in sys.argv:
        print("notes: cannot open the notes database: no such file", file=sys.stderr, flush=True)
        sys.exit(3)
    if "--http" in sys.argv:
        serve_http()
    else:
        server.run()
