"""Who may read recordings: viewers by tailnet identity, or holders of an API token.

Decision (pure, ``decide``): a valid bearer token is allowed; otherwise the source address is
resolved by the identity backend: unknown → 401, known and matching a ``--viewer`` or an
``--admin`` selector → allowed, known but neither (uploading nodes included) → 403.

Admins (``--admin``, the same selectors) may also place and lift legal holds through the API
(docs/recorder.md, "Retention"); a token never may: tokens are for automation that reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from recorder.tokens import TokenStore
from tssh.identity.base import Peer, Resolver


@dataclass(frozen=True)
class Reader:
    """An allowed reader: a tailnet peer or an API token."""

    kind: Literal["peer", "token"]
    name: str
    node: str | None = None  # a peer's node name
    admin: bool = False  # a peer matching an --admin selector


@dataclass(frozen=True)
class Denied:
    status: Literal[401, 403]
    message: str


def is_viewer(
    peer: Peer, selectors: tuple[str, ...], groups: Mapping[str, tuple[str, ...]]
) -> bool:
    for sel in selectors:
        if sel.startswith("tag:"):
            if sel in peer.tags:
                return True
        elif sel.startswith("group:"):
            if peer.user is not None and peer.user in groups.get(sel, ()):
                return True
        elif peer.user is not None and sel == peer.user:
            return True
    return False


def decide(
    peer: Peer | None, selectors: tuple[str, ...], groups: Mapping[str, tuple[str, ...]],
    admins: tuple[str, ...] = (),
) -> Reader | Denied:
    if peer is None:
        return Denied(401, "unknown peer: use a viewer node of the tailnet or an API token")
    admin = is_viewer(peer, admins, groups)
    if admin or is_viewer(peer, selectors, groups):
        return Reader("peer", peer.user or peer.name, peer.name, admin=admin)
    return Denied(403, f"{peer.user or peer.name} may not read recordings")


def may_hold(reader: Reader) -> Denied | None:
    """None when ``reader`` may place and lift legal holds, else the 403 that says why."""
    if reader.admin:
        return None
    if reader.kind == "token":
        return Denied(403, "an API token may not place or lift legal holds: use a tailnet "
                      "identity matching an --admin selector, or tssh-recorder hold/release")
    return Denied(403, f"{reader.name} may not place or lift legal holds: that takes a "
                  "recorder started with an --admin selector matching them")


class Access:
    def __init__(
        self, resolver: Resolver, viewers: tuple[str, ...],
        groups: Mapping[str, tuple[str, ...]], tokens: TokenStore,
        admins: tuple[str, ...] = (),
    ) -> None:
        self.resolver = resolver
        self.viewers = viewers
        self.admins = admins
        self.groups = groups
        self.tokens = tokens

    async def check(self, authorization: str | None, address: str | None) -> Reader | Denied:
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return Denied(401, "Authorization must be 'Bearer <token>'")
            record = self.tokens.check(token.strip())
            if record is None:
                return Denied(401, "invalid or revoked API token")
            return Reader("token", record.name)
        peer = await self.resolver.whois(address) if address else None
        return decide(peer, self.viewers, self.groups, self.admins)
