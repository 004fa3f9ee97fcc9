"""The transport: algorithm lists, and the per-packet SSH_MSG_IGNORE that tssh drops."""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Iterator
from typing import Any

import asyncssh
import asyncssh.connection
import pytest
from asyncssh.constants import MSG_IGNORE

from tssh.server.connection import (
    ENCRYPTION_ALGS,
    KEX_ALGS,
    MAC_ALGS,
    SIGNATURE_ALGS,
    BufferedRandom,
    TsshServerConnection,
    algorithm_options,
)

PAYLOAD = 256 * 1024


def test_no_weak_algorithms() -> None:
    assert not [a for a in ENCRYPTION_ALGS if "cbc" in a or "arcfour" in a or "3des" in a]
    assert not [a for a in KEX_ALGS if "nistp" in a or "sha1" in a or "group" in a]
    assert all("etm" in m and "sha2" in m for m in MAC_ALGS)
    assert "ssh-rsa" not in SIGNATURE_ALGS
    # asyncssh must know every name we pass, or it would refuse to start.
    from asyncssh.encryption import get_encryption_algs
    from asyncssh.kex import get_kex_algs
    from asyncssh.mac import get_mac_algs

    assert set(KEX_ALGS) <= {a.decode() for a in get_kex_algs()}
    assert set(ENCRYPTION_ALGS) <= {a.decode() for a in get_encryption_algs()}
    assert set(MAC_ALGS) <= {a.decode() for a in get_mac_algs()}


def test_upstream_still_inserts_ignore_packets_the_way_we_undo() -> None:
    """If this fails, asyncssh changed send_packet: re-check TsshServerConnection."""
    source = inspect.getsource(asyncssh.connection.SSHConnection.send_packet)
    assert "self.send_packet(MSG_IGNORE, String(b''))" in source


class _Server(asyncssh.SSHServer):  # type: ignore[misc]
    def begin_auth(self, username: str) -> bool:
        return False


async def _handle(process: Any) -> None:
    process.stdout.write(b"x" * PAYLOAD)
    process.exit(0)


@pytest.fixture
def ignore_counter(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts SSH_MSG_IGNORE packets an asyncssh client receives."""
    count = [0]
    handlers = asyncssh.connection.SSHConnection._packet_handlers
    original = handlers[MSG_IGNORE]

    def counting(self: Any, *args: Any) -> Any:
        if self.is_client():
            count[0] += 1
        return original(self, *args)

    monkeypatch.setitem(handlers, MSG_IGNORE, counting)
    yield count


async def _ignores_seen(conn_class: type, counter: list[int]) -> int:
    loop = asyncio.get_running_loop()
    options = await asyncssh.SSHServerConnectionOptions.construct(
        server_factory=_Server, server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        process_factory=_handle, encoding=None, **algorithm_options(),
    )
    server = await loop.create_server(
        lambda: conn_class(loop, options, None, None), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    try:
        counter[0] = 0
        async with asyncssh.connect(
            "127.0.0.1", port, known_hosts=None, username="u", client_keys=None,
            encryption_algs=["aes128-gcm@openssh.com"],
        ) as conn:
            result = await conn.run("x", encoding=None)
            assert len(result.stdout) == PAYLOAD
        return counter[0]
    finally:
        server.close()
        await server.wait_closed()


async def test_tssh_connection_sends_no_ignore_packets(ignore_counter: list[int]) -> None:
    stock = await _ignores_seen(asyncssh.SSHServerConnection, ignore_counter)
    ours = await _ignores_seen(TsshServerConnection, ignore_counter)
    assert stock > 8  # upstream: one per packet (the data alone is 8+ packets)
    assert ours == 0


@pytest.mark.parametrize(
    "host_key_alg", ["ssh-rsa", "ssh-rsa-sha256@ssh.com", "ssh-rsa-sha512@ssh.com"]
)
async def test_rsa_host_key_signs_with_standard_sha2_only(host_key_alg: str) -> None:
    """asyncssh offers every signature an RSA key can make; tssh offers SIGNATURE_ALGS only."""
    loop = asyncio.get_running_loop()
    options = await asyncssh.SSHServerConnectionOptions.construct(
        server_factory=_Server,
        server_host_keys=[asyncssh.generate_private_key("ssh-rsa", key_size=2048)],
        process_factory=_handle, encoding=None, **algorithm_options(),
    )
    server = await loop.create_server(
        lambda: TsshServerConnection(loop, options, None, None), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(asyncssh.KeyExchangeFailed):
            async with asyncssh.connect(
                "127.0.0.1", port, known_hosts=None, username="u", client_keys=None,
                server_host_key_algs=[host_key_alg],
            ):
                pass
        async with asyncssh.connect(
            "127.0.0.1", port, known_hosts=None, username="u", client_keys=None,
            server_host_key_algs=["rsa-sha2-256"],
        ) as conn:
            result = await conn.run("x", encoding=None)
            assert len(result.stdout) == PAYLOAD
    finally:
        server.close()
        await server.wait_closed()


def test_upstream_still_takes_host_key_algs_from_options() -> None:
    """If this fails, asyncssh changed how a server offers its host key algorithms."""
    source = inspect.getsource(asyncssh.connection.SSHServerConnection.__init__)
    assert "self._server_host_key_algs = list(options.server_host_keys.keys())" in source
    assert "self._server_host_key_algs" in inspect.getsource(
        asyncssh.connection.SSHConnection._send_kexinit)


def test_upstream_still_pads_with_os_urandom_in_its_module() -> None:
    """The fourth change replaces ``os`` in asyncssh.connection: noticed if padding moves."""
    source = inspect.getsource(asyncssh.connection.SSHConnection.send_packet)
    assert "os.urandom(padlen)" in source
    patched = asyncssh.connection.os
    assert isinstance(patched.urandom, BufferedRandom)
    assert patched.environ is os.environ and patched.access is os.access  # the rest is os


def test_buffered_random_reads_the_kernel_in_large_pieces(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.urandom

    def counting(n: int) -> bytes:
        calls.append(n)
        return real(n)

    monkeypatch.setattr(os, "urandom", counting)
    rng = BufferedRandom(4096)
    pieces = [rng(16) for _ in range(1000)]
    assert all(len(p) == 16 for p in pieces)
    assert len(set(pieces)) == 1000  # no byte handed out twice (16 random bytes never repeat)
    assert len(calls) == 4  # 16,000 bytes from 4 reads of 4 KiB
    assert len(rng(10_000)) == 10_000  # larger than the buffer: one read of its own
    assert calls[-1] == 10_000
