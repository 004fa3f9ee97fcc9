"""The bound on connections still logging in: per source and in total."""

from __future__ import annotations

from tssh.server.startups import StartupLimiter


def test_per_source_bound_and_release() -> None:
    limiter = StartupLimiter(per_source=2, total=10)
    assert limiter.begin("a") and limiter.begin("a")
    assert not limiter.begin("a")
    assert limiter.begin("b")  # another source is not affected
    limiter.end("a")
    assert limiter.begin("a")
    assert limiter.in_progress == 3


def test_total_bound_across_sources() -> None:
    limiter = StartupLimiter(per_source=5, total=3)
    assert [limiter.begin(s) for s in ("a", "b", "c", "d")] == [True, True, True, False]
    limiter.end("b")
    assert limiter.begin("d")


def test_end_of_an_uncounted_source_changes_nothing() -> None:
    limiter = StartupLimiter(per_source=1, total=1)
    limiter.end("never-seen")
    assert limiter.in_progress == 0
    assert limiter.begin("a")
    assert not limiter.begin("b")
