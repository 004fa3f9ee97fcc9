"""Host keys: generated once (ed25519 + RSA, 0600) and reused; configured files win."""

from __future__ import annotations

import stat
from pathlib import Path

import asyncssh
import pytest

from tssh.errors import ConfigError
from tssh.server import hostkeys


@pytest.fixture(autouse=True)
def no_system_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(hostkeys, "SYSTEM_DIR", tmp_path / "no-etc-ssh")


def test_generated_once_private_and_reused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = hostkeys.load_host_keys((), state)
    assert [k.algorithm for k in first] == [b"ssh-ed25519", b"ssh-rsa"]
    for name in ("ssh_host_ed25519_key", "ssh_host_rsa_key"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600
    second = hostkeys.load_host_keys((), state)
    assert [k.public_data for k in second] == [k.public_data for k in first]


def test_system_keys_reused_by_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "etc-ssh"
    system.mkdir()
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(str(system / "ssh_host_ed25519_key"))
    monkeypatch.setattr(hostkeys, "SYSTEM_DIR", system)
    monkeypatch.setattr(hostkeys.os, "geteuid", lambda: 0)
    keys = hostkeys.load_host_keys((), tmp_path / "state")
    assert [k.public_data for k in keys] == [key.public_data]
    assert not (tmp_path / "state").exists()


def test_configured_key_files(tmp_path: Path) -> None:
    path = tmp_path / "mykey"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(path))
    assert len(hostkeys.load_host_keys((path,), tmp_path / "state")) == 1
    with pytest.raises(ConfigError, match="cannot read host key"):
        hostkeys.load_host_keys((tmp_path / "missing",), tmp_path / "state")


def test_host_keypairs_offer_only_the_allowed_signatures() -> None:
    rsa = asyncssh.generate_private_key("ssh-rsa", key_size=2048)
    ed = asyncssh.generate_private_key("ssh-ed25519")
    assert b"ssh-rsa" in asyncssh.load_keypairs([rsa])[0].host_key_algorithms  # upstream
    allowed = ("ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256")
    pairs = hostkeys.host_keypairs([ed, rsa], allowed)
    assert [p.host_key_algorithms for p in pairs] == [
        [b"ssh-ed25519"], [b"rsa-sha2-512", b"rsa-sha2-256"]]
    ecdsa = asyncssh.generate_private_key("ecdsa-sha2-nistp256")
    with pytest.raises(ConfigError, match="host key type ecdsa-sha2-nistp256 is not allowed"):
        hostkeys.host_keypairs([ecdsa], allowed)
