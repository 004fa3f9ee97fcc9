"""Recorder benchmark: many slow v2 streams (ack latency, RSS), then bulk throughput vs dd.

    python benchmarks/bench_recorder.py [--streams 1000] [--duration 30] [--bulk-mib 512]

Everything runs on loopback: a ``tssh-recorder`` subprocess storing to a directory under
``--dir`` (default: a temporary directory in the current directory, i.e. on the disk you run
it from), clients in this process speaking h2c full duplex like Tailscale's. ``dd`` writes the
same number of bytes to the same directory with ``conv=fsync`` in the same run, so the ratio
is meaningful even on a noisy machine. The S3 part uses moto's standalone server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from tests.ports import free_port  # noqa: E402
from tests.processes import stop_process  # noqa: E402
from tests.recorder.h2upload import H2Upload  # noqa: E402
from tests.recorder.moto import AWS_ENV, MotoServer  # noqa: E402

SOURCE = "127.0.0.10"
NETMAP = {
    "self": "recorder",
    "nodes": [
        {"name": "server", "id": "nSRV1", "addresses": [SOURCE], "tags": ["tag:prod"]},
        {"name": "recorder", "id": "nREC1", "addresses": ["127.0.0.1"], "tags": ["tag:rec"]},
    ],
}
MiB = 1024 * 1024


def header(conn: str) -> bytes:
    return json.dumps({
        "version": 2, "width": 120, "height": 40, "timestamp": int(time.time()),
        "srcNode": "server", "srcNodeID": "nSRV1", "srcNodeTags": ["tag:prod"],
        "sshUser": "bench", "localUser": "bench", "connectionID": conn,
    }).encode() + b"\n"


def events_block(size: int, t: float = 0.5) -> bytes:
    line = json.dumps([t, "o", "x" * 990 + "\r\n"]).encode() + b"\n"
    return line * max(1, size // len(line))


@dataclass
class Recorder:
    work: Path
    dst: str
    extra: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        netmap = self.work / "netmap.json"
        netmap.write_text(json.dumps(NETMAP))
        policy = self.work / "policy.json"
        policy.write_text('{"ssh": []}')
        log = open(self.work / "recorder.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "recorder", "--dst", self.dst, "--listen",
             f"127.0.0.1:{self.port}", "--state-dir", str(self.work / "state"),
             "--netmap", str(netmap), "--policy", str(policy), "--log-level", "warning",
             *self.extra],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **self.env},
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).is_success:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise SystemExit("recorder did not start; see recorder.log")

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().split(")")[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=20)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


async def slow_stream(
    port: int, i: int, rate: int, interval: float, t_end: float,
    latencies: list[tuple[float, float]], failures: list[str],
) -> None:
    up = await H2Upload.open("127.0.0.1", port, local_address=SOURCE)
    try:
        if await up.wait_headers(30) != 200:
            failures.append(f"stream {i}: status {up.status}")
            return
        sent = header(f"ssh-conn-bench-{i:05d}")
        await up.send(sent)
        offset = len(sent)
        chunk = events_block(int(rate * interval))
        pending: list[tuple[int, float]] = []
        await asyncio.sleep(random.uniform(0, interval))
        next_t = time.monotonic()
        while time.monotonic() < t_end:
            await up.send(chunk)
            offset += len(chunk)
            pending.append((offset, time.monotonic()))
            next_t += interval
            await asyncio.sleep(max(0.0, next_t - time.monotonic()))
        await up.end()
        await up.wait_end(60)
        acks = up.ack_times
        j = 0
        for off, t in pending:
            while j < len(acks) and acks[j][1] < off:
                j += 1
            if j == len(acks):
                failures.append(f"stream {i}: no ack for offset {off}")
                break
            latencies.append((t, acks[j][0] - t))
        if up.error:
            failures.append(f"stream {i}: {up.error}")
    except Exception as e:
        failures.append(f"stream {i}: {type(e).__name__}: {e}")
    finally:
        await up.close()


async def many_streams(rec: Recorder, streams: int, rate: int, duration: float) -> dict[str, float]:
    latencies: list[tuple[float, float]] = []
    failures: list[str] = []
    rss: list[float] = []
    interval = 0.2
    t_end = time.monotonic() + duration
    tasks = []
    for i in range(streams):
        tasks.append(asyncio.create_task(
            slow_stream(rec.port, i, rate, interval, t_end, latencies, failures)
        ))
        if i % 50 == 49:
            await asyncio.sleep(0.05)  # do not open a thousand connections in one burst
    steady_from = time.monotonic() + 3.0  # every stream open and past its first chunks

    async def sample() -> None:
        while True:
            rss.append(rec.rss_mib())
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    await asyncio.gather(*tasks)
    sampler.cancel()
    if failures:
        print(f"  {len(failures)} failures, first: {failures[:3]}", file=sys.stderr)
    every = [lat for _, lat in latencies]
    steady = [lat for t, lat in latencies if t >= steady_from]
    return {
        "p50_ms": percentile(steady, 50) * 1000, "p99_ms": percentile(steady, 99) * 1000,
        "all_p99_ms": percentile(every, 99) * 1000,
        "max_ms": max(every, default=float("nan")) * 1000, "rss_mib": max(rss, default=0),
        "chunks": len(latencies), "failures": len(failures),
    }


async def bulk(port: int, streams: int, mib_each: int) -> float:
    """Seconds until every stream of ``mib_each`` MiB got its final ack."""
    block = events_block(256 * 1024)

    async def one(i: int) -> None:
        up = await H2Upload.open("127.0.0.1", port, local_address=SOURCE)
        try:
            assert await up.wait_headers(30) == 200
            data = header(f"ssh-conn-bulk-{i}")
            await up.send(data)
            total = len(data)
            while total < mib_each * MiB:
                await up.send(block)
                total += len(block)
            await up.end()
            await up.wait_end(600)
            assert up.error is None and up.acks[-1] == total, up.frames[-2:]
        finally:
            await up.close()

    t0 = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(streams)))
    return time.monotonic() - t0


def commit_stats(port: int) -> str:
    """Mean group-commit time and batch size, from the recorder's own metrics."""
    values: dict[str, float] = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics").text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("tsrecorder_commit_seconds_sum", "tsrecorder_commit_seconds_count",
                    "tsrecorder_commit_files_sum"):
            values[name] = float(value)
    count = values.get("tsrecorder_commit_seconds_count", 0.0)
    if not count:
        return "-"
    mean_ms = values["tsrecorder_commit_seconds_sum"] / count * 1000
    return f"{mean_ms:.0f} ms / {values['tsrecorder_commit_files_sum'] / count:.0f}"


def dd_seconds(directory: Path, mib: int) -> float:
    target = directory / "dd.bin"
    t0 = time.monotonic()
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={mib}", "conv=fsync"],
        check=True, capture_output=True,
    )
    elapsed = time.monotonic() - t0
    target.unlink()
    return elapsed


def run(coro: Awaitable[object]) -> object:
    try:
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=20_000, help="bytes/s per slow stream")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of slow streams")
    ap.add_argument("--bulk-mib", type=int, default=512, help="MiB per bulk run (all streams)")
    ap.add_argument("--s3-mib", type=int, default=64, help="MiB for the S3 bulk run (0: skip)")
    ap.add_argument("--dir", type=Path, default=Path.cwd(), help="where storage and dd write")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-recorder-", dir=args.dir))
    rows: list[tuple[str, str, str]] = []
    try:
        rec = Recorder(work / "disk", str(work / "disk" / "store"))
        (work / "disk").mkdir()
        rec.start()
        try:
            print(f"{args.streams} streams x {args.rate / 1000:.0f} KB/s "
                  f"for {args.duration:.0f} s ...", file=sys.stderr)
            cpu0 = rec.cpu_seconds()
            many = run(many_streams(rec, args.streams, args.rate, args.duration))
            assert isinstance(many, dict)
            per_chunk = (rec.cpu_seconds() - cpu0) / max(1, many["chunks"]) * 1e6
            commits = commit_stats(rec.port)
            rows.append((
                f"{args.streams} v2 streams x {args.rate // 1000} KB/s: ack latency p50 / p99 "
                "(steady: 3 s after the last stream opened)",
                f"{many['p50_ms']:.0f} / {many['p99_ms']:.0f} ms (with the ramp: p99 "
                f"{many['all_p99_ms']:.0f}, max {many['max_ms']:.0f}; {many['chunks']} chunks, "
                f"{many['failures']} failed streams)",
                "p99 <= 250 ms",
            ))
            rows.append(("recorder RSS (peak)", f"{many['rss_mib']:.0f} MiB", "<= 300 MB"))
            rows.append((
                "recorder CPU per chunk (4 KB chunk + its ack)", f"{per_chunk:.0f} µs", "-",
            ))
            rows.append(("group commit: mean time / files per batch", commits, "-"))
            for streams in (1, 10):
                mib = args.bulk_mib
                cpu0 = rec.cpu_seconds()
                secs = run(bulk(rec.port, streams, max(1, mib // streams)))
                assert isinstance(secs, float)
                cpu_per_gib = (rec.cpu_seconds() - cpu0) / (mib / 1024)
                dd = dd_seconds(work / "disk", mib)
                rate, dd_rate = mib / secs, mib / dd
                rows.append((
                    f"bulk to disk, {streams} stream{'s' if streams > 1 else ''} ({mib} MiB)",
                    f"{rate:.0f} MiB/s vs dd {dd_rate:.0f} MiB/s = {rate / dd_rate:.2f}x; "
                    f"recorder CPU {cpu_per_gib:.1f} s/GiB",
                    ">= 0.5x dd",
                ))
        finally:
            rec.stop()
        if args.s3_mib and MotoServer.exe().exists():
            rows.append(s3_row(work, args.s3_mib))
    finally:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    print("| measure | result | goal |\n|---|---|---|")
    for row in rows:
        print(f"| {row[0]} | {row[1]} | {row[2]} |")
    return 0


def s3_row(work: Path, mib: int) -> tuple[str, str, str]:
    (work / "s3").mkdir()
    moto = MotoServer(work / "s3")
    rec = Recorder(work / "s3", f"s3+{moto.url}", ["--bucket", "bench"], AWS_ENV)
    try:
        moto.start()
        s3 = moto.client()
        s3.create_bucket(Bucket="bench")
        rec.start()
        t0 = time.monotonic()
        acked = run(bulk(rec.port, 1, mib))
        assert isinstance(acked, float)
        until: Callable[[], bool] = lambda: any(  # noqa: E731
            o["Key"].endswith(".cast") and o["Size"] >= mib * MiB
            for o in s3.list_objects_v2(Bucket="bench").get("Contents", [])
        )
        while not until():
            if time.monotonic() - t0 > 600:
                raise SystemExit("S3 upload did not finish")
            time.sleep(0.2)
        in_bucket = time.monotonic() - t0
        return (
            f"bulk to S3 (moto), 1 stream ({mib} MiB)",
            f"acked (spooled) {mib / acked:.0f} MiB/s; in the bucket {mib / in_bucket:.0f} MiB/s",
            "-",
        )
    finally:
        rec.stop()
        moto.stop()


if __name__ == "__main__":
    raise SystemExit(main())
