"""Where audit events go: ``<state_dir>/audit.jsonl`` and the journal (docs/audit.md).

``AuditSink`` is a ``logging.Handler`` on ``tssh.audit``: each record becomes one JSON line
(``tssh.audit.entry``) handed to a writer thread, which appends what has queued up, fsyncs
once per batch, and rotates the file by size. The event loop never waits on the disk: an
fsync costs milliseconds, and a session's data path runs on that loop. A batch is what
arrived while the previous one was being written, so a quiet daemon syncs every line and a
busy one amortises the sync.

The file is created 0600 (and put back to 0600 if found otherwise): it names who did what,
and paths of the files they moved.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

from tssh.audit.entry import audit_entry, to_line
from tssh.audit.journal import Journal, audit_fields, syslog_priority
from tssh.audit.log import audit_log, connection_defaults
from tssh.logformat import record_fields

AUDIT_FILE = "audit.jsonl"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_FILES = 5
BATCH = 512  # lines written (and synced) at most at once
CLOSE_TIMEOUT = 5.0

log = logging.getLogger("tssh.audit_sink")


def rotated_name(path: Path, index: int) -> Path:
    """``audit.jsonl`` (0), ``audit.jsonl.1`` (the newest rotated one), ..."""
    return path if index == 0 else path.with_name(f"{path.name}.{index}")


def audit_files(path: Path, files: int = 100) -> list[Path]:
    """The existing audit files, oldest first (for reading them in order)."""
    found = [rotated_name(path, i) for i in range(files)]
    return [p for p in reversed(found) if p.exists()]


class AuditFile:
    """The append-only file, rotated by size: at most ``files`` files (this one included),
    none above ``max_bytes`` unless a single line is."""

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES,
                 files: int = DEFAULT_FILES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.files = files
        self._fd = -1
        self._size = 0

    def open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        st = os.fstat(fd)
        if st.st_mode & 0o777 != 0o600:
            os.fchmod(fd, 0o600)
        self._fd, self._size = fd, st.st_size

    def write(self, lines: list[bytes]) -> None:
        """Append ``lines`` (rotating between them as needed), then fsync."""
        pending: list[bytes] = []
        size = self._size
        for line in lines:
            if size and size + len(line) > self.max_bytes:
                self._append(pending)
                self._rotate()
                pending, size = [], 0
            pending.append(line)
            size += len(line)
        self._append(pending)

    def _append(self, lines: list[bytes]) -> None:
        if not lines:
            return
        data = b"".join(lines)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)
        self._size += len(data)

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        oldest = rotated_name(self.path, self.files - 1)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(oldest)
        for index in range(self.files - 2, -1, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(rotated_name(self.path, index), rotated_name(self.path, index + 1))
        self.open()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def encode_record(record: logging.LogRecord, *,
                  journal: bool) -> tuple[bytes, dict[str, str] | None]:
    """An audit record as its line in the file and, with ``journal``, its journal fields;
    in the process that logged it (the connection's fields are context variables there)."""
    entry = audit_entry(record.created, record_fields(record), record.getMessage(),
                        connection_defaults())
    line = to_line(entry)
    fields = audit_fields(entry, line, syslog_priority(record.levelno)) if journal else None
    return line, fields


@dataclass(frozen=True)
class _Line:
    data: bytes
    journal: dict[str, str] | None


_STOP = _Line(b"", None)


class AuditSink(logging.Handler):
    """Install with ``start()`` (on the ``tssh.audit`` logger), remove with ``close()``."""

    def __init__(self, file: AuditFile, journal: Journal | None = None) -> None:
        super().__init__(logging.DEBUG)
        self.file = file
        self.journal = journal
        self._queue: queue.SimpleQueue[_Line] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._failing = False
        self._level = logging.NOTSET

    @classmethod
    def for_state_dir(cls, state_dir: Path, max_bytes: int = DEFAULT_MAX_BYTES,
                      files: int = DEFAULT_FILES, journal: Journal | None = None) -> AuditSink:
        return cls(AuditFile(state_dir / AUDIT_FILE, max_bytes, files), journal)

    def start(self) -> None:
        """Open the file (OSError if it cannot be: a daemon must not run unaudited)."""
        self.file.open()
        self._thread = threading.Thread(target=self._run, name="tssh-audit", daemon=True)
        self._thread.start()
        self._level = audit_log.level
        audit_log.setLevel(logging.INFO)  # whatever the daemon's log level: every event
        audit_log.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line, journal = encode_record(record, journal=self.journal is not None)
            self._queue.put(_Line(line, journal))
        except Exception:
            self.handleError(record)

    def put(self, line: bytes, journal: dict[str, str] | None) -> None:
        """An event another process encoded (a worker process's, docs/daemon.md)."""
        self._queue.put(_Line(line, journal if self.journal is not None else None))

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            while len(batch) < BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if any(b is _STOP for b in batch):
                stopping = True
                batch = [b for b in batch if b is not _STOP]
            self._write(batch)

    def _write(self, batch: list[_Line]) -> None:
        try:
            self.file.write([b.data for b in batch])
            self._failing = False
        except OSError as e:
            if not self._failing:
                log.error("cannot write the audit log; events go to the daemon's log only",
                          extra={"path": str(self.file.path), "error": e.strerror or str(e)})
            self._failing = True
        if self.journal is not None:
            for b in batch:
                if b.journal is not None:
                    self.journal.send(b.journal)

    def close(self) -> None:
        """Write what is queued, then stop (bounded by CLOSE_TIMEOUT)."""
        audit_log.removeHandler(self)
        if self._thread is not None:
            audit_log.setLevel(self._level)
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(CLOSE_TIMEOUT)
            self._thread = None
        self.file.close()
        if self.journal is not None:
            self.journal.close()
        super().close()
