"""What one hostile party (a model server, or a client asking for costly store work) costs
the Jupyter server and everybody else on it.

A real ``jupyter server`` (the checkout's extension) over a store of 1,000,000 messages (100,000
with ``--quick``; built by bench_search.py and copied), a model server in a process of its own
(tests/hostile_model.py) and, in this process, clients on real WebSockets and HTTP. In every
round, ten "bystander" replies stream stamped tokens (each token is the time the model server
sent it) at 50 tokens/s through the ``openai`` agent, and the clients record each token's delay
from the model server to them; and another client asks for the HISTORY of a small
conversation every 20 ms (SUBSCRIBE, then UNSUBSCRIBE) and records how long it waited. Beside
them, one of:

- nothing: the floor, measured in the same run;
- a 50 MB delta: the reply asks again as soon as one ends, so the server always has one coming;
- a never-ending event (``data: xxxx...`` with no line end), asked again likewise;
- 10,000 tiny deltas a second for the whole round;
- two clients searching, over and over, the costliest queries (2 characters, read with LIKE;
  a run of 200 ``a``) over the whole store;
- a client exporting a conversation of 30 MiB over and over, and one reading it whole (REST).

Printed: the bystanders' token-to-client p50 / p99 / max, the ratio of the p99 to the floor's,
the HISTORY wait p99 / max, the server's peak memory growth over the round (VmHWM), and what
the hostile party got. Rounds are interleaved and repeated (``--repeat``, default 3), and
medians are reported.

    python bench/bench_hostile.py [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_search import build  # noqa: E402
from harness.client import connect, frame_of, next_frame, send, send_message  # noqa: E402
from harness.processes import memory_status, reset_peak, start_announcing  # noqa: E402
from harness.report import mib  # noqa: E402
from harness.stats import median, percentile  # noqa: E402
from server_process import JupyterServer, free_port  # noqa: E402

BYSTANDERS = 10
RATE = 50  # tokens/s of each bystander
ROUND_SECONDS = 4.0
CASES = {
    "floor: no hostile reply": None,
    "a 50 MB delta (asked again and again)": "huge-50",
    "a never-ending event (again and again)": "endless",
    "10,000 tiny deltas/s": "flood-10000-{count}",
    "searches: 2 characters and 200 x 'a', 2 clients": "search",
    "export and REST read of a 30 MiB conversation": "export",
}
LONG_MIB = 30
PROBE_EVERY = 0.02  # seconds between HISTORY requests


def peak_rss(pid: int) -> int:
    return memory_status(pid).get("VmHWM", 0)


def chat(server: JupyterServer):
    """A WebSocket to the server's chat."""
    return connect(server.ws_url(), server.token)


async def reply(
    server: JupyterServer, text: str, delays: list | None = None, guard: float = 120.0
) -> dict:
    """Send ``text`` to the hostile agent and read the reply to its end; for stamped replies,
    add each token's delay to ``delays``."""
    ws = await chat(server)
    try:
        send_message(ws, "hostile", text)
        chars, deadline = 0, time.monotonic() + guard
        while time.monotonic() < deadline:
            raw = await asyncio.wait_for(ws.read_message(), guard)
            if raw is None:
                return {"status": "closed", "chars": chars}
            frame = json.loads(raw)
            if frame.get("type") != "MESSAGE_CHUNK":
                continue
            now = time.time()
            chars += len(frame["chunk"])
            if delays is not None:
                for stamp in frame["chunk"].split():
                    delays.append(now - float(stamp))
            if frame["isComplete"]:
                return {"status": frame["status"], "chars": chars, "error": frame.get("error", "")}
        return {"status": "guard", "chars": chars}
    finally:
        ws.close()


async def hostile_loop(server: JupyterServer, script: str, until: float, results: list) -> None:
    """Ask for the hostile reply again each time one ends, until the round ends."""
    for _ in range(10_000):  # bounded
        if time.monotonic() >= until:
            return
        results.append(await reply(server, script))


async def http_loop(server: JupyterServer, path: str, until: float, results: list) -> None:
    """GET ``path`` over and over until the round ends; record what each answer was."""
    client = AsyncHTTPClient(force_instance=True, max_body_size=1 << 30)
    try:
        for _ in range(10_000):  # bounded
            if time.monotonic() >= until:
                return
            started = time.monotonic()
            try:
                answer = await client.fetch(
                    server.http_url(path), headers=server.auth_headers(), request_timeout=120
                )
                code, size = answer.code, len(answer.body)
            except HTTPClientError as e:
                code, size = e.code, 0
            results.append(
                {
                    "status": f"HTTP {code}",
                    "chars": size,
                    "error": "",
                    "seconds": time.monotonic() - started,
                }
            )
    finally:
        client.close()


async def history_probe(
    server: JupyterServer, conversation: str, until: float, waits: list
) -> None:
    """SUBSCRIBE to a small conversation every PROBE_EVERY seconds; record the wait for its
    HISTORY."""
    ws = await chat(server)
    try:
        for _ in range(100_000):  # bounded
            if time.monotonic() >= until:
                return
            started = time.monotonic()
            send(ws, "SUBSCRIBE", conversationId=conversation)
            frame, _ = await asyncio.wait_for(frame_of(ws, ("HISTORY",), conversation), 60)
            if frame["type"] == "ERROR":
                raise RuntimeError(f"SUBSCRIBE refused: {frame}")
            waits.append(time.monotonic() - started)
            send(ws, "UNSUBSCRIBE", conversationId=conversation)
            await asyncio.sleep(max(0.0, started + PROBE_EVERY - time.monotonic()))
    finally:
        ws.close()


def store_work(
    server: JupyterServer, kind: str, long_conversation: str, until: float, results: list
) -> list:
    if kind == "search":
        return [
            http_loop(server, "streamchat/api/conversations?q=zq", until, results),
            http_loop(server, "streamchat/api/conversations?q=" + "a" * 200, until, results),
        ]
    return [
        http_loop(
            server, f"streamchat/api/conversations/{long_conversation}/export", until, results
        ),
        http_loop(server, f"streamchat/api/conversations/{long_conversation}", until, results),
    ]


async def one_round(
    server: JupyterServer, script: str | None, seconds: float, conversations: dict
) -> dict:
    count = int(RATE * seconds)
    delays: list = []
    waits: list = []
    hostile: list = []
    reset_peak(server.pid)
    await asyncio.sleep(0.2)
    base = peak_rss(server.pid)
    until = time.monotonic() + seconds
    tasks = [reply(server, f"stamped-{RATE}-{count}", delays) for _ in range(BYSTANDERS)]
    tasks.append(history_probe(server, conversations["small"], until, waits))
    if script in ("search", "export"):
        tasks += store_work(server, script, conversations["long"], until, hostile)
    elif script is not None and script.startswith("flood"):
        tasks.append(reply(server, script.format(count=int(10_000 * seconds))))
    elif script is not None:
        tasks.append(hostile_loop(server, script, until, hostile))
    results = await asyncio.gather(*tasks)
    bystanders = results[:BYSTANDERS]
    if script is not None and script.startswith("flood"):
        hostile.append(results[-1])
    return {
        "p50": percentile(delays, 50),
        "p99": percentile(delays, 99),
        "max": max(delays),
        "history p99": percentile(waits, 99),
        "history max": max(waits),
        "tokens": len(delays),
        "expected": BYSTANDERS * count,
        "complete": sum(r["status"] == "complete" for r in bystanders),
        "grown": peak_rss(server.pid) - base,
        "hostile": hostile,
    }


async def start_model(base: Path) -> tuple:
    """tests/hostile_model.py in a process of its own; -> (child, its base URL)."""
    port = free_port()
    child, _ = await start_announcing(
        "the hostile model server",
        [sys.executable, str(ROOT / "tests" / "hostile_model.py"), f"--port={port}"],
        base / "model.log",
    )
    return child, f"http://127.0.0.1:{port}/v1"


def start_server(base: Path, model_url: str, store: Path) -> JupyterServer:
    server = JupyterServer(base, f"--SQLiteStore.path={store}")
    config_file = base / "config" / "jupyter_server_config.json"
    config = json.loads(config_file.read_text())
    config["StreamChatApp"] = {
        "agents": {
            "hostile": {
                "class": "openai",
                "base_url": model_url,
                "model": "hostile",
                "api_key": "sk-bench",
                "max_retries": 0,
                "timeout": 10.0,
                "max_reply_chars": 100_000_000,
            }
        }
    }
    config_file.write_text(json.dumps(config))
    return server.start().wait_ready()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"  # whole ms: the figures here are tens of ms


async def run(args) -> None:
    seconds = 2.0 if args.quick else ROUND_SECONDS
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        base = Path(tmp)
        size = 100_000 if args.quick else 1_000_000
        store = base / "store.db"
        shutil.copyfile(build(size), store)
        model, url = await start_model(base)
        server = None
        try:
            server = start_server(base / "server", url, store)
            conversations = {"small": "c1", "long": await long_conversation(server)}
            await one_round(server, None, 1.0, conversations)  # warm up
            rounds: dict = {name: [] for name in CASES}
            for _ in range(args.repeat):
                for name, script in CASES.items():  # interleaved: drift hits every case
                    rounds[name].append(await one_round(server, script, seconds, conversations))
        finally:
            if server is not None:
                server.stop()
            await model.stop()
    report(rounds, seconds, args.repeat, size)


async def long_conversation(server: JupyterServer) -> str:
    """A conversation holding a reply of LONG_MIB MiB, made through the hub."""
    ws = await chat(server)
    conversation = f"c-long-{uuid.uuid4().hex}"
    try:
        send_message(ws, "hostile", f"long-{LONG_MIB}", conversation)
        for _ in range(1_000_000):  # bounded
            frame, _ = await asyncio.wait_for(next_frame(ws), 120)
            if frame.get("type") == "MESSAGE_CHUNK" and frame["isComplete"]:
                if frame["status"] != "complete":
                    raise RuntimeError(
                        f"the long reply ended {frame['status']}: {frame.get('error')}"
                    )
                return conversation
    finally:
        ws.close()
    raise RuntimeError("the long reply did not end")


def report(rounds: dict, seconds: float, repeat: int, size: int) -> None:
    med = lambda name, key: median(r[key] for r in rounds[name])  # noqa: E731
    floor = med(next(iter(CASES)), "p99")
    print(
        f"\n{BYSTANDERS} bystander replies at {RATE} tokens/s for {seconds:g} s and a HISTORY "
        f"every {PROBE_EVERY * 1000:.0f} ms, beside one hostile party, on a store of "
        f"{size:,} messages; medians of {repeat} interleaved rounds (2 shared cores)\n"
    )
    print(
        "| beside the bystanders | token-to-client p50 | p99 | max | p99 / floor | tokens seen |"
        " HISTORY p99 | max | server memory growth | the hostile party got |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name in CASES:
        seen = f"{med(name, 'tokens'):.0f} / {rounds[name][0]['expected']}"
        hostile = [h for r in rounds[name] for h in r["hostile"]]
        if hostile:
            ends = sorted(
                {
                    (h["error"] or h["status"]).split(" sent ")[-1].split(" left ")[-1][:40]
                    for h in hostile
                }
            )
            what = f"{len(hostile) / repeat:.0f} answers per round: {'; '.join(ends)}"
        else:
            what = ""
        print(
            f"| {name} | {ms(med(name, 'p50'))} | {ms(med(name, 'p99'))} | "
            f"{ms(med(name, 'max'))} | {med(name, 'p99') / floor:.2f} | {seen} | "
            f"{ms(med(name, 'history p99'))} | {ms(med(name, 'history max'))} | "
            f"{mib(med(name, 'grown'))} | {what} |"
        )
    print(
        "\nGoals: memory growth a few MiB whatever a model server sends; bystanders' p99 under "
        "100 ms; no HISTORY held more than 50 ms by another client's store work."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 s rounds")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
