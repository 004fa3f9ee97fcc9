"""The ``tailscale`` identity backend: ask tailscaled over its LocalAPI Unix socket.

tailscaled already knows which node owns each tailnet address (WireGuard authenticated the
packets); ``GET /localapi/v0/whois?addr=IP`` says who, ``GET /localapi/v0/status`` says who we
are and who else is on the tailnet. Works the same on Headscale tailnets.

Field names follow tailscaled's JSON (``apitype.WhoIsResponse``, ``tailcfg.Node``,
``tailcfg.UserProfile``, ``ipnstate.Status``/``PeerStatus``). A tagged node's user profile is
the placeholder "tagged-devices" one, so a node with tags is treated as tagged, never as owned.
The ``*_from_*`` functions are pure mappings from that JSON to ``Peer``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import httpx

from tssh.errors import IdentityError
from tssh.identity.address import canonical_address
from tssh.identity.base import Peer

LOCALAPI_HOST = "local-tailscaled.sock"  # the Host header tailscaled expects on its socket
DEFAULT_TIMEOUT = 5.0


def _strip_dot(name: str) -> str:
    return name[:-1] if name.endswith(".") else name


def _str_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str))


def _single_addresses(prefixes: Any) -> tuple[str, ...]:
    """``["100.64.0.2/32", "fd7a::2/128"]`` -> the node's own addresses (single-IP prefixes)."""
    out: list[str] = []
    for text in _str_list(prefixes):
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            continue
        if net.num_addresses == 1:
            out.append(canonical_address(str(net.network_address)))
    return tuple(out)


def _id_text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | str) and str(value) not in ("", "0"):
        return str(value)
    return None


def peer_from_whois(data: Any) -> Peer:
    """A ``Peer`` from tailscaled's whois answer; raises IdentityError if it is malformed."""
    node = data.get("Node") if isinstance(data, dict) else None
    if not isinstance(node, dict):
        raise IdentityError("tailscaled's whois answer has no \"Node\"")
    profile = data.get("UserProfile")
    profile = profile if isinstance(profile, dict) else {}
    name = _strip_dot(str(node.get("Name") or ""))
    if not name:
        hostinfo = node.get("Hostinfo")
        name = str(hostinfo.get("Hostname") or "") if isinstance(hostinfo, dict) else ""
    node_id = _id_text(node.get("StableID")) or _id_text(node.get("ID"))
    if not name or node_id is None:
        raise IdentityError("tailscaled's whois answer has a node without name or id")
    tags = _str_list(node.get("Tags"))
    hostinfo = node.get("Hostinfo")
    host_keys = _str_list(hostinfo.get("sshHostKeys")) if isinstance(hostinfo, dict) else ()
    user = None if tags else str(profile.get("LoginName") or "") or None
    if not tags and user is None:
        raise IdentityError(f"tailscaled's whois answer for {name} has neither tags nor a user")
    return Peer(
        name=name,
        id=node_id,
        addresses=_single_addresses(node.get("Addresses")),
        user=user,
        user_id=None if tags else _id_text(profile.get("ID")),
        tags=tags,
        host_keys=host_keys,
    )


def peer_from_status(status: Any, peer_status: Any) -> Peer | None:
    """A ``Peer`` from one ``PeerStatus`` of ``/localapi/v0/status`` (None if unusable)."""
    if not isinstance(peer_status, dict):
        return None
    name = _strip_dot(str(peer_status.get("DNSName") or "")) or str(
        peer_status.get("HostName") or ""
    )
    node_id = _id_text(peer_status.get("ID")) or _id_text(peer_status.get("NodeID"))
    if not name or node_id is None:
        return None
    addresses: list[str] = []
    for text in _str_list(peer_status.get("TailscaleIPs")):
        try:
            addresses.append(canonical_address(text))
        except ValueError:
            continue
    tags = _str_list(peer_status.get("Tags"))
    user = user_id = None
    if not tags:
        user_id = _id_text(peer_status.get("UserID"))
        users = status.get("User") if isinstance(status, dict) else None
        profile = users.get(user_id) if isinstance(users, dict) and user_id else None
        user = str(profile.get("LoginName") or "") or None if isinstance(profile, dict) else None
        if user is None:
            return None  # neither tagged nor owned by a known user: cannot be matched safely
    return Peer(
        name=name,
        id=node_id,
        addresses=tuple(addresses),
        user=user,
        user_id=user_id,
        tags=tags,
        host_keys=_str_list(peer_status.get("sshHostKeys")),
    )


def _whois_addr(address: str) -> str:
    # tailscaled accepts "IP" (newer) or "IP:port" (every version); port 0 means "any".
    ip = ipaddress.ip_address(address)
    return f"[{ip}]:0" if ip.version == 6 else f"{ip}:0"


class TailscaleResolver:
    """Identity from a running tailscaled, reached at ``socket_path``."""

    def __init__(self, socket_path: Path | str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._socket = Path(socket_path)
        self._client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(self._socket)),
            base_url=f"http://{LOCALAPI_HOST}",
            timeout=timeout,
        )

    async def _get(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        try:
            return await self._client.get(path, params=params)
        except httpx.TransportError as e:
            raise IdentityError(
                f"cannot reach tailscaled at {self._socket}: {e or type(e).__name__}"
                " (is tailscaled running, and may this user read its socket?)"
            ) from e

    def _unexpected(self, response: httpx.Response) -> IdentityError:
        text = response.text.strip().splitlines()[0] if response.text.strip() else ""
        hint = " (run as root, or make this user tailscale's operator)" \
            if response.status_code == 403 else ""
        return IdentityError(
            f"tailscaled answered {response.status_code} to {response.request.url.path}:"
            f" {text}{hint}"
        )

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as e:
            raise IdentityError(
                f"tailscaled's answer to {response.request.url.path} is not JSON"
            ) from e

    async def whois(self, address: str) -> Peer | None:
        try:
            addr = _whois_addr(canonical_address(address))
        except ValueError:
            return None
        response = await self._get("/localapi/v0/whois", {"addr": addr})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._unexpected(response)
        return peer_from_whois(self._json(response))

    async def _status(self, *, peers: bool) -> Any:
        response = await self._get(
            "/localapi/v0/status", {"peers": "true" if peers else "false"}
        )
        if response.status_code != 200:
            raise self._unexpected(response)
        status = self._json(response)
        if not isinstance(status, dict):
            raise IdentityError("tailscaled's status answer is not an object")
        return status

    async def self_node(self) -> Peer:
        status = await self._status(peers=False)
        state = status.get("BackendState")
        if state not in (None, "Running"):
            raise IdentityError(f"tailscaled is not connected (state {state})")
        peer = peer_from_status(status, status.get("Self"))
        if peer is None or not peer.addresses:
            raise IdentityError("tailscaled's status has no usable self node yet")
        return peer

    async def peers(self) -> list[Peer]:
        status = await self._status(peers=True)
        result = [p for p in [peer_from_status(status, status.get("Self"))] if p is not None]
        peer_map = status.get("Peer")
        if isinstance(peer_map, dict):
            for key in sorted(peer_map):
                peer = peer_from_status(status, peer_map[key])
                if peer is not None:
                    result.append(peer)
        return result

    async def close(self) -> None:
        await self._client.aclose()
