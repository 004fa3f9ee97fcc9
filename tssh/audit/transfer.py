"""What the transfer parsers (``tssh.audit.sftp``, ``tssh.audit.scp``) hand back: pure.

Both are sans-I/O: the session feeds each direction's bytes as they pass (``client`` for
client to server, ``server`` for the way back), in the order they pass, and gets events;
``close`` at the end of the session reports what was still under way. Neither may ever
raise on what a peer sends, nor hold more than a bounded amount of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class TransferEvent:
    """One audit event: ``event`` (``sftp.close``, ``scp.upload``, ...) and its fields, named
    in the log's snake_case (the audit file renames them: docs/audit.md)."""

    event: str
    fields: dict[str, object] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for a recording's marker and the log: ``sftp.close path=... bytes...``."""
        parts = [self.event]
        for key, value in self.fields.items():
            if value is not None and value != "":
                parts.append(f"{key}={value}")
        return " ".join(parts)


class TransferParser(Protocol):
    def client(self, data: bytes) -> list[TransferEvent]: ...

    def server(self, data: bytes) -> list[TransferEvent]: ...

    def close(self) -> list[TransferEvent]: ...


def text(raw: bytes, limit: int = 4096) -> str:
    """A path or message from the wire as text: UTF-8, anything else escaped, cut at
    ``limit`` characters (a path is at most PATH_MAX; a hostile one costs no more)."""
    decoded = raw[:limit * 4].decode("utf-8", "backslashreplace")
    return decoded if len(decoded) <= limit else decoded[:limit] + "..."
