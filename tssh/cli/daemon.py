"""`tssh daemon`: run the SSH daemon in the foreground, or only check its configuration."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from typing import Any

from tssh.cli.config_flags import add_config_arguments, config_overrides
from tssh.config import Config, load_config
from tssh.errors import TsshError
from tssh.forwarding import FORWARDING_KEYS, effective_forwarding
from tssh.identity.base import Peer, Resolver
from tssh.identity.factory import open_resolver
from tssh.logformat import configure_logging
from tssh.policy import load_policy
from tssh.policy.decider import FileDecider
from tssh.policy.model import Policy


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "daemon", help="run the SSH daemon (foreground)",
        description="Serve SSH on this node's tailnet addresses; logins are decided by the "
        "tailnet policy, not by keys. Settings: TOML file, then TSSH_* variables, then flags.",
    )
    add_config_arguments(p)
    p.add_argument("--check-config", action="store_true",
                   help="validate the configuration, policy and identity source, then exit")
    p.add_argument("--explain", nargs=2, metavar=("NODE", "USER"),
                   help="with --check-config: the forwarding settings a login from NODE (a "
                   "node name or address) as USER would get, and where each comes from")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, os.environ, config_overrides(args))


async def _check(config: Config, explain: tuple[str, str] | None = None) -> str:
    policy = load_policy(config.policy) if config.policy is not None else None
    resolver = open_resolver(config)
    try:
        node = await resolver.self_node()
        lines = [f"ok: node {node.name}, listening on "
                 f"{', '.join(config.listen or node.addresses) or '(none)'} port {config.port}"]
        if explain is not None:
            lines += await _explain(config, policy, resolver, node, *explain)
    finally:
        await resolver.close()
    return "\n".join(lines)


async def _explain(config: Config, policy: Policy | None, resolver: Resolver, node: Peer,
                   who: str, user: str) -> list[str]:
    """The effective forwarding settings for a login from ``who`` as ``user``."""
    peer = next((p for p in await resolver.peers() if p.name == who), None)
    if peer is None:
        peer = await resolver.whois(who)
    if peer is None:
        raise TsshError(f"--explain: no node {who!r} is known to the identity backend")
    decision = FileDecider(policy).decide(peer, who, node, user) if policy else None
    local_user = (decision.local_user if decision else None) or user
    recorded = bool(decision and decision.recorders)
    groups = policy.groups if policy else {}
    settings = effective_forwarding(config.forwarding(), peer, local_user, recorded, groups)
    owner = peer.user or ",".join(peer.tags) or "?"
    if decision is None:
        verdict = "policy from the tailnet (not judged here)"
    elif decision.action in ("accept", "check"):
        verdict = f"{decision.action} by rule {decision.rule}"
    else:
        verdict = f"reject: {decision.message}"
    lines = [f"forwarding for {peer.name} ({owner}) as {local_user}: {verdict}, "
             f"{'recorded' if recorded else 'not recorded'}"]
    values = settings.to_json()
    origins = settings.origins
    for key in FORWARDING_KEYS:
        lines.append(f"  {key} = {json.dumps(values[key])}  ({origins.get(key, 'default')})")
    return lines


async def _serve(config: Config) -> int:
    from tssh.server.control import ControlServer, control_socket_path
    from tssh.server.daemon import Daemon
    from tssh.server.supervisor import Supervisor

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    resolver = open_resolver(config)
    # docs/daemon.md, "Worker processes"
    daemon = Supervisor(config, resolver) if config.workers > 1 else Daemon(config, resolver)
    control = ControlServer(control_socket_path(config.state_dir), daemon)
    try:
        await daemon.start()
        await control.start()
        await stop.wait()
    finally:
        await control.close()
        await daemon.close()
    return 0


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.check_config or args.explain:
        explain = (args.explain[0], args.explain[1]) if args.explain else None
        print(asyncio.run(_check(config, explain)))
        return 0
    configure_logging(config.log_format, config.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_serve(config))
    print("tssh: interrupted", file=sys.stderr)
    return 130
