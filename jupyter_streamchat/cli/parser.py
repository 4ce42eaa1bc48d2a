"""The command line's arguments: ``jupyter streamchat [OPTIONS] COMMAND [ARGS]``.

The options that choose the target and the output (``--url``, ``--token``, ``--store``,
``--json``, ``--debug``) are accepted before the command and after it: each sub-command's
parser has them too, with no default of its own (``SUPPRESS``), so that one given before the
command is not reset by the sub-command's parser.
"""

from __future__ import annotations

import argparse
import textwrap

from .. import __version__
from .. import protocol as p
from .commands import DEFAULT_AGENT
from .errors import exit_codes_text

PROG = "jupyter streamchat"

DEFAULT_AGENT_TEXT = f"{DEFAULT_AGENT} (as a new chat in JupyterLab), else the first one"

TARGET_HELP = "target:\n" + textwrap.fill(
    "With --store PATH|URL the command works on that store with no server (a hub runs in this "
    "process). Otherwise it talks to a running Jupyter server: --url (or "
    "$STREAMCHAT_SERVER_URL), else the only running server of this user whose chat answers; "
    "with several, it lists them and asks for --url. The token: --token, $STREAMCHAT_TOKEN, a "
    "?token= in the URL, or the one a local server wrote in its runtime info.",
    79,
    initial_indent="  ",
    subsequent_indent="  ",
)


def _epilog(extra: str = "") -> str:
    return (_fill(extra) + "\n\n" if extra else "") + TARGET_HELP + "\n\n" + exit_codes_text()


def _fill(text: str) -> str:
    """A paragraph wrapped for an 80-column terminal (the formatter keeps texts as given, so
    that the lists in the epilogs keep their lines)."""
    return textwrap.fill(text, 79)


def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default = (lambda value: argparse.SUPPRESS) if suppress else (lambda value: value)
    group = parser.add_argument_group("target and output")
    group.add_argument(
        "--url",
        default=default(None),
        metavar="URL",
        help="the Jupyter server's URL, base URL included "
        "(default: $STREAMCHAT_SERVER_URL, else the only running one)",
    )
    group.add_argument(
        "--token",
        default=default(None),
        metavar="TOKEN",
        help="its token (default: $STREAMCHAT_TOKEN, else the server's runtime "
        "info); visible to other users in the process list, so prefer "
        "$STREAMCHAT_TOKEN",
    )
    group.add_argument(
        "--store",
        default=default(None),
        metavar="PATH|URL",
        help="work on this store with no server: a SQLite file "
        "(e.g. $(jupyter --data-dir)/streamchat.db) or a store URL "
        "(sqlite:////abs/path.db)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print one JSON document for scripts instead of text",
    )
    group.add_argument(
        "--debug", action="store_true", default=default(False), help="log what happens, on stderr"
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=formatter,
        description=_fill(
            "Streaming chat with AI agents in Jupyter, from the command line: list, "
            "show, export and delete conversations, send a message and watch the "
            "reply stream in. Run `jupyter streamchat COMMAND --help` for a command."
        ),
        epilog=_epilog(),
    )
    parser.add_argument(
        "--version", action="version", version=__version__, help="print the version and exit"
    )
    _common(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _common(common, suppress=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, summary: str, description: str, extra: str = ""):
        return commands.add_parser(
            name,
            parents=[common],
            help=summary,
            description=_fill(description),
            epilog=_epilog(extra),
            formatter_class=formatter,
        )

    listing = command(
        "list",
        "list conversations, most recent first",
        "List conversations, most recent first: id, last update (local time), number of "
        "messages, latest agent, title.",
        '--json prints {"conversations": [entries as GET streamchat/api/conversations '
        'lists them], "more": true|false}.',
    )
    listing.add_argument(
        "--search",
        "-s",
        metavar="TEXT",
        help="only the conversations holding TEXT (in a title or a message, "
        "ignoring case); search results show a snippet",
    )
    listing.add_argument(
        "--limit",
        "-n",
        type=_positive,
        default=p.LIST_PAGE,
        metavar="N",
        help=f"at most N conversations (default {p.LIST_PAGE})",
    )
    listing.add_argument("--all", "-a", action="store_true", help="all of them")

    show = command(
        "show",
        "print a conversation",
        "Print a conversation's messages, oldest first: who wrote each (user, or the agent "
        "with the reply's status: complete, stopped, interrupted, error, streaming), when, "
        "and its text as written (Markdown).",
        "--json prints the conversation as GET streamchat/api/conversations/ID answers it.",
    )
    show.add_argument("id", metavar="ID", help="the conversation's id (see `list`)")

    export = command(
        "export",
        "export a conversation as Markdown or JSON",
        "Write a conversation as a Markdown document (as the chat's Export button makes it) "
        "or as JSON (as GET streamchat/api/conversations/ID answers it).",
    )
    export.add_argument("id", metavar="ID", help="the conversation's id")
    export.add_argument(
        "--format",
        "-f",
        choices=("md", "json"),
        help="md (default) or json; with -o FILE.json, json",
    )
    export.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="write to FILE (replaced once whole) instead of stdout",
    )
    export.add_argument(
        "--thinking", action="store_true", help="md: include each reply's thinking, folded"
    )

    delete = command(
        "delete",
        "delete a conversation",
        "Delete a conversation and its messages; a reply still being written is stopped "
        "first. On a terminal it asks first (answering no exits 1); elsewhere (a script) it "
        "needs --yes.",
        '--json prints {"conversationId": ID, "deleted": true}.',
    )
    delete.add_argument("id", metavar="ID", help="the conversation's id")
    delete.add_argument("--yes", "-y", action="store_true", help="do not ask")

    send = command(
        "send",
        "send a message; the reply streams to stdout",
        "Send a message to an agent and print the reply as it streams in. The conversation "
        "id goes to stderr (`conversation: ID`) so a script can continue it with "
        "--conversation ID. Ctrl-C stops the reply: what was written so far is kept (status "
        "stopped) and the command exits 130; a second Ctrl-C leaves without waiting.",
        "--json prints nothing while the reply streams, then one document: {conversationId, "
        "agentId, userMessageId, messageId, status, text} and, where the reply has them, "
        "error, reasoning and usage (wire names, as in docs/protocol.md). The exit code "
        "follows the reply: 0 complete, 1 error or interrupted, 130 stopped by Ctrl-C.",
    )
    send.add_argument("text", metavar="TEXT", help="the message; - reads it from stdin")
    send.add_argument(
        "--agent",
        "-A",
        metavar="AGENT",
        help=f"the agent (see `agents`); default: the one the conversation last "
        f"used, else {DEFAULT_AGENT_TEXT}",
    )
    send.add_argument(
        "--conversation",
        "-c",
        metavar="ID",
        help="continue this conversation (default: start a new one)",
    )

    command(
        "agents",
        "list the agents",
        "List the agents that can answer: id, name, description.",
        '--json prints GET streamchat/api/agents\' answer: {"agents": [{id, name, '
        'description}], "maxMessageBytes": N}.',
    )
    return parser
