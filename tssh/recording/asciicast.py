"""Asciicast v2 encoding of an SSH session: the body of every upload to a recorder.

Pure: no clock, no I/O. Callers pass monotonic times; the encoder turns bytes read from the
session into complete JSON lines (bytes) ready to send.

Choices, so that recorders, ``asciinema cat`` and the web player all read the same thing:

- Header fields are Tailscale's (``sessionrecording.CastHeader``): empty ``command`` omitted,
  ``srcNodeTags`` for tagged nodes, else ``srcNodeUser`` + ``srcNodeUserID`` (a JSON number
  when the id is all digits, as tailscaled emits it, else a string). tssh adds one object,
  ``"tssh": {"stderr": bool, "input": bool}``, saying whether stderr of a non-PTY session is
  included (as ``"o"`` events) and whether ``"i"`` events are captured. Go readers ignore it.
- Events are ``[seconds, code, data]`` on one line each, compact separators (as Go's
  ``json.Marshal``), non-ASCII written as UTF-8 (as asciinema writes, ``ensure_ascii=False``),
  except U+0085, U+2028 and U+2029, escaped so that no reader splitting on Unicode line
  breaks can cut an event in two. Times are relative to the start, rounded to microseconds
  and never decreasing.
- Output is decoded with one incremental UTF-8 decoder per stream: a character split across
  reads is carried to the next event, never mangled; invalid bytes become U+FFFD (one per
  maximal invalid subsequence, Python's ``"replace"``, as asciinema does). ``finish`` flushes
  a trailing partial character as U+FFFD.
- tssh events beyond Tailscale's: ``"r"`` ``"COLSxROWS"`` on window change, ``"x"`` with the
  exit status (asciicast v3's exit event), ``"m"`` markers (e.g. dropped data), ``"i"`` only
  when the header says input is captured.

How, since every byte of a busy session's output passes here: an event's text is written
exactly as ``json.dumps(text, ensure_ascii=False)`` writes it, but valid UTF-8 is escaped as
bytes (ASCII is never decoded, nothing is encoded back), one ``bytes.replace`` per kind of
byte to escape. Invalid UTF-8, and output so dense in bytes to escape that json's single pass
is cheaper, go through json.dumps. ``benchmarks/recording_throughput.py`` measures it.
"""

from __future__ import annotations

import codecs
import json
import secrets
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from tssh.identity.base import Peer

DEFAULT_TERM = "xterm-256color"  # what tailscaled records when the client sent no TERM

# Unicode line breaks that json.dumps(ensure_ascii=False) leaves raw; str.splitlines() and
# JavaScript-era readers treat them as line ends.
_LINE_BREAKS = (("\x85", "\\u0085"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))
# The same in UTF-8: in valid UTF-8 these byte sequences are these characters and nothing else.
_UTF8_LINE_BREAKS = tuple((char, char.encode(), escape.encode()) for char, escape in _LINE_BREAKS)

# The bytes a JSON string cannot hold raw (controls, quote, backslash), each with the escape
# json.dumps writes for it. No other byte of UTF-8 text is changed by json.dumps.
_JSON_ESCAPES = {
    byte: json.dumps(chr(byte)).encode("ascii")[1:-1]
    for byte in (*range(0x20), ord('"'), ord("\\"))
}
_NOT_ESCAPED = bytes(byte for byte in range(256) if byte not in _JSON_ESCAPES)
# Usual in terminal output; the backslash first, as the other escapes add backslashes.
_FREQUENT = b"\\\r\n\x1b\t\"\x08\x07"
_FREQUENT_ESCAPES = tuple((bytes((byte,)), _JSON_ESCAPES[byte]) for byte in _FREQUENT)
_RARE_ESCAPES = {
    byte: (bytes((byte,)), escape)
    for byte, escape in _JSON_ESCAPES.items()
    if byte not in _FREQUENT
}
# Measured (x86-64, CPython 3.11): escaping bytes costs a bytes.replace per kind present, ~12 ns
# per occurrence, plus some Python per kind; json.dumps costs ~2 ns per character. So json.dumps
# is cheaper below _SHORT bytes, and with more than one byte to escape in _DENSE.
_SHORT = 1024
_DENSE = 8
# Up to _EXACT bytes, one bytes.translate pass (~0.4 ns a byte) lists the bytes to escape.
# Beyond, each kind is searched for by memchr (bytes.__contains__, ~30 times faster a byte,
# ~50 ns a call), and the density is judged on the first _SAMPLE bytes. (Output crafted with
# a plain sample and dense escapes after it costs up to ~4x json.dumps: still less per byte
# than any random binary output.)
_EXACT = 16 * 1024
_SAMPLE = 4096

# json.dumps(text, ensure_ascii=False) without building an encoder per call (json.dumps does
# when given options: a third of its time on a short event).
_json_string = json.JSONEncoder(ensure_ascii=False).encode


def _escape_line_breaks(text: str) -> str:
    # str.replace after a membership test: ~15x faster than str.translate on long text.
    for char, escape in _LINE_BREAKS:
        if char in text:
            text = text.replace(char, escape)
    return text


def _escape_json_bytes(utf8: bytes) -> bytes | None:
    """What json.dumps(ensure_ascii=False) writes between the quotes for valid UTF-8 bytes.

    Done on bytes, as the bytes to escape are ASCII and never inside a multibyte character:
    one bytes.replace per kind present. None when json.dumps on the text is cheaper (short
    input with bytes to escape, or dense ones); either way the result is the same.
    """
    if len(utf8) <= _EXACT:
        escaped = utf8.translate(None, _NOT_ESCAPED)
        if not escaped:
            return utf8
        if len(utf8) < _SHORT or len(escaped) * _DENSE > len(utf8):
            return None
        kinds = [pair for pair in _FREQUENT_ESCAPES if pair[0] in escaped]
        kinds += map(_RARE_ESCAPES.__getitem__, set(escaped.translate(None, _FREQUENT)))
    else:
        if len(utf8[:_SAMPLE].translate(None, _NOT_ESCAPED)) * _DENSE > _SAMPLE:
            return None
        # replace() finds a kind absent in one memchr pass; the rare ones are tested first.
        kinds = [*_FREQUENT_ESCAPES]
        kinds += [pair for pair in _RARE_ESCAPES.values() if pair[0] in utf8]
    for byte, escape in kinds:
        utf8 = utf8.replace(byte, escape)
    return utf8


def format_connection_id(when: datetime, nonce: bytes) -> str:
    """``ssh-conn-<UTC YYYYMMDDTHHMMSS>-<hex nonce>``, tailscaled's format (5 bytes of nonce)."""
    if len(nonce) != 5:
        raise ValueError("connection id nonce must be 5 bytes")
    return f"ssh-conn-{when.astimezone(UTC):%Y%m%dT%H%M%S}-{nonce.hex()}"


def new_connection_id() -> str:
    """A fresh connection id; shared by every session multiplexed on one SSH connection."""
    return format_connection_id(datetime.fromtimestamp(time.time(), UTC), secrets.token_bytes(5))


@dataclass(frozen=True)
class CastHeader:
    """The first line of a recording: who connected, as whom, to run what."""

    width: int
    height: int
    timestamp: int  # unix seconds at the start
    src_node: str  # FQDN, no trailing dot
    src_node_id: str
    ssh_user: str  # as presented by the client
    local_user: str
    connection_id: str
    command: str = ""
    src_node_tags: tuple[str, ...] = ()
    src_node_user: str | None = None
    src_node_user_id: str | None = None
    term: str = DEFAULT_TERM
    includes_stderr: bool = False  # non-PTY session: stderr recorded as "o" events
    includes_input: bool = False  # "i" events recorded

    @classmethod
    def for_session(
        cls,
        src: Peer,
        *,
        ssh_user: str,
        local_user: str,
        connection_id: str,
        started_at: float,
        width: int = 0,
        height: int = 0,
        command: str = "",
        term: str | None = None,
        includes_stderr: bool = False,
        includes_input: bool = False,
    ) -> CastHeader:
        """The header for a session of ``src`` (tagged nodes carry tags, others their user)."""
        return cls(
            width=width,
            height=height,
            timestamp=int(started_at),
            src_node=src.name.removesuffix("."),
            src_node_id=src.id,
            ssh_user=ssh_user,
            local_user=local_user,
            connection_id=connection_id,
            command=command,
            src_node_tags=src.tags,
            src_node_user=None if src.is_tagged else src.user,
            src_node_user_id=None if src.is_tagged else src.user_id,
            term=term or DEFAULT_TERM,
            includes_stderr=includes_stderr,
            includes_input=includes_input,
        )

    def to_json(self) -> dict[str, Any]:
        """The header object, keys in tailscaled's order, tssh's marks last."""
        obj: dict[str, Any] = {
            "version": 2,
            "width": self.width,
            "height": self.height,
            "timestamp": self.timestamp,
        }
        if self.command:
            obj["command"] = self.command
        obj["srcNode"] = self.src_node
        obj["srcNodeID"] = self.src_node_id
        if self.src_node_tags:
            obj["srcNodeTags"] = list(self.src_node_tags)
        else:
            if self.src_node_user_id:
                uid = self.src_node_user_id
                obj["srcNodeUserID"] = int(uid) if uid.isascii() and uid.isdigit() else uid
            if self.src_node_user:
                obj["srcNodeUser"] = self.src_node_user
        obj["env"] = {"TERM": self.term}
        obj["sshUser"] = self.ssh_user
        obj["localUser"] = self.local_user
        obj["connectionID"] = self.connection_id
        obj["tssh"] = {"stderr": self.includes_stderr, "input": self.includes_input}
        return obj


# The header line the daemon sends is at most HEADER_LIMIT bytes: the recorder node refuses a
# header line over 64 KiB (docs/recorder.md) and tsrecorder publishes no limit, so stay well
# under both. Only two fields come from the client and can be long: TERM and the command.
HEADER_LIMIT = 16 * 1024
TERM_LIMIT = 128  # characters; real terminal names are under 40
COMMAND_PART = 16 * 1024  # characters of an over-long command per "m" event


class HeaderTooLarge(ValueError):
    """The header cannot be brought under HEADER_LIMIT by cutting TERM and the command."""


@dataclass(frozen=True)
class FittedHeader:
    """A header within HEADER_LIMIT, and the markers that carry what was cut from it."""

    header: CastHeader
    markers: tuple[str, ...] = ()


def fit_header(header: CastHeader, limit: int = HEADER_LIMIT) -> FittedHeader:
    """The rule for client-supplied fields too long for a header line (docs/recording.md):
    TERM is cut to TERM_LIMIT characters; a command that does not fit is cut, with a note
    saying so, and the whole command follows as ``"m"`` events right after the header, so
    the recording still says exactly what ran. Raises HeaderTooLarge if even that fails."""
    fitted = header
    if len(header.term) > TERM_LIMIT:
        fitted = replace(fitted, term=header.term[:TERM_LIMIT])
    if len(_json_line(fitted.to_json())) <= limit:
        return FittedHeader(fitted)
    command = header.command
    parts = [command[i:i + COMMAND_PART] for i in range(0, len(command), COMMAND_PART)]
    markers = tuple(f"tssh: the session's command, part {n} of {len(parts)}: {part}"
                    for n, part in enumerate(parts, 1))
    note = f" [tssh: command cut; all {len(command)} characters follow as \"m\" events]"
    low, high = 0, len(command)  # the longest prefix that fits, by bisection
    while low < high:
        mid = (low + high + 1) // 2
        if len(_json_line(replace(fitted, command=command[:mid] + note).to_json())) <= limit:
            low = mid
        else:
            high = mid - 1
    cut = replace(fitted, command=command[:low] + note)
    if len(_json_line(cut.to_json())) > limit:
        raise HeaderTooLarge(
            f"the recording's header would be over {limit} bytes even without the command")
    return FittedHeader(cut, markers)


def _json_line(obj: object) -> bytes:
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    # Lone surrogates can only come from header strings (decoders never produce them).
    return (_escape_line_breaks(text) + "\n").encode("utf-8", "replace")


def _format_seconds(seconds: float) -> bytes:
    return (b"%.6f" % seconds).rstrip(b"0").rstrip(b".") or b"0"


class _Utf8Stream:
    """One stream's incremental UTF-8 decoding (Python's ``"replace"``), keeping the bytes.

    What ``codecs.getincrementaldecoder("utf-8")("replace")`` does (it is this same
    ``utf_8_decode`` with the same carry-over), but it also says which input bytes the text
    came from, so that valid UTF-8 is escaped as bytes and never encoded back.
    """

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""  # the start of a character split across reads

    def decode(self, data: bytes, final: bool = False) -> tuple[bytes | None, str | None]:
        """``(utf8, text)`` for the characters completed by ``data``.

        ``utf8`` is their UTF-8 encoding when the input was valid (it is the input), else
        None; ``text`` is the decoded text, None when ``utf8`` is ASCII (so it was not built).
        """
        pending = self._pending
        if pending:
            data = pending + data
        elif data.isascii():
            return data, None
        text, consumed = codecs.utf_8_decode(data, "replace", final)
        self._pending = data[consumed:]
        if "\ufffd" in text:  # invalid input (or a real U+FFFD): the text is what counts
            return None, text
        return (data if consumed == len(data) else data[:consumed]), text


class CastEncoder:
    """Turns a session's byte streams into asciicast v2 lines.

    Every method returns the bytes to append to the recording, possibly empty (for instance
    when a read held only the first bytes of a UTF-8 character).
    """

    def __init__(self, header: CastHeader, start: float) -> None:
        self.header = header
        self._start = start
        self._last = 0.0
        self._stdout = _Utf8Stream()
        self._stderr = _Utf8Stream()
        self._stdin = _Utf8Stream()

    def header_line(self) -> bytes:
        return _json_line(self.header.to_json())

    def output(self, now: float, data: bytes) -> bytes:
        """Terminal output (PTY) or stdout (non-PTY), as ``"o"``."""
        return self._decoded(now, b"o", self._stdout, data)

    def stderr(self, now: float, data: bytes) -> bytes:
        """Stderr of a non-PTY session, as ``"o"``; nothing unless the header includes it."""
        if not self.header.includes_stderr:
            return b""
        return self._decoded(now, b"o", self._stderr, data)

    def input(self, now: float, data: bytes) -> bytes:
        """Keyboard input, as ``"i"``; nothing unless the header says input is captured."""
        if not self.header.includes_input:
            return b""
        return self._decoded(now, b"i", self._stdin, data)

    def resize(self, now: float, cols: int, rows: int) -> bytes:
        return self._event(now, b"r", f"{cols}x{rows}")

    def marker(self, now: float, label: str) -> bytes:
        return self._event(now, b"m", label)

    def exit(self, now: float, status: int) -> bytes:
        """The exit status, after flushing any partial character left in the streams."""
        return self.finish(now) + self._event(now, b"x", str(status))

    def finish(self, now: float) -> bytes:
        """Flush partial trailing characters (as U+FFFD); later output starts fresh."""
        out = b""
        for code, stream in ((b"o", self._stdout), (b"o", self._stderr), (b"i", self._stdin)):
            out += self._decoded(now, code, stream, b"", final=True)
        return out

    def elapsed(self, now: float) -> float:
        """Seconds since the start, rounded as written, never less than the previous event."""
        seconds = round(max(now - self._start, self._last), 6)
        self._last = seconds
        return seconds

    def _decoded(
        self, now: float, code: bytes, stream: _Utf8Stream, data: bytes, *, final: bool = False,
    ) -> bytes:
        utf8, text = stream.decode(data, final)
        if utf8 is not None:
            if not utf8:
                return b""
            body = _escape_json_bytes(utf8)
            if body is not None:
                if text is not None:  # not ASCII: may hold Unicode line breaks
                    for char, raw, escape in _UTF8_LINE_BREAKS:
                        if char in text:
                            body = body.replace(raw, escape)
                seconds = _format_seconds(self.elapsed(now))
                return b"".join((b"[", seconds, b',"', code, b'","', body, b'"]\n'))
            if text is None:
                text = utf8.decode("ascii")
        if not text:
            return b""
        return self._event(now, code, text)

    def _event(self, now: float, code: bytes, text: str) -> bytes:
        seconds = _format_seconds(self.elapsed(now))
        body = _json_string(text)
        if not body.isascii():
            body = _escape_line_breaks(body)
        # "replace": a marker's label may hold lone surrogates; decoded text never does.
        utf8 = body.encode("utf-8", "replace")
        return b"".join((b"[", seconds, b',"', code, b'",', utf8, b"]\n"))
