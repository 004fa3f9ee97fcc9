"""The identity interface shared by every backend.

A tailnet authenticates each packet's source address, so an address is an identity: the
backends only differ in where they learn the mapping (a static file, tailscaled, WireGuard).
This module is pure: no I/O, so the policy engine may import ``Peer``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Peer:
    """A tailnet node. A node is owned by a user (``user`` set) or tagged (``tags`` set)."""

    name: str  # short name or FQDN without trailing dot
    id: str  # stable node id
    addresses: tuple[str, ...]
    user: str | None = None  # login, e.g. alice@example.com; None for tagged nodes
    user_id: str | None = None
    tags: tuple[str, ...] = ()
    host_keys: tuple[str, ...] = field(default=(), compare=False)

    @property
    def is_tagged(self) -> bool:
        return bool(self.tags)


class Resolver(Protocol):
    """Answers "who is this address?" and "who am I?" for one identity backend."""

    async def whois(self, address: str) -> Peer | None:
        """The peer that owns ``address`` (an IP, no port), or None if unknown."""
        ...

    async def self_node(self) -> Peer:
        """The node this process runs on (its addresses are where the daemon listens)."""
        ...

    async def peers(self) -> list[Peer]:
        """Every node known to the backend, self included (recorder selectors need it)."""
        ...

    async def close(self) -> None:
        ...


@runtime_checkable
class Reloadable(Protocol):
    """A backend that reads a file (netmap, WireGuard inventory) the daemon may poll."""

    def reload_if_changed(self) -> bool:
        """Re-read the file if it changed; True if what it says changed.

        Raises IdentityError for an unreadable or invalid file; the old contents stay in force.
        """
        ...
