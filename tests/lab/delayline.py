"""A slow, lossy link for the lab's WireGuard packets: a UDP relay that holds each datagram
for a fixed delay and drops a share of them at random.

This kernel has no ``sch_netem`` (``tc qdisc add ... netem`` answers "Specified qdisc kind is
unknown"), so the link is emulated where the packets are plain UDP: between two nodes'
wireguard-go endpoints. Everything inside the tunnel (TCP, SSH) sees what it would see on a
netem'd veth: one-way delay, random loss, in-order delivery. The relay runs in the lab's hub
namespace (``tests/lab/link.py`` points both peers' endpoints at it):

    python -m tests.lab.delayline --a 10.201.0.254:51001=10.201.0.1:51820 \\
        --b 10.201.0.254:51002=10.201.0.2:51820 --delay-ms 50 --loss 0.01

A datagram arriving on side A's socket leaves from side B's socket to B's peer, and back the
same way; WireGuard's roaming makes each peer answer the address its packets came from.
One process, one thread, no per-packet timers: packets wait in a FIFO (the delay is the same
for all), so the cost per packet is a recv, an append and a send.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import selectors
import signal
import socket
import sys
import time
from collections import deque

QUEUE_LIMIT = 100_000  # datagrams held at once (netem's ``limit``); beyond it, dropped
BUFFER_BYTES = 8 << 20  # each socket's kernel buffers (SO_RCVBUFFORCE: root)


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


class Side:
    """One end of the relay: the socket its peer sends to, and that peer's address."""

    def __init__(self, spec: str) -> None:
        listen, _, peer = spec.partition("=")
        self.peer = _endpoint(peer)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for option, force in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):
            try:  # SO_RCVBUFFORCE / SO_SNDBUFFORCE: past net.core.*mem_max
                self.sock.setsockopt(socket.SOL_SOCKET, force, BUFFER_BYTES)
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, option, BUFFER_BYTES)
        self.sock.bind(_endpoint(listen))
        self.sock.setblocking(False)
        self.queue: deque[tuple[float, bytes]] = deque()  # (due, datagram) for this peer


def relay(a: Side, b: Side, delay: float, loss: float, stop: list[bool]) -> None:
    sel = selectors.DefaultSelector()
    sel.register(a.sock, selectors.EVENT_READ, b)  # what A's peer sends goes out to B's
    sel.register(b.sock, selectors.EVENT_READ, a)
    chance = random.random
    while not stop:
        now = time.monotonic()
        for side in (a, b):
            queue = side.queue
            while queue and queue[0][0] <= now:
                _, data = queue.popleft()
                try:  # noqa: SIM105 (per packet: cheaper than contextlib.suppress)
                    side.sock.sendto(data, side.peer)
                except OSError:
                    pass  # a full buffer or an unreachable peer: the packet is lost
        due = [side.queue[0][0] for side in (a, b) if side.queue]
        timeout = max(0.0, min(due) - time.monotonic()) if due else 0.5
        for key, _ in sel.select(min(timeout, 0.5)):
            source: socket.socket = key.fileobj  # type: ignore[assignment]
            target: Side = key.data
            arrived = time.monotonic() + delay
            while True:
                try:
                    data = source.recv(65536)
                except OSError:  # BlockingIOError: nothing more waiting
                    break
                if (loss and chance() < loss) or len(target.queue) >= QUEUE_LIMIT:
                    continue
                target.queue.append((arrived, data))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", required=True, help="LISTEN_IP:PORT=PEER_IP:PORT")
    parser.add_argument("--b", required=True, help="LISTEN_IP:PORT=PEER_IP:PORT")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay")
    parser.add_argument("--loss", type=float, default=0.0, help="share dropped, each way")
    args = parser.parse_args()
    stop: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    a, b = Side(args.a), Side(args.b)
    print("ready", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        relay(a, b, args.delay_ms / 1000, args.loss, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
