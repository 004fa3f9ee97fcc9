"""The bound on connections still logging in: per source and in total."""

from __future__ import annotations

import pytest

from tssh.config import MaxStartups
from tssh.server.startups import StartupLimiter, drop_probability


def test_per_source_bound_and_release() -> None:
    limiter = StartupLimiter(per_source=2, max_startups=MaxStartups(10, 100, 10))
    assert limiter.begin("a") and limiter.begin("a")
    assert not limiter.begin("a")
    assert limiter.begin("b")  # another source is not affected
    limiter.end("a")
    assert limiter.begin("a")
    assert limiter.in_progress == 3


def test_total_bound_across_sources() -> None:
    limiter = StartupLimiter(per_source=5, max_startups=MaxStartups(3, 100, 3))
    assert [limiter.begin(s) for s in ("a", "b", "c", "d")] == [True, True, True, False]
    limiter.end("b")
    assert limiter.begin("d")


def test_end_of_an_uncounted_source_changes_nothing() -> None:
    limiter = StartupLimiter(per_source=1, max_startups=MaxStartups(1, 100, 1))
    limiter.end("never-seen")
    assert limiter.in_progress == 0
    assert limiter.begin("a")
    assert not limiter.begin("b")


@pytest.mark.parametrize(("in_progress", "chance"), [
    (0, 0.0), (9, 0.0), (10, 0.30), (55, 0.65), (99, 0.9922), (100, 1.0), (500, 1.0)])
def test_random_early_drop_is_sshds(in_progress: int, chance: float) -> None:
    chance_now = drop_probability(MaxStartups(10, 30, 100), in_progress)
    assert chance_now == pytest.approx(chance, abs=1e-4)


def test_early_drop_rolls_the_dice_between_start_and_full() -> None:
    rolls = iter([0.99, 0.10, 0.80])
    limiter = StartupLimiter(per_source=100, max_startups=MaxStartups(2, 50, 4),
                             random=lambda: next(rolls))
    assert limiter.begin("a") and limiter.begin("a")  # below start: no dice
    assert limiter.begin("a")  # 2 logging in: 50 %, and 0.99 passes
    assert not limiter.begin("a")  # 3: 75 %, and 0.10 is dropped
    assert limiter.begin("a")  # 3: 75 %, and 0.80 passes
    assert not limiter.begin("a")  # 4 = full: refused without rolling (no rolls are left)
    assert not limiter.begin("b")  # full: a new source too
    assert limiter.in_progress == 4


def test_a_new_source_rolls_no_dice_below_full() -> None:
    """One node holding its per-source share of half-open connections (slowloris) must not
    turn away another node's login at random: its first connection passes until full."""
    limiter = StartupLimiter(per_source=32, max_startups=MaxStartups(10, 30, 100),
                             random=lambda: 0.0)  # every roll would drop
    assert all(limiter.begin("intruder") for _ in range(10))  # up to start: no dice
    assert not limiter.begin("intruder")  # its own 11th rolls, and is dropped
    assert limiter.begin("laptop")  # another node's first connection: no dice
    assert not limiter.begin("laptop")  # its second one rolls
