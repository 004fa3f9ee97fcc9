"""Retention (by age and by size) and legal hold (the CLI and the API's admins) through the
real CLI and real recorder processes (disk storage)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.polling import wait_for
from tests.recorder.conftest import (
    ALICE,
    BOB,
    CAROL,
    REPO,
    SERVER,
    STRANGER,
    RecorderProc,
    cast_header,
    event,
)

TINY = "0.00001"  # days: under a second, so that what was just uploaded is "old"


def _cli(rec: RecorderProc, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recorder", *args, "--dst", rec.dst,
         "--state-dir", str(rec.state_dir)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **env}, capture_output=True,
        text=True, timeout=120,
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


def _upload(rec: RecorderProc, conns: list[str]) -> list[dict[str, Any]]:
    """One finished recording per connection id, in this order (so oldest first); their
    metadata as the API lists them, oldest first."""
    for i, conn in enumerate(conns):
        with rec.client(SERVER) as c:
            assert c.post("/record", content=iter(
                [cast_header(conn=conn) + event(0.1, f"output {i} " + "x" * 40 * i + "\r\n")]
            )).status_code == 200
    with rec.client(ALICE) as c:
        listed = c.get("/api/v1/recordings").json()["recordings"]
    assert [m["header"]["connectionID"] for m in listed] == conns[::-1]
    return list(reversed(listed))


def _listed(out: subprocess.CompletedProcess[str], verb: str) -> list[str]:
    return [line.split()[-1] for line in out.stdout.splitlines() if line.startswith(verb)]


def test_retain_bytes_deletes_exactly_the_oldest_needed_never_what_is_held(
        recorder: RecorderProc) -> None:
    recs = _upload(recorder, ["c0", "c1", "c2", "c3"])  # oldest first, each larger
    ids = [m["id"] for m in recs]
    sizes = [m["size"] for m in recs]
    assert len(set(sizes)) == 4
    total = sum(sizes)
    recorder.stop()
    assert _cli(recorder, "hold", ids[0], "--reason", "case 7").returncode == 0
    # the held oldest counts but stays: to get within total - sizes[1] the next one goes...
    limit = total - sizes[1]
    out = _cli(recorder, "retention", "run", "--retain-bytes", str(limit), "--dry-run")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"would delete {ids[1]}", f"kept {ids[0]} (legal hold)"]
    assert f"{sizes[1]} bytes freed, {limit} bytes of finished recordings left" in out.stderr
    # ... and with one byte less, the one after it too
    out = _cli(recorder, "retention", "run", "--retain-bytes", str(limit - 1), "--dry-run")
    assert _listed(out, "would delete") == [ids[1], ids[2]]
    # nothing to do: within the limit, or --retain-days alone selects nothing that old
    out = _cli(recorder, "retention", "run", "--retain-bytes", str(total), "--retain-days", "30")
    assert out.returncode == 0 and "deleted 0 recordings; 0 on hold kept" in out.stderr
    assert len(_casts(recorder)) == 4  # dry runs and a run within the limit delete nothing
    out = _cli(recorder, "retention", "run", TSRECORDER_RETAIN_BYTES=str(limit))  # from env
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"deleted {ids[1]}", f"kept {ids[0]} (legal hold)"]
    [line] = [json.loads(x) for x in
              (recorder.state_dir / "retention.jsonl").read_text().splitlines()]
    assert line["id"] == ids[1] and line["size"] == sizes[1]
    assert line["manifest"]["seal"] and f"more than --retain-bytes {limit}" in line["reason"]
    # held recordings alone over the limit: everything else goes, they stay (a recorder
    # started with --retain-bytes applies it at start-up)
    recorder.extra = ["--retain-bytes", "1"]
    recorder.start()
    with recorder.client(ALICE) as c:
        wait_for(lambda: [m["id"] for m in c.get("/api/v1/recordings").json()["recordings"]]
                 == [ids[0]], 30, 0.2, what="the scheduled run by size")
    assert "more than --retain-bytes 1" in recorder.log.read_text()


def test_retention_flag_errors_are_one_line(recorder: RecorderProc) -> None:
    for args, env, expect in (
        (["--retain-bytes", "12X"], {}, "argument --retain-bytes: expected a size"),
        (["--retain-bytes", "0"], {}, "argument --retain-bytes: expected a size"),
        ([], {"TSRECORDER_RETAIN_BYTES": "lots"}, "argument --retain-bytes: expected a size"),
        (["--retain-days", "-1"], {}, "argument --retain-days: expected a positive number"),
        ([], {}, "retention run: give --retain-days DAYS and/or --retain-bytes SIZE"),
    ):
        out = _cli(recorder, "retention", "run", *args, **env)
        assert out.returncode == 2, (args, out.stderr)
        assert expect in out.stderr and "Traceback" not in out.stderr, out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "recorder", "--dst", recorder.dst, "--retain-bytes", "1Q"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=60)
    assert out.returncode == 2 and "argument --retain-bytes: expected a size" in out.stderr


def test_admins_hold_through_the_api_and_retention_honours_it(tmp_path: Path) -> None:
    """``--admin group:auditors`` (bob) and ``--admin carol@...`` (an admin who is no
    viewer still reads) place and lift holds; viewers, tokens and strangers are refused;
    every attempt is in the read audit with who; list and metadata show the hold; retention
    keeps the held recording; the hold survives a reindex."""
    rec = RecorderProc(tmp_path, str(tmp_path / "store"),
                       extra=["--admin", "group:auditors", "--admin", "carol@example.com"])
    rec.start()
    try:
        keep, drop = (m["id"] for m in _upload(rec, ["h0", "h1"]))
        path = f"/api/v1/recordings/{keep}/hold"
        with rec.client(ALICE) as c:  # a viewer, not an admin
            r = c.put(path, json={"reason": "mine"})
            assert r.status_code == 403 and "may not place or lift legal holds" in r.json()[
                "detail"]
            assert c.delete(path).status_code == 403
        token = rec.token("export")
        with rec.client(ALICE, headers={"Authorization": f"Bearer {token}"}) as c:
            r = c.put(path, json={"reason": "x"})
            assert r.status_code == 403 and "API token" in r.json()["detail"]
        with rec.client(STRANGER) as c:
            assert c.put(path, json={"reason": "x"}).status_code == 401
        with rec.client(BOB) as c:
            assert c.put(path, json={}).status_code == 422  # a reason is required
            assert c.put(path, json={"reason": "x" * 1001}).status_code == 422
            assert c.put(path, content=b"\xff{", headers={"Content-Type": "application/json"}
                         ).status_code == 400  # not JSON
            assert c.delete("/api/v1/recordings/not-an-id/hold").status_code == 400
        # answered before its body is read, so the server closes that connection: a client
        # of its own, lest the next request race the close on a reused one
        with rec.client(BOB) as c:
            assert c.put("/api/v1/recordings/..%2F..%2Fetc/hold",
                         json={"reason": "x"}).status_code in (400, 404)
        with rec.client(BOB) as c:
            r = c.put(path, json={"reason": "case 42: litigation"})
            assert r.status_code == 200, r.text
            hold = r.json()["hold"]
            assert hold["reason"] == "case 42: litigation" and hold["by"] == "bob@example.com"
            assert hold["at"].endswith("Z")
            assert c.get(f"/api/v1/recordings/{keep}").json()["hold"] == hold
            listed = {m["id"]: m["hold"] for m in c.get("/api/v1/recordings").json()[
                "recordings"]}
            assert listed == {keep: hold, drop: None}
            assert c.put("/api/v1/recordings/20261125T090000Z-0123456789abcdef/hold",
                         json={"reason": "x"}).status_code == 404
        with rec.client(CAROL) as c:  # an admin by login reads too
            assert c.get(f"/api/v1/recordings/{drop}").json()["hold"] is None
            r = c.put(f"/api/v1/recordings/{drop}/hold", json={"reason": "briefly"})
            assert r.json()["hold"]["by"] == "carol@example.com"
            r = c.delete(f"/api/v1/recordings/{drop}/hold")
            assert r.status_code == 200 and r.json()["hold"] is None
        audit = [(x["event"], x["readerKind"], x["reader"], x["recording"], x["status"])
                 for x in map(json.loads, (rec.state_dir / "read-audit.jsonl").read_text()
                              .splitlines()) if x["event"] in ("recording.hold",
                                                               "recording.release")]
        assert audit == [
            ("recording.hold", "peer", "alice@example.com", keep, 403),
            ("recording.release", "peer", "alice@example.com", keep, 403),
            ("recording.hold", "token", "export", keep, 403),
            ("recording.hold", "unknown", None, keep, 401),
            # access is decided (and audited) before the body is checked; a body that is not
            # JSON at all is refused before, and a path that is no route is no attempt
            ("recording.hold", "peer", "bob@example.com", keep, 200),
            ("recording.hold", "peer", "bob@example.com", keep, 200),
            ("recording.release", "peer", "bob@example.com", "not-an-id", 200),
            ("recording.hold", "peer", "bob@example.com", keep, 200),
            ("recording.hold", "peer", "bob@example.com",
             "20261125T090000Z-0123456789abcdef", 200),
            ("recording.hold", "peer", "carol@example.com", drop, 200),
            ("recording.release", "peer", "carol@example.com", drop, 200),
        ]
        log = rec.log.read_text()
        assert f"recording {keep}: legal hold placed by bob@example.com" in log
        assert f"recording {drop}: legal hold released by carol@example.com" in log
        rec.stop()
        time.sleep(1.0)
        out = _cli(rec, "retention", "run", "--retain-days", TINY)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines() == [f"deleted {drop}", f"kept {keep} (legal hold)"]
        (rec.state_dir / "index.sqlite3").unlink()  # the hold is in storage: a reindex
        for suffix in ("-wal", "-shm"):
            (rec.state_dir / f"index.sqlite3{suffix}").unlink(missing_ok=True)
        assert _cli(rec, "reindex").returncode == 0
        rec.extra, rec.env = [], {"TSRECORDER_ADMINS": "group:auditors"}  # admins from env
        rec.start()
        with rec.client(ALICE) as c:
            [kept] = c.get("/api/v1/recordings").json()["recordings"]
            assert kept["id"] == keep and kept["hold"] == hold
        with rec.client(BOB) as c:
            assert c.delete(path).json()["hold"] is None
        rec.stop()
        out = _cli(rec, "retention", "run", "--retain-days", TINY)
        assert out.stdout.splitlines() == [f"deleted {keep}"]
    finally:
        rec.stop()
