"""Listening TCP sockets, optionally confined to one network interface.

With the ``wireguard`` identity backend a peer's identity is its source address, which
WireGuard vouches for only on packets that came through its interface. Binding the listener
to that interface (``SO_BINDTODEVICE``, set before ``bind``) makes the kernel itself refuse a
connection that arrives any other way (over the underlay, with a forged mesh source address):
it never reaches the SSH server or the recorder at all.
"""

from __future__ import annotations

import errno
import socket

from tssh.config import Config
from tssh.errors import TsshError


class DeviceBindError(TsshError):
    """A listener cannot be confined to the WireGuard interface; the node refuses to listen
    rather than silently accept packets from every interface."""


def listen_device(config: Config) -> str | None:
    """The interface listeners must be bound to: the WireGuard one when that backend is in
    use (the only backend whose identities hold only on one interface), else none."""
    return config.wireguard_interface if config.identity == "wireguard" else None


def open_listening_socket(
    address: str, port: int, *, device: str | None = None, backlog: int = 512
) -> socket.socket:
    """A non-blocking TCP socket listening on ``address``:``port``, bound to ``device`` first
    when given.

    Raises DeviceBindError when the device binding fails (unknown interface, or no
    CAP_NET_RAW on a kernel older than 5.7) and OSError when ``bind`` or ``listen`` does.
    """
    family, _, _, _, sockaddr = socket.getaddrinfo(
        address, port, type=socket.SOCK_STREAM,
        flags=socket.AI_PASSIVE | socket.AI_NUMERICHOST,
    )[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if device is not None:
            _bind_to_device(sock, device)
        sock.bind(sockaddr)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_to_device(sock: socket.socket, device: str) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
    except OSError as e:
        if e.errno == errno.ENODEV:
            raise DeviceBindError(
                f"cannot bind the listener to WireGuard interface {device!r}: no such "
                "interface; bring it up first or fix wireguard_interface"
            ) from None
        if e.errno == errno.EPERM:
            raise DeviceBindError(
                f"cannot bind the listener to WireGuard interface {device!r}: permission "
                "denied; run as root or grant CAP_NET_RAW (needed on kernels before 5.7)"
            ) from None
        raise DeviceBindError(
            f"cannot bind the listener to WireGuard interface {device!r}: "
            f"{e.strerror or e}"
        ) from None
