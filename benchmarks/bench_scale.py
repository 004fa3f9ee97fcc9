"""How tssh scales with concurrent work, against the stock OpenSSH sshd in the same run.

sshd forks a process per connection and so spreads over every core; tssh serves connections
in one event loop per process (``workers`` processes, docs/daemon.md, "Worker processes").
Two measures, each alternating between the servers round by round so drift in the machine's
load hits all of them:

- N = 1, 2, 4, 8 concurrent exec downloads (``ssh host 'head -c SIZE /dev/zero'`` into
  /dev/null): aggregate MiB/s over the wall time of the slowest, and each server's CPU
  seconds per GiB moved (the server and all its processes, the session's ``head`` included);
- bursts of 40 and 200 ``ssh host true`` started at once: wall time until the last exits,
  and the server's and the ``ssh`` clients' CPU per login (a burst is bound by the CPU of
  both; the server's session processes that live under 20 ms escape the sampler, for
  both servers alike).

    sudo python benchmarks/bench_scale.py                  # tssh (workers = 1) and sshd
    sudo python benchmarks/bench_scale.py --workers 1,2    # two tssh daemons and sshd
    sudo python benchmarks/bench_scale.py --quick          # 32 MiB, one round

Prints a table of figures with each tssh's ratio to OpenSSH. Needs root (sshd, the
account) and openssh-server installed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_ssh import (  # noqa: E402
    CIPHER,
    KEX,
    TSSH_LIMITS,
    CpuSampler,
    Target,
    bench_user,
    clean_up_on_sigterm,
    stock_sshd,
    tssh_daemon,
)

STREAMS = (1, 2, 4, 8)
BURSTS = (40, 200)
MIB = 1024 * 1024
GIB = 1024 * MIB


def run_at_once(t: Target, argv: list[str], count: int, what: str,
                timeout: float) -> float:
    """Start ``count`` copies of ``argv`` at once; seconds until the last exits (those still
    running at ``timeout`` are killed). RuntimeError if any failed."""
    start = time.perf_counter()
    procs = [subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(count)]
    deadline = time.monotonic() + timeout
    failed = 0
    for proc in procs:
        try:
            status = proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            status = proc.wait()
        failed += status != 0
    elapsed = time.perf_counter() - start
    if failed:
        raise RuntimeError(f"{t.name}: {failed} of {count} {what} failed")
    return elapsed


def downloads(t: Target, user: str, streams: int, size: int) -> tuple[float, float]:
    """``streams`` downloads of ``size`` bytes at once: aggregate bytes/s, CPU s per GiB."""
    with CpuSampler(t.pid) as sampler:
        elapsed = run_at_once(t, t.ssh(user, f"head -c {size} /dev/zero"), streams,
                              "downloads", 600)
    moved = streams * size
    return moved / elapsed, sampler.seconds / (moved / GIB)


def burst(t: Target, user: str, logins: int) -> tuple[float, float, float]:
    """``logins`` ``ssh host true`` started at once: seconds until the last exits, and the
    server's and the clients' CPU seconds per login. A 40-login burst on a small machine is
    bound by CPU, the ``ssh`` clients' as much as the server's, so the split says which."""
    clients = resource.getrusage(resource.RUSAGE_CHILDREN)
    with CpuSampler(t.pid) as sampler:
        elapsed = run_at_once(t, t.ssh(user, "true"), logins, "logins", 300)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (after.ru_utime + after.ru_stime) - (clients.ru_utime + clients.ru_stime)
    return elapsed, sampler.seconds / logins, client_cpu / logins


def _parse_workers(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or any(n < 1 for n in counts):
        raise argparse.ArgumentTypeError("a comma-separated list of worker counts >= 1")
    return counts


def main() -> int:
    clean_up_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="32 MiB downloads, one round")
    parser.add_argument("--size-mib", type=int, help="bytes per download (default 64)")
    parser.add_argument("--rounds", type=int, help="rounds per measure (default 3)")
    parser.add_argument("--workers", type=_parse_workers, default=[1],
                        help="tssh daemons to run, by worker count (default 1; e.g. 1,2)")
    parser.add_argument("--only", choices=("downloads", "logins"), help="run one measure")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_scale: needs root (runs sshd and makes a throw-away user)",
              file=sys.stderr)
        return 2
    size = (args.size_mib or (32 if args.quick else 64)) * MIB
    rounds = args.rounds or (1 if args.quick else 3)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp, bench_user() as user, \
            contextlib.ExitStack() as stack:
        work = Path(tmp)
        os.chmod(work, 0o755)
        targets = []
        for n in args.workers:
            flags = TSSH_LIMITS if n == 1 else (*TSSH_LIMITS, "--workers", str(n))
            targets.append(stack.enter_context(
                tssh_daemon(work, user, name=f"tssh-w{n}", extra=flags)))
        sshd = stack.enter_context(stock_sshd(work, user))
        targets.append(sshd)
        for t in targets:  # warm up: host keys, the first account lookup
            subprocess.run(t.ssh(user, "true"), check=True, timeout=30)
        print(f"user {user}, kex {KEX}, cipher {CIPHER}, {size // MIB} MiB per download, "
              f"{rounds} rounds, {os.cpu_count()} cores", flush=True)
        rows: list[tuple[str, dict[str, float], str]] = []
        if args.only in (None, "downloads"):
            for streams in STREAMS:
                rates: dict[str, list[float]] = {t.name: [] for t in targets}
                cpu: dict[str, list[float]] = {t.name: [] for t in targets}
                for _ in range(rounds):
                    for t in targets:
                        rate, per_gib = downloads(t, user, streams, size)
                        rates[t.name].append(rate / MIB)
                        cpu[t.name].append(per_gib)
                rows.append((f"{streams} downloads at once, aggregate (MiB/s)",
                             {n: statistics.median(v) for n, v in rates.items()},
                             ">= 1.0x at 4" if streams == 4 else ""))
                rows.append((f"{streams} downloads, server CPU per GiB (s)",
                             {n: statistics.median(v) for n, v in cpu.items()}, ""))
                print(rows[-2], rows[-1], flush=True)
        if args.only in (None, "logins"):
            for logins in BURSTS:
                walls: dict[str, list[float]] = {t.name: [] for t in targets}
                server_ms: dict[str, list[float]] = {t.name: [] for t in targets}
                client_ms: dict[str, list[float]] = {t.name: [] for t in targets}
                for _ in range(rounds):
                    for t in targets:
                        wall, server, client = burst(t, user, logins)
                        walls[t.name].append(wall)
                        server_ms[t.name].append(server * 1000)
                        client_ms[t.name].append(client * 1000)
                rows.append((f"burst of {logins} `ssh host true` (s)",
                             {n: statistics.median(v) for n, v in walls.items()},
                             "<= 0.5x at 40" if logins == 40 else ""))
                rows.append((f"burst of {logins}: server CPU per login (ms)",
                             {n: statistics.median(v) for n, v in server_ms.items()}, ""))
                rows.append((f"burst of {logins}: `ssh` client CPU per login (ms)",
                             {n: statistics.median(v) for n, v in client_ms.items()}, ""))
                print(*rows[-3:], flush=True)
    names = [t.name for t in targets if t is not sshd]
    print("\n| measure | " + " | ".join(names) + " | OpenSSH | "
          + " | ".join(f"{n}/OpenSSH" for n in names) + " | goal |")
    print("|---|" + "---:|" * (2 * len(names) + 1) + "---|")
    for measure, figures, goal in rows:
        theirs = figures[sshd.name]
        cells = [f"{figures[n]:.2f}" for n in names] + [f"{theirs:.2f}"]
        cells += [f"{figures[n] / theirs:.2f}x" if theirs else "nan" for n in names]
        print(f"| {measure} | " + " | ".join(cells) + f" | {goal} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
