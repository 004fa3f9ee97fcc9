"""Audit events to the systemd journal, over its native protocol (docs/audit.md).

The protocol is one datagram per entry to ``/run/systemd/journal/socket``, each field
``NAME=value\\n``, or ``NAME\\n`` + the value's length as 64-bit little endian + value + ``\\n``
when the value holds a newline (systemd's "Native Journal Protocol"). That is a dozen lines,
so no library: ``datagram`` encodes, ``Journal`` sends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import struct
from collections.abc import Mapping
from pathlib import Path

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
IDENTIFIER = "tssh"
SEND_TIMEOUT = 1.0  # seconds; journald applies backpressure when it falls behind
_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")

log = logging.getLogger("tssh.audit_sink")


class JournalFieldError(ValueError):
    """A field name the journal would reject: uppercase letters, digits, ``_``; not first."""


def datagram(fields: Mapping[str, str]) -> bytes:
    """One journal entry in the native protocol."""
    out = bytearray()
    for name, value in fields.items():
        if not _NAME.fullmatch(name):
            raise JournalFieldError(f"{name!r} is not a journal field name")
        data = value.encode("utf-8", "backslashreplace")
        if b"\n" in data:
            out += name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name.encode() + b"=" + data + b"\n"
    return bytes(out)


def audit_fields(entry: Mapping[str, object], line: bytes, priority: int) -> dict[str, str]:
    """The journal fields of one audit entry: a message, the event and connection as fields
    to filter on (``journalctl TSSH_EVENT=sftp.close``), and the whole JSON line."""
    message = entry.get("message") or entry.get("event")
    fields = {"MESSAGE": f"{entry.get('event')}: {message}", "PRIORITY": str(priority),
              "SYSLOG_IDENTIFIER": IDENTIFIER, "TSSH_EVENT": str(entry.get("event"))}
    if entry.get("connectionID"):
        fields["TSSH_CONNECTION_ID"] = str(entry["connectionID"])
    fields["TSSH_AUDIT"] = line.decode().rstrip("\n")
    return fields


def syslog_priority(level: int) -> int:
    """Python's logging level as syslog's (journal) priority."""
    if level >= logging.CRITICAL:
        return 2
    if level >= logging.ERROR:
        return 3
    if level >= logging.WARNING:
        return 4
    if level >= logging.INFO:
        return 6
    return 7


class Journal:
    """A datagram socket to the journal; ``send`` never raises (the file is the record)."""

    def __init__(self, path: Path = JOURNAL_SOCKET) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.settimeout(SEND_TIMEOUT)
        self._failing = False

    @classmethod
    def if_present(cls, path: Path = JOURNAL_SOCKET) -> Journal | None:
        """A journal client when the journal's socket exists (systemd runs), else None."""
        return cls(path) if os.path.exists(path) else None

    def send(self, fields: Mapping[str, str]) -> bool:
        try:
            self._sock.sendto(datagram(fields), str(self.path))
        except OSError as e:
            if not self._failing:  # once per outage, not once per event
                log.warning("cannot write audit events to the journal",
                            extra={"path": str(self.path), "error": e.strerror or str(e)})
            self._failing = True
            return False
        self._failing = False
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()
