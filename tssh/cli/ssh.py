"""`tssh ssh [user@]machine [ssh args]`: the system ssh, aimed by the mesh's own identity data.

The machine name is resolved through the identity backend (node name, its first label, or
an address), and the host keys the mesh publishes for that node become a one-off
known_hosts file, so the first connection is verified instead of trusted blindly.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tssh.cli.config_flags import add_config_arguments, config_overrides
from tssh.config import Config, load_partial_config
from tssh.errors import IdentityError, TsshError
from tssh.identity.base import Peer
from tssh.identity.factory import open_resolver


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "ssh", help="ssh to a tailnet node by name, with its host keys from the mesh",
        description="Run the system ssh against a node resolved through the identity "
        "backend, checking its host key against the keys the mesh publishes.",
    )
    add_config_arguments(p, IDENTITY_KEYS)
    p.add_argument("--port", type=int, help="SSH port on the node (ssh's default otherwise)")
    p.add_argument("destination", metavar="[user@]machine")
    p.add_argument("ssh_args", nargs=argparse.REMAINDER, help="passed to ssh")
    p.set_defaults(func=run)


# The settings that choose and reach the identity backend; nothing else is needed here.
IDENTITY_KEYS = ("identity", "netmap", "tailscale_socket", "wireguard_interface")


def identity_config(args: argparse.Namespace, env: Mapping[str, str]) -> Config:
    """The identity settings as the daemon reads them (TOML file, then TSSH_* variables,
    then flags), without the daemon's requirements (no policy is needed here)."""
    return load_partial_config(args.config, env, config_overrides(args), IDENTITY_KEYS)


def find_node(peers: list[Peer], machine: str) -> Peer:
    """The node called ``machine``: exact name, first DNS label, or one of its addresses."""
    for match in (
        lambda p: p.name == machine,
        lambda p: p.name.split(".")[0] == machine,
        lambda p: machine in p.addresses,
    ):
        found = [p for p in peers if match(p)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(sorted(p.name for p in found))
            raise IdentityError(f"{machine!r} is ambiguous: {names}")
    raise IdentityError(f"no node called {machine!r} in the tailnet")


def passthrough_args(ssh_args: list[str]) -> list[str]:
    """What goes to ssh: everything after the destination, less one leading ``--`` that
    separates tssh's options from ssh's (a later ``--`` belongs to the remote command)."""
    return ssh_args[1:] if ssh_args[:1] == ["--"] else list(ssh_args)


def known_hosts_lines(node: Peer) -> list[str]:
    """known_hosts entries for every address and name of ``node``."""
    hosts = ",".join([*node.addresses, node.name])
    return [f"{hosts} {key.strip()}" for key in node.host_keys if key.strip()]


def ssh_argv(node: Peer, user: str | None, port: int | None, known_hosts: Path | None,
             extra: list[str]) -> list[str]:
    argv = ["ssh"]
    if known_hosts is not None:
        argv += ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
                 "-o", f"HostKeyAlias={node.addresses[0]}"]
    if port is not None:
        argv += ["-p", str(port)]
    target = node.addresses[0]
    argv.append(f"{user}@{target}" if user else target)
    return argv + extra


async def _peers(config: Config) -> list[Peer]:
    resolver = open_resolver(config)
    try:
        return await resolver.peers()
    finally:
        await resolver.close()


def run(args: argparse.Namespace) -> int:
    if shutil.which("ssh") is None:
        raise TsshError("the ssh client is not installed")
    config = identity_config(args, os.environ)
    user, _, machine = args.destination.rpartition("@")
    node = find_node(asyncio.run(_peers(config)), machine)
    if not node.addresses:
        raise IdentityError(f"node {node.name!r} has no addresses")
    lines = known_hosts_lines(node)
    extra = passthrough_args(args.ssh_args)
    with tempfile.TemporaryDirectory(prefix="tssh-ssh-") as tmp:
        known_hosts: Path | None = None
        if lines:
            known_hosts = Path(tmp) / "known_hosts"
            known_hosts.write_text("\n".join(lines) + "\n")
        argv = ssh_argv(node, user or None, args.port, known_hosts, extra)
        return subprocess.run(argv, check=False).returncode
