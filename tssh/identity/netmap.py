"""The ``netmap`` identity backend: who is who, from a static HuJSON file (docs/config.md).

The same file format is the ``wireguard`` backend's inventory, where each node also names its
``wireguardKey``. Parsing and validation (``parse_netmap``) are pure; ``NetmapFile`` adds the
file reading and reloading around them, ``NetmapResolver`` the lookups.

    {
      "self": "server",
      "nodes": [
        {"name": "server", "id": "nSRV1", "addresses": ["127.0.0.10"], "tags": ["tag:prod"]},
        {"name": "laptop", "id": "nLAP1", "addresses": ["127.0.0.2"], "user": "alice@example.com"},
      ],
    }
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tssh.errors import IdentityError, NetmapError, PolicyError
from tssh.file_signature import file_signature
from tssh.hujson import Document, parse
from tssh.hujson import Path as JSONPath
from tssh.identity.address import canonical_address
from tssh.identity.base import Peer

_TOP_KEYS = frozenset({"self", "nodes"})
# Some 80,000 nodes; anything larger is the wrong file, and reading it all would be costly.
MAX_NETMAP_BYTES = 16 * 1024 * 1024
_NODE_KEYS = frozenset({"name", "id", "addresses", "user", "tags", "hostKeys", "wireguardKey"})


@dataclass(frozen=True)
class Netmap:
    """A validated netmap: its nodes, which one is this machine, and lookup tables."""

    source: str  # file name, for messages
    self_name: str | None
    peers: tuple[Peer, ...]
    by_address: Mapping[str, Peer]  # canonical address -> node
    by_wireguard_key: Mapping[str, Peer]  # WireGuard public key (base64) -> node

    @property
    def self_peer(self) -> Peer | None:
        # By name only: "self" is validated as a node name, and a name may look like an address.
        return next((p for p in self.peers if p.name == self.self_name), None)

    def lookup(self, name_or_address: str) -> Peer | None:
        """The node with this name, or owning this address (``--src laptop``, ``--src IP``)."""
        try:
            return self.by_address.get(canonical_address(name_or_address))
        except ValueError:
            return next((p for p in self.peers if p.name == name_or_address.strip()), None)


def parse_netmap(
    text: str | bytes,
    *,
    filename: str = "<netmap>",
    require_self: bool = True,
    require_wireguard_keys: bool = False,
) -> Netmap:
    """Parse and validate a netmap; raises NetmapError reading ``file:line:col: message``.

    ``require_self`` is off for a WireGuard inventory shared by every node of a mesh (there the
    interface's own key says which node is self); ``require_wireguard_keys`` is on for it.
    """
    try:
        doc = parse(text, filename=filename)
    except PolicyError as e:
        raise NetmapError(str(e)) from e
    return _Validator(doc, require_self, require_wireguard_keys).netmap()


class _Validator:
    def __init__(self, doc: Document, require_self: bool, require_wireguard_keys: bool) -> None:
        self.doc = doc
        self.require_self = require_self
        self.require_wireguard_keys = require_wireguard_keys

    def fail(self, path: JSONPath, message: str) -> NetmapError:
        return NetmapError(str(self.doc.error(path, message)))

    def netmap(self) -> Netmap:
        data = self.doc.value
        if not isinstance(data, dict):
            raise self.fail((), 'a netmap is an object with "self" and "nodes"')
        unknown = sorted(set(data) - _TOP_KEYS)
        if unknown:
            raise self.fail(
                (unknown[0],), f'unknown field {unknown[0]!r} (expected "self" and "nodes")'
            )
        nodes = data.get("nodes")
        if not isinstance(nodes, list) or not nodes:
            raise self.fail(("nodes",), '"nodes" must be a non-empty list of nodes')

        peers: list[Peer] = []
        by_name: dict[str, Peer] = {}
        by_id: dict[str, Peer] = {}
        by_address: dict[str, Peer] = {}
        by_key: dict[str, Peer] = {}
        for index, raw in enumerate(nodes):
            path: JSONPath = ("nodes", index)
            peer, key = self.node(path, raw)
            if peer.name in by_name:
                raise self.fail((*path, "name"), f"node name {peer.name!r} is used twice")
            if peer.id in by_id:
                raise self.fail(
                    (*path, "id"), f"{peer.name}: id {peer.id!r} is also {by_id[peer.id].name}'s"
                )
            for address in peer.addresses:
                if address in by_address:
                    raise self.fail(
                        (*path, "addresses"),
                        f"{peer.name}: address {address} is also {by_address[address].name}'s",
                    )
                by_address[address] = peer
            if key is not None:
                if key in by_key:
                    raise self.fail(
                        (*path, "wireguardKey"),
                        f"{peer.name}: wireguardKey is also {by_key[key].name}'s",
                    )
                by_key[key] = peer
            by_name[peer.name] = peer
            by_id[peer.id] = peer
            peers.append(peer)

        self_name = data.get("self")
        if self_name is None:
            if self.require_self:
                raise self.fail((), '"self" is missing: name the node this daemon runs on')
        elif not isinstance(self_name, str) or not self_name.strip():
            raise self.fail(("self",), '"self" must be the name of a node')
        elif self_name.strip() not in by_name:
            raise self.fail(("self",), f'"self" names {self_name.strip()!r}, not in "nodes"')
        return Netmap(
            source=self.doc.filename,
            self_name=self_name.strip() if isinstance(self_name, str) else None,
            peers=tuple(peers),
            by_address=MappingProxyType(by_address),
            by_wireguard_key=MappingProxyType(by_key),
        )

    def node(self, path: JSONPath, raw: Any) -> tuple[Peer, str | None]:
        if not isinstance(raw, dict):
            raise self.fail(path, "a node is an object")
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            raise self.fail((*path, "name"), 'node "name" is missing or not a non-empty string')
        name = name.strip()
        unknown = sorted(set(raw) - _NODE_KEYS)
        if unknown:
            raise self.fail((*path, unknown[0]), f"{name}: unknown field {unknown[0]!r}")
        node_id = raw.get("id")
        if not isinstance(node_id, str) or not node_id.strip():
            raise self.fail((*path, "id"), f'{name}: "id" is missing or not a non-empty string')

        addresses = raw.get("addresses")
        if not isinstance(addresses, list) or not addresses:
            raise self.fail(
                (*path, "addresses"), f'{name}: "addresses" must be a non-empty list of IPs'
            )
        canonical: list[str] = []
        for j, address in enumerate(addresses):
            try:
                if not isinstance(address, str):
                    raise ValueError
                canonical.append(canonical_address(address))
            except ValueError:
                raise self.fail(
                    (*path, "addresses", j), f"{name}: {address!r} is not an IP address"
                ) from None
        if len(set(canonical)) != len(canonical):
            raise self.fail((*path, "addresses"), f"{name}: an address is listed twice")

        user, tags = raw.get("user"), raw.get("tags")
        if (user is None) == (tags is None):
            raise self.fail(
                path, f'{name}: give exactly one of "user" (its owner\'s login) or "tags"'
            )
        if user is not None and (not isinstance(user, str) or not user.strip()):
            raise self.fail(
                (*path, "user"), f'{name}: "user" must be a login such as alice@example.com'
            )
        if tags is not None:
            if not isinstance(tags, list) or not tags:
                raise self.fail(
                    (*path, "tags"), f'{name}: "tags" must be a non-empty list like ["tag:prod"]'
                )
            for j, tag in enumerate(tags):
                if not isinstance(tag, str) or not tag.startswith("tag:") or len(tag) < 5:
                    raise self.fail(
                        (*path, "tags", j), f'{name}: {tag!r} is not a tag ("tag:NAME")'
                    )

        host_keys = raw.get("hostKeys", [])
        if not isinstance(host_keys, list) or not all(
            isinstance(k, str) and len(k.split()) >= 2 for k in host_keys
        ):
            raise self.fail(
                (*path, "hostKeys"),
                f'{name}: "hostKeys" must list public keys like "ssh-ed25519 AAAA..."',
            )

        key = raw.get("wireguardKey")
        if key is not None:
            if not isinstance(key, str) or not is_wireguard_key(key.strip()):
                raise self.fail(
                    (*path, "wireguardKey"),
                    f'{name}: "wireguardKey" is not a WireGuard public key (44 base64 chars)',
                )
            key = key.strip()
        elif self.require_wireguard_keys:
            raise self.fail(
                path, f'{name}: "wireguardKey" is missing (every inventory node needs one)'
            )

        peer = Peer(
            name=name,
            id=node_id.strip(),
            addresses=tuple(canonical),
            user=user.strip() if isinstance(user, str) else None,
            tags=tuple(tags) if tags is not None else (),
            host_keys=tuple(k.strip() for k in host_keys),
        )
        return peer, key


def is_wireguard_key(text: str) -> bool:
    """True for the base64 spelling of a 32-byte Curve25519 key, as ``wg`` prints them."""
    if len(text) != 44:
        return False
    try:
        return len(base64.b64decode(text, validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


def read_netmap(
    path: Path, *, require_self: bool = True, require_wireguard_keys: bool = False
) -> Netmap:
    """Read and validate the netmap file at ``path``; raises NetmapError."""
    try:
        with path.open("rb") as f:
            text = f.read(MAX_NETMAP_BYTES + 1)
    except OSError as e:
        raise NetmapError(f"cannot read netmap {path}: {e.strerror or e}") from e
    if len(text) > MAX_NETMAP_BYTES:
        raise NetmapError(f"{path}: larger than {MAX_NETMAP_BYTES // (1024 * 1024)} MiB;"
                          " is this the netmap file?")
    return parse_netmap(
        text, filename=str(path), require_self=require_self,
        require_wireguard_keys=require_wireguard_keys,
    )


def _content(netmap: Netmap) -> object:
    # Peer equality ignores host keys; a reload that only rotates keys is still a change.
    return (
        netmap.self_name,
        [(peer, peer.host_keys) for peer in netmap.peers],
        sorted((key, peer.name) for key, peer in netmap.by_wireguard_key.items()),
    )


class NetmapFile:
    """A netmap file and its last good contents.

    ``reload`` keeps the old contents when the new ones are unreadable or invalid, so a bad
    edit never leaves the daemon without identities; the daemon logs the NetmapError.
    """

    def __init__(
        self, path: Path | str, *, require_self: bool = True,
        require_wireguard_keys: bool = False,
    ) -> None:
        self.path = Path(path)
        self._require_self = require_self
        self._require_wireguard_keys = require_wireguard_keys
        self._signature = file_signature(self.path)
        self.netmap = self._read()

    def _read(self) -> Netmap:
        return read_netmap(
            self.path, require_self=self._require_self,
            require_wireguard_keys=self._require_wireguard_keys,
        )

    def reload(self) -> bool:
        """Re-read the file; True if what it says changed. Raises NetmapError."""
        # Taken before reading, so that a broken file is reported once, not at every poll.
        self._signature = file_signature(self.path)
        netmap = self._read()
        changed = _content(netmap) != _content(self.netmap)
        self.netmap = netmap
        return changed

    def reload_if_changed(self) -> bool:
        """``reload`` only when ``file_signature`` moved; cheap enough to poll."""
        if file_signature(self.path) == self._signature:
            return False
        return self.reload()


class NetmapResolver:
    """Answers from a netmap, static or from a file that ``reload`` re-reads."""

    def __init__(self, source: Netmap | NetmapFile) -> None:
        self._source = source

    @classmethod
    def from_file(cls, path: Path | str) -> NetmapResolver:
        return cls(NetmapFile(path))

    @property
    def netmap(self) -> Netmap:
        return self._source.netmap if isinstance(self._source, NetmapFile) else self._source

    def reload(self) -> bool:
        """Re-read the file; True if what it says changed (see ``NetmapFile.reload``)."""
        if not isinstance(self._source, NetmapFile):
            raise IdentityError("this netmap was not loaded from a file; nothing to reload")
        return self._source.reload()

    def reload_if_changed(self) -> bool:
        return isinstance(self._source, NetmapFile) and self._source.reload_if_changed()

    async def whois(self, address: str) -> Peer | None:
        try:
            return self.netmap.by_address.get(canonical_address(address))
        except ValueError:
            return None

    async def self_node(self) -> Peer:
        peer = self.netmap.self_peer
        if peer is None:
            raise IdentityError(f"{self.netmap.source}: no \"self\" node")
        return peer

    async def peers(self) -> list[Peer]:
        return list(self.netmap.peers)

    async def close(self) -> None:
        return None
