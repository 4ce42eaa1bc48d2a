"""Benchmark of the SQLite store's search, and of what other clients feel while it runs.

Run ``python bench/bench_search.py`` (under 10 minutes once the stores are cached, a few more
the first time) or ``--quick`` (the 1,000 and 100,000 message stores, fewer repeats). It prints
one markdown table per part.

Stores of 1,000, 100,000 and 1,000,000 messages are built once, by ``executemany`` straight
into the real schema (a store opened and closed first makes it), and cached under
``/tmp/streamchat-bench-search/``: half user messages, half replies (text in ``chunks``),
about 200 characters of words each, one conversation per exchange, and a few messages holding
a run of 3,000 ``a`` characters and a rare word.

1. Search: p50 and p99 of ``SQLiteStore.search_conversations(q, 51)`` (a REST page) per class
   of query: short (2 characters: read with LIKE), a common word, a rare word, a pathological
   run of 200 ``a`` (the query of issue 13), and text found nowhere. Beside it, the floor: a
   raw query on a plain ``sqlite3`` connection to the same file, in the same run,
   interleaved: ``SELECT DISTINCT conversation_id FROM search WHERE search MATCH '"q"'`` (or
   ``text LIKE '%q%'`` for the short class), i.e. FTS5 (or LIKE) alone, without paging,
   ordering, snippets or the store's bounds; ratio = store / floor. A floor over 20 s is cut
   off (shown as ">20 s"). "too costly": the store refused the query at its deadline
   (``search_seconds``, 2 s).

2. Other clients while the worst queries run: two tasks search, over and over, the two
   costliest classes on the largest store; meanwhile one task reads the HISTORY of a small
   conversation (``store.history``, what SUBSCRIBE reads) every 5 ms, and the event loop's lag
   is sampled (a 1 ms sleep's lateness: every frame to every client waits that long). p50,
   p99 and max, beside the same without the searches. In-process through the store's read
   API; the WebSocket in front of it adds the same to both columns.

3. Writes while a long reply is indexed: ``create_exchange`` (one write job) latency while a
   reply of 8 MiB ends (its text indexed for search), beside the same with no reply ending.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sqlite3
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from jupyter_streamchat.store import Append, SearchTooCostly, SQLiteStore, local_user  # noqa: E402

from harness.report import table  # noqa: E402
from harness.stats import median, percentile  # noqa: E402
from harness.stores import append_chunks  # noqa: E402

CACHE = Path("/tmp/streamchat-bench-search")
USER = local_user()  # the stores below act for this user, whose conversations the file holds
SIZES = (1_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 100_000)
FLOOR_CUTOFF = 20.0  # seconds
RARE = "quixotically"
WORDS = None


def words() -> list:
    global WORDS
    if WORDS is None:
        rng = random.Random(7)
        letters = "etaoinshrdlcumwfgypbvkjxqz"
        weights = [12, 9, 8, 7, 7, 6, 6, 6, 4, 4, 3, 3, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1]
        WORDS = ["the", "of", "and", "to", "in", "is", "function", "return", "data", "value"] + [
            "".join(rng.choices(letters, weights, k=rng.randint(3, 9))) for _ in range(5000)
        ]
    return WORDS


def text_of(rng: random.Random, i: int) -> str:
    vocab = words()
    text = " ".join(
        rng.choice(vocab[:200] if rng.random() < 0.6 else vocab) for _ in range(rng.randint(20, 45))
    )
    if i % 50_000 == 7:
        text += " " + "a" * 3000
    if i % 100_000 == 11 or i == 13:
        text += f" a {RARE} remark"
    return text


def build(size: int) -> str:
    path = CACHE / f"search-{size}.db"
    if path.exists():
        return str(path)
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = str(path) + ".part"
    for leftover in (partial, partial + "-wal", partial + "-shm"):
        if os.path.exists(leftover):
            os.remove(leftover)
    print(f"building a store of {size:,} messages...", file=sys.stderr)

    async def schema():
        store = SQLiteStore(path=partial)
        await store.open()
        await store.close()

    asyncio.run(schema())
    rng = random.Random(size)
    db = sqlite3.connect(partial, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    batch = 20_000
    for start in range(0, size, batch):
        pairs = range(start // 2, min(size, start + batch) // 2)
        db.executemany(
            "INSERT INTO conversations (user_id, id, title, created_at, updated_at) "
            "VALUES (?, ?, '', ?, ?)",
            [(USER, f"c{i}", i, i) for i in pairs],
        )
        messages, chunks, search = [], [], []
        for i in pairs:
            question, answer = text_of(rng, 2 * i), text_of(rng, 2 * i + 1)
            messages.append(
                (2 * i + 1, f"u{i}", f"c{i}", "user", None, f"k{i}", question, len(question), 0)
            )
            messages.append(
                (2 * i + 2, f"r{i}", f"c{i}", "assistant", f"u{i}", None, "", len(answer), 1)
            )
            chunks.append((f"r{i}", 1, answer))
            search += [(2 * i + 1, f"c{i}", question), (2 * i + 2, f"c{i}", answer)]
        db.executemany(
            "INSERT INTO messages (pos, id, conversation_id, role, agent_id, reply_to, "
            "client_message_id, status, text, chars, last_seq, created_at, updated_at, user_id) "
            "VALUES (?, ?, ?, ?, 'echo', ?, ?, 'complete', ?, ?, ?, 1, 1, ?)",
            [row + (USER,) for row in messages],
        )
        db.executemany("INSERT INTO chunks (message_id, seq, chunk) VALUES (?, ?, ?)", chunks)
        db.executemany("INSERT INTO search (rowid, conversation_id, text) VALUES (?, ?, ?)", search)
    db.execute("COMMIT")
    db.execute("INSERT INTO search (search) VALUES ('optimize')")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    os.replace(partial, path)
    return str(path)


QUERIES = [  # class, query, raw floor (SQL on search, argument)
    ("short (2 chars, LIKE)", "qz", "text LIKE ?", "%qz%"),
    ("common word", "function", "search MATCH ?", '"function"'),
    ("rare word", RARE, "search MATCH ?", f'"{RARE}"'),
    ("200 x 'a' (pathological)", "a" * 200, "search MATCH ?", '"' + "a" * 200 + '"'),
    ("no match", "zebra crossing xylophone", "search MATCH ?", '"zebra crossing xylophone"'),
]


def fmt_ms(seconds) -> str:
    if seconds is None:
        return "-"
    if isinstance(seconds, str):
        return seconds
    ms = seconds * 1000
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.0f} ms"


def raw_query(db: sqlite3.Connection, where: str, arg: str):
    deadline = time.perf_counter() + FLOOR_CUTOFF
    db.set_progress_handler(lambda: int(time.perf_counter() > deadline), 100_000)
    started = time.perf_counter()
    try:
        db.execute(f"SELECT DISTINCT conversation_id FROM search WHERE {where}", (arg,)).fetchall()
    except sqlite3.OperationalError:
        return None
    finally:
        db.set_progress_handler(None, 0)
    return time.perf_counter() - started


async def part_search(path: str, repeats: int) -> list:
    store = SQLiteStore(path=path)
    await store.open()
    db = sqlite3.connect(path, check_same_thread=False)
    rows = []
    try:
        for name, query, where, arg in QUERIES:
            ours, floor, refused, found = [], [], 0, 0
            cheap = name.startswith(("common", "rare", "no match"))
            reps = repeats if cheap else max(3, repeats // 4)
            for _ in range(reps):
                started = time.perf_counter()
                try:
                    found = len(await store.search_conversations(query, 51))
                except SearchTooCostly:
                    refused += 1
                ours.append(time.perf_counter() - started)
                loop = asyncio.get_running_loop()
                if len(floor) < max(3, reps // 2):
                    floor.append(await loop.run_in_executor(None, raw_query, db, where, arg))
            floor_ok = [f for f in floor if f is not None]
            floor_p50 = median(floor_ok) if len(floor_ok) == len(floor) else None
            rows.append(
                (
                    name,
                    found,
                    percentile(ours, 50),
                    percentile(ours, 99),
                    floor_p50 if floor_p50 is not None else f">{FLOOR_CUTOFF:g} s",
                    (percentile(ours, 50) / floor_p50) if floor_p50 else None,
                    f"{refused}/{reps}",
                )
            )
    finally:
        db.close()
        await store.close()
    return rows


async def sample_others(store: SQLiteStore, conversation: str, seconds: float) -> tuple:
    history, lag = [], []
    end = time.perf_counter() + seconds

    async def reads():
        while time.perf_counter() < end:
            started = time.perf_counter()
            await store.history(conversation, None, 100, 512 * 1024)
            history.append(time.perf_counter() - started)
            await asyncio.sleep(0.005)

    async def ticks():
        while time.perf_counter() < end:
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            lag.append(max(0.0, time.perf_counter() - started - 0.001))

    await asyncio.gather(reads(), ticks())
    return history, lag


async def part_others(path: str, seconds: float) -> list:
    store = SQLiteStore(path=path)
    await store.open()
    try:
        small = "c3"
        quiet_h, quiet_lag = await sample_others(store, small, seconds)
        stop = False
        searches = [0, 0]

        async def searching(query):
            while not stop:
                try:
                    await store.search_conversations(query, 51)
                    searches[0] += 1
                except SearchTooCostly:
                    searches[1] += 1

        workers = [asyncio.ensure_future(searching(q)) for q in ("qz", "a" * 200)]
        await asyncio.sleep(0.2)
        busy_h, busy_lag = await sample_others(store, small, seconds)
        stop = True
        await asyncio.gather(*workers)
    finally:
        await store.close()
    return [("HISTORY read", quiet_h, busy_h), ("event-loop lag", quiet_lag, busy_lag)], searches


async def part_writes(tmp: str, mib: int) -> list:
    path = os.path.join(tmp, "writes.db")
    for leftover in (path, path + "-wal", path + "-shm"):
        if os.path.exists(leftover):
            os.remove(leftover)
    store = SQLiteStore(path=path)
    await store.open()
    try:

        async def writes(n):
            lat = []
            for i in range(n):
                started = time.perf_counter()
                await store.create_exchange(f"w{i}-{time.time_ns()}", "echo", "hello", f"k{i}")
                lat.append(time.perf_counter() - started)
                await asyncio.sleep(0.002)
            return lat

        quiet = await writes(60)
        text = "lorem ipsum dolor sit amet " * (mib * 1024 * 1024 // 27 + 1)
        ex = await store.create_exchange("big", "echo", "a lot please", "kbig")
        frames = [text[i : i + 4096] for i in range(0, len(text), 4096)]
        await append_chunks(store, ex.message_id, frames)
        ending = asyncio.ensure_future(
            store.append(Append(ex.message_id, len(frames) + 1, [""], "complete"))
        )
        busy = await writes(60)
        await ending
        started = time.perf_counter()
        await store.search_index_idle()
        idle_wait = time.perf_counter() - started
    finally:
        await store.close()
    return quiet, busy, idle_wait


def show(header: list, rows: list) -> None:
    print("\n".join(table(header, rows, align="l" * len(header))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = QUICK_SIZES if args.quick else SIZES
    repeats = 8 if args.quick else 20
    paths = {size: build(size) for size in sizes}
    print(
        f"# bench_search ({'quick' if args.quick else 'full'}): "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPUs\n"
    )
    rows = []
    for size in sizes:
        print(f"searching {size:,} messages...", file=sys.stderr)
        for name, found, p50, p99, floor, ratio, refused in asyncio.run(
            part_search(paths[size], repeats)
        ):
            rows.append(
                (
                    f"{size:,}",
                    name,
                    found,
                    fmt_ms(p50),
                    fmt_ms(p99),
                    fmt_ms(floor),
                    f"{ratio:.2f}" if ratio else "-",
                    refused,
                )
            )
    print("## 1. Search (store.search_conversations, a page of 51) beside raw FTS5 / LIKE\n")
    show(["messages", "query", "found", "p50", "p99", "raw floor p50", "ratio", "too costly"], rows)

    largest = max(sizes)
    print(f"\nother clients while searching {largest:,} messages...", file=sys.stderr)
    others, searches = asyncio.run(part_others(paths[largest], 4 if args.quick else 10))
    print(
        f"\n## 2. Other clients while the worst queries run ({largest:,} messages; "
        f"{searches[0]} searches answered, {searches[1]} refused as too costly)\n"
    )
    show(
        [
            "measure",
            "idle p50",
            "idle p99",
            "idle max",
            "searching p50",
            "searching p99",
            "searching max",
        ],
        [
            (
                name,
                fmt_ms(percentile(q, 50)),
                fmt_ms(percentile(q, 99)),
                fmt_ms(max(q)),
                fmt_ms(percentile(b, 50)),
                fmt_ms(percentile(b, 99)),
                fmt_ms(max(b)),
            )
            for name, q, b in others
        ],
    )

    print("\nwrites while a long reply is indexed...", file=sys.stderr)
    mib = 2 if args.quick else 8
    quiet, busy, idle_wait = asyncio.run(part_writes(str(CACHE), mib))
    print(
        f"\n## 3. create_exchange while a {mib} MiB reply ends and is indexed "
        f"(all of it searchable {fmt_ms(idle_wait)} after the last of these writes)\n"
    )
    show(
        ["", "p50", "p99", "max"],
        [
            (
                "no reply ending",
                fmt_ms(percentile(quiet, 50)),
                fmt_ms(percentile(quiet, 99)),
                fmt_ms(max(quiet)),
            ),
            (
                f"{mib} MiB reply ending",
                fmt_ms(percentile(busy, 50)),
                fmt_ms(percentile(busy, 99)),
                fmt_ms(max(busy)),
            ),
        ],
    )


if __name__ == "__main__":
    main()
