"""Bounds on connections that have not finished logging in (sshd's ``MaxStartups``).

A connection costs a socket and memory from the moment it is accepted, and one that never
authenticates lives until the login timeout. Without a bound, any node that can reach the
port could hold thousands open and starve the daemon of file descriptors, so that nobody
could log in or start a session. Connections over a bound are closed at once, before the
SSH version exchange; authenticated connections do not count.

The bounds are sshd's: ``max_startups = "start:rate:full"`` (random early drop: from
``start`` connections logging in, a new one is refused with probability ``rate`` %, rising
linearly to 100 % at ``full``) and ``per_source_max_startups`` (docs/daemon.md, "Limits"),
with one difference: the dice are rolled only for a source that already has a connection
logging in, so a source's first connection is refused only at ``full``.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from tssh.config import Config, MaxStartups

log = logging.getLogger("tssh.daemon")

PER_SOURCE_STARTUPS = Config.per_source_max_startups
MAX_STARTUPS = Config().max_startups


def drop_probability(limits: MaxStartups, in_progress: int) -> float:
    """sshd's chance of refusing a new connection while ``in_progress`` are logging in."""
    if in_progress < limits.start:
        return 0.0
    if in_progress >= limits.full:
        return 1.0
    span = limits.full - limits.start
    return (limits.rate + (100 - limits.rate) * (in_progress - limits.start) / span) / 100


@dataclass
class StartupLimiter:
    """Counts unauthenticated connections per source address; pure bookkeeping (the dice
    are ``random``, passed in so that tests can load them)."""

    per_source: int = PER_SOURCE_STARTUPS
    max_startups: MaxStartups = MAX_STARTUPS
    random: Callable[[], float] = random.random
    _by_source: Counter[str] = field(default_factory=Counter)
    _count: int = 0
    refused: int = 0  # connections refused so far (begin_startup counts them)

    def begin(self, source: str) -> bool:
        """Count a new connection from ``source``; False (not counted) if refused."""
        if self._by_source[source] >= self.per_source:
            return False
        chance = drop_probability(self.max_startups, self._count)
        if chance < 1.0 and not self._by_source[source]:
            # A node with nothing logging in rolls no dice: on a tailnet each source address
            # is an authenticated node, so one node's half-open connections (32 of them,
            # per_source) must not turn away every other node's login half the time.
            chance = 0.0
        if chance and (chance >= 1.0 or self.random() < chance):
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


def begin_startup(limiter: StartupLimiter, source: str) -> bool:
    """``limiter.begin``, logging refusals (the 1st, 10th, 100th, then every 1000th)."""
    if limiter.begin(source):
        return True
    limiter.refused += 1
    if limiter.refused in (1, 10, 100) or limiter.refused % 1000 == 0:
        log.warning("too many connections logging in; closing new ones at once",
                    extra={"peer_ip": source, "refused": limiter.refused,
                           "logging_in": limiter.in_progress})
    return False
