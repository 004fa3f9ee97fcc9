"""Retention: finished recordings older than ``--retain-days`` are deleted, except those on
legal hold (docs/recorder.md, "Retention").

A run lists the candidates from the index (finished, started before the cut-off), skips every
one whose storage holds a hold document, and for each of the others first appends its sealed
metadata document to the retention trail (``<state>/retention.jsonl``, 0600), then deletes
it from storage, then from the index: a run cut short leaves at worst a trail line for a
recording still there, never a deletion without its line. Replicas of a fleet may all run
it: every step is idempotent.
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
from recorder.model import RecordingMeta
from recorder.service import RecorderService

log = logging.getLogger("tssh.recorder.retention")
DAY = 86400.0
SCHEDULE = 3600.0  # seconds between two runs of a recorder started with --retain-days


@dataclass
class RetentionRun:
    deleted: list[str] = field(default_factory=list)  # (with dry_run: would be deleted)
    held: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def cutoff(now: float, days: float) -> float:
    return now - days * DAY


async def candidates(service: RecorderService, before: float) -> list[RecordingMeta]:
    """Finished recordings started before ``before``, newest first."""
    found: list[RecordingMeta] = []
    cursor = None
    while True:
        page = await service.index.query(
            Query(until=before, live=False, limit=MAX_LIMIT, cursor=cursor))
        found += page.recordings
        if page.next is None:
            return found
        cursor = page.next


async def run_retention(service: RecorderService, days: float, trail: Path, *,
                        dry_run: bool = False, now: float | None = None) -> RetentionRun:
    result = RetentionRun()
    now = time.time() if now is None else now
    for meta in await candidates(service, cutoff(now, days)):
        try:
            if await service.storage.get_hold(meta.key) is not None:
                result.held.append(meta.id)
                continue
            if dry_run:
                result.deleted.append(meta.id)
                continue
            document = await service.storage.get_meta(meta.key)
            manifest = json.loads(document) if document else meta.to_json()
            _append(trail, {
                "time": _rfc3339(now), "event": "recording.deleted", "id": meta.id,
                "storageKey": meta.key, "reason": f"older than {days:g} days",
                "manifest": manifest,
            })
            await service.storage.delete(meta.key)
            await service.index.delete(meta.id)
            log.info("retention: deleted recording %s (%s, started %s)", meta.id, meta.key,
                     _rfc3339(meta.start))
            result.deleted.append(meta.id)
        except (StorageError, OSError, ValueError) as e:
            log.error("retention: recording %s not deleted: %s", meta.id, e)
            result.failed.append((meta.id, str(e)))
    return result


async def set_hold(service: RecorderService, recording_id: str, reason: str | None,
                   by: str) -> RecordingMeta:
    """Places (``reason`` given) or lifts (None) the legal hold of a recording."""
    meta = await service.get(recording_id)
    document = None if reason is None else json.dumps({
        "id": recording_id, "reason": reason, "by": by, "time": _rfc3339(time.time()),
    }).encode() + b"\n"
    await service.storage.set_hold(meta.key, document)
    log.info("recording %s: legal hold %s by %s", recording_id,
             "placed" if reason is not None else "released", by)
    return meta


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
