"""Retention: finished recordings older than ``--retain-days``, and the oldest ones while a
store's finished recordings hold more than ``--retain-bytes``, are deleted, except those on
legal hold (docs/recorder.md, "Retention").

A run lists the finished recordings from the index (live ones are never candidates) and
walks them oldest first: one is a candidate when it started before the cut-off, or while the
sizes of the finished recordings still there add up to more than the byte limit. A candidate
whose storage holds a hold document is kept (and still counts towards the bytes); for each of
the others its sealed metadata document is first appended to the retention trail
(``<state>/retention.jsonl``, 0600), then it is deleted from storage, then from the index: a
run cut short leaves at worst a trail line for a recording still there, never a deletion
without its line. Replicas of a fleet may all run it: every step is idempotent.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from recorder.errors import StorageError
from recorder.index.base import MAX_LIMIT, Query
from recorder.model import Hold, RecordingMeta
from recorder.service import RecorderService

log = logging.getLogger("tssh.recorder.retention")
DAY = 86400.0
SCHEDULE = 3600.0  # seconds between two runs of a recorder started with a retention policy


@dataclass(frozen=True)
class RetentionPolicy:
    """``days``: finished recordings that started longer ago go; ``max_bytes``: the oldest
    go while the finished recordings of the store (``--dst``) hold more, sizes as the index
    has them. Either, both (each applies), or neither (keep everything)."""

    days: float | None = None
    max_bytes: int | None = None

    @property
    def active(self) -> bool:
        return self.days is not None or self.max_bytes is not None


@dataclass
class RetentionRun:
    deleted: list[str] = field(default_factory=list)  # (with dry_run: would be deleted)
    held: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    deleted_bytes: int = 0
    # bytes of the finished recordings left (what a dry run would leave); None: not counted
    # (a policy of days only lists only the recordings older than its cut-off)
    remaining_bytes: int | None = None


def cutoff(now: float, days: float) -> float:
    return now - days * DAY


async def finished(service: RecorderService, before: float | None) -> list[RecordingMeta]:
    """Finished recordings (started before ``before``, when given), newest first."""
    found: list[RecordingMeta] = []
    cursor = None
    while True:
        page = await service.index.query(
            Query(until=before, live=False, limit=MAX_LIMIT, cursor=cursor))
        found += page.recordings
        if page.next is None:
            return found
        cursor = page.next


async def run_retention(service: RecorderService, policy: RetentionPolicy, trail: Path, *,
                        dry_run: bool = False, now: float | None = None) -> RetentionRun:
    result = RetentionRun()
    now = time.time() if now is None else now
    cut = None if policy.days is None else cutoff(now, policy.days)
    # with a byte limit every finished recording counts; without, only the old ones matter
    listed = await finished(service, cut if policy.max_bytes is None else None)
    total = sum(m.size for m in listed)
    for meta in reversed(listed):  # oldest first
        if cut is not None and meta.start < cut:
            reason = f"older than {policy.days:g} days"
        elif policy.max_bytes is not None and total > policy.max_bytes:
            reason = (f"the store's finished recordings hold {total} bytes, more than "
                      f"--retain-bytes {policy.max_bytes}")
        else:
            break  # the rest are newer, and the total is within the limit
        try:
            if await service.storage.get_hold(meta.key) is not None:
                result.held.append(meta.id)
                continue
            if not dry_run:
                await _delete(service, meta, trail, reason, now)
            result.deleted.append(meta.id)
            result.deleted_bytes += meta.size
            total -= meta.size
        except (StorageError, OSError, ValueError) as e:
            log.error("retention: recording %s not deleted: %s", meta.id, e)
            result.failed.append((meta.id, str(e)))
    if policy.max_bytes is not None:
        result.remaining_bytes = total
    return result


async def _delete(service: RecorderService, meta: RecordingMeta, trail: Path, reason: str,
                  now: float) -> None:
    """The trail line (durable), then storage, then the index, then the log line."""
    document = await service.storage.get_meta(meta.key)
    manifest = json.loads(document) if document else meta.document()
    _append(trail, {
        "time": _rfc3339(now), "event": "recording.deleted", "id": meta.id,
        "storageKey": meta.key, "size": meta.size, "reason": reason, "manifest": manifest,
    })
    await service.storage.delete(meta.key)
    await service.index.delete(meta.id)
    log.info("retention: deleted recording %s (%s, started %s, %d bytes): %s", meta.id,
             meta.key, _rfc3339(meta.start), meta.size, reason)


async def set_hold(service: RecorderService, recording_id: str, reason: str | None,
                   by: str) -> RecordingMeta:
    """Places (``reason`` given) or lifts (None) the legal hold of a recording: its hold
    document in storage (what retention reads), then the index's copy (what the API shows).
    ``by`` names who did it, in the document and the log."""
    meta = await service.get(recording_id)
    hold = None if reason is None else Hold(reason, by, time.time())
    await service.storage.set_hold(meta.key, None if hold is None else hold.document(meta.id))
    await service.index.set_hold(meta.id, hold)
    log.info("recording %s: legal hold %s by %s%s", recording_id,
             "placed" if hold is not None else "released", by,
             f" ({reason!r})" if reason is not None else "")
    return meta.with_(hold=hold)


def _append(path: Path, entry: dict[str, object]) -> None:
    line = json.dumps(entry, ensure_ascii=False) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode("utf-8", "replace"))
        os.fsync(fd)  # the line is durable before the recording goes
    finally:
        os.close(fd)


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
