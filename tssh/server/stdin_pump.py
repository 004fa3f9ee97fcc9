"""The client's input on its way to a session's process: written as the process takes it.

Input that arrives before the process exists is kept for it; input the process does not take
at once waits here, written when its stdin is writable again (``loop.add_writer``), and above
``STDIN_HIGH_WATER`` bytes waiting the channel is paused (``pause_reading``), so a process
that reads slowly slows the client instead of filling the daemon's memory. A process that
stops reading (EPIPE) has its input discarded from then on, as sshd does.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

STDIN_HIGH_WATER = 256 * 1024


class StdinPump:
    """One session's stdin. ``pause_reading``/``resume_reading``: the channel's."""

    def __init__(self, pause_reading: Callable[[], None],
                 resume_reading: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._pause_reading = pause_reading
        self._resume_reading = resume_reading
        self._fd: int | None = None
        self._shared = False  # the fd is a pty's master: its output's owner closes it
        self._buf = bytearray()
        self._paused = False
        self.eof = False  # the client sent EOF, or the process stopped reading

    @property
    def buffered(self) -> int:
        """Bytes received and not yet written to the process."""
        return len(self._buf)

    def attach(self, fd: int, *, shared: bool) -> None:
        """The process's stdin, once it exists (non-blocking). ``shared``: a pty's master,
        which is also the session's output and is closed with it, never here."""
        self._fd = fd
        self._shared = shared

    def start(self) -> None:
        """The process runs: write what came while it started, or pass on an EOF."""
        if self._buf:
            assert self._fd is not None
            self._loop.add_writer(self._fd, self._flush)
        elif self.eof:
            self._close()

    def feed(self, data: bytes, starting: bool) -> None:
        """Data from the client; ``starting``: the process is being started (kept for it)."""
        if self._fd is None:
            if starting:
                self._buffer(data)
            return
        if not self._buf:
            try:
                written = os.write(self._fd, data)
            except BlockingIOError:
                written = 0
            except OSError:
                self._stopped_reading()
                return
            data = data[written:]
            if not data:
                return
            self._loop.add_writer(self._fd, self._flush)
        self._buffer(data)

    def end(self, starting: bool) -> None:
        """The client's EOF: stdin is closed once what waits is written."""
        self.eof = True
        if not self._buf and not starting:
            self._close()

    def discard(self) -> None:
        """Input not yet written to the process is dropped (a session being cut)."""
        self._stop_writing()
        self._buf.clear()

    def detach(self) -> None:
        """The shared fd closed with the output: nothing more reaches the process."""
        self.discard()
        self._fd = None

    def release(self) -> None:
        """The session is gone: drop what waits and close stdin (unless shared)."""
        self.discard()
        if self._fd is not None and not self._shared:
            os.close(self._fd)
        self._fd = None

    def _buffer(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) > STDIN_HIGH_WATER and not self._paused:
            self._paused = True
            self._pause_reading()

    def _flush(self) -> None:
        fd = self._fd
        if fd is None:
            return
        try:
            written = os.write(fd, self._buf)
        except BlockingIOError:
            return
        except OSError:
            self._stopped_reading()
            return
        del self._buf[:written]
        if self._buf:
            return
        self._loop.remove_writer(fd)
        if self._paused:
            self._paused = False
            self._resume_reading()  # may deliver more data (and the EOF) right here
        if self.eof and not self._buf:
            self._close()

    def _stopped_reading(self) -> None:
        """The process stopped reading (EPIPE): discard input, as sshd does."""
        self.discard()
        if self._paused:
            self._paused = False
            self._resume_reading()
        self.eof = True
        self._close()

    def _stop_writing(self) -> None:
        if self._fd is not None and self._buf:
            self._loop.remove_writer(self._fd)

    def _close(self) -> None:
        fd = self._fd
        if fd is None or self._shared:
            return  # a pty's master is also its output; it closes with the output
        self._fd = None
        os.close(fd)
