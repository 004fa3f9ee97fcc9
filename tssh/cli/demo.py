"""`tssh demo`: a daemon and a recorder on loopback, with a generated netmap and policy.

Loopback stands in for the tailnet. The demo node is 127.0.0.1, owned by ``<you>@demo.local``;
a connection from this machine to 127.0.0.1 comes from 127.0.0.1, so it is that node reaching
itself, which the policy allows through ``autogroup:self`` (as Tailscale's default policy
does). ``ssh -p PORT $USER@127.0.0.1`` works with no keys. Every session is recorded
(``enforceRecorder``) to a recorder node at 127.0.0.3 that stores under DIR/recordings and
lets the same user read recordings back, in the web UI too (``--ui``, its URL printed).

Every local account connects from 127.0.0.1 too, so the daemon also checks (in the kernel's
socket table) that the connecting process is yours and closes anyone else's connection.
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

from recorder.settings import RecorderSettings
from tssh.config import Config
from tssh.errors import TsshError
from tssh.identity.factory import open_resolver
from tssh.logformat import configure_logging

NODE_ADDRESS = "127.0.0.1"
RECORDER_ADDRESS = "127.0.0.3"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo", help="run a demo daemon and recorder on loopback",
        description="Start an SSH daemon on 127.0.0.1 and a recorder on 127.0.0.3 with a "
        "generated netmap and policy that let you in as yourself, every session recorded.",
    )
    p.add_argument("--dir", type=Path, default=Path(".tssh-demo"),
                   help="where the demo's files live (default ./.tssh-demo)")
    p.add_argument("--ssh-port", type=int, default=2222, help="SSH port (default 2222)")
    p.add_argument("--recorder-port", type=int, default=8080,
                   help="recorder port (default 8080)")
    p.set_defaults(func=run)


def demo_files(directory: Path, user: str) -> tuple[Path, Path]:
    """Write the demo netmap and policy (overwritten on each start)."""
    directory.mkdir(parents=True, exist_ok=True)
    login = f"{user}@demo.local"
    netmap = {
        "self": "demo",
        "nodes": [
            {"name": "demo", "id": "nDEMO1", "addresses": [NODE_ADDRESS], "user": login},
            {"name": "demo-recorder", "id": "nDEMOREC1", "addresses": [RECORDER_ADDRESS],
             "tags": ["tag:recorder"]},
        ],
    }
    users = ["root"] if user == "root" else ["autogroup:nonroot"]
    policy = {
        "tagOwners": {"tag:recorder": [login]},
        "ssh": [{
            "action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self"],
            "users": users, "recorder": ["tag:recorder"], "enforceRecorder": True,
        }],
    }
    netmap_path = directory / "netmap.hujson"
    netmap_path.write_text("// tssh demo netmap (generated)\n" + json.dumps(netmap, indent=2))
    policy_path = directory / "policy.hujson"
    policy_path.write_text("// tssh demo policy (generated)\n" + json.dumps(policy, indent=2))
    return netmap_path, policy_path


async def _serve(config: Config, recorder: RecorderSettings, user: str) -> int:
    from recorder.app import serve_recorder
    from tssh.server.control import ControlServer, control_socket_path
    from tssh.server.daemon import Daemon

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    recorder_task = asyncio.create_task(serve_recorder(recorder, shutdown=stop))
    # Every local process connects from the node's own address: serve only our own.
    daemon = Daemon(config, open_resolver(config), local_owner=os.geteuid())
    control = ControlServer(control_socket_path(config.state_dir), daemon)
    try:
        await _wait_listening(RECORDER_ADDRESS, config.recorder_port, recorder_task)
        await daemon.start()
        await control.start()
        url = f"http://{RECORDER_ADDRESS}:{config.recorder_port}"
        print(
            f"tssh demo: SSH on {NODE_ADDRESS} port {config.port}, recorder at {url}; "
            f"files in {config.state_dir.parent}\n"
            f"  connect:     ssh -p {config.port} {user}@{NODE_ADDRESS}\n"
            f"  web UI:      {url}/\n"
            f"  recordings:  tssh recordings list --recorder {url}\n"
            f"  status:      tssh status --state-dir {config.state_dir}\n"
            f"  API:         {url}/api/v1/recordings\n"
            "  Ctrl-C stops the demo",
            flush=True,
        )
        await stop.wait()
    finally:
        stop.set()
        await control.close()
        await daemon.close()
        await recorder_task
    return 0


async def _wait_listening(host: str, port: int, task: asyncio.Task[None]) -> None:
    """Waits (at most 10 s) until the recorder accepts connections, or raises its error."""
    for _ in range(200):
        if task.done():
            task.result()
            raise TsshError("the demo recorder stopped before it started listening")
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise TsshError(f"the demo recorder did not start listening on {host}:{port}")


def run(args: argparse.Namespace) -> int:
    user = getpass.getuser()
    directory: Path = args.dir.resolve()
    netmap, policy = demo_files(directory, user)
    config = Config(
        identity="netmap", netmap=netmap, policy=policy, port=args.ssh_port,
        state_dir=directory / "state", recorder_port=args.recorder_port, log_format="text",
    )
    recorder = RecorderSettings(
        dst=str(directory / "recordings"),
        listen=f"{RECORDER_ADDRESS}:{args.recorder_port}",
        state_dir=directory / "recorder-state",
        identity=Config(identity="netmap", netmap=netmap, policy=policy,
                        state_dir=directory / "recorder-state"),
        viewers=(f"{user}@demo.local",),
        ui=True,
        local_owner=os.geteuid(),
    )
    configure_logging("text", os.environ.get("TSSH_LOG_LEVEL", "warning"))
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_serve(config, recorder, user))
    return 130
