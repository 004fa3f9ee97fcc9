"""Every error tssh reports to a user derives from TsshError.

The CLI prints ``str(error)`` as one line and exits with ``error.exit_code``; no traceback.
"""

from __future__ import annotations


class TsshError(Exception):
    """An error whose message a user can act on."""

    exit_code: int = 1

    def render(self) -> str:
        """The one line the CLI prints."""
        return f"tssh: {self}"


class ConfigError(TsshError):
    """The daemon's configuration (file, flags or environment) is invalid."""

    exit_code = 2


class PolicyError(TsshError):
    """A policy file cannot be parsed or validated.

    ``str()`` reads ``file:line:col: message`` whenever a position is known.
    """

    exit_code = 2

    def __init__(
        self, message: str, *, file: str | None = None, line: int | None = None,
        col: int | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.col = col
        super().__init__(self._render())

    def render(self) -> str:
        # Positioned errors read like a compiler's, so editors and tools can jump to them.
        return str(self) if self.file else f"tssh: {self}"

    def _render(self) -> str:
        where = [str(p) for p in (self.file, self.line, self.col) if p is not None]
        return ":".join([*where, f" {self.message}"]) if where else self.message


class IdentityError(TsshError):
    """An identity backend cannot answer (socket down, bad inventory, ...)."""


class ControlError(TsshError):
    """The running daemon cannot be reached over its control socket, or refused the request."""


class NetmapError(IdentityError):
    """A netmap or WireGuard inventory file is unreadable or invalid: a configuration error."""

    exit_code = 2


class RecordingError(TsshError):
    """A session recording could not be started or kept going."""


class RecorderUnavailable(RecordingError):
    """No recorder accepted a recording that the policy enforces: the session is refused.

    ``attempts`` lists each recorder tried and why it failed, for the audit log.
    """

    exit_code = 254  # what tailscaled's sessions exit with when recording is refused

    def __init__(self, message: str, attempts: tuple[object, ...] = ()) -> None:
        super().__init__(message)
        self.attempts = attempts


class RecordingFailed(RecordingError):
    """An upload in progress failed or ended before the session (enforced: session ends)."""


class RecorderProtocolError(RecordingFailed):
    """The recorder answered something the recording wire protocol does not allow."""


class RecordingsError(TsshError):
    """A recorder's API could not be reached, refused the request, or answered nonsense."""


class AuditReadError(TsshError):
    """The audit log cannot be read (absent, or not ours to read)."""
