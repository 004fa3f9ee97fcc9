"""``tssh recordings`` against a running recorder, as a user types it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.recorder.conftest import REPO, SERVER, RecorderProc, cast_header, event
from tests.recorder.h2upload import H2Upload
from tssh.cli.recordings import LiveEvent, live_event


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


async def test_play_follow_prints_a_live_session_until_it_ends(recorder: RecorderProc) -> None:
    up = await H2Upload.open("127.0.0.1", recorder.port, local_address=SERVER)
    first = cast_header() + event(0.1, "before the follower\r\n")
    try:
        assert await up.wait_headers() == 200
        await up.send(first)
        await up.wait_ack(len(first))
        token = recorder.token()
        listing = tssh("list", "--live", "--json", "--recorder", recorder.url, "--token", token)
        rid = json.loads(listing.stdout)["recordings"][0]["id"]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tssh", "recordings", "play", "--follow", rid,
            "--recorder", recorder.url, "--token", token, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            assert proc.stdout is not None and proc.stderr is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            assert line == b"before the follower\r\n"
            await up.send(event(0.5, "while following\r\n"))
            assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"while following\r\n"
            await up.send(event(0.6, "5", "x"))
            await up.end()
            rest, err = await asyncio.wait_for(proc.communicate(), 10)
            assert proc.returncode == 0, err
            assert rest == b""
            assert b"following" in err and b"session ended, complete, exit status 5" in err
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await up.wait_end()
    finally:
        await up.close()


def test_live_event_lines() -> None:
    assert live_event(b'{"version":2,"width":100,"height":30}') == LiveEvent(size=(100, 30))
    assert live_event(b'[1.0,"o","hi"]') == LiveEvent(output="hi")
    assert live_event(b'[1.0,"r","90x20"]') == LiveEvent(size=(90, 20))
    # Tailscale's Kubernetes operator: HEIGHTxWIDTH
    assert live_event(b'[1.0,"r","20x90"]', swapped=True) == LiveEvent(size=(90, 20))
    assert live_event(b'[1.0,"x","-2"]') == LiveEvent(exit_status=-2)
    assert live_event(b'[1.0,"m","marker"]') == LiveEvent()
    assert live_event(b'[1.0,"o",') == LiveEvent()  # a torn last line


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
    assert lines[1].split(None, 1) == ["0:02.5", "$ sudo rm -rf /srv/old"]  # when typed
    assert lines[2].split(None, 1) == ["1:15.2", "$ echo rm rf"]
    phrase = tssh("search", "sudo rm", *common)  # one argument with a space: a phrase
    assert phrase.stdout.splitlines()[1:] == ["     0:02.5  $ sudo rm -rf /srv/old"]
    assert tssh("search", "rm sudo", *common).returncode == 1
    as_json = json.loads(tssh("search", "/srv/old", "--json", *common).stdout)
    assert as_json["recordings"][0]["matches"] == [
        {"time": 2.5, "text": "$ sudo rm -rf /srv/old"}]
    missing = tssh("search", "nowhere-to-be-found", *common)
    assert missing.returncode == 1 and "no recording matches" in missing.stderr
