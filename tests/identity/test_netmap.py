"""The netmap backend: parsing, validation messages, lookups, reload."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tssh.config import Config
from tssh.errors import ConfigError, IdentityError, NetmapError
from tssh.identity.base import Peer, Reloadable
from tssh.identity.factory import open_resolver
from tssh.identity.netmap import MAX_NETMAP_BYTES, NetmapResolver, parse_netmap

DEMO = """{
  "self": "server",                 // the node this daemon runs on
  "nodes": [
    {"name": "server", "id": "nSRV1", "addresses": ["127.0.0.10"], "tags": ["tag:prod"]},
    {"name": "laptop", "id": "nLAP1", "addresses": ["127.0.0.2", "fd00::2"],
     "user": "alice@example.com", "hostKeys": ["ssh-ed25519 AAAAC3Nza laptop"]},
    {"name": "recorder", "id": "nREC1", "addresses": ["127.0.0.20"], "tags": ["tag:recorder"]},
  ],
}
"""


def write(tmp_path: Path, text: str, name: str = "netmap.hujson") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


async def test_design_example_resolves(tmp_path: Path) -> None:
    resolver = NetmapResolver.from_file(write(tmp_path, DEMO))
    laptop = await resolver.whois("127.0.0.2")
    assert laptop == Peer(name="laptop", id="nLAP1", addresses=("127.0.0.2", "fd00::2"),
                          user="alice@example.com")
    assert laptop.host_keys == ("ssh-ed25519 AAAAC3Nza laptop",)
    assert await resolver.whois("::ffff:127.0.0.2") == laptop
    assert await resolver.whois("fd00:0::2") == laptop
    assert await resolver.whois("127.0.0.3") is None
    assert await resolver.whois("laptop") is None
    me = await resolver.self_node()
    assert me.name == "server" and me.is_tagged and me.user is None
    assert [p.name for p in await resolver.peers()] == ["server", "laptop", "recorder"]
    assert resolver.netmap.lookup("laptop") == laptop
    assert resolver.netmap.lookup("fd00::2") == laptop
    assert resolver.netmap.lookup("nobody") is None
    assert resolver.netmap.lookup("10.0.0.1") is None
    await resolver.close()


async def test_open_resolver_netmap(tmp_path: Path) -> None:
    resolver = open_resolver(Config(identity="netmap", netmap=write(tmp_path, DEMO)))
    assert (await resolver.self_node()).id == "nSRV1"
    with pytest.raises(ConfigError, match="needs a netmap file"):
        open_resolver(Config(identity="netmap"))
    with pytest.raises(ConfigError, match="needs the interface"):
        open_resolver(Config(identity="wireguard", netmap=tmp_path / "x"))


def node(**fields: object) -> str:
    import json
    base: dict[str, object] = {"name": "a", "id": "n1", "addresses": ["127.0.0.2"], "user": "u@x"}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None})


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        (node(name=None), 'node "name" is missing'),
        (node(id=None), 'a: "id" is missing'),
        (node(addresses=None), '"addresses" must be a non-empty list'),
        (node(addresses=[]), '"addresses" must be a non-empty list'),
        (node(addresses=["100.64.0.0/10"]), "'100.64.0.0/10' is not an IP address"),
        (node(addresses=["127.0.0.2", "127.0.0.02x"]), "is not an IP address"),
        (node(user=None), 'exactly one of "user"'),
        (node(tags=["tag:x"]), 'exactly one of "user"'),
        (node(user=None, tags=["prod"]), "'prod' is not a tag"),
        (node(user=None, tags=[]), '"tags" must be a non-empty list'),
        (node(user=""), '"user" must be a login'),
        (node(hostKeys=["AAAA"]), '"hostKeys" must list public keys'),
        (node(wireguardKey="abc"), '"wireguardKey" is not a WireGuard public key'),
        (node(adresses=["1.2.3.4"]), "unknown field 'adresses'"),
        (node() + "," + node(id="n2", addresses=["127.0.0.3"]), "node name 'a' is used twice"),
        (node() + "," + node(name="b", addresses=["127.0.0.3"]), "id 'n1' is also a's"),
        (node() + "," + node(name="b", id="n2"), "address 127.0.0.2 is also a's"),
    ],
)
def test_invalid_nodes_are_refused_with_file_and_position(nodes: str, message: str) -> None:
    text = '{"self": "a",\n "nodes": [\n' + nodes + "]}"
    with pytest.raises(IdentityError) as info:
        parse_netmap(text, filename="mesh.hujson")
    assert isinstance(info.value, NetmapError) and info.value.exit_code == 2
    assert str(info.value).startswith("mesh.hujson:")
    assert message in str(info.value)
    # Positions point into the document: line 3 holds the nodes.
    assert str(info.value).split(":")[1] in ("1", "2", "3")


def test_self_must_name_a_node() -> None:
    with pytest.raises(IdentityError, match=r"^m:1:10: \"self\" names 'ghost', not in \"nodes\""):
        parse_netmap('{"self": "ghost", "nodes": [' + node() + "]}", filename="m")
    with pytest.raises(IdentityError, match='"self" is missing'):
        parse_netmap('{"nodes": [' + node() + "]}", filename="m")
    # An inventory shared by a whole WireGuard mesh may leave "self" out.
    assert parse_netmap('{"nodes": [' + node() + "]}", require_self=False).self_peer is None



async def test_self_is_found_by_name_even_when_the_name_looks_like_an_address() -> None:
    """"self" names a node; a name spelled like another node's address must not make the
    daemon take that other node (its owner, its tags) for itself."""
    netmap = parse_netmap("""{"self": "127.0.0.2", "nodes": [
        {"name": "127.0.0.2", "id": "nSRV", "addresses": ["127.0.0.10"], "tags": ["tag:prod"]},
        {"name": "laptop", "id": "nLAP", "addresses": ["127.0.0.2"], "user": "a@example.com"},
    ]}""")
    assert netmap.self_peer is not None and netmap.self_peer.id == "nSRV"
    assert (await NetmapResolver(netmap).self_node()).id == "nSRV"


def test_syntax_errors_carry_line_and_column() -> None:
    with pytest.raises(IdentityError, match=r"^m\.hujson:3:"):
        parse_netmap('{\n "self": "a",\n "nodes": [,]}', filename="m.hujson")


def test_unknown_top_level_field() -> None:
    with pytest.raises(IdentityError, match="unknown field 'peers'"):
        parse_netmap('{"self": "a", "nodes": [' + node() + '], "peers": []}')


def test_oversized_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    """A netmap path pointing at a huge file (a log, a disk image) is refused after reading
    just past the cap, like a policy file."""
    path = tmp_path / "huge.hujson"
    with path.open("wb") as f:
        f.truncate(MAX_NETMAP_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(NetmapError, match=r"huge\.hujson: larger than 16 MiB"):
        NetmapResolver.from_file(path)


def test_missing_file_is_an_identity_error(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match=r"cannot read netmap .*absent\.hujson"):
        NetmapResolver.from_file(tmp_path / "absent.hujson")


async def test_reload_swaps_in_a_new_file_and_keeps_the_old_one_on_error(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, DEMO)
    resolver = NetmapResolver.from_file(path)
    assert isinstance(resolver, Reloadable)
    assert resolver.reload_if_changed() is False
    assert resolver.reload() is False  # same content

    path.write_text(DEMO.replace('"127.0.0.2"', '"127.0.0.5"'))
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse clocks
    assert resolver.reload_if_changed() is True
    assert await resolver.whois("127.0.0.2") is None
    assert (await resolver.whois("127.0.0.5")).name == "laptop"  # type: ignore[union-attr]

    path.write_text(DEMO.replace('"user": "alice@example.com"', '"user": 7'))
    os.utime(path, ns=(2, 2))
    with pytest.raises(IdentityError, match='"user" must be a login'):
        resolver.reload_if_changed()
    assert (await resolver.whois("127.0.0.5")).name == "laptop"  # type: ignore[union-attr]

    # Rotating only a host key is still a change worth telling the daemon about.
    path.write_text(DEMO.replace("AAAAC3Nza laptop", "AAAAC3Nza rotated"))
    assert resolver.reload() is True
    assert (await resolver.whois("fd00::2")).host_keys == (  # type: ignore[union-attr]
        "ssh-ed25519 AAAAC3Nza rotated",
    )
