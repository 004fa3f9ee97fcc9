"""The daemon <-> recording worker protocol: what crosses the process boundary. Pure.

Recording costs CPU per byte (asciicast encoding, HTTP/2 framing, acks); the daemon hands
that to a worker process so that it runs on another core while the daemon's event loop
forwards the session (``tssh.recording.worker_client`` is the daemon's side, ``worker`` the
worker's). Three things cross:

- A **start request**, one datagram on the control socket carrying the recording's own
  socket (SCM_RIGHTS): targets, header and options as JSON (``StartRequest``).
- **Frames**, daemon to worker on the recording's socket: ``kind`` (1 byte), the time the
  daemon read the data (``time.monotonic()``, 8 bytes: the clock is the same in both
  processes), payload length (4 bytes), payload. Output bytes travel raw: the worker decodes
  and encodes them, the daemon never does.
- **Reports**, worker to daemon on the same socket: one JSON object per line (started,
  refused, stats, failed, closed), few and small.

A frame the worker cannot parse means a bug or a corrupted stream: ``WorkerProtocolError``, and the
recording fails (it is never silently resynchronised).
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from tssh.errors import RecordingFailed
from tssh.recording.asciicast import CastHeader
from tssh.recording.model import RecordingOptions
from tssh.recording.targets import RecorderAddress

FRAME = struct.Struct("<BdI")  # kind, monotonic time, payload length
RESIZE = struct.Struct("<II")  # cols, rows
EXIT = struct.Struct("<i")  # status
DROPPED = struct.Struct("<Q")  # bytes lost before the worker
MAX_PAYLOAD = 16 * 1024 * 1024  # far above any read the daemon makes: larger is corruption
MAX_REPORT = 1024 * 1024  # a report line longer than this is a broken worker


class Kind(IntEnum):
    OUTPUT = 1  # PTY output, or stdout of a non-PTY session
    STDERR = 2
    INPUT = 3
    RESIZE = 4
    EXIT = 5
    MARKER = 6
    DROPPED = 7  # the daemon dropped output (unenforced, worker too slow)
    CLOSE = 8  # the session is done: finish the upload and report "closed"


class WorkerProtocolError(RecordingFailed):
    """The daemon and the recording worker no longer understand each other."""


def frame_header(kind: Kind, at: float, size: int) -> bytes:
    return FRAME.pack(kind, at, size)


@dataclass(frozen=True)
class Frame:
    kind: Kind
    at: float
    payload: bytes


class FrameReader:
    """Splits the bytes the worker reads into frames (any split of the stream)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        buf = self._buf
        buf += data
        frames: list[Frame] = []
        pos = 0
        size = len(buf)
        while size - pos >= FRAME.size:
            kind, at, length = FRAME.unpack_from(buf, pos)
            if length > MAX_PAYLOAD:
                raise WorkerProtocolError(
                    f"frame of {length} bytes from the daemon (corrupt stream)")
            end = pos + FRAME.size + length
            if end > size:
                break
            try:
                frames.append(Frame(Kind(kind), at, bytes(buf[pos + FRAME.size:end])))
            except ValueError:
                raise WorkerProtocolError(f"unknown frame kind {kind} from the daemon") from None
            pos = end
        if pos:
            del buf[:pos]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held."""
        return len(self._buf)


class ReportReader:
    """Splits the worker's reports (JSON lines) as the daemon reads them."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buf += data
        reports = []
        while (end := self._buf.find(b"\n")) >= 0:
            line = bytes(self._buf[:end])
            del self._buf[:end + 1]
            try:
                report = json.loads(line)
            except ValueError:
                raise WorkerProtocolError("unreadable report from the recording worker") from None
            if not isinstance(report, dict) or not isinstance(report.get("type"), str):
                raise WorkerProtocolError("malformed report from the recording worker")
            reports.append(report)
        if len(self._buf) > MAX_REPORT:
            raise WorkerProtocolError("report line from the recording worker too long")
        return reports


def encode_report(report: dict[str, Any]) -> bytes:
    return json.dumps(report, separators=(",", ":")).encode() + b"\n"


@dataclass(frozen=True)
class StartRequest:
    """Everything the worker needs to start a recording exactly as the daemon would."""

    targets: tuple[RecorderAddress, ...]
    header: CastHeader
    options: RecordingOptions

    def encode(self) -> bytes:
        options = asdict(self.options)
        options["local_dir"] = None if self.options.local_dir is None \
            else str(self.options.local_dir)
        return json.dumps({
            "targets": [[t.host, t.port] for t in self.targets],
            "header": asdict(self.header),
            "options": options,
        }).encode()

    @classmethod
    def decode(cls, data: bytes) -> StartRequest:
        try:
            obj = json.loads(data)
            header = dict(obj["header"])
            header["src_node_tags"] = tuple(header["src_node_tags"])
            options = dict(obj["options"])
            if options["local_dir"] is not None:
                options["local_dir"] = Path(options["local_dir"])
            return cls(
                targets=tuple(RecorderAddress(str(h), int(p)) for h, p in obj["targets"]),
                header=CastHeader(**header),
                options=RecordingOptions(**options),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise WorkerProtocolError(f"malformed start request from the daemon: {e}") from None
