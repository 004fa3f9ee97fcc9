"""The recording worker: the daemon's process that encodes and uploads session recordings.

Started by the daemon (``tssh.recording.worker_client``) as ``python -m tssh.recording.worker
--control-fd N``; never by hand. Each recording arrives as a start request with its own
socket (``tssh.recording.worker_protocol``); a ``RecordingJob`` runs an ordinary ``Recording``
for it (``tssh.recording.uploader``: recorders in order, v2/v1, failover, acks, the bounded buffer)
and feeds it the frames the daemon writes, with the times the daemon read them.

Backpressure crosses the process boundary through the socket: when an enforced recording's
buffer is full the worker stops reading that socket, the kernel's buffer fills, and the daemon
pauses the session (its own bounded buffer, then ``set_flow_control``). Unenforced recordings
are always read; the ``Recording`` drops and marks what does not fit.

The worker exits when the daemon closes the control socket, after its recordings end (bounded
by ``EXIT_GRACE``); a recording whose socket closes without a ``CLOSE`` frame (the daemon
aborted it, or died) is cut, so the recorder marks it incomplete. SIGINT is ignored: a Ctrl-C
meant for a foreground daemon reaches its whole process group, and the daemon decides.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from typing import Any

from tssh.errors import RecorderUnavailable, RecordingFailed
from tssh.logformat import configure_logging
from tssh.recording.model import Attempt
from tssh.recording.outbox import Outbox
from tssh.recording.uploader import Recording, start_recording
from tssh.recording.worker_protocol import (
    DROPPED,
    EXIT,
    RESIZE,
    Frame,
    FrameReader,
    Kind,
    StartRequest,
    WorkerProtocolError,
    encode_report,
)

log = logging.getLogger("tssh.recording")

READ_SIZE = 256 * 1024
STATS_INTERVAL = 1.0  # seconds between stats reports while a recording changes
EXIT_GRACE = 60.0  # after the daemon went away: how long recordings may still finish
MAX_START_REQUEST = 1024 * 1024
# One read buffer for every job (one thread; FrameReader copies what it keeps): 256 KiB
# each would make the worker's memory grow by a quarter MiB per live recording.
_READ_BUFFER = bytearray(READ_SIZE)
_READ_VIEW = memoryview(_READ_BUFFER)


class RecordingJob:
    """One recording: frames in from the daemon, the upload out, reports back."""

    def __init__(self, sock: socket.socket, request: StartRequest) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        sock.setblocking(False)
        self._request = request
        self._loop = asyncio.get_running_loop()
        self._frames = FrameReader()
        self._rec: Recording | None = None
        self._ended: asyncio.Future[bool] = self._loop.create_future()  # True: CLOSE frame
        self._reading = False
        self._eof = False  # the daemon closed its end
        self._out = Outbox(sock, lambda error: None)  # reports; on error: the daemon is gone
        self._sock_closed = False
        self._last_stats: dict[str, Any] | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        request = self._request
        try:
            try:
                rec = await start_recording(request.targets, request.header,
                                            options=request.options, on_failure=self._failed)
            except RecorderUnavailable as e:
                attempts = [a.to_json() for a in e.attempts if isinstance(a, Attempt)]
                self._report({"type": "refused", "reason": str(e), "attempts": attempts})
                return
            self._rec = rec
            rec.set_flow_control(self._stop_reading, self._start_reading)
            self._report({"type": "started", "stats": rec.stats().to_json()})
            self._start_reading()
            self._timer = self._loop.call_later(STATS_INTERVAL, self._tick)
            if await self._ended:
                stats = await rec.close()
                self._report({"type": "closed", "stats": stats.to_json()})
            else:
                rec.abort("the daemon ended the recording before the session ended")
        finally:
            if self._timer is not None:
                self._timer.cancel()
            self._stop_reading()
            await self._drain_reports()
            self._close_socket()

    # -- frames from the daemon ----------------------------------------------------------------

    def _start_reading(self) -> None:
        if not self._reading and not self._eof and not self._sock_closed:
            self._reading = True
            self._loop.add_reader(self._fd, self._readable)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def _readable(self) -> None:
        """Frames until CLOSE; after it, only the socket's end is looked for: a daemon that
        stops waiting for the end of the upload (shutting down) cuts it."""
        try:
            n = self._sock.recv_into(_READ_BUFFER)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            n = 0
        if n == 0:
            self._socket_ended()
            return
        if self._ended.done():
            return  # nothing may follow CLOSE
        try:
            frames = self._frames.feed(_READ_VIEW[:n])
        except WorkerProtocolError as e:
            log.error("recording worker protocol failed", extra={"reason": str(e)})
            self._socket_ended()
            return
        for frame in frames:
            if self._ended.done():
                break
            self._dispatch(frame)

    def _socket_ended(self) -> None:
        self._eof = True
        self._stop_reading()
        if not self._ended.done():
            self._ended.set_result(False)  # no CLOSE: run() cuts the upload
        elif self._rec is not None:
            self._rec.abort("the daemon stopped waiting for the end of the recording")

    def _dispatch(self, frame: Frame) -> None:
        rec = self._rec
        assert rec is not None
        kind, at, payload = frame.kind, frame.at, frame.payload
        if kind is Kind.OUTPUT:
            rec.output_nowait(payload, at)
        elif kind is Kind.STDERR:
            rec.stderr_nowait(payload, at)
        elif kind is Kind.INPUT:
            rec.input_nowait(payload, at)
        elif kind is Kind.RESIZE:
            cols, rows = RESIZE.unpack(payload)
            rec.resize_nowait(cols, rows, at)
        elif kind is Kind.EXIT:
            rec.exit_nowait(EXIT.unpack(payload)[0], at)
        elif kind is Kind.MARKER:
            rec.marker_nowait(payload.decode("utf-8", "replace"), at)
        elif kind is Kind.DROPPED:
            rec.dropped_nowait(DROPPED.unpack(payload)[0])
        elif kind is Kind.CLOSE and not self._ended.done():
            self._ended.set_result(True)

    # -- reports to the daemon -------------------------------------------------------------------

    def _failed(self, error: RecordingFailed) -> None:
        # with the stats at the failure: the daemon audits what was acked (recording.end),
        # and the last periodic report may be up to STATS_INTERVAL old
        report: dict[str, Any] = {"type": "failed", "reason": str(error)}
        if self._rec is not None:
            report["stats"] = self._rec.stats().to_json()
        self._report(report)

    def _tick(self) -> None:
        if self._rec is not None:
            stats = self._rec.stats().to_json()
            if stats != self._last_stats:
                self._last_stats = stats
                self._report({"type": "stats", "stats": stats})
        self._timer = self._loop.call_later(STATS_INTERVAL, self._tick)

    def _report(self, report: dict[str, Any]) -> None:
        if self._sock_closed:
            return
        self._out.write(encode_report(report))

    async def _drain_reports(self) -> None:
        for _ in range(100):  # bounded: 5 s for a daemon that stopped reading
            if not self._out or self._sock_closed:
                return
            await asyncio.sleep(0.05)

    def _close_socket(self) -> None:
        if self._sock_closed:
            return
        self._sock_closed = True
        self._out.clear()
        self._sock.close()


async def serve(control: socket.socket) -> None:
    """Start a job per request until the daemon closes the control socket."""
    loop = asyncio.get_running_loop()
    control.setblocking(False)
    gone: asyncio.Future[None] = loop.create_future()
    jobs: set[asyncio.Task[None]] = set()

    def on_request() -> None:
        while True:
            try:
                message, fds, flags, _ = socket.recv_fds(control, MAX_START_REQUEST, 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message, fds, flags = b"", [], 0
            if not message:
                for fd in fds:
                    os.close(fd)
                loop.remove_reader(control.fileno())
                if not gone.done():
                    gone.set_result(None)
                return
            if len(fds) != 1 or flags & socket.MSG_TRUNC:
                for fd in fds:
                    os.close(fd)
                log.error("malformed start request from the daemon ignored")
                continue
            sock = socket.socket(fileno=fds[0])
            try:
                request = StartRequest.decode(message)
            except WorkerProtocolError as e:
                log.error("start request refused", extra={"reason": str(e)})
                sock.close()
                continue
            task = loop.create_task(RecordingJob(sock, request).run())
            jobs.add(task)
            task.add_done_callback(jobs.discard)

    loop.add_reader(control.fileno(), on_request)
    await gone
    if jobs:
        await asyncio.wait(set(jobs), timeout=EXIT_GRACE)
    for task in list(jobs):
        task.cancel()
    if jobs:
        await asyncio.wait(set(jobs), timeout=5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tssh.recording.worker",
                                     description="tssh's recording worker (started by the "
                                     "daemon)")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--log-format", default="json", choices=("json", "text"))
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    configure_logging(args.log_format, args.log_level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        control = socket.socket(fileno=args.control_fd)
    except OSError as e:
        print(f"tssh: recording worker: bad control fd: {e}", file=sys.stderr)
        return 2
    asyncio.run(serve(control))
    return 0


if __name__ == "__main__":
    sys.exit(main())
