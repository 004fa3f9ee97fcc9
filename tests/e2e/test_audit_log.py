"""The audit log with the stock clients against the real daemon (docs/audit.md).

Each transfer the client makes appears once in ``<state_dir>/audit.jsonl`` with its path
and byte count, parsed from the protocol between the client and the server program; every
line of a connection carries its id.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    ALICE_IP,
    CAROL_IP,
    SERVER_IP,
    SSH_OPTIONS,
    DaemonFactory,
    LocalUser,
    TsshDaemon,
    require_tool,
    run_ssh,
    ssh_command,
)
from tests.e2e.recorders import (  # noqa: F401  (fixtures)
    RecordingSetup,
    recorder_loop_fixture,
    recording_fixture,
)
from tests.e2e.test_forwarding import EchoServer

Entry = dict[str, Any]


def audit_entries(daemon: TsshDaemon) -> list[Entry]:
    path = daemon.state_dir / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_for(daemon: TsshDaemon, done: Callable[[list[Entry]], bool],
             timeout: float = 15.0) -> list[Entry]:
    """The audit entries once ``done`` holds of them (the writer thread lags a little)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = audit_entries(daemon)
        if done(entries):
            return entries
        time.sleep(0.05)
    raise AssertionError(f"audit log never got there: {audit_entries(daemon)}")


def events(entries: list[Entry], name: str) -> list[Entry]:
    return [e for e in entries if e["event"] == name]


def ended(count: int) -> Callable[[list[Entry]], bool]:
    return lambda entries: len(events(entries, "connection.closed")) >= count


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(argv, capture_output=True, timeout=60, **kwargs)
    assert result.returncode == 0, (argv, result.stderr)
    return result


def _sftp(daemon: TsshDaemon, user: str, batch: Path) -> subprocess.CompletedProcess[bytes]:
    return _run(["sftp", *SSH_OPTIONS, "-P", str(daemon.port), "-o", f"BindAddress={ALICE_IP}",
                 "-b", str(batch), f"{user}@{SERVER_IP}"])


def _scp(daemon: TsshDaemon, *args: str) -> list[str]:
    return ["scp", *SSH_OPTIONS, "-P", str(daemon.port), "-o", f"BindAddress={ALICE_IP}",
            *args]


def test_sftp_batch_each_change_once(daemon: TsshDaemon, local_user: LocalUser,
                                     tmp_path: Path) -> None:
    require_tool("sftp")
    home = str(local_user.home)
    data = os.urandom(300_017)
    (tmp_path / "a.bin").write_bytes(data)
    batch = tmp_path / "batch"
    batch.write_text("\n".join([
        f"put {tmp_path / 'a.bin'} a.bin", f"get a.bin {tmp_path / 'b.bin'}",
        "rename a.bin c.bin", "chmod 600 c.bin", "symlink c.bin link", "ln c.bin hard",
        "mkdir d", "rmdir d", "rm link", "rm hard", "rm c.bin"]) + "\n")
    _sftp(daemon, local_user.name, batch)
    assert (tmp_path / "b.bin").read_bytes() == data
    entries = wait_for(daemon, ended(1))

    [written, read] = events(entries, "sftp.close")
    assert (written["path"], written["bytesWritten"], written["bytesRead"]) == (
        f"{home}/a.bin", len(data), 0)
    assert written["flags"] == "write,create,truncate" and written["status"] == "ok"
    assert (read["path"], read["bytesRead"], read["bytesWritten"]) == (
        f"{home}/a.bin", len(data), 0)
    assert [(e["path"], e["flags"]) for e in events(entries, "sftp.open")] == [
        (f"{home}/a.bin", "write,create,truncate"), (f"{home}/a.bin", "read")]
    [rename] = events(entries, "sftp.rename")
    assert (rename["path"], rename["newPath"]) == (f"{home}/a.bin", f"{home}/c.bin")
    [chmod] = events(entries, "sftp.setstat")
    assert (chmod["path"], chmod["mode"]) == (f"{home}/c.bin", "0600")
    [symlink] = events(entries, "sftp.symlink")
    assert symlink["path"] == f"{home}/link" and symlink["target"].endswith("c.bin")
    [hardlink] = events(entries, "sftp.hardlink")
    assert (hardlink["path"], hardlink["newPath"]) == (f"{home}/c.bin", f"{home}/hard")
    assert [e["path"] for e in events(entries, "sftp.mkdir")] == [f"{home}/d"]
    assert [e["path"] for e in events(entries, "sftp.rmdir")] == [f"{home}/d"]
    assert [e["path"] for e in events(entries, "sftp.remove")] == [
        f"{home}/link", f"{home}/hard", f"{home}/c.bin"]
    assert all(e["status"] == "ok" for e in entries if e["event"].startswith("sftp."))
    assert not events(entries, "sftp.unparsable")

    # one connection, followed by its id from accept to close
    [accepted] = events(entries, "connection.accepted")
    conn = accepted["connectionID"]
    assert all(e["connectionID"] == conn for e in entries)
    assert (accepted["node"], accepted["nodeID"], accepted["user"], accepted["localUser"],
            accepted["address"], accepted["ruleIndex"]) == (
        "laptop", "nLAP1", "alice@example.com", local_user.name, ALICE_IP, 0)
    [start] = events(entries, "session.start")
    assert (start["kind"], start["subsystem"]) == ("subsystem", "sftp")
    [end] = events(entries, "session.end")
    assert end["exitStatus"] == 0 and end["duration"] >= 0
    path = daemon.state_dir / "audit.jsonl"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-protocol", "legacy-O"])
def test_scp_both_ways(daemon: TsshDaemon, local_user: LocalUser, tmp_path: Path,
                       legacy: bool) -> None:
    require_tool("scp")
    data = os.urandom(1024 * 1024 + 3)
    (tmp_path / "up.bin").write_bytes(data)
    flags = ["-O"] if legacy else []
    remote = f"{local_user.name}@{SERVER_IP}"
    _run(_scp(daemon, *flags, str(tmp_path / "up.bin"), f"{remote}:up.bin"))
    _run(_scp(daemon, *flags, f"{remote}:up.bin", str(tmp_path / "down.bin")))
    assert (tmp_path / "down.bin").read_bytes() == data
    entries = wait_for(daemon, ended(2))
    home = str(local_user.home)
    if legacy:
        [up] = events(entries, "scp.upload")
        [down] = events(entries, "scp.download")
        assert (up["path"], up["bytes"], up["mode"], up["status"]) == (
            f"{home}/up.bin", len(data), "0644", "ok")
        assert (down["path"], down["bytes"], down["status"]) == (
            f"{home}/up.bin", len(data), "ok")
        assert [e["command"] for e in events(entries, "session.start")] == [
            "scp -t up.bin", "scp -f up.bin"]
        assert not events(entries, "sftp.close")
    else:
        up, down = events(entries, "sftp.close")
        assert (up["path"], up["bytesWritten"]) == (f"{home}/up.bin", len(data))
        assert (down["path"], down["bytesRead"]) == (f"{home}/up.bin", len(data))
        assert not events(entries, "scp.upload")
    assert not [e for e in entries if e["event"].endswith(".unparsable")]


def test_scp_legacy_recursive_upload_names_each_file(daemon: TsshDaemon,
                                                      local_user: LocalUser,
                                                      tmp_path: Path) -> None:
    require_tool("scp")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "one.txt").write_bytes(b"1" * 10)
    (tree / "sub" / "two.txt").write_bytes(b"2" * 20)
    (local_user.home / "dest").mkdir()
    os.chown(local_user.home / "dest", local_user.uid, local_user.gid)
    _run(_scp(daemon, "-O", "-r", str(tree), f"{local_user.name}@{SERVER_IP}:dest"))
    entries = wait_for(daemon, ended(1))
    home = local_user.home
    assert sorted((e["path"], e["bytes"]) for e in events(entries, "scp.upload")) == [
        (f"{home}/dest/tree/one.txt", 10), (f"{home}/dest/tree/sub/two.txt", 20)]


def test_rsync_is_an_exec_session_with_its_command(daemon: TsshDaemon, local_user: LocalUser,
                                                   tmp_path: Path) -> None:
    rsync = require_tool("rsync")
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "f.bin").write_bytes(b"r" * 5000)
    ssh = shlex.join(ssh_command(daemon, local_user.name)[:-1])
    _run([rsync, "-a", "-e", ssh, f"{tmp_path / 'tree'}/", f"{local_user.name}@{SERVER_IP}:copy/"])
    entries = wait_for(daemon, ended(1))
    [start] = events(entries, "session.start")
    assert start["kind"] == "exec" and start["transfer"] == "rsync"
    assert start["command"].startswith("rsync --server ") and start["command"].endswith(" copy/")
    [end] = events(entries, "session.end")
    assert end["exitStatus"] == 0 and end["command"] == start["command"]


def test_exit_status_and_signal(daemon: TsshDaemon, local_user: LocalUser) -> None:
    assert run_ssh(daemon, local_user.name, "exit 3").returncode == 3
    run_ssh(daemon, local_user.name, "kill -TERM $$")
    entries = wait_for(daemon, ended(2))
    first, second = events(entries, "session.end")
    assert (first["command"], first["exitStatus"], first["signal"]) == ("exit 3", 3, None)
    assert (second["exitStatus"], second["signal"]) == (None, "TERM")


def test_a_refused_login_says_why(daemon: TsshDaemon, local_user: LocalUser) -> None:
    assert run_ssh(daemon, local_user.name, "true", source=CAROL_IP).returncode == 255
    entries = wait_for(daemon, lambda es: bool(events(es, "connection.refused")))
    [refused] = events(entries, "connection.refused")
    assert refused["user"] == "carol@example.com" and refused["address"] == CAROL_IP
    assert refused["localUser"] is None and refused["reason"]
    assert refused["connectionID"].startswith("ssh-conn-")


def test_tail_shows_the_transfers(daemon: TsshDaemon, local_user: LocalUser,
                                  tmp_path: Path) -> None:
    require_tool("sftp")
    (tmp_path / "report.pdf").write_bytes(b"%PDF" * 100)
    batch = tmp_path / "batch"
    batch.write_text(f"put {tmp_path / 'report.pdf'} report.pdf\n")
    _sftp(daemon, local_user.name, batch)
    entries = wait_for(daemon, ended(1))
    conn = entries[0]["connectionID"]
    result = daemon.tssh("audit", "tail", "-n", "100", "--connection", conn)
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if " sftp.close " in line]
    assert f"alice@example.com (laptop) as {local_user.name} sftp.close" in line
    assert f"path={local_user.home}/report.pdf" in line and "bytesWritten=400" in line
    as_json = daemon.tssh("audit", "tail", "--json", "-n", "1")
    assert json.loads(as_json.stdout)["event"] == "connection.closed"


def test_a_recorded_sftp_session_carries_its_transfers_as_markers(
        recording: RecordingSetup, local_user: LocalUser) -> None:
    require_tool("sftp")
    rec = recording.recorder()
    daemon = recording.daemon(enforce=True)
    (recording.workdir / "quarterly-numbers.xlsx").write_bytes(b"x" * 1234)
    batch = recording.workdir / "batch"
    batch.write_text(f"put {recording.workdir / 'quarterly-numbers.xlsx'} q.xlsx\n")
    _sftp(daemon, local_user.name, batch)
    [upload] = recording.loop.wait_upload(rec)
    markers = [e[2] for e in upload.cast()[1] if e[1] == "m"]
    [close] = [m for m in markers if m.startswith("tssh: sftp.close ")]
    assert f"path={local_user.home}/q.xlsx" in close and "bytes_written=1234" in close
    assert b"x" * 1234 not in upload.body


def test_rotation_keeps_the_configured_number_of_files(daemon_factory: DaemonFactory,
                                                       local_user: LocalUser) -> None:
    daemon = daemon_factory(extra_args=("--audit-max-bytes", "4096", "--audit-files", "3"))
    for i in range(12):  # each connection writes about 2.5 KB of audit lines
        assert run_ssh(daemon, local_user.name, f"echo {i}").returncode == 0
    # the last connection's close is in the current file
    entries = wait_for(daemon, lambda es: bool(es) and es[-1]["event"] == "connection.closed"
                       and any(e.get("command") == "echo 11" for e in es))
    files = sorted(p.name for p in daemon.state_dir.iterdir() if p.name.startswith("audit"))
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    for name in files:
        path = daemon.state_dir / name
        assert path.stat().st_size <= 4096
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # the newest entries are all there, in order, across the files
    tail = daemon.tssh("audit", "tail", "--json", "-n", "1000")
    kept = [json.loads(line) for line in tail.stdout.splitlines()]
    commands = [e["command"] for e in kept if e["event"] == "session.end"]
    assert commands == [f"echo {i}" for i in range(12 - len(commands), 12)]
    assert entries[-1] == kept[-1]


def _garbage_to_sftp(daemon: TsshDaemon, user: str) -> subprocess.CompletedProcess[bytes]:
    """Not SFTP on the sftp subsystem: a length of 0xffffffff, then noise."""
    return subprocess.run(ssh_command(daemon, user, "sftp", options=("-s",)),
                          input=b"\xff\xff\xff\xff" + b"noise" * 1000, capture_output=True,
                          timeout=30)


def test_a_stream_that_is_not_sftp_is_audited_and_passed(daemon: TsshDaemon,
                                                         local_user: LocalUser) -> None:
    result = _garbage_to_sftp(daemon, local_user.name)
    assert b"could not be audited" not in result.stderr  # sftp-server judged it itself
    entries = wait_for(daemon, ended(1))
    [event] = events(entries, "sftp.unparsable")
    assert event["direction"] == "client" and "out of range" in event["reason"]
    assert not events(entries, "transfer.cut")


def test_audit_unparsable_cut_ends_the_session(daemon_factory: DaemonFactory,
                                               local_user: LocalUser) -> None:
    daemon = daemon_factory(extra_args=("--audit-unparsable", "cut"))
    result = _garbage_to_sftp(daemon, local_user.name)
    assert result.returncode != 0
    assert b"tssh: this transfer stream could not be audited" in result.stderr
    entries = wait_for(daemon, ended(1))
    assert [e["event"] for e in entries if e["event"] in (
        "sftp.unparsable", "transfer.cut")] == ["sftp.unparsable", "transfer.cut"]
    # a real sftp session on the same daemon is not affected
    require_tool("sftp")
    batch = local_user.home / "batch"
    batch.write_text("pwd\n")
    _sftp(daemon, local_user.name, batch)


def test_a_forward_is_audited_once_with_its_bytes(daemon: TsshDaemon) -> None:
    echo = EchoServer()
    try:
        payload = os.urandom(100_000)
        stdio = subprocess.run(
            ssh_command(daemon, "root", options=("-W", f"127.0.0.1:{echo.port}")),
            input=payload, capture_output=True, timeout=30)
        assert stdio.stdout == payload
    finally:
        echo.close()
    entries = wait_for(daemon, lambda es: bool(events(es, "forward.close")) and ended(1)(es))
    [accepted] = events(entries, "connection.accepted")
    [opened] = events(entries, "forward.open")
    [closed] = events(entries, "forward.close")
    assert opened["destination"] == closed["destination"] == f"127.0.0.1:{echo.port}"
    assert opened["connectionID"] == closed["connectionID"] == accepted["connectionID"]
    assert (closed["bytesSent"], closed["bytesReceived"]) == (len(payload), len(payload))
    assert closed["localUser"] == "root" and closed["address"] == ALICE_IP
