"""The sub-commands. Each takes a client (:class:`~.remote.RemoteClient` or
:class:`~.local.StoreClient`, which answer in the REST API's shapes) and the parsed arguments,
prints its answer, and returns the exit code; errors are raised as :class:`~.errors.CliError`."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import uuid

from .. import protocol as p
from .errors import FAILED, OK, CliError, NotFound, UsageError
from .output import agents_table, conversation_text, conversations_table, one_line, print_json
from .send import Sender

# The agent a new conversation gets without --agent, as JupyterLab's "New chat" does.
DEFAULT_AGENT = "demo"


def note(text: str) -> None:
    """A line for the person at the terminal, on stderr (stdout stays the answer)."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def list_(client, args) -> int:
    query = (args.search or "").strip()
    limit = None if args.all else args.limit
    entries, more = client.conversations(query, limit)
    if args.json:
        print_json({"conversations": entries, "more": more})
        return OK
    sys.stdout.write(conversations_table(entries))
    if not entries:
        note(f"no conversation holds {query!r}" if query else "no conversations yet")
    elif more:
        note("(more conversations: use --limit N, or --all)")
    return OK


def show(client, args) -> int:
    body = client.conversation(args.id)
    if args.json:
        print_json(body)
    else:
        sys.stdout.write(conversation_text(body))
    return OK


def export(client, args) -> int:
    output = None if args.output in (None, "-") else args.output
    form = args.format or ("json" if output and output.lower().endswith(".json") else "md")
    if output is None:
        sys.stdout.flush()
        _export(client, args, form, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return OK
    # Into a new file beside the target, renamed over it once whole: a conversation that
    # does not exist, or a failure half-way, leaves no file (or the old one) behind.
    folder = os.path.dirname(os.path.abspath(output))
    fd, temporary = tempfile.mkstemp(prefix=".streamchat-export-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            _export(client, args, form, out)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, output)
    except BaseException:
        os.unlink(temporary)
        raise
    return OK


def _export(client, args, form: str, out) -> None:
    if form == "md":
        client.export_markdown(args.id, args.thinking, out)
    else:
        body = client.conversation(args.id)
        out.write(json.dumps(body, ensure_ascii=False, indent=1).encode("utf-8") + b"\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def delete(client, args) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(
                f"delete asks for confirmation on a terminal; to delete "
                f"{args.id!r} from a script, add --yes"
            )
        body = client.conversation(args.id)  # not found: said before asking
        messages = body["messages"]
        first = next((m["text"] for m in messages if m["role"] == "user"), "")
        sys.stderr.write(
            f"Delete conversation {args.id} ({len(messages)} messages"
            + (f": {one_line(first, 50)!r}" if first else "")
            + ")? [y/N] "
        )
        sys.stderr.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            note("not deleted")
            return FAILED
    client.delete(args.id)
    if args.json:
        print_json({"conversationId": args.id, "deleted": True})
    else:
        print(f"deleted conversation {args.id}")
    return OK


def agents(client, args) -> int:
    body = client.agents()
    if args.json:
        print_json(body)
    else:
        sys.stdout.write(agents_table(body))
    return OK


def send(client, args) -> int:
    text = args.text  # checked by message_text() before the target was chosen
    available = client.agents()
    ids = [agent["id"] for agent in available["agents"]]
    where = client.describe()
    conversation_id = args.conversation or uuid.uuid4().hex
    agent = args.agent
    if args.conversation:
        try:
            messages = client.conversation(args.conversation)["messages"]
        except NotFound:
            raise NotFound(
                f"no conversation {args.conversation!r} on {where} (leave "
                "--conversation out to start a new one)"
            ) from None
        if agent is None:  # the agent it last used, as the chat's picker remembers it
            agent = next((m["agentId"] for m in reversed(messages) if m["agentId"] in ids), None)
    if agent is None:
        agent = DEFAULT_AGENT if DEFAULT_AGENT in ids else (ids[0] if ids else None)
        if agent is None:
            raise NotFound(f"{where} has no agents")
    elif agent not in ids:
        raise NotFound(f"no agent {agent!r} on {where}; its agents: {', '.join(ids) or 'none'}")
    limit = available.get("maxMessageBytes")
    if isinstance(limit, int) and len(text.encode("utf-8")) > limit:
        raise UsageError(
            f"the message is {len(text.encode('utf-8'))} bytes; {where} takes at most {limit}"
        )

    def accepted(frame: dict) -> None:
        if not args.json:
            note(f"conversation: {frame['conversationId']}")

    sender = Sender(
        client.transport(),
        conversation_id,
        agent,
        text,
        None if args.json else sys.stdout,
        where,
        accepted,
        calls_out=None if args.json else sys.stderr,
    )
    result = sender.run()
    if args.json:
        print_json(result)
    elif sender.text and not sender.text.endswith("\n"):
        sys.stdout.write("\n")
        sys.stdout.flush()
    status = result["status"]
    if sender.stop_asked:
        note(f"stopped: the reply ended {status}, its text kept (conversation {conversation_id})")
    elif status == p.ERROR:
        note(
            f"jupyter streamchat: error: the reply ended with an error: "
            f"{' '.join(str(result.get('error') or 'no details').split())}"
        )
    elif status != p.COMPLETE:
        note(f"jupyter streamchat: error: the reply ended {status}")
    return sender.exit_code()


def message_text(value: str) -> str:
    """TEXT, or stdin for ``-`` (its final line breaks dropped, as `$(...)` drops them)."""
    if value == "-":
        value = sys.stdin.read().rstrip("\r\n")
    if not value.strip():
        raise UsageError("the message is empty")
    problem = p.text_problem(value)
    if problem:
        raise UsageError(f"the message {problem}")
    return value


COMMANDS = {
    "list": list_,
    "show": show,
    "export": export,
    "delete": delete,
    "agents": agents,
    "send": send,
}

__all__ = ["COMMANDS", "CliError"]
