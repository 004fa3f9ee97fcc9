"""The SFTP transfer audit: a sans-I/O parser of SFTP version 3 as OpenSSH speaks it.

Bytes in, events out (docs/audit.md). The parser sees both directions of the ``sftp``
subsystem: requests from the client (``client``), replies from ``sftp-server``
(``server``). A request is remembered by its id until its reply says how it went; only then
is an event made, with the outcome as ``status``:

- ``OPEN`` + ``HANDLE`` -> ``sftp.open`` (path, flags, mode); the handle is remembered, and
  the ``DATA`` replies to its ``READ``\\s and the acknowledged ``WRITE``\\s are counted, so
  ``CLOSE`` -> ``sftp.close`` carries bytes read and written;
- ``REMOVE``, ``MKDIR``, ``RMDIR``, ``RENAME`` (and ``posix-rename@openssh.com``),
  ``SETSTAT``/``FSETSTAT`` (and ``lsetstat@openssh.com``), ``SYMLINK``,
  ``hardlink@openssh.com`` -> one event each. ``SYMLINK``'s arguments are in OpenSSH's order
  (target, then link path: the reverse of the draft, which OpenSSH never followed).
- Reads that change nothing (``STAT``, ``READDIR``, ``statvfs@openssh.com``, ``fsync``, ...)
  make no event.

A ``WRITE`` or ``DATA`` packet is mostly file content: only its first bytes (``PREFIX``, a
few hundred at most) are kept to read its fields, the rest is counted and skipped, so the
content is never copied and a 32 KiB write costs a few small slices. Memory is bounded: a
packet longer than ``MAX_PACKET`` (OpenSSH's own limit, 256 KiB) cannot be framed: the
direction is reported ``sftp.unparsable`` once and its bytes pass unparsed from then on; at
most ``MAX_PENDING`` requests and ``MAX_HANDLES`` handles are remembered (the oldest
forgotten first); paths are cut at 4096 characters. A packet whose fields do not parse is
reported (at most ``MAX_REPORTS`` times) and skipped; nothing a peer sends makes the parser
raise.
"""

from __future__ import annotations

import posixpath
import struct
from collections import OrderedDict
from dataclasses import dataclass

from tssh.audit.transfer import TransferEvent, text

MAX_PACKET = 256 * 1024
MAX_PENDING = 1024
MAX_HANDLES = 1024
MAX_REPORTS = 8

# Packet types (draft-ietf-secsh-filexfer-02, the version OpenSSH speaks).
INIT, VERSION, OPEN, CLOSE, READ, WRITE = 1, 2, 3, 4, 5, 6
LSTAT, FSTAT, SETSTAT, FSETSTAT, OPENDIR, READDIR = 7, 8, 9, 10, 11, 12
REMOVE, MKDIR, RMDIR, REALPATH, STAT, RENAME, READLINK, SYMLINK = 13, 14, 15, 16, 17, 18, 19, 20
STATUS, HANDLE, DATA, NAME, ATTRS = 101, 102, 103, 104, 105
EXTENDED, EXTENDED_REPLY = 200, 201
# Bytes of a WRITE or DATA packet read for its fields, the rest being file content: a
# WRITE's id, handle (OpenSSH's are 4 bytes; 256 at most in any server), offset and length;
# a DATA's id and length.
PREFIX = {WRITE: 4 + 4 + 256 + 8 + 4, DATA: 4 + 4}

STATUS_NAMES = {0: "ok", 1: "eof", 2: "no such file", 3: "permission denied", 4: "failure",
                5: "bad message", 6: "no connection", 7: "connection lost",
                8: "operation unsupported"}
OPEN_FLAGS = ((0x01, "read"), (0x02, "write"), (0x04, "append"), (0x08, "create"),
              (0x10, "truncate"), (0x20, "excl"))
ATTR_SIZE, ATTR_UIDGID, ATTR_PERMISSIONS, ATTR_ACMODTIME = 0x1, 0x2, 0x4, 0x8
ATTR_EXTENDED = 0x80000000
# Extended requests that change something, and the event each makes.
EXTENSION_EVENTS = {"posix-rename@openssh.com": "sftp.rename",
                    "hardlink@openssh.com": "sftp.hardlink",
                    "lsetstat@openssh.com": "sftp.setstat"}

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_U32x2 = struct.Struct(">II")


class Malformed(ValueError):
    """A packet's fields run past its end."""


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u32(self) -> int:
        if self.pos + 4 > len(self.data):
            raise Malformed("truncated uint32")
        (value,) = _U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(value)

    def u64(self) -> int:
        if self.pos + 8 > len(self.data):
            raise Malformed("truncated uint64")
        (value,) = _U64.unpack_from(self.data, self.pos)
        self.pos += 8
        return int(value)

    def string(self) -> bytes:
        length = self.u32()
        if self.pos + length > len(self.data):
            raise Malformed("string runs past the packet")
        value = self.data[self.pos:self.pos + length]
        self.pos += length
        return value

    def attrs(self) -> dict[str, object]:
        flags = self.u32()
        out: dict[str, object] = {}
        if flags & ATTR_SIZE:
            out["size"] = self.u64()
        if flags & ATTR_UIDGID:
            out["uid"] = self.u32()
            out["gid"] = self.u32()
        if flags & ATTR_PERMISSIONS:
            out["mode"] = f"{self.u32() & 0o7777:04o}"
        if flags & ATTR_ACMODTIME:
            out["atime"] = self.u32()
            out["mtime"] = self.u32()
        # ATTR_EXTENDED pairs follow; nothing of the audit is in them.
        return out


@dataclass(frozen=True, slots=True)
class Packet:
    """One framed packet: its type, its payload after the type byte (for WRITE and DATA only
    its first ``PREFIX`` bytes), and the payload's full length."""

    type: int
    payload: bytes
    length: int


class Framer:
    """Cuts one direction's byte stream into packets (``uint32 length``, ``byte type``, ...),
    keeping only the first bytes of the types in ``prefix_only`` (type -> bytes kept).
    ``broken`` once a length is out of range: the stream cannot be framed any more and
    ``feed`` returns nothing from then on."""

    def __init__(self, prefix_only: dict[int, int]) -> None:
        self._prefix_only = prefix_only
        self._buf = bytearray()
        self._want = 4  # bytes to collect before looking at the buffer again
        self._skip = 0  # bytes of the current packet's content to pass over
        self._length = 0  # of the current packet; 0: its length is not read yet
        self.broken: str | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Packet]:
        if self._skip >= len(data):  # the middle of a file's content: most calls
            self._skip -= len(data)
            return []
        packets: list[Packet] = []
        pos, end = 0, len(data)
        while pos < end and self.broken is None:
            if not self._buf and not self._skip and end - pos >= 5:
                # A whole header in ``data`` (the usual case): read it in place.
                (length,) = _U32.unpack_from(data, pos)
                if 1 <= length <= MAX_PACKET:
                    keep = length + 4
                    prefix = self._prefix_only.get(data[pos + 4])
                    if prefix is not None and prefix + 5 < keep:
                        keep = prefix + 5
                    if end - pos >= keep:
                        packets.append(Packet(data[pos + 4], data[pos + 5:pos + keep],
                                              length - 1))
                        self._skip = length + 4 - keep
                        pos += keep
                        continue
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            step = min(self._want - len(self._buf), end - pos)
            self._buf += data[pos:pos + step]
            pos += step
            if len(self._buf) < self._want:
                break
            if not self._length:
                (length,) = _U32.unpack_from(self._buf)
                if not 1 <= length <= MAX_PACKET:
                    self.broken = f"packet length {length} out of range (1-{MAX_PACKET})"
                    self._buf.clear()
                    break
                self._length = length
                self._want = 5
                continue
            if self._want == 5:  # the type is in: how much of the packet to keep
                keep = self._length + 4
                prefix = self._prefix_only.get(self._buf[4])
                if prefix is not None:
                    keep = min(keep, 5 + prefix)
                if keep > 5:
                    self._want = keep
                    continue
            buf = self._buf
            packets.append(Packet(buf[4], bytes(buf[5:]), self._length - 1))
            self._skip = self._length + 4 - len(buf)
            self._buf = bytearray()
            self._want = 4
            self._length = 0
        return packets


@dataclass(slots=True)
class _Request:
    op: int
    path: str | None = None
    new_path: str | None = None
    handle: bytes | None = None
    flags: tuple[str, ...] = ()
    attrs: dict[str, object] | None = None
    length: int = 0
    event: str | None = None  # of an extended request
    extension: str | None = None


@dataclass
class _File:
    path: str
    flags: tuple[str, ...]
    mode: str | None
    directory: bool = False
    read: int = 0
    written: int = 0


def _flags(pflags: int) -> tuple[str, ...]:
    return tuple(name for bit, name in OPEN_FLAGS if pflags & bit)


def status_name(code: int) -> str:
    return STATUS_NAMES.get(code, f"status {code}")


class SftpAudit:
    """The parser of one sftp session (see the module docstring)."""

    def __init__(self, cwd: str | None = None) -> None:
        """``cwd``: sftp-server's working directory (the user's home), which relative paths
        are taken from; the events name absolute paths."""
        self._cwd = cwd
        self._requests = Framer({WRITE: PREFIX[WRITE]})
        self._replies = Framer({DATA: PREFIX[DATA]})
        self._pending: OrderedDict[int, _Request] = OrderedDict()
        self._handles: OrderedDict[bytes, _File] = OrderedDict()
        self._reports = 0
        self.unreported = 0  # malformed packets beyond MAX_REPORTS
        self.forgotten = 0  # requests and handles dropped for the bounds

    # --- memory bounds, for tests and the curious --------------------------------------
    @property
    def held(self) -> tuple[int, int, int]:
        """Buffered bytes, pending requests, open handles."""
        return (self._requests.buffered + self._replies.buffered, len(self._pending),
                len(self._handles))

    # --- input ---------------------------------------------------------------------
    def client(self, data: bytes) -> list[TransferEvent]:
        if self._requests.broken is not None:
            return []
        packets = self._requests.feed(data)
        if not packets and self._requests.broken is None:
            return []
        events: list[TransferEvent] = []
        for packet in packets:
            try:
                self._request(packet)
            except Malformed as e:
                self._report(events, "client", f"type {packet.type}: {e}")
        self._check_broken(self._requests, "client", events)
        return events

    def server(self, data: bytes) -> list[TransferEvent]:
        if self._replies.broken is not None:
            return []
        packets = self._replies.feed(data)
        if not packets and self._replies.broken is None:
            return []
        events: list[TransferEvent] = []
        for packet in packets:
            try:
                event = self._reply(packet)
            except Malformed as e:
                self._report(events, "server", f"type {packet.type}: {e}")
                continue
            if event is not None:
                events.append(event)
        self._check_broken(self._replies, "server", events)
        return events

    def close(self) -> list[TransferEvent]:
        """Files the session left open, closed by its end (status ``session ended``)."""
        events = [self._close_event(f, "session ended")
                  for f in self._handles.values() if not f.directory]
        self._handles.clear()
        self._pending.clear()
        return events

    # --- reports ------------------------------------------------------------------
    def _check_broken(self, framer: Framer, direction: str,
                      events: list[TransferEvent]) -> None:
        if framer.broken is not None:
            events.append(TransferEvent("sftp.unparsable", {
                "direction": direction, "reason": framer.broken,
                "action": "passed through unparsed from here on"}))

    def _report(self, events: list[TransferEvent], direction: str, reason: str) -> None:
        if self._reports >= MAX_REPORTS:
            self.unreported += 1
            return
        self._reports += 1
        events.append(TransferEvent("sftp.unparsable", {
            "direction": direction, "reason": reason, "action": "packet skipped"}))

    # --- requests -----------------------------------------------------------------
    def _path(self, raw: bytes) -> str:
        path = text(raw)
        if self._cwd is not None and not path.startswith("/"):
            return posixpath.join(self._cwd, path) if path else self._cwd
        return path

    def _remember(self, request_id: int, request: _Request) -> None:
        self._pending[request_id] = request
        self._pending.move_to_end(request_id)
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)
            self.forgotten += 1

    def _request(self, packet: Packet) -> None:
        op = packet.type
        if op == INIT:
            return
        payload = packet.payload
        if op == WRITE and len(payload) >= 8:  # the most frequent request: read in place
            (request_id, size) = _U32x2.unpack_from(payload)
            if len(payload) >= 8 + size + 12:
                declared = _U32.unpack_from(payload, 16 + size)[0]
                room = packet.length - (20 + size)
                self._remember(request_id, _Request(op, handle=payload[8:8 + size],
                                                    length=max(0, min(declared, room))))
                return
        r = _Reader(payload)
        request_id = r.u32()
        if op == OPEN:
            path = self._path(r.string())
            pflags = r.u32()
            attrs = r.attrs()
            self._remember(request_id, _Request(op, path, flags=_flags(pflags), attrs=attrs))
        elif op == WRITE:
            handle = r.string()
            r.u64()  # offset
            declared = r.u32()
            # The data is the rest of the packet (only its prefix is here).
            room = packet.length - r.pos
            self._remember(request_id, _Request(op, handle=handle,
                                                length=max(0, min(declared, room))))
        elif op in (READ, CLOSE, FSETSTAT):
            handle = r.string()
            changes = r.attrs() if op == FSETSTAT else None
            self._remember(request_id, _Request(op, handle=handle, attrs=changes))
        elif op in (OPENDIR, REMOVE, RMDIR):
            self._remember(request_id, _Request(op, self._path(r.string())))
        elif op in (MKDIR, SETSTAT):
            path = self._path(r.string())
            self._remember(request_id, _Request(op, path, attrs=r.attrs()))
        elif op == RENAME:
            old = self._path(r.string())
            self._remember(request_id, _Request(op, old, self._path(r.string())))
        elif op == SYMLINK:
            target = text(r.string())  # OpenSSH's order: target first, then the link
            self._remember(request_id, _Request(op, self._path(r.string()), new_path=target))
        elif op == EXTENDED:
            name = r.string().decode("ascii", "replace")
            event = EXTENSION_EVENTS.get(name)
            if event is None:
                return  # statvfs, fsync, limits, expand-path, ...: nothing changes
            path = self._path(r.string())
            if event == "sftp.setstat":
                self._remember(request_id, _Request(op, path, attrs=r.attrs(), event=event,
                                                    extension=name))
            else:
                self._remember(request_id, _Request(op, path, self._path(r.string()), event=event,
                                                    extension=name))

    # --- replies ------------------------------------------------------------------
    def _reply(self, packet: Packet) -> TransferEvent | None:
        if packet.type == VERSION:
            return None
        if packet.type == STATUS and len(packet.payload) >= 8:
            (request_id, code) = _U32x2.unpack_from(packet.payload)
            request = self._pending.pop(request_id, None)
            return None if request is None else self._status(request, status_name(code))
        r = _Reader(packet.payload)
        request_id = r.u32()
        request = self._pending.pop(request_id, None)
        if request is None:
            return None
        if packet.type == STATUS:
            return self._status(request, status_name(r.u32()))
        if packet.type == HANDLE:
            return self._opened(request, r.string())
        if packet.type == DATA and request.op == READ and request.handle is not None:
            file = self._handles.get(request.handle)
            if file is not None:
                file.read += max(0, min(r.u32(), packet.length - r.pos))
        return None

    def _opened(self, request: _Request, handle: bytes) -> TransferEvent | None:
        if request.op not in (OPEN, OPENDIR) or request.path is None:
            return None
        attrs = request.attrs or {}
        mode = attrs.get("mode")
        file = _File(request.path, request.flags, mode if isinstance(mode, str) else None,
                     directory=request.op == OPENDIR)
        self._handles[handle] = file
        self._handles.move_to_end(handle)
        while len(self._handles) > MAX_HANDLES:
            self._handles.popitem(last=False)
            self.forgotten += 1
        if file.directory:
            return None
        return TransferEvent("sftp.open", {"path": file.path, "flags": ",".join(file.flags),
                                           "mode": file.mode, "status": "ok"})

    def _close_event(self, file: _File, status: str) -> TransferEvent:
        return TransferEvent("sftp.close", {
            "path": file.path, "flags": ",".join(file.flags), "mode": file.mode,
            "bytes_read": file.read, "bytes_written": file.written, "status": status})

    def _status(self, request: _Request, status: str) -> TransferEvent | None:
        op = request.op
        if op == WRITE:
            file = self._handles.get(request.handle or b"")
            if file is not None and status == "ok":
                file.written += request.length
            return None
        if op == CLOSE:
            file = self._handles.pop(request.handle or b"", None)
            if file is None or file.directory:
                return None
            return self._close_event(file, status)
        if op == OPEN:
            mode = (request.attrs or {}).get("mode")
            return TransferEvent("sftp.open", {"path": request.path,
                                               "flags": ",".join(request.flags),
                                               "mode": mode, "status": status})
        if op == FSETSTAT:
            file = self._handles.get(request.handle or b"")
            return TransferEvent("sftp.setstat", {
                "path": file.path if file else None, **(request.attrs or {}),
                "status": status})
        simple = {REMOVE: "sftp.remove", RMDIR: "sftp.rmdir", MKDIR: "sftp.mkdir",
                  SETSTAT: "sftp.setstat", RENAME: "sftp.rename", SYMLINK: "sftp.symlink"}
        event = request.event if op == EXTENDED else simple.get(op)
        if event is None:
            return None
        fields: dict[str, object] = {"path": request.path}
        if event == "sftp.symlink":
            fields["target"] = request.new_path
        elif request.new_path is not None:
            fields["new_path"] = request.new_path
        if request.attrs:
            fields.update(request.attrs)
        if request.extension is not None:
            fields["extension"] = request.extension
        fields["status"] = status
        return TransferEvent(event, fields)
