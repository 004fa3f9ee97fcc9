"""The recorder's exception classes: each says what went wrong and what to do about it."""

from __future__ import annotations

from tssh.errors import TsshError


class RecorderError(TsshError):
    """Base class of every error the recorder reports."""


class SettingsError(RecorderError):
    """Flags, environment or files given to ``tssh-recorder`` are invalid."""

    exit_code = 2


class CastError(RecorderError):
    """An uploaded asciicast stream is malformed (header, line length, encoding)."""


class StorageError(RecorderError):
    """The storage backend could not store or read a recording (disk full, S3 down, ...)."""


class HeaderTimeoutError(CastError):
    """An upload sent no complete asciicast header line within the header timeout."""


class UploadLimitError(RecorderError):
    """Starting an upload would exceed a cap on running uploads; ``reason`` labels the
    refusal in ``tsrecorder_errors_total``."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class RecordingNotFoundError(RecorderError):
    """No recording with this id exists in the index."""


class InvalidRecordingIdError(RecorderError):
    """A recording id does not match the strict id syntax."""


class SealError(RecorderError):
    """The recorder's signing key cannot be created or read."""


class TokenError(RecorderError):
    """An API token operation failed (unknown token id, unreadable token file)."""



class IndexUnavailableError(RecorderError):
    """The index database cannot be reached or used (PostgreSQL down, bad URL, rights)."""


class IndexSchemaError(IndexUnavailableError):
    """The index's schema cannot be brought to this recorder's version."""
