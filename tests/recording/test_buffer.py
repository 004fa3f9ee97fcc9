"""The recording buffer's bookkeeping (tssh.recording.buffer), without an event loop."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tssh.recording.buffer import RecordingBuffer


def marker(size: int) -> bytes:
    return f"[m {size}]\n".encode()


def test_unenforced_drops_whole_events_and_marks_before_the_next_that_fits() -> None:
    buf = RecordingBuffer(limit=100, enforce=False)
    buf.put_header(b"H" * 10)
    buf.put(b"a" * 60, marker)
    buf.put(b"b" * 60, marker)  # does not fit: dropped whole
    assert (buf.buffered, buf.dropped, buf.dropped_events, buf.unmarked) == (70, 60, 1, 60)
    buf.put(b"c" * 25, marker)  # fits, but not with its marker: dropped too
    assert (buf.dropped, buf.dropped_events, buf.unmarked) == (85, 2, 85)
    assert buf.take(1000) == b"H" * 10 + b"a" * 60
    buf.sent(70)
    buf.put(b"d" * 5, marker)  # the marker goes first
    assert buf.take(1000) == b"[m 85]\n" + b"d" * 5 and buf.unmarked == 0
    assert buf.written == 10 + 60 + 60 + 25 + 5  # markers are not the session's bytes


def test_enforced_never_drops_and_says_when_full() -> None:
    buf = RecordingBuffer(limit=100, enforce=True)
    for _ in range(3):
        buf.put(b"x" * 40, marker)
    assert buf.buffered == 120 and buf.full and buf.dropped == 0
    chunk = buf.take(70)
    assert len(chunk) == 70 and buf.buffered == 120  # counted until sent
    buf.sent(70)
    assert not buf.full and buf.half_empty and buf.take(1000) == b"x" * 50


def test_final_marker_and_discard() -> None:
    buf = RecordingBuffer(limit=20, enforce=False)
    buf.put(b"y" * 30, marker)
    buf.put_final_marker(marker)
    assert buf.take(100) == b"[m 30]\n" and buf.unmarked == 0
    buf.sent(7)
    buf.put(b"z" * 10, marker)
    buf.discard(also_lost=5)
    assert (buf.buffered, bool(buf), buf.dropped) == (0, False, 30 + 10 + 5)


@given(st.lists(st.binary(min_size=1, max_size=50), max_size=40), st.integers(1, 64),
       st.booleans())
def test_take_returns_the_stream_in_order(lines: list[bytes], chunk: int,
                                          enforce: bool) -> None:
    buf = RecordingBuffer(limit=10_000, enforce=enforce)
    for line in lines:
        buf.put(line, marker)
    out = bytearray()
    while buf:
        piece = buf.take(chunk)
        assert 0 < len(piece) <= chunk
        out += piece
        buf.sent(len(piece))
    assert bytes(out) == b"".join(lines) and buf.buffered == 0
