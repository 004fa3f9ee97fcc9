"""``ProcessSession`` without SSH: a fake channel in asyncssh's place, a real process, and for
recorded sessions a fake ``RecordingSink`` under the real ``SessionRecording``. The e2e tests
drive the same through stock ``ssh``; these pin each rule to the session code."""

from __future__ import annotations

import asyncio
import os
import pwd
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from tests.polling import wait_until
from tssh.errors import RecorderUnavailable, RecordingFailed
from tssh.identity.base import Peer
from tssh.recording.model import RecordingStats, State
from tssh.server.account import lookup_account
from tssh.server.recording import (
    FAILED_MESSAGE,
    REFUSED_MESSAGE,
    UNCONFIRMED_MESSAGE,
    RecordingRequest,
    RecordingRule,
    SessionDescription,
    SessionRecording,
)
from tssh.server.session import ConnectionContext, HungUpGroups, ProcessSession

PEER = Peer("laptop", "nLAP1", ("100.64.0.2",), user="alice@example.com", user_id="1")


class FakeChannel:
    """What ``ProcessSession`` uses of asyncssh's channel; ``log`` holds what it was sent."""

    def __init__(self, log: list[tuple[str, object]]) -> None:
        self.log = log
        self.ended: asyncio.Future[tuple[str, object]] = \
            asyncio.get_running_loop().create_future()
        self.reading_paused = False

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def write(self, data: bytes | memoryview) -> None:
        self.log.append(("out", bytes(data)))

    def write_stderr(self, data: bytes | memoryview) -> None:
        self.log.append(("err", bytes(data)))

    def exit(self, status: int) -> None:
        self.log.append(("channel exit", status))
        if not self.ended.done():
            self.ended.set_result(("exit", status))

    def exit_with_signal(self, name: str, core: bool, message: str) -> None:
        self.log.append(("channel exit", name))
        if not self.ended.done():
            self.ended.set_result(("signal", name))

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False

    def get_environment(self) -> dict[str, str]:
        return {}

    def get_agent_path(self) -> str | None:
        return None

    def sent(self, stream: str = "out") -> bytes:
        return b"".join(data for kind, data in self.log  # type: ignore[misc]
                        if kind == stream)


def stats(state: State) -> RecordingStats:
    return RecordingStats(state=state, destination="127.0.0.1:1", protocol="v2",
                          bytes_written=0, bytes_sent=0, bytes_acked=0, bytes_buffered=0,
                          bytes_dropped=0, events_dropped=0)


class FakeSink:
    """A ``RecordingSink`` that writes what it is fed into the shared log."""

    def __init__(self, log: list[tuple[str, object]], on_failure: Callable[[RecordingFailed],
                                                                              None]) -> None:
        self.log = log
        self._on_failure = on_failure
        self._failure: RecordingFailed | None = None
        self.close_state: State = "finished"
        self.attempts = ()
        self.writable = True

    @property
    def failure(self) -> RecordingFailed | None:
        return self._failure

    def fail(self, reason: str) -> None:
        """The upload failed while the session runs (as both implementations report it)."""
        self._failure = RecordingFailed(reason)
        self.close_state = "failed"
        self._on_failure(self._failure)

    def set_flow_control(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        self.pause, self.resume = pause, resume

    def output_nowait(self, data: bytes) -> None:
        self.log.append(("recorded", data))

    def stderr_nowait(self, data: bytes) -> None:
        self.log.append(("recorded err", data))

    def input_nowait(self, data: bytes) -> None:
        self.log.append(("recorded in", data))

    def resize_nowait(self, cols: int, rows: int) -> None:
        self.log.append(("resize", (cols, rows)))

    def exit_nowait(self, status: int) -> None:
        self.log.append(("exit", status))

    def marker_nowait(self, label: str) -> None:
        self.log.append(("marker", label))

    async def close(self) -> RecordingStats:
        self.log.append(("close", None))
        return stats(self.close_state)

    def abort(self, reason: str = "") -> RecordingStats:
        return stats("failed")

    def stats(self) -> RecordingStats:
        return stats("recording")


@dataclass
class FakeService:
    """``RecordingService``'s part in a session: hands out a ``SessionRecording`` over a
    ``FakeSink`` (or refuses), and keeps what ``on_end`` was told."""

    log: list[tuple[str, object]]
    refuse: bool = False
    sink: FakeSink | None = None
    ended: list[RecordingStats] = field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def start(self, rule: RecordingRule, desc: SessionDescription,
                    on_failure: Callable[[RecordingFailed], None]) -> SessionRecording:
        if self.refuse:
            raise RecorderUnavailable("no recorder accepted the recording")
        self.sink = FakeSink(self.log, on_failure)
        return SessionRecording(self.sink, rule, desc, on_end=self.ended.append,
                                track=self.tasks.append)


@dataclass
class Run:
    session: ProcessSession
    chan: FakeChannel
    log: list[tuple[str, object]]
    service: FakeService

    async def ended(self) -> tuple[str, object]:
        return await asyncio.wait_for(asyncio.shield(self.chan.ended), 10)


@pytest.fixture
async def start() -> AsyncIterator[Callable[..., Any]]:
    """``await start(command, pty=False, recording=None, stdin=b"")``: a session started as
    asyncssh starts one (requests, then ``session_started``), as the user running the tests."""
    hung_up = HungUpGroups()
    runs: list[Run] = []
    account = lookup_account(pwd.getpwuid(os.getuid()).pw_name)
    base = ConnectionContext(conn_id="ssh-conn-1", login=account.name, account=account,
                             peer=PEER, peer_ip="100.64.0.2", peer_port=40000,
                             local_ip="100.64.0.1", local_port=22)

    async def run(command: str, *, pty: bool = False, enforce: bool | None = None,
                  refuse: bool = False, stdin: bytes = b"", eof: bool = True) -> Run:
        log: list[tuple[str, object]] = []
        service = FakeService(log, refuse=refuse)
        ctx = base if enforce is None else replace(base, recording=RecordingRequest(
            service, RecordingRule(("127.0.0.1:1",), enforce)))  # type: ignore[arg-type]
        session = ProcessSession(ctx, "s1", lambda s: None, hung_up)
        chan = FakeChannel(log)
        session.connection_made(chan)
        if pty:
            session.pty_requested("xterm", (80, 24, 0, 0), {})
        session.exec_requested(command)
        session.session_started()
        if stdin:
            session.data_received(stdin, None)  # before the process exists: kept for it
        if eof:
            session.eof_received()
        runs.append(Run(session, chan, log, service))
        return runs[-1]

    yield run
    for r in runs:
        r.session.connection_lost(None)
        for task in r.service.tasks:
            await asyncio.wait_for(task, 5)
    await hung_up.finish(1.0)


async def test_stdout_stderr_and_the_exit_status_reach_the_channel_apart(
        start: Callable[..., Any]) -> None:
    run = await start("echo out; echo err >&2; exit 3")
    assert await run.ended() == ("exit", 3)
    assert run.chan.sent("out") == b"out\n" and run.chan.sent("err") == b"err\n"


async def test_input_sent_before_the_process_exists_reaches_it_and_eof_ends_it(
        start: Callable[..., Any]) -> None:
    run = await start("cat; echo done", stdin=b"typed early\n")
    assert await run.ended() == ("exit", 0)
    assert run.chan.sent() == b"typed early\ndone\n"


async def test_a_process_killed_by_a_signal_exits_with_that_signal(
        start: Callable[..., Any]) -> None:
    run = await start("kill -TERM $$")
    assert await run.ended() == ("signal", "TERM")


async def test_a_pty_session_gets_a_terminal_and_one_output_stream(
        start: Callable[..., Any]) -> None:
    run = await start("tty; echo err >&2", pty=True)
    assert await run.ended() == ("exit", 0)
    out = run.chan.sent().decode()
    assert out.startswith("/dev/pts/") and "err" in out and run.chan.sent("err") == b""


async def test_a_full_channel_holds_the_output_until_it_drains(
        start: Callable[..., Any]) -> None:
    run = await start("echo ready; read line; echo $line", eof=False)
    await wait_until(lambda: run.chan.sent() == b"ready\n", what="the process running")
    run.session.pause_writing()  # the channel's send buffer is above its high water
    run.session.data_received(b"held\n", None)
    await asyncio.sleep(0.3)
    assert run.chan.sent() == b"ready\n"
    run.session.resume_writing()
    run.session.eof_received()
    assert await run.ended() == ("exit", 0)
    assert run.chan.sent() == b"ready\nheld\n"


async def test_output_is_recorded_before_it_is_forwarded_and_the_exit_status_too(
        start: Callable[..., Any]) -> None:
    run = await start("echo one; echo two >&2; exit 5", enforce=True)
    assert await run.ended() == ("exit", 5)
    kinds = [kind for kind, _ in run.log]
    for recorded, forwarded in (("recorded", "out"), ("recorded err", "err")):
        assert kinds.index(recorded) < kinds.index(forwarded)
    # the exit status is recorded and the recording confirmed before the client sees it
    assert kinds.index("exit") < kinds.index("close") < kinds.index("channel exit")
    assert ("exit", 5) in run.log
    assert [s.state for s in run.service.ended] == ["finished"]


async def test_an_enforced_recording_that_fails_midway_ends_the_session_with_254(
        start: Callable[..., Any]) -> None:
    run = await start("echo ready; exec sleep 30", enforce=True)
    await wait_until(lambda: b"ready" in run.chan.sent(), what="the process running")
    assert run.service.sink is not None
    run.service.sink.fail("recorder went away")
    assert await run.ended() == ("exit", 254)  # the process was hung up, not waited for
    assert FAILED_MESSAGE.encode() in run.chan.sent("err")
    assert UNCONFIRMED_MESSAGE.encode() not in run.chan.sent("err")  # told once


async def test_an_enforced_recording_not_confirmed_at_the_end_says_so_with_254(
        start: Callable[..., Any]) -> None:
    run = await start("read line; exit 0", enforce=True, eof=False)
    await wait_until(lambda: run.service.sink is not None, what="the recording")
    assert run.service.sink is not None
    run.service.sink.close_state = "failed"  # the recorder did not confirm the end
    run.session.data_received(b"go\n", None)
    assert await run.ended() == ("exit", 254)
    assert UNCONFIRMED_MESSAGE.encode() in run.chan.sent("err")
    assert FAILED_MESSAGE.encode() not in run.chan.sent("err")


async def test_an_unenforced_recording_that_fails_lets_the_session_go_on(
        start: Callable[..., Any]) -> None:
    run = await start("read line; echo $line", enforce=False, eof=False)
    await wait_until(lambda: run.service.sink is not None, what="the recording")
    assert run.service.sink is not None
    run.service.sink.fail("recorder went away")
    run.session.data_received(b"still here\n", None)
    run.session.eof_received()
    assert await run.ended() == ("exit", 0)
    assert run.chan.sent() == b"still here\n" and run.chan.sent("err") == b""


async def test_a_refused_enforced_recording_refuses_the_session_before_its_process(
        start: Callable[..., Any]) -> None:
    run = await start("echo must not run", enforce=True, refuse=True)
    assert await run.ended() == ("exit", 254)
    assert REFUSED_MESSAGE.encode() in run.chan.sent("err")
    assert run.chan.sent() == b""  # the command never ran
