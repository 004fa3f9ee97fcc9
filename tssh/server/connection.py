"""The SSH transport tssh serves: asyncssh's server connection, its algorithms, three changes.

Algorithms (docs/daemon.md): modern only. Key exchange curve25519 and the ML-KEM hybrid
(asyncssh has no sntrup761); ed25519 and rsa-sha2-* host key signatures; AEAD ciphers, then
AES-CTR with encrypt-then-MAC SHA-2 MACs. No SHA-1, no NIST-curve key exchange, no CBC.

First change: ``signature_algs`` does not cover host keys: asyncssh offers every signature a
host key can make (for RSA also SHA-1 ``ssh-rsa`` and the ``ssh-rsa-sha*@ssh.com`` family)
and picks from the client's list alone, so ``TsshServerConnection`` narrows its host key
algorithms to ``SIGNATURE_ALGS``.

Second change: asyncssh sends an encrypted empty ``SSH_MSG_IGNORE`` before *every*
packet once encryption is on. That is the old counter-measure against chosen-plaintext
attacks on CBC-mode IVs; with only AEAD and CTR ciphers negotiable it protects nothing and costs a
packet (encryption, framing, a ``send``) per packet. ``TsshServerConnection`` drops exactly
those packets. ``tests/server/test_connection.py`` checks that upstream still inserts them
the way this override expects, so an asyncssh upgrade that changes it is noticed.

Third change: TCP acknowledgements go out at once (``TCP_QUICKACK``); see
``data_received``.

Fourth change: asyncssh pads every packet with ``os.urandom(padlen)``, one ``getrandom``
system call per packet: 15 % of the daemon's CPU while it streams a download. Its module
sees an ``os`` whose ``urandom`` hands out bytes of the kernel's CSPRNG read 64 KiB at a time
(OpenSSH's ``arc4random_buf`` buffers likewise); everything else is the real ``os``. The
padding is encrypted with the packet, and the same generator supplies it, only in fewer
calls. The test file above checks that asyncssh still pads this way.

Importing this module also applies ``tssh.server.asyncssh_speedups`` (one AES-GCM context
per key, no packet log formatting unless asyncssh's packet logging is on).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import types
from collections.abc import Sequence
from typing import Any

import asyncssh
import asyncssh.connection
from asyncssh.constants import MSG_IGNORE
from asyncssh.packet import String

import tssh.server.asyncssh_speedups  # noqa: F401  (patches asyncssh's send path on import)
from tssh.forwarding import X11_REFUSAL
from tssh.server.screen import Screened

KEX_ALGS = ("mlkem768x25519-sha256", "curve25519-sha256", "curve25519-sha256@libssh.org")
ENCRYPTION_ALGS = (
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
)
MAC_ALGS = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com")
SIGNATURE_ALGS = ("ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256")
# What host keys may sign with (asyncssh would also offer ssh-rsa and ssh-rsa-sha*@ssh.com).
HOST_KEY_ALGS = SIGNATURE_ALGS
COMPRESSION_ALGS = ("none",)
_HOST_KEY_ALGS = frozenset(alg.encode() for alg in SIGNATURE_ALGS)

_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only

# The exact arguments asyncssh's send_packet uses for its inserted ignore packet.
_INSERTED_IGNORE_ARGS = (String(b""),)


RANDOM_BUFFER = 64 * 1024


class BufferedRandom:
    """``os.urandom`` for many small reads: the kernel CSPRNG read in RANDOM_BUFFER pieces,
    each byte handed out once. For the event loop's thread (no lock)."""

    def __init__(self, size: int = RANDOM_BUFFER) -> None:
        self._size = size
        self._buf = b""
        self._pos = 0

    def __call__(self, n: int) -> bytes:
        if self._pos + n > len(self._buf):
            self._buf = os.urandom(max(self._size, n))
            self._pos = 0
        out = self._buf[self._pos:self._pos + n]
        self._pos += n
        return out


class _OsWithBufferedRandom(types.ModuleType):
    """The ``os`` module, with ``urandom`` buffered (for asyncssh.connection only)."""

    def __init__(self, urandom: BufferedRandom) -> None:
        super().__init__("os")
        self.urandom = urandom

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


asyncssh.connection.os = _OsWithBufferedRandom(BufferedRandom())  # type: ignore[attr-defined]


def algorithm_options() -> dict[str, Any]:
    """Keyword arguments for ``SSHServerConnectionOptions`` that fix the algorithm lists."""
    return {
        "kex_algs": list(KEX_ALGS),
        "encryption_algs": list(ENCRYPTION_ALGS),
        "mac_algs": list(MAC_ALGS),
        "signature_algs": list(SIGNATURE_ALGS),
        "compression_algs": list(COMPRESSION_ALGS),
    }


class TsshServerConnection(asyncssh.SSHServerConnection):
    """asyncssh's server connection: SHA-2 host key signatures only, no per-packet
    ``SSH_MSG_IGNORE``, TCP acknowledgements sent at once."""

    # Who the listener found the peer to be at accept (tssh.server.screen), for the login.
    screened: Screened | None = None
    # A connection a supervisor handed to this worker process (tssh.server.handoff): its id
    # there, and what the supervisor read from it before handing it over.
    handoff_id: int | None = None
    early: bytes = b""

    def __init__(self, loop: asyncio.AbstractEventLoop, options: Any, acceptor: Any = None,
                 error_handler: Any = None, wait: str | None = None) -> None:
        super().__init__(loop, options, acceptor, error_handler, wait)
        # What KEXINIT offers; asyncssh fills it from every algorithm the keys can sign with.
        self._server_host_key_algs = [
            alg for alg in options.server_host_keys if alg in _HOST_KEY_ALGS
        ]

    def choose_server_host_key(self, peer_host_key_algs: Sequence[bytes]) -> bool:
        """asyncssh picks from the client's list alone, offered or not: filter it first."""
        allowed = [alg for alg in peer_host_key_algs if alg in _HOST_KEY_ALGS]
        return bool(super().choose_server_host_key(allowed))

    def suspend_login_timer(self) -> None:
        """A login held for a check (tssh.server.check) waits longer than ``login_timeout``;
        the hold has its own timeout (``check_timeout``)."""
        self._cancel_login_timer()

    async def create_agent_listener(self) -> bool:
        """``ssh -A``: the agent socket is made as the session's user, by the connection's
        forwards (tssh/server/forward.py), not in a directory of the daemon's."""
        if self._agent_listener:
            return True
        agent_requested = getattr(self._owner, "agent_requested", None)
        if agent_requested is None:
            return False
        listener = await agent_requested()
        if listener is None:
            return False
        self._agent_listener = listener
        return True

    async def attach_x11_listener(self, chan: Any, auth_proto: bytes, auth_data: bytes,
                                  screen: int) -> None:
        """X11 is refused; the client learns why from a debug message (``ssh -v``)."""
        with contextlib.suppress(Exception):
            self.send_debug(X11_REFUSAL, always_display=True)
        return None

    def send_packet(self, pkttype: int, *args: bytes, handler: Any = None) -> None:
        if pkttype == MSG_IGNORE and args == _INSERTED_IGNORE_ARGS:
            return
        super().send_packet(pkttype, *args, handler=handler)

    def connection_made(self, transport: Any) -> None:
        self._tssh_sock = transport.get_extra_info("socket")
        super().connection_made(transport)
        if self.early:
            early, self.early = self.early, b""
            self.data_received(early)

    def data_received(self, data: bytes, datatype: Any = None) -> None:
        super().data_received(data, datatype)
        # Acknowledge at once instead of after the kernel's delayed-ACK timer (40 ms). A
        # non-interactive OpenSSH client leaves Nagle on, so when it sends two messages in
        # a row (NEWKEYS then a service request, channel requests, ...) the second waits for
        # our ACK of the first: ``ssh host true`` took 60-100 ms instead of 15-30 ms.
        # Linux clears the flag again by itself, hence after every read.
        sock = self._tssh_sock
        if sock is not None and _TCP_QUICKACK is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
