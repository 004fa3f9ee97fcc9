"""``tssh policy``: check a policy file and ask it what it decides for one connection."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
from pathlib import Path
from typing import Any

from tssh.errors import PolicyError, TsshError
from tssh.identity.base import Peer
from tssh.policy import evaluate, load_policy
from tssh.policy.hujson import loads
from tssh.policy.sshtests import run_ssh_tests

MAX_NETMAP_BYTES = 8 * 1024 * 1024


class NetmapError(TsshError):
    """The netmap file given to ``tssh policy`` cannot be used."""

    exit_code = 2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "policy", help="check a policy file, or evaluate it for one connection",
        description="Validate a Tailscale-format policy file and run its sshTests, or show "
                    "what it decides for one connection.")
    sub = parser.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda _args: _usage(parser))

    check = sub.add_parser(
        "check", help="validate a policy file and run its sshTests",
        description="Validate FILE and run its sshTests. Prints each failure; exits 1 if any "
                    "test fails, 2 if the file is invalid.")
    check.add_argument("file", metavar="FILE", help="policy file (HuJSON)")
    check.add_argument("--netmap", metavar="FILE",
                       help="netmap file; lets tests name nodes, addresses and host aliases "
                            "(without it, each user or tag named stands for one node)")
    check.set_defaults(func=run_check)

    ev = sub.add_parser(
        "eval", help="show what the policy decides for one connection",
        description="Evaluate the policy for one SSH connection: from --src to --dst as "
                    "--user. Exits 0 whatever the decision; 2 if the policy or netmap is "
                    "invalid.")
    ev.add_argument("--policy", required=True, metavar="FILE", help="policy file (HuJSON)")
    ev.add_argument("--netmap", required=True, metavar="FILE", help="netmap file (HuJSON)")
    ev.add_argument("--src", required=True, metavar="NODE_OR_IP",
                    help="connecting node: its name, id or one of its addresses")
    ev.add_argument("--dst", metavar="NODE",
                    help="node connected to (default: the netmap's self)")
    ev.add_argument("--user", required=True, metavar="LOGIN", help="requested login name")
    ev.add_argument("--json", action="store_true", help="print the decision as one JSON object")
    ev.set_defaults(func=run_eval)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def load_netmap(path: str) -> tuple[str | None, list[Peer]]:
    """The ``self`` name and nodes of a netmap file (DESIGN §2)."""
    try:
        with Path(path).open("rb") as f:
            data = f.read(MAX_NETMAP_BYTES + 1)
    except OSError as e:
        raise NetmapError(f"{path}: cannot read netmap file: {e.strerror or e}") from None
    if len(data) > MAX_NETMAP_BYTES:
        raise NetmapError(f"{path}: netmap file is too large")
    try:
        doc = loads(data, filename=path)
    except PolicyError as e:
        raise NetmapError(str(e)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list):
        raise NetmapError(f'{path}: a netmap is an object with a "nodes" list')
    self_name = doc.get("self")
    if self_name is not None and not isinstance(self_name, str):
        raise NetmapError(f'{path}: "self" must be a node name')
    peers: list[Peer] = []
    for i, node in enumerate(doc["nodes"]):
        peers.append(_peer(path, i, node))
    return self_name, peers


def _peer(path: str, i: int, node: Any) -> Peer:
    where = f"{path}: nodes[{i}]"
    if not isinstance(node, dict):
        raise NetmapError(f"{where}: a node must be an object")
    name, node_id = node.get("name"), node.get("id", node.get("name"))
    if not isinstance(name, str) or not name or not isinstance(node_id, str):
        raise NetmapError(f'{where}: "name" and "id" must be strings')
    addresses = node.get("addresses", [])
    tags = node.get("tags", [])
    user = node.get("user")
    if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
        raise NetmapError(f'{where}: "addresses" must be a list of strings')
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise NetmapError(f'{where}: "tags" must be a list of strings')
    if user is not None and not isinstance(user, str):
        raise NetmapError(f'{where}: "user" must be a login string')
    if user is None and not tags:
        raise NetmapError(f'{where}: a node needs a "user" or "tags"')
    return Peer(name=name, id=node_id, addresses=tuple(addresses), user=user,
                tags=tuple(tags))


def find_node(nodes: list[Peer], key: str) -> Peer | None:
    """The node named, identified or addressed by ``key``."""
    try:
        ip = ipaddress.ip_address(key)
    except ValueError:
        ip = None
    for node in nodes:
        if ip is not None:
            for a in node.addresses:
                try:
                    if ipaddress.ip_address(a.split("/")[0]) == ip:
                        return node
                except ValueError:
                    continue
        elif key in (node.name, node.id) or node.name.split(".")[0] == key:
            return node
    return None


def run_eval(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy)
    self_name, nodes = load_netmap(args.netmap)
    dst_key = args.dst or self_name
    if dst_key is None:
        raise NetmapError(f'{args.netmap}: no --dst given and the netmap has no "self"')
    dst = find_node(nodes, dst_key)
    if dst is None:
        raise NetmapError(f"{args.netmap}: no node {dst_key!r}")
    src = find_node(nodes, args.src)
    decision = evaluate(policy, src, dst, args.user)
    if args.json:
        print(json.dumps(decision.to_json()))
        return 0
    src_label = src.name if src else f"{args.src} (unknown)"
    print(f"{src_label} -> {dst.name} as {args.user!r}: {decision.action}")
    if decision.action != "reject":
        print(f"  rule: ssh[{decision.rule}]  local user: {decision.local_user}")
        if decision.check_period:
            print(f"  check period: {decision.check_period}")
        if decision.recorders:
            enforced = " (enforced)" if decision.enforce_recorder else ""
            print(f"  recorders: {', '.join(decision.recorders)}{enforced}")
        if decision.accept_env:
            print(f"  acceptEnv: {', '.join(decision.accept_env)}")
    else:
        print(f"  {decision.message}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    policy = load_policy(args.file)
    nodes = load_netmap(args.netmap)[1] if args.netmap else None
    failures = run_ssh_tests(policy, nodes)
    name = os.fspath(args.file)
    for failure in failures:
        print(f"{name}: {failure}")
    if failures:
        print(f"{name}: {len(failures)} sshTests assertion(s) failed")
        return 1
    print(f"{name}: valid; {len(policy.ssh)} ssh rule(s), {len(policy.ssh_tests)} sshTests "
          "passed")
    return 0
