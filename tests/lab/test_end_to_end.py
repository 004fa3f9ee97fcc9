"""End to end on the lab's mesh, from the client node with the stock OpenSSH tools: each
session lands on the recorder its server tries first, is found there by user and node (the
API's filters), verifies, and holds what the client saw."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest

from tests.identity.wglab import run
from tests.lab.scenario import Observation, scenario
from tests.lab.testbed import ALICE, SSH_OPTIONS, Testbed
from tests.polling import wait_for
from tests.processes import stop_process

pytestmark = pytest.mark.xdist_group("lab")

SECTION = "End to end"


def marker() -> str:
    return f"lab-{uuid.uuid4().hex[:12]}"


def found_and_verified(lab: Testbed, seen: Observation, recorder: str, server: str,
                       mark: str, user: str = ALICE) -> dict[str, Any]:
    """The complete recording of ``mark`` on ``recorder``, found with the user filter (the
    tailnet user or the local account) and the node filter, absent under the other
    server's node filter, and verified."""
    started = time.monotonic()
    entry = lab.find_recording(recorder, mark, user=user, node=server)
    seen.figures["found after s"] = round(time.monotonic() - started, 2)
    other = "server2" if server == "server1" else "server1"
    assert not [r for r in lab.recordings(recorder, node=other)
                if mark in r["header"].get("command", "")]
    assert entry["node"]["name"] == server and entry["header"]["srcNodeUser"] == ALICE
    check = lab.verify(recorder, entry["id"])
    assert check["ok"] is True, check
    seen.saw(f"{entry['status']} on {recorder}, found by user={user} node={server}, "
             f"/verify ok")
    return entry


def markers(lab: Testbed, recorder: str, recording_id: str) -> list[str]:
    return [e[2] for e in lab.cast(recorder, recording_id)[1] if e[1] == "m"]


def find_transfer(lab: Testbed, recorder: str, command: str, name: str, user: str,
                  node: str) -> tuple[dict[str, Any], list[str]]:
    """The complete recording of a file transfer session (``command``: "sftp", "scp -f")
    whose markers name ``name``, found with the user and node filters, and its markers.
    Markers are not searchable text (``q=`` looks at output and metadata), so each
    candidate's cast is read."""
    checked: set[str] = set()

    def probe() -> tuple[dict[str, Any], list[str]] | None:
        for entry in lab.recordings(recorder, user=user, node=node):
            if (entry["status"] != "complete" or entry["id"] in checked
                    or command not in entry["header"].get("command", "")):
                continue
            checked.add(entry["id"])
            found = markers(lab, recorder, entry["id"])
            if any(name in m for m in found):
                return entry, found
        return None

    found = wait_for(probe, timeout=20, interval=0.2, what=f"a {command} recording of {name}")
    assert found is not None  # wait_for returns only a true value
    return found


def test_pty_session_recording_equals_what_the_client_saw(lab: Testbed, rerun: str) -> None:
    mark = marker()
    with scenario(SECTION, "ssh -tt to server1 (PTY), recorded on recdisk",
                  "exit status returned; recording complete, found, verifies, its output "
                  "byte for byte what the client printed", rerun) as seen:
        command = f"printf '%s\\n' {mark}; ls -la /; printf 'caf\\303\\251\\n'; exit 3"
        result = lab.ssh("server1", lab.enforced, command, options=("-tt",))
        assert result.returncode == 3, result.stderr
        entry = found_and_verified(lab, seen, "recdisk", "server1", mark)
        assert entry["exitStatus"] == 3
        output = lab.output("recdisk", entry["id"])
        assert output == result.stdout.decode(), (output[:300], result.stdout[:300])
        seen.saw(f"exit 3; recorded output equals the client's ({len(result.stdout)} bytes)")
        seen.figures["output bytes"] = len(result.stdout)


def test_exec_session_on_the_s3_recorder_lands_in_the_bucket(lab: Testbed, rerun: str,
                                                            ) -> None:
    mark = marker()
    with scenario(SECTION, "ssh to server2 (exec), recorded on recs3 (S3)",
                  "stdout equal to the recording's output; the cast in the bucket equals "
                  "what the API serves", rerun) as seen:
        payload = "".join(f"{mark} line {i}\n" for i in range(2000))
        result = lab.ssh("server2", lab.enforced, f"seq 0 1999 | sed 's/^/{mark} line /'")
        assert result.returncode == 0, result.stderr
        assert result.stdout.decode() == payload
        entry = found_and_verified(lab, seen, "recs3", "server2", mark, user=lab.enforced)
        assert lab.output("recs3", entry["id"]) == payload
        started = time.monotonic()
        stored = wait_for(lambda: lab.s3_object(f"{entry['storageKey']}.cast"),
                          timeout=30, interval=0.2, what="the cast in the bucket")
        seen.figures["in bucket after s"] = round(time.monotonic() - started, 2)
        status, served = lab.lab.http_get(
            "client", f"{lab.recorder_url('recs3')}/api/v1/recordings/{entry['id']}/cast")
        assert status == 200 and stored == served and len(stored) == entry["size"]
        seen.saw(f"{len(payload)} bytes of output equal; the bucket's object "
                 f"({len(stored)} bytes) equals the API's cast")


def test_scp_both_protocols_recorded_as_transfers(lab: Testbed, rerun: str) -> None:
    with scenario(SECTION, "scp up (SFTP protocol) and scp -O down, server1",
                  "files arrive whole, owned by the user; each transfer recorded as "
                  "markers naming the file and its bytes", rerun) as seen:
        payload = os.urandom(300_000)
        name = f"{marker()}.bin"
        local = lab.workdir / name
        local.write_bytes(payload)
        target = f"{lab.enforced}@{lab.address('server1')}"
        scp = lab.client_argv("scp", *SSH_OPTIONS)
        started = time.monotonic()
        run(*scp, str(local), f"{target}:{name}")
        back = lab.workdir / f"{name}.back"
        run(*scp, "-O", f"{target}:{name}", str(back))
        seen.figures["both transfers s"] = round(time.monotonic() - started, 2)
        assert (lab.home(lab.enforced) / name).read_bytes() == payload
        assert back.read_bytes() == payload
        sftp, sftp_marks = find_transfer(lab, "recdisk", "sftp", name, lab.enforced,
                                         "server1")
        legacy, legacy_marks = find_transfer(lab, "recdisk", "scp -f", name, lab.enforced,
                                             "server1")
        up = [m for m in sftp_marks if "sftp.close" in m and name in m]
        assert up and f"bytes_written={len(payload)}" in up[-1], sftp_marks
        down = [m for m in legacy_marks if name in m]
        assert down and str(len(payload)) in down[-1], legacy_marks
        for entry in (sftp, legacy):
            assert lab.verify("recdisk", entry["id"])["ok"] is True
        seen.saw(f"300000 bytes each way; markers: {up[-1][:90]}...; {down[-1][:90]}...")


def test_sftp_batch_recorded_as_file_operations(lab: Testbed, rerun: str) -> None:
    with scenario(SECTION, "sftp batch (mkdir, put, get, rename) to server2",
                  "each operation done and recorded as a marker on recs3", rerun) as seen:
        name = marker()
        local = lab.workdir / f"{name}.txt"
        local.write_text("sftp over the mesh\n" * 1000)
        fetched = lab.workdir / f"{name}.back"
        batch = lab.workdir / f"{name}.batch"
        batch.write_text(f"mkdir {name}\nput {local} {name}/a.txt\n"
                         f"rename {name}/a.txt {name}/b.txt\nget {name}/b.txt {fetched}\n")
        result = subprocess.run(
            lab.client_argv("sftp", *SSH_OPTIONS, "-b", str(batch),
                            f"{lab.unenforced}@{lab.address('server2')}"),
            capture_output=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert fetched.read_text() == local.read_text()
        entry, ops = find_transfer(lab, "recs3", "sftp", name, lab.unenforced, "server2")
        for op in ("sftp.mkdir", "sftp.rename", "sftp.close"):
            assert [m for m in ops if op in m and name in m], (op, ops)
        assert lab.verify("recs3", entry["id"])["ok"] is True
        seen.saw(f"mkdir, put, rename, get done; {len(ops)} markers on recs3, verifies")
        seen.figures["markers"] = len(ops)


def test_rsync_recorded_as_a_transfer(lab: Testbed, rerun: str) -> None:
    with scenario(SECTION, "rsync -a of a directory to server1",
                  "tree copied; recorded as the rsync command with a transfer marker, not "
                  "its protocol stream", rerun) as seen:
        name = marker()
        tree = lab.workdir / name
        (tree / "sub").mkdir(parents=True)
        for i in range(20):
            (tree / "sub" / f"f{i}").write_bytes(os.urandom(10_000))
        ssh = " ".join(["ssh", *SSH_OPTIONS])
        result = subprocess.run(
            lab.client_argv("rsync", "-a", "-e", ssh, f"{tree}/",
                            f"{lab.enforced}@{lab.address('server1')}:{name}/"),
            capture_output=True, timeout=60)
        assert result.returncode == 0, result.stderr
        copied = lab.home(lab.enforced) / name / "sub"
        assert sorted(p.name for p in copied.iterdir()) == sorted(f"f{i}" for i in range(20))
        assert all((copied / f"f{i}").read_bytes() == (tree / "sub" / f"f{i}").read_bytes()
                   for i in range(20))
        entry = lab.find_recording("recdisk", "rsync --server", user=lab.enforced,
                                   node="server1", q=name)
        assert lab.verify("recdisk", entry["id"])["ok"] is True
        recorded = lab.cast("recdisk", entry["id"])[1]
        assert [e for e in recorded if e[1] == "m" and "rsync" in e[2]]
        size = sum(len(e[2]) for e in recorded if e[1] == "o")
        assert size < 10_000  # metadata only, not the 200 KB protocol stream
        seen.saw(f"20 files copied; recorded as `{entry['header']['command'][:40]}...` "
                 f"with {size} bytes of output")


ECHO = """
import socket, sys, threading
srv = socket.create_server(("127.0.0.1", 0))
print(srv.getsockname()[1], flush=True)
def echo(conn):
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)
while True:
    threading.Thread(target=echo, args=(srv.accept()[0],), daemon=True).start()
"""

ROUNDTRIP = """
import socket, sys, time
payload = bytes(range(256)) * 4096
for _ in range(100):
    try:
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
        break
    except OSError:
        time.sleep(0.05)
s.sendall(payload)
got = b""
while len(got) < len(payload):
    got += s.recv(65536)
s.close()
print("ok" if got == payload else "mismatch", len(got))
"""


def test_local_forward_through_the_mesh(lab: Testbed, rerun: str) -> None:
    with scenario(SECTION, "ssh -L from the client to a service on server1's loopback",
                  "1 MiB echoed through the tunnel; the recording marks the forward's "
                  "open and close with its byte counts", rerun) as seen:
        echo = subprocess.Popen(lab.lab.exec_argv("server1", sys.executable, "-c", ECHO),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            assert echo.stdout is not None
            port = int(echo.stdout.readline())
            mark = marker()
            session = subprocess.Popen(
                lab.ssh_argv("server1", lab.enforced, f"echo {mark}; cat >/dev/null",
                             options=("-L", f"18080:127.0.0.1:{port}")),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                assert session.stdout is not None and session.stdin is not None
                assert session.stdout.readline().decode().strip() == mark
                through = subprocess.run(
                    lab.client_argv(sys.executable, "-c", ROUNDTRIP, "18080"),
                    capture_output=True, text=True, timeout=30)
                assert through.stdout.split() == ["ok", str(1 << 20)], through
                _, err = session.communicate(timeout=20)  # closes stdin: cat ends
                assert session.returncode == 0, err
            finally:
                if session.poll() is None:
                    session.kill()
                session.communicate(timeout=10)
        finally:
            stop_process(echo)
        entry = lab.find_recording("recdisk", mark, user=ALICE, node="server1")
        forwards = [m for m in markers(lab, "recdisk", entry["id"]) if "forward" in m]
        assert any(f"forward opened: local 127.0.0.1:{port}" in m for m in forwards), forwards
        closed = [m for m in forwards if "forward closed" in m]
        assert closed and f"{1 << 20} bytes sent" in closed[0], forwards
        assert lab.verify("recdisk", entry["id"])["ok"] is True
        seen.saw(f"1 MiB echoed; markers: {'; '.join(forwards)}")
