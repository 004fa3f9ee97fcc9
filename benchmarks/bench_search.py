"""Web UI benchmark: list and ``q=`` latency over many recordings, index build cost, and
opening a long recording (first byte, and a seek into its middle).

    python benchmarks/bench_search.py                # 100,000 recordings, 256 MiB build, 1 GiB cast
    python benchmarks/bench_search.py --recordings 20000 --build-mib 64 --size 256  # a few minutes
    python benchmarks/bench_search.py --postgres --skip-build --skip-cast  # the PostgreSQL index

Part 1 fills a SQLite index (or, with ``--postgres [URL]``, a PostgreSQL one: a throwaway
server as the tests start it when no URL is given) through the ``Index`` interface, as
ingest does, with ``--recordings`` recordings of ``--lines`` output lines each, then times
the first list page and ``q=`` searches both in-process (the index alone) and over HTTP
against a real ``tssh-recorder`` on that index (FastAPI, JSON, access check included): a rare
word (in 0.1 % of the recordings), a word in every recording, a phrase, and a second page.

Part 2 measures what indexing costs per GiB of terminal output: the same asciicast bytes are
stored as the recorder stores them (scanner, write, fsync), run through the text extraction
(``recorder/events.py`` + ``recorder/text.py``), and inserted into FTS5; the result is CPU
seconds per GiB and the ratio of extraction + insert to storing.

Part 3 uploads one ``--size`` MiB recording to a real ``tssh-recorder`` (``/record``, as an
uploader streams it; the seek index is built on the way) and times, over HTTP: the first byte
of ``GET .../cast`` (the whole file), and a seek into the middle, ``GET .../cast?from=MID``:
its first byte and the time until the player has what it needs to show the screen there (the
segment's header and its synthetic screen event), against reading the whole cast up to the
middle (what a player without the seek index downloads and replays first).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from recorder.events import CastText  # noqa: E402
from recorder.index.base import Index, Query, TextUpdate  # noqa: E402
from recorder.index.postgres import PostgresIndex  # noqa: E402
from recorder.index.sqlite import SqliteIndex  # noqa: E402
from recorder.model import NodeInfo, RecordingMeta  # noqa: E402
from recorder.stream import CastScanner  # noqa: E402
from recorder.text import Line  # noqa: E402
from tests.ports import free_port  # noqa: E402
from tests.processes import stop_process  # noqa: E402

MiB = 1024 * 1024
NETMAP = {"self": "recorder", "nodes": [
    {"name": "recorder", "id": "nREC1", "addresses": ["127.0.0.1"], "tags": ["tag:rec"]}]}
POSTGRES: str | None = None  # --postgres: the index's URL
RARE = "zanzibar-quokka"  # in one recording of a thousand
COMMON = "status"  # in every recording


def new_index(path: Path) -> Index:
    return SqliteIndex(path) if POSTGRES is None else PostgresIndex(POSTGRES)


def vocabulary(rng: random.Random, n: int = 5000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(n)]


def output_line(rng: random.Random, words: list[str], i: int) -> str:
    """A line such as a shell session or a log shows, with colours."""
    picked = " ".join(rng.choice(words) for _ in range(rng.randint(3, 9)))
    return (f"\x1b[32m2026-12-04T02:{i % 60:02d}:{i % 59:02d}\x1b[0m host{i % 17} {picked} "
            f"{COMMON}={i % 5} took \x1b[1m{i % 1000}\x1b[0mms")


def text_update(rng: random.Random, words: list[str], i: int, lines: int) -> TextUpdate:
    """Recording ``i``'s output text: ``lines`` lines, the rare word in one of every 1000."""
    text = [Line(j * 0.5, output_line(rng, words, j)) for j in range(lines)]
    if i % 1000 == 500:
        text[lines // 2] = Line(lines * 0.25, f"$ echo {RARE} > /tmp/x")
    return TextUpdate(f"20261201T000000Z-{i:016x}", text)


async def fill(path: Path, recordings: int, lines: int) -> float:
    rng = random.Random(1)
    words = vocabulary(rng)
    index = new_index(path)
    await index.open()
    t0 = time.perf_counter()
    try:
        batch = 1000
        for base in range(0, recordings, batch):
            ids = range(base, min(recordings, base + batch))
            for i in ids:
                await index.put(RecordingMeta(
                    id=f"20261201T000000Z-{i:016x}", key=f"nSRV1/{i}.cast",
                    node=NodeInfo("nSRV1", f"server{i % 50}"), start=1_764_547_200.0 + i * 7,
                    header={"version": 2, "sshUser": f"user{i % 200}", "localUser": "ops",
                            "command": "/bin/bash"},
                    recorder="bench", status="complete", size=4096, end=1_764_547_200.0 + i * 7,
                ))
            await index.add_text([text_update(rng, words, i, lines) for i in ids])
            if base and base % 20_000 == 0:
                print(f"  {base} recordings indexed", flush=True)
    finally:
        await index.close()
    return time.perf_counter() - t0


async def checkpoint(path: Path) -> None:
    index = new_index(path)
    await index.open()
    await index.close()  # the last connection's close checkpoints the WAL into the file


def timed(fn: object, runs: int) -> tuple[float, float]:
    """Median and best wall time in ms of ``runs`` calls (after one warm-up)."""
    assert callable(fn)
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), min(times)


QUERIES = (
    ("first list page (50, no q)", None),
    (f"q={RARE} (rare word)", RARE),
    (f"q={COMMON} (in every recording)", COMMON),
    ('q="status 3 took" (phrase)', '"status 3 took"'),
)


async def in_process(path: Path, runs: int) -> list[tuple[str, float, float, int]]:
    index = new_index(path)
    await index.open()
    out = []
    try:
        first = await index.query(Query(q=COMMON))
        for name, query in [*((n, Query(q=q)) for n, q in QUERIES),
                            (f"q={COMMON}, second page", Query(q=COMMON, cursor=first.next))]:
            times, cpu = [], []
            found = 0
            for k in range(runs + 1):
                t0, c0 = time.perf_counter(), time.process_time()
                page = await index.query(query)
                if k:  # the first run warms the cache
                    times.append((time.perf_counter() - t0) * 1000)
                    cpu.append((time.process_time() - c0) * 1000)
                found = len(page.recordings)
            out.append((name, statistics.median(times), statistics.median(cpu), found))
    finally:
        await index.close()
    return out


def over_http(tmp: Path, runs: int) -> list[tuple[str, float, float, int]]:
    server = RecorderServer(tmp, index=POSTGRES)
    out = []
    try:
        for name, q in QUERIES:
            params = {"q": q} if q else {}
            listed = server.client.get("/api/v1/recordings", params=params)
            found = len(listed.json()["recordings"])

            def call(params: dict[str, str] = params) -> None:
                server.client.get("/api/v1/recordings", params=params).raise_for_status()

            median, best = timed(call, runs)
            out.append((name, median, best, found))
    finally:
        server.stop()
    return out


def cast_bytes(mib: int) -> bytes:
    rng = random.Random(2)
    words = vocabulary(rng)
    parts = [json.dumps({"version": 2, "width": 160, "height": 50}).encode() + b"\n"]
    size, t, i = 0, 0.0, 0
    while size < mib * MiB:
        text = "".join(output_line(rng, words, i + k) + "\r\n" for k in range(30))
        i += 30
        t += 0.01
        line = json.dumps([round(t, 3), "o", text]).encode() + b"\n"
        parts.append(line)
        size += len(line)
    return b"".join(parts)


async def build_cost(tmp: Path, mib: int) -> dict[str, float]:
    data = cast_bytes(mib)
    chunks = [data[i : i + 64 * 1024] for i in range(0, len(data), 64 * 1024)]
    gib = len(data) / (1024 * MiB)

    c0 = time.process_time()
    w0 = time.perf_counter()
    scanner = CastScanner()
    with open(tmp / "stored.cast", "wb") as f:
        for chunk in chunks:
            f.write(scanner.feed(chunk))
        f.flush()
        os.fsync(f.fileno())
    store_cpu, store_wall = time.process_time() - c0, time.perf_counter() - w0

    c0 = time.process_time()
    text = CastText()
    batches: list[list[Line]] = []
    for chunk in chunks:
        batches.append(text.feed(chunk))
    batches.append(text.end())
    extract_cpu = time.process_time() - c0
    lines = sum(len(b) for b in batches)

    index = SqliteIndex(tmp / "build.sqlite3")
    await index.open()
    await index.put(RecordingMeta(
        id="20261201T000000Z-0000000000000001", key="n/1.cast", node=NodeInfo("n", "n"),
        start=1.0, header={"version": 2}, recorder="bench",
    ))
    w0 = time.perf_counter()
    c0 = time.process_time()
    pending: list[Line] = []
    for batch in batches:  # as ingest does: one transaction per flush
        pending += batch
        if len(pending) >= 5000:
            await index.add_text([TextUpdate("20261201T000000Z-0000000000000001", pending)])
            pending = []
    await index.add_text([TextUpdate("20261201T000000Z-0000000000000001", pending)])
    insert_wall = time.perf_counter() - w0
    insert_cpu = time.process_time() - c0  # the index thread is in this process too
    await index.close()
    index_size = sum(p.stat().st_size for p in tmp.glob("build.sqlite3*"))
    return {
        "gib": gib, "lines": lines, "store_cpu": store_cpu / gib, "store_wall": store_wall / gib,
        "extract_cpu": extract_cpu / gib, "insert_cpu": insert_cpu / gib,
        "insert_wall": insert_wall / gib, "index_bytes_per_byte": index_size / len(data),
    }


def upload_cast(client: httpx.Client, mib: int) -> tuple[float, float]:
    """Streams a ``mib`` MiB cast (terminal output, one event per 10 ms of session time) to
    ``/record``; its duration in session seconds and the upload's wall time."""
    rng = random.Random(3)
    words = vocabulary(rng)
    state = {"t": 0.0}

    # 500 distinct events of 20 lines each, repeated with increasing times (generating fresh
    # text for every event would make this client the bottleneck)
    pool = [b', "o", ' + json.dumps("".join(output_line(rng, words, i * 20 + k) + "\r\n"
                                           for k in range(20))).encode() + b"]\n"
            for i in range(500)]

    def body() -> Iterator[bytes]:
        yield json.dumps({"version": 2, "width": 160, "height": 50,
                          "connectionID": "bench-long"}).encode() + b"\n"
        sent, i = 0, 0
        while sent < mib * MiB:
            parts = []
            for _ in range(200):
                state["t"] += 0.01
                parts.append(b"[%.2f" % state["t"] + pool[i % len(pool)])
                i += 1
            chunk = b"".join(parts)
            sent += len(chunk)
            yield chunk

    t0 = time.perf_counter()
    client.post("/record", content=body(), timeout=3600).raise_for_status()
    return state["t"], time.perf_counter() - t0


def first_byte(client: httpx.Client, path: str, params: dict[str, str],
               until: int | None = None) -> tuple[float, float, int]:
    """ms to the response's first byte, ms until ``until`` bytes (or two lines when None:
    a segment's header and screen event) have arrived, and bytes read."""
    t0 = time.perf_counter()
    got = bytearray()
    first = 0.0
    with client.stream("GET", path, params=params) as r:
        r.raise_for_status()
        for chunk in r.iter_raw(256 * 1024):
            if not got:
                first = (time.perf_counter() - t0) * 1000
            got += chunk
            if (got.count(b"\n") >= 2) if until is None else (len(got) >= until):
                break
    return first, (time.perf_counter() - t0) * 1000, len(got)


def long_cast(tmp: Path, mib: int, runs: int) -> None:
    server = RecorderServer(tmp)
    try:
        client = server.client
        print(f"\nopening a {mib} MiB recording (uploading it first)", flush=True)
        duration, took = upload_cast(client, mib)
        [meta] = client.get("/api/v1/recordings").json()["recordings"]
        meta = client.get(f"/api/v1/recordings/{meta['id']}").json()
        size = meta["size"]
        print(f"  uploaded {size / MiB:.0f} MiB ({duration:.0f} s of session) in {took:.1f} s"
              f" ({size / MiB / took:.0f} MiB/s); {len(meta['seek'])} seek checkpoints")
        quiet = server.wait_idle(600)
        print(f"  waited {quiet:.0f} s for the recorder to go idle (text indexing)")
        path = f"/api/v1/recordings/{meta['id']}/cast"
        mid = duration / 2
        rows = []
        for name, params, until in (
                ("whole cast: first byte", {}, 1),
                (f"seek to the middle (from={mid:.0f}): segment head", {"from": f"{mid:.3f}"},
                 None)):
            samples = [first_byte(client, path, params, until) for _ in range(runs + 1)][1:]
            rows.append((name, statistics.median(s[0] for s in samples),
                         statistics.median(s[1] for s in samples), samples[0][2]))
        # without the seek index: everything up to the middle, once (it is slow)
        half = size // 2
        _, whole_ms, read = first_byte(client, path, {}, half)
        print(f"\n{'request':52} {'first byte ms':>14} {'ready ms':>10} {'bytes':>10}")
        for name, fb, ready, n in rows:
            print(f"{name:52} {fb:14.1f} {ready:10.1f} {n:10}")
        print(f"{'without seek index: read to the middle':52} {'':14} {whole_ms:10.1f} "
              f"{read:10}")
    finally:
        server.stop()


class RecorderServer:
    """A real ``tssh-recorder`` with an API token, on a fresh store or the one in ``tmp``,
    with its own SQLite index or the ``index`` URL given."""

    def __init__(self, tmp: Path, index: str | None = None) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        netmap, policy = tmp / "netmap.json", tmp / "policy.hujson"
        netmap.write_text(json.dumps(NETMAP))
        policy.write_text('{"ssh": []}')
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        token = subprocess.run(
            [sys.executable, "-m", "recorder", "token", "--state-dir", str(tmp / "state"),
             "create", "bench"], env=env, capture_output=True, text=True, check=True,
        ).stdout.strip()
        port = free_port()
        log = (tmp / "recorder.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "recorder", "--dst", str(tmp / "store"), "--listen",
             f"127.0.0.1:{port}", "--state-dir", str(tmp / "state"), "--netmap", str(netmap),
             "--policy", str(policy), "--log-level", "warning",
             *(["--index", index] if index else [])],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                   headers={"Authorization": f"Bearer {token}"})
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.client.get("/healthz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise SystemExit(f"the recorder did not start; see {tmp / 'recorder.log'}")
            time.sleep(0.1)

    def wait_idle(self, limit: float) -> float:
        """Seconds until the recorder uses under 5 % of a core over a second (its text index
        is built from storage after a fast upload), at most ``limit``."""
        def cpu() -> float:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            before = cpu()
            time.sleep(1)
            if cpu() - before < 0.05:
                break
        return time.monotonic() - t0

    def stop(self) -> None:
        self.client.close()
        stop_process(self.proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recordings", type=int, default=100_000)
    ap.add_argument("--lines", type=int, default=20, help="output lines per recording")
    ap.add_argument("--build-mib", type=int, default=256, help="output for the build cost")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--dir", type=Path, default=Path.cwd())
    ap.add_argument("--index", type=Path, help="keep the filled index here, or reuse it")
    ap.add_argument("--skip-build", action="store_true", help="only the query part")
    ap.add_argument("--postgres", nargs="?", const="", metavar="URL",
                    help="part 1 on a PostgreSQL index: this (empty) database, or a "
                    "throwaway server started here when no URL is given")
    ap.add_argument("--size", type=int, default=1024, help="MiB of the long recording (part 3)")
    ap.add_argument("--skip-cast", action="store_true", help="no long recording part")
    ap.add_argument("--only-cast", action="store_true", help="only the long recording part")
    args = ap.parse_args()
    if args.postgres is None:
        run(args)
        return
    global POSTGRES
    if args.postgres:
        POSTGRES = args.postgres
        run(args)
        return
    from tests.recorder.postgres import PostgresServer, binaries

    bin_dir = binaries()
    if bin_dir is None:
        raise SystemExit("PostgreSQL is not installed (Debian's postgresql package)")
    server = PostgresServer(bin_dir)
    try:
        server.start()
        POSTGRES = server.new_database()
        run(args)
    finally:
        server.stop()


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-search-", dir=args.dir) as d:
        tmp = Path(d)
        (tmp / "state").mkdir()
        path = tmp / "state" / "index.sqlite3"
        if args.only_cast:
            long_cast(tmp / "cast", args.size, args.runs)
            return
        if POSTGRES is None and args.index is not None and args.index.exists():
            shutil.copy(args.index, path)
            print(f"using a copy of {args.index}")
        else:
            print(f"filling an index: {args.recordings} recordings x {args.lines} lines",
                  flush=True)
            took = asyncio.run(fill(path, args.recordings, args.lines))
            size = sum(p.stat().st_size for p in path.parent.glob("index.sqlite3*"))
            print(f"  {took:.1f} s" + (f", index {size / MiB:.0f} MiB" if size else ""))
            if args.index is not None and POSTGRES is None:
                asyncio.run(checkpoint(path))
                shutil.copy(path, args.index)
        print(f"\n{'query':40} {'index median ms (CPU)':>22} {'HTTP median/best ms':>22} found")
        local = asyncio.run(in_process(path, args.runs))
        remote = {name: (m, b, n) for name, m, b, n in over_http(tmp, args.runs)}
        for name, median, cpu, found in local:
            r = remote.get(name)
            http = f"{r[0]:8.1f} / {r[1]:6.1f}" if r else "-"
            print(f"{name:40} {median:12.1f} ({cpu:5.1f}) {http:>22} {found}")
        if not args.skip_build:
            build_part(tmp, args.build_mib)
        if not args.skip_cast:
            long_cast(tmp / "cast", args.size, args.runs)


def build_part(tmp: Path, build_mib: int) -> None:
    print(f"\nindex build cost, {build_mib} MiB of output:", flush=True)
    cost = asyncio.run(build_cost(tmp, build_mib))
    ratio = (cost["extract_cpu"] + cost["insert_cpu"]) / cost["store_cpu"]
    print(f"  {cost['lines']:.0f} lines; per GiB of output (CPU seconds):")
    print(f"  storing (scan, write, fsync): {cost['store_cpu']:.1f} s "
          f"({cost['store_wall']:.1f} s wall)")
    print(f"  text extraction:              {cost['extract_cpu']:.1f} s "
          f"({1 / cost['extract_cpu'] * 1024:.0f} MiB/s)")
    print(f"  FTS5 insert:                  {cost['insert_cpu']:.1f} s "
          f"({cost['insert_wall']:.1f} s wall)")
    print(f"  extraction + insert vs storing: {ratio:.1f}x; index size "
          f"{cost['index_bytes_per_byte']:.2f} bytes per byte of output")


if __name__ == "__main__":
    main()
