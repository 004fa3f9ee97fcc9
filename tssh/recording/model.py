"""The recording client's data: options of one recording, the recorders tried, its stats.

Plain values that cross every layer: the session's side (``tssh.server.recording``), the
daemon <-> worker messages (``worker_protocol``), the uploader and ``tssh status``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Clock = Callable[[], float]
WireProtocol = Literal["v2", "v1", "local"]
State = Literal["recording", "finished", "failed", "unrecorded"]


@dataclass(frozen=True)
class RecordingOptions:
    enforce: bool = False  # the rule's enforceRecorder
    source_address: str | None = None  # dial from this address (the node's tailnet address)
    local_dir: Path | None = None  # debug fallback (Config.local_recording_dir)
    buffer_limit: int = 1024 * 1024
    dial_timeout: float = 5.0  # per connection attempt
    connect_timeout: float = 30.0  # over all recorders, probes included
    probe_timeout: float = 10.0
    ack_window: float = 30.0  # v2: longest silence allowed from the recorder
    finish_timeout: float = 30.0  # close(): rest of the buffer, final ack or 200

    def __post_init__(self) -> None:
        if self.buffer_limit < 1024:
            raise ValueError("buffer_limit must be at least 1 KiB")
        for name in ("dial_timeout", "connect_timeout", "probe_timeout", "ack_window",
                     "finish_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")


@dataclass(frozen=True)
class Attempt:
    """One recorder tried at the start: accepted (``error`` None) or why not."""

    recorder: str
    protocol: Literal["v2", "v1"] | None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"recorder": self.recorder, "protocol": self.protocol, "error": self.error}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Attempt:
        return cls(str(obj["recorder"]), obj["protocol"], obj["error"])


@dataclass(frozen=True)
class RecordingStats:
    """One recording's state, for ``tssh status`` and the audit log."""

    state: State
    destination: str | None  # recorder address or local file
    protocol: WireProtocol | None
    bytes_written: int  # encoded bytes the session produced
    bytes_sent: int
    bytes_acked: int | None  # v2 only: what the recorder confirmed receiving
    bytes_buffered: int
    bytes_dropped: int
    events_dropped: int
    attempts: tuple[Attempt, ...] = field(default=())
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state, "destination": self.destination, "protocol": self.protocol,
            "bytesWritten": self.bytes_written, "bytesSent": self.bytes_sent,
            "bytesAcked": self.bytes_acked, "bytesBuffered": self.bytes_buffered,
            "bytesDropped": self.bytes_dropped, "eventsDropped": self.events_dropped,
            "attempts": [a.to_json() for a in self.attempts], "error": self.error,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> RecordingStats:
        return cls(
            state=obj["state"], destination=obj["destination"], protocol=obj["protocol"],
            bytes_written=int(obj["bytesWritten"]), bytes_sent=int(obj["bytesSent"]),
            bytes_acked=None if obj["bytesAcked"] is None else int(obj["bytesAcked"]),
            bytes_buffered=int(obj["bytesBuffered"]), bytes_dropped=int(obj["bytesDropped"]),
            events_dropped=int(obj["eventsDropped"]),
            attempts=tuple(Attempt.from_json(a) for a in obj["attempts"]),
            error=obj["error"],
        )
