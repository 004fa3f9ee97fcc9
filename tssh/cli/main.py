"""`tssh` entry point: builds the argument parser from each command module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from tssh import __version__
from tssh.cli import audit as audit_command
from tssh.cli import check as check_command
from tssh.cli import daemon as daemon_command
from tssh.cli import demo as demo_command
from tssh.cli import policy as policy_command
from tssh.cli import recordings as recordings_command
from tssh.cli import set as set_command
from tssh.cli import ssh as ssh_command
from tssh.cli import status as status_command
from tssh.errors import TsshError

# Each command module exposes ``register(subparsers)``; its subparsers set ``func``.
COMMAND_MODULES: list[Any] = [
    audit_command,
    check_command,
    daemon_command,
    demo_command,
    policy_command,
    recordings_command,
    ssh_command,
    set_command,
    status_command,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tssh", description="Keyless SSH for tailnets, with session recording."
    )
    parser.add_argument("--version", action="version", version=f"tssh {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return func(args)
    except TsshError as e:
        print(e.render(), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
