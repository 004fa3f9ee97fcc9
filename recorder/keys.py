"""Recording ids and storage keys: strict syntax, so no request can name a path.

The id is minted by the recorder (start time plus 64 random bits) and only ever looked up in
the index; the storage key is built from the uploader's node id (from the identity backend) and
the header's connection id, each checked against a conservative character set first. On a
clash (two recordings of one SSH connection started in the same second) the name gets a random
suffix, so any number of sessions per connection and second can record (docs/recorder.md,
"Storage").
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from recorder.errors import InvalidRecordingIdError, StorageError

RECORDING_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{16}$")
_KEY_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# the file name part: UTC stamp (16) + "-" + connection id (128) + a clash suffix (".N" of
# older recorders, or "." + 8 hex); well under the 255 bytes of a file name with ".cast"
_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,191}$")
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
CLASH_SUFFIX_BYTES = 4  # 8 hex digits: two clashing names collide with odds 1 in 2**32


def stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime(STAMP_FORMAT)


def new_recording_id(start: float) -> str:
    return f"{stamp(start)}-{secrets.token_hex(8)}"


def check_recording_id(value: str) -> str:
    if not RECORDING_ID.fullmatch(value):
        raise InvalidRecordingIdError(f"invalid recording id {value[:80]!r}")
    return value


def safe_part(value: str) -> bool:
    return bool(_KEY_PART.fullmatch(value)) and ".." not in value


def storage_key(node_id: str, start: float, connection_id: str, attempt: int = 0) -> str:
    """``<node id>/<UTC start>-<connection id>`` (Tailscale's layout) for ``attempt`` 0;
    later attempts, after a clash, add ``.`` and 8 random hex digits."""
    if not safe_part(node_id):
        raise StorageError(f"node id {node_id!r} cannot be used in a storage key")
    if not safe_part(connection_id):
        raise StorageError(f"connection id {connection_id!r} cannot be used in a storage key")
    suffix = f".{secrets.token_hex(CLASH_SUFFIX_BYTES)}" if attempt else ""
    return f"{node_id}/{stamp(start)}-{connection_id}{suffix}"


def event_key(node_id: str, t: float) -> str:
    """``<node id>/<UTC time>-event-<16 hex>``: one ``/v2/event`` document. It has no
    metadata document, so it is never listed or reindexed as a recording."""
    if not safe_part(node_id):
        raise StorageError(f"node id {node_id!r} cannot be used in a storage key")
    return f"{node_id}/{stamp(t)}-event-{secrets.token_hex(8)}"


def check_key(key: str) -> str:
    """Accepts only keys of the shape ``storage_key`` builds, with or without a clash suffix
    (reindex reads them back)."""
    parts = key.split("/")
    if (
        len(parts) != 2 or not safe_part(parts[0])
        or not _KEY_NAME.fullmatch(parts[1]) or ".." in parts[1]
    ):
        raise StorageError(f"invalid storage key {key[:200]!r}")
    return key
