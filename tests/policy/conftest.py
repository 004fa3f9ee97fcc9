"""A small tailnet shared by the policy tests.

It mirrors the topology Headscale's compatibility captures use (juanfont/headscale,
hscontrol/policy/v2/testdata/ssh_results/*.hujson): three users on two domains, each with one
device, and tagged servers.
"""

from __future__ import annotations

import json
from typing import Any

from tssh.identity.base import Peer
from tssh.policy import Policy, parse_policy

NODES: dict[str, Peer] = {
    p.name: p
    for p in (
        Peer("bulbasaur", "nBUL", ("100.65.91.20",), user="odin@example.com"),
        Peer("ivysaur", "nIVY", ("100.101.179.105",), user="thor@example.org"),
        Peer("venusaur", "nVEN", ("100.91.206.22",), user="freya@example.com"),
        Peer("beedrill", "nBEE", ("100.124.204.32",), tags=("tag:server",)),
        Peer("kakuna", "nKAK", ("100.65.108.113",), tags=("tag:prod",)),
        Peer("blastoise", "nBLA", ("100.108.102.101",), tags=("tag:exit", "tag:router")),
        Peer("weedle", "nWEE", ("100.108.24.11",), tags=("tag:client",)),
    )
}

GROUPS = {
    "group:admins": ["odin@example.com"],
    "group:developers": ["thor@example.org", "odin@example.com"],
    "group:empty": [],
}
TAG_OWNERS = {"tag:prod": ["odin@example.com"], "tag:server": ["odin@example.com"]}


def policy_text(ssh: Any, **sections: Any) -> str:
    doc: dict[str, Any] = {"groups": GROUPS, "tagOwners": TAG_OWNERS}
    doc.update(sections)
    if ssh is not ...:
        doc["ssh"] = ssh
    return json.dumps(doc, indent=1)


def make_policy(ssh: Any, **sections: Any) -> Policy:
    return parse_policy(policy_text(ssh, **sections), filename="test.hujson")
