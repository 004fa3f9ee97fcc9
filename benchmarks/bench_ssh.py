"""tssh's SSH daemon against the stock OpenSSH sshd, measured in the same run.

Both servers run on loopback on this machine, serve the same local user (a throw-away
account made for the run), and are driven by the same clients with the same key exchange
and cipher, alternating between the servers so drift in the machine's load hits both.

    sudo python benchmarks/bench_ssh.py            # full run: 1 GiB transfers, 500 sessions
    sudo python benchmarks/bench_ssh.py --quick    # 128 MiB, 100 sessions: about a minute
    sudo python benchmarks/bench_ssh.py --only tunnel   # 256 MiB each way through ssh -L
    sudo python benchmarks/bench_ssh.py --only echo --sessions 1000 --workers 2

Prints a table of tssh/OpenSSH ratios and each figure. Needs root (sshd, the account) and
openssh-server installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pwd
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.openssh import CLIENT_OPTIONS  # noqa: E402
from tests.ports import free_port, wait_for_port  # noqa: E402
from tests.processes import stop_process  # noqa: E402

TSSH_IP = "127.0.0.10"
SSHD_IP = "127.0.0.11"
CLIENT_IP = "127.0.0.2"
KEX = "curve25519-sha256"
CIPHER = "aes128-gcm@openssh.com"
BASE_OPTIONS = [*CLIENT_OPTIONS, "-o", f"KexAlgorithms={KEX}", "-c", CIPHER]
SSH_OPTIONS = [*BASE_OPTIONS, "-b", CLIENT_IP]
# The benchmarks log in many connections at once from one address: no start-up bound may
# refuse one (sshd's MaxStartups is set likewise in stock_sshd).
TSSH_LIMITS = ("--max-startups", "1000", "--per-source-max-startups", "1000")


@dataclass(frozen=True)
class Place:
    """Where a server runs and where its clients connect from: this machine's loopback
    (the default), or a lab node's network namespace (``prefix``: the argv prefix that runs
    a command there, ``client_prefix`` the same for the client's node)."""

    ip: str
    client_ip: str = CLIENT_IP
    port: int | None = None  # None: a free loopback port
    prefix: tuple[str, ...] = ()
    client_prefix: tuple[str, ...] = ()

    def pick_port(self) -> int:
        return self.port if self.port is not None else free_port(self.ip)

    def wait(self, port: int, proc: subprocess.Popen[Any], log: Path) -> None:
        """Until the server accepts a connection from its clients' side."""
        if not self.client_prefix:
            wait_for_port(self.ip, port, proc, log=log)
            return
        probe = [*self.client_prefix, sys.executable, "-c", _PROBE, self.ip, str(port)]
        deadline = time.monotonic() + 60
        while subprocess.run(probe, capture_output=True, timeout=30).returncode != 0:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}: "
                                   f"{log.read_text(errors='replace')[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {self.ip}:{port}")
            time.sleep(0.1)


_PROBE = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1)"


@dataclass
class Target:
    name: str
    ip: str
    port: int
    pid: int
    identity: Path | None  # client key (sshd); tssh needs none
    client_ip: str = CLIENT_IP
    client_prefix: tuple[str, ...] = ()

    def ssh(self, user: str, *command: str) -> list[str]:
        argv = [*self.client_prefix, "ssh", *BASE_OPTIONS, "-b", self.client_ip,
                "-p", str(self.port)]
        if self.identity is not None:
            argv += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        return [*argv, f"{user}@{self.ip}", *command]


@contextlib.contextmanager
def bench_user() -> Iterator[str]:
    name = f"tb{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True)
    # "*": no password, but not locked ("!"), which sshd without PAM would refuse.
    subprocess.run(["usermod", "-p", "*", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", "-r", "-f", name], check=False, capture_output=True)


@contextlib.contextmanager
def tssh_daemon(work: Path, user: str, place: Place = Place(TSSH_IP), name: str = "tssh",
                extra: tuple[str, ...] = (), strangers: tuple[str, ...] = ()) -> Iterator[Target]:
    """``tssh daemon`` serving ``place``'s client node; ``extra``: more daemon flags;
    ``strangers``: addresses of nodes the netmap knows and the policy lets do nothing."""
    netmap = {"self": "server", "nodes": [
        {"name": "server", "id": "nS", "addresses": [place.ip], "tags": ["tag:bench"]},
        {"name": "client", "id": "nC", "addresses": [place.client_ip],
         "user": "bench@example.com"},
        *({"name": f"stranger{i}", "id": f"nX{i}", "addresses": [ip],
           "user": "stranger@example.com"} for i, ip in enumerate(strangers)),
    ]}
    policy = {
        "tagOwners": {"tag:bench": ["bench@example.com"]},
        "ssh": [{"action": "accept", "src": ["bench@example.com"], "dst": ["tag:bench"],
                 "users": ["autogroup:nonroot"]}],
    }
    (work / f"{name}-netmap.json").write_text(json.dumps(netmap))
    (work / f"{name}-policy.json").write_text(json.dumps(policy))
    port = place.pick_port()
    log_path = work / f"{name}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [*place.prefix, sys.executable, "-m", "tssh", "daemon",
         "--netmap", str(work / f"{name}-netmap.json"),
         "--policy", str(work / f"{name}-policy.json"), "--port", str(port), "--state-dir",
         str(work / f"{name}-state"), "--log-level", "warning", *extra],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        place.wait(port, proc, log_path)
        yield Target(name, place.ip, port, proc.pid, None, place.client_ip,
                     place.client_prefix)
    finally:
        stop_process(proc)
        log.close()


@contextlib.contextmanager
def stock_sshd(work: Path, user: str, place: Place = Place(SSHD_IP)) -> Iterator[Target]:
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    Path("/run/sshd").mkdir(exist_ok=True)
    host_key = work / "sshd_host_ed25519"
    client_key = work / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True)
    authorized = work / "authorized_keys"
    authorized.write_text((work / "client_ed25519.pub").read_text())
    port = place.pick_port()
    config = work / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", f"ListenAddress {place.ip}", f"HostKey {host_key}",
        f"AuthorizedKeysFile {authorized}", "UsePAM no", "StrictModes no",
        f"PidFile {work / 'sshd.pid'}", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "MaxStartups 1000", "MaxSessions 100",
        "Subsystem sftp /usr/lib/openssh/sftp-server", "",
    ]))
    log_path = work / "sshd.log"
    log = log_path.open("wb")
    proc = subprocess.Popen([*place.prefix, sshd, "-D", "-e", "-f", str(config)], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        place.wait(port, proc, log_path)
        yield Target("openssh", place.ip, port, proc.pid, client_key, place.client_ip,
                     place.client_prefix)
    finally:
        stop_process(proc)
        log.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def timed_run(argv: list[str], timeout: float = 30.0) -> float:
    """Seconds a command takes, exactly. ``subprocess.run(timeout=...)`` polls the child with
    growing sleeps (0.5, 1, 2, 4, 8, 16 ms...), which rounds a 13 ms login up to 15.5 or
    31.5 ms; here the wait blocks and a timer kills a child that overruns."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    try:
        status = proc.wait()
    finally:
        watchdog.cancel()
    elapsed = time.perf_counter() - start
    if status != 0:
        raise subprocess.CalledProcessError(status, argv)
    return elapsed


def bench_true(targets: list[Target], user: str, runs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {t.name: [] for t in targets}
    for _ in range(runs):
        for t in targets:
            times[t.name].append(timed_run(t.ssh(user, "true")))
    return times


def bench_throughput(targets: list[Target], user: str, size: int,
                     rounds: int) -> dict[str, dict[str, float]]:
    """Median MiB/s per direction, and the server's CPU seconds per GiB moved (steadier than
    throughput on a busy machine)."""
    rates: dict[str, dict[str, list[float]]] = {t.name: {"out": [], "in": []} for t in targets}
    cpu: dict[str, dict[str, list[float]]] = {t.name: {"out": [], "in": []} for t in targets}
    gib = size / (1 << 30)
    for _ in range(rounds):
        for t in targets:
            with CpuSampler(t.pid) as sampler:
                start = time.perf_counter()
                subprocess.run(t.ssh(user, f"head -c {size} /dev/zero"), check=True,
                               stdout=subprocess.DEVNULL, timeout=600)
                rates[t.name]["out"].append(size / (time.perf_counter() - start))
            cpu[t.name]["out"].append(sampler.seconds / gib)
            with CpuSampler(t.pid) as sampler, subprocess.Popen(
                ["head", "-c", str(size), "/dev/zero"], stdout=subprocess.PIPE
            ) as src:
                start = time.perf_counter()
                subprocess.run(t.ssh(user, "cat > /dev/null"), stdin=src.stdout, check=True,
                               timeout=600)
                rates[t.name]["in"].append(size / (time.perf_counter() - start))
            cpu[t.name]["in"].append(sampler.seconds / gib)
    result: dict[str, dict[str, float]] = {}
    for name in rates:
        result[name] = {way: statistics.median(rates[name][way]) for way in ("out", "in")}
        result[name].update({f"cpu_{way}": statistics.median(cpu[name][way])
                             for way in ("out", "in")})
    return result


class _TunnelEnds:
    """The far ends of a tunnel benchmark, on loopback in this process: a source that sends
    ``size`` bytes to whoever connects, and a sink that reads until EOF."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.source = socket.create_server(("127.0.0.1", 0))
        self.sink = socket.create_server(("127.0.0.1", 0))
        for server, serve in ((self.source, self._send), (self.sink, self._drain)):
            threading.Thread(target=self._accept, args=(server, serve), daemon=True).start()

    @staticmethod
    def _accept(server: socket.socket, serve: Callable[[socket.socket], None]) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    def _send(self, conn: socket.socket) -> None:
        block = bytes(1 << 20)
        with conn, contextlib.suppress(OSError):
            left = self.size
            while left > 0:
                conn.sendall(block[:left])
                left -= len(block)

    @staticmethod
    def _drain(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while conn.recv(1 << 20):
                pass

    def close(self) -> None:
        self.source.close()
        self.sink.close()


def bench_tunnel(targets: list[Target], user: str, size: int,
                 rounds: int) -> dict[str, dict[str, float]]:
    """Median MiB/s through an ``ssh -N -L`` tunnel: "out" from a server-side source to the
    client, "in" from the client to a server-side sink (both on the server's loopback)."""
    ends = _TunnelEnds(size)
    rates: dict[str, dict[str, list[float]]] = {t.name: {"out": [], "in": []} for t in targets}
    cpu: dict[str, dict[str, list[float]]] = {t.name: {"out": [], "in": []} for t in targets}
    gib = size / (1 << 30)
    tunnels: list[tuple[Target, subprocess.Popen[bytes], int, int]] = []
    try:
        for t in targets:
            out_port, in_port = free_port(), free_port()
            argv = t.ssh(user)
            at = argv.index(f"{user}@{t.ip}")
            argv[at:at] = ["-N", "-o", "ExitOnForwardFailure=yes",
                           "-L", f"{out_port}:127.0.0.1:{ends.source.getsockname()[1]}",
                           "-L", f"{in_port}:127.0.0.1:{ends.sink.getsockname()[1]}"]
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
            tunnels.append((t, proc, out_port, in_port))
            wait_for_port("127.0.0.1", out_port, proc)
        for _ in range(rounds):
            for t, _proc, out_port, in_port in tunnels:
                with CpuSampler(t.pid) as sampler, \
                        socket.create_connection(("127.0.0.1", out_port)) as sock:
                    start = time.perf_counter()
                    got = 0
                    while chunk := sock.recv(1 << 20):
                        got += len(chunk)
                    rates[t.name]["out"].append(got / (time.perf_counter() - start))
                cpu[t.name]["out"].append(sampler.seconds / gib)
                if got != size:
                    raise RuntimeError(f"{t.name}: {got} of {size} bytes through the tunnel")
                block = bytes(1 << 20)
                with CpuSampler(t.pid) as sampler, \
                        socket.create_connection(("127.0.0.1", in_port)) as sock:
                    start = time.perf_counter()
                    left = size
                    while left > 0:
                        sock.sendall(block[:left])
                        left -= len(block)
                    sock.shutdown(socket.SHUT_WR)
                    sock.recv(1)  # EOF once the sink read everything and closed
                    rates[t.name]["in"].append(size / (time.perf_counter() - start))
                cpu[t.name]["in"].append(sampler.seconds / gib)
    finally:
        for _t, proc, _o, _i in tunnels:
            stop_process(proc)
        ends.close()
    return {name: {**{way: statistics.median(rates[name][way]) for way in ("out", "in")},
                   **{f"cpu_{way}": statistics.median(cpu[name][way]) for way in ("out", "in")}}
            for name in rates}


async def _connect(t: Target, user: str) -> asyncssh.SSHClientConnection:
    keys = [str(t.identity)] if t.identity else None
    return await asyncssh.connect(
        t.ip, t.port, local_addr=(CLIENT_IP, 0), username=user, known_hosts=None,
        client_keys=keys, kex_algs=[KEX], encryption_algs=[CIPHER], agent_path=None,
    )


async def _echo(targets: list[Target], user: str, sessions: int,
                seconds: float) -> dict[str, list[float]]:
    """Keystroke echo latency with ``sessions`` PTY sessions open on every server at once.

    Typing alternates between the servers in one-second slices, so load that comes and goes
    on the machine falls on both alike.
    """
    sem = asyncio.Semaphore(20)

    async def open_one(t: Target) -> tuple[asyncssh.SSHClientConnection,
                                           asyncssh.SSHClientProcess[bytes]]:
        async with sem:
            conn = await _connect(t, user)
            proc = await conn.create_process("stty raw -echo; cat", term_type="xterm",
                                             encoding=None)
            return conn, proc

    opened = {t.name: await asyncio.gather(*(open_one(t) for _ in range(sessions)))
              for t in targets}
    latencies: dict[str, list[float]] = {t.name: [] for t in targets}
    cpu = dict.fromkeys(latencies, 0.0)
    client = dict.fromkeys(latencies, 0.0)

    async def typist(proc: asyncssh.SSHClientProcess[bytes], out: list[float],
                     deadline: float) -> None:
        await asyncio.sleep(random.uniform(0, 0.1))
        while time.monotonic() < deadline:
            start = time.perf_counter()
            proc.stdin.write(b"x")
            await proc.stdout.readexactly(1)  # the whole run is bounded below
            out.append(time.perf_counter() - start)
            await asyncio.sleep(random.uniform(0.05, 0.15))  # ~10 keystrokes/s

    await asyncio.sleep(1.0)  # let the shells settle before measuring
    for _ in range(max(1, round(seconds))):
        for t in targets:
            before, client_before = tree_cpu_seconds(t.pid), time.process_time()
            deadline = time.monotonic() + 1.0
            await asyncio.wait_for(asyncio.gather(
                *(typist(p, latencies[t.name], deadline) for _, p in opened[t.name])
            ), 60)
            cpu[t.name] += tree_cpu_seconds(t.pid) - before
            client[t.name] += time.process_time() - client_before
    for name, out in latencies.items():
        cpu_used[name] = cpu[name] / max(1, len(out))
        client_cpu_share[name] = client[name] / max(1, round(seconds))
    for pairs in opened.values():
        for conn, proc in pairs:
            proc.close()
            conn.close()
        await asyncio.gather(*(c.wait_closed() for c, _ in pairs), return_exceptions=True)
    return latencies


def cpu_seconds(pid: int) -> float:
    """On-CPU time from schedstat (ns), not stat's clock ticks: sshd spreads its work over
    hundreds of processes that each use less than one tick."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    return 0.0


class CpuSampler:
    """On-CPU time of a server and every descendant it has during a measurement, sampled
    every 20 ms from schedstat: sshd's per-connection processes exit when a transfer ends,
    so reading the tree once at the end would miss them."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for pid in (self.pid, *descendants(self.pid)):
            value = cpu_seconds(pid)
            if value:
                self.last[pid] = value

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self._sample()

    def __enter__(self) -> CpuSampler:
        self._sample()
        self.baseline = dict(self.last)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def seconds(self) -> float:
        return sum(v - self.baseline.get(pid, 0.0) for pid, v in self.last.items())


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a server and its live descendants (sshd's per-connection processes)."""
    return cpu_seconds(pid) + sum(cpu_seconds(p) for p in descendants(pid))


cpu_used: dict[str, float] = {}
client_cpu_share: dict[str, float] = {}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


async def _idle_rss(t: Target, user: str, count: int) -> float:
    def total() -> int:
        return rss_kib(t.pid) + sum(rss_kib(p) for p in descendants(t.pid)
                                    if Path(f"/proc/{p}").exists())

    before = total()
    sem = asyncio.Semaphore(20)

    async def one() -> asyncssh.SSHClientConnection:
        async with sem:
            return await _connect(t, user)

    conns = await asyncio.gather(*(one() for _ in range(count)))
    await asyncio.sleep(1.0)
    after = total()
    for c in conns:
        c.close()
    await asyncio.gather(*(c.wait_closed() for c in conns), return_exceptions=True)
    return (after - before) / count


def clean_up_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C: the accounts, daemons and servers a benchmark made are
    removed by its context managers instead of left behind."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main() -> int:
    clean_up_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a fast run")
    parser.add_argument("--size-mib", type=int, help="transfer size (default 1024, quick 128)")
    parser.add_argument("--sessions", type=int, help="PTY sessions (default 500, quick 100)")
    parser.add_argument("--runs", type=int, default=30, help="`ssh true` runs per server")
    parser.add_argument("--rounds", type=int, default=3, help="transfers per direction")
    parser.add_argument("--echo-seconds", type=float, default=5.0)
    parser.add_argument("--only", choices=("rss", "true", "throughput", "tunnel", "echo"),
                        help="run one measure")
    parser.add_argument("--idle", type=int, default=200, help="idle connections for RSS")
    parser.add_argument("--workers", type=int, default=1,
                        help="tssh worker processes (docs/daemon.md, 'Worker processes')")
    parser.add_argument("--tunnel-mib", type=int, default=256,
                        help="bytes through the -L tunnel per direction and round (MiB)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_ssh: needs root (runs sshd and makes a throw-away user)", file=sys.stderr)
        return 2
    size = (args.size_mib or (128 if args.quick else 1024)) * 1024 * 1024
    sessions = args.sessions or (100 if args.quick else 500)
    ms = 1000.0
    mb = 1024 * 1024
    rows: list[tuple[str, float, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ssh-") as tmp, bench_user() as user:
        work = Path(tmp)
        os.chmod(work, 0o755)
        extra = (*TSSH_LIMITS, *(("--workers", str(args.workers)) if args.workers > 1 else ()))
        with tssh_daemon(work, user, extra=extra) as tssh, stock_sshd(work, user) as sshd:
            targets = [tssh, sshd]
            subprocess.run(tssh.ssh(user, "true"), check=True, timeout=30)  # warm up
            subprocess.run(sshd.ssh(user, "true"), check=True, timeout=30)
            print(f"user {user} (uid {pwd.getpwnam(user).pw_uid}), kex {KEX}, cipher {CIPHER}, "
                  f"tssh workers {args.workers}", flush=True)
            want = ({args.only} if args.only
                    else {"rss", "true", "throughput", "tunnel", "echo"})
            # Memory first, while the daemon has not yet grown for the other measures.
            if "rss" in want:
                rss = {t.name: asyncio.run(_idle_rss(t, user, args.idle)) for t in targets}
                rows.append(("RSS per idle connection (KiB)", rss["tssh"], rss["openssh"],
                             "tssh <= 64"))
            if "true" in want:
                lat = bench_true(targets, user, args.runs)
                for p in (50, 99):
                    rows.append((f"ssh host true p{p} (ms)", percentile(lat["tssh"], p) * ms,
                                 percentile(lat["openssh"], p) * ms, "<= 0.5x"))
            if "throughput" in want:
                tput = bench_throughput(targets, user, size, args.rounds)
                for way in ("out", "in"):
                    rows.append((f"exec {way} {size // mb} MiB (MiB/s)", tput["tssh"][way] / mb,
                                 tput["openssh"][way] / mb, ">= 0.8x"))
                for way in ("out", "in"):
                    rows.append((f"server CPU per GiB {way} (s)", tput["tssh"][f"cpu_{way}"],
                                 tput["openssh"][f"cpu_{way}"], ""))
            if "tunnel" in want:
                tunnel_size = args.tunnel_mib * mb
                tun = bench_tunnel(targets, user, tunnel_size, args.rounds)
                for way in ("out", "in"):
                    rows.append((f"-L tunnel {way} {args.tunnel_mib} MiB (MiB/s)",
                                 tun["tssh"][way] / mb, tun["openssh"][way] / mb, ">= 0.8x"))
                for way in ("out", "in"):
                    rows.append((f"server CPU per GiB through -L {way} (s)",
                                 tun["tssh"][f"cpu_{way}"], tun["openssh"][f"cpu_{way}"], ""))
            if "echo" in want:
                echo = asyncio.run(_echo(targets, user, sessions, args.echo_seconds))
                for p in (50, 99):
                    rows.append((f"echo p{p}, {sessions} PTY sessions (ms)",
                                 percentile(echo["tssh"], p) * ms,
                                 percentile(echo["openssh"], p) * ms,
                                 "tssh <= 20 ms" if p == 99 else ""))
                rows.append(("server CPU per keystroke echo (us)", cpu_used["tssh"] * 1e6,
                             cpu_used["openssh"] * 1e6, ""))
                rows.append(("load client's CPU during echo (cores)",
                             client_cpu_share["tssh"], client_cpu_share["openssh"], ""))
    print("\n| measure | tssh | OpenSSH | tssh/OpenSSH | goal |\n|---|---:|---:|---:|---|")
    for name, ours, theirs, goal in rows:
        ratio = ours / theirs if theirs else float("nan")
        print(f"| {name} | {ours:.2f} | {theirs:.2f} | {ratio:.2f}x | {goal} |")
    print("\n(OpenSSH's RSS counts every per-connection process, shared pages included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
