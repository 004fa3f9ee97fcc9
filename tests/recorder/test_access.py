"""Who may read: viewers (login, group, tag), tokens; uploaders, other users, strangers not."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from tests.polling import wait_for
from tests.recorder.conftest import (
    ALICE,
    BOB,
    CAROL,
    MONITOR,
    NETMAP,
    REPO,
    SERVER,
    STRANGER,
    RecorderProc,
    cast_header,
    event,
)


def _upload_v1(rec: RecorderProc) -> str:
    body = cast_header() + event(0.1, "hello\n")
    with rec.client(SERVER) as c:
        r = c.post("/record", content=iter([body]))
        assert r.status_code == 200, r.text
    with rec.client(ALICE) as c:
        return str(c.get("/api/v1/recordings").json()["recordings"][0]["id"])


@pytest.mark.parametrize("source", [ALICE, BOB, MONITOR])
def test_viewers_read(recorder: RecorderProc, source: str) -> None:
    rid = _upload_v1(recorder)
    with recorder.client(source) as c:
        assert c.get("/api/v1/recordings").status_code == 200
        assert c.get(f"/api/v1/recordings/{rid}").json()["id"] == rid
        assert c.get(f"/api/v1/recordings/{rid}/cast").status_code == 200


@pytest.mark.parametrize(("source", "status"), [(SERVER, 403), (CAROL, 403), (STRANGER, 401)])
def test_others_cannot_read(recorder: RecorderProc, source: str, status: int) -> None:
    rid = _upload_v1(recorder)
    with recorder.client(source) as c:
        for path in ("", f"/{rid}", f"/{rid}/cast", f"/{rid}/live", f"/{rid}/verify"):
            r = c.get(f"/api/v1/recordings{path}")
            assert r.status_code == status, (path, r.text)
            assert b"hello" not in r.content


def test_tokens_create_use_revoke(recorder: RecorderProc) -> None:
    rid = _upload_v1(recorder)
    token = recorder.token("automation")
    assert token.startswith("tsrec_")
    stored = (recorder.state_dir / "tokens.json").read_text()
    assert token not in stored  # only the hash is kept
    assert oct((recorder.state_dir / "tokens.json").stat().st_mode & 0o777) == "0o600"
    with recorder.client(STRANGER) as c:
        auth = {"Authorization": f"Bearer {token}"}
        assert c.get(f"/api/v1/recordings/{rid}", headers=auth).status_code == 200
        nope = {"Authorization": "Bearer nope"}
        assert c.get("/api/v1/recordings", headers=nope).status_code == 401
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        base = [sys.executable, "-m", "recorder", "token", "--state-dir", str(recorder.state_dir)]
        listing = subprocess.run(
            [*base, "list"], capture_output=True, text=True, env=env, check=True
        )
        token_id = listing.stdout.split()[0]
        assert "automation" in listing.stdout
        subprocess.run([*base, "revoke", token_id], capture_output=True, env=env, check=True)
        assert c.get(f"/api/v1/recordings/{rid}", headers=auth).status_code == 401
        bad = subprocess.run([*base, "revoke", "nosuch"], capture_output=True, text=True, env=env)
        assert bad.returncode == 1
        assert "Traceback" not in bad.stderr and "no token" in bad.stderr


@pytest.mark.parametrize("rid", [
    "..%2F..%2Fetc%2Fpasswd", "%2e%2e", "nSRV1%2F20261125T090000Z-x", "a" * 300,
    "20261125T090000Z-0123456789abcdeg", "20261125T090000Z-0123456789abcdef%00",
])
def test_hostile_ids_never_reach_storage(recorder: RecorderProc, rid: str) -> None:
    _upload_v1(recorder)
    with recorder.client(ALICE) as c:
        for suffix in ("", "/cast", "/verify", "/live"):
            r = c.get(f"/api/v1/recordings/{rid}{suffix}")
            assert r.status_code in (400, 404), (rid, suffix, r.status_code)
            assert b"root:" not in r.content


def test_public_endpoints(recorder: RecorderProc) -> None:
    with httpx.Client(base_url=recorder.url) as c:
        assert c.get("/healthz").json()["ok"] is True
        key = c.get("/api/v1/key").json()
        assert key["algorithm"] == "ed25519" and len(key["publicKey"]) == 44
        assert "tsrecorder_recordings_active" in c.get("/metrics").text
    assert oct((recorder.state_dir / "seal.key").stat().st_mode & 0o777) == "0o600"


def test_netmap_edits_apply_without_a_restart(recorder: RecorderProc) -> None:
    """A node added to the netmap file may upload (and a new viewer read) within seconds; a
    broken edit keeps the last good netmap."""
    netmap_file = recorder.tmp / "netmap.hujson"
    body = cast_header() + event(0.1, "hello\n")
    with recorder.client(STRANGER) as c:
        assert c.post("/record", content=iter([body])).status_code == 403
    netmap_file.write_text("{ not json")
    time.sleep(1.5)  # polled at least once: still the old netmap, still serving
    with recorder.client(SERVER) as c:
        assert c.post("/record", content=iter([body])).status_code == 200
    netmap = copy.deepcopy(NETMAP)
    netmap["nodes"].append(  # type: ignore[attr-defined]
        {"name": "newbox", "id": "nNEW1", "addresses": [STRANGER], "tags": ["tag:prod"]})
    netmap_file.write_text(json.dumps(netmap))

    def uploads() -> bool:
        with recorder.client(STRANGER) as c:
            return c.post("/record", content=iter([body])).status_code == 200

    wait_for(uploads, 10, 0.2, what="the new node's upload accepted")
    assert "identity file not reloaded" in recorder.log.read_text(errors="replace")
