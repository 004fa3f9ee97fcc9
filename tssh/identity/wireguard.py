"""The ``wireguard`` identity backend: cryptokey routing says which key sent a packet.

WireGuard accepts a packet from peer P only if its inner source address falls in P's
allowed-ips, longest prefix first, so the address of an accepted connection names exactly one
peer public key. ``wg show IFACE dump`` gives that table; an inventory (the netmap format, each
node with ``"wireguardKey"``) names the node behind each key, and the interface's own public key
picks the inventory entry that is this node.

Two rules keep this honest:
- the address must also be one of the node's own inventory addresses: a host reached through
  a peer that routes a subnet is not that peer;
- the guarantee only holds for traffic that really came through the WireGuard interface, so the
  daemon must accept connections on that interface only (bind to its address and device).

``parse_dump`` and ``key_for_address`` are pure; ``WireGuardResolver`` runs ``wg`` (argv list,
never a shell) for every lookup, so a peer removed from the interface stops resolving at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from tssh.errors import IdentityError
from tssh.identity.address import canonical_address
from tssh.identity.base import Peer
from tssh.identity.netmap import Netmap, NetmapFile

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
WG_TIMEOUT = 5.0


@dataclass(frozen=True)
class WireGuardPeer:
    public_key: str
    allowed_ips: tuple[IPNetwork, ...]
    endpoint: str | None
    latest_handshake: int  # unix seconds, 0 if never


@dataclass(frozen=True)
class WireGuardInterface:
    """``wg show IFACE dump``, minus the private key (never kept)."""

    public_key: str
    listen_port: int
    peers: tuple[WireGuardPeer, ...]


def parse_dump(text: str) -> WireGuardInterface:
    """Parse ``wg show IFACE dump`` (tab-separated; first line the interface, then peers).

    Interface line: private-key, public-key, listen-port, fwmark.
    Peer lines: public-key, preshared-key, endpoint, allowed-ips (comma-separated or
    ``(none)``), latest-handshake, transfer-rx, transfer-tx, persistent-keepalive.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise IdentityError("`wg show dump` printed nothing")
    head = lines[0].split("\t")
    if len(head) != 4:
        raise IdentityError(f"`wg show dump`: interface line has {len(head)} fields, expected 4")
    try:
        listen_port = int(head[2])
    except ValueError:
        raise IdentityError(f"`wg show dump`: bad listen port {head[2]!r}") from None
    peers: list[WireGuardPeer] = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 8:
            raise IdentityError(
                f"`wg show dump` line {number}: {len(fields)} fields, expected 8"
            )
        key, _psk, endpoint, allowed, handshake = fields[:5]
        networks: list[IPNetwork] = []
        if allowed != "(none)":
            for item in allowed.split(","):
                try:
                    networks.append(ipaddress.ip_network(item.strip(), strict=False))
                except ValueError:
                    raise IdentityError(
                        f"`wg show dump` line {number}: bad allowed-ip {item!r}"
                    ) from None
        try:
            latest = int(handshake)
        except ValueError:
            raise IdentityError(
                f"`wg show dump` line {number}: bad handshake time {handshake!r}"
            ) from None
        peers.append(WireGuardPeer(
            public_key=key,
            allowed_ips=tuple(networks),
            endpoint=None if endpoint == "(none)" else endpoint,
            latest_handshake=latest,
        ))
    return WireGuardInterface(public_key=head[1], listen_port=listen_port, peers=tuple(peers))


def key_for_address(interface: WireGuardInterface, address: str) -> str | None:
    """The public key WireGuard routes ``address`` to (longest allowed-ips prefix), or None."""
    try:
        ip = ipaddress.ip_address(canonical_address(address))
    except ValueError:
        return None
    best: tuple[int, str] | None = None
    for peer in interface.peers:
        for network in peer.allowed_ips:
            if ip.version == network.version and ip in network and (
                best is None or network.prefixlen > best[0]
            ):
                best = (network.prefixlen, peer.public_key)
    return best[1] if best is not None else None


class WireGuardResolver:
    """Identity from a WireGuard interface plus an inventory file of nodes and their keys."""

    def __init__(
        self, interface: str, inventory: Netmap | NetmapFile, *, wg_command: str = "wg"
    ) -> None:
        self.interface = interface
        self._inventory = inventory
        self._wg = wg_command

    @classmethod
    def from_file(
        cls, interface: str, inventory_path: Path | str, *, wg_command: str = "wg"
    ) -> WireGuardResolver:
        inventory = NetmapFile(inventory_path, require_self=False, require_wireguard_keys=True)
        return cls(interface, inventory, wg_command=wg_command)

    @property
    def inventory(self) -> Netmap:
        if isinstance(self._inventory, NetmapFile):
            return self._inventory.netmap
        return self._inventory

    def reload(self) -> bool:
        """Re-read the inventory; True if it changed (see ``NetmapFile.reload``)."""
        if not isinstance(self._inventory, NetmapFile):
            raise IdentityError("this inventory was not loaded from a file; nothing to reload")
        return self._inventory.reload()

    def reload_if_changed(self) -> bool:
        return isinstance(self._inventory, NetmapFile) and self._inventory.reload_if_changed()

    async def dump(self) -> WireGuardInterface:
        """Run ``wg show IFACE dump`` and parse it."""
        argv = [self._wg, "show", self.interface, "dump"]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as e:
            raise IdentityError(
                f"cannot run {self._wg!r} (install wireguard-tools): {e.strerror or e}"
            ) from e
        try:
            out, err = await asyncio.wait_for(proc.communicate(), WG_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise IdentityError(
                f"`wg show {self.interface} dump` took over {WG_TIMEOUT} s"
            ) from None
        if proc.returncode != 0:
            reason = err.decode(errors="replace").strip().splitlines()
            raise IdentityError(
                f"`wg show {self.interface} dump` failed: "
                f"{reason[-1] if reason else f'exit status {proc.returncode}'}"
            )
        return parse_dump(out.decode(errors="replace"))

    async def whois(self, address: str) -> Peer | None:
        try:
            canonical = canonical_address(address)
        except ValueError:
            return None
        key = key_for_address(await self.dump(), canonical)
        if key is None:
            return None
        peer = self.inventory.by_wireguard_key.get(key)
        if peer is None or canonical not in peer.addresses:
            return None
        return peer

    async def self_node(self) -> Peer:
        key = (await self.dump()).public_key
        peer = self.inventory.by_wireguard_key.get(key)
        if peer is None:
            raise IdentityError(
                f"{self.inventory.source}: no node has wireguardKey {key}"
                f" (the public key of interface {self.interface})"
            )
        if self.inventory.self_name is not None and self.inventory.self_name != peer.name:
            raise IdentityError(
                f"{self.inventory.source}: \"self\" is {self.inventory.self_name!r} but"
                f" interface {self.interface}'s key belongs to {peer.name!r}"
            )
        return peer

    async def peers(self) -> list[Peer]:
        return list(self.inventory.peers)

    async def close(self) -> None:
        return None
