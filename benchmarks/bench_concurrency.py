"""Many recorded channels on one SSH connection: login to first byte, throughput, vs unrecorded.

One ``tssh daemon`` serves two throw-away accounts, as in ``bench_recording.py``: the policy
records every session of the first (``enforceRecorder``) and not the second. For 1, 10 and 50
concurrent exec channels on one connection (asyncssh, as multiplexing clients use it), each
round measures, recorded and unrecorded alternately:

- login to first byte: from ``connect`` (key exchange, login) until every one of the N
  channels, opened at once, has printed its first byte (the slowest channel; with recording
  this includes connecting N recordings);
- throughput: N channels on one open connection each writing SIZE/N bytes of text to
  stdout at once, total bytes over the wall time.

The recorder is the recorder node (``python -m recorder serve``) storing to disk, or with
``--recorder fake`` the tests' fake recorder in a thread of this process (which then shares
the client's interpreter).

    sudo python benchmarks/bench_concurrency.py            # 64 MiB per round, 5 rounds
    sudo python benchmarks/bench_concurrency.py --quick    # 16 MiB, 3 rounds
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncssh

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_recording import (  # noqa: E402
    LINE,
    daemon,
    fake_recorder,
    real_recorder,
)
from benchmarks.bench_ssh import CLIENT_IP, TSSH_IP, bench_user, clean_up_on_sigterm  # noqa: E402

LEVELS = (1, 10, 50)


def _connect(port: int, user: str) -> Any:  # asyncssh's awaitable context manager
    return asyncssh.connect(TSSH_IP, port, local_addr=(CLIENT_IP, 0), username=user,
                            known_hosts=None, encoding=None)


async def _first_byte(conn: asyncssh.SSHClientConnection, command: str) -> None:
    proc = await conn.create_process(command)
    await proc.stdout.read(1)
    await proc.wait()


async def login_to_first_byte(port: int, user: str, channels: int) -> float:
    """Seconds from connect until the last of ``channels`` concurrent channels printed."""
    start = time.perf_counter()
    async with _connect(port, user) as conn:
        await asyncio.gather(*(_first_byte(conn, f"echo {i}") for i in range(channels)))
        elapsed = time.perf_counter() - start
    return elapsed


async def _drain(conn: asyncssh.SSHClientConnection, size: int) -> int:
    proc = await conn.create_process(f"yes '{LINE}' | head -c {size}")
    got = 0
    while chunk := await proc.stdout.read(1 << 20):
        got += len(chunk)
    await proc.wait()
    if proc.exit_status != 0 or got != size:
        raise RuntimeError(f"channel got {got} of {size} bytes, exit {proc.exit_status}")
    return got


async def throughput(port: int, user: str, channels: int, size: int) -> float:
    """MiB/s of stdout over ``channels`` concurrent channels of one connection."""
    async with _connect(port, user) as conn:
        await _drain(conn, 1024)  # the connection is up before the clock starts
        start = time.perf_counter()
        counts = await asyncio.gather(*(_drain(conn, size // channels)
                                        for _ in range(channels)))
        elapsed = time.perf_counter() - start
    return sum(counts) / elapsed / (1 << 20)


async def measure(port: int, users: dict[str, str], rounds: int, size: int
                  ) -> dict[tuple[str, int, str], float]:
    """Medians by (measure, channels, recorded|unrecorded)."""
    samples: dict[tuple[str, int, str], list[float]] = {}
    for user in users.values():  # warm up (homes, caches, the recording worker)
        await login_to_first_byte(port, user, 1)
    for _ in range(rounds):
        for channels in LEVELS:
            for kind, user in users.items():
                samples.setdefault(("login", channels, kind), []).append(
                    await login_to_first_byte(port, user, channels))
                samples.setdefault(("throughput", channels, kind), []).append(
                    await throughput(port, user, channels, size))
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> int:
    clean_up_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 MiB per round, 3 rounds")
    parser.add_argument("--size", type=int, help="bytes of output per throughput round")
    parser.add_argument("--rounds", type=int, help="rounds per measure and side")
    parser.add_argument("--recorder", choices=("fake", "real"), default="real",
                        help="the recorder node storing to disk (default) or the tests' "
                        "fake recorder in this process")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_concurrency: needs root (it creates throw-away accounts)",
              file=sys.stderr)
        return 2
    size = args.size or (16 << 20 if args.quick else 64 << 20)
    rounds = args.rounds or (3 if args.quick else 5)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tssh-bench-")))
        recorded = stack.enter_context(bench_user())
        unrecorded = stack.enter_context(bench_user())
        rec = stack.enter_context(fake_recorder() if args.recorder == "fake"
                                  else real_recorder(work))
        port, _pid = stack.enter_context(daemon(work, recorded, unrecorded, rec.port))
        users = {"recorded": recorded, "unrecorded": unrecorded}
        med = asyncio.run(measure(port, users, rounds, size))
        time.sleep(0.5)  # the last recording's end is acknowledged after the client exits
        uploads, recorded_bytes = rec.recordings()
    # warm-up; per round and level: the login's N, the throughput's warm-up and N
    expected = 1 + rounds * sum(2 * n + 1 for n in LEVELS)
    if uploads != expected:
        print(f"bench_concurrency: {uploads} recordings, expected {expected}", file=sys.stderr)
        return 1
    print(f"{rounds} rounds, median; throughput: {size >> 20} MiB per round split over the "
          f"channels; {uploads} recordings ({args.recorder} recorder), "
          f"{recorded_bytes / (1 << 20):.0f} MiB uploaded")
    print(f"{'measure':38} {'recorded':>10} {'unrecorded':>11} {'ratio':>6}")
    for measure_name, label, scale in (("login", "login to first byte (ms)", 1000.0),
                                       ("throughput", "stdout throughput (MiB/s)", 1.0)):
        for channels in LEVELS:
            r = med[(measure_name, channels, "recorded")] * scale
            u = med[(measure_name, channels, "unrecorded")] * scale
            name = f"{label}, {channels} ch"
            print(f"{name:38} {r:10.1f} {u:11.1f} {r / u:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
