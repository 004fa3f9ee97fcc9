"""``tssh recordings`` against a running recorder, as a user types it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.recorder.conftest import REPO, SERVER, RecorderProc, cast_header, event


def tssh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tssh", "recordings", *args], cwd=REPO, capture_output=True,
        text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60,
    )


def test_list_show_get_play_verify(recorder: RecorderProc, tmp_path: Path) -> None:
    body = (cast_header(conn="ssh-conn-cli") + event(0.1, "hello from the session\r\n")
            + event(5.0, "after a pause\r\n") + event(5.1, "0", "x"))
    with recorder.client(SERVER) as c:
        assert c.post("/record", content=iter([body])).status_code == 200
    token = recorder.token()
    common = ["--recorder", recorder.url, "--token", token]

    listing = tssh("list", *common)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "START", "NODE"]
    rid = lines[1].split()[0]
    assert "server" in lines[1] and "complete" in lines[1]
    assert tssh("list", *common, "--node", "nope").stdout.splitlines()[1:] == []
    as_json = json.loads(tssh("list", *common, "--json").stdout)
    assert as_json["recordings"][0]["id"] == rid

    show = tssh("show", rid, *common)
    assert json.loads(show.stdout)["exitStatus"] == 0

    out = tmp_path / "copy.cast"
    got = tssh("get", rid, "-o", str(out), *common)
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == body

    play = tssh("play", rid, "--speed", "4", "--idle-time-limit", "0.2", *common)
    assert play.returncode == 0, play.stderr
    assert "hello from the session" in play.stdout and "after a pause" in play.stdout

    ok = tssh("verify", rid, *common)
    assert ok.returncode == 0 and "seal ok" in ok.stdout

    stored = recorder.tmp / "store" / f"{json.loads(show.stdout)['storageKey']}.cast"
    stored.write_bytes(stored.read_bytes().replace(b"hello", b"HELLO"))
    broken = tssh("verify", rid, *common)
    assert broken.returncode == 1 and "SEAL BROKEN" in broken.stderr


def test_refusals_are_one_clear_line(recorder: RecorderProc) -> None:
    # 127.0.0.1 is the recorder node itself: known, not a viewer
    r = tssh("list", "--recorder", recorder.url)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "403" in r.stderr and "Traceback" not in r.stderr
    r = tssh("list", "--recorder", recorder.url, "--token", "wrong")
    assert "401" in r.stderr
    r = tssh("show", "../../etc/passwd", "--recorder", recorder.url, "--token", recorder.token())
    assert r.returncode == 1 and ("400" in r.stderr or "404" in r.stderr)
    r = tssh("get", "20261125T090000Z-0123456789abcdef", "--recorder", recorder.url, "-o", "-")
    assert r.returncode == 1 and "403" in r.stderr and "Traceback" not in r.stderr
    r = tssh("list", "--recorder", "http://127.0.0.1:1")
    assert r.returncode == 1 and "cannot reach" in r.stderr


def test_search_prints_hits_with_their_times(recorder: RecorderProc) -> None:
    body = (cast_header(conn="ssh-conn-find") + event(0.1, "$ ")
            + event(2.5, "sudo rm -rf /srv/old\r\n") + event(75.25, "$ echo rm rf\r\n"))
    with recorder.client(SERVER) as c:
        assert c.post("/record", content=iter([body])).status_code == 200
    common = ["--recorder", recorder.url, "--token", recorder.token()]
    found = tssh("search", *common, "--", "rm", "-rf")  # words: both lines; -- before -rf
    assert found.returncode == 0, found.stderr
    lines = found.stdout.splitlines()
    assert "server" in lines[0] and "complete" in lines[0]
    assert lines[1].split(None, 1) == ["0:00.1", "$ sudo rm -rf /srv/old"]
    assert lines[2].split(None, 1) == ["1:15.2", "$ echo rm rf"]
    phrase = tssh("search", "sudo rm", *common)  # one argument with a space: a phrase
    assert phrase.stdout.splitlines()[1:] == ["     0:00.1  $ sudo rm -rf /srv/old"]
    assert tssh("search", "rm sudo", *common).returncode == 1
    as_json = json.loads(tssh("search", "/srv/old", "--json", *common).stdout)
    assert as_json["recordings"][0]["matches"] == [
        {"time": 0.1, "text": "$ sudo rm -rf /srv/old"}]
    missing = tssh("search", "nowhere-to-be-found", *common)
    assert missing.returncode == 1 and "no recording matches" in missing.stderr
