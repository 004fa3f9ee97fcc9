"""Addresses no backend knows are refused at accept and never hold a start-up slot."""

from __future__ import annotations

import selectors
import socket
import time

from tests.e2e.conftest import SERVER_IP, UNKNOWN_IP, TsshDaemon, run_ssh
from tssh.server.screen import LINGER_LIMIT
from tssh.server.startups import MAX_STARTUPS, PER_SOURCE_STARTUPS

# Nine addresses the netmap does not know, 300 connections: more than one source may hold
# (32) and more than all may (256) if they were counted.
UNKNOWN_SOURCES = [f"127.0.0.{n}" for n in range(66, 75)]
HELD = 300


def _read_until_eof(socks: list[socket.socket], timeout: float) -> dict[socket.socket, bytes]:
    """What each socket received before EOF (or a reset); those still open at the deadline
    are missing from the result."""
    received: dict[socket.socket, bytearray] = {s: bytearray() for s in socks}
    done: dict[socket.socket, bytes] = {}
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        while len(done) < len(socks):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for key, _ in sel.select(remaining):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    received[s] += data
                else:
                    done[s] = bytes(received[s])
                    sel.unregister(s)
    return done


def test_unknown_addresses_do_not_lock_out_known_users(daemon: TsshDaemon) -> None:
    assert MAX_STARTUPS.full < HELD and HELD // len(UNKNOWN_SOURCES) > PER_SOURCE_STARTUPS
    held: list[socket.socket] = []
    try:
        for i in range(HELD):
            source = UNKNOWN_SOURCES[i % len(UNKNOWN_SOURCES)]
            held.append(socket.create_connection((SERVER_IP, daemon.port), 5,
                                                 source_address=(source, 0)))
        opened = time.monotonic()
        closed = _read_until_eof(held, timeout=3.0)
        took = time.monotonic() - opened
        # Each saw EOF promptly, told why, without a handshake.
        assert len(closed) == HELD, f"{HELD - len(closed)} unknown connections still open"
        assert took < 3.0
        # Each was told why, except those refused while LINGER_LIMIT others were still
        # lingering (reset at once, by design): how many that is depends on the pace here.
        told = 0
        for s, data in closed.items():
            if not data:
                continue
            assert data.startswith(b"SSH-2.0-tssh\r\n"), data[:80]
            source = s.getsockname()[0]
            assert f"tssh: unknown peer {source}: not a node of this tailnet".encode() in data
            told += 1
        assert told >= LINGER_LIMIT
        # A known user logs in while they are (or were just) there.
        result = run_ssh(daemon, "root", "echo in")
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"in\n"
    finally:
        for s in held:
            s.close()
    # Logged once per address, not once per connection.
    refusals = [e for e in daemon.log_entries()
                if e.get("event") == "connection.unknown_peer"
                and e.get("peer_ip") in UNKNOWN_SOURCES]  # not the fixture's port probe
    assert sorted(e["peer_ip"] for e in refusals) == sorted(UNKNOWN_SOURCES)
    assert sum(int(str(e["refused_since_last"])) for e in refusals) == len(UNKNOWN_SOURCES)
    assert not [e for e in daemon.log_entries()
                if str(e.get("msg", "")).startswith("too many connections")]


def test_unknown_addresses_held_open_while_a_known_user_logs_in(daemon: TsshDaemon) -> None:
    """The lock-out as reported: the unknown connections are opened and left idle, and
    alice connects at once, while they would still be holding slots."""
    held: list[socket.socket] = []
    try:
        for i in range(HELD):
            source = UNKNOWN_SOURCES[i % len(UNKNOWN_SOURCES)]
            held.append(socket.create_connection((SERVER_IP, daemon.port), 5,
                                                 source_address=(source, 0)))
        result = run_ssh(daemon, "root", "echo in")
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"in\n"
    finally:
        for s in held:
            s.close()


def test_stock_client_from_an_unknown_address_is_told_why(daemon: TsshDaemon) -> None:
    started = time.monotonic()
    result = run_ssh(daemon, "root", "true", source=UNKNOWN_IP)
    assert result.returncode == 255
    assert f"tssh: unknown peer {UNKNOWN_IP}: not a node of this tailnet".encode() \
        in result.stderr, result.stderr
    assert time.monotonic() - started < 5
    assert not [e for e in daemon.log_entries() if e.get("msg") == "login refused"]
