"""The bound on connections still logging in: per source and in total."""

from __future__ import annotations

import pytest

from tssh.server.startups import StartupLimiter, parse_max_startups


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


def test_random_early_drop_as_sshd() -> None:
    limits = parse_max_startups("10:30:100")
    assert (limits.drop_percent(9), limits.drop_percent(10), limits.drop_percent(55),
            limits.drop_percent(100)) == (0.0, 30.0, 65.0, 100.0)
    draws = iter([0.29, 0.31])  # below 30 %: dropped; above: admitted
    limiter = StartupLimiter(per_source=1000, early_drop=limits, draw=lambda: next(draws))
    assert all(limiter.begin(f"s{i}") for i in range(10))  # no draw below start
    assert not limiter.begin("x")
    assert limiter.begin("y")
    assert limiter.in_progress == 11


def test_full_is_a_hard_cap_and_a_single_number_means_n_100_n() -> None:
    limiter = StartupLimiter(per_source=10, early_drop=parse_max_startups(2),
                             draw=lambda: 0.99)
    assert [limiter.begin("a") for _ in range(3)] == [True, True, False]
    assert str(parse_max_startups(" 5:0:7 ")) == "5:0:7"
    for bad in ("10:30", "a:b:c", "10:101:100", "20:30:10", "0", True, 1.5):
        with pytest.raises(ValueError):
            parse_max_startups(bad)
