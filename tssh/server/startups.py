"""Bounds on connections that have not finished logging in (sshd's ``MaxStartups``).

A connection costs a socket and memory from the moment it is accepted, and one that never
authenticates lives until the login timeout. Without a bound, any node that can reach the
port could hold thousands open and starve the daemon of file descriptors, so that nobody
could log in or start a session. Connections over a bound are closed at once, before the
SSH version exchange; authenticated connections do not count.

Two bounds (docs/config.md, ``max_startups`` and ``per_source_max_startups``): per source
address a hard cap; in total sshd's random early drop, ``start:rate:full``: from ``start``
connections in progress a new one is refused with probability ``rate`` percent, rising
linearly to 100 % at ``full``.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

PER_SOURCE_STARTUPS = 32  # unauthenticated connections from one address
TOTAL_STARTUPS = 256  # unauthenticated connections from everyone
EARLY_DROP_START = 64  # from this many, random early drop (below 256, above everyday use)
EARLY_DROP_RATE = 30  # percent at EARLY_DROP_START


@dataclass(frozen=True)
class MaxStartups:
    """``start:rate:full`` as sshd spells it; a single number N means N:100:N."""

    start: int = EARLY_DROP_START
    rate: int = EARLY_DROP_RATE
    full: int = TOTAL_STARTUPS

    def __str__(self) -> str:
        return f"{self.start}:{self.rate}:{self.full}"

    def drop_percent(self, in_progress: int) -> float:
        """How likely a new connection is refused with ``in_progress`` already counted."""
        if in_progress >= self.full:
            return 100.0
        if in_progress < self.start:
            return 0.0
        span = self.full - self.start
        return self.rate + (100 - self.rate) * (in_progress - self.start) / span


def parse_max_startups(value: object) -> MaxStartups:
    """``"10:30:100"`` or ``"10"`` (an integer too); ValueError says what is wrong."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f'must be "start:rate:full" or a number, not {value!r}')
    parts = value.strip().split(":")
    if len(parts) not in (1, 3) or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f'must be "start:rate:full" (e.g. "10:30:100") or a number, '
                         f"not {value!r}")
    numbers = [int(p) for p in parts]
    limits = (MaxStartups(numbers[0], 100, numbers[0]) if len(numbers) == 1
              else MaxStartups(*numbers))
    if not (1 <= limits.start <= limits.full <= 100_000 and 0 <= limits.rate <= 100):
        raise ValueError(f"{value!r}: needs 1 <= start <= full <= 100000 and a rate of 0-100")
    return limits


@dataclass
class StartupLimiter:
    """Counts unauthenticated connections per source address; pure bookkeeping (the random
    draw is passed in, for tests)."""

    per_source: int = PER_SOURCE_STARTUPS
    total: int = TOTAL_STARTUPS
    early_drop: MaxStartups | None = None  # None: a hard cap at ``total``
    draw: Callable[[], float] = field(default=random.random, repr=False)  # in [0, 1)
    _by_source: Counter[str] = field(default_factory=Counter)
    _count: int = 0

    def begin(self, source: str) -> bool:
        """Count a new connection from ``source``; False (not counted) if over a bound."""
        if self._by_source[source] >= self.per_source:
            return False
        if self.early_drop is not None:
            percent = self.early_drop.drop_percent(self._count)
            if percent >= 100 or (percent > 0 and self.draw() * 100 < percent):
                return False
        elif self._count >= self.total:
            return False
        self._by_source[source] += 1
        self._count += 1
        return True

    def end(self, source: str) -> None:
        """A counted connection authenticated or closed."""
        if self._by_source[source] <= 0:
            return
        self._by_source[source] -= 1
        if not self._by_source[source]:
            del self._by_source[source]
        self._count -= 1

    @property
    def in_progress(self) -> int:
        return self._count
