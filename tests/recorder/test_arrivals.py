"""recorder.arrivals: the FIFO behind the ack latency and the index lag, with a fake clock."""

from __future__ import annotations

from recorder.arrivals import Arrivals


def test_consuming_reports_the_oldest_byte_and_splits_a_mark() -> None:
    a = Arrivals()
    assert a.oldest() is None and a.consumed(10) is None
    a.arrived(100, now=1.0)
    a.arrived(50, now=2.0)
    a.arrived(0, now=3.0)  # nothing arrived: no mark
    assert a.consumed(0) is None
    assert a.consumed(60) == 1.0  # part of the first mark
    assert a.oldest() == 1.0  # its other 40 bytes still wait
    assert a.consumed(40) == 1.0
    assert a.oldest() == 2.0
    assert a.consumed(500) == 2.0  # more than is left: all gone
    assert a.oldest() is None


def test_bytes_within_the_grain_share_the_first_ones_time() -> None:
    a = Arrivals(grain=0.5)
    a.arrived(10, now=1.0)
    a.arrived(10, now=1.4)  # joins the mark of 1.0
    a.arrived(10, now=1.6)  # a mark of its own
    assert a.consumed(20) == 1.0
    assert a.oldest() == 1.6
    a.clear()
    assert a.oldest() is None
