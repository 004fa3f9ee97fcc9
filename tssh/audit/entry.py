"""One audit event as the object written to ``audit.jsonl`` (docs/audit.md): pure.

The daemon's modules emit audit events on the ``tssh.audit`` logger with the field names
they always had in the log (``conn``, ``peer_ip``, ``local_user``, ...). The audit file
speaks one vocabulary instead, so that a whole connection can be followed by one key:
``audit_entry`` renames the known fields (``ALIASES``), turns the rest into camelCase, puts
the common fields first, and fills what the event did not say from the connection it
happened on. A field whose name says it is a secret never gets into the file, at any depth.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

# The log's field names for the common fields of docs/audit.md.
ALIASES = {
    "conn": "connectionID", "conn_id": "connectionID", "connection_id": "connectionID",
    "peer": "node", "node_id": "nodeID", "peer_ip": "address", "local_user": "localUser",
    "session": "sessionID", "session_id": "sessionID", "rule": "ruleIndex",
}
# Every line has these, in this order (null when unknown), then the event's own fields.
COMMON = ("time", "event", "connectionID", "node", "nodeID", "user", "login", "localUser",
          "address")
# A key holding any of these words is dropped with its value, wherever it is.
SECRET_WORDS = ("secret", "token", "password", "passwd", "cookie", "authorization",
                "credential", "nonce", "verifier", "private")
DEFAULT_EVENT = "audit.message"


def field_name(key: str) -> str:
    """``exit_status`` -> ``exitStatus``, ``node_id`` -> ``nodeID``; aliases first."""
    if key in ALIASES:
        return ALIASES[key]
    head, *rest = key.split("_")
    return head + "".join("ID" if part == "id" else part[:1].upper() + part[1:]
                          for part in rest)


def is_secret(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in SECRET_WORDS)


def _clean(value: object, depth: int = 0) -> object:
    """JSON-ready, secret keys dropped from nested objects; bounded depth."""
    if depth > 8:
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _clean(v, depth + 1) for k, v in value.items() if not is_secret(str(k))}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v, depth + 1) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def rfc3339(when: float) -> str:
    """UTC, milliseconds: ``2026-12-04T02:17:19.123Z``."""
    millis = int(when * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{millis:03d}Z"


def audit_entry(when: float, fields: Mapping[str, object], message: str | None = None,
                defaults: Mapping[str, object] | None = None) -> dict[str, object]:
    """The audit object of an event emitted with ``fields`` at ``when`` (unix seconds).

    ``defaults``: the common fields of the connection the event happened on, used where
    the event itself does not say.
    """
    own: dict[str, object] = {}
    for key, value in fields.items():
        if is_secret(key):
            continue
        name = field_name(key)
        if name in own and own[name] is not None and value is None:
            continue  # e.g. both "conn" and "connection_id": keep the one that says something
        own[name] = _clean(value)
    for key, value in (defaults or {}).items():
        name = field_name(key)
        if own.get(name) is None and not is_secret(key):
            own[name] = _clean(value)
    own.pop("time", None)
    entry: dict[str, object] = {"time": rfc3339(when),
                                "event": str(own.pop("event", None) or DEFAULT_EVENT)}
    for key in COMMON[2:]:
        entry[key] = own.pop(key, None)
    if message:
        entry["message"] = message
    entry.update(own)
    return entry


def to_line(entry: Mapping[str, Any]) -> bytes:
    """One line of ``audit.jsonl``: compact JSON, any text escaped to ASCII, newline."""
    return json.dumps(entry, separators=(",", ":"), default=str).encode() + b"\n"
