import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.polling import wait_until
from tests.ports import free_port
from tests.recording.fake_recorder import Behavior, FakeRecorder
from tests.recording.pacing import Pacer
from tssh.errors import RecorderUnavailable, RecordingFailed
from tssh.identity.base import Peer
from tssh.recording.asciicast import CastEncoder, CastHeader
from tssh.recording.model import RecordingOptions
from tssh.recording.transport import check_recorder
from tssh.recording.uploader import (
    COALESCE_SECONDS,
    MAX_EVENT_INPUT,
    Recording,
    start_recording,
)

ALICE = Peer(name="laptop.example.ts.net", id="nLAP1", addresses=("127.0.0.2",),
             user="alice@example.com", user_id="7")
FAST = dict(dial_timeout=1.0, connect_timeout=3.0, probe_timeout=1.0, ack_window=1.0,
            finish_timeout=2.0)


def header() -> CastHeader:
    return CastHeader.for_session(ALICE, ssh_user="alice", local_user="alice",
                                  connection_id="ssh-conn-20260101T000000-0123456789",
                                  started_at=time.time(), width=80, height=24)


HEADER_SIZE = len(CastEncoder(header(), 0.0).header_line())


def options(**kw: object) -> RecordingOptions:
    return RecordingOptions(**{**FAST, **kw})  # type: ignore[arg-type]


def closed_port() -> tuple[str, int]:
    return ("127.0.0.1", free_port())


def lines(body: bytes) -> list[object]:
    text = body.decode()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def output_of(body: bytes) -> str:
    return "".join(str(e[2]) for e in lines(body)[1:] if isinstance(e, list) and e[1] == "o")


@pytest.fixture
async def recorder() -> AsyncIterator[FakeRecorder]:
    async with FakeRecorder() as rec:
        yield rec


async def run_session(rec: Recording) -> None:
    rec.output_nowait("héllo\r\n".encode()[:2])
    await asyncio.sleep(COALESCE_SECONDS * 4)  # two events: "é" split between them
    rec.output_nowait("héllo\r\n".encode()[2:])
    rec.resize_nowait(100, 30)
    rec.output_nowait(b"bye\r\n")
    rec.exit_nowait(0)
    await asyncio.sleep(0)


async def test_v2_full_duplex_upload_with_acks(recorder: FakeRecorder) -> None:
    rec = await start_recording([recorder.address], header(), options=options())
    assert rec.attempts[0].protocol == "v2" and rec.attempts[0].error is None
    await run_session(rec)
    # Acks arrive while the body is still open: the upload is really full duplex.
    await wait_until(lambda: (rec.stats().bytes_acked or 0) == rec.stats().bytes_sent > 0)
    assert not recorder.uploads[0].complete
    stats = await rec.close()
    assert stats.state == "finished" and stats.protocol == "v2"
    upload = recorder.uploads[0]
    assert upload.complete and upload.protocol == "v2"
    assert stats.bytes_sent == stats.bytes_acked == stats.bytes_written == len(upload.body)
    events = lines(bytes(upload.body))
    assert isinstance(events[0], dict) and events[0]["srcNodeUser"] == "alice@example.com"
    assert [e[1:] for e in events[1:]] == [  # type: ignore[index]
        ["o", "h"], ["o", "éllo\r\n"], ["r", "100x30"], ["o", "bye\r\n"], ["x", "0"]]
    assert stats.to_json()["protocol"] == "v2"


@pytest.mark.parametrize("separator,split", [(b"", False), (b"", True), (b"\r\n", True)])
async def test_v2_acks_concatenated_or_split(separator: bytes, split: bool) -> None:
    async with FakeRecorder(Behavior(ack_separator=separator, split_acks=split)) as recorder:
        rec = await start_recording([recorder.address], header(), options=options())
        await run_session(rec)
        stats = await rec.close()
        assert stats.state == "finished"
        assert stats.bytes_acked == len(recorder.uploads[0].body)


@pytest.mark.parametrize("behavior", [Behavior(h2c=False), Behavior(v2=False)],
                         ids=["http1-only", "no-v2-endpoint"])
async def test_v1_fallback_on_the_same_recorder(behavior: Behavior) -> None:
    async with FakeRecorder(behavior) as recorder:
        rec = await start_recording([recorder.address], header(), options=options())
        assert rec.attempts[0].protocol == "v1" and rec.attempts[0].error is None
        await run_session(rec)
        stats = await rec.close()
        assert stats.state == "finished" and stats.protocol == "v1"
        assert stats.bytes_acked is None  # v1 has no acks
        upload = recorder.uploads[0]
        assert upload.protocol == "v1" and upload.complete
        assert output_of(bytes(upload.body)) == "héllo\r\nbye\r\n"
        assert stats.bytes_sent == len(upload.body)


async def test_failover_to_the_second_recorder(recorder: FakeRecorder) -> None:
    async with FakeRecorder(Behavior(h2c=False, continue_status=403)) as refusing:
        dead = closed_port()
        rec = await start_recording([dead, refusing.address, recorder.address], header(),
                                    options=options(enforce=True))
        a = rec.attempts
        assert len(a) == 3
        assert a[0].error is not None and "dial failed" in a[0].error
        assert a[1].error is not None and "403 before 100 Continue" in a[1].error
        assert a[1].protocol == "v1"
        assert a[2].error is None and a[2].recorder == f"127.0.0.1:{recorder.port}"
        await run_session(rec)
        assert (await rec.close()).state == "finished"
        assert refusing.uploads == [] and recorder.uploads[0].complete


async def test_enforced_and_no_recorder_accepts(tmp_path: Path) -> None:
    async with FakeRecorder(Behavior(status=503)) as failing:
        with pytest.raises(RecorderUnavailable) as info:
            await start_recording([closed_port(), failing.address], header(),
                                  options=options(enforce=True, local_dir=tmp_path))
    err = info.value
    assert err.exit_code == 254
    assert len(err.attempts) == 2
    assert "503" in str(err) and "dial failed" in str(err)
    assert list(tmp_path.iterdir()) == []  # a local file never satisfies enforcement


async def test_not_enforced_and_no_recorder_goes_on_unrecorded() -> None:
    rec = await start_recording([closed_port()], header(), options=options())
    await run_session(rec)
    stats = await rec.close()
    assert stats.state == "unrecorded" and stats.destination is None
    assert stats.attempts[0].error is not None


async def test_local_fallback_file(tmp_path: Path) -> None:
    rec = await start_recording([closed_port()], header(), options=options(local_dir=tmp_path))
    await run_session(rec)
    stats = await rec.close()
    assert stats.state == "finished" and stats.protocol == "local"
    [path] = list(tmp_path.glob("*.cast"))
    assert str(path) == stats.destination and path.suffix == ".cast"
    assert path.name.endswith("-ssh-conn-20260101T000000-0123456789.cast")
    assert path.stat().st_mode & 0o777 == 0o600
    body = path.read_bytes()
    assert stats.bytes_sent == len(body)
    assert output_of(body) == "héllo\r\nbye\r\n"
    cat = Path(sys.executable).parent / "asciinema"
    if cat.exists():
        played = subprocess.run([str(cat), "cat", str(path)], capture_output=True, timeout=30,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, "PYTHONIOENCODING": "utf-8",
                                     "HOME": str(tmp_path / "home")})
        assert played.stdout == "héllo\r\nbye\r\n".encode(), played.stderr
    # a second session on the same connection gets its own file
    rec2 = await start_recording([], header(), options=options(local_dir=tmp_path))
    await rec2.close()
    assert len(list(tmp_path.glob("*.cast"))) == 2


@pytest.mark.parametrize("h2c", [True, False], ids=["v2", "v1"])
@pytest.mark.parametrize("enforce", [True, False], ids=["enforced", "fail-open"])
async def test_recorder_killed_mid_upload(enforce: bool, h2c: bool) -> None:
    async with FakeRecorder(Behavior(die_after=2000, h2c=h2c)) as recorder:
        failures: list[RecordingFailed] = []
        rec = await start_recording([recorder.address], header(),
                                    options=options(enforce=enforce),
                                    on_failure=failures.append)
        for _ in range(20):
            if rec.failure:
                break
            rec.output_nowait(b"x" * 500)
            await asyncio.sleep(0.02)
        await wait_until(lambda: bool(failures))
        assert len(failures) == 1
        assert "connection" in str(failures[0])
        written = rec.stats().bytes_written
        rec.output_nowait(b"more")  # never raises: the failure went to on_failure
        await asyncio.sleep(0.02)
        assert rec.stats().bytes_written == written  # and nothing more is taken
        stats = await rec.close()
        assert stats.state == "failed" and stats.error == str(failures[0])
        assert len(failures) == 1


@pytest.mark.parametrize("h2c", [True, False], ids=["v2", "v1"])
async def test_recorder_ending_the_upload_early(h2c: bool) -> None:
    async with FakeRecorder(Behavior(end_after=HEADER_SIZE + 10, h2c=h2c)) as recorder:
        failures: list[RecordingFailed] = []
        rec = await start_recording([recorder.address], header(),
                                    options=options(enforce=True), on_failure=failures.append)
        rec.output_nowait(b"x" * 100)
        await wait_until(lambda: bool(failures))
        assert "before the session ended" in str(failures[0])
        assert rec.stats().protocol == ("v2" if h2c else "v1")
        assert (await rec.close()).state == "failed"


async def test_error_frame_fails_the_upload() -> None:
    async with FakeRecorder(Behavior(error_after=HEADER_SIZE + 10)) as recorder:
        failures: list[RecordingFailed] = []
        rec = await start_recording([recorder.address], header(), options=options(),
                                    on_failure=failures.append)
        rec.output_nowait(b"x" * 100)
        await wait_until(lambda: bool(failures))
        assert "storage failed" in str(failures[0])
        await rec.close()


async def test_no_acks_within_the_window_fails() -> None:
    async with FakeRecorder(Behavior(ack_until=HEADER_SIZE)) as recorder:
        failures: list[RecordingFailed] = []
        started = time.monotonic()
        rec = await start_recording([recorder.address], header(),
                                    options=options(ack_window=0.4), on_failure=failures.append)
        await wait_until(lambda: bool(failures))
        elapsed = time.monotonic() - started
        assert 0.35 < elapsed < 2.0
        assert "no ack frame from the recorder in 0.4s" in str(failures[0])
        await rec.close()


async def test_idle_acks_keep_an_idle_upload_alive() -> None:
    async with FakeRecorder(Behavior(idle_ack=0.1)) as recorder:
        failures: list[RecordingFailed] = []
        rec = await start_recording([recorder.address], header(),
                                    options=options(ack_window=0.4), on_failure=failures.append)
        await asyncio.sleep(1.0)  # idle for more than twice the window
        assert failures == []
        rec.output_nowait(b"still here")
        assert (await rec.close()).state == "finished"


async def test_silent_recorder_exhausts_the_connect_budget() -> None:
    async with FakeRecorder(Behavior(silent=True)) as silent:
        started = time.monotonic()
        with pytest.raises(RecorderUnavailable) as info:
            await start_recording([silent.address, silent.address], header(),
                                  options=options(enforce=True, connect_timeout=0.6,
                                                  probe_timeout=0.3))
        elapsed = time.monotonic() - started
        assert elapsed < 1.5
        attempts = info.value.attempts
        assert len(attempts) == 2
        assert "no answer from the recorder" in str(attempts[0])  # probe, then 100 Continue
        assert "no time left" in str(attempts[1]) or "no answer" in str(attempts[1])


async def test_source_address_is_bound(recorder: FakeRecorder) -> None:
    rec = await start_recording([recorder.address], header(),
                                options=options(source_address="127.0.0.5"))
    await rec.close()
    assert recorder.uploads[0].peer == "127.0.0.5"


LIMIT = 64 * 1024


async def test_stalled_recorder_without_enforcement_drops_and_marks() -> None:
    release = asyncio.Event()
    async with FakeRecorder(Behavior(stall_after=1, release=release)) as recorder:
        rec = await start_recording([recorder.address], header(),
                                    options=options(buffer_limit=LIMIT, ack_window=5.0))
        peak = 0
        chunk = b"0123456789abcdef" * 256  # 4 KiB
        for _ in range(512):  # 2 MiB while the recorder does not read
            rec.output_nowait(chunk)
            peak = max(peak, rec.stats().bytes_buffered)
            await asyncio.sleep(0)
        assert peak <= LIMIT
        dropped = rec.stats().bytes_dropped
        assert dropped > 0 and rec.stats().events_dropped > 0
        release.set()  # the recorder reads again
        await wait_until(lambda: rec.stats().bytes_buffered == 0)
        rec.output_nowait(b"after the stall")
        stats = await rec.close()
        assert stats.state == "finished"
        body = bytes(recorder.uploads[0].body)
        events = lines(body)
        markers = [e for e in events[1:] if isinstance(e, list) and e[1] == "m"]
        # Each marker tells the loss since the one before (the upload made progress between);
        # together they tell all of it, output still coalescing at the stall's end included.
        assert stats.bytes_dropped >= dropped
        dropped = stats.bytes_dropped
        assert markers and sum(int(m[2].split()[1]) for m in markers) == dropped
        assert output_of(body).endswith("after the stall")
        marker_bytes = sum(len(json.dumps(m, ensure_ascii=False, separators=(",", ":"))
                               .encode()) + 1 for m in markers)
        assert stats.bytes_written == len(body) - marker_bytes + dropped


async def test_stalled_recorder_with_enforcement_applies_backpressure() -> None:
    release = asyncio.Event()
    async with FakeRecorder(Behavior(stall_after=1, release=release)) as recorder:
        rec = await start_recording([recorder.address], header(),
                                    options=options(enforce=True, buffer_limit=LIMIT,
                                                    ack_window=5.0))
        pacer = Pacer(rec)
        peak = 0
        written = 0
        chunk = b"z" * 4096

        async def writer() -> None:
            nonlocal peak, written
            for _ in range(256):  # 1 MiB
                await pacer.ready()
                rec.output_nowait(chunk)
                written += len(chunk)
                peak = max(peak, rec.stats().bytes_buffered)

        task = asyncio.create_task(writer())
        await asyncio.sleep(0.5)
        assert not task.done() and pacer.pauses == 1  # the session waits for the recorder
        assert written < 1024 * 1024
        release.set()
        await asyncio.wait_for(task, 10)  # the recorder resumed: everything goes through
        # Over the limit by at most the last write: one event of coalesced output.
        assert LIMIT <= peak <= LIMIT + MAX_EVENT_INPUT + 64
        stats = await rec.close()
        assert stats.state == "finished" and stats.bytes_dropped == 0
        assert output_of(bytes(recorder.uploads[0].body)) == "z" * (1024 * 1024)


async def test_v1_recorder_that_stops_reading_fails_after_the_window() -> None:
    behavior = Behavior(h2c=False, stall_after=1, small_receive_buffer=True)
    async with FakeRecorder(behavior) as recorder:
        failures: list[RecordingFailed] = []
        rec = await start_recording([recorder.address], header(),
                                    options=options(enforce=True, ack_window=0.5,
                                                    buffer_limit=LIMIT),
                                    on_failure=failures.append)
        pacer = Pacer(rec)
        started = time.monotonic()
        for _ in range(4096):  # up to 16 MiB: far more than the socket buffers hold
            if failures:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pacer.ready(), 0.1)
                rec.output_nowait(b"v" * 4096)
        assert len(failures) == 1 and "stopped reading" in str(failures[0])
        assert time.monotonic() - started < 5
        assert pacer.pauses >= 1 and rec.stats().bytes_buffered == 0  # dropped at the failure
        await rec.close()


async def test_close_is_bounded_when_the_recorder_stalls_for_good() -> None:
    async with FakeRecorder(Behavior(stall_after=1, idle_ack=0.05)) as recorder:
        failures: list[RecordingFailed] = []
        rec = await start_recording([recorder.address], header(),
                                    options=options(buffer_limit=LIMIT, finish_timeout=0.3,
                                                    ack_window=5.0),
                                    on_failure=failures.append)
        for _ in range(64):
            rec.output_nowait(b"s" * 4096)
        started = time.monotonic()
        stats = await rec.close()
        assert time.monotonic() - started < 2
        assert stats.state == "failed" and stats.error is not None
        assert failures == []  # reported by close(), not as a failure of a live session
        rec.output_nowait(b"late output")  # after close: ignored, no error


async def test_interleaved_streams_keep_events_whole_under_backpressure() -> None:
    async with FakeRecorder(Behavior(stall_after=1, stall_for=0.3)) as recorder:
        h = CastHeader.for_session(ALICE, ssh_user="a", local_user="a", connection_id="c",
                                   started_at=time.time(), includes_stderr=True)
        rec = await start_recording([recorder.address], h,
                                    options=options(enforce=True, buffer_limit=4096))

        pacer = Pacer(rec)
        for _ in range(100):
            for data, write in ((b"O" * 1500, rec.output_nowait),
                                ("é".encode() * 700, rec.stderr_nowait)):
                await pacer.ready()
                write(data)
        stats = await rec.close()
        assert pacer.pauses > 0
        assert stats.state == "finished"
        text = output_of(bytes(recorder.uploads[0].body))  # every line parses
        assert text.count("O") == 150_000 and text.count("é") == 70_000


async def test_cancelled_start_leaves_no_connection_open() -> None:
    async with FakeRecorder(Behavior(silent=True)) as silent:
        task = asyncio.create_task(start_recording([silent.address], header(),
                                                   options=options(enforce=True)))
        await wait_until(lambda: silent.open_connections == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_until(lambda: silent.open_connections == 0)


async def test_check_recorder_reports_health() -> None:
    async with FakeRecorder() as v2, FakeRecorder(Behavior(h2c=False)) as v1:
        healthy = await check_recorder(v2.address, source_address="127.0.0.6")
        assert (healthy.reachable, healthy.protocol, healthy.detail) == (True, "v2", None)
        old = await check_recorder(v1.address)
        assert (old.reachable, old.protocol) == (True, "v1")
        assert old.detail is not None and "HTTP/1" in old.detail
        dead = await check_recorder(closed_port())
        assert not dead.reachable and dead.to_json()["healthy"] is False
        assert v2.uploads == [] and v1.uploads == []  # probing records nothing
        await wait_until(lambda: v2.open_connections == 0 and v1.open_connections == 0)


async def test_abort_cuts_the_upload_at_once(recorder: FakeRecorder) -> None:
    failures: list[RecordingFailed] = []
    rec = await start_recording([recorder.address], header(), options=options(enforce=True),
                                on_failure=failures.append)
    rec.output_nowait(b"partial session")
    await wait_until(lambda: len(recorder.uploads[0].body) > 0)
    stats = rec.abort()
    assert stats.state == "failed" and stats.error is not None and "aborted" in stats.error
    await wait_until(lambda: recorder.open_connections == 0)
    assert not recorder.uploads[0].complete
    assert failures == []
    rec.output_nowait(b"late")  # ignored
    assert (await rec.close()).state == "failed"


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="buffer_limit"):
        RecordingOptions(buffer_limit=10)
    with pytest.raises(ValueError, match="ack_window"):
        RecordingOptions(ack_window=0)


async def test_bad_recorder_address_is_an_attempt_failure(recorder: FakeRecorder) -> None:
    # A port out of range fails inside the socket layer (OverflowError), without any lookup.
    rec = await start_recording([("127.0.0.1", 70000), recorder.address], header(),
                                options=options())
    assert rec.attempts[0].error is not None and rec.attempts[1].error is None
    assert (await rec.close()).state == "finished"


class FlowSession:
    """A callback-style session: reads 'output' while not paused by the recording."""

    def __init__(self, rec: Recording) -> None:
        self.rec = rec
        self.running = asyncio.Event()
        self.running.set()
        self.pauses = 0
        self.resumes = 0
        rec.set_flow_control(self.pause, self.resume)

    def pause(self) -> None:
        self.pauses += 1
        self.running.clear()

    def resume(self) -> None:
        self.resumes += 1
        self.running.set()

    async def produce(self, chunk: bytes, count: int) -> int:
        peak = 0
        for _ in range(count):
            await self.running.wait()  # the session's add_reader is off while paused
            self.rec.output_nowait(chunk)
            peak = max(peak, self.rec.stats().bytes_buffered)
            await asyncio.sleep(0)
        return peak


async def test_nowait_writes_with_flow_control_under_enforcement() -> None:
    release = asyncio.Event()
    async with FakeRecorder(Behavior(stall_after=1, release=release)) as recorder:
        rec = await start_recording([recorder.address], header(),
                                    options=options(enforce=True, buffer_limit=LIMIT,
                                                    ack_window=5.0))
        session = FlowSession(rec)
        chunk = b"n" * 4096
        task = asyncio.create_task(session.produce(chunk, 256))
        await asyncio.sleep(0.3)
        assert not rec.writable and session.pauses == 1 and not task.done()
        release.set()
        peak = await asyncio.wait_for(task, 10)
        assert peak < LIMIT + 2 * len(chunk)  # the limit plus at most the last write
        assert session.resumes >= 1
        rec.exit_nowait(0)
        stats = await rec.close()
        assert stats.state == "finished" and stats.bytes_dropped == 0
        body = bytes(recorder.uploads[0].body)
        assert output_of(body) == "n" * (256 * 4096)
        assert lines(body)[-1][1:] == ["x", "0"]  # type: ignore[index]


async def test_nowait_writes_without_enforcement_drop_instead_of_pausing() -> None:
    async with FakeRecorder(Behavior(stall_after=1, stall_for=0.5)) as recorder:
        rec = await start_recording([recorder.address], header(),
                                    options=options(buffer_limit=LIMIT, ack_window=5.0))
        session = FlowSession(rec)
        peak = await session.produce(b"d" * 4096, 256)
        assert session.pauses == 0 and peak <= LIMIT
        assert rec.stats().bytes_dropped > 0
        assert (await rec.close()).state == "finished"


async def test_nowait_writes_after_a_failure_neither_raise_nor_stay_paused() -> None:
    async with FakeRecorder(Behavior(stall_after=1, die_after=None)) as recorder:
        failures: list[RecordingFailed] = []
        rec = await start_recording([recorder.address], header(),
                                    options=options(enforce=True, buffer_limit=LIMIT,
                                                    ack_window=0.5),
                                    on_failure=failures.append)
        session = FlowSession(rec)
        for _ in range(64):
            rec.output_nowait(b"f" * 4096)
        assert session.pauses == 1
        await wait_until(lambda: bool(failures))  # the stalled recorder stops acking
        assert session.resumes == 1 and rec.writable
        rec.output_nowait(b"after")  # discarded, no exception
        assert (await rec.close()).state == "failed"


# -- the recorder must take the header before a recording counts as started ------------------

@pytest.mark.parametrize("behavior", [Behavior(error_after=1), Behavior(end_after=1),
                                      Behavior(die_after=1)],
                         ids=["error-frame", "ended", "connection-cut"])
async def test_header_refused_by_the_recorder_refuses_an_enforced_start(
        behavior: Behavior) -> None:
    async with FakeRecorder(behavior) as recorder:
        failures: list[RecordingFailed] = []
        with pytest.raises(RecorderUnavailable) as info:
            await start_recording([recorder.address], header(),
                                  options=options(enforce=True), on_failure=failures.append)
        assert info.value.attempts[0].error is not None
        assert failures == []  # refused at the start: not a failure of a running session


async def test_header_never_acked_refuses_an_enforced_start_in_time() -> None:
    async with FakeRecorder(Behavior(acks=False)) as recorder:
        started = time.monotonic()
        with pytest.raises(RecorderUnavailable, match="did not accept the recording's header"):
            await start_recording([recorder.address], header(),
                                  options=options(enforce=True, connect_timeout=0.5))
        assert time.monotonic() - started < 3.0


async def test_a_recorder_refusing_the_header_fails_over_to_the_next() -> None:
    async with FakeRecorder(Behavior(error_after=1)) as bad, FakeRecorder() as good:
        rec = await start_recording([bad.address, good.address], header(),
                                    options=options(enforce=True))
        assert [a.error is None for a in rec.attempts] == [False, True]
        assert "storage failed" in (rec.attempts[0].error or "")
        assert (await rec.close()).state == "finished"
        assert good.uploads[-1].complete


async def test_started_means_the_header_is_acked() -> None:
    async with FakeRecorder() as recorder:
        rec = await start_recording([recorder.address], header(),
                                    options=options(enforce=True))
        assert (rec.stats().bytes_acked or 0) >= HEADER_SIZE
        await rec.close()


# -- failover while the session runs (docs/recording.md, "Failover") ------------------------

async def test_failover_mid_line_continues_on_the_next_recorder_with_whole_events() -> None:
    """The first recorder's connection is cut inside an event (64 KiB chunks cut events):
    the enforced session is paused, not ended; the second recorder gets the header, a marker
    saying what it continues and how many bytes the first had not acknowledged, then whole
    events only; what neither holds is at most that many bytes."""
    events = [f"e{i:04d} ".encode() + b"z" * 30_000 for i in range(40)]
    async with FakeRecorder(Behavior(die_after=100_000)) as first, FakeRecorder() as second:
        failures: list[RecordingFailed] = []
        rec = await start_recording([first.address, second.address], header(),
                                    options=options(enforce=True), on_failure=failures.append)
        session = FlowSession(rec)
        for data in events:  # one burst: the buffer holds more than a chunk
            await session.running.wait()
            rec.output_nowait(data)
        rec.exit_nowait(0)
        stats = await rec.close()
        assert stats.state == "finished" and not failures and rec.failovers == 1
        assert stats.destination == f"127.0.0.1:{second.port}"
        assert session.pauses >= 1 and session.resumes >= 1 and rec.writable
        got = lines(bytes(second.uploads[0].body))  # every line whole JSON
        assert got[0] == lines(bytes(first.uploads[0].body).split(b"\n", 1)[0] + b"\n")[0]
        marker = got[1]
        assert isinstance(marker, list) and marker[1] == "m"
        assert f"recorder 127.0.0.1:{first.port} was taking when it failed" in marker[2]
        unacked = int(marker[2].split("the last ", 1)[1].split()[0])
        skipped = int(marker[2].split("; the ", 1)[1].split()[0]) if "left of" in marker[2] \
            else 0
        assert got[-1][1:] == ["x", "0"]  # type: ignore[index]
        sent = b"".join(events).decode()
        *whole, torn = bytes(first.uploads[0].body).split(b"\n")  # the last line: cut
        on_first = "".join(str(json.loads(x)[2]) for x in whole[1:])
        on_second = "".join(str(e[2]) for e in got[2:-1] if isinstance(e, list))
        assert sent.startswith(on_first) and sent.endswith(on_second)
        # A's torn line was acked; its rest is skipped; what A did not ack is lost
        assert len(sent) - len(on_first) - len(on_second) <= len(torn) + skipped + unacked


async def test_failover_that_finds_no_recorder_fails_the_recording() -> None:
    async with FakeRecorder(Behavior(die_after=2000)) as first:
        failures: list[RecordingFailed] = []
        rec = await start_recording([first.address, closed_port()], header(),
                                    options=options(enforce=True), on_failure=failures.append)
        for _ in range(20):
            if failures:
                break
            rec.output_nowait(b"x" * 500)
            await asyncio.sleep(0.02)
        await wait_until(lambda: bool(failures), timeout=10)
        assert "no other recorder took the recording" in str(failures[0])
        assert (await rec.close()).state == "failed" and rec.writable
