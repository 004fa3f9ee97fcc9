"""What session recording costs: the real daemon, the stock ssh client, recorded vs not.

One ``tssh daemon`` serves two throw-away accounts: the policy records every session of the
first to a recorder node (``enforceRecorder``, so backpressure, not dropping, keeps up) and
does not record the second. Runs alternate between the two so that drift in the machine's
load hits both. The recorder is the tests' fake recorder (v2, one ack per read, keeps no
data) in a thread of this process, so that the figures are the daemon's cost, or with
``--recorder real`` the recorder node (``python -m recorder``) storing to disk.

    sudo python benchmarks/bench_recording.py           # 256 MiB of PTY output, 100 logins
    sudo python benchmarks/bench_recording.py --quick   # 32 MiB, 30 logins: ~half a minute

Prints PTY output throughput (``ssh -tt host 'yes ... | head -c N'``) and login time
(``ssh host true``), recorded and unrecorded, with their ratio. Needs root (the accounts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_ssh import (  # noqa: E402
    CLIENT_IP,
    SSH_OPTIONS,
    TSSH_IP,
    bench_user,
    clean_up_on_sigterm,
    cpu_seconds,
    percentile,
    timed_run,
)
from tests.ports import free_port, wait_for_port  # noqa: E402
from tests.processes import stop_process  # noqa: E402
from tests.recording.fake_recorder import Behavior, FakeRecorder  # noqa: E402

RECORDER_IP = "127.0.0.20"
LINE = "drwxr-xr-x  2 alice alice  4096 Jan  1 00:00 some-file-name.txt"


NODES = [
    {"name": "server", "id": "nS", "addresses": [TSSH_IP], "tags": ["tag:bench"]},
    {"name": "client", "id": "nC", "addresses": [CLIENT_IP], "user": "bench@example.com"},
    {"name": "recorder", "id": "nR", "addresses": [RECORDER_IP], "tags": ["tag:recorder"]},
]


class Recorder(Protocol):
    port: int

    def recordings(self) -> tuple[int, int]:
        """How many recordings it received, and their bytes."""
        ...

    def cpu(self) -> float:
        """CPU seconds it used so far."""
        ...


class FakeNode:
    """The tests' fake recorder: v2, one ack per read, keeps nothing; a thread of ours."""

    def __init__(self, rec: FakeRecorder) -> None:
        self.rec = rec
        self.port = rec.port

    def recordings(self) -> tuple[int, int]:
        return len(self.rec.uploads), sum(u.size for u in self.rec.uploads)

    def cpu(self) -> float:
        return time.process_time()  # this process does nothing else meanwhile


class RealNode:
    """The recorder node (``python -m recorder serve``) storing to a directory."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, dst: Path) -> None:
        self.proc = proc
        self.port = port
        self.dst = dst

    def recordings(self) -> tuple[int, int]:
        casts = list(self.dst.rglob("*.cast"))
        return len(casts), sum(c.stat().st_size for c in casts)

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # all threads


@contextlib.contextmanager
def fake_recorder() -> Iterator[Recorder]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    rec = FakeRecorder(Behavior(keep_body=False, ack_per_read=True, tuned=True), host=RECORDER_IP,
                       port=free_port(RECORDER_IP))
    asyncio.run_coroutine_threadsafe(rec.start(), loop).result(10)
    try:
        yield FakeNode(rec)
    finally:
        asyncio.run_coroutine_threadsafe(rec.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@contextlib.contextmanager
def real_recorder(work: Path) -> Iterator[Recorder]:
    (work / "recorder-netmap.json").write_text(json.dumps({"self": "recorder",
                                                           "nodes": NODES}))
    (work / "recorder-policy.json").write_text('{"ssh": []}')
    port = free_port(RECORDER_IP)
    log = (work / "recorder.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "recorder", "serve", "--dst", str(work / "recordings"),
         "--listen", f"{RECORDER_IP}:{port}", "--netmap", str(work / "recorder-netmap.json"),
         "--policy", str(work / "recorder-policy.json"), "--state-dir",
         str(work / "recorder-state")],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HOME": str(work)},
    )
    try:
        wait_for_port(RECORDER_IP, port)
        yield RealNode(proc, port, work / "recordings")
    finally:
        stop_process(proc)
        log.close()


@contextlib.contextmanager
def daemon(work: Path, recorded: str, unrecorded: str, recorder_port: int
           ) -> Iterator[tuple[int, int]]:
    """The daemon's (port, pid)."""
    netmap = {"self": "server", "nodes": NODES}
    rule = {"action": "accept", "src": ["bench@example.com"], "dst": ["tag:bench"]}
    policy = {
        "tagOwners": {"tag:bench": ["bench@example.com"],
                      "tag:recorder": ["bench@example.com"]},
        "ssh": [{**rule, "users": [recorded], "recorder": ["tag:recorder"],
                 "enforceRecorder": True},
                {**rule, "users": [unrecorded]}],
    }
    (work / "netmap.json").write_text(json.dumps(netmap))
    (work / "policy.json").write_text(json.dumps(policy))
    port = free_port(TSSH_IP)
    log = (work / "tssh.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tssh", "daemon", "--netmap", str(work / "netmap.json"),
         "--policy", str(work / "policy.json"), "--port", str(port), "--state-dir",
         str(work / "state"), "--recorder-port", str(recorder_port), "--log-level",
         "warning"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(TSSH_IP, port)
        yield port, proc.pid
    finally:
        stop_process(proc)
        log.close()


def daemon_cpu(pid: int) -> float:
    """The daemon's CPU seconds and its recording worker's (which does the recording's work)."""
    total = cpu_seconds(pid)
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            with contextlib.suppress(OSError):
                if b"tssh.recording.worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                    total += cpu_seconds(int(child))
    return total


def ssh(port: int, user: str, *command: str, tty: bool = False) -> list[str]:
    return ["ssh", *SSH_OPTIONS, *(["-tt"] if tty else []), "-p", str(port),
            f"{user}@{TSSH_IP}", *command]


def pty_throughput(port: int, user: str, size: int) -> float:
    """Bytes per second of terminal output through a PTY session to the client."""
    start = time.perf_counter()
    subprocess.run(ssh(port, user, f"yes '{LINE}' | head -c {size}", tty=True), check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=600)
    return size / (time.perf_counter() - start)


def login_time(port: int, user: str) -> float:
    return timed_run(ssh(port, user, "true"))


def main() -> int:
    clean_up_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="32 MiB, 30 logins")
    parser.add_argument("--size", type=int, help="bytes of PTY output per run")
    parser.add_argument("--rounds", type=int, default=5, help="throughput runs per side")
    parser.add_argument("--logins", type=int, help="logins per side")
    parser.add_argument("--recorder", choices=("fake", "real"), default="fake",
                        help="the tests' fake recorder (default: the daemon's cost alone) or "
                        "the recorder node storing to disk")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_recording: needs root (it creates throw-away accounts)", file=sys.stderr)
        return 2
    size = args.size or (32 << 20 if args.quick else 256 << 20)
    logins = args.logins or (30 if args.quick else 100)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tssh-bench-")))
        recorded = stack.enter_context(bench_user())
        unrecorded = stack.enter_context(bench_user())
        rec = stack.enter_context(fake_recorder() if args.recorder == "fake"
                                  else real_recorder(work))
        port, pid = stack.enter_context(daemon(work, recorded, unrecorded, rec.port))
        users = {"recorded": recorded, "unrecorded": unrecorded}
        for user in users.values():  # warm up: first logins create homes' caches etc.
            login_time(port, user)
        rates: dict[str, list[float]] = {k: [] for k in users}
        cpu: dict[str, list[float]] = {k: [] for k in users}
        recorder_cpu: list[float] = []
        gib = size / (1 << 30)
        for _ in range(args.rounds):
            for kind, user in users.items():
                before, before_rec = daemon_cpu(pid), rec.cpu()
                rates[kind].append(pty_throughput(port, user, size))
                cpu[kind].append((daemon_cpu(pid) - before) / gib)
                if kind == "recorded":
                    recorder_cpu.append((rec.cpu() - before_rec) / gib)
        times: dict[str, list[float]] = {k: [] for k in users}
        for _ in range(logins):
            for kind, user in users.items():
                times[kind].append(login_time(port, user))
        time.sleep(0.5)  # the last recording's end is acknowledged after the client exits
        uploads, recorded_bytes = rec.recordings()
    expected = args.rounds + logins + 1
    if uploads != expected:
        print(f"bench_recording: {uploads} recordings, expected {expected}", file=sys.stderr)
        return 1
    out = {k: statistics.median(v) / (1 << 20) for k, v in rates.items()}
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    p90 = {k: percentile(v, 90) * 1000 for k, v in times.items()}
    print(f"PTY output, {size >> 20} MiB x {args.rounds}, median; login `ssh host true` "
          f"x {logins}; {uploads} recordings, {recorded_bytes / (1 << 20):.0f} MiB uploaded")
    print(f"{'measure':32} {'recorded':>10} {'unrecorded':>11} {'ratio':>6}")
    print(f"{'PTY output throughput (MiB/s)':32} {out['recorded']:10.1f} "
          f"{out['unrecorded']:11.1f} {out['recorded'] / out['unrecorded']:6.2f}")
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"{'daemon+worker CPU s/GiB output':32} {cpu_med['recorded']:10.1f} "
          f"{cpu_med['unrecorded']:11.1f} {cpu_med['recorded'] / cpu_med['unrecorded']:6.2f}")
    label = f"recorder CPU s per GiB ({args.recorder})"
    print(f"{label:32} {statistics.median(recorder_cpu):10.1f}")
    print(f"{'login time, median (ms)':32} {med['recorded']:10.1f} {med['unrecorded']:11.1f} "
          f"{med['recorded'] / med['unrecorded']:6.2f}")
    print(f"{'login time, p90 (ms)':32} {p90['recorded']:10.1f} {p90['unrecorded']:11.1f} "
          f"{p90['recorded'] / p90['unrecorded']:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
