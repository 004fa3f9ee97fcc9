"""The scp transfer audit: a sans-I/O parser of scp's legacy protocol (``scp -O``).

Modern ``scp`` speaks SFTP (``tssh.audit.sftp``). The legacy protocol runs ``scp -t TARGET``
(the client uploads: it is the *sender*) or ``scp -f PATH...`` (the client downloads: the
server is the sender) and, as OpenSSH's scp.c has it:

- the sender writes control lines: ``C<mode> <size> <name>\\n`` then ``size`` bytes of file
  and one status byte (``\\0``, or an error line), ``D<mode> 0 <name>\\n`` (enter a
  directory, with ``-r``), ``E\\n`` (leave it), ``T<mtime> 0 <atime> 0\\n`` (times, ``-p``);
  a line starting with ``\\1`` or ``\\2`` is an error message (``\\2``: fatal);
- the receiver answers once at the start (ready), after each control line, and after each
  file's data: ``\\0`` for yes, or ``\\1``/``\\2`` + message + ``\\n``. The sender sends a
  file's data only after its ``C`` line was answered yes.

Each file makes one ``scp.upload`` or ``scp.download`` event (path, the name it was sent
under, mode, bytes, status)
once the receiver has answered its data, or its ``C`` line with an error. ``path`` is where
the file lands (upload) or comes from (download) as the command line names it: an upload's
target is a directory or the file itself, which only the file system can say
(``target_is_dir``, decided by the caller). Lines are bounded (``MAX_LINE``); a stream that
is not this protocol is reported ``scp.unparsable`` once and passes unparsed.
"""

from __future__ import annotations

import posixpath
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace

from tssh.audit.transfer import TransferEvent, text

MAX_LINE = 64 * 1024  # OpenSSH reads control lines into a 2048-byte buffer
MAX_EXPECTED = 4096  # answers awaited; the sender waits for each, so a few in practice
_FILE_LINE = re.compile(rb"([CD])([0-7]{4}) ([0-9]{1,20}) (.+)", re.DOTALL)
_TIME_LINE = re.compile(rb"T[0-9]{1,20} [0-9]{1,9} [0-9]{1,20} [0-9]{1,9}")


@dataclass(frozen=True)
class ScpCommand:
    """What ``scp -t``/``scp -f`` was asked on its command line."""

    upload: bool  # -t: the client sends
    paths: tuple[str, ...]  # the target (upload), or the sources (download)
    recursive: bool


def scp_command(argv: Sequence[str]) -> ScpCommand | None:
    """The scp server command of ``argv`` (``scp [-v] [-r] [-p] [-d] -t|-f [--] PATH...``,
    already vetted by ``tssh.server.transfer``), or None."""
    upload: bool | None = None
    recursive = False
    i = 1
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            break
        if arg.startswith("-") and len(arg) > 1:
            for letter in arg[1:]:
                if letter == "t":
                    upload = True
                elif letter == "f":
                    upload = False
                elif letter == "r":
                    recursive = True
            continue
        i -= 1
        break
    paths = tuple(argv[i:])
    if upload is None or not paths:
        return None
    return ScpCommand(upload, paths, recursive)


@dataclass
class _File:
    path: str
    name: str
    mode: str
    size: int
    sent: int = 0
    sender_error: str | None = None


_READY, _LINE, _DIR_IN, _DIR_OUT, _TIMES = "ready", "line", "dir-in", "dir-out", "times"


class ScpAudit:
    """The parser of one ``scp -t``/``scp -f`` session (see the module docstring)."""

    def __init__(self, command: ScpCommand, target_is_dir: bool = False,
                 cwd: str | None = None) -> None:
        """``cwd``: scp's working directory (the user's home), which relative paths are
        taken from; the events name absolute paths."""
        if cwd is not None:
            command = replace(command, paths=tuple(
                posixpath.join(cwd, p) for p in command.paths))
        self._command = command
        self._target_is_dir = target_is_dir or len(command.paths) > 1
        self._event = "scp.upload" if command.upload else "scp.download"
        self._line = bytearray()
        self._data_left = 0  # bytes of the current file still to pass
        self._file: _File | None = None
        self._await_status = False  # the sender's byte after a file's data
        self._answer = bytearray()  # the receiver's answer being read
        self._in_answer = False
        self._expected: deque[tuple[str, _File | None]] = deque([(_READY, None)])
        self._dirs: list[str] = []
        self._broken = False

    # --- directions -----------------------------------------------------------------
    def client(self, data: bytes) -> list[TransferEvent]:
        return self._sender(data) if self._command.upload else self._receiver(data)

    def server(self, data: bytes) -> list[TransferEvent]:
        return self._receiver(data) if self._command.upload else self._sender(data)

    def close(self) -> list[TransferEvent]:
        """A file under way when the session ended: reported with what passed of it."""
        events = []
        if self._file is not None:
            events.append(self._done(self._file, "session ended"))
            self._file = None
        for kind, file in self._expected:
            if kind == "file" and file is not None:
                events.append(self._done(file, "session ended"))
        self._expected.clear()
        return events

    # --- paths ----------------------------------------------------------------------
    def _path(self, name: str) -> str:
        if self._dirs:
            return posixpath.join(self._dirs[-1], name)
        if self._command.upload:
            target = self._command.paths[0]
            return posixpath.join(target, name) if self._target_is_dir else target
        for source in self._command.paths:
            if posixpath.basename(source.rstrip("/")) == name:
                return source
        return name

    # --- the sender's stream ------------------------------------------------------------
    def _sender(self, data: bytes) -> list[TransferEvent]:
        events: list[TransferEvent] = []
        pos, end = 0, len(data)
        while pos < end and not self._broken:
            if self._data_left:
                step = min(self._data_left, end - pos)
                self._data_left -= step
                if self._file is not None:
                    self._file.sent += step
                pos += step
                if not self._data_left:
                    self._await_status = True
                continue
            if self._await_status and not self._line:
                self._await_status = False
                if data[pos] == 0:
                    pos += 1
                    self._file_sent(None)
                    continue
                # an error line follows: read it as a line, below
                self._await_status = True
            newline = data.find(b"\n", pos)
            stop = end if newline < 0 else newline
            if len(self._line) + stop - pos > MAX_LINE:
                self._unparsable(events, "a control line longer than "
                                 f"{MAX_LINE} bytes")
                break
            self._line += data[pos:stop]
            pos = stop
            if newline < 0:
                break
            pos += 1
            line, self._line = bytes(self._line), bytearray()
            self._control(line, events)
        return events

    def _file_sent(self, error: str | None) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.sender_error = error
            self._expect("file", file)

    def _expect(self, kind: str, file: _File | None) -> None:
        if len(self._expected) < MAX_EXPECTED:
            self._expected.append((kind, file))

    def _control(self, line: bytes, events: list[TransferEvent]) -> None:
        if self._await_status:  # the sender could not read the file it sent
            self._await_status = False
            self._file_sent(text(line[1:]) or "error")
            return
        if not line:
            self._unparsable(events, "an empty control line")
            return
        kind = line[:1]
        if kind in (b"\x01", b"\x02"):
            events.append(TransferEvent(self._event, {
                "path": None, "status": text(line[1:]) or "error"}))
            return
        if kind == b"E" and line == b"E":
            if self._dirs:
                self._dirs.pop()
            self._expect(_DIR_OUT, None)
            return
        if kind == b"T":
            if not _TIME_LINE.fullmatch(line):
                self._unparsable(events, "a malformed T line")
                return
            self._expect(_TIMES, None)
            return
        match = _FILE_LINE.fullmatch(line)
        if match is None:
            self._unparsable(events, f"an unknown control line {text(line[:40])!r}")
            return
        what, mode, size, raw_name = match.groups()
        name = text(raw_name)
        if what == b"D":
            self._dirs.append(self._path(name))
            self._expect(_DIR_IN, None)
            return
        file = _File(self._path(name), name, mode.decode(), int(size))
        self._file = file
        self._data_left = file.size
        self._expect(_LINE, file)
        if not file.size:
            self._await_status = True

    # --- the receiver's stream --------------------------------------------------------
    def _receiver(self, data: bytes) -> list[TransferEvent]:
        events: list[TransferEvent] = []
        pos, end = 0, len(data)
        while pos < end and not self._broken:
            if not self._in_answer:
                byte = data[pos]
                pos += 1
                if byte == 0:
                    self._answered(None, events)
                    continue
                if byte not in (1, 2):
                    self._unparsable(events, f"an answer byte {byte}")
                    break
                self._in_answer = True
                continue
            newline = data.find(b"\n", pos)
            stop = end if newline < 0 else newline
            if len(self._answer) + stop - pos > MAX_LINE:
                self._unparsable(events, f"an error answer longer than {MAX_LINE} bytes")
                break
            self._answer += data[pos:stop]
            pos = stop
            if newline < 0:
                break
            pos += 1
            message = text(bytes(self._answer)) or "error"
            self._answer.clear()
            self._in_answer = False
            self._answered(message, events)
        return events

    def _answered(self, error: str | None, events: list[TransferEvent]) -> None:
        if not self._expected:
            return
        kind, file = self._expected.popleft()
        if file is None:
            return
        if kind == _LINE:
            if error is None:
                return  # the data follows
            if self._file is file:  # refused: no data comes
                self._file = None
                self._data_left = 0
                self._await_status = False
            events.append(self._done(file, error))
            return
        events.append(self._done(file, error or file.sender_error or "ok"))

    def _done(self, file: _File, status: str) -> TransferEvent:
        return TransferEvent(self._event, {"path": file.path, "sent_name": file.name,
                                           "mode": file.mode, "bytes": file.sent,
                                           "size": file.size, "status": status})

    def _unparsable(self, events: list[TransferEvent], reason: str) -> None:
        self._broken = True
        events.append(TransferEvent("scp.unparsable", {
            "reason": reason, "action": "passed through unparsed from here on"}))
