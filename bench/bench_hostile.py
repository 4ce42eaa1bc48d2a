"""What one hostile model server costs the Jupyter server and everybody else on it.

A real ``jupyter server`` (the checkout's extension), a model server in a process of its own
(tests/hostile_model.py) and, in this process, clients on real WebSockets. In every round, ten
"bystander" replies stream stamped tokens (each token is the time the model server sent it) at
50 tokens/s for 4 s through the ``openai`` agent, and the clients record each token's delay
from the model server to them. Beside them, one of:

- nothing: the floor, measured in the same run;
- a 50 MB delta: the reply asks again as soon as one ends, so the server always has one coming;
- a never-ending event (``data: xxxx...`` with no line end), asked again likewise;
- 10,000 tiny deltas a second for the whole round.

Printed: the bystanders' token-to-client p50 / p99 and the ratio of the p99 to the floor's, and
the server's peak memory growth over the round (VmHWM), and what the hostile replies sent.
Rounds are interleaved and repeated (``--repeat``, default 3), and medians are reported.

    python bench/bench_hostile.py [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from server_process import JupyterServer, free_port  # noqa: E402

BYSTANDERS = 10
RATE = 50  # tokens/s of each bystander
ROUND_SECONDS = 4.0
CASES = {
    "floor: no hostile reply": None,
    "a 50 MB delta (asked again and again)": "huge-50",
    "a never-ending event (again and again)": "endless",
    "10,000 tiny deltas/s": "flood-10000-{count}",
}


def peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak(pid: int) -> None:
    """Start VmHWM again from the current size (Linux: write 5 to clear_refs)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def percentile(values: list, pct: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(pct / 100 * (len(values) - 1))))]


async def connect(server: JupyterServer):
    request = HTTPRequest(server.ws_url(), headers=server.auth_headers(), connect_timeout=10)
    return await websocket_connect(request, max_message_size=64 * 1024 * 1024)


async def reply(server: JupyterServer, text: str, delays: list | None = None,
                guard: float = 120.0) -> dict:
    """Send ``text`` to the hostile agent and read the reply to its end; for stamped replies,
    add each token's delay to ``delays``."""
    ws = await connect(server)
    try:
        ws.write_message(json.dumps({
            "type": "SEND_MESSAGE", "conversationId": f"c-{uuid.uuid4().hex}",
            "agentId": "hostile", "text": text, "clientMessageId": uuid.uuid4().hex}))
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
                return {"status": frame["status"], "chars": chars,
                        "error": frame.get("error", "")}
        return {"status": "guard", "chars": chars}
    finally:
        ws.close()


async def hostile_loop(server: JupyterServer, script: str, until: float, results: list) -> None:
    """Ask for the hostile reply again each time one ends, until the round ends."""
    for _ in range(10_000):  # bounded
        if time.monotonic() >= until:
            return
        results.append(await reply(server, script))


async def one_round(server: JupyterServer, script: str | None, seconds: float) -> dict:
    count = int(RATE * seconds)
    delays: list = []
    hostile: list = []
    reset_peak(server.pid)
    await asyncio.sleep(0.2)
    base = peak_rss(server.pid)
    until = time.monotonic() + seconds
    tasks = [reply(server, f"stamped-{RATE}-{count}", delays) for _ in range(BYSTANDERS)]
    if script is not None:
        if script.startswith("flood"):
            tasks.append(reply(server, script.format(count=int(10_000 * seconds))))
        else:
            tasks.append(hostile_loop(server, script, until, hostile))
    results = await asyncio.gather(*tasks)
    bystanders = results[:BYSTANDERS]
    if script is not None and script.startswith("flood"):
        hostile.append(results[-1])
    return {
        "p50": percentile(delays, 50), "p99": percentile(delays, 99),
        "tokens": len(delays), "expected": BYSTANDERS * count,
        "complete": sum(r["status"] == "complete" for r in bystanders),
        "grown": peak_rss(server.pid) - base,
        "hostile": hostile,
    }


def start_model(base: Path) -> tuple:
    port = free_port()
    log = open(base / "model.log", "wb")
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "hostile_model.py"),
                             f"--port={port}"], stdout=log, stderr=subprocess.STDOUT)
    for _ in range(100):
        if b"hostile model server at" in (base / "model.log").read_bytes():
            return proc, f"http://127.0.0.1:{port}/v1"
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the hostile model server did not start")


def start_server(base: Path, model_url: str) -> JupyterServer:
    server = JupyterServer(base)
    config_file = base / "config" / "jupyter_server_config.json"
    config = json.loads(config_file.read_text())
    config["StreamChatApp"] = {"agents": {"hostile": {
        "class": "openai", "base_url": model_url, "model": "hostile", "api_key": "sk-bench",
        "max_retries": 0, "timeout": 10.0}}}
    config_file.write_text(json.dumps(config))
    return server.start().wait_ready()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def mib(size: float) -> str:
    return f"{size / 2**20:.1f} MiB"


async def run(args) -> None:
    seconds = 2.0 if args.quick else ROUND_SECONDS
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        base = Path(tmp)
        model, url = start_model(base)
        server = None
        try:
            server = start_server(base / "server", url)
            await one_round(server, None, 1.0)  # warm up: imports, first connections
            rounds: dict = {name: [] for name in CASES}
            for _ in range(args.repeat):
                for name, script in CASES.items():  # interleaved: drift hits every case
                    rounds[name].append(await one_round(server, script, seconds))
        finally:
            if server is not None:
                server.stop()
            model.kill()
    report(rounds, seconds, args.repeat)


def report(rounds: dict, seconds: float, repeat: int) -> None:
    med = lambda name, key: statistics.median(r[key] for r in rounds[name])  # noqa: E731
    floor = med(next(iter(CASES)), "p99")
    print(f"\n{BYSTANDERS} bystander replies at {RATE} tokens/s for {seconds:g} s beside one "
          f"hostile model server; medians of {repeat} interleaved rounds (2 shared cores)\n")
    print("| beside the bystanders | token-to-client p50 | p99 | p99 / floor | tokens seen |"
          " server memory growth | the hostile replies |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name in CASES:
        seen = f"{med(name, 'tokens'):.0f} / {rounds[name][0]['expected']}"
        hostile = [h for r in rounds[name] for h in r["hostile"]]
        if hostile:
            ends = sorted({(h["error"] or h["status"]).split(" sent ")[-1].split(" left ")[-1]
                           [:48] for h in hostile})
            what = f"{len(hostile) / repeat:.0f} per round; ended: {'; '.join(ends)}"
        else:
            what = ""
        print(f"| {name} | {ms(med(name, 'p50'))} | {ms(med(name, 'p99'))} | "
              f"{med(name, 'p99') / floor:.2f} | {seen} | {mib(med(name, 'grown'))} | {what} |")
    print("\nGoals: memory growth a few MiB whatever the model sends; bystanders' p99 < 100 ms.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 s rounds")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
