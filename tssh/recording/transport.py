"""Connections to a recorder: dial, probe, and the upload in either protocol, a ``Destination``.

The asyncio side of ``wire`` (which decides, sans-I/O): ``connect`` dials a recorder from
``RecordingOptions.source_address`` (recorders identify the uploader by it), probes v2 with an
h2c ``HEAD /v2/record`` and falls back to v1 (HTTP/1.1, ``Expect: 100-continue``) on a new
connection to the same recorder; a recorder whose dial fails is not dialed a second time.
``check_recorder`` probes without recording (``tssh status``). Timeouts: docs/recording.md.

HTTP: h2 and h11 directly, over asyncio streams. httpx was ruled out: its HTTP/2 transport
(httpcore) sends the whole request body before it reads the response headers, so acks could
not arrive while the session runs; and it does not wait for ``100 Continue`` either.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from tssh.errors import RecordingError, RecordingFailed
from tssh.recording.model import Clock, RecordingOptions, WireProtocol
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

READ_SIZE = 64 * 1024


class Destination(Protocol):
    """Where a recording's encoded stream goes: a recorder upload (v2, v1) or a local file."""

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


class ConnectFailed(Exception):
    def __init__(self, reason: str, protocol: Literal["v2", "v1"] | None) -> None:
        super().__init__(reason)
        self.protocol = protocol


class _WireState(Protocol):
    """What the common driving needs of ``wire``'s V2Connection and V1Connection."""

    upload_ended: bool

    def data_to_send(self) -> bytes: ...

    def end_body(self) -> None: ...


class _HTTPUpload:
    """Common driving of one recorder connection: a reader task feeding the wire state."""

    protocol: Literal["v2", "v1"]
    conn: _WireState  # set by the subclass

    def __init__(self, address: RecorderAddress, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, clock: Clock) -> None:
        self.destination = str(address)
        self._reader = reader
        self._writer = writer
        self._clock = clock
        loop = asyncio.get_running_loop()
        self.failed: asyncio.Future[None] = loop.create_future()
        self.failed.add_done_callback(consume_exception)
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
        out = self.conn.data_to_send()
        if out and not self._writer.is_closing():
            self._writer.write(out)

    def _end_body(self) -> None:
        self.conn.end_body()

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
            self._fail(as_failure(e, "connection to the recorder lost",
                                   "recording connection reader crashed"))

    def _fail(self, error: RecordingError) -> None:
        if not self.failed.done():
            self.failed.set_exception(error)
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(error)
                waiter.add_done_callback(consume_exception)
        self._waiters.clear()
        self._progress.set()
        self._taken.set()
        self.abort()

    def _has_taken(self, size: int) -> bool:
        raise NotImplementedError

    def _upload_ended(self) -> bool:
        return self.conn.upload_ended

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
    conn: V2Connection

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

    def _has_taken(self, size: int) -> bool:
        return self.conn.tracker.acked >= size

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
    conn: V1Connection

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

    def _receive(self, data: bytes) -> list[WireEvent]:
        return self.conn.receive(data)

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



def as_failure(error: Exception, lost: str, crashed: str) -> RecordingError:
    """What an exception in a recording's I/O task means for the recording: its own error,
    ``lost: <OS error>``, or (logged with its traceback, as ``crashed``) a bug, which must
    not leave an enforced recording silently stuck either. Call from the ``except`` block."""
    if isinstance(error, RecordingError):
        return error
    if isinstance(error, OSError):
        return RecordingFailed(f"{lost}: {error}")
    log.exception(crashed)
    return RecordingFailed(f"internal error in the recording client: {error!r}")


def consume_exception(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


async def dial(address: RecorderAddress, deadline: float, options: RecordingOptions,
                clock: Clock, protocol: Literal["v2", "v1"],
                ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    timeout = min(options.dial_timeout, deadline - clock())
    if timeout <= 0:
        raise ConnectFailed(
            f"no time left to dial ({options.connect_timeout:g}s over all recorders)", protocol)
    local_addr = (options.source_address, 0) if options.source_address else None
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.open_connection(address.host, address.port,
                                                 local_addr=local_addr)
    except TimeoutError:
        raise ConnectFailed(f"dial timed out after {timeout:.3g}s", protocol) from None
    except OSError as e:
        raise ConnectFailed(f"dial failed: {e.strerror or e}", protocol) from None


async def connect(address: RecorderAddress, deadline: float, options: RecordingOptions,
                   clock: Clock) -> V2Upload | V1Upload:
    reader, writer = await dial(address, deadline, options, clock, "v2")
    v2 = V2Upload(address, reader, writer, clock, options.ack_window)
    try:
        status = await v2.probe(min(options.probe_timeout, deadline - clock()))
        probe_result = f"v2 probe: status {status}"
        if status == 200:
            try:
                await v2.start_upload(deadline - clock())
            except RecordingError as e:
                raise ConnectFailed(f"v2: {e}", "v2") from None
            return v2
    except RecordingError as e:
        probe_result = f"v2 probe: {e}"
    except BaseException:
        v2.abort()
        raise
    v2.abort()
    log.debug("recorder does not support v2", extra={"recorder": str(address),
                                                     "reason": probe_result})
    reader, writer = await dial(address, deadline, options, clock, "v1")
    v1 = V1Upload(address, reader, writer, clock, options.ack_window)
    try:
        await v1.start_upload(deadline - clock())
    except RecordingError as e:
        v1.abort()
        raise ConnectFailed(f"{probe_result}; v1: {e}", "v1") from None
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
        reader, writer = await dial(address, deadline, options, clock, "v2")
    except ConnectFailed as e:
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
