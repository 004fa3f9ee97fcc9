"""`tssh daemon`: run the SSH daemon in the foreground, or only check its configuration."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

from tssh.cli.config_flags import add_config_arguments, config_overrides
from tssh.config import Config, load_config
from tssh.identity.factory import open_resolver
from tssh.logformat import configure_logging
from tssh.policy import load_policy


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "daemon", help="run the SSH daemon (foreground)",
        description="Serve SSH on this node's tailnet addresses; logins are decided by the "
        "tailnet policy, not by keys. Settings: TOML file, then TSSH_* variables, then flags.",
    )
    add_config_arguments(p)
    p.add_argument("--check-config", action="store_true",
                   help="validate the configuration, policy and identity source, then exit")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, os.environ, config_overrides(args))


async def _check(config: Config) -> str:
    if config.policy is not None:
        load_policy(config.policy)
    resolver = open_resolver(config)
    try:
        node = await resolver.self_node()
    finally:
        await resolver.close()
    addresses = ", ".join(config.listen or node.addresses) or "(none)"
    return f"ok: node {node.name}, listening on {addresses} port {config.port}"


async def _serve(config: Config) -> int:
    from tssh.server.control import ControlServer, control_socket_path
    from tssh.server.daemon import Daemon

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    daemon = Daemon(config, open_resolver(config))
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
    if args.check_config:
        print(asyncio.run(_check(config)))
        return 0
    configure_logging(config.log_format, config.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_serve(config))
    print("tssh: interrupted", file=sys.stderr)
    return 130
