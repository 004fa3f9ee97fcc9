"""Connection limits with the stock client: login grace time, keepalives, idle timeout,
session duration (docs/config.md)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

from tests.e2e.conftest import ALICE_IP, BOB_IP, SERVER_IP, DaemonFactory, ssh_command
from tests.polling import wait_for


def test_login_grace_time(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(["--login-grace-time", "2"])
    with socket.socket() as sock:
        sock.bind((ALICE_IP, 0))
        sock.settimeout(10)
        sock.connect((SERVER_IP, daemon.port))
        start = time.monotonic()
        assert sock.recv(100).startswith(b"SSH-2.0-tssh")
        sock.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")  # and then nothing: no key exchange
        data = b"x"
        while data:  # the server's KEXINIT, then the close
            data = sock.recv(65536)
        waited = time.monotonic() - start
    assert 1.5 <= waited < 6


def test_idle_timeout_ends_a_quiet_connection_not_a_busy_one(
        daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(["--idle-timeout", "2"])
    start = time.monotonic()
    quiet = subprocess.run(ssh_command(daemon, "root", "sleep 30; echo not-reached"),
                           capture_output=True, timeout=30)
    assert 1.5 <= time.monotonic() - start < 6
    assert b"not-reached" not in quiet.stdout
    assert b"without input or output (idle_timeout)" in quiet.stdout + quiet.stderr
    busy = subprocess.run(ssh_command(daemon, "root",
                                      "for i in 1 2 3 4 5 6 7 8; do echo $i; sleep 0.5; done"),
                          capture_output=True, timeout=30)
    assert busy.returncode == 0, busy.stderr
    assert busy.stdout.split()[-1] == b"8"


def test_session_max_duration(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(["--session-max-duration", "2"])
    start = time.monotonic()
    result = subprocess.run(
        ssh_command(daemon, "root", "while :; do echo tick; sleep 0.2; done"),
        capture_output=True, timeout=30)
    assert 1.5 <= time.monotonic() - start < 6
    assert b"it lasted 2 s (session_max_duration)" in result.stdout + result.stderr


def test_client_alive_drops_a_vanished_client(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(["--client-alive-interval", "1", "--client-alive-count-max", "2"])
    proc = subprocess.Popen(ssh_command(daemon, "root", "echo started; sleep 60"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"started\n"
        assert daemon.status()["connections"] == 1
        os.kill(proc.pid, signal.SIGSTOP)  # the client stops answering
        wait_for(lambda: daemon.status()["connections"] == 0, timeout=10,
                 what="the connection dropped")
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait(10)


def test_max_startups_in_total(daemon_factory: DaemonFactory) -> None:
    """``max_startups = 3`` (3:100:3): a fourth connection still logging in is closed at
    once, from whichever node; a finished login frees its place."""
    daemon = daemon_factory(["--max-startups", "3"])
    # The start-up probe's connection (tests.ports.wait_for_port) must be gone first.
    wait_for(lambda: daemon.status()["connections"] == 0, what="no connection in progress")
    held: list[socket.socket] = []
    try:
        for source in (ALICE_IP, BOB_IP, ALICE_IP, BOB_IP):
            held.append(socket.create_connection((SERVER_IP, daemon.port), 5,
                                                 source_address=(source, 0)))
        greeted = []
        for s in held:
            s.settimeout(5)
            try:
                greeted.append(s.recv(64).startswith(b"SSH-2.0-"))
            except OSError:
                greeted.append(False)
        # Accepted in the kernel's order, screened concurrently: any one may be the fourth.
        assert sorted(greeted) == [False, True, True, True]
    finally:
        for s in held:
            s.close()
    result = wait_for(lambda: (r := subprocess.run(ssh_command(daemon, "root", "echo in"),
                                                   capture_output=True, timeout=30)
                               ).returncode == 0 and r, what="a login once they are gone")
    assert result.stdout == b"in\n"
