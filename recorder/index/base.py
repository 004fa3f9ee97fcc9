"""The index interface: metadata of every recording, queried by the API.

The index is a cache of storage (``tssh-recorder reindex`` rebuilds it from the ``.json``
documents); SQLite in the state dir by default, PostgreSQL for a fleet (next to come).
"""

from __future__ import annotations

import abc
import base64
import binascii
from dataclasses import dataclass

from recorder.model import RecordingMeta

MAX_LIMIT = 500
DEFAULT_LIMIT = 50


@dataclass(frozen=True)
class Cursor:
    """Position after the last row of a page: rows are ordered by (start, id), newest first."""

    start: float
    id: str

    def encode(self) -> str:
        return base64.urlsafe_b64encode(f"{self.start!r}|{self.id}".encode()).decode()

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            start, _, rid = base64.urlsafe_b64decode(text.encode()).decode().partition("|")
            return cls(float(start), rid)
        except (ValueError, binascii.Error, UnicodeDecodeError) as e:
            raise ValueError("invalid cursor") from e


@dataclass(frozen=True)
class Query:
    node: str | None = None  # node name or id
    user: str | None = None  # the client's login (srcNodeUser), sshUser, localUser, uploader's
    since: float | None = None  # start >= since
    until: float | None = None  # start < until
    live: bool | None = None
    q: str | None = None  # free text; a substring match on metadata for now
    limit: int = DEFAULT_LIMIT
    cursor: Cursor | None = None


@dataclass(frozen=True)
class Page:
    recordings: list[RecordingMeta]
    next: Cursor | None


class Index(abc.ABC):
    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def put(self, meta: RecordingMeta) -> None:
        """Inserts or replaces the row of ``meta.id``."""

    @abc.abstractmethod
    async def get(self, recording_id: str) -> RecordingMeta | None: ...

    @abc.abstractmethod
    async def query(self, query: Query) -> Page: ...

    @abc.abstractmethod
    async def retain(self, ids: set[str]) -> int:
        """Deletes every row whose id is not in ``ids``; returns how many (reindex: the index
        holds exactly what storage holds)."""

    @abc.abstractmethod
    async def open_recordings(self, recorder: str) -> list[RecordingMeta]:
        """Recordings this recorder (by public key) left ``live``: to finish after a crash."""

    @abc.abstractmethod
    async def close(self) -> None: ...
