"""The uploader against the real recorder node (``python -m recorder``), as a subprocess.

Skipped until the recorder is in the tree. The session is realistic: alice's laptop (the SSH
client, named in the header's ``srcNode*`` fields) connects to the server node, whose daemon
uploads from its own address; the recorder files it under the uploading node's id.
"""

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ports import free_port, wait_for_port
from tests.processes import stop_process
from tssh.identity.base import Peer
from tssh.recording.asciicast import CastHeader, new_connection_id
from tssh.recording.model import RecordingOptions
from tssh.recording.uploader import start_recording

REPO = Path(__file__).resolve().parents[2]
SERVER_IP, LAPTOP_IP, RECORDER_IP = "127.0.0.10", "127.0.0.2", "127.0.0.20"
NETMAP = {
    "self": "recorder",
    "nodes": [
        {"name": "server", "id": "nSRV1", "addresses": [SERVER_IP], "tags": ["tag:prod"]},
        {"name": "laptop", "id": "nLAP1", "addresses": [LAPTOP_IP],
         "user": "alice@example.com"},
        {"name": "recorder", "id": "nREC1", "addresses": [RECORDER_IP],
         "tags": ["tag:recorder"]},
    ],
}
LAPTOP = Peer(name="laptop", id="nLAP1", addresses=(LAPTOP_IP,), user="alice@example.com",
              user_id="1001")

pytestmark = pytest.mark.skipif(not (REPO / "recorder" / "__main__.py").exists(),
                                reason="the recorder node is not in this tree yet")


@pytest.fixture
def real_recorder(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    netmap = tmp_path / "netmap.json"
    netmap.write_text(json.dumps(NETMAP))
    policy = tmp_path / "policy.hujson"
    policy.write_text('{"ssh": []}')
    dst = tmp_path / "dst"
    port = free_port(RECORDER_IP)
    log = (tmp_path / "recorder.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "recorder", "serve", "--dst", str(dst),
         "--listen", f"{RECORDER_IP}:{port}", "--netmap", str(netmap), "--policy", str(policy),
         "--state-dir", str(tmp_path / "state")],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "HOME": str(tmp_path)})
    try:
        wait_for_port(RECORDER_IP, port, proc, log=tmp_path / "recorder.log")
        yield port, dst
    finally:
        stop_process(proc)
        log.close()


async def test_upload_to_the_real_recorder(real_recorder: tuple[int, Path]) -> None:
    port, dst = real_recorder
    header = CastHeader.for_session(LAPTOP, ssh_user="alice", local_user="alice",
                                    connection_id=new_connection_id(), started_at=time.time(),
                                    width=80, height=24, command="/bin/bash")
    rec = await start_recording([(RECORDER_IP, port)], header,
                                options=RecordingOptions(enforce=True,
                                                         source_address=SERVER_IP))
    assert rec.stats().protocol == "v2"
    fed = "".join(f"line {i} été ✓\r\n" for i in range(2000)).encode()
    for i in range(0, len(fed), 777):
        rec.output_nowait(fed[i:i + 777])
    rec.resize_nowait(120, 40)
    rec.exit_nowait(0)
    stats = await rec.close()
    assert stats.state == "finished", stats
    assert stats.bytes_acked == stats.bytes_sent == stats.bytes_written
    casts = await asyncio.to_thread(lambda: sorted((dst / "nSRV1").rglob("*.cast")))
    assert len(casts) == 1, list(dst.rglob("*"))
    stored = casts[0].read_bytes()
    assert len(stored) == stats.bytes_sent
    lines = [json.loads(line) for line in stored.decode().splitlines()]
    assert lines[0]["srcNodeID"] == "nLAP1" and lines[0]["connectionID"] == header.connection_id
    assert "".join(e[2] for e in lines[1:] if e[1] == "o").encode() == fed
    assert lines[-1][1:] == ["x", "0"]
