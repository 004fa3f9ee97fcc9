"""Connection limits (docs/daemon.md, "Limits") seen to fire against the real daemon, with the
stock client and raw sockets: login grace time, max_startups, idle timeout, session duration,
client alive."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time

import pytest

from tests.e2e.conftest import (
    ALICE_IP,
    SERVER_IP,
    DaemonFactory,
    TsshDaemon,
    require_tool,
    run_ssh,
    ssh_command,
)

pytestmark = pytest.mark.usefixtures("ssh_client")


@pytest.fixture
def ssh_client() -> None:
    require_tool("ssh")


def closed_after(sock: socket.socket, limit: float) -> float:
    """Seconds until the daemon closes ``sock`` (reading whatever it sends meanwhile)."""
    started = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(4096):
            pass
    except (ConnectionResetError, TimeoutError):
        pass
    return time.monotonic() - started


def test_login_grace_time_closes_a_connection_that_never_logs_in(
        daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(["--login-grace-time", "1"])
    with socket.create_connection((SERVER_IP, daemon.port), 5,
                                  source_address=(ALICE_IP, 0)) as s:
        s.sendall(b"SSH-2.0-OpenSSH_9.2 grace-test\r\n")  # then nothing more
        elapsed = closed_after(s, 15)
    assert 0.8 <= elapsed < 10, elapsed
    # and a real login within the grace time is unaffected
    result = run_ssh(daemon, "root", "echo in")
    assert result.returncode == 0 and result.stdout == b"in\n", result.stderr


def test_max_startups_bounds_connections_logging_in(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(["--max-startups", "3"])
    # A whole login first: the start-up check's own probe connection is long gone after it.
    assert run_ssh(daemon, "root", "true").returncode == 0
    held = [socket.create_connection((SERVER_IP, daemon.port), 5, source_address=(ALICE_IP, 0))
            for _ in range(5)]
    try:
        greeted = 0
        for s in held:
            s.settimeout(5)
            with contextlib.suppress(OSError):
                greeted += s.recv(64).startswith(b"SSH-2.0-")
        assert greeted == 3, daemon.log.read_text()[-3000:]
    finally:
        for s in held:
            s.close()
    result = run_ssh(daemon, "root", "echo in")  # the slots are free again
    assert result.returncode == 0, result.stderr


def test_idle_timeout_ends_a_quiet_connection_not_a_busy_one(
        daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(["--idle-timeout", "2"])
    started = time.monotonic()
    quiet = run_ssh(daemon, "root", "sleep 30", timeout=30)
    elapsed = time.monotonic() - started
    assert quiet.returncode == 255 and 1.5 <= elapsed < 10, (elapsed, quiet.stderr)
    assert b"no input or output for 2 s (idle_timeout)" in quiet.stderr
    busy = run_ssh(daemon, "root", "for i in 1 2 3 4 5 6 7 8; do echo $i; sleep 0.5; done")
    assert busy.returncode == 0, busy.stderr
    assert busy.stdout.split() == [str(i).encode() for i in range(1, 9)]
    entries = [e for e in daemon.log_entries() if e.get("event") == "connection.idle"]
    assert len(entries) == 1 and entries[0]["idle_timeout"] == 2


def test_session_max_duration_ends_the_session(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(["--session-max-duration", "1"])
    started = time.monotonic()
    result = run_ssh(daemon, "root", "echo start; sleep 30; echo not-reached", timeout=30)
    elapsed = time.monotonic() - started
    assert result.stdout == b"start\n" and elapsed < 10, (elapsed, result.stderr)
    assert b"reached session_max_duration (1 s)" in result.stderr
    assert result.returncode != 0
    quick = run_ssh(daemon, "root", "echo quick")  # shorter sessions are not touched
    assert quick.returncode == 0 and quick.stdout == b"quick\n"


def sessions(daemon: TsshDaemon) -> list[object]:
    value = daemon.status().get("sessions")
    return value if isinstance(value, list) else []


def test_client_alive_closes_a_client_that_stopped_answering(
        daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(["--client-alive-interval", "1", "--client-alive-count-max", "2"])
    client = subprocess.Popen(ssh_command(daemon, "root", "echo started; sleep 60"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert client.stdout is not None and client.stdout.readline() == b"started\n"
        assert len(sessions(daemon)) == 1
        os.kill(client.pid, signal.SIGSTOP)  # the TCP connection stays; nothing answers
        deadline = time.monotonic() + 15
        while sessions(daemon) and time.monotonic() < deadline:
            time.sleep(0.25)
        assert sessions(daemon) == []
    finally:
        os.kill(client.pid, signal.SIGCONT)
        client.kill()
        client.wait()


def test_a_connection_that_never_asks_to_log_in_leaves_a_log_line(
        daemon_factory: DaemonFactory) -> None:
    """Bytes that are not SSH, and a client that waits out the grace time: each is closed
    and logged (the audit log only has connections that asked to log in)."""
    daemon = daemon_factory(["--login-grace-time", "1"])
    with socket.create_connection((SERVER_IP, daemon.port), 5,
                                  source_address=(ALICE_IP, 0)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        closed_after(s, 15)
    with socket.create_connection((SERVER_IP, daemon.port), 5,
                                  source_address=(ALICE_IP, 0)) as s:
        s.sendall(b"SSH-2.0-OpenSSH_9.2 silent\r\n")
        closed_after(s, 15)
    deadline = time.monotonic() + 10
    lines: list[dict[str, object]] = []
    while len(lines) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
        lines = [e for e in daemon.log_entries()  # (the fixture's port probe: 127.0.0.1)
                 if e.get("msg") == "connection closed before login"
                 and e.get("peer_ip") == ALICE_IP]
    assert len(lines) == 2, lines
    assert all(e["error"] for e in lines), lines  # why: the parse error, the timeout
