"""One spelling per IP address, so lookups by address never miss on notation.

A dual-stack listener reports IPv4 peers as ``::ffff:100.64.0.2`` and IPv6 text has many
equivalent forms; every backend compares addresses in the canonical form made here.
"""

from __future__ import annotations

import ipaddress


def canonical_address(text: str) -> str:
    """``text`` as a canonical IP address string; raises ValueError if it is not one.

    A zone suffix (``fe80::1%eth0``) is dropped and IPv4-mapped IPv6 becomes plain IPv4.
    """
    addr = ipaddress.ip_address(text.strip().split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)
