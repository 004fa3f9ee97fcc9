"""Daemon flags end up in load_config, with its messages for bad values."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tssh.cli.config_flags import add_config_arguments, config_overrides
from tssh.config import load_config
from tssh.errors import ConfigError


def parse(*argv: str, keys: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="t")
    add_config_arguments(parser, keys)
    return parser.parse_args(argv)


def test_flags_override_file_and_env(tmp_path: Path) -> None:
    config_file = tmp_path / "tssh.toml"
    config_file.write_text('netmap = "m.hujson"\npolicy = "p.hujson"\nport = 22\n')
    args = parse("--config", str(config_file), "--port", "2222", "--listen", "127.0.0.10",
                 "--listen", "127.0.0.11", "--state-dir", str(tmp_path / "state"))
    config = load_config(args.config, {"TSSH_PORT": "2200"}, config_overrides(args))
    assert config.port == 2222
    assert config.listen == ("127.0.0.10", "127.0.0.11")
    assert config.state_dir == tmp_path / "state"
    assert config.netmap == tmp_path / "m.hujson"


def test_bad_flag_value_is_reported_by_load_config() -> None:
    args = parse("--netmap", "m", "--policy", "p", "--recorder-port", "http")
    with pytest.raises(ConfigError, match=r"^--recorder-port: must be a port number"):
        load_config(args.config, {}, config_overrides(args))


def test_subset_of_flags() -> None:
    args = parse("--policy", "p", keys=["netmap", "policy"])
    assert config_overrides(args) == {"policy": "p"}
    with pytest.raises(SystemExit):
        parse("--port", "22", keys=["netmap", "policy"])
    with pytest.raises(ValueError, match="no config key 'prot'"):
        parse(keys=["prot"])
