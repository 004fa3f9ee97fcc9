"""What the SFTP transfer audit costs: sftp upload and download through the daemon with the
parser in the data path, against the same daemon with it taken out (docs/audit.md).

Two daemons run side by side on loopback, serving a throw-away account; the stock ``sftp``
client moves one file up (``put``) and down (``get``), alternating between the daemons so
the machine's drift hits both. The daemon without the parser is the same code with
``ProcessSession._transfer_parser`` replaced by one that returns None, for this benchmark
only.

    sudo python benchmarks/bench_transfer_audit.py                 # 256 MiB, 3 rounds
    sudo python benchmarks/bench_transfer_audit.py --size-mib 1024

Prints the median MiB/s each way, the ratio (goal >= 0.9x) and the daemon's CPU seconds per
GiB moved. Needs root (the account).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_ssh import (  # noqa: E402
    CIPHER,
    CLIENT_IP,
    KEX,
    TSSH_IP,
    bench_user,
    clean_up_on_sigterm,
    cpu_seconds,
)
from tests.openssh import CLIENT_OPTIONS  # noqa: E402
from tests.ports import free_port, wait_for_port  # noqa: E402
from tests.processes import stop_process  # noqa: E402

SFTP_OPTIONS = [*CLIENT_OPTIONS, "-o", f"KexAlgorithms={KEX}", "-c", CIPHER,
                "-o", f"BindAddress={CLIENT_IP}"]
# The daemon, with the transfer parser taken out (the only difference).
WITHOUT_PARSER = (
    "import sys\n"
    "import tssh.server.session as session\n"
    "session.ProcessSession._transfer_parser = lambda self, argv: None\n"
    "from tssh.cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@contextlib.contextmanager
def daemon(work: Path, name: str, parser: bool) -> Iterator[tuple[int, int]]:
    """(port, pid) of a daemon letting the bench client in as any non-root user."""
    netmap = {"self": "server", "nodes": [
        {"name": "server", "id": "nS", "addresses": [TSSH_IP], "tags": ["tag:bench"]},
        {"name": "client", "id": "nC", "addresses": [CLIENT_IP], "user": "bench@example.com"},
    ]}
    policy = {"tagOwners": {"tag:bench": ["bench@example.com"]},
              "ssh": [{"action": "accept", "src": ["bench@example.com"],
                       "dst": ["tag:bench"], "users": ["autogroup:nonroot"]}]}
    (work / "netmap.json").write_text(json.dumps(netmap))
    (work / "policy.json").write_text(json.dumps(policy))
    port = free_port(TSSH_IP)
    start = [sys.executable, "-m", "tssh"] if parser else [sys.executable, "-c", WITHOUT_PARSER]
    log = (work / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        [*start, "daemon", "--netmap", str(work / "netmap.json"), "--policy",
         str(work / "policy.json"), "--port", str(port), "--state-dir",
         str(work / f"{name}-state"), "--log-level", "warning"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        wait_for_port(TSSH_IP, port, proc)
        yield port, proc.pid
    finally:
        stop_process(proc)
        log.close()


def sftp(port: int, user: str, command: str, work: Path) -> float:
    batch = work / "batch"
    batch.write_text(command + "\n")
    start = time.perf_counter()
    subprocess.run(["sftp", *SFTP_OPTIONS, "-P", str(port), "-b", str(batch),
                    f"{user}@{TSSH_IP}"], check=True, capture_output=True, timeout=600)
    return time.perf_counter() - start


def main() -> int:
    clean_up_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256, help="file size (default 256)")
    parser.add_argument("--rounds", type=int, default=3, help="transfers per direction")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_transfer_audit: needs root (a throw-away user)", file=sys.stderr)
        return 2
    size = args.size_mib * 1024 * 1024
    mib = 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp, bench_user() as user:
        work = Path(tmp)
        os.chmod(work, 0o755)
        source = work / "file.bin"
        with source.open("wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(mib))
        with daemon(work, "with", True) as with_parser, \
                daemon(work, "without", False) as without:
            servers = {"with parser": with_parser, "without": without}
            rates: dict[str, dict[str, list[float]]] = {
                n: {"up": [], "down": []} for n in servers}
            cpu: dict[str, dict[str, float]] = {n: {"up": 0.0, "down": 0.0} for n in servers}
            for port, _ in servers.values():  # warm up (and fail early)
                sftp(port, user, "pwd", work)
            for round_ in range(args.rounds):
                order = list(servers.items())
                for name, (port, pid) in order if round_ % 2 == 0 else reversed(order):
                    for way, command in (("up", f"put {source} f.bin"),
                                         ("down", "get f.bin /dev/null")):
                        before = cpu_seconds(pid)
                        seconds = sftp(port, user, command, work)
                        cpu[name][way] += cpu_seconds(pid) - before
                        rates[name][way].append(size / seconds / mib)
            moved_gib = args.rounds * size / (1 << 30)
            print(f"sftp {args.size_mib} MiB, {args.rounds} rounds, kex {KEX}, cipher {CIPHER}")
            print(f"{'':22} {'with parser':>12} {'without':>12} {'ratio':>7}")
            for way in ("up", "down"):
                a = statistics.median(rates["with parser"][way])
                b = statistics.median(rates["without"][way])
                print(f"{'sftp ' + way + ' (MiB/s)':22} {a:12.1f} {b:12.1f} {a / b:6.2f}x")
            for way in ("up", "down"):
                a = cpu["with parser"][way] / moved_gib
                b = cpu["without"][way] / moved_gib
                print(f"{'daemon CPU/GiB ' + way + ' (s)':22} {a:12.2f} {b:12.2f} {a / b:6.2f}x")
            audit = work / "with-state" / "audit.jsonl"
            closes = [json.loads(line) for line in audit.read_text().splitlines()
                      if '"sftp.close"' in line]
            assert all(c["bytesWritten"] == size or c["bytesRead"] == size for c in closes)
            print(f"audited: {len(closes)} sftp.close events with the full byte count")
    return 0


if __name__ == "__main__":
    sys.exit(main())
