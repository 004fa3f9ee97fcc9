"""Retention and legal hold through the real CLI and a real recorder process (disk storage)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.polling import wait_for
from tests.recorder.conftest import ALICE, REPO, SERVER, RecorderProc, cast_header, event

TINY = "0.00001"  # days: under a second, so that what was just uploaded is "old"


def _cli(rec: RecorderProc, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recorder", *args, "--dst", rec.dst,
         "--state-dir", str(rec.state_dir)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=120,
    )


def _casts(rec: RecorderProc) -> set[str]:
    return {p.name for p in Path(rec.dst).rglob("*.cast")}


def test_retention_deletes_what_is_old_and_never_what_is_held(recorder: RecorderProc) -> None:
    for conn in ("r1", "r2", "r3"):
        with recorder.client(SERVER) as c:
            assert c.post("/record", content=iter(
                [cast_header(conn=f"ssh-conn-{conn}") + event(0.1, f"out {conn}\r\n")]
            )).status_code == 200
    with recorder.client(ALICE) as c:
        metas = {m["header"]["connectionID"]: m
                 for m in c.get("/api/v1/recordings").json()["recordings"]}
    held = metas["ssh-conn-r2"]["id"]
    recorder.stop()
    out = _cli(recorder, "hold", held, "--reason", "case 42")
    assert out.returncode == 0, out.stderr
    assert json.loads(next(Path(recorder.dst).rglob("*.hold")).read_text())["reason"] == "case 42"
    time.sleep(1.0)
    before = _casts(recorder)
    out = _cli(recorder, "retention", "run", "--retain-days", TINY, "--dry-run")
    assert out.returncode == 0, out.stderr
    others = {metas[c]["id"] for c in ("ssh-conn-r1", "ssh-conn-r3")}
    assert {line.split()[-1] for line in out.stdout.splitlines()
            if line.startswith("would delete")} == others
    assert f"kept {held} (legal hold)" in out.stdout
    assert _casts(recorder) == before  # a dry run deletes nothing
    out = _cli(recorder, "retention", "run", "--retain-days", "30")
    assert out.returncode == 0 and "deleted 0 recordings" in out.stderr  # nothing that old
    out = _cli(recorder, "retention", "run", "--retain-days", TINY)
    assert out.returncode == 0, out.stderr
    assert "deleted 2 recordings; 1 on hold kept" in out.stderr
    assert len(_casts(recorder)) == 1
    trail = [json.loads(line) for line in
             (recorder.state_dir / "retention.jsonl").read_text().splitlines()]
    assert {t["id"] for t in trail} == others
    assert all(t["event"] == "recording.deleted" and t["manifest"]["seal"] for t in trail)
    assert (recorder.state_dir / "retention.jsonl").stat().st_mode & 0o777 == 0o600
    recorder.start()
    with recorder.client(ALICE) as c:
        [kept] = c.get("/api/v1/recordings").json()["recordings"]
        assert kept["id"] == held
        assert c.get(f"/api/v1/recordings/{held}/verify").json()["ok"] is True
        for gone in others:
            assert c.get(f"/api/v1/recordings/{gone}").status_code == 404
    recorder.stop()
    out = _cli(recorder, "release", held)
    assert out.returncode == 0, out.stderr
    # a recorder started with --retain-days applies it at start-up (then hourly)
    recorder.extra = ["--retain-days", TINY]
    recorder.start()
    with recorder.client(ALICE) as c:
        wait_for(lambda: c.get("/api/v1/recordings").json()["recordings"] == [], 30, 0.2,
                 what="the released recording deleted by the scheduled run")
    assert _casts(recorder) == set()
    assert "retention: deleted recording" in recorder.log.read_text()
