"""The forwarding settings: parsing, sshd's Match resolution, and each forward's check."""

from __future__ import annotations

from pathlib import Path

import pytest

from tssh.config import load_config
from tssh.errors import ConfigError
from tssh.forwarding import (
    ForwardingConfig,
    ForwardingSettings,
    Permit,
    agent_refusal,
    effective_forwarding,
    listen_address,
    parse_match_blocks,
    parse_permits,
    stream_local_refusal,
    tcp_refusal,
)
from tssh.identity.base import Peer

ALICE = Peer("laptop", "n1", ("127.0.0.2",), user="alice@example.com")
CI = Peer("ci", "n2", ("127.0.0.6",), tags=("tag:ci",))
GROUPS = {"group:dev": ("alice@example.com",)}


def config(tmp_path: Path, text: str) -> ForwardingConfig:
    path = tmp_path / "tssh.toml"
    path.write_text('netmap = "n"\npolicy = "p"\n' + text)
    return load_config(path, {}, {}).forwarding()


def test_defaults_allow_everything() -> None:
    s = effective_forwarding(ForwardingConfig(), ALICE, "alice", False)
    assert s == ForwardingSettings()
    assert tcp_refusal(s, "local", "db", 5432) is None
    assert tcp_refusal(s, "remote", "", 0) is None
    assert stream_local_refusal(s, "local") is None
    assert agent_refusal(s) is None
    assert s.origins["allow_tcp_forwarding"] == "default"


def test_first_matching_block_wins_then_top_level(tmp_path: Path) -> None:
    c = config(tmp_path, '''
allow_tcp_forwarding = "local"
permit_open = ["127.0.0.1:5432"]

[[match]]
src = ["tag:ci"]
allow_tcp_forwarding = "no"

[[match]]
src = ["group:dev"]
users = ["alice", "bob"]
allow_tcp_forwarding = "yes"
allow_agent_forwarding = false

[[match]]
src = ["autogroup:member"]
allow_tcp_forwarding = "remote"
permit_open = ["*:*"]

[[match]]
recorded = true
allow_stream_local_forwarding = "no"
''')
    alice = effective_forwarding(c, ALICE, "alice", False, GROUPS)
    assert alice.allow_tcp_forwarding == "yes"  # block 2 before block 3
    assert alice.origins["allow_tcp_forwarding"] == "match 2"
    assert alice.allow_agent_forwarding is False
    assert alice.permit_open == (Permit("*", None),)  # block 3 sets it; block 2 does not
    assert alice.origins["permit_open"] == "match 3"
    assert alice.allow_stream_local_forwarding == "yes"  # not recorded
    assert alice.origins["allow_stream_local_forwarding"] == "default"

    as_root = effective_forwarding(c, ALICE, "root", True, GROUPS)  # users fails block 2
    assert as_root.allow_tcp_forwarding == "remote"
    assert as_root.allow_stream_local_forwarding == "no"
    assert as_root.allow_agent_forwarding is True

    ci = effective_forwarding(c, CI, "deploy", False, GROUPS)
    assert ci.allow_tcp_forwarding == "no"
    assert ci.permit_open == (Permit("127.0.0.1", 5432),)
    assert ci.origins["permit_open"] == "top level"
    assert tcp_refusal(ci, "local", "127.0.0.1", 5432) == (
        'tssh: allow_tcp_forwarding = "no" refuses local forwarding (match 1)')

    no_groups = effective_forwarding(c, ALICE, "alice", False, {})  # a compiled policy
    assert no_groups.allow_tcp_forwarding == "remote"


def test_refusal_texts_name_the_setting() -> None:
    s = ForwardingSettings(allow_tcp_forwarding="local", allow_stream_local_forwarding="remote",
                           allow_agent_forwarding=False,
                           permit_open=(Permit("127.0.0.1", 5432), Permit("db", None)),
                           permit_listen=(Permit("*", 8080),))
    assert tcp_refusal(s, "local", "127.0.0.1", 5432) is None
    assert tcp_refusal(s, "local", "DB", 1) is None
    assert tcp_refusal(s, "local", "127.0.0.1", 22) == (
        "tssh: permit_open does not include 127.0.0.1:22")
    assert tcp_refusal(s, "remote", "", 8080) == (
        'tssh: allow_tcp_forwarding = "local" refuses remote forwarding')
    assert stream_local_refusal(s, "local") == (
        'tssh: allow_stream_local_forwarding = "remote" refuses Unix socket forwarding to '
        "this node")
    assert stream_local_refusal(s, "remote") is None
    assert agent_refusal(s) == "tssh: allow_agent_forwarding = false refuses agent forwarding"
    listen = ForwardingSettings(permit_listen=(Permit("localhost", 8080),))
    assert tcp_refusal(listen, "remote", "localhost", 8080) is None
    assert tcp_refusal(listen, "remote", "localhost", 8081) == (
        "tssh: permit_listen does not include localhost:8081")


def test_permits() -> None:
    assert parse_permits(["any"]) is None
    assert parse_permits("any") is None
    assert parse_permits(["none"]) == ()
    assert parse_permits("a:1, [::1]:2,*:*, b:*") == (
        Permit("a", 1), Permit("::1", 2), Permit("*", None), Permit("b", None))
    assert Permit("::1", 2).matches("0:0:0:0:0:0:0:1", 2)
    assert str(Permit("::1", None)) == "[::1]:*"
    for bad in ("host", "h:99999", ":80", "::1:80", "[::1]80"):
        with pytest.raises(ValueError):
            parse_permits([bad])


def test_listen_address() -> None:
    narrow = ForwardingSettings()
    assert listen_address(narrow, "") == "127.0.0.1"
    assert listen_address(narrow, "0.0.0.0") == "127.0.0.1"
    assert listen_address(narrow, "::1") == "::1"
    wide = ForwardingSettings(gateway_ports=True)
    assert listen_address(wide, "") == "0.0.0.0"
    assert listen_address(wide, "*") == "0.0.0.0"
    assert listen_address(wide, "localhost") == "127.0.0.1"
    assert listen_address(wide, "127.0.0.10") == "127.0.0.10"


@pytest.mark.parametrize(("text", "message"), [
    ('[[match]]\nallow_tcp_forwarding = "no"', "block 1: needs at least one criterion"),
    ('[[match]]\nusers = ["a"]', "block 1: sets none of"),
    ('[[match]]\nusers = ["a"]\nport = 22', "block 1: port: unknown key"),
    ('[[match]]\nsrc = ["*"]\ngateway_ports = true', "block 1: src: '\\*' is not a selector"),
    ('[[match]]\nusers = []\ngateway_ports = true', "block 1: users: must be a non-empty"),
    ('[[match]]\nrecorded = "maybe"\ngateway_ports = true', "block 1: recorded: must be true"),
    ('allow_tcp_forwarding = "sometimes"', 'allow_tcp_forwarding: must be one of "yes"'),
    ('permit_open = ["x"]', "permit_open: 'x' is not host:port"),
    ('match = 3', "match: must be an array of tables"),
])
def test_bad_values(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config(tmp_path, text)


def test_environment_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "tssh.toml"
    path.write_text('netmap = "n"\npolicy = "p"\n')
    c = load_config(path, {"TSSH_PERMIT_OPEN": "a:1,b:2", "TSSH_MATCH": "ignored"},
                    {"allow_agent_forwarding": "no", "permit_listen": ["*:8080"]})
    assert c.permit_open == (Permit("a", 1), Permit("b", 2))
    assert c.allow_agent_forwarding is False
    assert c.permit_listen == (Permit("*", 8080),)
    assert c.match == ()
    assert parse_match_blocks(list(c.match)) == ()
