"""Benchmark of the hub on a store shared by servers: relay throughput on Postgres, replies
followed across servers, and 1,000 replies at a model's pace on one server or two.

Run ``python bench/bench_shared.py`` (15 to 30 minutes on 2 shared cores) or ``--quick``
(small sizes, a smoke run of 2 to 3 minutes); ``--parts 23`` runs only those parts,
``--repeats`` sets the runs per figure (3). It prints markdown tables, then the raw numbers
behind them. Every server is
a real ``jupyter server`` subprocess on 127.0.0.1 with Jupyter state in a temp dir and the
bench's agents (bench/plugins) installed as an entry-point distribution through PYTHONPATH.
Postgres is a throwaway cluster of this run (bench/harness/postgres.py: the tests'
``PgCluster``, but with ``fsync``, ``full_page_writes`` and ``synchronous_commit`` on, so a
commit waits for its WAL to reach the disk; the SQLite store runs as it ships, WAL with
``synchronous=NORMAL``, where a commit survives the process but not a power cut), never the
machine's service. Figures are medians
of ``--repeats`` runs (or percentiles over all samples), interleaved with the floor or the
other store they are compared with, so that noise on a busy machine hits both alike. Server
CPU is utime + stime from /proc/<pid>/stat; Postgres's CPU (the postmaster and every backend)
is shown apart; disk is /proc/<pid>/io write_bytes minus cancelled_write_bytes, and for
Postgres also the WAL it wrote (``pg_current_wal_insert_lsn`` moved). Linux only.

1. Relay throughput (as bench_hub.py measures it, with its code): tokens/s a WebSocket client
   sees for ``echo`` replies (``c.EchoAgent.delay=0``) from a server on Postgres and one on
   SQLite, beside the raw push (bench_hub.py ``--serve-raw``: bare Tornado, the same echo
   generator, one ``write_message`` per token, nothing stored), for one conversation and for
   100 at once. Goal on Postgres: at least 0.5 x the raw push for one conversation.

2. Cross-server latency. Servers A and B share one Postgres database. One socket on B
   SUBSCRIBEs to N new conversations; then one socket on A sends a SEND_MESSAGE to each, to
   the ``paced`` agent (tokens `` <index>@<µs>`` at 50 tokens/s, stamped with the monotonic
   clock as the agent yields them). A sends a frame to its clients only once the frame's chunk
   is committed, so the arrival of a token at A's client is a proxy (a late one, by A's own
   WebSocket push) for its commit; the figure is, per token, its arrival at B's client minus
   its arrival at A's client (both the same monotonic clock of this process). Shown beside it:
   each side's latency from the agent's stamp, and the floor: a raw Postgres hint over the same
   cluster (psycopg: one connection commits an INSERT and a ``pg_notify``; another, LISTENing,
   gets the notification and SELECTs the row; from the commit's return to the row in hand).
   Goal: p99 < 50 ms on loopback.

3. Scale: 1,000 replies at once, each ``paced`` at 50 tokens/s (a token every 20 ms), 200
   tokens (4 s) each: (a) on one server with SQLite; (b) spread over two servers on one
   Postgres, 500 each; (c) as (b), with every reply also followed by a client of the other
   server. Clients are light: a few aiohttp WebSockets in this process, each sending or
   following up to 250 conversations (harness/fleet.py). Reported per token produced: the
   servers' CPU (goal <= 20 µs, i.e. 1,000 such replies within one core), Postgres's CPU, disk
   (SQLite: the server's write_bytes and the growth of its database files; Postgres: WAL bytes,
   the cluster's write_bytes and the database's growth, with no checkpoint during a run),
   beside two floors: the text's own bytes, and a raw writer of the very frames the clients
   got, one transaction per round of frames across the replies as the stores' writers commit
   (raw sqlite3 with the store's pragmas: its write_bytes; raw psycopg on the same cluster:
   its WAL), measured once per layout after its first round; the p50 / p99
   token-to-client latency from the stamp (goal p99 < 100 ms); the time to deliver 4 s of
   tokens. Every reply is checked exact: complete, seq contiguous at every client, its text
   stamped tokens 0..199 in order, the same text at both servers' clients, and the same text
   in the store (``GET api/conversations/{id}`` after the run, from the other server).

4. jupyterlab-chat beside it, where it can run: bench_models.py drives it (bench/peer: a
   server extension streams into chat documents with ``YChat.update_message(append=True)``
   per token, clients joined over the collaboration WebSocket). With ``--peer`` (default in a
   full run) this script runs that driver once, at 100 replies of 200 tokens at 50 tokens/s,
   and prints its CPU per token and latency; it has no shared store for several servers (its
   documents live in one server's rooms and files), and at 1,000 replies it cannot keep up.

Every wait has a timeout and every loop a bound. A part that fails (Postgres store missing,
the peer not installable) is reported as not measured, with the reason.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import tornado

HERE = Path(__file__).resolve().parent
PLUGINS = HERE / "plugins"  # the ``paced`` agent, as an installed distribution
sys.path.insert(0, str(PLUGINS))

import bench_hub  # noqa: E402  (the relay run and its raw push floor, as that bench has them)
from harness.fleet import Fleet, wait_histories  # noqa: E402
from harness.postgres import BenchCluster, postgres_missing, sleep_until_quiet  # noqa: E402
from harness.processes import Children, process_cpu, process_write_bytes  # noqa: E402
from harness.report import attempt, first_line, ms, table, verdict  # noqa: E402
from harness.servers import HOST, Jupyter, api, quiet_config, start_jupyter, start_raw  # noqa: E402
from harness.stats import median, percentile  # noqa: E402

RATE = 50.0  # tokens per second of a paced reply
SOCKET_CONVERSATIONS = 250  # conversations one client socket sends or follows at most
SETTLE_BEFORE = 1.0  # seconds between the clients being ready and the first request
GUARD = 120.0  # seconds on top of a run's due time; only turns a hang into an error
SCALE_GUARD = 600.0  # the same for part 3, where a store that falls behind may take minutes
SHARED_CPUS = "2 CPUs shared with other work"


@dataclass
class Settings:
    repeats: int
    one_tokens: int  # part 1: one conversation
    many: int  # part 1: conversations at once
    many_tokens: int
    follow_replies: int  # part 2: replies per round
    follow_tokens: int
    floor_samples: int  # part 2: raw hints
    scale_replies: int  # part 3
    scale_tokens: int
    peer: bool
    parts: str = "1234"
    peer_chats: int = 100


def settings_from(args) -> Settings:
    peer = args.peer if args.peer is not None else not args.quick
    if args.quick:
        return Settings(args.repeats, 5_000, 100, 500, 5, 100, 100, 100, 100, peer, args.parts)
    return Settings(args.repeats, 20_000, 100, 1_000, 20, 200, 300, 1_000, 200, peer, args.parts)


# -- servers ----------------------------------------------------------------------------------


def postgres_store_missing() -> str | None:
    """Why a server cannot run on Postgres here, or None."""
    try:
        from jupyter_streamchat.store.postgres import PostgresStore  # noqa: F401
    except ImportError as e:
        return f"no Postgres store here ({first_line(e)})"
    return postgres_missing()


async def start_sqlite_server(base: Path) -> Jupyter:
    return await start_jupyter(
        base,
        ["--EchoAgent.delay=0", f"--SQLiteStore.path={base / 'chat.db'}"],
        python_path=[PLUGINS],
        agents=("echo", "paced"),
        name="server on SQLite",
    )


async def start_postgres_server(base: Path, url: str, name: str) -> Jupyter:
    # The URL (it holds the role's password) goes into the server's config file, not its
    # command line, where any process listing would show it.
    return await start_jupyter(
        base,
        ["--EchoAgent.delay=0"],
        config=quiet_config(StreamChatApp={"store_url": url}),
        python_path=[PLUGINS],
        agents=("echo", "paced"),
        name=name,
    )


@dataclass
class Setup:
    sqlite: Jupyter
    raw: bench_hub.Server
    cluster: BenchCluster | None = None
    a: Jupyter | None = None  # on Postgres
    b: Jupyter | None = None  # on the same database
    postgres_error: str | None = None


# -- 1. relay throughput ----------------------------------------------------------------------


async def bench_relay(s: Settings, setup: Setup) -> dict:
    sides = {
        "sqlite": bench_hub.Server(setup.sqlite.ws_url, setup.sqlite.token, setup.sqlite.child.pid)
    }
    if setup.a is not None:
        sides["postgres"] = bench_hub.Server(setup.a.ws_url, setup.a.token, setup.a.child.pid)
    sides["raw"] = setup.raw
    results = {}
    for label, conversations, tokens_each in [
        ("one", 1, s.one_tokens),
        ("many", s.many, s.many_tokens),
    ]:
        runs: dict = {name: [] for name in sides}
        pg_cpu: list = []
        for server in sides.values():  # warm-up, not counted
            await bench_hub.stream_run(server.url, server.token, server.pid, conversations, 200)
        for _ in range(s.repeats):
            for name, server in sides.items():  # interleaved: noise hits every side
                before = setup.cluster.cpu() if name == "postgres" else 0.0
                runs[name].append(
                    await bench_hub.stream_run(
                        server.url, server.token, server.pid, conversations, tokens_each
                    )
                )
                if name == "postgres":
                    pg_cpu.append(setup.cluster.cpu() - before)
        tokens = conversations * tokens_each
        results[label] = dict(
            conversations=conversations,
            tokens_each=tokens_each,
            sides={
                name: dict(
                    rate=median(r.rate for r in rs),
                    frames=median(r.frames for r in rs),
                    cpu=median(r.server_cpu for r in rs) / tokens,
                    all=[r.rate for r in rs],
                )
                for name, rs in runs.items()
            },
            postgres_cpu=median(pg_cpu) / tokens if pg_cpu else None,
        )
    return results


# -- 2. cross-server latency ------------------------------------------------------------------


def paced_text(tokens: int) -> str:
    return f"{tokens} {RATE:g}"


async def all_ended(sockets: list, seconds: float) -> None:
    """Until every socket has seen its replies end (or its reader stopped), at most
    ``seconds``; a timeout says what each socket saw."""
    try:
        await asyncio.wait_for(
            asyncio.gather(*(socket.all_ended.wait() for socket in sockets)), seconds
        )
    except asyncio.TimeoutError:
        late = [socket.state() for socket in sockets if socket.ended < socket.expected]
        raise RuntimeError(f"replies not ended in {seconds:.0f} s: {'; '.join(late)}") from None


async def follow_round(s: Settings, a: Jupyter, b: Jupyter, tag: str) -> dict:
    n, tokens = s.follow_replies, s.follow_tokens
    conversations = [f"c-follow-{tag}-{i}" for i in range(n)]
    async with Fleet() as fleet:
        frames = n * (tokens + 10) * 4  # a hang guard: replies of ``tokens`` take fewer
        sender = await fleet.open(a.ws_url, a.token, "A", frames)
        follower = await fleet.open(b.ws_url, b.token, "B", frames)
        await follower.subscribe(conversations)
        await wait_histories([follower])
        sender.expect(n)
        follower.expect(n)
        await asyncio.sleep(SETTLE_BEFORE)
        for conversation in conversations:
            await sender.send_message("paced", paced_text(tokens), conversation)
        await all_ended([sender, follower], tokens / RATE + GUARD)
        errors = sender.errors + follower.errors
        if errors:
            raise RuntimeError(f"{len(errors)} errors, the first: {errors[0]}")
        own, other, cross = [], [], []
        for message_id, track in sender.tracks.items():
            problem = track.problem(tokens)
            seen = follower.tracks.get(message_id)
            if problem is None and seen is None:
                problem = "not seen at B"
            if problem is None:
                problem = seen.problem(tokens) or (
                    None if seen.text == track.text else "another text at B"
                )
            if problem:
                raise RuntimeError(f"reply {message_id}: {problem}")
            at_a = {index: at for index, _, at in track.arrivals}
            own.extend(at - stamp for _, stamp, at in track.arrivals)
            other.extend(at - stamp for _, stamp, at in seen.arrivals)
            cross.extend(at - at_a[index] for index, _, at in seen.arrivals)
        if len(sender.tracks) != n:
            raise RuntimeError(f"{len(sender.tracks)} replies at A, not {n}")
    return dict(own=own, other=other, cross=cross)


async def notify_floor(url: str, samples: int, interval: float = 0.02) -> dict:
    """The least a hint across servers costs: a committed INSERT + pg_notify on one
    connection, the notification and a SELECT of the row on another (seconds from the
    commit's return to the row in hand); and the commit itself (seconds)."""
    import psycopg

    trips, commits = [], []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as listener:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as writer:
            await writer.execute(
                "CREATE TABLE IF NOT EXISTS bench_hint (id bigint PRIMARY KEY, body text)"
            )
            await listener.execute("LISTEN bench_hint")
            body = " 0@0000000000000" * 3  # about a frame's chunk
            for i in range(samples + 5):  # the first five warm up
                started = time.perf_counter()
                async with writer.transaction():
                    await writer.execute("INSERT INTO bench_hint VALUES (%s, %s)", (i, body))
                    await writer.execute("SELECT pg_notify('bench_hint', %s)", (str(i),))
                committed = time.perf_counter()
                got = None
                async for note in listener.notifies(timeout=10, stop_after=1):
                    got = note
                if got is None:
                    raise RuntimeError("no notification within 10 s")
                row = await (
                    await listener.execute(
                        "SELECT body FROM bench_hint WHERE id = %s", (int(got.payload),)
                    )
                ).fetchone()
                if row is None or row[0] != body:
                    raise RuntimeError("the notified row is missing")
                if i >= 5:
                    trips.append(time.perf_counter() - committed)
                    commits.append(committed - started)
                await asyncio.sleep(interval)
            await writer.execute("DROP TABLE bench_hint")
    return dict(trips=trips, commits=commits)


async def bench_follow(s: Settings, setup: Setup) -> dict:
    floor_url = setup.cluster.create_database("bench_hint")
    own, other, cross, floor, commits = [], [], [], [], []
    await follow_round(s, setup.a, setup.b, "warm")  # not counted
    for r in range(s.repeats):
        got = await follow_round(s, setup.a, setup.b, f"r{r}")
        own += got["own"]
        other += got["other"]
        cross += got["cross"]
        f = await notify_floor(floor_url, s.floor_samples // s.repeats + 1)
        floor += f["trips"]
        commits += f["commits"]
    return dict(own=own, other=other, cross=cross, floor=floor, commits=commits)


# -- 3. scale ---------------------------------------------------------------------------------


@dataclass
class Layout:
    key: str
    label: str
    servers: list  # the servers that generate the replies, sharing them out
    cross: bool  # every reply also followed by a client of another server
    sqlite_files: tuple = ()


def meter_read(layout: Layout, cluster: BenchCluster | None) -> dict:
    reading = dict(
        cpu=sum(process_cpu(j.child.pid) for j in layout.servers),
        disk=sum(process_write_bytes(j.child.pid) for j in layout.servers),
        files=sum(p.stat().st_size for p in layout.sqlite_files if p.exists()),
    )
    if cluster is not None and layout.key != "sqlite":
        reading.update(
            pg_cpu=cluster.cpu(),
            pg_disk=cluster.write_bytes(),
            lsn=cluster.wal_lsn(),
            pg_size=cluster.database_bytes(),
        )
    return reading


async def settle(layout: Layout, limit: float = 15.0) -> None:
    """Until the servers neither write nor work for half a second (writes left behind by a
    run count in it), at most ``limit`` seconds."""
    await asyncio.sleep(1.0)
    pids = [j.child.pid for j in layout.servers]
    last = (sum(map(process_write_bytes, pids)), sum(map(process_cpu, pids)))
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = (sum(map(process_write_bytes, pids)), sum(map(process_cpu, pids)))
        if now[0] == last[0] and now[1] - last[1] < 0.05:
            return
        last = now


def rounds_of(frames: dict) -> list:
    """The frames of many replies as a writer commits them while they stream side by side:
    round i holds frame i of every reply that has one."""
    longest = max(map(len, frames.values()))
    return [
        [(message_id, i + 1, chunks[i]) for message_id, chunks in frames.items() if i < len(chunks)]
        for i in range(longest)
    ]


def sqlite_floor(path: Path, frames: dict) -> dict:
    """Raw sqlite3 writing the same frames: the store's pragmas (WAL, synchronous=NORMAL),
    a bare (message_id, seq, chunk) table, one transaction per round. -> bytes this process
    sent to storage and the files' growth."""
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(
            "CREATE TABLE chunks (message_id TEXT NOT NULL, seq INTEGER NOT NULL, "
            "chunk TEXT NOT NULL, PRIMARY KEY (message_id, seq)) WITHOUT ROWID"
        )
        files = (path, Path(f"{path}-wal"))
        size = lambda: sum(p.stat().st_size for p in files if p.exists())  # noqa: E731
        disk, grown = process_write_bytes(os.getpid()), size()
        for batch in rounds_of(frames):
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO chunks VALUES (?, ?, ?)", batch)
            conn.execute("COMMIT")
        return dict(disk=process_write_bytes(os.getpid()) - disk, files=size() - grown)
    finally:
        conn.close()


async def postgres_floor(cluster: BenchCluster, frames: dict) -> dict:
    """Raw psycopg writing the same frames into a bare table of the same cluster, one
    transaction per round. -> its WAL bytes."""
    import psycopg

    url = cluster.create_database()
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await conn.execute(
            "CREATE TABLE chunks (message_id text NOT NULL, seq integer NOT NULL, "
            "chunk text NOT NULL, PRIMARY KEY (message_id, seq))"
        )
        await conn.commit()
        start = cluster.wal_lsn()
        for batch in rounds_of(frames):
            async with conn.cursor() as cursor:
                await cursor.executemany("INSERT INTO chunks VALUES (%s, %s, %s)", batch)
            await conn.commit()
    wal = cluster.wal_bytes(start)
    cluster.drop_database(url.rsplit("/", 1)[1])
    return dict(wal=wal)


async def check_store(server: Jupyter, replies: dict, concurrency: int = 10) -> None:
    """Every reply's text as the store holds it, read through ``server``'s REST API, is what
    the clients saw: ``replies`` maps conversation id -> (message id, text)."""
    queue = list(replies.items())
    wrong: list = []

    async def worker():
        while queue:
            conversation_id, (message_id, text) = queue.pop()
            answer = await api(server, "GET", f"streamchat/api/conversations/{conversation_id}")
            stored = [m for m in answer["messages"] if m["messageId"] == message_id]
            if not stored or stored[0]["text"] != text or stored[0]["status"] != "complete":
                wrong.append(conversation_id)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if wrong:
        raise RuntimeError(f"{len(wrong)} replies differ in the store, e.g. {wrong[0]}")


async def scale_round(
    s: Settings, layout: Layout, cluster: BenchCluster | None, followers_of: dict, tag: str
) -> dict:
    n, tokens = s.scale_replies, s.scale_tokens
    count = len(layout.servers)
    frames = SOCKET_CONVERSATIONS * (tokens + 10) * 4  # a hang guard, as above
    async with Fleet() as fleet:
        senders, followers, conversations = [], [], {}
        for index, server in enumerate(layout.servers):
            share = [f"c-scale-{tag}-{index}-{i}" for i in range(n // count)]
            for first in range(0, len(share), SOCKET_CONVERSATIONS):
                part = share[first : first + SOCKET_CONVERSATIONS]
                sender = await fleet.open(server.ws_url, server.token, f"send{index}", frames)
                senders.append((sender, part))
                if layout.cross:
                    other = followers_of[server.child.pid]
                    follower = await fleet.open(other.ws_url, other.token, f"follow{index}", frames)
                    await follower.subscribe(part)
                    followers.append((follower, part))
                for conversation in part:
                    conversations[conversation] = server
        await wait_histories([f for f, _ in followers], 60)
        for socket, part in senders + followers:
            socket.expect(len(part))
        await asyncio.sleep(SETTLE_BEFORE)
        before = meter_read(layout, cluster)
        client_cpu, started = time.process_time(), time.perf_counter()
        text = paced_text(tokens)
        await asyncio.gather(
            *(
                asyncio.gather(*(socket.send_message("paced", text, c) for c in part))
                for socket, part in senders
            )
        )
        await all_ended([socket for socket, _ in senders + followers], tokens / RATE + SCALE_GUARD)
        seconds = time.perf_counter() - started
        client_cpu = time.process_time() - client_cpu
        await settle(layout)
        after = meter_read(layout, cluster)
        errors = [e for socket, _ in senders + followers for e in socket.errors]
        if errors:
            raise RuntimeError(f"{len(errors)} errors, the first: {errors[0]}")

        own, other, texts, bad, sent = [], [], {}, [], {}
        received_frames = 0
        for socket, part in senders:
            received_frames += sum(t.seq for t in socket.tracks.values())
            if len(socket.tracks) != len(part):
                bad.append(f"{len(socket.tracks)} replies at a sender, not {len(part)}")
            for track in socket.tracks.values():
                problem = track.problem(tokens)
                if problem:
                    bad.append(problem)
                texts[track.conversation_id] = (track.message_id, track.text)
                # The frames as stored (the final one's chunk may be empty), for the floors.
                sent[track.message_id] = track.chunks + [""] * (track.seq - len(track.chunks))
                own.extend(at - stamp for _, stamp, at in track.arrivals)
        for socket, part in followers:
            for track in socket.tracks.values():
                problem = track.problem(tokens)
                if problem is None and texts.get(track.conversation_id, (None, ""))[1] != (
                    track.text
                ):
                    problem = "another text at the other server"
                if problem:
                    bad.append(problem)
                other.extend(at - stamp for _, stamp, at in track.arrivals)
            if len(socket.tracks) != len(part):
                bad.append(f"{len(socket.tracks)} replies at a follower, not {len(part)}")
        if bad:
            raise RuntimeError(f"{len(bad)} replies not exact, e.g. {bad[0]}")
        if len(texts) != n // count * count:
            raise RuntimeError(f"{len(texts)} replies, not {n}")
    # Read back from the store through another server than the one that generated a reply
    # where there is one (the store is shared), else the same.
    by_reader: dict = {}
    for conversation, (message_id, text) in texts.items():
        reader = followers_of.get(conversations[conversation].child.pid, layout.servers[0])
        by_reader.setdefault(reader.child.pid, (reader, {}))[1][conversation] = (message_id, text)
    for reader, replies in by_reader.values():
        await check_store(reader, replies)
    produced = len(texts) * tokens
    result = dict(
        seconds=seconds,
        client_cpu=client_cpu,
        tokens=produced,
        frames=received_frames,
        text_bytes=sum(len(t.encode()) for _, t in texts.values()),
        own=own,
        other=other,
        exact=len(texts),
        sent=sent,
        **{k: after[k] - before[k] for k in ("cpu", "disk", "files")},
    )
    if "lsn" in before:
        sleep_until_quiet(cluster)
        result.update(
            pg_cpu=cluster.cpu() - before["pg_cpu"],
            pg_disk=cluster.write_bytes() - before["pg_disk"],
            wal=cluster.wal_bytes(before["lsn"]),
            pg_size=cluster.database_bytes() - before["pg_size"],
        )
    return result


def summarize_scale(rounds: list) -> dict:
    tokens = rounds[0]["tokens"]
    per_token = lambda key: median(r[key] for r in rounds) / tokens  # noqa: E731
    own = [x for r in rounds for x in r["own"]]
    other = [x for r in rounds for x in r["other"]]
    summary = dict(
        rounds=len(rounds),
        tokens=tokens,
        exact=sum(r["exact"] for r in rounds),
        cpu=per_token("cpu"),
        disk=per_token("disk"),
        files=per_token("files"),
        text=per_token("text_bytes"),
        frames=median(r["frames"] for r in rounds),
        seconds=median(r["seconds"] for r in rounds),
        client_cpu=median(r["client_cpu"] for r in rounds),
        own_p50=percentile(own, 50) / 1e6,
        own_p99=percentile(own, 99) / 1e6,
        own_worst=max(own) / 1e6,
        other_p50=percentile(other, 50) / 1e6 if other else None,
        other_p99=percentile(other, 99) / 1e6 if other else None,
        cpu_all=[r["cpu"] / tokens for r in rounds],
        seconds_all=[r["seconds"] for r in rounds],
    )
    if "wal" in rounds[0]:
        summary.update(
            pg_cpu=per_token("pg_cpu"),
            pg_disk=per_token("pg_disk"),
            wal=per_token("wal"),
            pg_size=per_token("pg_size"),
            pg_cpu_all=[r["pg_cpu"] / tokens for r in rounds],
        )
    return summary


async def bench_scale(s: Settings, setup: Setup) -> dict:
    db = setup.sqlite.base / "chat.db"
    layouts = [
        Layout(
            "sqlite",
            "one server, SQLite",
            [setup.sqlite],
            False,
            (db, Path(f"{db}-wal"), Path(f"{db}-shm")),
        )
    ]
    followers_of: dict = {}
    if setup.a is not None:
        followers_of = {setup.a.child.pid: setup.b, setup.b.child.pid: setup.a}
        layouts += [
            Layout("postgres", "two servers, Postgres", [setup.a, setup.b], False),
            Layout(
                "postgres_cross",
                "two servers, Postgres, each reply also followed on the other",
                [setup.a, setup.b],
                True,
            ),
        ]
    rounds: dict = {layout.key: [] for layout in layouts}
    errors: dict = {}
    floors: dict = {}
    agent = [await agent_floor(s) for _ in range(s.repeats)]
    for r in range(s.repeats):
        for layout in layouts:  # interleaved: noise hits every layout
            if layout.key in errors:
                continue
            print(f"  scale: {layout.label}, round {r + 1}...", file=sys.stderr)
            try:
                got = await scale_round(s, layout, setup.cluster, followers_of, f"{layout.key}{r}")
                sent = got.pop("sent")
                if layout.key not in floors:  # once per layout, outside the measured window
                    floors[layout.key] = await store_floor(layout, setup, sent, got["tokens"])
                rounds[layout.key].append(got)
            except Exception as e:  # reported in the table; the other layouts still run
                print(f"  {layout.label} failed: {e!r}", file=sys.stderr)
                errors[layout.key] = f"{type(e).__name__}: {first_line(e)}"
    return dict(
        layouts=layouts,
        results={
            k: dict(summarize_scale(v), floor=floors.get(k))
            for k, v in rounds.items()
            if v and k not in errors
        },
        errors=errors,
        agent=median(agent),
        agent_all=agent,
    )


async def agent_floor(s: Settings) -> float:
    """CPU seconds per token of the ``paced`` agent's own generators alone: as many at once, at
    the same pace, in a bare asyncio loop of this process (no hub, no store, no socket)."""
    from paced_tokens import paced_tokens

    async def drain() -> int:
        count = 0
        async for _ in paced_tokens(s.scale_tokens, RATE):
            count += 1
        return count

    started = time.process_time()
    counts = await asyncio.wait_for(
        asyncio.gather(*(drain() for _ in range(s.scale_replies))), s.scale_tokens / RATE + GUARD
    )
    return (time.process_time() - started) / sum(counts)


async def store_floor(layout: Layout, setup: Setup, sent: dict, tokens: int) -> dict:
    """Per token: what raw sqlite3 (for the SQLite layout) or raw psycopg on the same cluster
    (for Postgres) writes for the very frames the clients got."""
    if layout.key == "sqlite":
        path = setup.sqlite.base / f"floor-{len(sent)}.db"
        got = await asyncio.get_running_loop().run_in_executor(None, sqlite_floor, path, sent)
    else:
        got = await postgres_floor(setup.cluster, sent)
    return {key: value / tokens for key, value in got.items()}


# -- 4. jupyterlab-chat -----------------------------------------------------------------------


async def bench_peer(s: Settings, tmp: Path) -> dict:
    import bench_models as models

    venv = HERE / ".peer-venv"
    await asyncio.get_running_loop().run_in_executor(None, models.ensure_peer_venv, venv)
    server = await models.start_peer(tmp / "peer", venv)
    try:
        await models.peer_round(server, venv, "warmup", chats=1, tokens=20)
        got = await models.peer_round(server, venv, "run", chats=s.peer_chats, tokens=200)
    finally:
        await server.child.stop()
    tokens = s.peer_chats * 200
    return dict(
        chats=s.peer_chats,
        tokens=tokens,
        cpu=got["cpu"] / tokens,
        disk=got["disk"] / tokens,
        seconds=got["seconds"],
        p50=percentile(got["latencies"], 50) / 1e6,
        p99=percentile(got["latencies"], 99) / 1e6,
        versions=models.peer_versions(venv),
    )


# -- report -----------------------------------------------------------------------------------


def us(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1e6:,.1f} µs"


def rate(x: float) -> str:
    return f"{x:,.0f}"


def size(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x / 1024:,.2f} KiB" if x >= 1024 else f"{x:,.0f} B"


def report_relay(relay) -> list:
    out = ["### 1. Relay throughput (echo, delay 0; tokens/s at the client)", ""]
    if isinstance(relay, str):
        return out + [f"not measured: {relay}", ""]
    pg_reason = relay.get("postgres_error")
    rows = []
    for label in ("one", "many"):
        r = relay[label]
        sides = r["sides"]
        what = (
            f"1 conversation × {r['tokens_each']:,} tokens"
            if r["conversations"] == 1
            else f"{r['conversations']} conversations × {r['tokens_each']:,} tokens"
        )
        raw = sides["raw"]
        pg = sides.get("postgres")
        goal = "≥ 0.5 (Postgres)" if label == "one" else ""
        pg_ratio = pg["rate"] / raw["rate"] if pg else None
        rows.append(
            [
                f"{what}: tokens/s",
                rate(pg["rate"]) if pg else f"not measured: {pg_reason}",
                rate(sides["sqlite"]["rate"]),
                rate(raw["rate"]),
                f"{pg_ratio:.2f}" if pg else "–",
                f"{sides['sqlite']['rate'] / raw['rate']:.2f}",
                goal,
                verdict(pg_ratio >= 0.5) if pg and label == "one" else "",
            ]
        )
        rows.append(
            [
                f"{what}: frames sent",
                f"{pg['frames']:,.0f}" if pg else "–",
                f"{sides['sqlite']['frames']:,.0f}",
                f"{raw['frames']:,.0f}",
                "",
                "",
                "",
                "",
            ]
        )
        pg_cpu = f"{us(pg['cpu'])} + {us(r['postgres_cpu'])} in Postgres" if pg else "–"
        rows.append(
            [
                f"{what}: server CPU per token",
                pg_cpu,
                us(sides["sqlite"]["cpu"]),
                us(raw["cpu"]),
                f"{pg['cpu'] / raw['cpu']:.2f}" if pg else "–",
                f"{sides['sqlite']['cpu'] / raw['cpu']:.2f}",
                "",
                "",
            ]
        )
    out += table(
        [
            "measurement",
            "hub on Postgres",
            "hub on SQLite",
            "raw push (floor)",
            "Postgres / raw",
            "SQLite / raw",
            "goal",
            "",
        ],
        rows,
    )
    out.append("")
    for label in ("one", "many"):
        for name, side in relay[label]["sides"].items():
            out.append(f"all runs, {label}, {name}: {', '.join(map(rate, side['all']))} tokens/s")
    return out + [""]


def report_follow(follow, s: Settings) -> list:
    out = [
        f"### 2. Cross-server latency ({s.follow_replies} replies × {s.follow_tokens} tokens at "
        f"{RATE:g} tokens/s per round, {s.repeats} rounds; all tokens)",
        "",
    ]
    if isinstance(follow, str):
        return out + [f"not measured: {follow}", ""]

    def p(samples, pct, scale=1e6):
        return ms(percentile(samples, pct) / scale)

    rows = [
        [
            "token at A's client → at B's client (A's commit proxy → B)",
            p(follow["cross"], 50),
            p(follow["cross"], 99),
            ms(max(follow["cross"]) / 1e6),
            "p99 < 50 ms",
            verdict(percentile(follow["cross"], 99) / 1e6 < 0.05),
        ],
        [
            "agent's stamp → A's client (own server)",
            p(follow["own"], 50),
            p(follow["own"], 99),
            ms(max(follow["own"]) / 1e6),
            "",
            "",
        ],
        [
            "agent's stamp → B's client (other server)",
            p(follow["other"], 50),
            p(follow["other"], 99),
            ms(max(follow["other"]) / 1e6),
            "",
            "",
        ],
        [
            "floor: raw hint, commit of INSERT + pg_notify → row in hand on a LISTENing connection",
            p(follow["floor"], 50, 1),
            p(follow["floor"], 99, 1),
            ms(max(follow["floor"])),
            "",
            "",
        ],
        [
            "for context: that commit (fsync on)",
            p(follow["commits"], 50, 1),
            p(follow["commits"], 99, 1),
            ms(max(follow["commits"])),
            "",
            "",
        ],
    ]
    out += table(["measurement", "p50", "p99", "worst", "goal", ""], rows)
    out.append(f"\n{len(follow['cross']):,} tokens followed; floor: {len(follow['floor'])} hints")
    return out + [""]


def report_scale(scale, s: Settings) -> list:
    out = [
        f"### 3. Scale: {s.scale_replies:,} replies × {s.scale_tokens} tokens at {RATE:g} "
        f"tokens/s at once ({s.scale_tokens / RATE:g} s of tokens; per token produced)",
        "",
    ]
    if isinstance(scale, str):
        return out + [f"not measured: {scale}", ""]
    layouts, results, errors = scale["layouts"], scale["results"], scale["errors"]
    header = ["measurement", *(layout.label for layout in layouts), "goal"]

    def cells(fmt):
        row = []
        for layout in layouts:
            r = results.get(layout.key)
            row.append(fmt(r) if r else f"not measured: {errors.get(layout.key, '?')}")
        return row

    rows = [
        ["servers' CPU per token", *cells(lambda r: us(r["cpu"])), "≤ 20 µs"],
        ["verdict", *cells(lambda r: verdict(r["cpu"] <= 20e-6)), ""],
        [
            "floor: the agent's generators alone (bare asyncio loop, as many at the same pace)",
            *[us(scale["agent"])] * len(layouts),
            "",
        ],
        ["Postgres's CPU per token", *cells(lambda r: us(r.get("pg_cpu"))), ""],
        [
            "disk per token: server processes' write_bytes",
            *cells(lambda r: size(r["disk"])),
            "",
        ],
        [
            "disk per token: SQLite files' growth (db + WAL)",
            *cells(lambda r: size(r["files"]) if "wal" not in r else "–"),
            "",
        ],
        ["disk per token: Postgres WAL", *cells(lambda r: size(r.get("wal"))), ""],
        [
            "disk per token: Postgres processes' write_bytes (WAL pages, rewritten per commit)",
            *cells(lambda r: size(r.get("pg_disk"))),
            "",
        ],
        [
            "disk per token: Postgres database growth (pages a checkpoint writes later)",
            *cells(lambda r: size(r.get("pg_size"))),
            "",
        ],
        [
            "floor: raw sqlite3 / raw psycopg writing the same frames, a commit per round "
            "(SQLite: write_bytes; Postgres: WAL)",
            *cells(
                lambda r: (
                    "–"
                    if not r.get("floor")
                    else size(r["floor"].get("wal", r["floor"].get("disk")))
                )
            ),
            "",
        ],
        ["floor: the text's own bytes per token", *cells(lambda r: size(r["text"])), ""],
        [
            "token → own server's client, p50 / p99",
            *cells(lambda r: f"{ms(r['own_p50'])} / {ms(r['own_p99'])}"),
            "p99 < 100 ms",
        ],
        ["verdict", *cells(lambda r: verdict(r["own_p99"] < 0.1)), ""],
        [
            "token → other server's client, p50 / p99",
            *cells(
                lambda r: (
                    f"{ms(r['other_p50'])} / {ms(r['other_p99'])}"
                    if r["other_p50"] is not None
                    else "–"
                )
            ),
            "p99 < 100 ms",
        ],
        [
            "time to deliver every token (due: the pace)",
            *cells(lambda r: f"{r['seconds']:.2f} s"),
            f"{s.scale_tokens / RATE:g} s",
        ],
        [
            "frames per reply (at its sender's client)",
            *cells(lambda r: f"{r['frames'] / (r['tokens'] / s.scale_tokens):.0f}"),
            "",
        ],
        [
            "replies exact (all rounds)",
            *cells(lambda r: f"{r['exact']:,} / {r['rounds'] * s.scale_replies:,}"),
            "all",
        ],
        ["client process CPU per round", *cells(lambda r: f"{r['client_cpu']:.1f} s"), ""],
    ]
    out += table(header, rows, "l" + "r" * len(layouts) + "l")
    out.append("")
    out.append(f"floor, the agent alone, all runs: {', '.join(us(x) for x in scale['agent_all'])}")
    for layout in layouts:
        r = results.get(layout.key)
        if r:
            extra = (
                f"; Postgres CPU {', '.join(us(x) for x in r['pg_cpu_all'])}"
                if "pg_cpu_all" in r
                else ""
            )
            out.append(
                f"all rounds, {layout.label}: server CPU "
                f"{', '.join(us(x) for x in r['cpu_all'])}{extra}; delivered in "
                f"{', '.join(f'{x:.2f} s' for x in r['seconds_all'])}"
            )
    return out + [""]


def report_peer(peer, s: Settings) -> list:
    out = ["### 4. jupyterlab-chat", ""]
    due = s.scale_replies * RATE  # tokens per second at the scale of part 3
    if isinstance(peer, str):
        return out + [
            f"not run at {s.scale_replies:,} replies: {peer}. It has no store that several "
            "servers share (a chat is a Yjs document in one server's room, saved to a .chat "
            "file), so only part 3's one-server line applies to it.",
            "",
        ]
    cores = peer["cpu"] * due
    out += table(
        ["jupyterlab-chat (bench/peer driver)", "figure"],
        [
            [
                f"{peer['chats']} replies × 200 tokens at {RATE:g}/s: server CPU per token",
                us(peer["cpu"]),
            ],
            ["disk per token (write_bytes)", size(peer["disk"])],
            ["token → client, p50 / p99", f"{ms(peer['p50'])} / {ms(peer['p99'])}"],
            ["time to deliver 4 s of tokens", f"{peer['seconds']:.1f} s"],
        ],
    )
    out.append(
        f"\nNot run at {s.scale_replies:,} replies: at {us(peer['cpu'])} per token, "
        f"{s.scale_replies:,} replies at {RATE:g} tokens/s need about {cores:.0f} cores of "
        "server CPU (this machine has 2), and it has no store that several servers share "
        f"(a chat is a Yjs document in one server's room). Versions: {peer['versions']}."
    )
    return out + [""]


def print_report(s: Settings, setup_notes: list, parts: dict) -> None:
    print(
        f"{SHARED_CPUS} ({os.cpu_count()} seen): figures move with the other work. Python "
        f"{platform.python_version()}, Tornado {tornado.version}; medians of {s.repeats} "
        "interleaved runs. " + " ".join(setup_notes) + "\n"
    )
    lines = report_relay(parts["relay"])
    lines += report_follow(parts["follow"], s)
    lines += report_scale(parts["scale"], s)
    lines += report_peer(parts["peer"], s)
    print("\n".join(lines))


# -- main -------------------------------------------------------------------------------------


async def start_postgres(tmp: Path, setup: Setup, children: Children) -> None:
    missing = postgres_store_missing()
    if missing:
        setup.postgres_error = missing
        return
    try:
        cluster = BenchCluster()
        setup.cluster = cluster
        await asyncio.get_running_loop().run_in_executor(None, cluster.start)
        url = cluster.create_database("bench")
        setup.a = await start_postgres_server(tmp / "pg-a", url, "server A on Postgres")
        children.append(setup.a.child)
        setup.b = await start_postgres_server(tmp / "pg-b", url, "server B on Postgres")
        children.append(setup.b.child)
    except Exception as e:
        print(f"Postgres servers failed: {e!r}", file=sys.stderr)
        setup.postgres_error = f"{type(e).__name__}: {first_line(e)}"
        setup.a = setup.b = None


async def run(s: Settings) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="streamchat-bench-shared-"))
    cluster = None
    parts: dict = {}
    notes: list = []
    try:
        async with Children() as children:
            print("starting servers...", file=sys.stderr)
            sqlite = await start_sqlite_server(tmp / "sqlite")
            children.append(sqlite.child)
            raw, raw_port = await start_raw(bench_hub.__file__, tmp / "raw.log", "raw push")
            children.append(raw)
            setup = Setup(sqlite, bench_hub.Server(f"ws://{HOST}:{raw_port}/ws", None, raw.pid))
            await start_postgres(tmp, setup, children)
            cluster = setup.cluster
            if setup.a is not None:
                notes.append(
                    f"Postgres {cluster.version()} (own cluster; fsync "
                    f"{cluster.setting('fsync')}, synchronous_commit "
                    f"{cluster.setting('synchronous_commit')}, full_page_writes "
                    f"{cluster.setting('full_page_writes')})."
                )
            else:
                notes.append(f"No Postgres: {setup.postgres_error}.")
            no_pg = f"needs Postgres: {setup.postgres_error}"

            skipped = "not asked for (--parts)"
            parts["relay"] = (
                await attempt("relay throughput", lambda: bench_relay(s, setup))
                if "1" in s.parts
                else skipped
            )
            if isinstance(parts["relay"], dict):
                parts["relay"]["postgres_error"] = setup.postgres_error
            await raw.stop()
            if "2" not in s.parts:
                parts["follow"] = skipped
            elif setup.a is None:
                parts["follow"] = no_pg
            else:
                parts["follow"] = await attempt(
                    "cross-server latency", lambda: bench_follow(s, setup)
                )
            parts["scale"] = (
                await attempt("scale", lambda: bench_scale(s, setup)) if "3" in s.parts else skipped
            )
            for child in list(children):
                await child.stop()
        if s.peer and "4" in s.parts:
            parts["peer"] = await attempt("jupyterlab-chat", lambda: bench_peer(s, tmp))
        else:
            parts["peer"] = "not asked for (--quick or --parts; run with --peer)"
        print_report(s, notes, parts)
    finally:
        if cluster is not None:
            cluster.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (medians)")
    parser.add_argument(
        "--peer",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run jupyterlab-chat beside it (default: in a full run, not with --quick)",
    )
    parser.add_argument(
        "--parts", default="1234", help="which parts to run, e.g. 23 (default: all, 1234)"
    )
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    started = time.monotonic()
    asyncio.run(run(settings_from(args)))
    print(f"\n(total {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
