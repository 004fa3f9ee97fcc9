"""The read audit of a real recorder process: every read of recordings, with its reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.recorder.conftest import (
    ALICE,
    CAROL,
    MONITOR,
    SERVER,
    RecorderProc,
    cast_header,
    event,
)


def _lines(rec: RecorderProc) -> list[dict[str, Any]]:
    path = rec.state_dir / "read-audit.jsonl"
    assert path.stat().st_mode & 0o777 == 0o600
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_read_names_its_reader(recorder: RecorderProc) -> None:
    with recorder.client(SERVER) as c:
        assert c.post("/record", content=iter(
            [cast_header(conn="ssh-conn-ra") + event(0.1, "secret output\r\n")])).status_code == 200
    token = recorder.token("siem-export")
    with recorder.client(ALICE) as c:
        [meta] = c.get("/api/v1/recordings", params={"q": "secret"}).json()["recordings"]
        rid = meta["id"]
        assert c.get(f"/api/v1/recordings/{rid}").status_code == 200
        assert c.get(f"/api/v1/recordings/{rid}/cast", headers={"Range": "bytes=0-9"}
                     ).status_code == 206
        assert c.get(f"/api/v1/recordings/{rid}/live").status_code == 200
        assert c.get(f"/api/v1/recordings/{rid}/verify").status_code == 200
        assert c.get("/healthz").status_code == 200  # not a read of recordings
    with recorder.client(MONITOR, headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.get(f"/api/v1/recordings/{rid}/cast").status_code == 200
    with recorder.client(CAROL) as c:  # refused reads are audited too
        assert c.get(f"/api/v1/recordings/{rid}/cast").status_code == 403
    lines = _lines(recorder)
    summary = [(x["event"], x["readerKind"], x["reader"], x["node"], x["recording"],
                x["status"]) for x in lines]
    assert summary == [
        ("recording.list", "peer", "alice@example.com", "laptop", None, 200),
        ("recording.show", "peer", "alice@example.com", "laptop", rid, 200),
        ("recording.cast", "peer", "alice@example.com", "laptop", rid, 200),
        ("recording.live", "peer", "alice@example.com", "laptop", rid, 200),
        ("recording.verify", "peer", "alice@example.com", "laptop", rid, 200),
        ("recording.cast", "token", "siem-export", None, rid, 200),
        ("recording.cast", "unknown", None, None, rid, 403),
    ]
    assert lines[0]["query"] == "q=secret" and lines[0]["address"] == ALICE
    assert lines[2]["range"] == "bytes=0-9"
    assert lines[-1]["address"] == CAROL
    assert all(x["time"].endswith("Z") for x in lines)


def test_the_web_ui_pages_are_audited(tmp_path: Path) -> None:
    rec = RecorderProc(tmp_path, str(tmp_path / "store"), extra=["--ui"])
    try:
        rec.start()
        with rec.client(SERVER) as c:
            assert c.post("/record", content=iter(
                [cast_header(conn="ssh-conn-ui") + event(0.1, "x\r\n")])).status_code == 200
        with rec.client(ALICE) as c:
            [meta] = c.get("/api/v1/recordings").json()["recordings"]
            assert c.get("/", params={"q": "x"}).status_code == 200
            c.get(f"/play/{meta['id']}")
        lines = _lines(rec)
        assert [x["event"] for x in lines] == ["recording.list", "ui.list", "ui.play"]
        assert lines[1]["query"] == "q=x" and lines[2]["recording"] == meta["id"]
        assert {x["reader"] for x in lines} == {"alice@example.com"}
    finally:
        rec.stop()
