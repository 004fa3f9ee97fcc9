"""Writing to a non-blocking socket from event-loop callbacks: now if it takes the bytes,
else queued and written as it drains. Both ends of the recording worker's sockets use it
(the daemon's frames, the worker's reports)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable


class Outbox:
    """The bytes a socket has not taken yet, in order; never blocks."""

    def __init__(self, sock: socket.socket, on_error: Callable[[OSError], None],
                 on_drain: Callable[[], None] | None = None) -> None:
        """``on_error``: the socket failed (the queue is cleared). ``on_drain``: called after
        each write the loop made while bytes were queued (see ``len``)."""
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = asyncio.get_running_loop()
        self._on_error = on_error
        self._on_drain = on_drain
        self._queue = bytearray()
        self._watching = False

    def __len__(self) -> int:
        return len(self._queue)

    def write(self, *parts: bytes) -> None:
        """Send ``parts`` (one ``sendmsg``: no copy when the socket takes them all)."""
        if self._queue:
            for part in parts:
                self._queue += part
            return
        try:
            sent = self._sock.sendmsg(parts)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as e:
            self._on_error(e)
            return
        for part in parts:
            if sent >= len(part):
                sent -= len(part)
                continue
            self._queue += memoryview(part)[sent:]
            sent = 0
        if self._queue:
            self._watch(True)

    def clear(self) -> None:
        self._queue.clear()
        self._watch(False)

    def _watch(self, on: bool) -> None:
        if on and not self._watching:
            self._loop.add_writer(self._fd, self._writable)
        elif not on and self._watching:
            self._loop.remove_writer(self._fd)
        self._watching = on

    def _writable(self) -> None:
        try:
            while self._queue:
                del self._queue[:self._sock.send(self._queue)]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            self.clear()
            self._on_error(e)
            return
        if not self._queue:
            self._watch(False)
        if self._on_drain is not None:
            self._on_drain()
