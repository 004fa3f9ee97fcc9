"""Which local user owns the other end of a loopback TCP connection (Linux ``/proc/net/tcp``).

On a tailnet the source address names a node. On loopback (``tssh demo``) every local
process has the same source address, so the address alone would let any local account log
in as whoever runs the demo. The kernel's socket table tells whose process connected.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

PROC_NET_TCP = Path("/proc/net/tcp")


def _hex_endpoint(address: str, port: int) -> str:
    """``127.0.0.1``, 22 -> ``0100007F:0016`` (the table prints IPv4 in host byte order)."""
    packed = ipaddress.IPv4Address(address).packed
    return f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"


def find_owner(table: str, client: tuple[str, int], server: tuple[str, int]) -> int | None:
    """The uid on the row whose local end is ``client`` and remote end is ``server``."""
    try:
        local, remote = _hex_endpoint(*client), _hex_endpoint(*server)
    except ValueError:
        return None  # not IPv4: not a loopback demo connection
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 7 and fields[1].upper() == local and fields[2].upper() == remote:
            return int(fields[7])
    return None


def loopback_peer_uid(client: tuple[str, int], server: tuple[str, int]) -> int | None:
    """The uid of the local process that opened ``client`` -> ``server``; None if unknown."""
    try:
        table = PROC_NET_TCP.read_text()
    except OSError:
        return None
    return find_owner(table, client, server)
