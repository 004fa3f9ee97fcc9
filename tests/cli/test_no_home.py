"""A user with no home directory (no $HOME, no passwd entry: a container's arbitrary uid).

Commands that need no state directory must work; those that do must say how to name one,
in one line, never with a traceback.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from tssh.cli.main import main
from tssh.config import default_state_dir, load_config
from tssh.errors import ConfigError

UNMAPPED_UID = 54321


@pytest.fixture
def no_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process look homeless (after pytest made tmp_path, which needs the uid)."""
    def no_entry(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(os, "geteuid", lambda: UNMAPPED_UID)
    monkeypatch.setattr(os, "getuid", lambda: UNMAPPED_UID)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    for name in ("HOME", "XDG_STATE_HOME", "TSSH_STATE_DIR", "TSSH_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def test_commands_without_a_state_dir_still_run(tmp_path: Path, no_home: None,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "p.hujson"
    policy.write_text('{"ssh": []}')
    assert main(["policy", "check", str(policy)]) == 0
    with pytest.raises(SystemExit) as info:
        main(["status", "--help"])
    assert info.value.code == 0
    assert "--state-dir" in capsys.readouterr().out


def test_status_without_a_state_dir_says_how_to_name_one(
        no_home: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status"]) != 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "no home directory" in err and "TSSH_STATE_DIR" in err and "--state-dir" in err


def test_config_without_a_state_dir(tmp_path: Path, no_home: None) -> None:
    with pytest.raises(ConfigError, match="TSSH_STATE_DIR"):
        default_state_dir()
    env = {"TSSH_NETMAP": "n", "TSSH_POLICY": "p"}
    with pytest.raises(ConfigError, match="no home directory"):
        load_config(None, env, {})
    with pytest.raises(ConfigError, match=r"TSSH_NETMAP: cannot expand '~/n'"):
        load_config(None, {**env, "TSSH_NETMAP": "~/n"}, {"state_dir": str(tmp_path)})
    config = load_config(None, env, {"state_dir": str(tmp_path)})
    assert config.state_dir == tmp_path
