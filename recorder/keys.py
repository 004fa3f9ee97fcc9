"""Recording ids and storage keys: strict syntax, so no request can name a path.

The id is minted by the recorder (start time plus 64 random bits) and only ever looked up in
the index; the storage key is built from the uploader's node id (from the identity backend) and
the header's connection id, each checked against a conservative character set first.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from recorder.errors import InvalidRecordingIdError, StorageError

RECORDING_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{16}$")
_KEY_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"


def stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime(STAMP_FORMAT)


def new_recording_id(start: float) -> str:
    return f"{stamp(start)}-{secrets.token_hex(8)}"


def check_recording_id(value: str) -> str:
    if not RECORDING_ID.match(value):
        raise InvalidRecordingIdError(f"invalid recording id {value[:80]!r}")
    return value


def safe_part(value: str) -> bool:
    return bool(_KEY_PART.match(value)) and ".." not in value


def storage_key(node_id: str, start: float, connection_id: str, attempt: int = 0) -> str:
    """``<node id>/<UTC start>-<connection id>``; ``attempt`` > 0 adds ``.N`` on a clash."""
    if not safe_part(node_id):
        raise StorageError(f"node id {node_id!r} cannot be used in a storage key")
    if not safe_part(connection_id):
        raise StorageError(f"connection id {connection_id!r} cannot be used in a storage key")
    suffix = f".{attempt}" if attempt else ""
    return f"{node_id}/{stamp(start)}-{connection_id}{suffix}"


def check_key(key: str) -> str:
    """Accepts only keys of the shape ``storage_key`` builds (reindex reads them back)."""
    parts = key.split("/")
    if len(parts) != 2 or not all(safe_part(p) for p in parts):
        raise StorageError(f"invalid storage key {key[:200]!r}")
    return key
