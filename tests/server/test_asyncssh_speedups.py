"""The asyncssh patches the daemon carries: still written for the asyncssh installed, and
the same bytes and behaviour as upstream's code (docs/performance.md)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import asyncssh
import pytest
from asyncssh.constants import MSG_CHANNEL_DATA
from asyncssh.crypto.cipher import GCMCipher
from asyncssh.logging import SSHLogger, logger
from asyncssh.packet import SSHPacketLogger
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import tssh.server.connection  # noqa: F401  (what the daemon imports: applies the patches)
from tssh.server import asyncssh_speedups
from tssh.server.asyncssh_speedups import APPLIED, ORIGINALS, UPSTREAM_SOURCES, source_hash


def test_patched_functions_are_still_upstreams() -> None:
    """Fails when an asyncssh upgrade changes a function a patch replaces: read the new
    upstream code, then carry the patch forward (new hash and version) or drop it."""
    assert asyncssh.__version__ == asyncssh_speedups.PATCHED_VERSION
    changed = [name for name, digest in UPSTREAM_SOURCES.items()
               if source_hash(ORIGINALS[name]) != digest]
    assert changed == []
    assert all(APPLIED.values()), APPLIED
    assert GCMCipher.encrypt_and_sign is not ORIGINALS["GCMCipher.encrypt_and_sign"]
    assert SSHPacketLogger._log_packet is not ORIGINALS["SSHPacketLogger._log_packet"]


@pytest.mark.parametrize("name,key_size", [("aes128-gcm", 16), ("aes256-gcm", 32)])
def test_gcm_packets_are_upstreams_bytes(name: str, key_size: int) -> None:
    """One context per key gives exactly the per-packet context's output, nonce by nonce,
    and still refuses a tampered packet."""
    key, iv = os.urandom(key_size), os.urandom(12)
    ours, theirs, reader = GCMCipher(name, key, iv), GCMCipher(name, key, iv), \
        GCMCipher(name, key, iv)
    for size in (16, 32768, 1024, 32768):
        header, payload = os.urandom(4), os.urandom(size)
        sealed = ours.encrypt_and_sign(header, payload)
        assert sealed == ORIGINALS["GCMCipher.encrypt_and_sign"](theirs, header, payload)
        assert all(type(part) is bytes for part in sealed)
        packet, mac = sealed
        assert reader.verify_and_decrypt(header, packet[len(header):], mac) == payload
    # The counter moved on with every packet, as upstream's: a fresh context agrees.
    assert ours._iv == theirs._iv == reader._iv
    packet, mac = ours.encrypt_and_sign(b"hdr!", b"x" * 64)
    assert reader.verify_and_decrypt(b"hdr!", packet[4:], bytes(16)) is None
    assert AESGCM(key).encrypt(theirs._iv, b"x" * 64, b"hdr!") == packet[4:] + mac


class _Logged(SSHPacketLogger):
    def __init__(self, sink: SSHLogger) -> None:
        self._handler_names = {MSG_CHANNEL_DATA: "MSG_CHANNEL_DATA"}
        self._sink = sink

    @property
    def logger(self) -> SSHLogger:
        return self._sink


@pytest.fixture
def debug_level() -> Iterator[None]:
    before = SSHLogger._debug_level
    yield
    asyncssh.set_debug_level(before)


def test_packet_log_only_formatted_when_asyncssh_logs_packets(
        debug_level: None, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = logger.get_child("test")
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(sink, "packet", lambda *args, **kwargs: calls.append(args))
    conn = _Logged(sink)
    asyncssh.set_debug_level(2)
    conn.log_sent_packet(MSG_CHANNEL_DATA, 7, b"x" * 100)
    assert calls == []
    asyncssh.set_debug_level(3)
    conn.log_sent_packet(MSG_CHANNEL_DATA, 7, b"x" * 100)
    conn.log_received_packet(MSG_CHANNEL_DATA, 8, b"y" * 3)
    assert calls == [(7, b"x" * 100, "%s %s, %s%s", "Sent", "MSG_CHANNEL_DATA (94)",
                      "100 bytes", ""),
                     (8, b"y" * 3, "%s %s, %s%s", "Received", "MSG_CHANNEL_DATA (94)",
                      "3 bytes", "")]
