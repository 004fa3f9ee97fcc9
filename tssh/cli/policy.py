"""``tssh policy``: check a policy file and ask it what it decides for one connection."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from tssh.errors import NetmapError
from tssh.identity.base import Peer
from tssh.identity.netmap import Netmap, read_netmap
from tssh.policy import evaluate, load_policy
from tssh.policy.sshtests import run_ssh_tests


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


def find_node(netmap: Netmap, key: str) -> Peer | None:
    """The node named, identified or addressed by ``key`` (a short name matches an FQDN)."""
    found = netmap.lookup(key)
    if found is not None:
        return found
    key = key.strip()
    return next((p for p in netmap.peers if key in (p.id, p.name.split(".")[0])), None)


def run_eval(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy)
    netmap = read_netmap(Path(args.netmap), require_self=False)
    dst_key = args.dst or netmap.self_name
    if dst_key is None:
        raise NetmapError(f'{args.netmap}: no --dst given and the netmap has no "self"')
    dst = find_node(netmap, dst_key)
    if dst is None:
        raise NetmapError(f"{args.netmap}: no node {dst_key!r}")
    src = find_node(netmap, args.src)
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
    nodes = read_netmap(Path(args.netmap), require_self=False).peers if args.netmap else None
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
