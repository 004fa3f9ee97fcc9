"""tssh against the stock OpenSSH sshd on a slow, lossy WireGuard link, in the same run.

Two lab nodes (network namespaces joined by wireguard-go, tests/lab/link.py): the servers
run on "server", the clients on "client", and every packet between them passes a delay line
(100 ms RTT, then 100 ms RTT with 1 % loss each way). Three servers on the same link: tssh
as configured by default, tssh with asyncssh's 2 MiB channel window (tssh before
``channel_window``), and sshd. Transfers alternate between the servers so drift in the
machine's load falls on all alike.

    sudo python benchmarks/bench_links.py            # 64 MiB each way, 3 rounds per shape
    sudo python benchmarks/bench_links.py --quick    # 32 MiB, 1 round: about two minutes

Measures: keystroke echo (one PTY session typing 20 keys/s), download (``ssh host head -c N
/dev/zero > /dev/null``) and upload (``... | ssh host 'cat > /dev/null'``). Prints a table
with tssh/OpenSSH ratios. Needs root (namespaces, sshd, a throw-away account).
"""

from __future__ import annotations

import argparse
import contextlib
import os
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
    Target,
    bench_user,
    clean_up_on_sigterm,
    percentile,
    stock_sshd,
    tssh_daemon,
)
from tests.identity.wglab import lab_unavailable_reason, run  # noqa: E402
from tests.lab import typist  # noqa: E402
from tests.lab.link import LinkLab, Shape, link_lab, server_place  # noqa: E402

SHAPES = (Shape(100, 0.0), Shape(100, 0.01))
BEFORE_WINDOW = 2 * 1024 * 1024  # asyncssh's default, what tssh used before channel_window
# The kernel's TCP buffers may grow to this on both nodes (net.ipv4.tcp_wmem's default
# maximum, 4 MiB, would cap a 100 ms path near 30 MiB/s whatever SSH does).
TCP_BUFFER_MAX = 32 << 20
MIB = 1 << 20


def widen_tcp_buffers(link: LinkLab) -> None:
    for node in ("client", "server"):
        for key in ("net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"):
            run(*link.argv(node, "sysctl", "-q", "-w", f"{key}=4096 131072 {TCP_BUFFER_MAX}"))


def transfer(t: Target, user: str, size: int, way: str) -> float:
    """MiB/s of one ``size``-byte transfer, "down" (server to client) or "up"."""
    start = time.perf_counter()
    if way == "down":
        subprocess.run(t.ssh(user, f"head -c {size} /dev/zero"), check=True,
                       stdout=subprocess.DEVNULL, timeout=900)
    else:
        with subprocess.Popen(["head", "-c", str(size), "/dev/zero"],
                              stdout=subprocess.PIPE) as src:
            subprocess.run(t.ssh(user, "cat > /dev/null"), stdin=src.stdout, check=True,
                           timeout=900)
    return size / (time.perf_counter() - start) / MIB


def echo_ms(link: LinkLab, t: Target, user: str, seconds: float) -> list[float]:
    argv = typist.command(link.argv("client"), t.ip, t.port, user, seconds=seconds,
                          key=t.identity, bind=t.client_ip, kex=KEX, cipher=CIPHER)
    return [ms for _, ms in typist.run(argv)]


def main() -> int:
    clean_up_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="32 MiB, 1 round")
    parser.add_argument("--size-mib", type=int, help="bytes per transfer (default 64)")
    parser.add_argument("--rounds", type=int, help="transfers per direction (default 3)")
    parser.add_argument("--echo-seconds", type=float, default=5.0)
    args = parser.parse_args()
    reason = lab_unavailable_reason()
    if reason:
        print(f"bench_links: cannot build the lab: {reason}", file=sys.stderr)
        return 2
    size = (args.size_mib or (32 if args.quick else 64)) * MIB
    rounds = args.rounds or (1 if args.quick else 3)
    rows: list[tuple[str, float, float, float]] = []  # measure, tssh before, tssh, sshd
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-links-")))
        os.chmod(work, 0o755)
        user = stack.enter_context(bench_user())
        link = stack.enter_context(link_lab())
        widen_tcp_buffers(link)

        tssh = stack.enter_context(tssh_daemon(work, user, server_place(link.lab, 22)))
        before = stack.enter_context(tssh_daemon(
            work, user, server_place(link.lab, 2222), name="tssh-2MiB",
            extra=("--channel-window", str(BEFORE_WINDOW))))
        sshd = stack.enter_context(stock_sshd(work, user, server_place(link.lab, 2200)))
        targets = [before, tssh, sshd]
        for t in targets:
            subprocess.run(t.ssh(user, "true"), check=True, timeout=60)  # warm up
        print(f"user {user}, kex {KEX}, cipher {CIPHER}, {size // MIB} MiB x {rounds}",
              flush=True)
        for shape in SHAPES:
            link.shape(shape)
            rtts = link.rtt_ms(5)
            print(f"{shape}: ping RTT median {statistics.median(rtts):.1f} ms", flush=True)
            echoes = {t.name: echo_ms(link, t, user, args.echo_seconds) for t in targets}
            for p in (50, 99):
                rows.append((f"{shape}: echo p{p} (ms)",
                             *(percentile(echoes[t.name], p) for t in targets)))
            for way in ("down", "up"):
                rates: dict[str, list[float]] = {t.name: [] for t in targets}
                for _ in range(rounds):
                    for t in targets:
                        rates[t.name].append(transfer(t, user, size, way))
                        print(f"  {way} {t.name}: {rates[t.name][-1]:.1f} MiB/s", flush=True)
                rows.append((f"{shape}: {way}load {size // MIB} MiB (MiB/s)",
                             *(statistics.median(rates[t.name]) for t in targets)))
    print("\n| measure | tssh, 2 MiB window | tssh | OpenSSH | tssh/OpenSSH | "
          "tssh/2 MiB window |\n|---|---:|---:|---:|---:|---:|")
    for name, old, new, theirs in rows:
        print(f"| {name} | {old:.1f} | {new:.1f} | {theirs:.1f} | {new / theirs:.2f}x | "
              f"{new / old:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
