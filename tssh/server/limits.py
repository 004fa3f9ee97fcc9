"""Connection and session limits that end what the peer no longer uses or has used too long,
with sshd_config's meanings (docs/daemon.md, "Limits"): ``idle_timeout`` ends a connection
whose sessions and forwards moved no byte for that long, ``session_max_duration`` ends a
session that ran that long. Pure: the connection tells ``IdleWatch`` its byte count now and
then; the timers are the connection's and the session's."""

from __future__ import annotations

from dataclasses import dataclass

from tssh.config import Config


def idle_message(seconds: int) -> str:
    return (f"tssh: no input or output for {seconds} s (idle_timeout): "
            "closing the connection")


def duration_message(seconds: int) -> str:
    return f"tssh: this session reached session_max_duration ({seconds} s): ending it"


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection enforces itself (the daemon enforces the start-up bounds)."""

    max_sessions: int = Config.max_sessions
    idle_timeout: int = 0  # seconds, 0: none
    session_max_duration: int = 0  # seconds, 0: none

    @classmethod
    def from_config(cls, config: Config) -> ConnectionLimits:
        return cls(config.max_sessions, config.idle_timeout, config.session_max_duration)

    @property
    def idle_check_interval(self) -> float:
        """How often to look: a small part of the timeout, so it fires close to it."""
        return max(0.2, min(self.idle_timeout / 8, 5.0))


@dataclass
class IdleWatch:
    """Whether the connection's byte count has stood still for ``timeout`` seconds."""

    timeout: float
    _total: int = -1
    _since: float = 0.0

    def idle(self, total: int, now: float) -> bool:
        if total != self._total:
            self._total, self._since = total, now
            return False
        return now - self._since >= self.timeout
