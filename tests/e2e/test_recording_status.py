"""``tssh status`` shows a live session's recording and the recorders' last outcome."""

from __future__ import annotations

import subprocess
import time
from typing import Any

from tests.e2e.conftest import LocalUser, TsshDaemon, ssh_command
from tests.e2e.recorders import (  # noqa: F401  (fixtures)
    REC1_IP,
    REC2_IP,
    RecordingSetup,
    recorder_loop_fixture,
    recording_fixture,
)


def _live_recording(daemon: TsshDaemon, at_least: int = 1, timeout: float = 10
                    ) -> dict[str, Any]:
    """The recording entry of the one live session, once at least ``at_least`` bytes were
    sent and everything sent is acked (the header alone is acked as soon as it starts)."""
    deadline = time.monotonic() + timeout
    rec: dict[str, Any] = {}
    while time.monotonic() < deadline:
        sessions = daemon.status()["sessions"]
        assert isinstance(sessions, list)
        if sessions and sessions[0]["recording"]:
            rec = sessions[0]["recording"]
            if rec["bytesSent"] >= at_least and rec["bytesAcked"] == rec["bytesSent"]:
                return rec
        time.sleep(0.1)
    raise AssertionError(f"no acknowledged live recording in status: {rec}")


def test_status_shows_the_live_recording(recording: RecordingSetup,
                                         local_user: LocalUser) -> None:
    rec2_node = recording.recorder(host=REC2_IP)  # rec1 is down: the status shows it unhealthy
    daemon = recording.daemon(enforce=True)
    argv = ssh_command(daemon, local_user.name, "seq 1 100; read line")
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"1\n"
        deadline = time.monotonic() + 10  # the recorder has the whole output ...
        while b'100\\n' not in (body := recording.loop.uploads(rec2_node)[0].body):
            assert time.monotonic() < deadline, body
            time.sleep(0.05)
        rec = _live_recording(daemon, at_least=len(body))  # ... and the status says so
        assert rec["recorder"] == f"{REC2_IP}:{recording.recorder_port}"
        assert rec["protocol"] == "v2"
        assert rec["state"] == "recording"
        assert rec["enforced"] is True
        assert rec["bytesSent"] > len("".join(f"{i}\n" for i in range(1, 101)))
        status = daemon.status()
        recorders = {r["address"]: r for r in status["recorders"]}  # type: ignore[union-attr]
        rec1 = recorders[f"{REC1_IP}:{recording.recorder_port}"]
        assert rec1["name"] == "rec1" and rec1["healthy"] is False and rec1["error"]
        rec2 = recorders[f"{REC2_IP}:{recording.recorder_port}"]
        assert rec2["name"] == "rec2" and rec2["healthy"] is True
        text = daemon.tssh("status")
        assert text.returncode == 0, text.stderr
        assert (f"recording to {REC2_IP}:{recording.recorder_port} (v2, enforced): "
                f"sent {rec['bytesSent']} B, acked {rec['bytesAcked']} B") in text.stdout
        assert f"rec2 ({REC2_IP}:{recording.recorder_port}): healthy" in text.stdout
        _, err = proc.communicate(b"done\n", timeout=15)
        assert proc.returncode == 0, err
    finally:
        proc.kill()
        proc.wait()
