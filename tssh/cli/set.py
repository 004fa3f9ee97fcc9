"""``tssh set --ssh[=BOOL]``: switch the running daemon's SSH server on or off (docs/daemon.md)."""

from __future__ import annotations

import argparse
from typing import Any

from tssh.cli.daemon_socket import add_state_dir_argument, control_path
from tssh.server.control import set_ssh

_TRUE = ("true", "t", "1", "yes", "on")
_FALSE = ("false", "f", "0", "no", "off")


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "set", help="change settings of the running daemon",
        description="Change settings of the running tssh daemon. Changes take effect at once "
        "and persist across restarts.",
    )
    parser.add_argument(
        "--ssh", nargs="?", const=True, default=None, type=parse_bool, metavar="BOOL",
        help="run the SSH server (--ssh) or stop it and end live sessions (--ssh=false)",
    )
    add_state_dir_argument(parser)
    parser.set_defaults(func=run, parser=parser)


def run(args: argparse.Namespace) -> int:
    if args.ssh is None:
        args.parser.error("nothing to set: give --ssh or --ssh=false")
    set_ssh(control_path(args), args.ssh)
    return 0
