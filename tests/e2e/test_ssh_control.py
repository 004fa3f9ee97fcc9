"""`tssh set --ssh` and `tssh status` against a running daemon, and what survives a restart."""

from __future__ import annotations

import os
import socket
import subprocess
import time

from tests.e2e.conftest import (
    REPO,
    SERVER_IP,
    DaemonFactory,
    TsshDaemon,
    free_port,
    live_session,
    run_ssh,
)
from tests.ports import port_closed, wait_for_port


def test_disable_ends_live_session_then_enable(daemon: TsshDaemon) -> None:
    with live_session(daemon) as session:
        status = daemon.status()
        assert status["ssh"] is True
        sessions = status["sessions"]
        assert isinstance(sessions, list) and len(sessions) == 1
        assert sessions[0]["localUser"] == "root" and "laptop" in sessions[0]["from"]
        assert sessions[0]["user"] == "alice@example.com"

        off = daemon.tssh("set", "--ssh=false")
        assert off.returncode == 0, off.stderr
        out, err = session.communicate(timeout=10)
    assert session.returncode == 255
    assert b"not-reached" not in out
    assert b"tssh: SSH disabled on this node" in out + err
    assert port_closed(SERVER_IP, daemon.port)
    status = daemon.status()
    assert status["ssh"] is False and status["listening"] == [] and status["sessions"] == []

    on = daemon.tssh("set", "--ssh")
    assert on.returncode == 0, on.stderr
    wait_for_port(SERVER_IP, daemon.port, timeout=5)
    assert run_ssh(daemon, "root", "echo back").stdout == b"back\n"


def test_switch_survives_restart(daemon_factory: DaemonFactory) -> None:
    first = daemon_factory()
    assert first.tssh("set", "--ssh=false").returncode == 0
    first.stop()
    second = TsshDaemon(first.workdir, first.port, first.netmap, first.policy,
                        first.state_dir)
    daemon_factory.started.append(second)
    second.start(expect_listening=False)
    assert second.status()["ssh"] is False
    time.sleep(0.3)
    assert port_closed(SERVER_IP, second.port, timeout=0.5)
    assert second.tssh("set", "--ssh").returncode == 0
    second.stop()
    third = TsshDaemon(first.workdir, first.port, first.netmap, first.policy,
                       first.state_dir)
    daemon_factory.started.append(third)
    third.start()  # listens again at once
    assert third.status()["ssh"] is True


def test_status_reports_listener_identity_and_policy(daemon: TsshDaemon) -> None:
    status = daemon.status()
    assert status["listening"] == [f"{SERVER_IP}:{daemon.port}"]
    assert status["identity"] == "netmap"
    policy = status["policy"]
    assert isinstance(policy, dict)
    assert policy["source"] == "file" and policy["location"] == str(daemon.policy)
    assert policy["error"] is None and policy["rules"] == 3
    human = daemon.tssh("status")
    assert human.returncode == 0 and str(daemon.port) in human.stdout


def test_shared_state_dir_refused_before_host_keys_or_listening(
    daemon_factory: DaemonFactory,
) -> None:
    """Whoever can write the state dir could plant the host key the daemon then serves (or
    the SSH switch): refuse it before reading anything from it or listening."""
    state = daemon_factory.workdir / "shared-state"
    state.mkdir()
    state.chmod(0o777)
    d = TsshDaemon(daemon_factory.workdir, free_port(), daemon_factory.netmap,
                   daemon_factory.policy, state)
    daemon_factory.started.append(d)
    with d.log.open("ab") as log:
        proc = subprocess.Popen(d.command(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
    d.proc = proc
    assert proc.wait(30) != 0
    log = d.log.read_text()
    assert "writable by other users" in log
    assert '"listening"' not in log
    assert sorted(p.name for p in state.iterdir()) == []


def test_enable_fails_cleanly_when_the_port_is_taken(daemon: TsshDaemon) -> None:
    assert daemon.tssh("set", "--ssh=false").returncode == 0
    assert port_closed(SERVER_IP, daemon.port)
    blocker = socket.socket()
    try:
        blocker.bind((SERVER_IP, daemon.port))
        blocker.listen()
        on = daemon.tssh("set", "--ssh")
        assert on.returncode != 0
        assert f"cannot listen on {SERVER_IP} port {daemon.port}" in on.stderr
        assert daemon.status()["ssh"] is False
    finally:
        blocker.close()
    assert daemon.tssh("set", "--ssh").returncode == 0
    assert run_ssh(daemon, "root", "echo up").stdout == b"up\n"
