"""File transfers on an enforced recorded rule, with the stock clients and the real daemon.

A transfer is recorded as metadata only, so calling something a transfer must never let a
shell through (docs/recording.md, docs/security.md): every bypass below ran a shell whose
output the client saw and the recording did not. Real scp (legacy protocol), rsync and sftp
still work and are recorded as transfers.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    ALICE_IP,
    SSH_OPTIONS,
    LocalUser,
    TsshDaemon,
    require_tool,
    run_ssh,
    ssh_command,
)
from tests.e2e.recorders import (  # noqa: F401  (fixtures)
    SERVER_IP,
    RecordingSetup,
    UploadSnapshot,
    recorder_loop_fixture,
    recording_fixture,
)

SECRET = "42-not-recorded-ZZ"  # printed by `echo $((6*7))-not-recorded-ZZ`: never in the input
PRINT_SECRET = "echo $((6*7))-not-recorded-ZZ"


def _markers(upload: UploadSnapshot) -> list[str]:
    return [e[2] for e in upload.cast()[1] if e[1] == "m"]


def _is_transfer(upload: UploadSnapshot) -> bool:
    return any("file transfer session" in m for m in _markers(upload))


def _recorded(recording: RecordingSetup, local_user_name: str, command: str,
              options: tuple[str, ...] = (), input: bytes | None = None
              ) -> tuple[subprocess.CompletedProcess[bytes], UploadSnapshot]:
    rec = recording.recorder()
    daemon = recording.daemon(enforce=True)
    result = run_ssh(daemon, local_user_name, command, options=options, input=input)
    [upload] = recording.loop.wait_upload(rec)
    assert upload.cast()[0]["command"] == command
    return result, upload


# --- the bypasses: each ran a shell the recording did not see --------------------------

@pytest.mark.parametrize("command", [
    f"rsync --server </dev/null >/dev/null 2>&1; {PRINT_SECRET}",
    f"sftp-server -h; {PRINT_SECRET}",
    f"/usr/lib/openssh/sftp-server -h; {PRINT_SECRET}",
    f"scp -f x </dev/null; {PRINT_SECRET}",
    f"scp -t x </dev/null & {PRINT_SECRET}",
], ids=["rsync-server", "sftp-server", "sftp-server-path", "scp-f", "scp-t-background"])
def test_a_command_after_a_transfer_word_is_recorded(
        recording: RecordingSetup, local_user: LocalUser, command: str) -> None:
    result, upload = _recorded(recording, local_user.name, command)
    assert SECRET.encode() in result.stdout, result.stderr
    assert SECRET in upload.output()
    assert not _is_transfer(upload)


def test_an_interactive_shell_after_rsync_server_is_recorded(
        recording: RecordingSetup, local_user: LocalUser) -> None:
    command = "rsync --server 2>/dev/null </dev/null; exec bash -i"
    result, upload = _recorded(recording, local_user.name, command, options=("-tt",),
                               input=f"{PRINT_SECRET}; exit\n".encode())
    assert SECRET.encode() in result.stdout, result.stderr
    assert SECRET in upload.output()
    assert not _is_transfer(upload)


def test_a_program_named_scp_in_the_home_directory_is_no_transfer(
        recording: RecordingSetup, local_user: LocalUser) -> None:
    link = local_user.home / "scp"
    link.symlink_to("/bin/bash")
    os.lchown(link, local_user.uid, local_user.gid)
    # bash -t: run one command from the terminal, then exit
    result, upload = _recorded(recording, local_user.name, "./scp -t", options=("-tt",),
                               input=f"{PRINT_SECRET}\n".encode())
    assert SECRET.encode() in result.stdout, result.stderr
    assert SECRET in upload.output()
    assert not _is_transfer(upload)


def test_a_shell_startup_file_never_runs_before_a_transfer(
        recording: RecordingSetup, local_user: LocalUser) -> None:
    # bash reads ~/.bashrc for `bash -c` under SSH: a hook there used to run inside what was
    # recorded as a transfer. The daemon now execs scp itself, so the hook never runs.
    bashrc = local_user.home / ".bashrc"
    bashrc.write_text(f'case "$BASH_EXECUTION_STRING" in scp*) {PRINT_SECRET}; exit 0;; esac\n')
    os.chown(bashrc, local_user.uid, local_user.gid)
    control = run_ssh(recording.daemon(enforce=False, recorders=()), local_user.name,
                      "scp-like")  # the hook works where a shell runs the command
    assert SECRET.encode() in control.stdout, control.stderr
    result, upload = _recorded(recording, local_user.name, "scp -t upload.bin",
                               input=b"")
    assert SECRET.encode() not in result.stdout
    assert SECRET not in upload.output()
    assert _is_transfer(upload)


# --- real transfers ----------------------------------------------------------------

def _scp(daemon: TsshDaemon, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["scp", "-O", *SSH_OPTIONS, "-P", str(daemon.port),
                           "-o", f"BindAddress={ALICE_IP}", *args],
                          capture_output=True, timeout=60)


def _assert_transfer(upload: UploadSnapshot, protocol: str, content: bytes,
                     status: str = "0") -> None:
    events = upload.cast()[1]
    assert any(m == f"tssh: file transfer session ({protocol}); transferred data is not "
               "recorded" for m in _markers(upload)), events
    assert content not in upload.body
    assert not [e for e in events if e[1] == "o"]
    assert events[-1][1:] == ["x", status]


def test_scp_legacy_upload_and_download_are_recorded_as_transfers(
        recording: RecordingSetup, local_user: LocalUser) -> None:
    require_tool("scp")
    rec = recording.recorder()
    daemon = recording.daemon(enforce=True)
    content = b"scp-file-content " * 4000
    src = recording.workdir / "up.bin"
    src.write_bytes(content)
    remote = f"{local_user.name}@{SERVER_IP}"
    up = _scp(daemon, "-p", str(src), f"{remote}:'up loaded.bin'")
    assert up.returncode == 0, up.stderr
    uploaded = local_user.home / "up loaded.bin"
    assert uploaded.read_bytes() == content
    assert uploaded.stat().st_uid == local_user.uid
    down_dir = recording.workdir / "down"
    down_dir.mkdir()
    down = _scp(daemon, "-r", f"{remote}:'up loaded.bin'", str(down_dir))
    assert down.returncode == 0, down.stderr
    assert (down_dir / "up loaded.bin").read_bytes() == content
    first, second = recording.loop.wait_upload(rec, count=2)
    assert first.cast()[0]["command"] == "scp -p -t 'up loaded.bin'"
    assert second.cast()[0]["command"] == "scp -r -f 'up loaded.bin'"
    _assert_transfer(first, "scp", content)
    _assert_transfer(second, "scp", content)


def test_rsync_push_and_pull_are_recorded_as_transfers(
        recording: RecordingSetup, local_user: LocalUser) -> None:
    rsync = require_tool("rsync")
    rec = recording.recorder()
    daemon = recording.daemon(enforce=True)
    tree = recording.workdir / "tree"
    (tree / "sub").mkdir(parents=True)
    content = b"rsync-file-content " * 3000
    (tree / "sub" / "f.bin").write_bytes(content)
    ssh = shlex.join(ssh_command(daemon, local_user.name)[:-1])
    target = f"{local_user.name}@{SERVER_IP}:copy/"
    push = subprocess.run([rsync, "-a", "--delete", "-e", ssh, f"{tree}/", target],
                          capture_output=True, timeout=60)
    assert push.returncode == 0, push.stderr
    assert (local_user.home / "copy" / "sub" / "f.bin").read_bytes() == content
    back = recording.workdir / "back"
    pull = subprocess.run([rsync, "-a", "-e", ssh, target, f"{back}/"],
                          capture_output=True, timeout=60)
    assert pull.returncode == 0, pull.stderr
    assert (back / "sub" / "f.bin").read_bytes() == content
    first, second = recording.loop.wait_upload(rec, count=2)
    assert first.cast()[0]["command"].startswith("rsync --server -")
    assert second.cast()[0]["command"].startswith("rsync --server --sender ")
    _assert_transfer(first, "rsync", content)
    _assert_transfer(second, "rsync", content)
    starts = recording.wait_audit(daemon, "recording.start")
    assert [e["transfer"] for e in starts] == ["rsync", "rsync"]


def test_sftp_is_recorded_as_a_transfer(recording: RecordingSetup,
                                        local_user: LocalUser) -> None:
    require_tool("sftp")
    rec = recording.recorder()
    daemon = recording.daemon(enforce=True)
    content = b"sftp-file-content " * 3000
    (recording.workdir / "a.bin").write_bytes(content)
    batch = recording.workdir / "batch"
    batch.write_text(f"put {recording.workdir / 'a.bin'} a.bin\n"
                     f"get a.bin {recording.workdir / 'b.bin'}\n")
    result = subprocess.run(
        ["sftp", *SSH_OPTIONS, "-o", f"BindAddress={ALICE_IP}", "-P", str(daemon.port),
         "-b", str(batch), f"{local_user.name}@{SERVER_IP}"], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (recording.workdir / "b.bin").read_bytes() == content
    [upload] = recording.loop.wait_upload(rec)
    assert upload.cast()[0]["command"] == "sftp"
    _assert_transfer(upload, "sftp", content)


def test_a_transfer_command_with_a_glob_goes_through_the_shell(
        recording: RecordingSetup, local_user: LocalUser) -> None:
    # `scp -O host:'*.txt' .` needs the remote shell's globbing: a shell session, recorded
    # in full (protocol bytes included), and it still works.
    require_tool("scp")
    rec = recording.recorder()
    daemon = recording.daemon(enforce=True)
    (local_user.home / "one.txt").write_text("globbed-content\n")
    down = recording.workdir / "down"
    down.mkdir()
    result = _scp(daemon, f"{local_user.name}@{SERVER_IP}:*.txt", str(down))
    assert result.returncode == 0, result.stderr
    assert (down / "one.txt").read_text() == "globbed-content\n"
    [upload] = recording.loop.wait_upload(rec)
    assert not _is_transfer(upload)
    assert "globbed-content" in upload.output()


# --- restricted login shells: never bypassed -----------------------------------------

@contextlib.contextmanager
def _user_with_shell(shell: str) -> Iterator[LocalUser]:
    if os.geteuid() != 0:
        pytest.skip(reason="creating local users needs root")
    require_tool("useradd")
    if not os.access(shell, os.X_OK):
        pytest.skip(reason=f"{shell} is not installed")
    name = f"tr{uuid.uuid4().hex[:10]}"
    subprocess.run(["useradd", "-m", "-s", shell, name], check=True)
    entry = pwd.getpwnam(name)
    try:
        yield LocalUser(name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))
    finally:
        subprocess.run(["userdel", "-r", "-f", name], check=False, capture_output=True)


@pytest.mark.parametrize(("shell", "says"), [
    ("/usr/sbin/nologin", "not available"),
    ("/usr/bin/git-shell", "unrecognized command"),
])
def test_scp_to_a_restricted_shell_goes_through_that_shell(
        recording: RecordingSetup, shell: str, says: str) -> None:
    require_tool("scp")
    with _user_with_shell(shell) as user:
        rec = recording.recorder()
        daemon = recording.daemon(enforce=True)
        src = recording.workdir / "f.bin"
        src.write_bytes(b"restricted-content")
        result = _scp(daemon, str(src), f"{user.name}@{SERVER_IP}:f.bin")
        assert result.returncode != 0
        assert not (user.home / "f.bin").exists()
        [upload] = recording.loop.wait_upload(rec)
        assert upload.cast()[0]["command"] == "scp -t f.bin"
        assert not _is_transfer(upload)
        assert says in upload.output()
        [start] = recording.wait_audit(daemon, "recording.start")
        assert start["transfer"] is None
