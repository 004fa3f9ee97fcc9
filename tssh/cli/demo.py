"""`tssh demo`: a daemon on loopback with a generated netmap and policy, for a first look.

Loopback stands in for the tailnet. The demo server node is 127.0.0.2; a connection to it
from this machine comes from 127.0.0.1 (Linux picks that source for the whole 127/8), which
the demo netmap calls ``demo-laptop``, a node owned by ``<you>@demo.local``. The policy lets
that user in as themself, so ``ssh -p PORT $USER@127.0.0.2`` works with no keys. Every local
account shares that source address, so the daemon also checks (in the kernel's socket table)
that the connecting process is yours and closes anyone else's connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import signal
from pathlib import Path
from typing import Any

from tssh.config import Config
from tssh.identity import open_resolver
from tssh.logformat import configure_logging

SERVER_ADDRESS = "127.0.0.2"
LAPTOP_ADDRESS = "127.0.0.1"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo", help="run a demo daemon on loopback",
        description="Start an SSH daemon on 127.0.0.2 with a generated netmap and policy "
        "that let you in as yourself.",
    )
    p.add_argument("--dir", type=Path, default=Path(".tssh-demo"),
                   help="where the demo's files live (default ./.tssh-demo)")
    p.add_argument("--ssh-port", type=int, default=2222, help="SSH port (default 2222)")
    p.add_argument("--recorder-port", type=int, default=8080,
                   help="recorder port (default 8080; recording is not available yet)")
    p.set_defaults(func=run)


def demo_files(directory: Path, user: str) -> tuple[Path, Path]:
    """Write the demo netmap and policy (overwritten on each start)."""
    directory.mkdir(parents=True, exist_ok=True)
    login = f"{user}@demo.local"
    netmap = {
        "self": "demo-server",
        "nodes": [
            {"name": "demo-server", "id": "nDEMO1", "addresses": [SERVER_ADDRESS],
             "tags": ["tag:demo"]},
            {"name": "demo-laptop", "id": "nDEMO2", "addresses": [LAPTOP_ADDRESS],
             "user": login},
        ],
    }
    users = ["root"] if user == "root" else ["autogroup:nonroot"]
    policy = {
        "tagOwners": {"tag:demo": [login]},
        "ssh": [{"action": "accept", "src": [login], "dst": ["tag:demo"], "users": users}],
    }
    netmap_path = directory / "netmap.hujson"
    netmap_path.write_text("// tssh demo netmap (generated)\n" + json.dumps(netmap, indent=2))
    policy_path = directory / "policy.hujson"
    policy_path.write_text("// tssh demo policy (generated)\n" + json.dumps(policy, indent=2))
    return netmap_path, policy_path


async def _serve(config: Config, user: str) -> int:
    from tssh.server.daemon import Daemon

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    # Every local process connects from the laptop's address: serve only our own.
    daemon = Daemon(config, open_resolver(config), local_owner=os.geteuid())
    try:
        await daemon.start()
        print(
            f"tssh demo: SSH on {SERVER_ADDRESS} port {config.port}; files in "
            f"{config.state_dir.parent}\n"
            f"  connect:  ssh -p {config.port} {user}@{SERVER_ADDRESS}\n"
            "  session recording is not available yet in this build\n"
            "  Ctrl-C stops the demo",
            flush=True,
        )
        await stop.wait()
    finally:
        await daemon.close()
    return 0


def run(args: argparse.Namespace) -> int:
    user = getpass.getuser()
    directory: Path = args.dir.resolve()
    netmap, policy = demo_files(directory, user)
    config = Config(
        identity="netmap", netmap=netmap, policy=policy, port=args.ssh_port,
        state_dir=directory / "state", recorder_port=args.recorder_port, log_format="text",
    )
    configure_logging("text", os.environ.get("TSSH_LOG_LEVEL", "warning"))
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_serve(config, user))
    return 130
