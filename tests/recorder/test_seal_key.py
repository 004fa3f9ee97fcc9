"""The recorder's signing key is its identity for every seal it makes: created private, and a
key file others may read is refused at start (docs/recorder.md, "Seal"), as the operator
meets it: `tssh-recorder serve` run as a process."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ports import free_port, wait_for_port
from tests.processes import stop_process

ROOT = Path(__file__).resolve().parents[2]


def serve(tmp_path: Path, port: int) -> subprocess.Popen[str]:
    netmap = tmp_path / "netmap.json"
    netmap.write_text(json.dumps({"self": "rec", "nodes": [
        {"name": "rec", "id": "nREC", "addresses": ["127.0.0.1"], "tags": ["tag:recorder"]}]}))
    policy = tmp_path / "policy.hujson"
    policy.write_text('{"ssh": []}')
    return subprocess.Popen(
        [sys.executable, "-m", "recorder", "serve", "--dst", str(tmp_path / "rec"),
         "--state-dir", str(tmp_path / "state"), "--listen", f"127.0.0.1:{port}",
         "--netmap", str(netmap), "--policy", str(policy)],
        cwd=ROOT, env={**os.environ, "HOME": str(tmp_path)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)


def test_key_is_created_private_and_reused(tmp_path: Path) -> None:
    port = free_port()
    proc = serve(tmp_path, port)
    try:
        wait_for_port("127.0.0.1", port, proc)
    finally:
        stop_process(proc)
    key = tmp_path / "state/seal.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32
    seed = key.read_bytes()
    proc = serve(tmp_path, port)
    try:
        wait_for_port("127.0.0.1", port, proc)
    finally:
        stop_process(proc)
    assert key.read_bytes() == seed


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_key_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    key = tmp_path / "state/seal.key"
    key.parent.mkdir(mode=0o700)
    key.write_bytes(os.urandom(32))
    key.chmod(mode)
    proc = serve(tmp_path, free_port())
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "readable by others" in out and "chmod 600" in out, out
