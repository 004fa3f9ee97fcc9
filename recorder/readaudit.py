"""The read audit: one JSON line per request that reads recordings (docs/recorder.md,
"Read audit"), appended to ``<state dir>/read-audit.jsonl`` (mode 0600).

Auditors ask who looked at which session; the answer must not depend on an access log
that a proxy may or may not keep. A line is written when access has been decided, before the
answer is sent, refusals included; a line that cannot be written is logged as an error and
the read goes on (the recorder's own log then holds the failure).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("tssh.recorder.readaudit")


@dataclass(frozen=True)
class ReadEvent:
    # recording.list | recording.show | recording.cast | ... | ui.list | ui.play; and
    # recording.hold | recording.release for the admins' legal holds (recorder/api.py)
    event: str
    reader_kind: str  # peer | token | unknown
    reader: str | None  # the login (or node name) of a peer, or the token's name
    node: str | None  # the reading peer's node
    address: str | None
    recording: str | None  # the id read (None for a list)
    query: str  # the request's query string (filters, q=, Range is a header: see range)
    range: str | None
    status: int  # 200 when allowed; the refusal's status otherwise

    def to_json(self, now: float) -> dict[str, object]:
        return {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
            + f".{int(now % 1 * 1000):03d}Z",
            "event": self.event, "readerKind": self.reader_kind, "reader": self.reader,
            "node": self.node, "address": self.address, "recording": self.recording,
            "query": self.query, "range": self.range, "status": self.status,
        }


def event_name(path: str) -> str | None:
    """The audit event of a path, None for a path that reads no recording (the web UI's
    scripts and styles)."""
    parts = path.strip("/").split("/")
    if parts == [""]:
        return "ui.list"  # the web UI's list page: recordings' metadata
    if len(parts) == 2 and parts[0] == "play":
        return "ui.play"  # the player page: metadata and matches; the cast comes by /events
    if parts[:3] != ["api", "v1", "recordings"]:
        return None
    if len(parts) == 3:
        return "recording.list"
    if len(parts) == 4:
        return "recording.show"
    return f"recording.{parts[4]}" if len(parts) == 5 else None


class ReadAudit:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def write(self, event: ReadEvent) -> None:
        line = json.dumps(event.to_json(time.time()), ensure_ascii=False) + "\n"
        try:
            with self._lock:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                try:
                    os.write(fd, line.encode("utf-8", "replace"))
                finally:
                    os.close(fd)
        except OSError as e:
            log.error("cannot write the read audit %s: %s (read: %s)", self.path, e,
                      line.strip())
