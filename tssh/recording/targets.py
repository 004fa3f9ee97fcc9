"""Which recorders a rule names: its ``recorder`` selectors resolved against the tailnet's nodes.

Pure. A selector is a tag (every node carrying it), a node name (short or FQDN), or a literal
address (``IP`` or ``IP:PORT``, ``[IPv6]:PORT``). Each node is dialed at its first IPv4
address (else its first address) on the recorder port (docs/daemon.md: recorders are reached at
their tailnet addresses on ``Config.recorder_port``). Order: selectors in rule order, nodes
in the backend's order within a tag; duplicates dropped. The uploader tries them in turn.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tssh.identity.base import Peer


@dataclass(frozen=True)
class RecorderAddress:
    """Where a recorder listens; ``str()`` is ``host:port`` (``[v6]:port``), as in audit logs."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _dial_address(peer: Peer) -> str | None:
    parsed = []
    for address in peer.addresses:
        try:
            parsed.append(ipaddress.ip_address(address.split("/", 1)[0]))
        except ValueError:
            continue  # not an address: nothing to dial
    for ip in parsed:
        if ip.version == 4:
            return str(ip)
    return str(parsed[0]) if parsed else None


def _literal(selector: str, port: int) -> RecorderAddress | None:
    host, sep, tail = selector.rpartition(":")
    if sep and tail.isdigit() and (host.startswith("[") or ":" not in host):
        host = host.removeprefix("[").removesuffix("]")
        literal_port = int(tail)
    else:
        host, literal_port = selector.removeprefix("[").removesuffix("]"), port
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return RecorderAddress(host, literal_port)


def _names(peer: Peer) -> set[str]:
    name = peer.name.removesuffix(".")
    return {name, name.split(".", 1)[0]}


def recorder_targets(selectors: Iterable[str], peers: Sequence[Peer], port: int
                     ) -> list[RecorderAddress]:
    """The addresses to try, in order; selectors matching nothing are skipped."""
    out: list[RecorderAddress] = []

    def add(target: RecorderAddress) -> None:
        if target not in out:
            out.append(target)

    for raw in selectors:
        selector = raw.strip()
        if selector.startswith("tag:"):
            matched = [p for p in peers if selector in p.tags]
        elif (literal := _literal(selector, port)) is not None:
            add(literal)
            continue
        else:
            matched = [p for p in peers if selector in _names(p)]
        for peer in matched:
            host = _dial_address(peer)
            if host is not None:
                add(RecorderAddress(host, port))
    return out
