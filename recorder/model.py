"""The metadata document of one recording: what the index holds, the ``.json`` beside the
cast, and the API's answer for ``GET /api/v1/recordings/{id}`` are all this one shape."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from recorder import kubernetes
from recorder.seek import Checkpoint

Status = Literal["live", "complete", "incomplete"]
STATUSES: tuple[Status, ...] = ("live", "complete", "incomplete")
# 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: outside them iso() cannot format a time
_TIMES = (-62135596800.0, 253402300799.0)


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def parse_time(value: str) -> float:
    """RFC 3339 (``Z`` or offset) or unix seconds; ValueError otherwise (also for NaN, an
    infinity, or a time outside the years 1-9999)."""
    text = value.strip()
    try:
        t = float(text)
    except ValueError:
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            t = dt.timestamp()
        except OverflowError as e:
            raise ValueError(f"time {text[:40]!r} is out of range") from e
    if not _TIMES[0] <= t <= _TIMES[1]:
        raise ValueError(f"time {text[:40]!r} is out of range")
    return t


@dataclass(frozen=True)
class NodeInfo:
    """The uploading node as the identity backend named it (not as the header claims)."""

    id: str
    name: str
    user: str | None = None
    user_id: str | None = None
    tags: tuple[str, ...] = ()
    address: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "user": self.user, "userId": self.user_id,
            "tags": list(self.tags), "address": self.address,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> NodeInfo:
        return cls(
            id=str(doc["id"]), name=str(doc.get("name") or doc["id"]),
            user=doc.get("user"), user_id=doc.get("userId"),
            tags=tuple(str(t) for t in doc.get("tags") or ()), address=doc.get("address"),
        )


@dataclass(frozen=True)
class Hold:
    """A legal hold (docs/recorder.md, "Retention"): retention never deletes the recording.
    Its document beside the recording in storage is the truth; the index keeps a copy in
    its own column so that the API shows it without reading storage."""

    reason: str
    by: str  # the admin's login (API) or the local account (CLI) that placed it
    at: float

    def to_json(self) -> dict[str, Any]:
        return {"reason": self.reason, "by": self.by, "at": iso(self.at)}

    def document(self, recording_id: str) -> bytes:
        """The ``<key>.hold`` document in storage."""
        return json.dumps({"id": recording_id, "reason": self.reason, "by": self.by,
                           "time": iso(self.at)}, ensure_ascii=False).encode() + b"\n"

    @classmethod
    def parse(cls, data: bytes | str) -> Hold:
        """A hold from its storage document or its index column. Any document there is a
        hold (retention keeps the recording), so an unreadable one still gives one."""
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            doc = None
        if not isinstance(doc, dict):
            return cls("(unreadable hold document)", "?", 0.0)
        at = doc.get("time", doc.get("at"))
        try:
            when = parse_time(str(at)) if at is not None else 0.0
        except ValueError:
            when = 0.0
        return cls(str(doc.get("reason") or ""), str(doc.get("by") or "?"), when)


@dataclass(frozen=True)
class RecordingMeta:
    id: str
    key: str
    node: NodeInfo
    start: float
    header: dict[str, Any]
    recorder: str  # public key (base64) of the recorder that received it
    status: Status = "live"
    end: float | None = None
    size: int = 0
    exit_status: int | None = None
    last_event_time: float | None = None
    error: str | None = None
    # where the header's claims about the SSH client's node contradict the tailnet
    warnings: tuple[str, ...] = ()
    seal: dict[str, Any] | None = field(default=None, compare=False)
    # checkpoints of the seek index (recorder.seek), written when the recording ends
    seek: tuple[Checkpoint, ...] = field(default=(), compare=False)
    # the legal hold, as the index has it: not part of the stored metadata document
    hold: Hold | None = field(default=None, compare=False)

    @property
    def duration(self) -> float | None:
        if self.last_event_time is not None:
            return self.last_event_time
        return None if self.end is None else max(0.0, self.end - self.start)

    def with_(self, **changes: Any) -> RecordingMeta:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        k8s = kubernetes.session(self.header)
        return {
            "id": self.id,
            "storageKey": self.key,
            "status": self.status,
            "node": self.node.to_json(),
            "start": iso(self.start),
            "end": iso(self.end),
            "duration": self.duration,
            "lastEventTime": self.last_event_time,
            "size": self.size,
            "exitStatus": self.exit_status,
            "error": self.error,
            "warnings": list(self.warnings),
            "recorder": self.recorder,
            "header": self.header,
            # the pod of a recorded `kubectl exec`/`attach` (docs/recorder.md, "Kubernetes
            # recordings"), derived from the header; from_json does not read it back
            "kubernetes": None if k8s is None else k8s.to_json(),
            "seal": self.seal,
            "seek": [cp.to_json() for cp in self.seek],
            "hold": None if self.hold is None else self.hold.to_json(),
        }

    def document(self) -> dict[str, Any]:
        """What is stored as the metadata document (storage ``.json``, the index row): all
        but the hold, which has its own document and column and changes without a seal."""
        doc = self.to_json()
        del doc["hold"]
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RecordingMeta:
        status = doc.get("status")
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        end = doc.get("end")
        return cls(
            id=str(doc["id"]),
            key=str(doc["storageKey"]),
            node=NodeInfo.from_json(doc["node"]),
            start=parse_time(str(doc["start"])),
            end=None if end is None else parse_time(str(end)),
            header=dict(doc.get("header") or {}),
            recorder=str(doc.get("recorder") or ""),
            status=status,
            size=int(doc.get("size") or 0),
            exit_status=doc.get("exitStatus"),
            last_event_time=doc.get("lastEventTime"),
            error=doc.get("error"),
            warnings=tuple(str(w) for w in doc.get("warnings") or ()),
            seal=doc.get("seal"),
            seek=_checkpoints(doc.get("seek")),
        )


def _checkpoints(doc: Any) -> tuple[Checkpoint, ...]:
    if not isinstance(doc, list):
        return ()
    parsed = [Checkpoint.from_json(item) for item in doc]
    return tuple(cp for cp in parsed if cp is not None)
