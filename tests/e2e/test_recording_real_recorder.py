"""The whole path with real processes: stock ssh client, `tssh daemon`, the recorder node.

The recorder (`python -m recorder serve`) runs on rec1's address and files each recording
under the uploading node's id (the daemon's node, nSRV1), from the address the upload came
from.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, LocalUser, run_ssh, ssh_command
from tests.e2e.recorders import (  # noqa: F401  (fixtures)
    REC1_IP,
    RecorderNode,
    RecordingSetup,
    recorder_loop_fixture,
    recorder_node_fixture,
    recording_fixture,
)

pytestmark = pytest.mark.skipif(not (REPO / "recorder" / "__main__.py").exists(),
                                reason="the recorder node is not in this tree")

FAILED = b"session recording failed and the policy requires it"


def test_pty_session_stored_by_the_recorder_plays_back_what_the_client_saw(
        recording: RecordingSetup, recorder_node: RecorderNode,
        local_user: LocalUser) -> None:
    daemon = recording.daemon(enforce=True, recorders=("tag:recorder",))
    command = "printf 'caf\\303\\251 \\033[32mgreen\\033[0m\\n'; seq 1 2000"
    result = run_ssh(daemon, local_user.name, command, options=("-tt",))
    assert result.returncode == 0, result.stderr
    stored = recorder_node.wait_cast(b'"x","0"]')
    header = json.loads(stored.splitlines()[0])
    assert header["srcNode"] == "laptop" and header["srcNodeID"] == "nLAP1"
    assert header["sshUser"] == header["localUser"] == local_user.name
    assert header["command"] == command
    asciinema = Path(sys.executable).parent / "asciinema"
    if not asciinema.exists():
        pytest.skip(reason="asciinema is not installed beside python")
    cast = recording.workdir / "stored.cast"
    cast.write_bytes(stored)
    played = subprocess.run([str(asciinema), "cat", str(cast)], capture_output=True,
                            timeout=30, check=True)
    assert played.stdout == result.stdout


def test_recorder_node_killed_mid_session_ends_the_enforced_session(
        recording: RecordingSetup, recorder_node: RecorderNode,
        local_user: LocalUser) -> None:
    daemon = recording.daemon(enforce=True, recorders=("tag:recorder",))
    argv = ssh_command(daemon, local_user.name, "echo started; sleep 30")
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"started\n"
        recorder_node.proc.kill()  # the node dies: its connections are reset
        recorder_node.proc.wait(10)
        _, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
        proc.wait()
    assert FAILED in err
    assert proc.returncode == 254


def test_recording_end_audit_reports_what_the_recorder_acked_last(
        recording: RecordingSetup, recorder_node: RecorderNode,
        local_user: LocalUser) -> None:
    """``recording.end`` carries the final ack: every byte the recorder stored."""
    daemon = recording.daemon(enforce=True, recorders=("tag:recorder",))
    for options in ((), ("-tt",)):
        result = run_ssh(daemon, local_user.name, "echo one; sleep 0.2; echo two",
                         options=options)
        assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 15
    while len(ends := recording.audit(daemon, "recording.end")) < 2:
        assert time.monotonic() < deadline, ends
        time.sleep(0.05)
    stored = sorted(len(p.read_bytes()) for p in recorder_node.casts())
    assert sorted(e["recording"]["bytesAcked"] for e in ends) == stored
    assert all(e["recording"]["bytesSent"] == e["recording"]["bytesAcked"] for e in ends)


def test_word_typed_in_a_recorded_session_is_found_by_search(
        recording: RecordingSetup, recorder_node: RecorderNode,
        local_user: LocalUser, tmp_path: Path) -> None:
    """Typed key by key at a bash prompt (each key its own event, echoed with readline's
    escapes), the word is found by ``tssh recordings search`` with the time it was shown."""
    import os

    import pexpect

    daemon = recording.daemon(enforce=True, recorders=("tag:recorder",))
    argv = ssh_command(daemon, local_user.name, "bash --norc -i", options=("-t",))
    child = pexpect.spawn(argv[0], argv[1:], timeout=15, dimensions=(30, 100),
                          env={**os.environ, "TERM": "xterm-256color"})
    try:
        prompt = "prompt\x1b\\[0m\\$ "  # as bash draws it (the typed PS1 has no ESC)
        child.sendline("PS1='\\[\\e[1;32m\\]prompt\\[\\e[0m\\]$ '")
        child.expect(prompt)
        # a window title (OSC) whose text is not typed as such: win + dowtitle77
        child.sendline("printf '\\033]0;%s%s\\007' win dowtitle77")
        child.expect(prompt)  # readline is reading: keys below are its to echo and edit
        for key in "echo quartz-zeb":
            child.send(key)
            time.sleep(0.02)
        child.send("x\x08")  # a typo, erased
        child.sendline("ra-17")
        child.expect("quartz-zebra-17")
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    recorder_node.wait_cast(b'"x","0"]')
    token = subprocess.run(
        [sys.executable, "-m", "recorder", "token", "--state-dir",
         str(tmp_path / "recorder-state"), "create", "e2e"],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()
    url = f"http://{REC1_IP}:{recording.recorder_port}"

    def search(*words: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tssh", "recordings", "search", "--recorder", url,
             "--token", token, *words],
            cwd=REPO, capture_output=True, text=True, timeout=30,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )

    found = search("quartz-zebra-17")
    assert found.returncode == 0, found.stderr
    lines = found.stdout.splitlines()
    assert "complete" in lines[0] and local_user.name in lines[0]
    hits = [line.split(None, 1) for line in lines[1:]]
    assert [text for _, text in hits] == [
        "prompt$ echo quartz-zebra-17", "quartz-zebra-17"], found.stdout
    assert all(t.startswith("0:") for t, _ in hits)  # seconds into the session
    assert search("windowtitle77").returncode == 1  # the window title is not output text
    assert search("quartz-zebx").returncode == 1  # the erased typo
