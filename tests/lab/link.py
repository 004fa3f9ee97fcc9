"""Two lab nodes on a slow, lossy WireGuard link: "client" and "server" (and any others
asked for) in network namespaces (``tests/identity/wglab.py``), with the client-server
packets passed through a delay line (``tests/lab/delayline.py``) in the hub namespace.

Only the client-server path is shaped: the delay line sits between those two peers'
WireGuard endpoints; other nodes reach the server directly. ``shape`` restarts the delay
line with new figures (WireGuard keeps its session; TCP retransmits the few packets lost
while it restarts). Kept apart from the lab's own fixture so it can move onto it.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.bench_ssh import Place
from tests.identity.wglab import WG_PORT, Lab, build_lab, run
from tests.processes import stop_process

REPO = Path(__file__).resolve().parents[2]
HUB_ADDRESS = "10.201.0.254"
CLIENT_SIDE_PORT, SERVER_SIDE_PORT = 51001, 51002  # the delay line's sockets in the hub


@dataclass(frozen=True)
class Shape:
    """What the link does to each packet: ``rtt_ms`` split evenly between the two
    directions, ``loss`` the share dropped in each direction."""

    rtt_ms: float = 0.0
    loss: float = 0.0

    def __str__(self) -> str:
        return f"{self.rtt_ms:g} ms RTT, {self.loss * 100:g} % loss"


@dataclass
class LinkLab:
    lab: Lab
    shape_now: Shape = field(default_factory=Shape)
    _line: subprocess.Popen[bytes] | None = None

    @property
    def hub(self) -> str:
        return self.lab.namespaces[0]

    def address(self, node: str) -> str:
        return self.lab.nodes[node].address

    def argv(self, node: str, *argv: str) -> list[str]:
        return self.lab.exec_argv(node, *argv)

    def shape(self, shape: Shape) -> None:
        """(Re)start the delay line with ``shape``."""
        self._stop_line()
        client, server = self.lab.nodes["client"], self.lab.nodes["server"]
        argv = [sys.executable, "-m", "tests.lab.delayline",
                "--a", f"{HUB_ADDRESS}:{CLIENT_SIDE_PORT}={client.underlay}:{WG_PORT}",
                "--b", f"{HUB_ADDRESS}:{SERVER_SIDE_PORT}={server.underlay}:{WG_PORT}",
                "--delay-ms", str(shape.rtt_ms / 2), "--loss", str(shape.loss)]
        line = subprocess.Popen(["ip", "netns", "exec", self.hub, *argv], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert line.stdout is not None
        if line.stdout.readline().strip() != b"ready":
            stop_process(line)
            raise RuntimeError(f"the delay line did not start: {line.stderr.read()!r}")  # type: ignore[union-attr]
        self._line, self.shape_now = line, shape

    def rtt_ms(self, count: int = 5) -> list[float]:
        """Round trips client -> server over the tailnet, as ``ping`` measures them."""
        out = run(*self.argv("client", "ping", "-n", "-c", str(count), "-i", "0.2",
                             "-W", "5", self.address("server")))
        return [float(m) for m in re.findall(r"time=([\d.]+) ms", out)]

    def _stop_line(self) -> None:
        if self._line is not None:
            stop_process(self._line)
            self._line = None

    def close(self) -> None:
        self._stop_line()
        self.lab.close()


def server_place(lab: Lab, port: int) -> Place:
    """A server (tssh or sshd, benchmarks/bench_ssh.py) on the "server" node, listening on
    ``port`` at its tailnet address, for clients on the "client" node."""
    server, client = lab.nodes["server"], lab.nodes["client"]
    return Place(server.address, client.address, port, tuple(lab.exec_argv("server")),
                 tuple(lab.exec_argv("client")))


@contextlib.contextmanager
def link_lab(others: tuple[str, ...] = (), shape: Shape = Shape()) -> Iterator[LinkLab]:
    """A lab of "client", "server" and ``others``; the client-server path through the delay
    line. Torn down (by PID, namespaces deleted) however the block ends."""
    lab = build_lab(["client", "server", *others])
    link = LinkLab(lab)
    try:
        run("ip", "-n", link.hub, "addr", "add", f"{HUB_ADDRESS}/24", "dev", "br0")
        client, server = lab.nodes["client"], lab.nodes["server"]
        # Each peer sends to its side of the delay line; the line forwards to the other.
        run("wg", "set", client.interface, "peer", server.public_key,
            "endpoint", f"{HUB_ADDRESS}:{CLIENT_SIDE_PORT}")
        run("wg", "set", server.interface, "peer", client.public_key,
            "endpoint", f"{HUB_ADDRESS}:{SERVER_SIDE_PORT}")
        link.shape(shape)
        # The first handshake crosses the line; wait until the tunnel carries a ping.
        deadline = time.monotonic() + 20
        while True:
            ping = subprocess.run(link.argv("client", "ping", "-n", "-c", "1", "-W", "1",
                                            link.address("server")), capture_output=True)
            if ping.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("no ping over the shaped link")
        yield link
    finally:
        link.close()
