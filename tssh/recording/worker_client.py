"""The daemon's side of the recording worker: start it, hand it recordings, mirror their state.

``RecordingWorker.start_recording`` has the meaning of ``uploader.start_recording`` (same
arguments, same ``RecorderUnavailable``), but the recording runs in the worker process
(``tssh.recording.worker``) and the daemon holds a ``WorkerRecording``: a
``sink.RecordingSink``, as ``uploader.Recording`` is, that mirrors the worker's reports.

What the daemon does per read is one ``sendmsg`` of the raw bytes; encoding and uploading
happen on the other core. "Recorded before forwarded" holds as before: a write returns once
the bytes are in the recording's pipeline (the socket, or this side's bounded buffer behind
it), and the session forwards them only then. The pipeline is bounded end to end: the
worker's ``Recording`` buffer, the socket's kernel buffer, and ``local_limit`` bytes here.
When this side's buffer is full, an enforced recording pauses the session
(``set_flow_control``); an unenforced one drops the bytes and tells the worker, which marks
the recording as it marks its own drops.

The worker is started on first use and again after it dies. Its death fails every live
recording ("recording worker exited"), which ends enforced sessions with a message, as any
upload failure does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tssh.errors import RecorderUnavailable, RecordingFailed
from tssh.recording.asciicast import CastHeader
from tssh.recording.model import Attempt, RecordingOptions, RecordingStats
from tssh.recording.outbox import Outbox
from tssh.recording.sink import ABORTED, RecordingSink
from tssh.recording.targets import RecorderAddress
from tssh.recording.worker_protocol import (
    DROPPED,
    EXIT,
    RESIZE,
    Kind,
    ReportReader,
    StartRequest,
    WorkerProtocolError,
    frame_header,
)

log = logging.getLogger("tssh.recording")

LOCAL_LIMIT = 256 * 1024  # bytes this side holds behind a full socket
START_SLACK = 15.0  # beyond the options' connect timeout, for a worker still starting
STOP_GRACE = 10.0  # seconds the worker gets to end at daemon exit before SIGKILL
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_NOTHING = RecordingStats(state="unrecorded", destination=None, protocol=None, bytes_written=0,
                          bytes_sent=0, bytes_acked=None, bytes_buffered=0, bytes_dropped=0,
                          events_dropped=0)  # before the worker said anything


class WorkerRecording(RecordingSink):
    """A recording running in the worker; fed from the session's callbacks (never blocks)."""

    def __init__(self, sock: socket.socket, options: RecordingOptions,
                 on_failure: Callable[[RecordingFailed], None] | None,
                 local_limit: int = LOCAL_LIMIT) -> None:
        """Use ``start``: this is the daemon's end of ``sock`` before the worker has it."""
        self._sock = sock
        self._fd = sock.fileno()
        self._options = options
        self._on_failure = on_failure
        self._limit = local_limit
        self._loop = asyncio.get_running_loop()
        self._reports = ReportReader()
        self._out = Outbox(sock, self._socket_failed, self._drained)  # frames not yet taken
        self._dropped = 0  # output dropped here and not yet told to the worker
        self._pause: Callable[[], None] | None = None
        self._resume: Callable[[], None] | None = None
        self._paused = False
        self._stats: RecordingStats | None = None
        self._started: asyncio.Future[RecordingStats] = self._loop.create_future()
        self._closed: asyncio.Future[RecordingStats] = self._loop.create_future()
        self._close_started = False
        self._sock_closed = False
        self._failure: RecordingFailed | None = None
        self._loop.add_reader(self._fd, self._readable)

    # -- start -----------------------------------------------------------------------------

    @classmethod
    async def start(cls, hand_over: Callable[[bytes, socket.socket], asyncio.Future[None]],
                    request: StartRequest,
                    on_failure: Callable[[RecordingFailed], None] | None = None
                    ) -> WorkerRecording:
        """Hand ``request`` to the worker with the recording's own socket (``hand_over``:
        ``ControlChannel.send``) and wait for its answer. As ``uploader.start_recording``:
        RecorderUnavailable when enforced and not started, else unrecorded if not."""
        options = request.options
        encoded = request.encode()
        limit = options.connect_timeout + START_SLACK  # for the handover and the answer
        started_at = time.monotonic()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        recording = cls(ours, options, on_failure)
        sent: asyncio.Future[None] | None = None
        try:
            sent = hand_over(encoded, theirs)
            async with asyncio.timeout(limit):
                await sent
            await recording._wait_started(time.monotonic() - started_at)
        except (RecorderUnavailable, TimeoutError, OSError) as e:
            if isinstance(e, RecorderUnavailable):
                error = e
            elif isinstance(e, TimeoutError):
                error = RecorderUnavailable(
                    f"the recording worker did not take the recording in {limit:g}s")
            else:
                error = RecorderUnavailable(
                    f"cannot hand the recording to the recording worker: {e.strerror or e}")
            recording._give_up(error)
            if options.enforce:
                raise error from None
            # unenforced: the session goes on unrecorded, as start_recording would do
            log.warning("session goes on unrecorded", extra={"reason": str(error)})
        except BaseException:
            recording._give_up(RecorderUnavailable("recording start cancelled"))
            raise
        finally:
            if sent is not None:
                sent.cancel()  # withdrawn if still waiting (no-op once sent)
            theirs.close()  # the worker has its own copy once sent
        return recording

    async def _wait_started(self, waited: float = 0.0) -> None:
        """``waited``: seconds already spent handing the request to the worker."""
        timeout = self._options.connect_timeout + START_SLACK
        try:
            async with asyncio.timeout(max(timeout - waited, 0.0)):
                self._stats = await self._started
        except TimeoutError:
            raise RecorderUnavailable(
                f"the recording worker did not start the recording in {timeout:g}s") from None

    def _give_up(self, error: RecorderUnavailable) -> None:
        """Not started: nothing is recorded (the caller refuses the session if enforced)."""
        self._stats = replace(
            _NOTHING, error=str(error),
            attempts=tuple(a for a in error.attempts if isinstance(a, Attempt)))
        self._shut()
        if not self._closed.done():
            self._closed.set_result(self._stats)

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        return self._stats.attempts if self._stats is not None else ()

    @property
    def failure(self) -> RecordingFailed | None:
        """The worker's failure as it reported it, or the loss of the worker."""
        return self._failure

    # -- the session's side ------------------------------------------------------------------

    def set_flow_control(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        """The buffer is this side's (``local_limit``); the worker's stops this side's
        reading, which fills it."""
        self._pause, self._resume = pause, resume

    @property
    def writable(self) -> bool:
        return not self._paused

    @property
    def backlog(self) -> int:
        """Bytes held on this side because the worker's socket was full."""
        return len(self._out)

    def output_nowait(self, data: bytes) -> None:
        self._send(Kind.OUTPUT, data, droppable=True)

    def stderr_nowait(self, data: bytes) -> None:
        self._send(Kind.STDERR, data, droppable=True)

    def input_nowait(self, data: bytes) -> None:
        self._send(Kind.INPUT, data, droppable=True)

    def resize_nowait(self, cols: int, rows: int) -> None:
        self._send(Kind.RESIZE, RESIZE.pack(cols, rows))

    def exit_nowait(self, status: int) -> None:
        self._send(Kind.EXIT, EXIT.pack(status))

    def marker_nowait(self, label: str) -> None:
        self._send(Kind.MARKER, label.encode("utf-8", "replace"))

    async def close(self) -> RecordingStats:
        """End the upload and wait for the worker's outcome (bounded)."""
        if self._failure is not None and not self._closed.done():
            self._closed.set_result(self._failed_stats(str(self._failure)))
        if not self._close_started:
            self._close_started = True
            self._send(Kind.CLOSE, b"")
        timeout = self._options.finish_timeout * 2 + START_SLACK
        try:
            async with asyncio.timeout(timeout):
                stats = await asyncio.shield(self._closed)
        except TimeoutError:
            stats = self._failed_stats(
                f"recording worker did not confirm the end in {timeout:g}s")
        finally:  # also when cancelled (daemon shutdown): the worker then cuts the upload
            self._shut()
        return stats  # the worker logged it; the daemon audits it

    def abort(self, reason: str = ABORTED) -> RecordingStats:
        """The worker sees the socket close without CLOSE and cuts the upload."""
        self._close_started = True
        self._failure = self._failure or RecordingFailed(reason)
        stats = self._failed_stats(reason)
        self._shut()
        return stats

    def stats(self) -> RecordingStats:
        """The worker's last report, with what this side holds or dropped."""
        stats = self._stats or self._failed_stats("not started")
        return replace(
            stats,
            state="failed" if self._failure is not None and stats.state == "recording"
            else stats.state,
            bytes_buffered=stats.bytes_buffered + len(self._out),
            bytes_dropped=stats.bytes_dropped + self._dropped,
            error=stats.error or (str(self._failure) if self._failure else None),
        )

    # -- frames to the worker -----------------------------------------------------------------

    def _send(self, kind: Kind, payload: bytes, droppable: bool = False) -> None:
        if self._sock_closed or self._failure is not None:
            return  # a failure reached the session through on_failure
        if self._close_started and kind is not Kind.CLOSE:
            return
        if kind is not Kind.CLOSE and self._stats is not None \
                and self._stats.state == "unrecorded":
            return  # no destination: the worker would discard it
        if droppable and not self._options.enforce and len(self._out) >= self._limit:
            self._dropped += len(payload)
            return
        if self._dropped:
            dropped, self._dropped = self._dropped, 0
            self._out.write(frame_header(Kind.DROPPED, 0.0, DROPPED.size), DROPPED.pack(dropped))
        self._out.write(frame_header(kind, time.monotonic(), len(payload)), payload)
        if self._options.enforce and not self._paused and len(self._out) >= self._limit:
            self._paused = True
            self._call(self._pause)

    def _drained(self) -> None:
        if self._paused and len(self._out) <= self._limit // 2:
            self._paused = False
            self._call(self._resume)

    def _socket_failed(self, error: OSError) -> None:
        self._lost(f"recording worker connection lost: {error.strerror or error}")

    # -- reports from the worker ---------------------------------------------------------------

    def _readable(self) -> None:
        try:
            data = self._sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._lost("recording worker exited")
            return
        try:
            reports = self._reports.feed(data)
        except WorkerProtocolError as e:
            self._lost(str(e))
            return
        for report in reports:
            self._on_report(report)

    def _on_report(self, report: dict[str, Any]) -> None:
        kind = report["type"]
        try:
            if kind == "refused":
                attempts = tuple(Attempt.from_json(a) for a in report["attempts"])
                if not self._started.done():
                    self._started.set_exception(
                        RecorderUnavailable(str(report["reason"]), attempts))
            elif kind == "failed":
                if "stats" in report:  # what was sent and acked up to the failure
                    self._stats = RecordingStats.from_json(report["stats"])
                self._fail(RecordingFailed(str(report["reason"])))
            elif kind in ("started", "stats", "closed"):
                self._stats = RecordingStats.from_json(report["stats"])
                if kind == "started" and not self._started.done():
                    self._started.set_result(self._stats)
                if kind == "closed" and not self._closed.done():
                    self._closed.set_result(self._stats)
        except (KeyError, TypeError, ValueError) as e:
            self._lost(f"malformed report from the recording worker: {e!r}")

    # -- failures ------------------------------------------------------------------------------

    def _failed_stats(self, reason: str) -> RecordingStats:
        """The last report, ended: what was buffered is lost."""
        stats = self._stats or _NOTHING
        return replace(
            stats, state="failed", bytes_buffered=0,
            bytes_dropped=stats.bytes_dropped + len(self._out) + self._dropped,
            error=str(self._failure) if self._failure else reason,
        )

    def _lost(self, reason: str) -> None:
        """The socket closed or broke: a failure unless the worker had reported the end."""
        if not self._started.done():
            self._started.set_exception(RecorderUnavailable(
                f"the recording worker failed before the recording started ({reason})"))
        elif not self._closed.done():
            if self._stats is None or self._stats.state != "unrecorded":
                self._fail(RecordingFailed(reason))
            self._closed.set_result(self._failed_stats(reason) if self._failure
                                    else self.stats())
        self._shut()

    def _fail(self, error: RecordingFailed) -> None:
        if self._failure is not None:
            return
        self._failure = error
        self._out.clear()
        if self._paused:
            self._paused = False
            self._call(self._resume)
        if self._on_failure is not None and not self._close_started:
            try:
                self._on_failure(error)
            except Exception:
                log.exception("recording failure callback raised")

    def _call(self, callback: Callable[[], None] | None) -> None:
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("recording flow control callback raised")

    def _shut(self) -> None:
        if self._sock_closed:
            return
        self._sock_closed = True
        self._loop.remove_reader(self._fd)
        self._out.clear()
        self._sock.close()


class ControlChannel:
    """Start requests to the worker, in order: one datagram each on the control socket,
    with the recording's socket attached (SCM_RIGHTS).

    The kernel keeps the datagrams the worker has not read yet within the control socket's
    send buffer (about 90 start requests with Linux's default 208 KiB). A worker busy
    starting other recordings, or still starting itself, lets that fill when many sessions
    start at once; ``EAGAIN`` then means "wait", not "the worker is gone": requests wait
    here and go out as the worker reads. Any other error is a broken socket (a dead worker):
    every waiting request fails with it, and ``on_broken`` is told.
    """

    def __init__(self, sock: socket.socket, on_broken: Callable[[OSError], None]) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = asyncio.get_running_loop()
        self._on_broken = on_broken
        self._waiting: deque[tuple[bytes, socket.socket, asyncio.Future[None]]] = deque()
        self._watching = False
        self.broken: OSError | None = None

    def __len__(self) -> int:
        return len(self._waiting)

    def send(self, request: bytes, recording_sock: socket.socket) -> asyncio.Future[None]:
        """Done once the request is in the kernel's queue (the worker will read it), or with
        the socket's OSError. The caller keeps ``recording_sock`` open until then; cancelling
        the future withdraws a request not sent yet."""
        sent: asyncio.Future[None] = self._loop.create_future()
        if self.broken is not None:
            sent.set_exception(self.broken)
            return sent
        self._waiting.append((request, recording_sock, sent))
        if len(self._waiting) == 1:
            self._flush()
        return sent

    def _flush(self) -> None:
        while self._waiting:
            request, recording_sock, sent = self._waiting[0]
            if sent.done():  # withdrawn (the session gave up waiting)
                self._waiting.popleft()
                continue
            try:
                socket.send_fds(self._sock, [request], [recording_sock.fileno()])
            except (BlockingIOError, InterruptedError):
                self._watch(True)  # the worker has not read enough yet
                return
            except OSError as e:
                self._break(e)
                return
            self._waiting.popleft()
            sent.set_result(None)
        self._watch(False)

    def _watch(self, on: bool) -> None:
        if on and not self._watching:
            self._loop.add_writer(self._fd, self._flush)
        elif not on and self._watching:
            self._loop.remove_writer(self._fd)
        self._watching = on

    def _break(self, error: OSError) -> None:
        self.broken = error
        self._fail_waiting(error)
        self._on_broken(error)

    def _fail_waiting(self, error: OSError) -> None:
        self._watch(False)
        while self._waiting:
            _, _, sent = self._waiting.popleft()
            if not sent.done():
                sent.set_exception(error)
                sent.add_done_callback(_consume)

    def close(self) -> None:
        if self.broken is None:
            self.broken = ConnectionResetError("the recording worker's control socket closed")
        self._fail_waiting(self.broken)
        self._sock.close()


def _consume(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()


class RecordingWorker:
    """The daemon's recording worker process: started on first use, restarted after death."""

    def __init__(self, *, log_format: str = "json", log_level: str = "info") -> None:
        self._log_args = ["--log-format", log_format, "--log-level", log_level]
        self._proc: subprocess.Popen[bytes] | None = None
        self._control: ControlChannel | None = None
        # Workers whose control socket broke while they still ran: they finish their live
        # recordings and exit by themselves (the daemon still waits for them at close).
        self._retired: list[subprocess.Popen[bytes]] = []

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def prewarm(self) -> None:
        """Start the worker now if it is not running (a recording is about to be asked for)."""
        try:
            self._ensure()
        except OSError as e:
            log.error("cannot start the recording worker", extra={"error": str(e)})

    def _ensure(self) -> ControlChannel:
        if self._proc is not None and self._proc.poll() is None and self._control is not None:
            return self._control
        if self._proc is not None:
            if self._proc.poll() is None:
                log.error("recording worker's control socket failed; starting a new worker",
                          extra={"pid": self._proc.pid})
                self._retired.append(self._proc)
            else:
                log.error("recording worker exited; starting a new one",
                          extra={"pid": self._proc.pid, "status": self._proc.returncode})
        self._discard_control()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        try:
            # -P: never import from the working directory (the daemon may run as root).
            self._proc = subprocess.Popen(
                [sys.executable, "-P", "-m", "tssh.recording.worker",
                 "--control-fd", str(theirs.fileno()), *self._log_args],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env, cwd="/",
            )
        finally:
            theirs.close()
        ours.setblocking(False)
        control = ControlChannel(ours, lambda error: self._control_broken(control, error))
        self._control = control
        log.info("recording worker started", extra={"pid": self._proc.pid})
        return control

    def _control_broken(self, control: ControlChannel, error: OSError) -> None:
        if self._control is control:
            self._discard_control()

    async def start_recording(
        self, recorders: Sequence[RecorderAddress], header: CastHeader, *,
        options: RecordingOptions,
        on_failure: Callable[[RecordingFailed], None] | None = None,
    ) -> WorkerRecording:
        """As ``uploader.start_recording``, in the worker (started now if it is not)."""

        def hand_over(request: bytes, sock: socket.socket) -> asyncio.Future[None]:
            return self._ensure().send(request, sock)

        return await WorkerRecording.start(
            hand_over, StartRequest(tuple(recorders), header, options), on_failure)

    def _discard_control(self) -> None:
        control, self._control = self._control, None
        if control is not None:
            control.close()

    async def close(self) -> None:
        """At daemon exit, after the recordings ended: let the worker finish, then stop it."""
        self._discard_control()  # the worker ends when its recordings have
        procs = [*self._retired, *([self._proc] if self._proc is not None else [])]
        self._proc, self._retired = None, []
        for proc in procs:
            try:
                await asyncio.to_thread(proc.wait, STOP_GRACE)
            except subprocess.TimeoutExpired:
                log.warning("recording worker did not exit; killing it",
                            extra={"pid": proc.pid})
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.to_thread(proc.wait)

