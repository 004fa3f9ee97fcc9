"""The supervisor-to-worker hand-off (tssh.server.handoff) over a real socketpair: the
connection's socket and early bytes arrive whole; a malformed datagram leaks no descriptor."""

from __future__ import annotations

import os
import socket

import pytest

from tssh.config import Config
from tssh.server.handoff import HandedConnection, decode_config, encode_config, receive_handed


def _pair() -> tuple[socket.socket, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.setblocking(False)
    return ours, theirs


def test_socket_and_early_bytes_arrive() -> None:
    sender, receiver = _pair()
    left, right = socket.socketpair()  # stands in for the accepted TCP connection
    try:
        early = b"SSH-2.0-OpenSSH_9.2p1\r\n" + bytes(range(256))
        socket.send_fds(sender, [HandedConnection.encode(7, early)], [right.fileno()])
        right.close()  # the supervisor lets go of its copy
        handed = receive_handed(receiver)
        assert handed is not None
        assert (handed.id, handed.early) == (7, early)
        with handed.sock:
            left.sendall(b"ping")
            handed.sock.setblocking(True)
            assert handed.sock.recv(4) == b"ping"  # the very connection
    finally:
        for s in (sender, receiver, left):
            s.close()


def test_nothing_waiting_and_closed() -> None:
    sender, receiver = _pair()
    with pytest.raises(BlockingIOError):
        receive_handed(receiver)
    sender.close()
    assert receive_handed(receiver) is None
    receiver.close()


def test_malformed_datagram_closes_its_descriptor() -> None:
    sender, receiver = _pair()
    left, right = socket.socketpair()
    try:
        before = len(os.listdir("/proc/self/fd"))
        socket.send_fds(sender, [b"not json"], [right.fileno()])
        with pytest.raises(ValueError):
            receive_handed(receiver)
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        for s in (sender, receiver, left, right):
            s.close()


def test_config_round_trip() -> None:
    config = Config(port=2222, listen=("127.0.0.10",), workers=3)
    assert decode_config(encode_config(config)) == config
