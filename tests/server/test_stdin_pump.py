"""A session's stdin (``StdinPump``) over real pipes: kept, paced, closed, dropped."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator

import pytest

from tests.polling import wait_until
from tssh.server.stdin_pump import STDIN_HIGH_WATER, StdinPump


class Channel:
    """What the pump sees of the SSH channel: pause_reading / resume_reading."""

    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0

    def pause(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume(self) -> None:
        self.paused = False


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        yield r, w
    finally:
        for fd in (r, w):
            with contextlib.suppress(OSError):
                os.close(fd)


def read_all(fd: int) -> bytes:
    """What the process would read, until the write end is closed or nothing is left."""
    data = bytearray()
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


def is_closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


async def test_input_before_the_process_is_kept_and_its_eof_closes_stdin_after_it(
        pipe: tuple[int, int]) -> None:
    r, w = pipe
    chan = Channel()
    pump = StdinPump(chan.pause, chan.resume)
    pump.feed(b"typed ", starting=True)
    pump.feed(b"early", starting=True)
    pump.end(starting=True)
    assert pump.buffered == 11 and not is_closed(w)
    pump.attach(w, shared=False)
    pump.start()
    await wait_until(lambda: is_closed(w), what="stdin closed after the kept input")
    assert read_all(r) == b"typed early"


async def test_input_without_a_process_is_dropped_once_it_is_not_starting() -> None:
    pump = StdinPump(lambda: None, lambda: None)
    pump.feed(b"too late", starting=False)
    assert pump.buffered == 0


async def test_a_slow_reader_pauses_the_channel_and_gets_every_byte_in_order(
        pipe: tuple[int, int]) -> None:
    r, w = pipe
    chan = Channel()
    pump = StdinPump(chan.pause, chan.resume)
    pump.attach(w, shared=False)
    pump.start()
    sent = bytes(range(256)) * (3 * STDIN_HIGH_WATER // 256)  # beyond pipe and high water
    for i in range(0, len(sent), 32 * 1024):
        pump.feed(sent[i:i + 32 * 1024], starting=False)
    assert chan.paused and chan.pauses == 1
    assert pump.buffered > STDIN_HIGH_WATER
    got = bytearray()
    for _ in range(1000):  # bounded: the reader drains, the pump refills the pipe
        got += read_all(r)
        if len(got) == len(sent):
            break
        await asyncio.sleep(0.001)
    assert bytes(got) == sent
    assert not chan.paused and pump.buffered == 0
    pump.end(starting=False)
    assert is_closed(w)


async def test_a_process_that_stops_reading_has_its_input_discarded(
        pipe: tuple[int, int]) -> None:
    r, w = pipe
    chan = Channel()
    pump = StdinPump(chan.pause, chan.resume)
    pump.attach(w, shared=False)
    pump.start()
    os.close(r)  # EPIPE from here on (Python ignores SIGPIPE)
    pump.feed(b"nobody reads this", starting=False)
    assert pump.eof and pump.buffered == 0
    assert is_closed(w)


async def test_a_shared_fd_is_never_closed_by_the_pump(pipe: tuple[int, int]) -> None:
    r, w = pipe
    pump = StdinPump(lambda: None, lambda: None)
    pump.attach(w, shared=True)  # as a pty's master: the output closes it
    pump.start()
    pump.feed(b"x", starting=False)
    pump.end(starting=False)
    pump.release()
    assert not is_closed(w)
    assert read_all(r) == b"x"


async def test_release_drops_what_waits_and_closes_stdin(pipe: tuple[int, int]) -> None:
    r, w = pipe
    pump = StdinPump(lambda: None, lambda: None)
    pump.feed(b"kept", starting=True)
    pump.attach(w, shared=False)
    pump.release()
    assert pump.buffered == 0 and is_closed(w)
    assert read_all(r) == b""
