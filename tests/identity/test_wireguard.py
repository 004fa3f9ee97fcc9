"""The wireguard backend: the dump parser, and a real wireguard-go mesh in namespaces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.identity.wglab import Lab, build_lab, lab_unavailable_reason, run
from tssh.config import Config
from tssh.errors import IdentityError
from tssh.identity.base import Reloadable
from tssh.identity.factory import open_resolver
from tssh.identity.wireguard import WireGuardResolver, key_for_address, parse_dump

KEY_A = "i1B2JC03CNeyYjNKXxU99Z+rXiQMrC/AME+llVYM+DI="
KEY_B = "1Gs1HMplsT1nQpfnWYpzWRTbOvlhyNp6gQ9lDPpf+A0="
KEY_C = "GmXlxaVqxkCbVuXkSvJbWpeM6Vx9ZWUm47Nf2DQCqGo="
DUMP = (
    "qCgzGYRDW5Kuilh805R2/qZAGe6I9inYXo3mW2PKkmo=\t" + KEY_A + "\t51820\toff\n"
    + KEY_B + "\t(none)\t10.201.0.2:51820\t100.64.0.2/32,10.99.0.0/16\t1795596992\t276\t220\toff\n"
    + KEY_C + "\t(none)\t(none)\t10.99.1.0/24,fd00::/64\t0\t0\t0\t25\n"
    + "x3Gv0zWUvo0VzzdNL1Yj0kW2lD2UOhpbJbLa6+HUeF0=\t(none)\t(none)\t(none)\t0\t0\t0\toff\n"
)


def test_parse_dump_keeps_keys_and_routes_but_not_the_private_key() -> None:
    iface = parse_dump(DUMP)
    assert iface.public_key == KEY_A and iface.listen_port == 51820
    assert [p.public_key for p in iface.peers][:2] == [KEY_B, KEY_C]
    assert [str(n) for n in iface.peers[0].allowed_ips] == ["100.64.0.2/32", "10.99.0.0/16"]
    assert iface.peers[0].endpoint == "10.201.0.2:51820"
    assert iface.peers[1].endpoint is None and iface.peers[1].latest_handshake == 0
    assert iface.peers[2].allowed_ips == ()
    assert "qCgzGYRDW5" not in repr(iface)


def test_cryptokey_routing_is_longest_prefix_match() -> None:
    iface = parse_dump(DUMP)
    assert key_for_address(iface, "100.64.0.2") == KEY_B
    assert key_for_address(iface, "::ffff:100.64.0.2") == KEY_B
    assert key_for_address(iface, "10.99.0.7") == KEY_B
    assert key_for_address(iface, "10.99.1.7") == KEY_C  # /24 beats /16
    assert key_for_address(iface, "fd00::9") == KEY_C
    assert key_for_address(iface, "100.64.0.3") is None
    assert key_for_address(iface, "nonsense") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "printed nothing"),
        ("a\tb\tc\n", "interface line has 3 fields"),
        ("a\tb\tport\toff\n", "bad listen port"),
        ("a\tb\t1\toff\nk\t(none)\t(none)\n", "line 2: 3 fields"),
        ("a\tb\t1\toff\nk\t(none)\t(none)\t300.1.1.1/32\t0\t0\t0\toff\n", "bad allowed-ip"),
    ],
)
def test_parse_dump_refuses_garbage(text: str, message: str) -> None:
    with pytest.raises(IdentityError, match=message):
        parse_dump(text)


# --- a real mesh -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason=f"WireGuard lab unavailable: {reason}")
    lab = build_lab(["server", "laptop"])
    try:
        yield lab
    finally:
        lab.close()


def inventory(lab: Lab, tmp_path: Path, **extra: object) -> Path:
    server, laptop = lab.nodes["server"], lab.nodes["laptop"]
    data = {
        "nodes": [
            {"name": "server", "id": "nSRV1", "addresses": [server.address], "tags": ["tag:prod"],
             "wireguardKey": server.public_key},
            {"name": "laptop", "id": "nLAP1", "addresses": [laptop.address],
             "user": "alice@example.com", "wireguardKey": laptop.public_key},
        ],
        **extra,
    }
    path = tmp_path / "inventory.hujson"
    path.write_text(json.dumps(data))
    return path


SERVER_SCRIPT = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 2222)); s.listen(1); s.settimeout(20)
print("ready", flush=True)
conn, peer = s.accept()
print(peer[0], flush=True)
conn.close()
"""


def source_address_seen_by_server(lab: Lab) -> str:
    """Connect laptop -> server over the tunnel; the source address the server's accept saw."""
    server = subprocess.Popen(
        lab.exec_argv("server", sys.executable, "-c", SERVER_SCRIPT, lab.nodes["server"].address),
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        address = lab.nodes["server"].address
        client = f"import socket; socket.create_connection(('{address}', 2222), 10).close()"
        run(*lab.exec_argv("laptop", sys.executable, "-c", client))
        return server.stdout.readline().strip()
    finally:
        server.kill()
        server.wait(timeout=10)


async def test_connection_over_the_tunnel_resolves_to_the_inventory_node(
    lab: Lab, tmp_path: Path
) -> None:
    seen = source_address_seen_by_server(lab)
    assert seen == lab.nodes["laptop"].address
    resolver = open_resolver(Config(identity="wireguard", netmap=inventory(lab, tmp_path),
                                    wireguard_interface=lab.nodes["server"].interface))
    peer = await resolver.whois(seen)
    assert peer is not None
    assert (peer.name, peer.id, peer.user) == ("laptop", "nLAP1", "alice@example.com")
    me = await resolver.self_node()
    assert me.name == "server" and me.tags == ("tag:prod",)
    assert {p.name for p in await resolver.peers()} == {"server", "laptop"}
    assert await resolver.whois(lab.nodes["server"].address) is None  # not a peer of itself
    await resolver.close()


async def test_routes_and_keys_that_do_not_prove_identity(lab: Lab, tmp_path: Path) -> None:
    iface = lab.nodes["server"].interface
    laptop_key = lab.nodes["laptop"].public_key
    stranger = run("wg", "pubkey", input=run("wg", "genkey")).strip()
    resolver = WireGuardResolver.from_file(iface, inventory(lab, tmp_path))
    try:
        # The laptop also routes a subnet: hosts behind it are not the laptop.
        run("wg", "set", iface, "peer", laptop_key,
            "allowed-ips", f"{lab.nodes['laptop'].address}/32,10.99.0.0/24")
        # A peer on the interface whose key no inventory node claims.
        run("wg", "set", iface, "peer", stranger, "allowed-ips", "100.64.0.77/32")
        assert await resolver.whois("10.99.0.5") is None
        assert await resolver.whois("100.64.0.77") is None
        assert (await resolver.whois(lab.nodes["laptop"].address)) is not None
        # Removing the peer from the interface revokes its identity at once.
        run("wg", "set", iface, "peer", laptop_key, "remove")
        assert await resolver.whois(lab.nodes["laptop"].address) is None
    finally:
        run("wg", "set", iface, "peer", stranger, "remove")
        run("wg", "set", iface, "peer", laptop_key,
            "allowed-ips", f"{lab.nodes['laptop'].address}/32",
            "endpoint", f"{lab.nodes['laptop'].underlay}:51820")


async def test_self_must_be_in_the_inventory(lab: Lab, tmp_path: Path) -> None:
    iface = lab.nodes["server"].interface
    wrong_self = WireGuardResolver.from_file(iface, inventory(lab, tmp_path, self="laptop"))
    with pytest.raises(IdentityError, match=r"\"self\" is 'laptop' but interface .* belongs to"):
        await wrong_self.self_node()
    other = WireGuardResolver.from_file("wgnonexistent0", inventory(lab, tmp_path))
    with pytest.raises(IdentityError, match=r"`wg show wgnonexistent0 dump` failed"):
        await other.self_node()


async def test_inventory_reload(lab: Lab, tmp_path: Path) -> None:
    path = inventory(lab, tmp_path)
    resolver = WireGuardResolver.from_file(lab.nodes["server"].interface, path)
    assert isinstance(resolver, Reloadable)
    assert resolver.reload_if_changed() is False
    path.write_text(path.read_text().replace("alice@example.com", "bob@example.com"))
    os.utime(path, ns=(1, 1))
    assert resolver.reload_if_changed() is True
    peer = await resolver.whois(lab.nodes["laptop"].address)
    assert peer is not None and peer.user == "bob@example.com"


def test_inventory_nodes_need_keys(tmp_path: Path) -> None:
    path = tmp_path / "inv.hujson"
    path.write_text('{"nodes": [{"name": "a", "id": "1", "addresses": ["100.64.0.9"],'
                    ' "user": "a@b"}]}')
    with pytest.raises(IdentityError, match='"wireguardKey" is missing'):
        WireGuardResolver.from_file("wg0", path)


async def test_missing_wg_tool(tmp_path: Path) -> None:
    path = tmp_path / "inv.hujson"
    path.write_text(json.dumps({"nodes": [{"name": "a", "id": "1", "addresses": ["100.64.0.9"],
                                           "user": "a@b", "wireguardKey": KEY_B}]}))
    resolver = WireGuardResolver.from_file("wg0", path, wg_command=str(tmp_path / "no-wg"))
    with pytest.raises(IdentityError, match=r"cannot run .*install wireguard-tools"):
        await resolver.whois("100.64.0.9")
