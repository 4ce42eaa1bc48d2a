"""``jupyter streamchat``: the chat from the command line (docs/cli.md).

``main()`` parses the arguments, chooses the target (:mod:`.target`), runs the sub-command
(:mod:`.commands`) and turns every failure into one line on stderr and an exit code
(:mod:`.errors`); no traceback reaches the user but with ``--debug``.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional

from .. import redact
from .errors import INTERRUPTED, PIPE_CLOSED, CliError

PREFIX = "jupyter streamchat: error: "


def main(argv: Optional[list] = None) -> int:
    from .parser import build_parser

    args = build_parser().parse_args(argv)  # exits 2 on a usage error, 0 for --help
    _setup_output(args.debug)
    client = None
    try:
        from .commands import COMMANDS, message_text
        from .target import choose

        if args.command == "send":  # a bad message is refused before anything is opened
            args.text = message_text(args.text)
        target = choose(args.url, args.token, args.store)
        if target.server is not None:
            redact.register(target.server.token)  # kept out of every error line
            from .remote import RemoteClient

            client = RemoteClient(target.server)
            client.agents()  # the server is there, has the chat, and takes the token
        else:
            from .local import StoreClient

            client = StoreClient(
                target.store_url,
                hub=args.command in ("send", "agents"),
                create=args.command == "send",
            )
        try:
            return COMMANDS[args.command](client, args)
        finally:
            client.close()
    except CliError as e:
        logging.getLogger("jupyter_streamchat.cli").debug("failed", exc_info=True)
        _error(str(e))
        return e.code
    except KeyboardInterrupt:
        _error("interrupted")
        return INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head`): say nothing more, and keep Python from
        # complaining about the flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return PIPE_CLOSED


def _error(message: str) -> None:
    sys.stderr.write(PREFIX + redact.redact(message) + "\n")
    sys.stderr.flush()


def _setup_output(debug: bool) -> None:
    # Text that the terminal's encoding cannot show must not end the command.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.ERROR,
        format="jupyter streamchat: %(levelname)s: %(name)s: %(message)s",
    )
    if not debug:
        # A server that cannot be reached is reported once, as the command's own error.
        logging.getLogger("jupyter_streamchat").setLevel(logging.CRITICAL)
        logging.getLogger("traitlets").setLevel(logging.ERROR)


def run() -> None:
    """The console script ``jupyter-streamchat``."""
    sys.exit(main())
