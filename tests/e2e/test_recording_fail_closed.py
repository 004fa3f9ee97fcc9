"""Enforced recording fails closed: nothing runs, and no output reaches the client, before the
recorder has accepted the recording (docs/recording.md, "What enforceRecorder guarantees").

Each test is one way a hostile user ran commands unrecorded on earlier versions, driven with
the stock ssh client; each asserts that the command did not run (its side-effect file is
absent) or that what it printed is in the recording.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.e2e.conftest import LocalUser, run_ssh, ssh_command
from tests.e2e.recorders import (  # noqa: F401  (fixtures)
    Behavior,
    RecorderNode,
    RecordingSetup,
    recorder_loop_fixture,
    recorder_node_fixture,
    recording_fixture,
)

REFUSED = b"must be recorded (enforceRecorder), but no session recorder accepted"
FAILED = b"session recording failed and the policy requires it"


def _events(cast: bytes) -> tuple[dict[str, object], list[list[object]]]:
    lines = cast.decode().splitlines()
    return json.loads(lines[0]), [json.loads(line) for line in lines[1:]]


def test_a_command_too_long_for_a_header_is_recorded_whole(
        recording: RecordingSetup, recorder_node: RecorderNode,
        local_user: LocalUser) -> None:
    """The recorder refuses a header line over 64 KiB: the daemon cuts the command in the
    header and records all of it as markers, instead of running it unrecorded."""
    daemon = recording.daemon(enforce=True)
    marker = local_user.home / "ran"
    command = f"touch {marker}; echo out # {'x' * 70_000}"
    result = run_ssh(daemon, local_user.name, command)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"out\n"
    header, events = _events(recorder_node.wait_cast(b'"x","0"]'))
    assert "command cut" in str(header["command"])
    parts = [str(e[2]).split(": ", 2)[2] for e in events if e[1] == "m"
             and "the session's command" in str(e[2])]
    assert "".join(parts) == command
    assert "out\n" in "".join(str(e[2]) for e in events if e[1] == "o")


def test_a_term_too_long_for_a_header_is_cut_and_the_shell_recorded(
        recording: RecordingSetup, recorder_node: RecorderNode,
        local_user: LocalUser) -> None:
    daemon = recording.daemon(enforce=True)
    result = subprocess.run(
        ssh_command(daemon, local_user.name, "echo typed-blind", options=("-tt",)),
        capture_output=True, timeout=30, env={**os.environ, "TERM": "x" * 70_000})
    assert result.returncode == 0, result.stderr
    header, events = _events(recorder_node.wait_cast(b'"x","0"]'))
    assert header["env"] == {"TERM": "x" * 128}
    assert "typed-blind" in "".join(str(e[2]) for e in events if e[1] == "o")


def test_a_recorder_refusing_the_header_refuses_the_session(
        recording: RecordingSetup, local_user: LocalUser) -> None:
    """The recorder answers the upload, then fails on the header (an error frame, as for a
    full disk): the session is refused with 254 and its command never runs."""
    recording.recorder(behavior=Behavior(error_after=1))
    daemon = recording.daemon(enforce=True, recorders=("127.0.0.20",))
    marker = local_user.home / "ran"
    for options in ((), ("-tt",)):
        result = run_ssh(daemon, local_user.name, f"touch {marker}; echo ran",
                         options=options)
        assert result.returncode == 254, result
        assert REFUSED in result.stdout + result.stderr
        assert b"ran" not in result.stdout.replace(REFUSED, b"")
        assert not marker.exists()
    [refused, *_] = recording.wait_audit(daemon, "recording.refused")
    assert "storage failed" in refused["attempts"][0]["error"]


def test_a_recorder_refusing_the_header_fails_over_to_the_next(
        recording: RecordingSetup, local_user: LocalUser) -> None:
    recording.recorder(behavior=Behavior(error_after=1))
    good = recording.recorder(host="127.0.0.21")
    daemon = recording.daemon(enforce=True)
    result = run_ssh(daemon, local_user.name, "echo recorded-by-the-second")
    assert result.returncode == 0, result.stderr
    [upload] = recording.loop.wait_upload(good)
    assert "recorded-by-the-second" in upload.output()


def test_a_recording_failing_midway_ends_with_254_and_kills_a_process_ignoring_sighup(
        recording: RecordingSetup, local_user: LocalUser) -> None:
    """The shell ignores SIGHUP: it is killed within UNRECORDED_GRACE (0.1 s), not after the
    ordinary 2 s, so its next command (1 s later) never runs; the client sees 254."""
    recording.recorder(behavior=Behavior(end_after=4000))
    daemon = recording.daemon(enforce=True)
    marker = local_user.home / "after-failure"
    argv = ssh_command(daemon, local_user.name,
                       f"trap '' HUP; echo started; seq 1 2000; sleep 1; touch {marker}; "
                       "echo after-failure; sleep 30")
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
        proc.wait()
    assert FAILED in err
    assert proc.returncode == 254
    assert b"after-failure" not in out
    time.sleep(2.0)  # past the moment the shell would have touched the file
    assert not marker.exists()


def test_many_sessions_on_one_connection_in_one_second_are_all_recorded(
        recording: RecordingSetup, recorder_node: RecorderNode, local_user: LocalUser,
        tmp_path: Path) -> None:
    """12 sessions multiplexed on one ControlMaster connection at once: every one that ran
    is in a recording (before, the 9th in a second was refused by the recorder and ran)."""
    daemon = recording.daemon(enforce=True)
    control = tmp_path / "cm.sock"
    master = subprocess.Popen(
        ssh_command(daemon, local_user.name,
                    options=("-M", "-S", str(control), "-N", "-o", "ControlPersist=no")),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while not control.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert control.exists(), master.stderr

        def one(n: int) -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(
                ssh_command(daemon, local_user.name, f"echo session-{n}",
                            options=("-S", str(control))),
                capture_output=True, timeout=60)

        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(one, range(12)))
    finally:
        master.kill()  # a master with clients still attached can outlast SIGTERM
        master.wait(10)
    ran = {n for n, r in enumerate(results) if r.stdout == f"session-{n}\n".encode()}
    assert ran == set(range(12)), [(r.returncode, r.stderr[-200:]) for r in results]
    deadline = time.monotonic() + 15
    recorded: set[int] = set()
    while time.monotonic() < deadline and recorded != ran:
        recorded = set()
        for cast in recorder_node.casts():
            _, events = _events(cast.read_bytes())
            text = "".join(str(e[2]) for e in events if e[1] == "o")
            recorded |= {n for n in ran if f"session-{n}\n" in text}
        time.sleep(0.1)
    assert recorded == ran
