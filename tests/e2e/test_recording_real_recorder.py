"""The whole path with real processes: stock ssh client, `tssh daemon`, the recorder node.

The recorder (`python -m recorder serve`) runs on rec1's address and files each recording
under the uploading node's id (the daemon's node, nSRV1), from the address the upload came
from.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, LocalUser, run_ssh, ssh_command
from tests.e2e.recorders import (  # noqa: F401  (fixtures)
    REC1_IP,
    RECORDING_NETMAP,
    RecordingSetup,
    recorder_loop_fixture,
    recording_fixture,
)
from tests.ports import wait_for_port
from tests.processes import stop_process

pytestmark = pytest.mark.skipif(not (REPO / "recorder" / "__main__.py").exists(),
                                reason="the recorder node is not in this tree")

FAILED = b"session recording failed and the policy requires it"


@dataclass
class RecorderNode:
    proc: subprocess.Popen[bytes]
    dst: Path
    log: Path

    def casts(self) -> list[Path]:
        return sorted((self.dst / "nSRV1").rglob("*.cast"))

    def wait_cast(self, ending: bytes, timeout: float = 15) -> bytes:
        """The one stored recording, once it ends with ``ending`` (the exit event)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            casts = self.casts()
            if casts and (data := casts[0].read_bytes()).rstrip().endswith(ending):
                assert len(casts) == 1, casts
                return data
            time.sleep(0.05)
        raise AssertionError(f"no finished recording in {self.dst}: {self.casts()}; "
                             f"{self.log.read_text(errors='replace')[-2000:]}")


@pytest.fixture
def recorder_node(recording: RecordingSetup, tmp_path: Path) -> Iterator[RecorderNode]:
    netmap = tmp_path / "recorder-netmap.json"
    netmap.write_text(json.dumps({**RECORDING_NETMAP, "self": "rec1"}))
    policy = tmp_path / "recorder-policy.hujson"
    policy.write_text('{"ssh": []}')
    dst = tmp_path / "recordings"
    log = tmp_path / "recorder.log"
    port = recording.recorder_port
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "recorder", "serve", "--dst", str(dst), "--listen",
             f"{REC1_IP}:{port}", "--netmap", str(netmap), "--policy", str(policy),
             "--state-dir", str(tmp_path / "recorder-state")],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(REPO)})
    try:
        wait_for_port(REC1_IP, port, proc, log=log)
        yield RecorderNode(proc, dst, log)
    finally:
        stop_process(proc)


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
    assert proc.returncode != 0
