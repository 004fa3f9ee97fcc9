"""Listening sockets confined to an interface (the kernel-level side is driven end to end,
over a real WireGuard mesh, in tests/e2e/test_tailnet.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tssh.config import Config
from tssh.listensocket import DeviceBindError, listen_device, open_listening_socket


def test_only_the_wireguard_backend_confines_listeners(tmp_path: Path) -> None:
    assert listen_device(Config(identity="wireguard", wireguard_interface="wg7")) == "wg7"
    assert listen_device(Config(identity="netmap", wireguard_interface="wg7")) is None
    assert listen_device(Config(identity="tailscale")) is None


def test_socket_without_a_device_listens_on_every_interface() -> None:
    sock = open_listening_socket("127.0.0.1", 0)
    with sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\0") == b""
        with socket.create_connection(sock.getsockname(), timeout=5):
            pass


def test_socket_bound_to_a_device_before_bind_and_still_accepts_on_it() -> None:
    sock = open_listening_socket("127.0.0.1", 0, device="lo")
    with sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\0") == b"lo"
        assert not sock.getblocking()
        with socket.create_connection(sock.getsockname(), timeout=5):
            pass


def test_ipv6_socket_is_v6_only() -> None:
    try:
        sock = open_listening_socket("::1", 0, device="lo")
    except OSError as e:
        pytest.skip(reason=f"no IPv6 loopback here: {e}")
    with sock:
        assert sock.family == socket.AF_INET6
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1


def test_missing_interface_is_refused_with_an_actionable_message() -> None:
    with pytest.raises(DeviceBindError, match=r"'tsshnodev0': no such interface"):
        open_listening_socket("127.0.0.1", 0, device="tsshnodev0")
