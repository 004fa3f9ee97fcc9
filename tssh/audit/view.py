"""Choosing and presenting audit entries for ``tssh audit tail`` (docs/audit.md): pure.

A readable line is ``time who what``: who is the tailnet user (or the node, or the address),
from which node, as which local user; what is the event and its own fields. Every character
a peer could have chosen (a file name, a command) is shown with control characters escaped,
so an entry cannot move the cursor or retitle the terminal of whoever reads the log.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from tssh.audit.entry import COMMON

_RELATIVE = re.compile(r"([0-9]+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Not repeated in "what": said by "who", or noise in a terminal.
_QUIET = {*COMMON, "message", "sessionID"}


class SinceError(ValueError):
    """``--since`` is neither RFC 3339 nor a duration."""


def parse_since(text: str, now: float) -> float:
    """``--since``: an RFC 3339 time (``2026-12-04T02:00:00Z``; no zone: UTC), or how long
    ago (``90s``, ``15m``, ``2h``, ``1d``); unix seconds."""
    text = text.strip()
    relative = _RELATIVE.fullmatch(text)
    if relative:
        return now - int(relative.group(1)) * _UNITS[relative.group(2)]
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise SinceError(f"--since {text!r}: give an RFC 3339 time such as "
                         "2026-12-04T02:00:00Z, or a duration such as 15m, 2h or 1d") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def entry_time(entry: Mapping[str, object]) -> float | None:
    value = entry.get("time")
    if not isinstance(value, str):
        return None
    try:
        return datetime.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class AuditFilter:
    since: float | None = None
    connection: str | None = None

    def matches(self, entry: Mapping[str, object]) -> bool:
        if self.connection is not None and entry.get("connectionID") != self.connection:
            return False
        if self.since is not None:
            when = entry_time(entry)
            if when is None or when < self.since:
                return False
        return True


def printable(value: object) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def _who(entry: Mapping[str, object]) -> str:
    user, node, address = entry.get("user"), entry.get("node"), entry.get("address")
    who = str(user or node or address or "-")
    if user and node:
        who += f" ({node})"
    local = entry.get("localUser") or entry.get("login")
    if local:
        who += f" as {local}"
    return who


def _value(value: object) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def render(entry: Mapping[str, object]) -> str:
    """One readable line: ``time who event field=value ... [connectionID]``."""
    details = [f"{key}={_value(value)}" for key, value in entry.items()
               if key not in _QUIET and value is not None and value != ""]
    parts = [str(entry.get("time", "-")), _who(entry), str(entry.get("event", "-")), *details]
    if entry.get("connectionID"):
        parts.append(f"[{entry['connectionID']}]")
    return printable(" ".join(parts))
