"""The tailscale backend against a LocalAPI served over a real Unix socket."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.identity.localapi import ALICE, BOB, TAGGED_DEVICES, Tailnet, node, serve_localapi
from tssh.errors import IdentityError
from tssh.identity.base import Peer
from tssh.identity.tailscale import TailscaleResolver, peer_from_status, peer_from_whois

SERVER = node(101, "nSRV1CNTRL", "server.example.ts.net.", ["100.64.0.10", "fd7a:115c:a1e0::a"],
              TAGGED_DEVICES, tags=["tag:prod"], host_keys=["ssh-ed25519 AAAAC3NzaServer"])
LAPTOP = node(102, "nLAP1CNTRL", "laptop.example.ts.net.", ["100.64.0.2", "fd7a:115c:a1e0::2"],
              ALICE)
PHONE = node(103, "nPHN1CNTRL", "phone.example.ts.net.", ["100.64.0.3"], BOB)


@pytest.fixture
async def tailnet(tmp_path: Path):  # type: ignore[no-untyped-def]
    net = Tailnet(nodes=[(SERVER, TAGGED_DEVICES), (LAPTOP, ALICE), (PHONE, BOB)])
    sock = tmp_path / "tailscaled.sock"
    async with serve_localapi(sock, net):
        resolver = TailscaleResolver(sock)
        try:
            yield net, resolver
        finally:
            await resolver.close()


async def test_whois_user_node(tailnet) -> None:  # type: ignore[no-untyped-def]
    net, resolver = tailnet
    peer = await resolver.whois("100.64.0.2")
    assert peer == Peer(
        name="laptop.example.ts.net", id="nLAP1CNTRL",
        addresses=("100.64.0.2", "fd7a:115c:a1e0::2"),
        user="alice@example.com", user_id="6001", tags=(),
    )
    assert not peer.is_tagged
    assert net.requests[-1] == "/localapi/v0/whois?addr=100.64.0.2%3A0"


async def test_whois_tagged_node_has_no_user(tailnet) -> None:  # type: ignore[no-untyped-def]
    _, resolver = tailnet
    peer = await resolver.whois("100.64.0.10")
    assert peer is not None
    assert peer.tags == ("tag:prod",)
    assert peer.user is None and peer.user_id is None
    assert peer.host_keys == ("ssh-ed25519 AAAAC3NzaServer",)


async def test_whois_ipv6_and_mapped_ipv4(tailnet) -> None:  # type: ignore[no-untyped-def]
    net, resolver = tailnet
    peer6 = await resolver.whois("fd7a:115c:a1e0:0::2")
    assert peer6 is not None and peer6.name == "laptop.example.ts.net"
    assert net.requests[-1].endswith("addr=%5Bfd7a%3A115c%3Aa1e0%3A%3A2%5D%3A0")
    mapped = await resolver.whois("::ffff:100.64.0.3")
    assert mapped is not None and mapped.user == "bob@example.com"


async def test_whois_unknown_address_is_none(tailnet) -> None:  # type: ignore[no-untyped-def]
    _, resolver = tailnet
    assert await resolver.whois("100.64.0.99") is None
    assert await resolver.whois("not-an-ip") is None


async def test_self_node_and_peers(tailnet) -> None:  # type: ignore[no-untyped-def]
    net, resolver = tailnet
    me = await resolver.self_node()
    assert me.name == "server.example.ts.net"
    assert me.id == "nSRV1CNTRL"
    assert me.addresses == ("100.64.0.10", "fd7a:115c:a1e0::a")
    assert me.tags == ("tag:prod",) and me.user is None
    assert net.requests[-1] == "/localapi/v0/status?peers=false"
    peers = await resolver.peers()
    by_name = {p.name: p for p in peers}
    assert set(by_name) == {"server.example.ts.net", "laptop.example.ts.net",
                            "phone.example.ts.net"}
    assert by_name["laptop.example.ts.net"].user == "alice@example.com"
    assert by_name["laptop.example.ts.net"].user_id == "6001"
    assert by_name["phone.example.ts.net"].addresses == ("100.64.0.3",)


async def test_self_node_when_logged_out(tailnet) -> None:  # type: ignore[no-untyped-def]
    net, resolver = tailnet
    net.backend_state = "NeedsLogin"
    with pytest.raises(IdentityError, match=r"not connected.*NeedsLogin"):
        await resolver.self_node()


async def test_socket_missing_is_a_clear_error(tmp_path: Path) -> None:
    resolver = TailscaleResolver(tmp_path / "nope.sock")
    try:
        with pytest.raises(IdentityError, match=r"cannot reach tailscaled at .*nope\.sock"):
            await resolver.whois("100.64.0.2")
    finally:
        await resolver.close()


def test_whois_mapping_rejects_malformed_answers() -> None:
    with pytest.raises(IdentityError, match="no \"Node\""):
        peer_from_whois({"UserProfile": ALICE})
    untagged_without_user = {"Node": {**LAPTOP}, "UserProfile": {}}
    with pytest.raises(IdentityError, match="neither tags nor a user"):
        peer_from_whois(untagged_without_user)


def test_status_mapping_skips_peers_without_known_user() -> None:
    status = {"User": {}}
    ps = {"ID": "nX", "DNSName": "x.ts.net.", "TailscaleIPs": ["100.64.0.7"], "UserID": 77}
    assert peer_from_status(status, ps) is None
    status = {"User": {"77": {"ID": 77, "LoginName": "carol@example.com"}}}
    peer = peer_from_status(status, ps)
    assert peer is not None and peer.user == "carol@example.com" and peer.name == "x.ts.net"
