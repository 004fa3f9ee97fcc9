"""The index interface: metadata and output text of every recording, queried by the API.

The index is a cache of storage (``tssh-recorder reindex`` rebuilds it from the ``.json``
documents and the casts); SQLite in the state dir by default, PostgreSQL for a fleet
(docs/recorder.md, "Fleet"). The text of a recording is a sequence of lines
(``recorder/text.py``), appended while it streams; a search (``recorder/search.py``,
docs/recorder.md "Search") matches lines.
"""

from __future__ import annotations

import abc
import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from recorder.model import Hold, RecordingMeta
from recorder.text import Line

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
MAX_MATCHES = 5  # hits returned per recording of a search


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
    q: str | None = None  # words and "phrases" (recorder/search.py)
    connection: str | None = None  # the header's connectionID: every recording of one SSH
    # connection (its sessions, and the recordings a failover split one session into)
    limit: int = DEFAULT_LIMIT
    cursor: Cursor | None = None


@dataclass(frozen=True)
class Match:
    """A line of output that matches a search, and when it was first shown."""

    time: float
    text: str

    def to_json(self) -> dict[str, float | str]:
        return {"time": self.time, "text": self.text}


@dataclass(frozen=True)
class Page:
    recordings: list[RecordingMeta]
    next: Cursor | None
    # with ``q``: the first MAX_MATCHES matching lines of each recording, in time order (empty
    # when only its metadata matched)
    matches: dict[str, tuple[Match, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class TextUpdate:
    """New output text of one recording: ``lines`` are complete and appended in order;
    ``partial`` is the line still being written, shown to searches until the next update
    replaces it (with its complete form among ``lines``, or a newer ``partial``)."""

    recording_id: str
    lines: Sequence[Line]
    partial: Line | None = None


def row_meta(document: str, hold: str | None) -> RecordingMeta:
    """A recording from its index row: the metadata document and the hold column."""
    meta = RecordingMeta.from_json(json.loads(document))
    return meta if hold is None else meta.with_(hold=Hold.parse(hold))


def hold_column(hold: Hold | None) -> str | None:
    return None if hold is None else json.dumps(hold.to_json(), ensure_ascii=False)


class Index(abc.ABC):
    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the index is, for logs (never a password)."""

    @abc.abstractmethod
    async def put(self, meta: RecordingMeta) -> None:
        """Inserts or replaces the row of ``meta.id``."""

    @abc.abstractmethod
    async def get(self, recording_id: str) -> RecordingMeta | None: ...

    @abc.abstractmethod
    async def query(self, query: Query) -> Page:
        """Recordings newest first; with ``q`` only those with a matching line (or metadata),
        and their matches."""

    @abc.abstractmethod
    async def add_text(self, updates: Sequence[TextUpdate]) -> None:
        """Applies the updates in one transaction. An update for a recording not in the
        index is dropped (the recording row is put first, when it begins)."""

    @abc.abstractmethod
    async def clear_text(self, recording_id: str) -> None:
        """Deletes a recording's output text (its metadata stays searchable), before the
        text is built again from storage."""

    @abc.abstractmethod
    async def text(self, recording_id: str) -> list[Line]:
        """A recording's indexed output lines in order, its partial line last (a check that
        live indexing built what ``reindex`` builds)."""

    @abc.abstractmethod
    async def compact(self) -> None:
        """After a bulk build (reindex): reorganizes the text index for the fastest searches
        (may do nothing for an index that keeps itself so)."""

    @abc.abstractmethod
    async def retain(self, ids: set[str]) -> int:
        """Deletes every row (and its text) whose id is not in ``ids``; returns how many
        (reindex: the index holds exactly what storage holds)."""

    @abc.abstractmethod
    async def delete(self, recording_id: str) -> bool:
        """Deletes a recording's row and text (retention); False when there was none."""

    @abc.abstractmethod
    async def set_hold(self, recording_id: str, hold: Hold | None) -> bool:
        """Sets (or clears) a recording's hold column, which ``put`` leaves as it is: the
        copy of its storage hold document that the API shows; False when there is no row."""

    @abc.abstractmethod
    async def open_recordings(self, recorder: str) -> list[RecordingMeta]:
        """Recordings this recorder (by public key) left ``live``: to finish after a crash."""

    async def heartbeat(self, recorder: str) -> None:
        """Records that the replica ``recorder`` (its public key) is alive, in an index that
        replicas share (docs/recorder.md, "Fleet"); a private index has nothing to tell."""
        return None

    async def claim_orphans(self, recorder: str, stale_after: float) -> list[RecordingMeta]:
        """Recordings left ``live`` by replicas whose heartbeat is older than ``stale_after``
        seconds, now owned by ``recorder``, which is to finish them (each is claimed by one
        replica only; one that dies in turn before finishing leaves them to the next). A
        private index has no other replica: nothing."""
        return []

    @abc.abstractmethod
    async def close(self) -> None: ...
