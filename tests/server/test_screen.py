"""The accept-time identity check (tssh.server.screen): refuse unknown addresses cheaply."""

from __future__ import annotations

import asyncio
import logging
import struct

import asyncssh
import pytest

from tssh.errors import IdentityError
from tssh.identity.base import Peer
from tssh.server.screen import (
    AcceptScreen,
    Screening,
    ScreeningProtocol,
    disconnect_packet,
    refusal_bytes,
)

ALICE = Peer(name="laptop", id="n1", addresses=("127.0.0.2",), user="alice@example.com")


class _Backend:
    def __init__(self) -> None:
        self.asked: list[str] = []
        self.fail = False
        self.known = {"127.0.0.2": ALICE}
        self.gate: asyncio.Event | None = None  # set: answers wait for it

    async def whois(self, address: str) -> Peer | None:
        self.asked.append(address)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise IdentityError("tailscaled is not running")
        return self.known.get(address)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _screen(backend: _Backend, clock: _Clock, **kwargs: int) -> AcceptScreen:
    return AcceptScreen(backend.whois, clock=clock, unknown_ttl=2, reuse_seconds=5,
                        log_interval=60, **kwargs)


async def test_known_is_admitted_and_the_login_reuses_the_answer_while_current() -> None:
    backend, clock = _Backend(), _Clock()
    screen = _screen(backend, clock)
    screened = await screen.screen("127.0.0.2")
    assert screened.verdict == "known" and screened.peer == ALICE
    assert screen.is_current(screened)
    clock.now += 6  # older than reuse_seconds: the login asks again
    assert not screen.is_current(screened)
    fresh = await screen.screen("127.0.0.2")
    screen.forget()  # the identity file changed: ask again
    assert not screen.is_current(fresh)
    assert backend.asked == ["127.0.0.2", "127.0.0.2"]  # known answers are never cached


async def test_unknown_is_refused_and_remembered_briefly() -> None:
    backend, clock = _Backend(), _Clock()
    screen = _screen(backend, clock)
    verdicts = [(await screen.screen("127.0.0.66")).verdict for _ in range(50)]
    assert verdicts == ["unknown"] * 50
    assert backend.asked == ["127.0.0.66"]  # one whois, not one per connection
    clock.now += 2.5
    assert (await screen.screen("127.0.0.66")).verdict == "unknown"
    assert backend.asked == ["127.0.0.66"] * 2
    assert screen.refused == 51


async def test_a_node_added_to_the_identity_file_is_admitted_at_once() -> None:
    backend, clock = _Backend(), _Clock()
    screen = _screen(backend, clock)
    assert (await screen.screen("127.0.0.66")).verdict == "unknown"
    backend.known["127.0.0.66"] = ALICE
    screen.forget()
    assert (await screen.screen("127.0.0.66")).verdict == "known"


async def test_backend_failure_is_neither_admission_nor_refusal() -> None:
    backend, clock = _Backend(), _Clock()
    backend.fail = True
    screen = _screen(backend, clock)
    screened = await screen.screen("127.0.0.2")
    assert screened.verdict == "error" and "tailscaled" in (screened.error or "")
    assert not screen.is_current(screened)  # the login asks again
    # Not remembered: the next connection asks again, and is admitted once it answers.
    backend.fail = False
    assert (await screen.screen("127.0.0.2")).verdict == "known"
    assert screen.refused == 0


async def test_concurrent_connections_from_one_address_share_one_question() -> None:
    backend, clock = _Backend(), _Clock()
    backend.gate = asyncio.Event()
    screen = _screen(backend, clock)
    waiting = [asyncio.ensure_future(screen.screen("127.0.0.67")) for _ in range(20)]
    await asyncio.sleep(0)
    backend.gate.set()
    results = await asyncio.gather(*waiting)
    assert {r.verdict for r in results} == {"unknown"} and backend.asked == ["127.0.0.67"]


async def test_waiting_connections_are_bounded() -> None:
    backend, clock = _Backend(), _Clock()
    backend.gate = asyncio.Event()
    screen = _screen(backend, clock, pending_limit=3)
    waiting = [asyncio.ensure_future(screen.screen(f"127.0.0.{n}")) for n in range(70, 73)]
    await asyncio.sleep(0)
    assert (await screen.screen("127.0.0.2")).verdict == "busy"
    backend.gate.set()
    await asyncio.gather(*waiting)
    assert (await screen.screen("127.0.0.2")).verdict == "known"  # not for ever


async def test_a_cancelled_connection_leaves_the_shared_question_to_the_others() -> None:
    backend, clock = _Backend(), _Clock()
    backend.gate = asyncio.Event()
    screen = _screen(backend, clock)
    first = asyncio.ensure_future(screen.screen("127.0.0.2"))
    second = asyncio.ensure_future(screen.screen("127.0.0.2"))
    await asyncio.sleep(0)
    first.cancel()
    backend.gate.set()
    assert (await second).verdict == "known"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_refusals_are_logged_once_per_address_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend, clock = _Backend(), _Clock()
    screen = _screen(backend, clock, log_lines=3)
    with caplog.at_level(logging.WARNING, logger="tssh.audit"):
        for _ in range(3):
            for n in range(66, 71):  # five addresses, three lines allowed per interval
                await screen.screen(f"127.0.0.{n}")
                clock.now += 1
        lines = [r for r in caplog.records if r.name == "tssh.audit"]
        assert [r.peer_ip for r in lines] == ["127.0.0.66", "127.0.0.67",
                                                          "127.0.0.68"]
        assert {r.event for r in lines} == {"connection.unknown_peer"}
        caplog.clear()
        clock.now += 60
        await screen.screen("127.0.0.66")
        (line,) = [r for r in caplog.records if r.name == "tssh.audit"]
    # The two refusals not logged since its first line, and this one.
    assert line.refused_since_last == 3
    assert line.unlogged_other_addresses == 6


def test_refusal_is_a_version_line_and_a_disconnect_openssh_can_read() -> None:
    text = "tssh: unknown peer 127.0.0.66: not a node of this tailnet"
    data = refusal_bytes(b"SSH-2.0-tssh", text)
    version, packet = data.split(b"\r\n", 1)
    assert version == b"SSH-2.0-tssh" and packet == disconnect_packet(text)
    length, padding = struct.unpack(">IB", packet[:5])
    assert len(packet) == 4 + length and len(packet) % 8 == 0 and padding >= 4
    payload = packet[5:4 + length - padding]
    assert payload[0] == 1  # SSH_MSG_DISCONNECT
    reason, text_len = struct.unpack(">II", payload[1:9])
    assert reason == asyncssh.DISC_HOST_NOT_ALLOWED_TO_CONNECT
    assert payload[9:9 + text_len].decode() == text


async def test_bytes_that_arrive_before_the_answer_reach_ssh() -> None:
    """CPython 3.11.2's selector transport delivers data even after ``pause_reading()`` in
    ``connection_made``: what arrives before the answer (the client's version line) must
    reach SSH, not be dropped (a daemon on that Python hung every login)."""
    backend = _Backend()
    backend.gate = asyncio.Event()
    received: list[bytes] = []

    class _Ssh(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            received.append(data)

    class _Transport(asyncio.Transport):  # what such a transport does: delivers anyway
        def get_extra_info(self, name: str, default: object = None) -> object:
            return ("127.0.0.2", 50000) if name == "peername" else default

        def pause_reading(self) -> None: ...
        def resume_reading(self) -> None: ...
        def is_closing(self) -> bool:
            return False

        def set_protocol(self, protocol: asyncio.BaseProtocol) -> None: ...

    screening = ScreeningProtocol(_screen(backend, _Clock()), lambda screened: _Ssh(),
                                  lambda text: b"", Screening())
    screening.connection_made(_Transport())
    screening.data_received(b"SSH-2.0-OpenSSH_9.2\r\n")
    backend.gate.set()
    for _ in range(100):
        if received:
            break
        await asyncio.sleep(0.01)
    assert b"".join(received) == b"SSH-2.0-OpenSSH_9.2\r\n"


async def test_a_refused_client_that_left_already_is_dropped_quietly() -> None:
    """The answer to an unknown address comes after its client hung up: the refusal's write
    or EOF fails (ENOTCONN), and the connection is aborted, not left with a task error."""
    aborted: list[bool] = []

    class _Gone(asyncio.Transport):
        def get_extra_info(self, name: str, default: object = None) -> object:
            return ("127.0.0.9", 50000) if name == "peername" else default

        def pause_reading(self) -> None: ...
        def resume_reading(self) -> None: ...
        def is_closing(self) -> bool:
            return False

        def write(self, data: bytes | bytearray | memoryview) -> None: ...
        def can_write_eof(self) -> bool:
            return True

        def write_eof(self) -> None:
            raise OSError(107, "Transport endpoint is not connected")

        def abort(self) -> None:
            aborted.append(True)

    screening = ScreeningProtocol(_screen(_Backend(), _Clock()), lambda screened: _Gone(),
                                  lambda text: b"refused", Screening())
    screening.connection_made(_Gone())
    task = screening._task
    assert task is not None
    await asyncio.wait_for(task, 5)  # raises if the OSError escaped
    assert aborted == [True]
