"""The daemon with two worker processes (``workers = 2``, docs/daemon.md, "Worker
processes"): connections spread over both, status shows both, a policy edit and the SSH
switch reach both, a killed worker takes only its own connections and is replaced."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import (
    POLICY,
    SERVER_IP,
    DaemonFactory,
    TsshDaemon,
    run_ssh,
    ssh_command,
)
from tests.polling import wait_for

ONLY_NONROOT = POLICY.replace('"users": ["autogroup:nonroot", "root"]',
                              '"users": ["autogroup:nonroot"]')


@pytest.fixture
def daemon(daemon_factory: DaemonFactory) -> TsshDaemon:
    return daemon_factory(["--workers", "2"])


def _sessions(daemon: TsshDaemon) -> list[dict[str, object]]:
    sessions = daemon.status()["sessions"]
    assert isinstance(sessions, list)
    return sessions


@contextlib.contextmanager
def _echoing_sessions(daemon: TsshDaemon, count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` sessions, each printing ``started`` and then echoing one line it reads."""
    procs = []
    try:
        for _ in range(count):
            proc = subprocess.Popen(
                ssh_command(daemon, "root", "echo started; read line; echo got $line"),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"started\n"
            procs.append(proc)
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _ended(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """What a session printed once the server ended it (its stdin left open: a closed one
    would end the session by itself)."""
    proc.wait(15)
    assert proc.stdout is not None and proc.stderr is not None
    return proc.stdout.read(), proc.stderr.read()


def _workers(daemon: TsshDaemon) -> list[dict[str, object]]:
    workers = daemon.status()["workers"]
    assert isinstance(workers, list)
    return workers


def test_status_shows_both_workers_sessions_and_one_audit_log(daemon: TsshDaemon) -> None:
    workers = _workers(daemon)
    assert len(workers) == 2 and all(w["serving"] for w in workers)
    pids = {w["pid"] for w in workers}
    assert daemon.proc is not None and daemon.proc.pid not in pids
    with _echoing_sessions(daemon, 2):
        sessions = wait_for(lambda: len(s := _sessions(daemon)) == 2 and s, 10,
                            what="two sessions in status")
        # The least busy worker takes each connection: one session in each.
        assert {s["worker"] for s in sessions} == pids
        assert daemon.status()["connections"] == 2

    # Both workers' events are in the supervisor's one audit log.
    def accepted() -> list[dict[str, object]]:
        lines = (daemon.state_dir / "audit.jsonl").read_text().splitlines()
        return [e for e in map(json.loads, lines) if e.get("event") == "connection.accepted"]

    found = wait_for(lambda: len(a := accepted()) >= 2 and a, 10, what="two logins audited")
    assert len({e["connectionID"] for e in found}) == len(found)


def test_killed_worker_takes_only_its_connections_and_is_replaced(daemon: TsshDaemon) -> None:
    with _echoing_sessions(daemon, 2) as (first, second):
        sessions = wait_for(lambda: len(s := _sessions(daemon)) == 2 and s, 10,
                            what="two sessions in status")
        victim = int(str(sessions[0]["worker"]))
        survivor_pid = int(str(sessions[1]["worker"]))
        assert victim != survivor_pid
        os.kill(victim, signal.SIGKILL)
        # Which client was on the killed worker: its connection ends.
        dead = wait_for(lambda: next((p for p in (first, second) if p.poll() is not None),
                                     None), 10, what="the killed worker's session to end")
        alive = second if dead is first else first
        assert dead.returncode != 0
        # The other session goes on: it still reads and answers.
        out, err = alive.communicate(b"hello\n", timeout=15)
        assert out == b"got hello\n", err
        assert alive.returncode == 0
    # A new worker takes the dead one's place; new logins work meanwhile and after.
    for _ in range(4):
        result = run_ssh(daemon, "root", "echo in")
        assert result.returncode == 0 and result.stdout == b"in\n", result.stderr
    def replaced() -> list[dict[str, object]] | None:
        workers = _workers(daemon)
        return workers if len(workers) == 2 and all(w["serving"] for w in workers) else None

    workers = wait_for(replaced, 30, 0.2, what="a replacement worker")
    pids = {w["pid"] for w in workers}
    assert victim not in pids and survivor_pid in pids
    assert any("worker process exited" in str(e.get("msg")) for e in daemon.log_entries())
    with _echoing_sessions(daemon, 2):
        sessions = wait_for(lambda: len(s := _sessions(daemon)) == 2 and s, 10,
                            what="two sessions in status")
        assert {s["worker"] for s in sessions} == pids


def test_policy_edit_revokes_connections_in_every_worker(daemon: TsshDaemon) -> None:
    with _echoing_sessions(daemon, 2) as procs:
        wait_for(lambda: len({s["worker"] for s in _sessions(daemon)}) == 2, 10,
                 what="a session in each worker")
        edited = time.monotonic()
        daemon.policy.write_text(ONLY_NONROOT)
        for proc in procs:
            out, err = _ended(proc)
            assert b"tssh: access revoked by a policy change" in out + err
            assert b"got" not in out
        # Each worker polls the file every second and re-judges at once.
        assert time.monotonic() - edited < 5
    refused = run_ssh(daemon, "root", "true")
    assert refused.returncode != 0
    assert b"does not permit you to SSH as user" in refused.stderr


def test_ssh_off_ends_connections_in_every_worker(daemon: TsshDaemon) -> None:
    with _echoing_sessions(daemon, 2) as procs:
        wait_for(lambda: len({s["worker"] for s in _sessions(daemon)}) == 2, 10,
                 what="a session in each worker")
        off = daemon.tssh("set", "--ssh=false")
        assert off.returncode == 0, off.stderr
        for proc in procs:
            out, err = _ended(proc)
            assert b"tssh: SSH disabled on this node" in out + err
            assert b"got" not in out
    status = daemon.status()
    assert status["ssh"] is False and status["listening"] == []
    assert status["connections"] == 0
    assert run_ssh(daemon, "root", "true", timeout=15).returncode != 0
    assert daemon.tssh("set", "--ssh").returncode == 0
    result = run_ssh(daemon, "root", "echo back")
    assert result.returncode == 0 and result.stdout == b"back\n", result.stderr
    assert daemon.status()["listening"] == [f"{SERVER_IP}:{daemon.port}"]
