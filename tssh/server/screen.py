"""The accept-time identity check: who is at the door, before any SSH or start-up slot.

An address no identity backend knows is known to be unknown the moment the TCP connection
arrives, so it is refused then, without a start-up slot (``startups.py``) and without an SSH
handshake: the listener's first protocol (``ScreeningProtocol``) reads nothing until the
backend has answered, and only then hands the connection to asyncssh. docs/daemon.md
("A connection, step by step") describes what the peer sees.

``AcceptScreen`` keeps that cheap (``whois`` may be an HTTP call to tailscaled, or a
``wg show`` run): concurrent connections from one address share one question, an address
found unknown is refused from memory for ``UNKNOWN_TTL`` seconds (forgotten at once when the
identity file changes), at most ``PENDING_LIMIT`` connections wait for an answer, and each
address's refusals are logged once per ``LOG_INTERVAL``. A backend that fails is no answer:
the connection goes on as before this check existed (it takes a start-up slot and the first
authentication request asks again), neither admitted nor refused on the failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from asyncssh.constants import DISC_HOST_NOT_ALLOWED_TO_CONNECT, MSG_DISCONNECT
from asyncssh.packet import Byte, String, UInt32

from tssh.identity.base import Peer

log = logging.getLogger("tssh.daemon")
audit = logging.getLogger("tssh.audit")

UNKNOWN_TTL = 2.0  # seconds an unknown address is refused without asking the backend again
REUSE_SECONDS = 5.0  # an accept-time answer stands for the login this long (same identity)
MEMORY = 4096  # addresses remembered as unknown / as logged; the oldest are forgotten first
LOG_INTERVAL = 60.0  # an address's refusals are logged once per interval
LOG_LINES = 64  # refusal lines per interval from all addresses together; the rest are counted
PENDING_LIMIT = 256  # connections waiting for their accept-time answer
LINGER_SECONDS = 1.0  # a refused connection is read (and dropped) this long, then closed
LINGER_LIMIT = 256  # refused connections lingering; past this they are reset at once
EARLY_LIMIT = 64 * 1024  # bytes kept from a connection waiting for its answer

Verdict = Literal["known", "unknown", "error", "busy"]


def unknown_peer_message(address: str) -> str:
    """What an address no backend knows is told, at accept or at login."""
    return f"unknown peer {address}: not a node of this tailnet"


@dataclass(frozen=True)
class Screened:
    """The accept-time answer for one connection."""

    verdict: Verdict  # busy: too many connections are waiting for an answer
    address: str
    peer: Peer | None = None  # for "known"
    error: str | None = None  # for "error"
    generation: int = 0  # of identity changes, when the backend was asked
    asked_at: float = 0.0  # monotonic


class AcceptScreen:
    """Answers "may this address have a connection at all?"; bookkeeping and the backend."""

    def __init__(self, whois: Callable[[str], Awaitable[Peer | None]], *,
                 clock: Callable[[], float] = time.monotonic,
                 unknown_ttl: float = UNKNOWN_TTL, reuse_seconds: float = REUSE_SECONDS,
                 memory: int = MEMORY, log_interval: float = LOG_INTERVAL,
                 log_lines: int = LOG_LINES, pending_limit: int = PENDING_LIMIT) -> None:
        self._whois = whois
        self._clock = clock
        self._unknown_ttl = unknown_ttl
        self._reuse_seconds = reuse_seconds
        self._memory = memory
        self._log_interval = log_interval
        self._log_lines = log_lines
        self._pending_limit = pending_limit
        self._generation = 0
        self._unknown: OrderedDict[str, float] = OrderedDict()  # address -> refuse until
        self._inflight: dict[str, asyncio.Task[tuple[Peer | None, int, float]]] = {}
        self._pending = 0
        self._logged: OrderedDict[str, float] = OrderedDict()  # address -> last line
        self._quiet: dict[str, int] = {}  # refusals since the address's last line
        self._window_start = float("-inf")
        self._window_lines = 0
        self._unlogged = 0  # refusals not logged because of LOG_LINES
        self._busy = 0
        self._errors_logged_at = float("-inf")
        self.refused = 0  # unknown peers refused at accept, in all

    def forget(self) -> None:
        """The identity changed (a netmap edit): no earlier answer stands."""
        self._generation += 1
        self._unknown.clear()

    def is_current(self, screened: Screened) -> bool:
        """May the login use this accept-time answer instead of asking again?"""
        return (screened.verdict == "known" and screened.generation == self._generation
                and self._clock() - screened.asked_at <= self._reuse_seconds)

    async def screen(self, address: str) -> Screened:
        now = self._clock()
        until = self._unknown.get(address)
        if until is not None:
            if now < until:
                return self._refused(address, now)
            del self._unknown[address]
        if self._pending >= self._pending_limit:
            self._busy += 1
            if self._busy in (1, 10, 100) or self._busy % 1000 == 0:
                log.warning("too many connections waiting for the identity backend; closing "
                            "new ones at once", extra={"peer_ip": address,
                                                       "refused": self._busy})
            return Screened("busy", address)
        self._pending += 1
        try:
            task = self._inflight.get(address)
            if task is None:
                task = asyncio.ensure_future(self._ask(address))
                self._inflight[address] = task
                task.add_done_callback(lambda t: self._asked(address, t))
            peer, generation, asked_at = await asyncio.shield(task)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the backend failed: no answer (see the module docstring)
            if now - self._errors_logged_at >= self._log_interval:
                self._errors_logged_at = now
                log.warning("identity backend failed at accept; the connection goes on to "
                            "authentication, which asks again",
                            extra={"peer_ip": address, "error": str(e)})
            return Screened("error", address, error=str(e) or type(e).__name__,
                            generation=self._generation, asked_at=now)
        finally:
            self._pending -= 1
        if peer is not None:
            return Screened("known", address, peer, generation=generation, asked_at=asked_at)
        now = self._clock()
        if generation == self._generation:  # else the identity changed meanwhile
            self._unknown[address] = now + self._unknown_ttl
            self._unknown.move_to_end(address)
            while len(self._unknown) > self._memory:
                self._unknown.popitem(last=False)
        return self._refused(address, now)

    async def _ask(self, address: str) -> tuple[Peer | None, int, float]:
        generation, asked_at = self._generation, self._clock()
        return await self._whois(address), generation, asked_at

    def _asked(self, address: str, task: asyncio.Task[Any]) -> None:
        if self._inflight.get(address) is task:
            del self._inflight[address]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone

    def _refused(self, address: str, now: float) -> Screened:
        self.refused += 1
        self._note_refusal(address, now)
        return Screened("unknown", address, generation=self._generation, asked_at=now)

    def _note_refusal(self, address: str, now: float) -> None:
        """One audit line per address per LOG_INTERVAL, LOG_LINES in all per interval."""
        last = self._logged.get(address)
        if last is not None and now - last < self._log_interval:
            self._quiet[address] = self._quiet.get(address, 0) + 1
            return
        if now - self._window_start >= self._log_interval:
            self._window_start, self._window_lines = now, 0
        if self._window_lines >= self._log_lines:
            self._unlogged += 1
            return
        self._window_lines += 1
        self._logged[address] = now
        self._logged.move_to_end(address)
        while len(self._logged) > self._memory:
            gone, _ = self._logged.popitem(last=False)
            self._quiet.pop(gone, None)
        fields: dict[str, object] = {
            "event": "connection.unknown_peer", "peer_ip": address,
            "refused_since_last": self._quiet.pop(address, 0) + 1,
            "refused_total": self.refused,
        }
        if self._unlogged:
            fields["unlogged_other_addresses"], self._unlogged = self._unlogged, 0
        audit.warning("connection refused: unknown peer", extra=fields)


def disconnect_packet(text: str, reason: int = DISC_HOST_NOT_ALLOWED_TO_CONNECT) -> bytes:
    """An unencrypted ``SSH_MSG_DISCONNECT`` (RFC 4253 §11.1), as sent before key exchange:
    block size 8, at least 4 bytes of padding (§6)."""
    payload = Byte(MSG_DISCONNECT) + UInt32(reason) + String(text) + String("")
    padding = 8 - (5 + len(payload)) % 8
    if padding < 4:
        padding += 8
    return UInt32(1 + len(payload) + padding) + Byte(padding) + payload + bytes(padding)


def refusal_bytes(version: bytes, text: str) -> bytes:
    """Our identification line, then a disconnect saying why: the stock ``ssh`` client prints
    ``Received disconnect from ...: tssh: unknown peer ...``."""
    return version + b"\r\n" + disconnect_packet(text)


@dataclass
class Screening:
    """A listener's connections not handed to SSH: waiting for an answer, or refused and
    lingering (``ScreeningProtocol``)."""

    waiting: set[ScreeningProtocol] = field(default_factory=set)
    lingering: set[ScreeningProtocol] = field(default_factory=set)

    def close(self) -> None:
        """Daemon stopping or SSH switched off: drop them all."""
        for protocol in [*self.waiting, *self.lingering]:
            protocol.close()


class ScreeningProtocol(asyncio.Protocol):
    """A listener's first protocol for each connection: reads nothing until the accept-time
    answer is in, then refuses the connection or hands it (``set_protocol``) to SSH."""

    def __init__(self, screen: AcceptScreen, ssh: Callable[[Screened], asyncio.Protocol],
                 refusal: Callable[[str], bytes], live: Screening) -> None:
        self._screen = screen
        self._ssh = ssh
        self._refusal = refusal
        self._live = live
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._handed_over = False
        self._refusing = False
        # What arrived before the answer, for SSH: pause_reading() in connection_made is not
        # honoured by every asyncio (CPython 3.11.2's selector transport still delivers).
        self._early = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.pause_reading()
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        self._live.waiting.add(self)
        self._task = asyncio.ensure_future(self._decide(address))

    async def _decide(self, address: str) -> None:
        try:
            screened = await self._screen.screen(address)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: log it, and drop the connection rather than leave it hung
            log.exception("accept-time identity check failed", extra={"peer_ip": address})
            self.close()
            return
        transport = self._transport
        self._live.waiting.discard(self)
        if transport is None or transport.is_closing():
            return
        if screened.verdict == "busy":
            transport.abort()
        elif screened.verdict == "unknown":
            self._refuse(transport, address)
        else:
            self._handed_over = True
            protocol = self._ssh(screened)
            transport.set_protocol(protocol)
            protocol.connection_made(transport)
            if self._early:
                early, self._early = bytes(self._early), bytearray()
                protocol.data_received(early)
            transport.resume_reading()

    def _refuse(self, transport: asyncio.Transport, address: str) -> None:
        """Say why and send EOF at once; read what the client still sends (closing with
        unread data would reset the connection, and the client might lose the reason)
        for LINGER_SECONDS, then close."""
        if len(self._live.lingering) >= LINGER_LIMIT:
            transport.abort()
            return
        self._refusing = True
        self._early = bytearray()
        try:
            transport.write(self._refusal(f"tssh: {unknown_peer_message(address)}"))
            if transport.can_write_eof():
                transport.write_eof()
        except OSError:  # the client has gone already (ENOTCONN from shutdown)
            transport.abort()
            return
        self._live.lingering.add(self)
        transport.resume_reading()
        self._linger = asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)

    def data_received(self, data: bytes) -> None:
        if self._refusing:
            return  # a refused client's version line and KEXINIT: dropped
        self._early += data
        if len(self._early) > EARLY_LIMIT:  # no SSH client sends this much unanswered
            self.close()

    def eof_received(self) -> bool:
        return False  # the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handed_over:
            return
        self._live.waiting.discard(self)
        self._live.lingering.discard(self)
        self._transport = None
        if self._linger is not None:
            self._linger.cancel()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def close(self) -> None:
        """Drop the connection, answered or not (unless SSH has it now)."""
        transport = self._transport
        if transport is not None and not self._handed_over:
            with contextlib.suppress(Exception):
                transport.abort()
