"""Fleet benchmark: list and ``q=`` latency over many recordings on the shared PostgreSQL
index, and many slow v2 streams spread over two recorder replicas (ack latency).

    python benchmarks/bench_fleet.py                   # 100,000 recordings; 200 streams, 15 s
    python benchmarks/bench_fleet.py --streams 1000 --duration 30   # the issue's full figure
    python benchmarks/bench_fleet.py --skip-streams --postgres URL  # an empty database of yours

Part 1 seeds ``--recordings`` rows (``--lines`` output lines each) straight through the
``Index`` interface, concurrently and in batches (not through uploads), into a throwaway
PostgreSQL server started as the tests start it (fsync off: this measures queries, not
commits) and, as the reference in the same run, into a SQLite index. Every second recording
shares its connection id with the one before (the two halves of a failover). It then times
the first list page, ``q=`` (a rare word, a word in every recording, a phrase),
``connection=`` and a second page: in-process (the index alone) and over HTTP against a real
``tssh-recorder`` on each index (access check and JSON included).

Part 2 runs two ``tssh-recorder`` replicas over one store directory and the PostgreSQL index
and opens ``--streams`` h2c uploads, alternating between them, each sending a 4 KB chunk of
asciicast events every 200 ms (20 KB/s, as ``bench_recorder.py``); a chunk's ack latency is
the time from sending it to an ack that covers it. The reference in the same run is the same
number of streams against one replica. Clients and recorders share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_recorder import Recorder, percentile, slow_stream  # noqa: E402
from benchmarks.bench_search import (  # noqa: E402
    COMMON,
    RARE,
    RecorderServer,
    text_update,
    vocabulary,
)
from recorder.index.base import Index, Query  # noqa: E402
from recorder.index.postgres import PostgresIndex  # noqa: E402
from recorder.index.sqlite import SqliteIndex  # noqa: E402
from recorder.model import NodeInfo, RecordingMeta  # noqa: E402

BATCH = 500  # recordings per round of concurrent puts and per text transaction
GOAL_QUERY_MS = 50.0
GOAL_ACK_P99_MS = 250.0


def recording(i: int) -> RecordingMeta:
    start = 1_764_547_200.0 + i * 7
    return RecordingMeta(
        id=f"20261201T000000Z-{i:016x}", key=f"nSRV1/{i}.cast",
        node=NodeInfo("nSRV1", f"server{i % 50}"), start=start,
        header={"version": 2, "sshUser": f"user{i % 200}", "localUser": "ops",
                "command": "/bin/bash", "connectionID": f"ssh-conn-bench-{i // 2:08d}"},
        recorder="bench", status="complete", size=4096, end=start + 60,
    )


async def seed(index: Index, recordings: int, lines: int) -> float:
    """Fills ``index`` through its interface; seconds taken."""
    rng = random.Random(1)
    words = vocabulary(rng)
    await index.open()
    t0 = time.perf_counter()
    try:
        for base in range(0, recordings, BATCH):
            ids = range(base, min(recordings, base + BATCH))
            await asyncio.gather(*(index.put(recording(i)) for i in ids))
            await index.add_text([text_update(rng, words, i, lines) for i in ids])
            if base and base % 20_000 == 0:
                print(f"    {base} recordings", flush=True)
        await index.compact()
    finally:
        await index.close()
    return time.perf_counter() - t0


def queries(recordings: int) -> list[tuple[str, dict[str, str]]]:
    middle = recordings // 2  # and the one after it: one connection (recording())
    return [
        ("first list page (50, no q)", {}),
        (f"q={RARE} (rare word)", {"q": RARE}),
        (f"q={COMMON} (in every recording)", {"q": COMMON}),
        ('q="status 3 took" (phrase)', {"q": '"status 3 took"'}),
        ("connection= (a failover's two halves)",
         {"connection": f"ssh-conn-bench-{middle // 2:08d}"}),
    ]


async def in_process(index: Index, recordings: int, runs: int) -> dict[str, float]:
    """Median ms of each query on the index alone (after one warm-up run)."""
    await index.open()
    out = {}
    try:
        first = await index.query(Query(q=COMMON))
        cases = [(name, Query(**params))  # type: ignore[arg-type]
                 for name, params in queries(recordings)]
        cases.append((f"q={COMMON}, second page", Query(q=COMMON, cursor=first.next)))
        for name, query in cases:
            times = []
            for k in range(runs + 1):
                t0 = time.perf_counter()
                await index.query(query)
                if k:
                    times.append((time.perf_counter() - t0) * 1000)
            out[name] = statistics.median(times)
    finally:
        await index.close()
    return out


def over_http(tmp: Path, index: str | None, recordings: int, runs: int
              ) -> dict[str, tuple[float, int]]:
    """Median ms and recordings found of each query against a real recorder."""
    server = RecorderServer(tmp, index=index)
    out = {}
    try:
        for name, params in queries(recordings):
            found = len(server.client.get("/api/v1/recordings", params=params)
                        .json()["recordings"])
            times = []
            for k in range(runs + 1):
                t0 = time.perf_counter()
                server.client.get("/api/v1/recordings", params=params).raise_for_status()
                if k:
                    times.append((time.perf_counter() - t0) * 1000)
            out[name] = (statistics.median(times), found)
    finally:
        server.stop()
    return out


def query_part(tmp: Path, dsn: str, args: argparse.Namespace) -> None:
    sqlite_path = tmp / "sqlite" / "state" / "index.sqlite3"
    sqlite_path.parent.mkdir(parents=True)
    print(f"seeding {args.recordings} recordings x {args.lines} lines", flush=True)
    took_pg = asyncio.run(seed(PostgresIndex(dsn), args.recordings, args.lines))
    print(f"  PostgreSQL: {took_pg:.0f} s", flush=True)
    took_sq = asyncio.run(seed(SqliteIndex(sqlite_path), args.recordings, args.lines))
    print(f"  SQLite:     {took_sq:.0f} s", flush=True)
    n, runs = args.recordings, args.runs
    pg = asyncio.run(in_process(PostgresIndex(dsn), n, runs))
    sq = asyncio.run(in_process(SqliteIndex(sqlite_path), n, runs))
    pg_http = over_http(tmp / "pg-http", dsn, n, runs)
    sq_http = over_http(tmp / "sqlite", None, n, runs)
    print(f"\n{'query (median ms of ' + str(args.runs) + ')':40} {'PG index':>9} {'SQLite':>8} "
          f"{'ratio':>6} {'PG HTTP':>8} {'SQLite HTTP':>12} {'ratio':>6} {'found':>6} "
          f"{'goal':>6}")
    for name, pg_ms in pg.items():
        sq_ms = sq[name]
        h = pg_http.get(name)
        s = sq_http.get(name)
        http = (f"{h[0]:8.1f} {s[0]:12.1f} {h[0] / s[0]:5.1f}x {h[1]:6d}" if h and s
                else f"{'':8} {'':12} {'':6} {'':6}")
        worst = max(pg_ms, h[0] if h else 0.0)
        goal = "met" if worst <= GOAL_QUERY_MS else f"{worst / GOAL_QUERY_MS:.1f}x"
        print(f"{name:40} {pg_ms:9.1f} {sq_ms:8.1f} {pg_ms / sq_ms:5.1f}x {http} {goal:>6}")


async def streams_over(ports: list[int], streams: int, rate: int, duration: float
                       ) -> dict[str, float]:
    """``streams`` slow uploads, alternating over ``ports``; steady-state ack latency."""
    latencies: list[tuple[float, float]] = []
    failures: list[str] = []
    interval = 0.2
    t_end = time.monotonic() + duration
    tasks = []
    for i in range(streams):
        tasks.append(asyncio.create_task(slow_stream(
            ports[i % len(ports)], i, rate, interval, t_end, latencies, failures)))
        if i % 50 == 49:
            await asyncio.sleep(0.05)  # do not open a thousand connections in one burst
    steady_from = time.monotonic() + 3.0
    await asyncio.gather(*tasks)
    if failures:
        print(f"  {len(failures)} failures, first: {failures[:3]}", file=sys.stderr)
    steady = [lat for t, lat in latencies if t >= steady_from]
    return {"p50": percentile(steady, 50) * 1000, "p99": percentile(steady, 99) * 1000,
            "max": max((lat for _, lat in latencies), default=float("nan")) * 1000,
            "chunks": len(latencies), "failures": len(failures)}


def stream_part(tmp: Path, dsn: str, args: argparse.Namespace) -> None:
    print(f"\n{args.streams} streams x {args.rate // 1000} KB/s for {args.duration:g} s "
          "(steady state: from 3 s after the last stream opened)", flush=True)
    store = str(tmp / "shared-store")
    results = {}
    for label, count in (("one replica", 1), ("two replicas", 2)):
        replicas = []
        for n in range(count):
            work = tmp / f"{label.replace(' ', '-')}-{n}"
            work.mkdir()
            replicas.append(Recorder(work, store, extra=["--index", dsn]))
        try:
            for rec in replicas:
                rec.start()
            cpu0 = [rec.cpu_seconds() for rec in replicas]
            results[label] = asyncio.run(streams_over(
                [rec.port for rec in replicas], args.streams, args.rate, args.duration))
            results[label]["cpu"] = sum(
                rec.cpu_seconds() - c for rec, c in zip(replicas, cpu0, strict=True))
        finally:
            for rec in replicas:
                rec.stop()
    one = results["one replica"]
    print(f"{'':14} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'chunks':>8} {'failed':>6} "
          f"{'CPU s':>6} {'p99 vs one':>10} {'p99 goal':>9}")
    for label, r in results.items():
        goal = "met" if r["p99"] <= GOAL_ACK_P99_MS else f"{r['p99'] / GOAL_ACK_P99_MS:.1f}x"
        print(f"{label:14} {r['p50']:8.0f} {r['p99']:8.0f} {r['max']:8.0f} {r['chunks']:8.0f} "
              f"{r['failures']:6.0f} {r['cpu']:6.1f} {r['p99'] / one['p99']:9.2f}x {goal:>9}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recordings", type=int, default=100_000)
    ap.add_argument("--lines", type=int, default=4, help="output lines per recording")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--rate", type=int, default=20_000, help="bytes per second per stream")
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--dir", type=Path, default=Path.cwd(), help="where the stores go")
    ap.add_argument("--postgres", metavar="URL",
                    help="an empty database of yours (default: a throwaway server)")
    ap.add_argument("--skip-queries", action="store_true")
    ap.add_argument("--skip-streams", action="store_true")
    args = ap.parse_args()
    server = None
    dsn = args.postgres
    if dsn is None:
        from tests.recorder.postgres import PostgresServer, binaries

        bin_dir = binaries()
        if bin_dir is None:
            raise SystemExit("PostgreSQL is not installed (Debian's postgresql package)")
        server = PostgresServer(bin_dir)
        server.start()
    tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-", dir=args.dir))
    try:
        if not args.skip_queries:
            query_part(tmp, dsn or server.new_database(), args)  # type: ignore[union-attr]
        if not args.skip_streams:
            stream_part(tmp, dsn or server.new_database(), args)  # type: ignore[union-attr]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
