"""Every kind of session on a recorded rule is recorded: the stock ssh client, the real daemon.

The recorders are fake recorder nodes on the netmap's recorder addresses (see recorders.py);
each test reads back exactly what the daemon uploaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

from tests.e2e.conftest import (
    ALICE_IP,
    SSH_OPTIONS,
    LocalUser,
    require_tool,
    run_ssh,
    ssh_command,
)
from tests.e2e.recorders import (  # noqa: F401  (fixtures)
    SERVER_IP,
    Behavior,
    RecordingSetup,
    recorder_loop_fixture,
    recording_fixture,
    recording_policy,
)
from tests.e2e.terminal import expect_size
from tests.processes import stop_process

ASCIINEMA = Path(sys.executable).parent / "asciinema"


def test_exec_without_pty_recorded_v2(recording: RecordingSetup, local_user: LocalUser) -> None:
    rec = recording.recorder()
    daemon = recording.daemon(enforce=True)
    command = "echo out-line; echo err-line >&2; exit 3"
    result = run_ssh(daemon, local_user.name, command)
    assert result.returncode == 3, result.stderr
    assert result.stdout == b"out-line\n"
    assert result.stderr == b"err-line\n"

    [upload] = recording.loop.wait_upload(rec)
    assert upload.protocol == "v2"
    assert upload.peer == SERVER_IP  # dialed from the daemon's own tailnet address
    header, events = upload.cast()
    assert header["version"] == 2
    assert header["command"] == command
    assert header["srcNode"] == "laptop"
    assert header["srcNodeID"] == "nLAP1"
    assert header["srcNodeUser"] == "alice@example.com"
    assert "srcNodeTags" not in header
    assert header["sshUser"] == local_user.name
    assert header["localUser"] == local_user.name
    assert header["connectionID"].startswith("ssh-conn-")
    assert (header["width"], header["height"]) == (0, 0)
    assert header["tssh"]["stderr"] is True
    outputs = "".join(e[2] for e in events if e[1] == "o")
    assert "out-line\n" in outputs and "err-line\n" in outputs
    assert events[-1][1:] == ["x", "3"]


def test_exec_v1_recorder(recording: RecordingSetup, local_user: LocalUser) -> None:
    rec = recording.recorder(behavior=Behavior(v2=False))
    daemon = recording.daemon(enforce=True)
    result = run_ssh(daemon, local_user.name, "seq 1 5000")
    assert result.returncode == 0, result.stderr
    [upload] = recording.loop.wait_upload(rec)
    assert upload.protocol == "v1"
    assert upload.output() == result.stdout.decode()
    assert upload.cast()[1][-1][1:] == ["x", "0"]


def test_pty_exec_plays_back_exactly_what_the_client_saw(
        recording: RecordingSetup, local_user: LocalUser) -> None:
    rec = recording.recorder()
    daemon = recording.daemon(enforce=False)
    command = "printf 'h\\303\\251llo \\033[1mbold\\033[0m\\n'; seq 1 3000; tty"
    result = run_ssh(daemon, local_user.name, command, options=("-tt",))
    assert result.returncode == 0, result.stderr
    assert b"/dev/pts/" in result.stdout
    [upload] = recording.loop.wait_upload(rec)
    header, _ = upload.cast()
    assert header["command"] == command
    assert header["tssh"]["stderr"] is False
    assert upload.output().encode() == result.stdout
    if not ASCIINEMA.exists():
        pytest.skip(reason="asciinema is not installed beside python")
    cast = recording.workdir / "session.cast"
    cast.write_bytes(upload.body)
    played = subprocess.run([str(ASCIINEMA), "cat", str(cast)], capture_output=True,
                            timeout=30, check=True)
    assert played.stdout == result.stdout


def test_interactive_bash_recorded_with_term_size_and_resize(
        recording: RecordingSetup, local_user: LocalUser) -> None:
    rec = recording.recorder()
    daemon = recording.daemon(enforce=True)
    argv = ssh_command(daemon, local_user.name, "bash", options=("-t",))
    child = pexpect.spawn(argv[0], argv[1:], timeout=10, dimensions=(30, 100),
                          env={**os.environ, "TERM": "vt220"})
    try:
        child.sendline("echo marker-$((6*7))")
        child.expect("marker-42")
        child.setwinsize(40, 120)
        expect_size(child, "40 120", old="30 100")
        child.sendline("exit 5")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 5
    [upload] = recording.loop.wait_upload(rec)
    header, events = upload.cast()
    assert header["command"] == "bash"
    assert (header["width"], header["height"]) == (100, 30)
    assert header["env"] == {"TERM": "vt220"}
    assert ["r", "120x40"] in [e[1:] for e in events]
    assert "marker-42" in upload.output()
    assert events[-1][1:] == ["x", "5"]


def test_sftp_session_recorded_without_its_data(
        recording: RecordingSetup, local_user: LocalUser) -> None:
    require_tool("sftp")
    rec = recording.recorder()
    daemon = recording.daemon(enforce=True)
    payload = recording.workdir / "payload.bin"
    payload.write_bytes(b"secret-file-content " * 1000)
    batch = recording.workdir / "batch"
    batch.write_text(f"put {payload} copy.bin\n")
    result = subprocess.run(
        ["sftp", *SSH_OPTIONS, "-o", f"BindAddress={ALICE_IP}", "-P", str(daemon.port),
         "-b", str(batch), f"{local_user.name}@{SERVER_IP}"],
        capture_output=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert (local_user.home / "copy.bin").read_bytes() == payload.read_bytes()
    [upload] = recording.loop.wait_upload(rec)
    header, events = upload.cast()
    assert header["command"] == "sftp"
    assert header["sshUser"] == local_user.name
    assert b"secret-file-content" not in upload.body
    assert any(e[1] == "m" and "sftp" in e[2] for e in events)
    assert events[-1][1:] == ["x", "0"]


def test_rsync_session_recorded_without_its_data(
        recording: RecordingSetup, local_user: LocalUser) -> None:
    rsync = require_tool("rsync")
    rec = recording.recorder()
    daemon = recording.daemon(enforce=True)
    src = recording.workdir / "tree"
    src.mkdir()
    (src / "f.txt").write_text("rsync-content " * 100)
    ssh = " ".join(ssh_command(daemon, local_user.name)[:-1])
    result = subprocess.run(
        [rsync, "-a", "-e", ssh, f"{src}/", f"{local_user.name}@{SERVER_IP}:dest/"],
        capture_output=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert (local_user.home / "dest" / "f.txt").read_text() == "rsync-content " * 100
    [upload] = recording.loop.wait_upload(rec)
    header, events = upload.cast()
    assert header["command"].startswith("rsync --server")
    assert b"rsync-content" not in upload.body
    assert any(e[1] == "m" and "rsync" in e[2] for e in events)
    assert events[-1][1:] == ["x", "0"]


def test_failover_to_the_second_recorder(recording: RecordingSetup,
                                         local_user: LocalUser) -> None:
    # rec1 (first in the netmap) is down: nothing listens on its address.
    rec2 = recording.recorder(host="127.0.0.21")
    daemon = recording.daemon(enforce=True)
    result = run_ssh(daemon, local_user.name, "echo via-second")
    assert result.returncode == 0, result.stderr
    [upload] = recording.loop.wait_upload(rec2)
    assert "via-second" in upload.output()
    [start] = recording.wait_audit(daemon, "recording.start")
    first, second = start["attempts"]
    assert first["recorder"] == f"127.0.0.20:{recording.recorder_port}"
    assert "dial failed" in first["error"]
    assert second == {"recorder": f"127.0.0.21:{recording.recorder_port}",
                      "protocol": "v2", "error": None}


def test_local_fallback_when_no_recorder_is_reachable(
        recording: RecordingSetup, local_user: LocalUser) -> None:
    local_dir = recording.workdir / "casts"
    daemon = recording.daemon(enforce=False,
                              extra_args=("--local-recording-dir", str(local_dir)))
    result = run_ssh(daemon, local_user.name, "echo kept-locally")
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 10
    casts: list[Path] = []
    while time.monotonic() < deadline:
        casts = sorted(local_dir.glob("*.cast")) if local_dir.exists() else []
        if casts and casts[0].read_bytes().rstrip().endswith(b'"x","0"]'):
            break
        time.sleep(0.05)
    [cast] = casts
    text = cast.read_text()
    assert '"command":"echo kept-locally"' in text.splitlines()[0]
    assert "kept-locally" in text
    [start] = recording.wait_audit(daemon, "recording.start")
    assert start["outcome"] == "local"
    assert len(start["attempts"]) == 2  # both recorders tried first



def test_policy_change_records_new_sessions_on_a_live_connection(
        recording: RecordingSetup, local_user: LocalUser, tmp_path: Path) -> None:
    rec = recording.recorder()
    daemon = recording.daemon(enforce=True, recorders=())  # nothing recorded at first
    sock = tmp_path / "mux.sock"
    mux = ("-S", str(sock))
    master = subprocess.Popen(
        ssh_command(daemon, local_user.name, options=("-M", *mux, "-N")),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            assert master.poll() is None, master.stderr
            time.sleep(0.05)
        before = run_ssh(daemon, local_user.name, "echo before", options=mux)
        assert before.stdout == b"before\n", before.stderr
        def revalidations() -> int:
            return sum(e.get("msg") == "connections revalidated" for e in daemon.log_entries())

        seen = revalidations()
        daemon.policy.write_text(recording_policy(enforce=True))
        deadline = time.monotonic() + 20
        while revalidations() == seen:  # until the live connection has taken the new rule
            assert time.monotonic() < deadline, "the new policy never reached the connection"
            time.sleep(0.1)
        after = run_ssh(daemon, local_user.name, "echo after", options=mux)
        assert after.stdout == b"after\n", after.stderr
        [upload] = recording.loop.wait_upload(rec)
        assert "after" in upload.output() and "before" not in upload.output()
        [conn] = {e["conn"] for e in daemon.log_entries() if e.get("msg") == "login accepted"}
        assert upload.cast()[0]["connectionID"] == conn  # the same, multiplexed connection
    finally:
        stop_process(master)
