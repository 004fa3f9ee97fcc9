"""File transfer with stock clients: scp (sftp-based and legacy), sftp, rsync, git."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    ALICE_IP,
    SERVER_IP,
    SSH_OPTIONS,
    LocalUser,
    TsshDaemon,
    require_tool,
)
from tssh.server.connection import ENCRYPTION_ALGS


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(argv, capture_output=True, timeout=60, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, (argv, result.stderr)
    return result  # type: ignore[no-any-return]


def _scp(daemon: TsshDaemon, *args: str) -> list[str]:
    return ["scp", *SSH_OPTIONS, "-P", str(daemon.port), "-o", f"BindAddress={ALICE_IP}", *args]


def _ssh_cmd(daemon: TsshDaemon) -> str:
    return shlex.join(["ssh", *SSH_OPTIONS, "-p", str(daemon.port), "-b", ALICE_IP])


@pytest.mark.parametrize("cipher", ENCRYPTION_ALGS)
def test_each_cipher_carries_bytes_both_ways(daemon: TsshDaemon, local_user: LocalUser,
                                             cipher: str) -> None:
    """Stock ssh with each cipher the daemon offers moves 3 MiB intact each way (the
    AES-GCM ones through the patched send path, tssh/server/asyncssh_speedups.py)."""
    data = os.urandom(3 * 1024 * 1024 + 5)
    ssh = ["ssh", *SSH_OPTIONS, "-p", str(daemon.port), "-b", ALICE_IP, "-c", cipher,
           f"{local_user.name}@{SERVER_IP}"]
    _run([*ssh, "cat > cipher.bin"], input=data)
    assert (local_user.home / "cipher.bin").read_bytes() == data
    assert _run([*ssh, "cat cipher.bin"]).stdout == data


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-protocol", "legacy-O"])
def test_scp_both_ways(daemon: TsshDaemon, local_user: LocalUser, tmp_path: Path,
                       legacy: bool) -> None:
    require_tool("scp")
    data = os.urandom(2 * 1024 * 1024 + 17)
    src = tmp_path / "up.bin"
    src.write_bytes(data)
    flags = ["-O"] if legacy else []
    remote = f"{local_user.name}@{SERVER_IP}"
    _run(_scp(daemon, *flags, str(src), f"{remote}:up.bin"))
    uploaded = local_user.home / "up.bin"
    assert uploaded.read_bytes() == data
    assert uploaded.stat().st_uid == local_user.uid
    _run(_scp(daemon, *flags, f"{remote}:up.bin", str(tmp_path / "down.bin")))
    assert (tmp_path / "down.bin").read_bytes() == data


def test_sftp_batch(daemon: TsshDaemon, local_user: LocalUser, tmp_path: Path) -> None:
    require_tool("sftp")
    if not os.access("/usr/lib/openssh/sftp-server", os.X_OK):
        pytest.skip(reason="sftp-server is not installed")
    data = os.urandom(300_000)
    (tmp_path / "a.bin").write_bytes(data)
    batch = tmp_path / "batch"
    batch.write_text(f"mkdir d\nput {tmp_path / 'a.bin'} d/a.bin\nls -l d\n"
                     f"get d/a.bin {tmp_path / 'b.bin'}\npwd\n")
    result = _run(["sftp", *SSH_OPTIONS, "-P", str(daemon.port), "-o", f"BindAddress={ALICE_IP}",
                   "-b", str(batch), f"{local_user.name}@{SERVER_IP}"])
    assert (tmp_path / "b.bin").read_bytes() == data
    assert (local_user.home / "d" / "a.bin").stat().st_uid == local_user.uid
    assert str(local_user.home).encode() in result.stdout


def test_rsync(daemon: TsshDaemon, local_user: LocalUser, tmp_path: Path) -> None:
    require_tool("rsync")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "one.txt").write_text("one\n")
    (tree / "sub" / "two.bin").write_bytes(os.urandom(500_000))
    target = f"{local_user.name}@{SERVER_IP}:copy/"
    _run(["rsync", "-a", "-e", _ssh_cmd(daemon), f"{tree}/", target])
    assert (local_user.home / "copy" / "one.txt").read_text() == "one\n"
    back = tmp_path / "back"
    _run(["rsync", "-a", "-e", _ssh_cmd(daemon), target, f"{back}/"])
    assert (back / "sub" / "two.bin").read_bytes() == (tree / "sub" / "two.bin").read_bytes()


def test_git_clone_and_push(daemon: TsshDaemon, local_user: LocalUser, tmp_path: Path) -> None:
    require_tool("git")
    bare = local_user.home / "repo.git"
    _run(["runuser", "-u", local_user.name, "--", "git", "init", "-q", "--bare", str(bare)])
    env = {**os.environ, "GIT_SSH_COMMAND": _ssh_cmd(daemon), "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}
    url = f"{local_user.name}@{SERVER_IP}:repo.git"
    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", url, str(clone)], env=env)
    (clone / "README").write_text("hello\n")
    _run(["git", "-C", str(clone), "add", "README"], env=env)
    _run(["git", "-C", str(clone), "commit", "-q", "-m", "first"], env=env)
    _run(["git", "-C", str(clone), "push", "-q", "origin", "HEAD:refs/heads/main"], env=env)
    second = tmp_path / "second"
    _run(["git", "clone", "-q", "-b", "main", url, str(second)], env=env)
    assert (second / "README").read_text() == "hello\n"
