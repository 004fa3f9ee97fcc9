"""The daemon's side of the recording worker (``WorkerRecording``) against a fake worker: the
test holds the worker's end of the recording's socket, reads the frames and writes reports.
``test_worker.py`` drives the real worker process; this drives each rule of the client."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest

from tests.polling import wait_until
from tests.recording.test_uploader import header, options
from tssh.errors import RecorderUnavailable, RecordingFailed
from tssh.recording.model import Attempt, RecordingStats
from tssh.recording.targets import RecorderAddress
from tssh.recording.worker_client import LOCAL_LIMIT, WorkerRecording
from tssh.recording.worker_protocol import (
    DROPPED,
    EXIT,
    RESIZE,
    Frame,
    FrameReader,
    Kind,
    StartRequest,
    encode_report,
)

ACCEPTED = (Attempt("127.0.0.1:1", "v2"),)
RECORDING = RecordingStats(state="recording", destination="127.0.0.1:1", protocol="v2",
                           bytes_written=100, bytes_sent=100, bytes_acked=100,
                           bytes_buffered=0, bytes_dropped=0, events_dropped=0,
                           attempts=ACCEPTED)


class FakeWorker:
    """The worker's end of one recording: what ``ControlChannel.send`` would hand it."""

    def __init__(self) -> None:
        self.request: StartRequest | None = None
        self.sock: socket.socket | None = None
        self._frames = FrameReader()
        self.frames: list[Frame] = []

    def hand_over(self, request: bytes, sock: socket.socket) -> asyncio.Future[None]:
        self.request = StartRequest.decode(request)
        self.sock = socket.socket(fileno=os.dup(sock.fileno()))  # as SCM_RIGHTS gives it
        self.sock.setblocking(False)
        sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        sent.set_result(None)
        return sent

    def report(self, kind: str, **fields: object) -> None:
        assert self.sock is not None
        self.sock.sendall(encode_report({"type": kind, **fields}))

    def read(self) -> list[Frame]:
        """Every frame the daemon's side has written so far."""
        assert self.sock is not None
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                break
            if not data:
                break
            self.frames += self._frames.feed(data)
        return self.frames

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


@pytest.fixture
def worker() -> Iterator[FakeWorker]:
    fake = FakeWorker()
    try:
        yield fake
    finally:
        fake.close()


async def start(worker: FakeWorker, enforce: bool = False,
                failures: list[RecordingFailed] | None = None,
                answer: dict[str, object] | None = None) -> WorkerRecording:
    """A recording the fake worker started (or answered with ``answer``)."""
    request = StartRequest((RecorderAddress("127.0.0.1", 1),), header(),
                           options(enforce=enforce))
    task = asyncio.create_task(WorkerRecording.start(
        worker.hand_over, request, None if failures is None else failures.append))
    await wait_until(lambda: worker.sock is not None, what="the request handed over")
    if answer is None:
        worker.report("started", stats=RECORDING.to_json())
    else:
        worker.report(**answer)  # type: ignore[arg-type]
    return await asyncio.wait_for(task, 5)


@pytest.fixture
async def recording(worker: FakeWorker) -> AsyncIterator[WorkerRecording]:
    rec = await start(worker)
    yield rec
    rec.abort()


async def test_the_request_crosses_whole_and_the_start_is_the_workers_report(
        worker: FakeWorker, recording: WorkerRecording) -> None:
    assert worker.request is not None and worker.request.header == header()
    assert recording.attempts == ACCEPTED
    assert recording.stats().state == "recording" and recording.failure is None


async def test_each_write_is_one_frame_in_order_with_the_daemons_time(
        worker: FakeWorker, recording: WorkerRecording) -> None:
    recording.output_nowait(b"out")
    recording.stderr_nowait(b"err")
    recording.input_nowait(b"in")
    recording.resize_nowait(100, 40)
    recording.marker_nowait("tssh: m")
    recording.exit_nowait(3)
    await wait_until(lambda: len(worker.read()) == 6, what="six frames")
    kinds = [(f.kind, f.payload) for f in worker.frames]
    assert kinds == [(Kind.OUTPUT, b"out"), (Kind.STDERR, b"err"), (Kind.INPUT, b"in"),
                     (Kind.RESIZE, RESIZE.pack(100, 40)), (Kind.MARKER, b"tssh: m"),
                     (Kind.EXIT, EXIT.pack(3))]
    assert all(f.at > 0 for f in worker.frames)
    assert sorted(f.at for f in worker.frames) == [f.at for f in worker.frames]


async def test_close_sends_close_and_returns_the_workers_closed_stats(
        worker: FakeWorker, recording: WorkerRecording) -> None:
    closing = asyncio.create_task(recording.close())
    await wait_until(lambda: [f.kind for f in worker.read()] == [Kind.CLOSE], what="CLOSE")
    finished = replace(RECORDING, state="finished")
    worker.report("closed", stats=finished.to_json())
    assert await asyncio.wait_for(closing, 5) == finished
    recording.output_nowait(b"after the end")  # dropped: nothing follows CLOSE
    await asyncio.sleep(0.05)
    assert [f.kind for f in worker.read()] == [Kind.CLOSE]


async def test_a_failure_the_worker_reports_is_the_one_failure_and_told_once(
        worker: FakeWorker) -> None:
    failures: list[RecordingFailed] = []
    rec = await start(worker, enforce=True, failures=failures)
    worker.report("failed", reason="recorder went away")
    worker.report("failed", reason="and again")
    await wait_until(lambda: rec.failure is not None, what="the failure")
    await asyncio.sleep(0.05)
    assert [str(f) for f in failures] == ["recorder went away"]
    assert rec.failure is failures[0]
    assert rec.stats().state == "failed" and rec.stats().error == "recorder went away"
    rec.output_nowait(b"not sent after a failure")
    await asyncio.sleep(0.05)
    assert worker.read() == []
    rec.abort()


async def test_the_workers_death_fails_the_recording(worker: FakeWorker) -> None:
    failures: list[RecordingFailed] = []
    rec = await start(worker, failures=failures)
    worker.close()
    await wait_until(lambda: bool(failures), what="the failure callback")
    assert str(failures[0]) == "recording worker exited"
    stats = await asyncio.wait_for(rec.close(), 5)
    assert stats.state == "failed" and stats.error == "recording worker exited"


async def test_refused_when_enforced_raises_with_the_workers_attempts(
        worker: FakeWorker) -> None:
    tried = Attempt("127.0.0.1:1", None, "dial failed")
    with pytest.raises(RecorderUnavailable) as e:
        await start(worker, enforce=True, answer={
            "kind": "refused", "reason": "no recorder", "attempts": [tried.to_json()]})
    assert e.value.attempts == (tried,)


async def test_refused_unenforced_goes_on_unrecorded_and_sends_nothing(
        worker: FakeWorker) -> None:
    tried = Attempt("127.0.0.1:1", None, "dial failed")
    rec = await start(worker, answer={
        "kind": "refused", "reason": "no recorder", "attempts": [tried.to_json()]})
    assert rec.attempts == (tried,) and rec.stats().state == "unrecorded"
    rec.output_nowait(b"nobody records this")
    assert (await asyncio.wait_for(rec.close(), 5)).state == "unrecorded"


async def test_a_worker_that_cannot_be_reached_is_a_refusal_when_enforced() -> None:
    def broken(request: bytes, sock: socket.socket) -> asyncio.Future[None]:
        raise BrokenPipeError(32, "Broken pipe")

    request = StartRequest((), header(), options(enforce=True))
    with pytest.raises(RecorderUnavailable, match="cannot hand the recording"):
        await WorkerRecording.start(broken, request)
    unenforced = await WorkerRecording.start(broken, replace(request, options=options()))
    assert unenforced.stats().state == "unrecorded"


async def test_enforced_a_full_pipeline_pauses_the_session_until_it_drains(
        worker: FakeWorker) -> None:
    rec = await start(worker, enforce=True)
    paused: list[bool] = []
    rec.set_flow_control(lambda: paused.append(True), lambda: paused.append(False))
    chunk = b"x" * 65536
    writes = 0
    while rec.writable and writes < 64:  # bounded: 4 MiB is far beyond what fits
        rec.output_nowait(chunk)
        writes += 1
    assert paused == [True] and not rec.writable
    assert rec.backlog >= LOCAL_LIMIT

    def delivered() -> int:
        return sum(len(f.payload) for f in worker.read())

    await wait_until(lambda: delivered() == writes * len(chunk), what="every byte")
    assert paused == [True, False] and rec.writable  # resumed once drained to half
    assert rec.stats().bytes_dropped == 0
    rec.abort()


async def test_unenforced_a_full_pipeline_drops_and_tells_the_worker_how_much(
        worker: FakeWorker, recording: WorkerRecording) -> None:
    chunk = b"y" * 65536
    for _ in range(64):
        recording.output_nowait(chunk)
    dropped = recording.stats().bytes_dropped
    assert dropped > 0 and recording.writable  # never paused
    await wait_until(lambda: (worker.read(), recording.backlog == 0)[1], what="drained")
    recording.output_nowait(b"after the loss")
    await wait_until(lambda: worker.read()[-1].payload == b"after the loss",
                     what="the next write")
    [told] = [f for f in worker.frames if f.kind is Kind.DROPPED]
    assert DROPPED.unpack(told.payload) == (dropped,)
    assert worker.frames[-2] is told  # just before the write that went through
    delivered = sum(len(f.payload) for f in worker.frames if f.kind is Kind.OUTPUT)
    assert delivered + dropped == 64 * len(chunk) + len(b"after the loss")
