"""Sans-I/O reader of an uploaded asciicast stream.

The ingest driver feeds it the request body as it arrives; it finds and validates the header
line, then watches the event lines go by without parsing them as JSON (events are stored
verbatim, and parsing every line would cost more CPU than everything else in ingest). It only
enforces what keeps the store safe and readable: bounded header and line lengths, UTF-8, and it
notes the last event time and an ``"x"`` (exit status) event for the index.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from recorder.errors import CastError
from tssh.identity.base import Peer

HEADER_LIMIT = 64 * 1024  # bytes, first line included its newline
LINE_LIMIT = 1024 * 1024  # bytes per event line; a terminal never writes one event this big
_PREFIX = 96  # bytes of each line kept to read its time, type and exit status
_EXIT_WINDOW = 1024  # bytes before a chunk's last newline searched for an "x" event

# `[12.5, "x", "0"]` or `[12.5, "x", 0]`: time, event code, and (for "x") the status
_EVENT_PREFIX = re.compile(rb'^\s*\[\s*(-?[0-9][0-9.eE+-]*)\s*,\s*"([A-Za-z])"\s*,\s*"?(-?[0-9]+)?')
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class ReceivedHeader:
    """The validated first line of a recording; ``fields`` is the whole object as sent."""

    fields: dict[str, Any]
    raw: bytes

    def text(self, name: str) -> str | None:
        value = self.fields.get(name)
        return value if isinstance(value, str) else None

    @property
    def src_node_id(self) -> str | None:
        return self.text("srcNodeID")

    @property
    def connection_id(self) -> str | None:
        """The header's connection id when it is safe to use in a storage key."""
        value = self.text("connectionID")
        return value if value is not None and _SAFE_ID.match(value) else None


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise CastError(f"asciicast header: number {text[:40]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise CastError(f"asciicast header: {name} is not a JSON number")


def parse_header(line: bytes) -> ReceivedHeader:
    """Validates an asciicast v2 header line (without its newline).

    Besides the fields below, the header must be storable and servable as strict JSON, since
    it is kept in the metadata document and returned by the API: no NaN or infinite numbers,
    no lone surrogates, no nesting deeper than the parser's recursion limit."""
    try:
        fields = json.loads(line.decode("utf-8"), parse_float=_finite,
                            parse_constant=_no_constant)
        json.dumps(fields, ensure_ascii=False).encode("utf-8")  # lone surrogates
    except UnicodeDecodeError as e:
        raise CastError("asciicast header is not UTF-8") from e
    except UnicodeEncodeError as e:
        raise CastError("asciicast header has a lone UTF-16 surrogate (\\ud800-\\udfff)") from e
    except json.JSONDecodeError as e:
        raise CastError(f"asciicast header is not JSON: {e.msg} at column {e.colno}") from e
    except RecursionError as e:
        raise CastError("asciicast header is nested too deeply") from e
    except ValueError as e:  # an integer of more than 4,300 digits
        raise CastError(f"asciicast header: {e}") from e
    if not isinstance(fields, dict):
        raise CastError("asciicast header must be a JSON object")
    if fields.get("version") != 2:
        raise CastError("asciicast header: only version 2 is accepted")
    for name in ("width", "height"):
        value = fields.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100_000:
            raise CastError(f"asciicast header: {name!r} must be a non-negative integer")
    ts = fields.get("timestamp")
    if ts is not None and (not isinstance(ts, int | float) or isinstance(ts, bool)):
        raise CastError("asciicast header: 'timestamp' must be a number")
    for name in ("srcNodeID", "srcNode", "connectionID", "sshUser", "localUser", "srcNodeUser"):
        if name in fields and not isinstance(fields[name], str):
            raise CastError(f"asciicast header: {name!r} must be a string")
    tags = fields.get("srcNodeTags")
    if tags is not None and (
        not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)
    ):
        raise CastError("asciicast header: 'srcNodeTags' must be a list of strings")
    return ReceivedHeader(fields=fields, raw=line)


def header_discrepancies(header: ReceivedHeader, known: Peer | None) -> list[str]:
    """Where the header's claims about the SSH client's node contradict the tailnet.

    ``srcNode*`` name the node the SSH connection came *from* (tailscaled fills them from its
    peer), not the uploading server, so the recorder cannot check them against the upload's
    source address. It checks them against what the identity backend says about
    ``srcNodeID`` (``known``). A header without ``srcNodeID``, or naming a node the recorder
    cannot see (tailnet ACLs may hide it), has nothing to contradict. An empty list means
    nothing contradicts the tailnet.
    """
    claimed = header.src_node_id
    if claimed is None or known is None:
        return []
    problems: list[str] = []
    name = header.text("srcNode")
    if name is not None and _short(name) != _short(known.name):
        problems.append(f"srcNode {name!r} (the tailnet calls node {claimed!r} "
                        f"{known.name!r})")
    user = header.text("srcNodeUser")
    if user is not None and user != known.user:
        problems.append(f"srcNodeUser {user!r} (node {claimed!r} belongs to "
                        f"{known.user or 'nobody: it is tagged'!r})")
    user_id = header.text("srcNodeUserID")
    if user_id is not None and known.user_id is not None and user_id != known.user_id:
        problems.append(f"srcNodeUserID {user_id!r} (the tailnet says {known.user_id!r})")
    tags = header.fields.get("srcNodeTags")
    if isinstance(tags, list) and sorted(tags) != sorted(known.tags):
        problems.append(f"srcNodeTags {sorted(tags)} (node {claimed!r} has "
                        f"{sorted(known.tags)})")
    return problems


def _short(name: str) -> str:
    return name.rstrip(".").split(".", 1)[0].lower()


@dataclass
class CastScanner:
    """Consumes body bytes; returns the bytes to store once the header is known.

    ``feed`` raises CastError on the first violation; bytes returned earlier are good to keep.
    """

    header_limit: int = HEADER_LIMIT
    line_limit: int = LINE_LIMIT
    header: ReceivedHeader | None = None
    last_time: float | None = None
    exit_status: int | None = None
    received: int = 0
    _pending: bytearray = field(default_factory=bytearray)
    _line_len: int = 0
    _prefix: bytearray = field(default_factory=bytearray)
    _utf8: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("strict")
    )

    def feed(self, data: bytes) -> bytes:
        self.received += len(data)
        if self.header is None:
            return self._feed_header(data)
        self._scan(data)
        return data

    def end(self) -> None:
        """The body ended: a stream without a complete header is refused."""
        if self.header is None:
            if self._pending:
                raise CastError("stream ended before the asciicast header line was complete")
            raise CastError("empty recording: no asciicast header")
        try:
            self._utf8.decode(b"", final=True)
        except UnicodeDecodeError as e:
            raise CastError("recording ends inside a UTF-8 sequence") from e

    def _feed_header(self, data: bytes) -> bytes:
        start = len(self._pending)
        self._pending += data
        nl = self._pending.find(b"\n", max(0, start - 1))
        if nl < 0:
            if len(self._pending) >= self.header_limit:
                raise CastError(f"asciicast header line longer than {self.header_limit} bytes")
            return b""
        if nl + 1 > self.header_limit:
            raise CastError(f"asciicast header line longer than {self.header_limit} bytes")
        line = bytes(self._pending[:nl]).rstrip(b"\r")
        self.header = parse_header(line)
        out = bytes(self._pending)
        self._pending = bytearray()
        self._scan(out[nl + 1 :])
        return out

    def _scan(self, data: bytes) -> None:
        if not data:
            return
        try:
            self._utf8.decode(data)
        except UnicodeDecodeError as e:
            raise CastError("recording is not UTF-8") from e
        first = data.find(b"\n")
        if first < 0:
            self._extend_line(data)
            return
        if len(data) > self.line_limit:
            segments = data.split(b"\n")
            self._extend_line(segments[0])
            self._end_line()
            for seg in segments[1:-1]:
                self._extend_line(seg)
                self._end_line()
            self._extend_line(segments[-1])
            return
        # A middle line cannot exceed the limit when the whole chunk does not; of the middle
        # lines only the last ones are read (time, and an exit event, which ends a session).
        self._extend_line(data[:first])
        self._end_line()
        last = data.rfind(b"\n")
        if last > first:
            lo = max(first + 1, last - _EXIT_WINDOW)
            window = data[lo:last]
            if b'"x"' in window:
                lines = window.split(b"\n")
                if data[lo - 1 : lo] != b"\n":
                    lines = lines[1:]  # starts inside a line that was not read
                for line in lines:
                    self._extend_line(line)
                    self._end_line()
            else:
                prev = data.rfind(b"\n", first, last)
                self._extend_line(data[prev + 1 : last])
                self._end_line()
        self._extend_line(data[last + 1 :])

    def _extend_line(self, seg: bytes) -> None:
        self._line_len += len(seg)
        if self._line_len > self.line_limit:
            raise CastError(f"event line longer than {self.line_limit} bytes")
        if len(self._prefix) < _PREFIX:
            self._prefix += seg[: _PREFIX - len(self._prefix)]

    def _end_line(self) -> None:
        m = _EVENT_PREFIX.match(self._prefix)
        if m is not None:
            with contextlib.suppress(ValueError):
                t = float(m.group(1))
                if math.isfinite(t):  # 1e999 would be an infinity the API cannot answer
                    self.last_time = t
            if m.group(2) == b"x" and m.group(3) is not None:
                self.exit_status = int(m.group(3))
        self._line_len = 0
        self._prefix = bytearray()
