"""How CLI commands find the running daemon: its control socket in the state directory."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tssh.config import default_state_dir, env_var, expand_user
from tssh.errors import ConfigError
from tssh.server.control import control_socket_path


def add_state_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir", metavar="DIR", type=Path, default=None,
        help=f"the daemon's state directory (default: ${env_var('state_dir')}, else"
        " /var/lib/tssh as root, $XDG_STATE_HOME/tssh otherwise)",
    )


def control_path(args: argparse.Namespace) -> Path:
    """``--state-dir``, else ``$TSSH_STATE_DIR``, else the default state dir; + control.sock."""
    state_dir: Path | None = args.state_dir
    if state_dir is None:
        from_env = os.environ.get(env_var("state_dir"))
        state_dir = Path(from_env) if from_env else default_state_dir()
    try:
        return control_socket_path(expand_user(state_dir))
    except ValueError as e:
        raise ConfigError(f"state directory: {e}") from None
