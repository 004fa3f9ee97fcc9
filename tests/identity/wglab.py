"""A real WireGuard mesh for tests: network namespaces, veth pairs, userspace wireguard-go.

Each node is a namespace holding one veth end (underlay, 10.201.0.N/24, bridged in a hub
namespace) and one wireguard-go interface (overlay, 100.64.0.N/10). Names carry a per-lab
suffix because the UAPI socket directory is shared by all namespaces. Everything started is
stopped by PID, and the namespaces are deleted, in ``close`` (also on a failed set-up).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.processes import start_time, stop_pid

REPO = Path(__file__).resolve().parents[2]
UAPI_DIR = Path("/var/run/wireguard")
WG_PORT = 51820


def lab_unavailable_reason() -> str | None:
    """Why this machine cannot build the lab, or None if it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, TUN devices)"
    for tool in ("wireguard-go", "wg", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not Path("/dev/net/tun").exists():
        return "/dev/net/tun is missing"
    return None


def run(*argv: str, input: str | None = None) -> str:
    out = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=20)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {out.stderr.strip()}")
    return out.stdout


@dataclass
class Node:
    name: str
    index: int  # N in 10.201.0.N and 100.64.0.N
    netns: str
    interface: str
    private_key: str
    public_key: str

    @property
    def address(self) -> str:
        return f"100.64.0.{self.index}"

    @property
    def underlay(self) -> str:
        return f"10.201.0.{self.index}"


@dataclass
class Lab:
    suffix: str
    nodes: dict[str, Node] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    # wireguard-go processes of a lab another program built, as (PID, start time)
    foreign: list[tuple[int, int]] = field(default_factory=list)

    def exec_argv(self, node: str, *argv: str) -> list[str]:
        """``argv`` to run inside ``node``'s namespace."""
        return ["ip", "netns", "exec", self.nodes[node].netns, *argv]

    def listening(self, node: str) -> set[str]:
        """Local address:port of every listening TCP socket in ``node``'s namespace, as
        ``ss`` shows it: ``address%interface:port`` for a socket bound to an interface."""
        out = run(*self.exec_argv(node, "ss", "-ltnH"))
        return {line.split()[3] for line in out.splitlines() if line.strip()}

    def bound_address(self, node: str, port: int) -> str:
        """How ``ss`` shows a listener on ``node``'s tailnet address bound to its WireGuard
        interface."""
        n = self.nodes[node]
        return f"{n.address}%{n.interface}:{port}"

    def http_get(self, node: str, url: str, timeout: float = 30) -> tuple[int, bytes]:
        """GET ``url`` from ``node``'s namespace: (status, body)."""
        out = subprocess.run(self.exec_argv(node, sys.executable, "-c", HTTP_GET, url),
                             capture_output=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"GET {url} from {node} failed: {out.stderr.decode()[-2000:]}")
        status, _, body = out.stdout.partition(b"\n")
        return int(status), body

    def start_python(self, node: str, argv: list[str], log: Path,
                     env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """``python ARGV`` of this repository in ``node``'s namespace, output to ``log``."""
        with log.open("ab") as out:
            return subprocess.Popen(
                self.exec_argv(node, sys.executable, *argv), cwd=REPO, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
            )

    def wait_until_listening(self, node: str, port: int, proc: subprocess.Popen[bytes],
                             log: Path, timeout: float = 30) -> None:
        """Until ``proc`` listens on ``node``'s tailnet address and interface at ``port``;
        RuntimeError (with the end of ``log``) if it exits first."""
        address = self.bound_address(node, port)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"exited with {proc.returncode}: "
                                   f"{log.read_text(errors='replace')[-2000:]}")
            if address in self.listening(node):
                return
            time.sleep(0.05)
        raise TimeoutError(f"nothing listens on {address} in {node}: "
                           f"{log.read_text(errors='replace')[-2000:]}")

    def state(self) -> dict[str, Any]:
        """What ``from_state`` needs to close this lab from another process."""
        pids = [(p.pid, start_time(p.pid)) for p in self.processes]
        return {"suffix": self.suffix, "namespaces": self.namespaces,
                "nodes": {name: asdict(node) for name, node in self.nodes.items()},
                "wireguard": [[pid, t] for pid, t in [*pids, *self.foreign] if t is not None]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Lab:
        return cls(suffix=state["suffix"], namespaces=list(state["namespaces"]),
                   nodes={name: Node(**node) for name, node in state["nodes"].items()},
                   foreign=[(pid, t) for pid, t in state["wireguard"]])

    def close(self) -> None:
        for pid, started in self.foreign:
            stop_pid(pid, started, grace=5)
        self.foreign.clear()
        for proc in self.processes:
            proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.processes.clear()
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        self.namespaces.clear()
        for node in self.nodes.values():
            (UAPI_DIR / f"{node.interface}.sock").unlink(missing_ok=True)


def build_lab(names: list[str], suffix: str | None = None) -> Lab:
    """A full WireGuard mesh: one namespace per node, every node a peer of every other
    (allowed-ips: the other's /32).

    The underlay is a bridge in a hub namespace with one veth pair per node, so any number
    of nodes can talk; node N has 10.201.0.N and 100.64.0.N (N from 1, in ``names`` order).
    """
    assert 2 <= len(names) <= 200, "one /24 underlay"
    suffix = suffix or f"{os.getpid() % 100000:05d}{time.monotonic_ns() % 1000:03d}"[-7:]
    lab = Lab(suffix=suffix)
    try:
        hub = f"tssh-{suffix}-hub"
        run("ip", "netns", "add", hub)
        lab.namespaces.append(hub)
        run("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", hub, "link", "set", "br0", "up")
        for i, name in enumerate(names, start=1):
            private = run("wg", "genkey").strip()
            public = run("wg", "pubkey", input=private + "\n").strip()
            ns = f"tssh-{suffix}-{i}"
            run("ip", "netns", "add", ns)
            lab.namespaces.append(ns)
            node = Node(name, i, ns, f"wg{suffix}{i}", private, public)
            lab.nodes[name] = node
            run("ip", "link", "add", "veth0", "netns", ns, "type", "veth",
                "peer", "name", f"port{i}", "netns", hub)
            run("ip", "-n", hub, "link", "set", f"port{i}", "master", "br0")
            run("ip", "-n", hub, "link", "set", f"port{i}", "up")
            run("ip", "-n", ns, "link", "set", "lo", "up")
            run("ip", "-n", ns, "addr", "add", f"{node.underlay}/24", "dev", "veth0")
            run("ip", "-n", ns, "link", "set", "veth0", "up")
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, "env", "WG_PROCESS_FOREGROUND=1",
                 "wireguard-go", node.interface],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            lab.processes.append(proc)
            sock = UAPI_DIR / f"{node.interface}.sock"
            for _ in range(200):  # bounded: 10 s
                if sock.exists() or proc.poll() is not None:
                    break
                time.sleep(0.05)
            if not sock.exists():
                raise RuntimeError(f"wireguard-go {node.interface} did not start")
        for node in lab.nodes.values():
            peers: list[str] = []
            for other in lab.nodes.values():
                if other is not node:
                    peers += ["peer", other.public_key, "allowed-ips", f"{other.address}/32",
                              "endpoint", f"{other.underlay}:{WG_PORT}"]
            run("wg", "set", node.interface, "private-key", "/dev/stdin",
                "listen-port", str(WG_PORT), *peers, input=node.private_key + "\n")
            run("ip", "-n", node.netns, "addr", "add", f"{node.address}/10",
                "dev", node.interface)
            run("ip", "-n", node.netns, "link", "set", node.interface, "up")
    except BaseException:
        lab.close()
        raise
    return lab


# Run inside a namespace: prints the status line, then the body (stdlib only).
HTTP_GET = """
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=20) as r:
        status, body = r.status, r.read()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read()
sys.stdout.buffer.write(b"%d\\n" % status + body)
"""


@contextlib.contextmanager
def local_account(prefix: str = "tn") -> Iterator[tuple[str, Path]]:
    """A fresh local account with a home and bash, removed on the way out."""
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True, capture_output=True)
    try:
        yield name, Path(pwd.getpwnam(name).pw_dir)
    finally:
        subprocess.run(["userdel", "-r", "-f", name], check=False, capture_output=True)
