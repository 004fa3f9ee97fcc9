"""Recorder failures as the stock ssh client sees them, with and without enforceRecorder."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import LocalUser, run_ssh, ssh_command
from tests.e2e.recorders import (  # noqa: F401  (fixtures)
    Behavior,
    RecordingSetup,
    recorder_loop_fixture,
    recording_fixture,
)

REFUSED = b"must be recorded (enforceRecorder), but no session recorder accepted"
FAILED = b"session recording failed and the policy requires it"


def test_enforced_and_no_recorder_accepts_refuses_with_254(
        recording: RecordingSetup, local_user: LocalUser, tmp_path: Path) -> None:
    daemon = recording.daemon(enforce=True)  # no recorder runs
    marker = local_user.home / "ran"
    result = run_ssh(daemon, local_user.name, f"touch {marker}")
    assert result.returncode == 254
    assert REFUSED in result.stderr
    assert not marker.exists()  # the command never ran
    pty = run_ssh(daemon, local_user.name, f"touch {marker}", options=("-tt",))
    assert pty.returncode == 254
    assert REFUSED in pty.stdout + pty.stderr
    assert not marker.exists()
    refused = recording.wait_audit(daemon, "recording.refused")
    assert len(refused[0]["attempts"]) == 2
    assert all(a["error"] for a in refused[0]["attempts"])


def test_recorder_refusing_v2_and_v1_counts_as_not_accepting(
        recording: RecordingSetup, local_user: LocalUser) -> None:
    recording.recorder(behavior=Behavior(status=500, continue_status=403))
    recording.recorder(host="127.0.0.21", behavior=Behavior(status=500, continue_status=403))
    daemon = recording.daemon(enforce=True)
    result = run_ssh(daemon, local_user.name, "true")
    assert result.returncode == 254
    assert REFUSED in result.stderr


def test_not_enforced_and_no_recorder_the_session_goes_on(
        recording: RecordingSetup, local_user: LocalUser) -> None:
    daemon = recording.daemon(enforce=False)
    result = run_ssh(daemon, local_user.name, "echo unrecorded-but-allowed")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"unrecorded-but-allowed\n"
    [start] = recording.wait_audit(daemon, "recording.start")
    assert start["outcome"] == "unrecorded"
    assert [a["recorder"].rsplit(":", 1)[0] for a in start["attempts"]] == [
        "127.0.0.20", "127.0.0.21"]
    assert all("dial failed" in a["error"] for a in start["attempts"])


def _start_session(recording: RecordingSetup, daemon_args: dict[str, object],
                   user: str, command: str, pty: bool = False
                   ) -> tuple[subprocess.Popen[bytes], object]:
    daemon = recording.daemon(**daemon_args)  # type: ignore[arg-type]
    argv = ssh_command(daemon, user, command, options=("-tt",) if pty else ())
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    return proc, daemon


def _read_until(proc: subprocess.Popen[bytes], text: bytes, timeout: float = 10) -> bytes:
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while text not in seen and time.monotonic() < deadline:
        chunk = proc.stdout.read1(4096)
        if not chunk:
            break
        seen += chunk
    assert text in seen, seen
    return seen


@pytest.mark.parametrize("pty", [False, True], ids=["pipe", "pty"])
def test_enforced_recorder_killed_mid_session_ends_it_with_a_message(
        recording: RecordingSetup, local_user: LocalUser, pty: bool) -> None:
    """The message reaches the client: on stderr without a PTY, on the terminal with one."""
    rec = recording.recorder()
    proc, _ = _start_session(recording, {"enforce": True}, local_user.name,
                             "echo started; sleep 30", pty=pty)
    try:
        _read_until(proc, b"started")
        recording.loop.kill(rec)
        out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
        proc.wait()
    assert FAILED in (out if pty else err)
    assert proc.returncode == 254  # a script sees that recording failed


def test_recording_worker_killed_ends_enforced_sessions_and_is_replaced(
        recording: RecordingSetup, local_user: LocalUser) -> None:
    """The worker that uploads recordings dies: enforced sessions end with the message (their
    output can no longer be recorded), and the next session gets a new worker."""
    rec = recording.recorder()
    proc, daemon = _start_session(recording, {"enforce": True}, local_user.name,
                                  "echo started; sleep 30")
    try:
        _read_until(proc, b"started")
        worker = daemon.status()["recordingWorker"]  # type: ignore[attr-defined]
        assert isinstance(worker["pid"], int)
        os.kill(worker["pid"], signal.SIGKILL)
        _, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
        proc.wait()
    assert FAILED in err
    assert proc.returncode == 254
    [failed] = recording.wait_audit(daemon, "recording.failed")  # type: ignore[arg-type]
    assert "recording worker" in failed["reason"]
    result = run_ssh(daemon, local_user.name, "echo recorded-again")  # type: ignore[arg-type]
    assert result.returncode == 0, result.stderr
    cut, again = recording.loop.wait_upload(rec, count=2, complete=False)
    assert not cut.complete  # the dead worker's upload: kept, marked incomplete
    assert "recorded-again" in again.output()
    new_pid = daemon.status()["recordingWorker"]["pid"]  # type: ignore[attr-defined]
    assert isinstance(new_pid, int) and new_pid != worker["pid"]


def test_enforced_recorder_ending_early_ends_the_session(
        recording: RecordingSetup, local_user: LocalUser) -> None:
    recording.recorder(behavior=Behavior(end_after=4000))
    # The shell ignores the hang-up that ends the session, so it still writes after the
    # failure (until it is killed): none of that may reach the client unrecorded.
    proc, _ = _start_session(recording, {"enforce": True}, local_user.name,
                             "trap '' HUP; echo started; sleep 0.5; seq 1 2000; sleep 0.5; "
                             "echo after-failure; sleep 30")
    started = time.monotonic()
    try:
        _read_until(proc, b"started")
        out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
        proc.wait()
    assert FAILED in err
    assert b"after-failure" not in out
    assert time.monotonic() - started < 10


def test_not_enforced_recorder_killed_mid_session_the_session_goes_on(
        recording: RecordingSetup, local_user: LocalUser) -> None:
    rec = recording.recorder()
    proc, daemon = _start_session(recording, {"enforce": False}, local_user.name,
                                  "echo first; read line; echo second-$line")
    try:
        _read_until(proc, b"first")
        recording.loop.kill(rec)
        [failed] = recording.wait_audit(daemon, "recording.failed")  # type: ignore[arg-type]
        assert failed["enforced"] is False
        out, err = proc.communicate(b"go\n", timeout=15)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    assert out == b"second-go\n"
    [end] = recording.wait_audit(daemon, "recording.end")  # type: ignore[arg-type]
    assert end["recording"]["state"] == "failed"


def test_daemon_stopping_with_a_recorded_session_live_exits_promptly(
        recording: RecordingSetup, local_user: LocalUser) -> None:
    """SIGTERM with an enforced, recorded session running: the client is told, the session's
    recording is finished (its exit included) while the daemon winds down, and the daemon and
    its worker are gone within seconds."""
    rec = recording.recorder()
    proc, daemon = _start_session(recording, {"enforce": True}, local_user.name,
                                  "echo started; sleep 60")
    try:
        _read_until(proc, b"started")
        worker = daemon.status()["recordingWorker"]["pid"]  # type: ignore[index]
        assert isinstance(worker, int)
        daemon_proc = daemon.proc  # type: ignore[attr-defined]
        started = time.monotonic()
        daemon_proc.send_signal(signal.SIGTERM)
        assert daemon_proc.wait(15) == 0
        assert time.monotonic() - started < 10
        _, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
        proc.wait()
    assert b"shutting down" in err
    deadline = time.monotonic() + 5
    while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{worker}").exists()  # the worker exited with the daemon
    [upload] = recording.loop.wait_upload(rec)
    _, events = upload.cast()
    assert "started" in upload.output() and events[-1][1] == "x"
