"""Streams a session's recording to a recorder: failover, buffering, backpressure.

The asyncio driver above ``transport`` (one recorder connection, either protocol) and the
pure parts (``asciicast`` encodes, ``wire`` decides). Behaviour follows tailscaled's client
(docs/recording.md): recorders are tried in order until one accepts the recording, within
30 s for all of them (``RecordingOptions``: per-dial, probe and ack timeouts). One that fails
while the session runs is failed over from: the next that accepts gets a new recording of
the same session (same header, a marker first; docs/recording.md, "Failover").

The recording worker (``worker.RecordingJob``) runs one per recording; the daemon holds a
``worker_client.WorkerRecording``, the same interface (``sink.RecordingSink``). Using it::

    recorders = recorder_targets(decision.recorders, await resolver.peers(),
                                 config.recorder_port)          # tssh.recording.targets
    header = CastHeader.for_session(peer, ssh_user=..., local_user=..., connection_id=...,
                                    started_at=time.time(), width=80, height=24)
    try:
        rec = await start_recording(recorders, header, options=RecordingOptions(
            enforce=decision.enforce_recorder, source_address=own_tailnet_ip,
            local_dir=config.local_recording_dir), on_failure=end_session_with_message)
    except RecorderUnavailable as e:      # enforced and no recorder accepted
        refuse(message, exit_status=254)  # e.attempts: each recorder and its failure
    audit(rec.attempts)                   # also when the session goes on unrecorded
    rec.set_flow_control(pause_reading, resume_reading)   # with enforce: backpressure
    rec.output_nowait(data)               # PTY output or stdout; stderr_nowait non-PTY
    rec.resize_nowait(cols, rows)
    rec.exit_nowait(status)
    stats = await rec.close()             # final ack / 200; stats.state is the outcome
    # or, when the daemon shuts down and cannot wait: rec.abort()

Writes never block nor raise (``sink``'s docstring says why and how). ``on_failure(error)``
(a plain function; it may schedule tasks) is called once, from the event loop, if the
upload fails or the recorder ends it while the session runs and no other recorder takes the
recording over (not after ``close()`` began: then the outcome is in the returned stats).
With ``enforce`` the daemon ends the session with a message; writes after a failure are
discarded and counted.

Memory is bounded per recording: at most ``buffer_limit`` bytes wait in the buffer
(``buffer.RecordingBuffer``), the chunk being sent included (plus the transport's own
buffer, 64 KiB at most by default), and with ``enforce`` at most the last write beyond it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from tssh.errors import RecorderUnavailable, RecordingError, RecordingFailed
from tssh.recording.asciicast import CastEncoder, CastHeader
from tssh.recording.buffer import RecordingBuffer
from tssh.recording.local import LocalCastFile
from tssh.recording.model import Attempt, Clock, RecordingOptions, RecordingStats, State
from tssh.recording.sink import ABORTED, RecordingSink
from tssh.recording.targets import RecorderAddress
from tssh.recording.transport import (
    ConnectFailed,
    Destination,
    V1Upload,
    V2Upload,
    as_failure,
    connect,
)

log = logging.getLogger("tssh.recording")

CHUNK_SIZE = 64 * 1024  # bytes taken from the buffer per send
MAX_EVENT_INPUT = 32 * 1024  # session bytes per event, so one event stays well under the limit
COALESCE_SECONDS = 0.005  # *_nowait: output read within this of the first piece is one event


async def start_recording(
    recorders: Sequence[RecorderAddress | tuple[str, int]],
    header: CastHeader,
    *,
    options: RecordingOptions | None = None,
    on_failure: Callable[[RecordingFailed], None] | None = None,
    clock: Clock = time.monotonic,
) -> Recording:
    """Connect to the first recorder that accepts the recording: it answered the upload and
    took its header (v2: acked it; v1: read it after its ``100 Continue``). A recorder that
    refuses the header (too large, disk full) is a failed attempt like one that cannot be
    dialed, and the next is tried.

    Raises RecorderUnavailable when ``options.enforce`` and none accepted. Otherwise always
    returns a Recording: to a recorder, to the local fallback file, or unrecorded (writes
    discarded); ``Recording.attempts`` says what was tried. ``on_failure`` is called only
    for a failure after the start.
    """
    options = options or RecordingOptions()
    start = clock()
    deadline = start + options.connect_timeout
    attempts: list[Attempt] = []
    addresses = tuple(entry if isinstance(entry, RecorderAddress) else RecorderAddress(*entry)
                      for entry in recorders)
    for address in addresses:
        try:
            upload = await connect(address, deadline, options, clock)
        except ConnectFailed as e:
            attempts.append(Attempt(str(address), e.protocol, str(e)))
            log.warning("recorder did not accept the recording",
                        extra={"recorder": str(address), "protocol": e.protocol,
                               "reason": str(e)})
            continue
        except Exception as e:  # a bug in one attempt must not skip the other recorders
            log.exception("recording attempt crashed", extra={"recorder": str(address)})
            attempts.append(Attempt(str(address), None, f"internal error: {e!r}"))
            continue
        accepted = Attempt(str(address), upload.protocol)
        try:
            recording = await Recording.start(
                header, upload, (*attempts, accepted), options, on_failure, clock, start,
                confirm_within=deadline - clock(), recorders=addresses, recorder=address)
        except RecordingFailed as e:  # e.g. the recorder refused the header, or its disk
            attempts.append(Attempt(str(address), upload.protocol, str(e)))
            log.warning("recorder did not accept the recording's header",
                        extra={"recorder": str(address), "protocol": upload.protocol,
                               "reason": str(e)})
            continue
        log.info("recording started", extra={"recorder": str(address),
                                             "protocol": upload.protocol})
        return recording
    reason = "; ".join(f"{a.recorder}: {a.error}" for a in attempts) or \
        "no recorders configured"
    if options.enforce:
        raise RecorderUnavailable(
            f"recording is required but no recorder accepted it ({reason})", tuple(attempts))
    sink: Destination | None = None
    if options.local_dir is not None:
        try:
            sink = await LocalCastFile.create(options.local_dir, header.timestamp,
                                              header.connection_id)
        except RecordingFailed as e:
            log.error("local recording fallback failed", extra={"reason": str(e)})
        else:
            log.warning("recording to a local file (debug fallback)",
                        extra={"path": sink.destination, "reason": reason})
    if sink is None:
        log.warning("session goes on unrecorded", extra={"reason": reason})
    return await Recording.start(header, sink, tuple(attempts), options, on_failure, clock,
                                 start)


class Recording(RecordingSink):
    """A session's recording in progress, in this process; see the module doc."""

    def __init__(self, header: CastHeader, sink: Destination | None,
                 attempts: tuple[Attempt, ...], options: RecordingOptions, clock: Clock,
                 start: float) -> None:
        """Use ``start`` (or ``start_recording``): a recording is whole once its header is
        written."""
        self._attempts = attempts
        self._sink = sink
        self._options = options
        self._on_failure: Callable[[RecordingFailed], None] | None = None
        self._clock = clock
        self._encoder = CastEncoder(header, start)
        self._buffer = RecordingBuffer(options.buffer_limit, options.enforce)
        self._data_ready = asyncio.Event()
        self._close_started = False  # failures from here on are reported by close(), not
        self._closing = False  # on_failure; _closing: the session side is done writing
        self._finished = False
        self._failure: RecordingFailed | None = None
        self._pause: Callable[[], None] | None = None
        self._resume: Callable[[], None] | None = None
        self._paused = False
        self._pump_task: asyncio.Task[None] | None = None
        # Output not yet encoded: consecutive reads of one stream become one event (a pty
        # gives 4 KiB per read; one event each would cost more than the read itself).
        self._pending = bytearray()
        self._pending_encode: Callable[[float, bytes], bytes] | None = None
        self._pending_at = 0.0
        self._pending_timer: asyncio.TimerHandle | None = None
        # Failover (docs/recording.md, "Failover"): the recorders of the rule, the one taking
        # the recording, and the bytes taken from the buffer that it has not been handed yet.
        self._recorders: tuple[RecorderAddress, ...] = ()
        self._recorder: RecorderAddress | None = None
        self._in_flight = b""
        self._line_open = False  # the last chunk handed over ended inside an event line
        self._failover_task: asyncio.Task[None] | None = None
        self.failovers = 0
        if sink is not None:
            self._pump_task = asyncio.create_task(self._pump())
            sink.failed.add_done_callback(self._on_sink_failed)

    @classmethod
    async def start(cls, header: CastHeader, sink: Destination | None,
                    attempts: tuple[Attempt, ...], options: RecordingOptions,
                    on_failure: Callable[[RecordingFailed], None] | None, clock: Clock,
                    start: float, *, confirm_within: float | None = None,
                    recorders: tuple[RecorderAddress, ...] = (),
                    recorder: RecorderAddress | None = None) -> Recording:
        """The recording with its header written. ``confirm_within`` (an upload): returns
        once the recorder has taken the header, only then is the session recorded (a
        recorder refuses a header it cannot store: docs/recording.md); RecordingFailed, the
        upload cut, if it did not in that many seconds. ``on_failure`` is told of failures
        from then on. ``recorders``: the rule's, ``recorder`` the one of them the upload
        ``sink`` goes to; from then on a failure of it fails over to another (docs/recording.md,
        "Failover")."""
        recording = cls(header, sink, attempts, options, clock, start)
        size = recording._write_header()
        if confirm_within is not None:
            assert isinstance(sink, (V2Upload, V1Upload))
            try:
                await sink.confirm(size, confirm_within)
                if recording._failure is not None:
                    raise recording._failure
            except RecordingFailed as e:
                recording.abort(f"recorder did not accept the header: {e}")
                raise
        recording._on_failure = on_failure  # from here on, a failure ends the session
        recording._recorders, recording._recorder = recorders, recorder
        return recording

    def _write_header(self) -> int:
        if self._sink is None:
            return 0
        line = self._encoder.header_line()
        self._buffer.put_header(line)
        self._data_ready.set()
        return len(line)

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        return self._attempts

    @property
    def failure(self) -> RecordingFailed | None:
        return self._failure

    # -- the session's side: never blocks, never raises ----------------------------------------

    def set_flow_control(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        """The buffer exceeds ``buffer_limit`` by at most the last write."""
        self._pause, self._resume = pause, resume

    # ``at``: when it happened (the clock's time), if not now: the recording worker passes on
    # the time the daemon read the data.

    def output_nowait(self, data: bytes, at: float | None = None) -> None:
        self._record_bytes(self._encoder.output, data, at)

    def stderr_nowait(self, data: bytes, at: float | None = None) -> None:
        self._record_bytes(self._encoder.stderr, data, at)

    def input_nowait(self, data: bytes, at: float | None = None) -> None:
        self._record_bytes(self._encoder.input, data, at)

    def resize_nowait(self, cols: int, rows: int, at: float | None = None) -> None:
        self._record(lambda now: self._encoder.resize(now, cols, rows), at)

    def exit_nowait(self, status: int, at: float | None = None) -> None:
        self._record(lambda now: self._encoder.exit(now, status), at)

    def marker_nowait(self, label: str, at: float | None = None) -> None:
        self._record(lambda now: self._encoder.marker(now, label), at)

    def dropped_nowait(self, size: int) -> None:
        """``size`` bytes of output were lost before they reached this recording (the worker
        client's full buffer, unenforced): counted, and marked like the recording's own drops."""
        if self._sink is None or self._closing or self._failure is not None or size <= 0:
            return
        self._flush_pending()
        self._buffer.count_drop(size)

    @property
    def writable(self) -> bool:
        return not self._paused

    async def close(self) -> RecordingStats:
        """Flush, end the upload and wait for the recorder to confirm (bounded)."""
        if self._closing or self._close_started:
            return self.stats()
        self._close_started = True
        self._flush_pending()
        self._record(self._encoder.finish)
        if self._sink is not None and self._failure is None:
            now = self._clock()
            self._buffer.put_final_marker(lambda size: self._drop_marker(now, size))
        self._closing = True
        self._data_ready.set()
        if self._failover_task is not None:  # bounded by connect_timeout
            await asyncio.wait({self._failover_task},
                               timeout=self._options.connect_timeout + 5)
        if self._pump_task is not None:
            # The pump ends the upload; its own waits are bounded, this bounds the whole.
            done, _ = await asyncio.wait({self._pump_task},
                                         timeout=self._options.finish_timeout * 2)
            if not done:
                self._fail(RecordingFailed(
                    f"recorder did not take the end of the recording in "
                    f"{self._options.finish_timeout * 2:g}s"))
        stats = self.stats()
        log.info("recording closed", extra={"recording": stats.to_json()})
        return stats

    def abort(self, reason: str = ABORTED) -> RecordingStats:
        self._close_started = True
        self._closing = True
        self._drop_pending()
        self._fail(RecordingFailed(reason))
        return self.stats()

    def stats(self) -> RecordingStats:
        sink = self._sink
        state: State
        if sink is None:
            state = "unrecorded"
        elif self._failure is not None:
            state = "failed"
        elif self._finished:
            state = "finished"
        else:
            state = "recording"
        buffer = self._buffer
        return RecordingStats(
            state=state,
            destination=sink.destination if sink else None,
            protocol=sink.protocol if sink else None,
            bytes_written=buffer.written,
            bytes_sent=sink.bytes_sent if sink else 0,
            bytes_acked=sink.bytes_acked if sink else None,
            bytes_buffered=buffer.buffered,
            bytes_dropped=buffer.dropped,
            events_dropped=buffer.dropped_events,
            attempts=self.attempts,
            error=str(self._failure) if self._failure else None,
        )

    # -- encoding into the buffer --------------------------------------------------------------

    def _record_bytes(self, encode: Callable[[float, bytes], bytes], data: bytes,
                      at: float | None = None) -> None:
        """Coalesce: the bytes wait (at most COALESCE_SECONDS, MAX_EVENT_INPUT bytes) for
        more of the same stream, then become one event timed at the first of them."""
        if self._closing or self._sink is None or self._failure is not None or not data:
            return
        if self._pending and self._pending_encode != encode:
            self._flush_pending()
        if not self._pending:
            self._pending_encode = encode
            self._pending_at = self._clock() if at is None else at
            self._pending_timer = asyncio.get_running_loop().call_later(
                COALESCE_SECONDS, self._flush_pending)
        self._pending += data
        if len(self._pending) >= MAX_EVENT_INPUT:
            self._flush_pending()

    def _flush_pending(self) -> None:
        if self._pending_timer is not None:
            self._pending_timer.cancel()
            self._pending_timer = None
        if not self._pending:
            return
        data = bytes(self._pending)
        self._pending.clear()
        encode, at = self._pending_encode, self._pending_at
        assert encode is not None
        for i in range(0, len(data), MAX_EVENT_INPUT):
            piece = data[i:i + MAX_EVENT_INPUT]

            def encode_piece(now: float, piece: bytes = piece) -> bytes:
                return encode(at, piece)

            self._record(encode_piece)

    def _drop_pending(self) -> None:
        if self._pending_timer is not None:
            self._pending_timer.cancel()
            self._pending_timer = None
        self._pending.clear()

    def _record(self, encode: Callable[[float], bytes], at: float | None = None) -> None:
        if self._closing or self._sink is None or self._failure is not None:
            return  # a failure reaches the session through on_failure
        if self._pending:
            self._flush_pending()  # keeps the events in order
        now = self._clock() if at is None else at
        self._buffer.put(encode(now), lambda size: self._drop_marker(now, size))
        self._data_ready.set()
        if self._options.enforce and not self._paused and self._buffer.full:
            self._paused = True
            self._call_flow(self._pause)

    def _drop_marker(self, now: float, size: int) -> bytes:
        return self._encoder.marker(
            now, f"tssh: {size} bytes of this recording were dropped "
                 f"(recording could not keep up)")

    def _maybe_resume(self) -> None:
        if self._paused and self._failover_task is None and (
                self._failure is not None or self._buffer.half_empty):
            self._paused = False
            self._call_flow(self._resume)

    def _call_flow(self, callback: Callable[[], None] | None) -> None:
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("recording flow control callback raised")

    # -- sending -------------------------------------------------------------------------------

    async def _pump(self) -> None:
        sink = self._sink
        assert sink is not None
        try:
            while True:
                if not self._buffer:
                    if self._closing:
                        break
                    self._data_ready.clear()
                    await self._data_ready.wait()
                    continue
                chunk = self._in_flight = self._buffer.take(CHUNK_SIZE)
                await sink.send(chunk)
                self._in_flight = b""
                self._line_open = not chunk.endswith(b"\n")
                self._buffer.sent(len(chunk))
                self._maybe_resume()
            await sink.finish(self._options.finish_timeout)
            self._finished = True
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._lost(as_failure(e, "recording destination failed", "recording pump crashed"))

    def _on_sink_failed(self, fut: asyncio.Future[None]) -> None:
        if fut.cancelled() or self._sink is None or fut is not self._sink.failed:
            return  # a destination failed over from
        exc = fut.exception()
        if exc is not None:
            self._lost(exc if isinstance(exc, RecordingError) else RecordingFailed(str(exc)))

    def _lost(self, error: RecordingError) -> None:
        """The recorder failed while the session runs: fail over to another of the rule's
        recorders, which starts a new recording of the same connection; else (none left,
        the session is ending, a local file) the recording has failed."""
        if self._failover_task is not None:  # the pump and the sink both report it
            return
        if (self._close_started or self._finished or self.failure is not None
                or self._recorder is None or len(self._recorders) < 2):
            self._fail(error)
            return
        self._failover_task = asyncio.create_task(self._fail_over(error))

    async def _fail_over(self, error: RecordingError) -> None:
        old, failed = self._sink, self._recorder
        assert old is not None and failed is not None
        old.abort()
        if self._pump_task is not None:
            self._pump_task.cancel()
        if self._options.enforce and not self._paused:  # nothing unrecorded meanwhile
            self._paused = True
            self._call_flow(self._pause)
        unconfirmed = old.bytes_sent - old.bytes_acked if old.bytes_acked is not None else None
        # what the old recorder may lack goes to the new one, from the start of an event
        self._buffer.put_back(self._in_flight)
        self._in_flight = b""
        skipped = self._buffer.skip_line_rest() if self._line_open else 0
        self._line_open = False
        log.warning("recorder failed during the session; failing over",
                    extra={"recorder": str(failed), "reason": str(error)})
        i = self._recorders.index(failed)
        order = [r for r in (*self._recorders[i + 1:], *self._recorders[:i]) if r != failed]
        deadline = self._clock() + self._options.connect_timeout
        header = self._encoder.header_line()
        lacks = (f"it had not acknowledged the last {unconfirmed} bytes sent to it"
                 if unconfirmed is not None else "its last bytes may be missing (v1, no acks)")
        if skipped:
            lacks += f"; the {skipped} bytes left of the event it had the start of are not here"
        marker = self._encoder.marker(
            self._clock(), f"tssh: continues the recording of this session that recorder "
                           f"{failed} was taking when it failed ({error}); {lacks}")
        attempts: list[Attempt] = []
        for address in order:
            try:
                upload = await connect(address, deadline, self._options, self._clock)
            except ConnectFailed as e:
                attempts.append(Attempt(str(address), e.protocol, str(e)))
                continue
            except Exception as e:  # a bug in one attempt must not skip the other recorders
                log.exception("recording failover attempt crashed",
                              extra={"recorder": str(address)})
                attempts.append(Attempt(str(address), None, f"internal error: {e!r}"))
                continue
            try:
                await upload.send(header + marker)
                await upload.confirm(len(header), deadline - self._clock())
            except (RecordingError, OSError) as e:
                upload.abort()
                attempts.append(Attempt(str(address), upload.protocol, str(e)))
                continue
            except asyncio.CancelledError:
                upload.abort()
                raise
            attempts.append(Attempt(str(address), upload.protocol))
            self._attempts += tuple(attempts)
            self._sink, self._recorder = upload, address
            self.failovers += 1
            self._failover_task = None
            upload.failed.add_done_callback(self._on_sink_failed)
            self._pump_task = asyncio.create_task(self._pump())
            self._data_ready.set()
            log.warning("recording failed over: a new recording continues the session",
                        extra={"recorder": str(address), "protocol": upload.protocol,
                               "failedRecorder": str(failed)})
            self._maybe_resume()
            return
        self._attempts += tuple(attempts)
        self._failover_task = None
        reasons = "; ".join(f"{a.recorder}: {a.error}" for a in attempts)
        self._fail(RecordingFailed(f"{error}; no other recorder took the recording "
                                   f"({reasons})"))

    def _fail(self, error: RecordingError) -> None:
        if self._failure is not None or self._finished:
            return
        failure = error if isinstance(error, RecordingFailed) else RecordingFailed(str(error))
        self._failure = failure
        task, self._failover_task = self._failover_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if self._pump_task is not None and self._pump_task is not asyncio.current_task():
            self._pump_task.cancel()
        if self._sink is not None:
            self._sink.abort()
        self._buffer.discard(len(self._pending))
        self._drop_pending()
        self._data_ready.set()
        self._maybe_resume()
        log.error("recording failed", extra={
            "destination": self._sink.destination if self._sink else None,
            "reason": str(failure), "enforced": self._options.enforce})
        if self._on_failure is not None and not self._close_started:
            try:
                self._on_failure(failure)
            except Exception:
                log.exception("recording failure callback raised")

__all__ = [
    "Recording",
    "start_recording",
]
