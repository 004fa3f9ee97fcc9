"""Patches to asyncssh's per-packet send path that the daemon carries (docs/performance.md,
"What was changed for speed").

A download costs the daemon about 1.4-2x sshd's CPU per byte; a profile of one
(``ssh host 'head -c 256M /dev/zero'``) showed two pieces of asyncssh's per-packet Python
that do nothing useful:

- **A new AES-GCM context per packet.** ``GCMCipher.encrypt_and_sign`` and
  ``verify_and_decrypt`` build ``AESGCM(key)`` for every packet (key set-up, an OpenSSL
  context) although the key only changes with a new ``GCMCipher`` at re-key: 4-5 µs of a
  32 KiB packet's 13-14 µs of encryption. Here each ``GCMCipher`` makes its ``AESGCM`` once;
  the nonce (the invocation counter) still goes with each call as before. Its
  ``header + data[:-16]`` also copied the 32 KiB ciphertext twice; a memoryview slice makes
  that one copy.
- **Packet log lines formatted for nobody.** ``SSHPacketLogger._log_packet`` builds the
  packet's name and byte count for every packet sent or received and only then asks the
  logger, which drops them unless asyncssh's debug level is 3 (``asyncssh.set_debug_level``,
  which tssh never sets). Here it returns at once below level 3, as upstream's logger would.

Each patch replaces functions whose upstream source must hash to the value recorded here:
if an asyncssh upgrade changes one, that patch is not applied (upstream's code runs,
correct and slower) and ``tests/server/test_asyncssh_speedups.py`` fails, so the patch is
checked again, carried forward or dropped. Both are candidates to propose upstream.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Callable
from typing import Any

import asyncssh
from asyncssh.crypto.cipher import GCMCipher
from asyncssh.logging import SSHLogger
from asyncssh.packet import SSHPacketLogger
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)

PATCHED_VERSION = "2.24.1"
_GCM_MAC_SIZE = 16  # asyncssh.crypto.cipher._GCM_MAC_SIZE
_PACKET_DEBUG_LEVEL = 3  # SSHLogger.packet logs only at this debug level

# SHA-256 of ``inspect.getsource`` of each function replaced, in asyncssh PATCHED_VERSION.
UPSTREAM_SOURCES: dict[str, str] = {
    "GCMCipher.__init__": "8dbe9e768f4ecf7a4bac1641c2e574c2914e72c8c06d47eeb81f1355bc44c6a3",
    "GCMCipher._update_iv": "bce250a8d9dc82b6aa456657118d8773477e693b34cdb7f5d34da34e76ccba6d",
    "GCMCipher.encrypt_and_sign":
        "adb87dbdb4f9039ab1f0029bd845b032bd6571d2ae894c7b067ea1f62bb0726e",
    "GCMCipher.verify_and_decrypt":
        "c09eb5b36d0f6a92a6df6430e70d479dbd6354f3403b98b65e9dc9ecccc37b52",
    "SSHPacketLogger._log_packet":
        "f3263d7da93663f1a3825d53a0ef71122da1168957e28d0b84dc20a3bba0c45c",
    "SSHLogger.packet": "a4baf6329fa97dcf3c7a915989c3d72dc08d01e7c4ae63182ebba6017cf45408",
}


def source_hash(func: Callable[..., Any]) -> str:
    """SHA-256 of a function's source text, as ``UPSTREAM_SOURCES`` records it."""
    return hashlib.sha256(inspect.getsource(func).encode()).hexdigest()


# asyncssh's own functions, kept before anything here replaces them.
ORIGINALS: dict[str, Callable[..., Any]] = {
    "GCMCipher.__init__": GCMCipher.__init__,
    "GCMCipher._update_iv": GCMCipher._update_iv,
    "GCMCipher.encrypt_and_sign": GCMCipher.encrypt_and_sign,
    "GCMCipher.verify_and_decrypt": GCMCipher.verify_and_decrypt,
    "SSHPacketLogger._log_packet": SSHPacketLogger._log_packet,
    "SSHLogger.packet": SSHLogger.packet,
}


def unchanged(*names: str) -> bool:
    """Whether asyncssh's functions ``names`` are still the ones these patches were written
    against."""
    return all(source_hash(ORIGINALS[n]) == UPSTREAM_SOURCES[n] for n in names)


def _gcm_init(self: Any, cipher_name: str, key: bytes, iv: bytes) -> None:
    ORIGINALS["GCMCipher.__init__"](self, cipher_name, key, iv)
    self._tssh_aead = AESGCM(key)  # one context for the key's lifetime


def _gcm_encrypt_and_sign(self: Any, header: bytes, data: bytes) -> tuple[bytes, bytes]:
    sealed: bytes = self._tssh_aead.encrypt(self._iv, data, header)
    self._update_iv()
    return header + memoryview(sealed)[:-_GCM_MAC_SIZE], sealed[-_GCM_MAC_SIZE:]


def _gcm_verify_and_decrypt(self: Any, header: bytes, data: bytes,
                            mac: bytes) -> bytes | None:
    try:
        decrypted: bytes | None = self._tssh_aead.decrypt(self._iv, data + mac, header)
    except InvalidTag:
        decrypted = None
    self._update_iv()
    return decrypted


def _log_packet(self: Any, msg: str, pkttype: int, pktid: int | None, packet: Any,
                note: str) -> None:
    if SSHLogger._debug_level < _PACKET_DEBUG_LEVEL:
        return
    ORIGINALS["SSHPacketLogger._log_packet"](self, msg, pkttype, pktid, packet, note)


def apply() -> dict[str, bool]:
    """Apply each patch whose upstream functions are unchanged; which ones were applied."""
    applied = {"gcm_context_per_key": False, "packet_log_when_enabled": False}
    if asyncssh.__version__ != PATCHED_VERSION:
        log.warning("asyncssh speed patches skipped: written for %s, found %s",
                    PATCHED_VERSION, asyncssh.__version__)
        return applied
    if unchanged("GCMCipher.__init__", "GCMCipher._update_iv", "GCMCipher.encrypt_and_sign",
                 "GCMCipher.verify_and_decrypt"):
        GCMCipher.__init__ = _gcm_init  # type: ignore[method-assign]
        GCMCipher.encrypt_and_sign = _gcm_encrypt_and_sign  # type: ignore[method-assign]
        GCMCipher.verify_and_decrypt = _gcm_verify_and_decrypt  # type: ignore[method-assign]
        applied["gcm_context_per_key"] = True
    if unchanged("SSHPacketLogger._log_packet", "SSHLogger.packet"):
        SSHPacketLogger._log_packet = _log_packet  # type: ignore[method-assign]
        applied["packet_log_when_enabled"] = True
    skipped = [name for name, done in applied.items() if not done]
    if skipped:
        log.warning("asyncssh speed patches skipped, upstream code changed: %s",
                    ", ".join(skipped))
    return applied


APPLIED = apply()
