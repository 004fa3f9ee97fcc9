"""How CLI commands find the running daemon: its control socket in the state directory.

The state directory is found as the daemon finds it (``--state-dir``, ``$TSSH_STATE_DIR``,
the ``state_dir`` of ``--config``/``$TSSH_CONFIG``, else the default), so that ``tssh
status`` reaches a daemon configured only in its TOML file.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tssh.cli.config_flags import add_config_arguments, config_overrides
from tssh.config import load_partial_config
from tssh.errors import ConfigError
from tssh.server.control import control_socket_path


def add_state_dir_argument(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and ``--state-dir DIR``, read as the daemon reads them."""
    add_config_arguments(parser, ["state_dir"])


def control_path(args: argparse.Namespace) -> Path:
    """The daemon's control socket: its state directory + control.sock."""
    config = load_partial_config(args.config, os.environ, config_overrides(args), ["state_dir"])
    try:
        return control_socket_path(config.state_dir)
    except ValueError as e:
        raise ConfigError(f"state directory: {e}") from None
