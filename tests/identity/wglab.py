"""A real WireGuard mesh for tests: network namespaces, veth pairs, userspace wireguard-go.

Each node is a namespace holding one veth end (underlay, 10.201.0.N/24, bridged in a hub
namespace) and one wireguard-go interface (overlay, 100.64.0.N/10). Names carry a per-lab
suffix because the UAPI socket directory is shared by all namespaces. Everything started is
stopped by PID, and the namespaces are deleted, in ``close`` (also on a failed set-up).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

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

    def exec_argv(self, node: str, *argv: str) -> list[str]:
        """``argv`` to run inside ``node``'s namespace."""
        return ["ip", "netns", "exec", self.nodes[node].netns, *argv]

    def close(self) -> None:
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
