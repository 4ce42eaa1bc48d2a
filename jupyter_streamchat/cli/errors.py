"""Exit codes of ``jupyter streamchat``, and the errors that carry them.

The codes are part of the command's contract (``--help`` and docs/cli.md list them), so that a
script can tell "try another server" from "no such conversation" without reading the words.
"""

from __future__ import annotations

import textwrap

OK = 0
FAILED = 1  # the server or the agent failed: a reply ended `error`/`interrupted`, a 5xx
USAGE = 2  # bad arguments (argparse's own code), an empty or too large message
NO_SERVER = 3  # no server found, several found, cannot connect, no store file
NOT_FOUND = 4  # unknown conversation or agent
AUTH = 5  # the server refused the token
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as a shell reports it)
PIPE_CLOSED = 141  # stdout closed early (`| head`): 128 + SIGPIPE, as a shell reports it

EXIT_CODES = (
    (OK, "success"),
    (
        FAILED,
        "the server or the agent failed (a reply that ended `error` or `interrupted`, "
        "a store that cannot be read, an HTTP 5xx)",
    ),
    (
        USAGE,
        "usage error: bad arguments, an empty or too large message, `delete` without "
        "--yes when not asked on a terminal",
    ),
    (
        NO_SERVER,
        "no server: none running, several running (choose with --url), cannot "
        "connect, the extension is not enabled there, no store file at --store",
    ),
    (NOT_FOUND, "not found: no such conversation or agent"),
    (AUTH, "the server refused the token (HTTP 401 or 403)"),
    (INTERRUPTED, "interrupted by Ctrl-C (`send`: the reply was stopped, its text kept)"),
    (PIPE_CLOSED, "stdout was closed before the end (`| head`)"),
)


class CliError(Exception):
    """An error to report on stderr as one line (``message``) and exit with ``code``."""

    code = FAILED

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class UsageError(CliError):
    code = USAGE


class NoServer(CliError):
    code = NO_SERVER


class NotFound(CliError):
    code = NOT_FOUND


class AuthRefused(CliError):
    code = AUTH


def exit_codes_text() -> str:
    """The exit codes as ``--help`` shows them."""
    return "exit codes:\n" + "\n".join(
        textwrap.fill(what, 79, initial_indent=f"  {code:<4} ", subsequent_indent=" " * 7)
        for code, what in EXIT_CODES
    )
