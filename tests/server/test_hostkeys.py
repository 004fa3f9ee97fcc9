"""Host keys: generated once (ed25519 + RSA, 0600) and reused; configured files win."""

from __future__ import annotations

import stat
import threading
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
    (system / "ssh_host_ed25519_key").chmod(0o600)
    monkeypatch.setattr(hostkeys, "SYSTEM_DIR", system)
    monkeypatch.setattr(hostkeys.os, "geteuid", lambda: 0)
    keys = hostkeys.load_host_keys((), tmp_path / "state")
    assert [k.public_data for k in keys] == [key.public_data]
    assert not (tmp_path / "state").exists()


def test_configured_key_files(tmp_path: Path) -> None:
    path = tmp_path / "mykey"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(path))
    path.chmod(0o600)
    assert len(hostkeys.load_host_keys((path,), tmp_path / "state")) == 1
    with pytest.raises(ConfigError, match="cannot read host key"):
        hostkeys.load_host_keys((tmp_path / "missing",), tmp_path / "state")


def test_leftover_readable_temp_file_does_not_leak_the_key(tmp_path: Path) -> None:
    """A temp file from an earlier crash (any mode) must not become the key file."""
    state = tmp_path / "state"
    state.mkdir()
    for name in ("ssh_host_ed25519_key", "ssh_host_rsa_key"):
        leftover = state / f"{name}.tmp"
        leftover.write_text("")
        leftover.chmod(0o644)
    hostkeys.load_host_keys((), state)
    for name in ("ssh_host_ed25519_key", "ssh_host_rsa_key"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600


def test_racing_generators_end_up_serving_the_key_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two daemons starting at once on one state dir: both must serve the file's key."""
    state = tmp_path / "state"
    barrier = threading.Barrier(2, timeout=30)
    real_generate = asyncssh.generate_private_key

    def generate_in_step(alg: str, **options: object) -> object:
        key = real_generate(alg, **options)
        barrier.wait()  # both have made a key before either writes one
        return key

    monkeypatch.setattr(asyncssh, "generate_private_key", generate_in_step)
    results: list[list[object]] = []
    threads = [
        threading.Thread(target=lambda: results.append(hostkeys.load_host_keys((), state)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 2
    on_disk = [asyncssh.read_private_key(str(state / f"ssh_host_{n}_key")).public_data
               for n in ("ed25519", "rsa")]
    for keys in results:
        assert [k.public_data for k in keys] == on_disk  # type: ignore[attr-defined]
    assert sorted(p.name for p in state.iterdir()) == ["ssh_host_ed25519_key",
                                                       "ssh_host_rsa_key"]


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o620])
def test_key_others_can_read_or_write_refused(tmp_path: Path, mode: int) -> None:
    """As sshd does: a host key others may read is not secret, so serving it proves nothing."""
    state = tmp_path / "state"
    hostkeys.load_host_keys((), state)
    key = state / "ssh_host_ed25519_key"
    key.chmod(mode)
    with pytest.raises(ConfigError, match=f"chmod 600 {key}"):
        hostkeys.load_host_keys((), state)
    with pytest.raises(ConfigError, match="chmod 600"):
        hostkeys.load_host_keys((key,), state)


def test_group_readable_key_accepted(tmp_path: Path) -> None:
    """Some systems share host keys with a key-signing group (root:ssh_keys 0640)."""
    state = tmp_path / "state"
    first = hostkeys.load_host_keys((), state)
    (state / "ssh_host_ed25519_key").chmod(0o640)
    assert [k.public_data for k in hostkeys.load_host_keys((), state)] == [
        k.public_data for k in first
    ]


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
