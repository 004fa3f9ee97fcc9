"""`tssh ssh` hands ssh everything after the destination, the remote command's `--` included."""

from __future__ import annotations

import pytest

from tssh.cli.main import build_parser
from tssh.cli.ssh import passthrough_args


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["ssh", "server"], []),
        (["ssh", "server", "uptime"], ["uptime"]),
        (["ssh", "server", "--", "-t", "top"], ["-t", "top"]),
        (["ssh", "server", "--", "git", "log", "--", "README.md"],
         ["git", "log", "--", "README.md"]),
        (["ssh", "server", "grep", "-e", "x", "--", "f"], ["grep", "-e", "x", "--", "f"]),
    ],
)
def test_passthrough_keeps_the_remote_commands_double_dash(
    argv: list[str], expected: list[str]
) -> None:
    args = build_parser().parse_args(argv)
    assert passthrough_args(args.ssh_args) == expected
