"""The recorder's view of the tailnet: a Resolver for source addresses, groups for viewers.

Until the shared netmap backend lands, a minimal reader of the netmap file (DESIGN §2) lives
here; it will be replaced by ``tssh.identity``'s factory.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from recorder.errors import SettingsError
from tssh.errors import PolicyError
from tssh.identity.base import Peer
from tssh.policy.hujson import loads


def _canonical(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address.split("%")[0]))
    except ValueError:
        return address


class StaticResolver:
    """Resolves addresses from a fixed list of peers."""

    def __init__(self, peers: list[Peer], self_name: str | None = None) -> None:
        self._peers = peers
        self._by_address = {_canonical(a): p for p in peers for a in p.addresses}
        self._self = next((p for p in peers if p.name == self_name), None)

    async def whois(self, address: str) -> Peer | None:
        return self._by_address.get(_canonical(address))

    async def self_node(self) -> Peer:
        if self._self is None:
            raise SettingsError("the netmap names no node as 'self'")
        return self._self

    async def peers(self) -> list[Peer]:
        return list(self._peers)

    async def close(self) -> None:
        return None


def load_netmap(path: Path) -> StaticResolver:
    try:
        doc: Any = loads(path.read_bytes(), filename=str(path))
    except OSError as e:
        raise SettingsError(f"cannot read the netmap {path}: {e.strerror or e}") from e
    except PolicyError as e:
        raise SettingsError(f"netmap {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list):
        raise SettingsError(f"{path}: a netmap is an object with a 'nodes' list")
    peers = []
    for i, node in enumerate(doc["nodes"]):
        if not isinstance(node, dict) or not isinstance(node.get("id"), str):
            raise SettingsError(f"{path}: node {i} needs a string 'id'")
        peers.append(Peer(
            name=str(node.get("name") or node["id"]), id=node["id"],
            addresses=tuple(str(a) for a in node.get("addresses") or ()),
            user=node.get("user"), user_id=node.get("userId"),
            tags=tuple(str(t) for t in node.get("tags") or ()),
        ))
    self_name = doc.get("self")
    return StaticResolver(peers, self_name if isinstance(self_name, str) else None)


def load_groups(path: Path) -> dict[str, tuple[str, ...]]:
    """The policy file's ``groups`` (for ``group:`` viewer selectors)."""
    try:
        doc: Any = loads(path.read_bytes(), filename=str(path))
    except OSError as e:
        raise SettingsError(f"cannot read the policy {path}: {e.strerror or e}") from e
    except PolicyError as e:
        raise SettingsError(f"policy {e}") from e
    groups = doc.get("groups", {}) if isinstance(doc, dict) else {}
    if not isinstance(groups, dict):
        raise SettingsError(f"{path}: 'groups' must be an object")
    return {
        str(k): tuple(str(m) for m in v) for k, v in groups.items() if isinstance(v, list)
    }
