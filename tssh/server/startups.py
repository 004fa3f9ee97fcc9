"""Bounds on connections that have not finished logging in (sshd's ``MaxStartups``).

A connection costs a socket and memory from the moment it is accepted, and one that never
authenticates lives until the login timeout. Without a bound, any node that can reach the
port could hold thousands open and starve the daemon of file descriptors, so that nobody
could log in or start a session. Connections over a bound are closed at once, before the
SSH version exchange; authenticated connections do not count.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

PER_SOURCE_STARTUPS = 32  # unauthenticated connections from one address
TOTAL_STARTUPS = 256  # unauthenticated connections from everyone


@dataclass
class StartupLimiter:
    """Counts unauthenticated connections per source address; pure bookkeeping."""

    per_source: int = PER_SOURCE_STARTUPS
    total: int = TOTAL_STARTUPS
    _by_source: Counter[str] = field(default_factory=Counter)
    _count: int = 0

    def begin(self, source: str) -> bool:
        """Count a new connection from ``source``; False (not counted) if over a bound."""
        if self._count >= self.total or self._by_source[source] >= self.per_source:
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
