"""API tokens for automation: stored as SHA-256 hashes in ``<state dir>/tokens.json``.

A token is shown once, at creation. The file holds only hashes, so reading it does not grant
access; revoking removes the hash.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from recorder.errors import TokenError
from recorder.model import iso

PREFIX = "tsrec_"


@dataclass(frozen=True)
class TokenRecord:
    id: str
    name: str
    sha256: str
    created: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._cache: tuple[float, list[TokenRecord]] | None = None

    def records(self) -> list[TokenRecord]:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return []
        if self._cache is not None and self._cache[0] == mtime:
            return self._cache[1]
        try:
            doc = json.loads(self.path.read_text())
            records = [TokenRecord(**t) for t in doc.get("tokens", [])]
        except (OSError, ValueError, TypeError) as e:
            raise TokenError(f"cannot read the token file {self.path}: {e}") from e
        self._cache = (mtime, records)
        return records

    def check(self, token: str) -> TokenRecord | None:
        digest = token_hash(token)
        for record in self.records():
            if hmac.compare_digest(record.sha256, digest):
                return record
        return None

    def create(self, name: str) -> tuple[TokenRecord, str]:
        token_id = secrets.token_hex(4)
        token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        record = TokenRecord(token_id, name, token_hash(token), iso(time.time()) or "")
        self._save([*self.records(), record])
        return record, token

    def revoke(self, token_id: str) -> None:
        records = self.records()
        kept = [r for r in records if r.id != token_id]
        if len(kept) == len(records):
            raise TokenError(f"no token with id {token_id!r} (see `tssh-recorder token list`)")
        self._save(kept)

    def _save(self, records: list[TokenRecord]) -> None:
        doc = {"tokens": [r.__dict__ for r in records]}
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as e:
            raise TokenError(f"cannot write the token file {self.path}: {e}") from e
        self._cache = None
