"""The recording worker process, driven as the daemon drives it (``RecordingWorker``)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import AsyncIterator

import pytest

from tests.polling import wait_until
from tests.recording.fake_recorder import Behavior, FakeRecorder
from tests.recording.test_uploader import header, lines, options, output_of
from tssh.errors import RecorderUnavailable, RecordingFailed
from tssh.recording.targets import RecorderAddress
from tssh.recording.worker_client import RecordingWorker, WorkerRecording


@pytest.fixture
async def worker() -> AsyncIterator[RecordingWorker]:
    w = RecordingWorker(log_format="text", log_level="warning")
    try:
        yield w
    finally:
        await w.close()


@pytest.fixture
async def recorder() -> AsyncIterator[FakeRecorder]:
    async with FakeRecorder() as rec:
        yield rec


def target(rec: FakeRecorder) -> list[RecorderAddress]:
    return [RecorderAddress(*rec.address)]


async def test_output_reaches_the_recorder_with_the_daemons_times(
        worker: RecordingWorker, recorder: FakeRecorder) -> None:
    rec = await worker.start_recording(target(recorder), header(), options=options())
    assert [a.protocol for a in rec.attempts] == ["v2"]
    rec.output_nowait(b"first \xc3")  # a character split across reads
    await asyncio.sleep(0.3)
    rec.output_nowait(b"\xa9 second\r\n")
    rec.resize_nowait(100, 40)
    rec.marker_nowait("tssh: a marker")
    rec.exit_nowait(3)
    stats = await rec.close()
    assert stats.state == "finished", stats
    assert stats.bytes_acked == stats.bytes_sent == stats.bytes_written
    [upload] = recorder.uploads
    events = lines(bytes(upload.body))[1:]
    assert output_of(bytes(upload.body)) == "first \u00e9 second\r\n"
    assert [e[1] for e in events] == ["o", "o", "r", "m", "x"]  # type: ignore[index]
    assert events[1][0] - events[0][0] >= 0.29  # type: ignore[index,operator]
    assert events[2][2] == "100x40" and events[4][2] == "3"  # type: ignore[index]


async def test_enforced_and_no_recorder_is_refused_with_the_attempts(
        worker: RecordingWorker) -> None:
    with pytest.raises(RecorderUnavailable) as e:
        await worker.start_recording([RecorderAddress("127.0.0.1", 9)], header(),
                                     options=options(enforce=True))
    assert [getattr(a, "error", None) for a in e.value.attempts]
    assert "dial failed" in str(e.value)


async def test_not_enforced_and_no_recorder_goes_on_unrecorded(
        worker: RecordingWorker) -> None:
    rec = await worker.start_recording([RecorderAddress("127.0.0.1", 9)], header(),
                                       options=options())
    rec.output_nowait(b"nobody records this")
    stats = await asyncio.wait_for(rec.close(), 5)
    assert stats.state == "unrecorded"
    assert stats.attempts[0].error


async def _fill_until_paused(rec: WorkerRecording, paused: asyncio.Event,
                             limit: int) -> bytes:
    """Write numbered lines until flow control pauses the session (bounded)."""
    written = bytearray()
    i = 0
    while not paused.is_set() and len(written) < limit:
        line = f"line {i:08d}\r\n".encode() * 100
        rec.output_nowait(line)
        written += line
        i += 1
        if i % 50 == 0:
            await asyncio.sleep(0)
    return bytes(written)


async def test_enforced_backpressure_crosses_the_process_and_loses_nothing(
        worker: RecordingWorker, recorder: FakeRecorder) -> None:
    paused, resumed = asyncio.Event(), asyncio.Event()
    rec = await worker.start_recording(target(recorder), header(),
                                       options=options(enforce=True, buffer_limit=64 * 1024))
    rec.set_flow_control(paused.set, resumed.set)
    pid = worker.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # the worker stops reading: the socket and our buffer fill
    try:
        written = await _fill_until_paused(rec, paused, 64 << 20)
        assert paused.is_set() and not rec.writable
        # bounded: our buffer (256 KiB) + the socket's; the session stops at the pause
        assert rec.stats().bytes_buffered <= 512 * 1024
    finally:
        os.kill(pid, signal.SIGCONT)
    await asyncio.wait_for(resumed.wait(), 10)
    rec.exit_nowait(0)
    stats = await rec.close()
    assert stats.state == "finished", stats
    assert output_of(bytes(recorder.uploads[0].body)) == written.decode()


async def test_unenforced_drops_when_the_worker_lags_and_marks_the_loss(
        worker: RecordingWorker, recorder: FakeRecorder) -> None:
    paused = asyncio.Event()
    rec = await worker.start_recording(target(recorder), header(), options=options())
    rec.set_flow_control(paused.set, paused.clear)
    pid = worker.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        written = await _fill_until_paused(rec, paused, 4 << 20)
        assert not paused.is_set()  # never pauses an unenforced session
        assert rec.stats().bytes_dropped > 0
    finally:
        os.kill(pid, signal.SIGCONT)
    await wait_until(lambda: rec.backlog == 0, timeout=10)
    rec.output_nowait(b"after the gap")
    stats = await rec.close()
    assert stats.state == "finished"
    assert stats.bytes_dropped > 0
    body = bytes(recorder.uploads[0].body)
    markers = [e for e in lines(body)[1:] if e[1] == "m"]  # type: ignore[index]
    assert markers and "bytes of this recording were dropped" in markers[0][2]  # type: ignore[index]
    recorded = output_of(body)
    assert recorded.endswith("after the gap") and len(recorded) < len(written)


async def test_worker_death_fails_live_recordings_and_a_new_worker_takes_the_next(
        worker: RecordingWorker, recorder: FakeRecorder) -> None:
    failures: list[RecordingFailed] = []
    rec = await worker.start_recording(target(recorder), header(),
                                       options=options(enforce=True),
                                       on_failure=failures.append)
    rec.output_nowait(b"before")
    first = worker.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    await wait_until(lambda: bool(failures), timeout=10)
    assert "recording worker" in str(failures[0])
    stats = await asyncio.wait_for(rec.close(), 5)
    assert stats.state == "failed"
    again = await worker.start_recording(target(recorder), header(), options=options())
    assert worker.pid not in (None, first)
    again.output_nowait(b"after")
    assert (await again.close()).state == "finished"
    assert output_of(bytes(recorder.uploads[-1].body)) == "after"


async def test_a_failed_recording_reports_what_was_acked_up_to_the_failure(
        worker: RecordingWorker) -> None:
    """The daemon audits a failed recording's bytes acked (``recording.end``): they must be
    the worker's at the failure, not its last once-a-second report (the reliability lab
    saw 393 bytes reported acked of 1531 the recorder had kept)."""
    failures: list[RecordingFailed] = []
    async with FakeRecorder(Behavior(die_after=20_000)) as dying:
        rec = await worker.start_recording(target(dying), header(),
                                           options=options(enforce=True),
                                           on_failure=failures.append)
        started = time.monotonic()
        rec.output_nowait(b"acked " * 1000)
        await wait_until(lambda: bool(dying.uploads) and dying.uploads[0].size > 6000,
                         timeout=5)
        await asyncio.sleep(0.1)  # the recorder's ack is back at the worker
        rec.output_nowait(b"lost " * 10_000)  # the recorder dies on these
        await wait_until(lambda: bool(failures), timeout=5)
        stats = await asyncio.wait_for(rec.close(), 5)
    assert time.monotonic() - started < 0.9  # before the worker's first periodic report
    assert stats.state == "failed"
    assert stats.bytes_acked is not None and stats.bytes_acked > 6000, stats


async def test_a_daemon_giving_up_on_a_close_cuts_the_upload_and_frees_the_worker(
        worker: RecordingWorker) -> None:
    """At shutdown the daemon stops waiting for recordings still closing; the worker must
    then cut them (the recorder keeps what it acknowledged) rather than wait out its own
    timeouts, so that it can exit."""
    release = asyncio.Event()
    async with FakeRecorder(Behavior(stall_after=1, release=release)) as stalled:
        try:
            rec = await worker.start_recording(
                target(stalled), header(),
                options=options(enforce=True, ack_window=60.0, finish_timeout=60.0))
            rec.output_nowait(b"the last words")
            closing = asyncio.create_task(rec.close())
            await asyncio.sleep(0.3)  # the worker is waiting for the recorder's final ack
            closing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await closing
            started = time.monotonic()
            await worker.close()  # returns once the worker has exited
            assert time.monotonic() - started < 5
        finally:
            release.set()


async def test_many_recordings_started_at_once_all_start_on_one_worker(
        worker: RecordingWorker, recorder: FakeRecorder) -> None:
    """Many sessions may start at once (one connection with dozens of channels, or many
    connections). Start requests are datagrams on a SOCK_SEQPACKET control socket; the
    kernel holds those the worker has not read yet within the socket's send buffer (about
    90 of them with the default 208 KiB). The next send returned EAGAIN, which the daemon
    took for a dead worker: the session was refused and a second worker replaced the first,
    which then cut its live recordings ("recording worker exited")."""
    count = 40
    worker.prewarm()
    first = worker.pid
    assert first is not None
    control = worker._control  # the smallest send buffer: a few requests fill it
    assert control is not None
    control._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
    os.kill(first, signal.SIGSTOP)  # the worker reads nothing: the kernel's queue fills
    try:
        starts = [asyncio.ensure_future(worker.start_recording(
            target(recorder), header(), options=options(enforce=True))) for _ in range(count)]
        await asyncio.sleep(0.5)
        assert not any(s.done() for s in starts)  # waiting, not refused
    finally:
        os.kill(first, signal.SIGCONT)
    recs = await asyncio.wait_for(asyncio.gather(*starts), 60)
    assert worker.pid == first
    for i, rec in enumerate(recs):
        rec.output_nowait(f"session {i}".encode())
    stats = await asyncio.wait_for(asyncio.gather(*(rec.close() for rec in recs)), 60)
    assert [s.state for s in stats] == ["finished"] * count
    assert sorted(output_of(bytes(u.body)) for u in recorder.uploads) == \
        sorted(f"session {i}" for i in range(count))
