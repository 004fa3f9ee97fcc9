"""Streams a session's recording to a recorder: dial, probe, failover, backpressure.

The asyncio driver around the pure parts (``asciicast`` encodes, ``wire`` decides). Behaviour
follows tailscaled's client (docs/recording.md): recorders are tried in order; on each, an h2c
``HEAD /v2/record`` probe picks v2 (full duplex, acked) on a ``200``, else v1 (HTTP/1.1,
``Expect: 100-continue``) on a new connection to the same recorder. Dial timeout 5 s per
connection, 30 s for connecting to all recorders (probes and the wait for the upload's
``200`` / ``100 Continue`` included), probe 10 s, ack window 30 s. A recorder whose dial
fails is not dialed a second time for v1. Connections are made from
``RecordingOptions.source_address`` (the daemon's tailnet address: recorders identify the
uploader by it).

HTTP: h2 and h11 directly, over asyncio streams. httpx was ruled out: its HTTP/2 transport
(httpcore) sends the whole request body before it reads the response headers, so acks could
not arrive while the session runs; and it does not wait for ``100 Continue`` either.

Using it from a session (the daemon)::

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
    await rec.output(data)                # PTY output or stdout; rec.stderr(data) non-PTY
    await rec.resize(cols, rows)
    await rec.exit(status)
    stats = await rec.close()             # final ack / 200; stats.state is the outcome
    # or, when the daemon shuts down and cannot wait: rec.abort()

``rec.stats().to_json()`` is the per-recording entry for ``tssh status`` (destination,
protocol, bytes written/sent/acked/buffered/dropped, attempts); ``check_recorder(address)``
probes a recorder's health without recording anything.

A session driven by callbacks (``loop.add_reader``) uses ``rec.output_nowait(data)``,
``stderr_nowait``, ``resize_nowait``, ``exit_nowait`` instead: they never block nor raise,
and with ``enforce`` flow control replaces waiting: ``rec.set_flow_control(pause, resume)``
is told to stop reading the process's output while the buffer is full. Use one style per
recording.

``on_failure(error)`` (a plain function; it may schedule tasks) is called once, from the
event loop, if the upload fails or the recorder ends it while the session runs (not after
``close()`` began: then the outcome is in the returned stats). With ``enforce`` the daemon
ends the session with a message, and awaited writes after a failure raise
``RecordingFailed``. Without ``enforce`` writes never raise: after a failure they are
discarded and counted.

Memory is bounded per recording: at most ``buffer_limit`` bytes wait in the buffer, the
chunk being sent included (plus the transport's own buffer, 64 KiB at most by default).
When it is full, with ``enforce`` writes wait, or the session is paused (backpressure slows
the session down to the recorder's pace); without, whole events are dropped, counted, and an
``"m"`` marker event saying how many bytes were lost is inserted before the next event that
fits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from tssh.errors import RecorderUnavailable, RecordingError, RecordingFailed
from tssh.recording.asciicast import CastEncoder, CastHeader
from tssh.recording.local import LocalCastFile
from tssh.recording.targets import RecorderAddress
from tssh.recording.wire import (
    Acked,
    Continue,
    ProbeAnswered,
    UploadAnswered,
    UploadEnded,
    V1Connection,
    V2Connection,
    WindowOpened,
    WireEvent,
)

log = logging.getLogger("tssh.recording")

Clock = Callable[[], float]
WireProtocol = Literal["v2", "v1", "local"]
State = Literal["recording", "finished", "failed", "unrecorded"]

READ_SIZE = 64 * 1024
CHUNK_SIZE = 64 * 1024  # bytes taken from the buffer per send
MAX_EVENT_INPUT = 32 * 1024  # session bytes per event, so one event stays well under the limit
COALESCE_SECONDS = 0.005  # *_nowait: output read within this of the first piece is one event


@dataclass(frozen=True)
class RecordingOptions:
    enforce: bool = False  # the rule's enforceRecorder
    source_address: str | None = None  # dial from this address (the node's tailnet address)
    local_dir: Path | None = None  # debug fallback (Config.local_recording_dir)
    buffer_limit: int = 1024 * 1024
    dial_timeout: float = 5.0  # per connection attempt
    connect_timeout: float = 30.0  # over all recorders, probes included
    probe_timeout: float = 10.0
    ack_window: float = 30.0  # v2: longest silence allowed from the recorder
    finish_timeout: float = 30.0  # close(): rest of the buffer, final ack or 200

    def __post_init__(self) -> None:
        if self.buffer_limit < 1024:
            raise ValueError("buffer_limit must be at least 1 KiB")
        for name in ("dial_timeout", "connect_timeout", "probe_timeout", "ack_window",
                     "finish_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")


@dataclass(frozen=True)
class Attempt:
    """One recorder tried at the start: accepted (``error`` None) or why not."""

    recorder: str
    protocol: Literal["v2", "v1"] | None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"recorder": self.recorder, "protocol": self.protocol, "error": self.error}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Attempt:
        return cls(str(obj["recorder"]), obj["protocol"], obj["error"])


@dataclass(frozen=True)
class RecordingStats:
    """One recording's state, for ``tssh status`` and the audit log."""

    state: State
    destination: str | None  # recorder address or local file
    protocol: WireProtocol | None
    bytes_written: int  # encoded bytes the session produced
    bytes_sent: int
    bytes_acked: int | None  # v2 only: what the recorder confirmed receiving
    bytes_buffered: int
    bytes_dropped: int
    events_dropped: int
    attempts: tuple[Attempt, ...] = field(default=())
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state, "destination": self.destination, "protocol": self.protocol,
            "bytesWritten": self.bytes_written, "bytesSent": self.bytes_sent,
            "bytesAcked": self.bytes_acked, "bytesBuffered": self.bytes_buffered,
            "bytesDropped": self.bytes_dropped, "eventsDropped": self.events_dropped,
            "attempts": [a.to_json() for a in self.attempts], "error": self.error,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> RecordingStats:
        return cls(
            state=obj["state"], destination=obj["destination"], protocol=obj["protocol"],
            bytes_written=int(obj["bytesWritten"]), bytes_sent=int(obj["bytesSent"]),
            bytes_acked=None if obj["bytesAcked"] is None else int(obj["bytesAcked"]),
            bytes_buffered=int(obj["bytesBuffered"]), bytes_dropped=int(obj["bytesDropped"]),
            events_dropped=int(obj["eventsDropped"]),
            attempts=tuple(Attempt.from_json(a) for a in obj["attempts"]),
            error=obj["error"],
        )


class Sink(Protocol):
    """Where the stream goes: a recorder upload (v2, v1) or a local file."""

    @property
    def protocol(self) -> WireProtocol: ...

    @property
    def destination(self) -> str: ...

    @property
    def failed(self) -> asyncio.Future[None]:
        """Completes with an exception when the destination fails on its own (ack timeout)."""
        ...

    @property
    def bytes_sent(self) -> int: ...

    @property
    def bytes_acked(self) -> int | None: ...

    async def send(self, data: bytes) -> None: ...

    async def finish(self, time_limit: float) -> None: ...

    def abort(self) -> None: ...


class _ConnectFailed(Exception):
    def __init__(self, reason: str, protocol: Literal["v2", "v1"] | None) -> None:
        super().__init__(reason)
        self.protocol = protocol


class _HTTPUpload:
    """Common driving of one recorder connection: a reader task feeding the wire state."""

    protocol: Literal["v2", "v1"]

    def __init__(self, address: RecorderAddress, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, clock: Clock) -> None:
        self.destination = str(address)
        self._reader = reader
        self._writer = writer
        self._clock = clock
        loop = asyncio.get_running_loop()
        self.failed: asyncio.Future[None] = loop.create_future()
        self.failed.add_done_callback(_consume_exception)
        self._waiters: dict[type, asyncio.Future[WireEvent]] = {}
        self._progress = asyncio.Event()  # window opened, ack arrived, or failure
        self._taken = asyncio.Event()  # for confirm(): ack arrived, body sent, or failure
        self._read_task: asyncio.Task[None] | None = None

    def start_reading(self) -> None:
        self._read_task = asyncio.create_task(self._read_loop())

    def _read_timeout(self) -> float | None:
        return None

    def _check_deadline(self) -> None:
        pass

    def _receive(self, data: bytes) -> list[WireEvent]:
        raise NotImplementedError

    def _flush(self) -> None:
        raise NotImplementedError

    def _end_body(self) -> None:
        raise NotImplementedError

    async def finish(self, time_limit: float) -> None:
        """Ends the body and waits (at most ``time_limit``) for the recorder to end its
        response: the final ack (v2) or the 200 (v1)."""
        if (error := self._error()) is not None:
            raise error
        waiter = self.expect(UploadEnded)
        self._end_body()
        self._flush()
        await self.wait(waiter, time_limit)
        self.abort()

    async def _read_loop(self) -> None:
        try:
            while True:
                try:
                    async with asyncio.timeout(self._read_timeout()):
                        data = await self._reader.read(READ_SIZE)
                except TimeoutError:
                    self._check_deadline()
                    continue
                events = self._receive(data)
                self._flush()
                for ev in events:
                    waiter = self._waiters.pop(type(ev), None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(ev)
                    if isinstance(ev, (WindowOpened, Acked)):
                        self._progress.set()
                    if isinstance(ev, (Acked, UploadEnded)):
                        self._taken.set()
                if any(isinstance(ev, UploadEnded) for ev in events):
                    return
        except Exception as e:
            self._fail(_as_failure(e, "connection to the recorder lost",
                                   "recording connection reader crashed"))

    def _fail(self, error: RecordingError) -> None:
        if not self.failed.done():
            self.failed.set_exception(error)
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(error)
                waiter.add_done_callback(_consume_exception)
        self._waiters.clear()
        self._progress.set()
        self._taken.set()
        self.abort()

    def _has_taken(self, size: int) -> bool:
        raise NotImplementedError

    def _upload_ended(self) -> bool:
        return False

    async def confirm(self, size: int, time_limit: float) -> None:
        """Returns once the recorder has taken the stream's first ``size`` bytes (v2: acked,
        so stored; v1: written to the connection, the most v1 tells): RecordingFailed if it
        failed or did not within ``time_limit`` seconds."""
        try:
            async with asyncio.timeout(max(time_limit, 0.0)):
                while True:
                    if (error := self._error()) is not None:
                        raise error
                    if self._has_taken(size):
                        return
                    if self._upload_ended():
                        raise RecordingFailed("recorder ended the upload before it accepted "
                                              "the recording's header")
                    self._taken.clear()
                    await self._taken.wait()
        except TimeoutError:
            raise RecordingFailed(
                f"recorder did not accept the recording's header in {time_limit:.3g}s"
            ) from None

    def _error(self) -> RecordingError | None:
        if self.failed.done() and not self.failed.cancelled():
            exc = self.failed.exception()
            return exc if isinstance(exc, RecordingError) else RecordingFailed(str(exc))
        return None

    def expect(self, kind: type) -> asyncio.Future[WireEvent]:
        """A future for the next event of ``kind`` (registered before sending the request)."""
        waiter: asyncio.Future[WireEvent] = asyncio.get_running_loop().create_future()
        if (error := self._error()) is not None:
            waiter.set_exception(error)
        else:
            self._waiters[kind] = waiter
        return waiter

    async def wait(self, waiter: asyncio.Future[WireEvent], time_limit: float) -> WireEvent:
        """The awaited event, or RecordingFailed (failure or timeout)."""
        try:
            async with asyncio.timeout(max(time_limit, 0.0)):
                return await waiter
        except TimeoutError:
            raise RecordingFailed(f"no answer from the recorder in {time_limit:.3g}s") from None
        finally:
            if not waiter.done():
                waiter.cancel()

    def abort(self) -> None:
        self._writer.transport.abort()
        if self._read_task is not None and self._read_task is not asyncio.current_task():
            self._read_task.cancel()

    async def _drain(self) -> None:
        try:
            await self._writer.drain()
        except OSError as e:
            raise self._error() or RecordingFailed(
                f"connection to the recorder lost: {e}") from None


class V2Upload(_HTTPUpload):
    protocol: Literal["v2"] = "v2"

    def __init__(self, address: RecorderAddress, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, clock: Clock, ack_window: float) -> None:
        super().__init__(address, reader, writer, clock)
        self.conn = V2Connection(str(address), ack_window=ack_window, now=clock())

    @property
    def bytes_sent(self) -> int:
        return self.conn.tracker.sent

    @property
    def bytes_acked(self) -> int | None:
        return self.conn.tracker.acked

    def _receive(self, data: bytes) -> list[WireEvent]:
        return self.conn.receive(data, self._clock())

    def _end_body(self) -> None:
        self.conn.end_body()

    def _flush(self) -> None:
        out = self.conn.data_to_send()
        if out and not self._writer.is_closing():
            self._writer.write(out)

    def _has_taken(self, size: int) -> bool:
        return self.conn.tracker.acked >= size

    def _upload_ended(self) -> bool:
        return self.conn.upload_ended

    def _uploading(self) -> bool:
        return self.conn.upload_status == 200 and not self.conn.upload_ended

    def _read_timeout(self) -> float | None:
        if not self._uploading():
            return None
        return max(self.conn.tracker.deadline - self._clock(), 0.0)

    def _check_deadline(self) -> None:
        if self._uploading():
            self.conn.tracker.check(self._clock())

    async def probe(self, time_limit: float) -> int:
        self.conn.initiate()
        self.conn.start_probe()
        self._flush()
        waiter = self.expect(ProbeAnswered)
        self.start_reading()
        answer = await self.wait(waiter, time_limit)
        assert isinstance(answer, ProbeAnswered)
        return answer.status

    async def start_upload(self, time_limit: float) -> None:
        waiter = self.expect(UploadAnswered)
        self.conn.start_upload(self._clock())
        self._flush()
        answer = await self.wait(waiter, time_limit)
        assert isinstance(answer, UploadAnswered)
        if answer.status != 200:
            raise RecordingFailed(f"recorder answered {answer.status} to POST /v2/record")

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if (error := self._error()) is not None:
                raise error
            self._progress.clear()
            queued = 0
            # As many frames as the window allows, then one write (one syscall).
            while view and (n := min(self.conn.sendable(), len(view))) > 0:
                self.conn.send_body(bytes(view[:n]))
                view = view[n:]
                queued += n
            if queued:
                self._flush()
                await self._drain()
                continue
            if self.conn.upload_ended:
                raise RecordingFailed("recorder ended the upload before the session ended")
            await self._progress.wait()

    async def finish(self, time_limit: float) -> None:
        await super().finish(time_limit)
        tracker = self.conn.tracker
        if tracker.acked != tracker.sent:
            log.warning("recorder ended the upload without acking all of it",
                        extra={"recorder": self.destination, "bytes_sent": tracker.sent,
                               "bytes_acked": tracker.acked})


class V1Upload(_HTTPUpload):
    protocol: Literal["v1"] = "v1"

    def __init__(self, address: RecorderAddress, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, clock: Clock, stall_timeout: float) -> None:
        super().__init__(address, reader, writer, clock)
        self.conn = V1Connection(str(address))
        self._stall_timeout = stall_timeout
        self._drained_sent = 0  # body bytes handed to the kernel (written and drained)

    @property
    def bytes_sent(self) -> int:
        return self.conn.sent

    @property
    def bytes_acked(self) -> int | None:
        return None  # v1 has no acks

    def _has_taken(self, size: int) -> bool:
        return self._drained_sent >= size  # the most v1 can know: no acks, no answer yet

    def _upload_ended(self) -> bool:
        return self.conn.upload_ended

    def _receive(self, data: bytes) -> list[WireEvent]:
        return self.conn.receive(data)

    def _end_body(self) -> None:
        self.conn.end_body()

    def _flush(self) -> None:
        out = self.conn.data_to_send()
        if out and not self._writer.is_closing():
            self._writer.write(out)

    async def start_upload(self, time_limit: float) -> None:
        waiter = self.expect(Continue)
        self.conn.start_upload()
        self._flush()
        self.start_reading()
        await self.wait(waiter, time_limit)

    async def send(self, data: bytes) -> None:
        if (error := self._error()) is not None:
            raise error
        self.conn.send_body(data)
        self._flush()
        try:
            # v1 has no acks: a recorder that stops reading for the ack window has failed too.
            async with asyncio.timeout(self._stall_timeout):
                await self._drain()
        except TimeoutError:
            self._fail(RecordingFailed(
                f"recorder stopped reading the upload for {self._stall_timeout:g}s"))
            raise self._error() or RecordingFailed("recorder stalled") from None
        self._drained_sent = self.conn.sent
        self._taken.set()



def _as_failure(error: Exception, lost: str, crashed: str) -> RecordingError:
    """What an exception in a recording's I/O task means for the recording: its own error,
    ``lost: <OS error>``, or (logged with its traceback, as ``crashed``) a bug, which must
    not leave an enforced recording silently stuck either. Call from the ``except`` block."""
    if isinstance(error, RecordingError):
        return error
    if isinstance(error, OSError):
        return RecordingFailed(f"{lost}: {error}")
    log.exception(crashed)
    return RecordingFailed(f"internal error in the recording client: {error!r}")


def _consume_exception(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


async def _dial(address: RecorderAddress, deadline: float, options: RecordingOptions,
                clock: Clock, protocol: Literal["v2", "v1"],
                ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    timeout = min(options.dial_timeout, deadline - clock())
    if timeout <= 0:
        raise _ConnectFailed(
            f"no time left to dial ({options.connect_timeout:g}s over all recorders)", protocol)
    local_addr = (options.source_address, 0) if options.source_address else None
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.open_connection(address.host, address.port,
                                                 local_addr=local_addr)
    except TimeoutError:
        raise _ConnectFailed(f"dial timed out after {timeout:.3g}s", protocol) from None
    except OSError as e:
        raise _ConnectFailed(f"dial failed: {e.strerror or e}", protocol) from None


async def _connect(address: RecorderAddress, deadline: float, options: RecordingOptions,
                   clock: Clock) -> V2Upload | V1Upload:
    reader, writer = await _dial(address, deadline, options, clock, "v2")
    v2 = V2Upload(address, reader, writer, clock, options.ack_window)
    try:
        status = await v2.probe(min(options.probe_timeout, deadline - clock()))
        probe_result = f"v2 probe: status {status}"
        if status == 200:
            try:
                await v2.start_upload(deadline - clock())
            except RecordingError as e:
                raise _ConnectFailed(f"v2: {e}", "v2") from None
            return v2
    except RecordingError as e:
        probe_result = f"v2 probe: {e}"
    except BaseException:
        v2.abort()
        raise
    v2.abort()
    log.debug("recorder does not support v2", extra={"recorder": str(address),
                                                     "reason": probe_result})
    reader, writer = await _dial(address, deadline, options, clock, "v1")
    v1 = V1Upload(address, reader, writer, clock, options.ack_window)
    try:
        await v1.start_upload(deadline - clock())
    except RecordingError as e:
        v1.abort()
        raise _ConnectFailed(f"{probe_result}; v1: {e}", "v1") from None
    except BaseException:
        v1.abort()
        raise
    return v1


@dataclass(frozen=True)
class RecorderHealth:
    """What ``check_recorder`` found: reachable, and whether it speaks v2."""

    recorder: str
    reachable: bool
    protocol: Literal["v2", "v1"] | None  # v1: reachable, no v2 (only an upload proves v1)
    detail: str | None = None  # why not v2, or why unreachable

    def to_json(self) -> dict[str, Any]:
        return {"address": self.recorder, "healthy": self.reachable,
                "protocol": self.protocol, "error": self.detail}


async def check_recorder(address: RecorderAddress | tuple[str, int], *,
                         source_address: str | None = None, time_limit: float = 5.0,
                         clock: Clock = time.monotonic) -> RecorderHealth:
    """Dial and probe one recorder without recording anything (for ``tssh status``)."""
    if not isinstance(address, RecorderAddress):
        address = RecorderAddress(*address)
    options = RecordingOptions(source_address=source_address, dial_timeout=time_limit,
                               connect_timeout=time_limit)
    deadline = clock() + time_limit
    try:
        reader, writer = await _dial(address, deadline, options, clock, "v2")
    except _ConnectFailed as e:
        return RecorderHealth(str(address), False, None, str(e))
    probe = V2Upload(address, reader, writer, clock, options.ack_window)
    try:
        status = await probe.probe(deadline - clock())
    except RecordingError as e:
        return RecorderHealth(str(address), True, "v1", f"v2 probe: {e}")
    finally:
        probe.abort()
    if status == 200:
        return RecorderHealth(str(address), True, "v2")
    return RecorderHealth(str(address), True, "v1", f"v2 probe: status {status}")


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
    for entry in recorders:
        address = entry if isinstance(entry, RecorderAddress) else RecorderAddress(*entry)
        try:
            upload = await _connect(address, deadline, options, clock)
        except _ConnectFailed as e:
            attempts.append(Attempt(str(address), e.protocol, str(e)))
            log.warning("recorder did not accept the recording",
                        extra={"recorder": str(address), "protocol": e.protocol,
                               "reason": str(e)})
            continue
        except Exception as e:  # a bug in one attempt must not skip the other recorders
            log.exception("recording attempt crashed", extra={"recorder": str(address)})
            attempts.append(Attempt(str(address), None, f"internal error: {e!r}"))
            continue
        recording = Recording(header, upload, (), options, None, clock, start)
        try:
            await recording._send_header(upload, deadline - clock())
        except RecordingFailed as e:  # e.g. the recorder refused the header, or its disk
            recording.abort(f"recorder did not accept the header: {e}")
            attempts.append(Attempt(str(address), upload.protocol, str(e)))
            log.warning("recorder did not accept the recording's header",
                        extra={"recorder": str(address), "protocol": upload.protocol,
                               "reason": str(e)})
            continue
        attempts.append(Attempt(str(address), upload.protocol))
        recording.attempts = tuple(attempts)
        recording._on_failure = on_failure  # from here on, a failure ends the session
        log.info("recording started", extra={"recorder": str(address),
                                             "protocol": upload.protocol})
        return recording
    reason = "; ".join(f"{a.recorder}: {a.error}" for a in attempts) or \
        "no recorders configured"
    if options.enforce:
        raise RecorderUnavailable(
            f"recording is required but no recorder accepted it ({reason})", tuple(attempts))
    sink: Sink | None = None
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
    recording = Recording(header, sink, tuple(attempts), options, on_failure, clock, start)
    recording._write_header()
    return recording


class Recording:
    """A session's recording in progress. Every method is a coroutine; see the module doc."""

    def __init__(self, header: CastHeader, sink: Sink | None, attempts: tuple[Attempt, ...],
                 options: RecordingOptions, on_failure: Callable[[RecordingFailed], None] | None,
                 clock: Clock, start: float) -> None:
        self.attempts = attempts
        self._sink = sink
        self._options = options
        self._on_failure = on_failure
        self._clock = clock
        self._encoder = CastEncoder(header, start)
        self._buf: deque[bytes] = deque()
        self._buffered = 0
        self._written = 0
        self._dropped = 0
        self._dropped_events = 0
        self._dropped_unmarked = 0
        self._lock = asyncio.Lock()
        self._data_ready = asyncio.Event()
        self._space_ready = asyncio.Event()
        self._close_started = False  # failures from here on are reported by close(), not
        self._closing = False  # on_failure; _closing: the session side is done writing
        self._finished = False
        self.failure: RecordingFailed | None = None
        self._pause: Callable[[], None] | None = None
        self._resume: Callable[[], None] | None = None
        self._paused = False
        self._pump_task: asyncio.Task[None] | None = None
        # *_nowait output not yet encoded: consecutive reads of one stream become one event
        # (a pty gives 4 KiB per read; one event each would cost more than the read itself).
        self._pending = bytearray()
        self._pending_encode: Callable[[float, bytes], bytes] | None = None
        self._pending_at = 0.0
        self._pending_timer: asyncio.TimerHandle | None = None
        if sink is not None:
            self._pump_task = asyncio.create_task(self._pump())
            sink.failed.add_done_callback(self._on_sink_failed)

    # -- the session's side ----------------------------------------------------------------

    def _write_header(self) -> int:
        """The header goes in whatever the limit: without it the recording is unreadable."""
        if self._sink is None:
            return 0
        line = self._encoder.header_line()
        self._written += len(line)
        self._append(line)
        return len(line)

    async def _send_header(self, upload: V2Upload | V1Upload, time_limit: float) -> None:
        """Send the header and wait until the recorder has taken it: only then is the session
        recorded (a recorder refuses a header it cannot store: docs/recording.md)."""
        await upload.confirm(self._write_header(), time_limit)
        if self.failure is not None:
            raise self.failure

    async def output(self, data: bytes) -> None:
        """PTY output, or stdout of a non-PTY session."""
        await self._record_bytes(self._encoder.output, data)

    async def stderr(self, data: bytes) -> None:
        """Stderr of a non-PTY session (recorded if the header says so)."""
        await self._record_bytes(self._encoder.stderr, data)

    async def input(self, data: bytes) -> None:
        """Keyboard input (recorded only if the header says input is captured)."""
        await self._record_bytes(self._encoder.input, data)

    async def resize(self, cols: int, rows: int) -> None:
        await self._record(lambda now: self._encoder.resize(now, cols, rows))

    async def exit(self, status: int) -> None:
        await self._record(lambda now: self._encoder.exit(now, status))

    # -- the same, for callback-driven sessions (never blocks, never raises) -------------------

    def set_flow_control(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        """With ``enforce``: ``pause()`` when the buffer is full, ``resume()`` when half empty.

        A session that writes with the ``*_nowait`` methods stops reading its process's output
        between the two (as with asyncio's ``pause_writing``), so the recorder's pace limits
        the session's; the buffer exceeds ``buffer_limit`` by at most the last write.
        """
        self._pause, self._resume = pause, resume

    # ``at``: when it happened (the clock's time), if not now: a relay passes on the time
    # its sender read the data.

    def output_nowait(self, data: bytes, at: float | None = None) -> None:
        self._record_nowait_bytes(self._encoder.output, data, at)

    def stderr_nowait(self, data: bytes, at: float | None = None) -> None:
        self._record_nowait_bytes(self._encoder.stderr, data, at)

    def input_nowait(self, data: bytes, at: float | None = None) -> None:
        self._record_nowait_bytes(self._encoder.input, data, at)

    def resize_nowait(self, cols: int, rows: int, at: float | None = None) -> None:
        self._record_nowait(lambda now: self._encoder.resize(now, cols, rows), at)

    def exit_nowait(self, status: int, at: float | None = None) -> None:
        self._record_nowait(lambda now: self._encoder.exit(now, status), at)

    def marker_nowait(self, label: str, at: float | None = None) -> None:
        """An ``"m"`` event, e.g. saying what kind of session this is."""
        self._record_nowait(lambda now: self._encoder.marker(now, label), at)

    def dropped_nowait(self, size: int) -> None:
        """``size`` bytes of output were lost before they reached this recording (a relay's
        full buffer, unenforced): counted, and marked like the recording's own drops."""
        if self._sink is None or self._closing or self.failure is not None or size <= 0:
            return
        self._flush_pending()
        self._count_drop(size)

    @property
    def writable(self) -> bool:
        """False while flow control holds the session paused."""
        return not self._paused

    async def close(self) -> RecordingStats:
        """Flush, end the upload and wait for the recorder to confirm (bounded)."""
        if self._closing or self._close_started:
            return self.stats()
        self._close_started = True
        self._flush_pending()
        try:
            async with asyncio.timeout(self._options.finish_timeout):
                await self._record(self._encoder.finish)
            if self._dropped_unmarked and self._sink is not None and self.failure is None:
                # a loss at the very end is told too, whatever the limit (one short line)
                line = self._drop_marker(self._clock())
                self._dropped_unmarked = 0
                self._append(line)
        except RecordingError:
            pass
        except TimeoutError:
            self._fail(RecordingFailed(
                f"recorder did not take the end of the recording in "
                f"{self._options.finish_timeout:g}s"))
        self._closing = True
        self._data_ready.set()
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

    def abort(self, reason: str = "recording aborted before the session ended"
              ) -> RecordingStats:
        """Drop the recording at once (daemon shutdown, cancelled session): no flush, no wait.

        The recorder sees the upload cut (it keeps what it acknowledged, marked incomplete).
        ``on_failure`` is not called: the caller knows.
        """
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
        elif self.failure is not None:
            state = "failed"
        elif self._finished:
            state = "finished"
        else:
            state = "recording"
        return RecordingStats(
            state=state,
            destination=sink.destination if sink else None,
            protocol=sink.protocol if sink else None,
            bytes_written=self._written,
            bytes_sent=sink.bytes_sent if sink else 0,
            bytes_acked=sink.bytes_acked if sink else None,
            bytes_buffered=self._buffered,
            bytes_dropped=self._dropped,
            events_dropped=self._dropped_events,
            attempts=self.attempts,
            error=str(self.failure) if self.failure else None,
        )

    # -- buffering -----------------------------------------------------------------------------

    async def _record_bytes(self, encode: Callable[[float, bytes], bytes], data: bytes) -> None:
        for i in range(0, len(data), MAX_EVENT_INPUT):
            piece = data[i:i + MAX_EVENT_INPUT]

            def encode_piece(now: float, piece: bytes = piece) -> bytes:
                return encode(now, piece)

            await self._record(encode_piece)

    async def _record(self, encode: Callable[[float], bytes]) -> None:
        if self._closing or self._sink is None:
            return  # closed (late output of an ended session) or unrecorded
        now = self._clock()
        if self.failure is not None:
            if self._options.enforce:
                raise self.failure
            return
        if not self._options.enforce:
            self._offer(encode(now), now)
            return
        async with self._lock:
            line = encode(now)
            self._written += len(line)
            await self._put_waiting(line)

    def _record_nowait_bytes(self, encode: Callable[[float, bytes], bytes], data: bytes,
                             at: float | None = None) -> None:
        """Coalesce: the bytes wait (at most COALESCE_SECONDS, MAX_EVENT_INPUT bytes) for
        more of the same stream, then become one event timed at the first of them."""
        if self._closing or self._sink is None or self.failure is not None or not data:
            return
        if self._lock.locked():
            raise RuntimeError("a recording is written either with await or *_nowait, not both")
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

            self._record_nowait(encode_piece)

    def _drop_pending(self) -> None:
        if self._pending_timer is not None:
            self._pending_timer.cancel()
            self._pending_timer = None
        self._pending.clear()

    def _record_nowait(self, encode: Callable[[float], bytes], at: float | None = None
                       ) -> None:
        if self._closing or self._sink is None or self.failure is not None:
            return  # a failure reaches the session through on_failure
        if self._pending:
            self._flush_pending()  # keeps the events in order
        if self._lock.locked():
            raise RuntimeError("a recording is written either with await or *_nowait, not both")
        now = self._clock() if at is None else at
        if not self._options.enforce:
            self._offer(encode(now), now)
            return
        line = encode(now)
        self._written += len(line)
        if line:
            self._append(line)
        if not self._paused and self._buffered >= self._options.buffer_limit:
            self._paused = True
            self._call_flow(self._pause)

    def _maybe_resume(self) -> None:
        if self._paused and (self.failure is not None
                             or self._buffered <= self._options.buffer_limit // 2):
            self._paused = False
            self._call_flow(self._resume)

    def _call_flow(self, callback: Callable[[], None] | None) -> None:
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("recording flow control callback raised")

    def _offer(self, line: bytes, now: float) -> None:
        """Without enforce: buffer whole events that fit, drop (and later mark) the rest."""
        if not line:
            return
        self._written += len(line)
        limit = self._options.buffer_limit
        if self._dropped_unmarked:
            marker = self._drop_marker(now)
            if self._buffered + len(marker) + len(line) <= limit:
                self._dropped_unmarked = 0
                self._append(marker)
                self._append(line)
                return
        elif self._buffered + len(line) <= limit:
            self._append(line)
            return
        self._count_drop(len(line))

    def _count_drop(self, size: int) -> None:
        """One event's worth of output lost: counted, and marked before the next event."""
        self._dropped += size
        self._dropped_events += 1
        self._dropped_unmarked += size

    def _drop_marker(self, now: float) -> bytes:
        return self._encoder.marker(
            now, f"tssh: {self._dropped_unmarked} bytes of this recording were dropped "
                 f"(recording could not keep up)")

    async def _put_waiting(self, line: bytes) -> None:
        """With enforce: wait for room; a line larger than the whole buffer goes in parts."""
        view = memoryview(line)
        while view:
            if self.failure is not None:
                raise self.failure
            room = self._options.buffer_limit - self._buffered
            if room <= 0:
                self._space_ready.clear()
                await self._space_ready.wait()
                continue
            self._append(bytes(view[:room]))
            view = view[room:]

    def _append(self, data: bytes) -> None:
        self._buf.append(data)
        self._buffered += len(data)
        self._data_ready.set()

    def _take(self, limit: int) -> bytes:
        """Up to ``limit`` bytes from the front; they stay counted until the sink took them."""
        parts: list[bytes] = []
        size = 0
        while self._buf and size < limit:
            part = self._buf.popleft()
            if size + len(part) > limit:
                cut = limit - size
                self._buf.appendleft(part[cut:])
                part = part[:cut]
            parts.append(part)
            size += len(part)
        return b"".join(parts)  # still counted in _buffered until sent

    # -- sending -------------------------------------------------------------------------------

    async def _pump(self) -> None:
        sink = self._sink
        assert sink is not None
        try:
            while True:
                if not self._buf:
                    if self._closing:
                        break
                    self._data_ready.clear()
                    await self._data_ready.wait()
                    continue
                chunk = self._take(CHUNK_SIZE)
                await sink.send(chunk)
                self._buffered -= len(chunk)
                self._space_ready.set()
                self._maybe_resume()
            await sink.finish(self._options.finish_timeout)
            self._finished = True
        except Exception as e:
            self._fail(_as_failure(e, "recording destination failed", "recording pump crashed"))

    def _on_sink_failed(self, fut: asyncio.Future[None]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            self._fail(exc if isinstance(exc, RecordingError) else RecordingFailed(str(exc)))

    def _fail(self, error: RecordingError) -> None:
        if self.failure is not None or self._finished:
            return
        failure = error if isinstance(error, RecordingFailed) else RecordingFailed(str(error))
        self.failure = failure
        if self._pump_task is not None and self._pump_task is not asyncio.current_task():
            self._pump_task.cancel()
        if self._sink is not None:
            self._sink.abort()
        self._dropped += self._buffered + len(self._pending)
        self._drop_pending()
        self._buf.clear()
        self._buffered = 0
        self._space_ready.set()
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
    "Attempt",
    "RecorderAddress",
    "RecorderHealth",
    "Recording",
    "RecordingOptions",
    "RecordingStats",
    "Sink",
    "check_recorder",
    "start_recording",
]

