"""Seals: a manifest of a finished recording signed with the recorder's Ed25519 key.

The manifest binds the stored bytes (SHA-256 and size) to the metadata a reader relies on
(id, key, times, status, exit status, uploader identity, header). ``verify`` recomputes all of
it from storage, so changing one byte of the cast or one field of the ``.json`` is detected.
Everything here is pure except ``load_or_create_key`` at the bottom (the key file I/O).
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from recorder.errors import SealError
from recorder.model import RecordingMeta, iso

ALGORITHM = "ed25519"


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def public_key_text(key: SigningKey) -> str:
    return b64(bytes(key.verify_key))


def manifest(meta: RecordingMeta, sha256: str) -> dict[str, Any]:
    return {
        "id": meta.id,
        "storageKey": meta.key,
        "sha256": sha256,
        "size": meta.size,
        "start": iso(meta.start),
        "end": iso(meta.end),
        "status": meta.status,
        "exitStatus": meta.exit_status,
        "node": meta.node.to_json(),
        "header": meta.header,
        "warnings": list(meta.warnings),
        "recorder": meta.recorder,
    }


def seal(meta: RecordingMeta, sha256: str, key: SigningKey) -> dict[str, Any]:
    body = manifest(meta, sha256)
    signature = key.sign(canonical(body)).signature
    return {
        "algorithm": ALGORITHM,
        "publicKey": public_key_text(key),
        "manifest": body,
        "signature": b64(signature),
    }


@dataclass(frozen=True)
class Verification:
    ok: bool
    problems: tuple[str, ...]
    sha256: str
    size: int
    signed_by: str | None
    trusted: bool  # signed by this recorder's own key

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "problems": list(self.problems), "sha256": self.sha256,
            "size": self.size, "signedBy": self.signed_by, "trustedKey": self.trusted,
        }


def verify(
    meta: RecordingMeta, sha256: str, size: int, trusted_keys: frozenset[str]
) -> Verification:
    """Checks ``meta`` (as read back from storage) and the stored bytes against its seal."""
    problems: list[str] = []
    s = meta.seal
    if not isinstance(s, dict) or s.get("algorithm") != ALGORITHM:
        return Verification(False, ("recording is not sealed",), sha256, size, None, False)
    body = s.get("manifest")
    signer = s.get("publicKey")
    if not isinstance(body, dict) or not isinstance(signer, str):
        return Verification(False, ("seal is malformed",), sha256, size, None, False)
    try:
        VerifyKey(base64.b64decode(signer, validate=True)).verify(
            canonical(body), base64.b64decode(str(s.get("signature")), validate=True)
        )
    except (BadSignatureError, ValueError, TypeError):
        problems.append("signature does not match the sealed manifest")
    if body.get("sha256") != sha256:
        problems.append("stored bytes do not match the sealed SHA-256")
    if body.get("size") != size:
        problems.append(f"stored size {size} differs from sealed size {body.get('size')}")
    expected = manifest(meta, str(body.get("sha256")))
    for name, value in expected.items():
        if name != "sha256" and body.get(name) != value:
            problems.append(f"metadata field {name!r} differs from the sealed manifest")
    trusted = signer in trusted_keys
    if not trusted:
        problems.append("sealed by a key this recorder does not trust")
    return Verification(not problems, tuple(problems), sha256, size, signer, trusted)


def load_or_create_key(path: Path) -> SigningKey:
    """The recorder's signing key: created once (mode 0600), then read on every start."""
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            key = SigningKey.generate()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(bytes(key))
                f.flush()
                os.fsync(f.fileno())
            return key
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise SealError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
        raw = path.read_bytes()
    except OSError as e:
        raise SealError(f"cannot create or read the signing key {path}: {e}") from e
    if len(raw) != 32:
        raise SealError(f"{path} is not an Ed25519 seed (32 bytes)")
    return SigningKey(raw)
