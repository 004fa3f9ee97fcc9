"""The storage interface: where recording bytes and their metadata documents live.

A recording is addressed by its *key*, ``<uploading node id>/<UTC start>-<connection id>``;
the backend stores ``KEY.cast`` (the asciicast bytes, verbatim) and ``KEY.json`` (the metadata
document, seal included) beside it. Keys are built by the recorder from validated parts only
(see ``recorder.keys``), never from a request path.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass


class RecordingWriter(abc.ABC):
    """Appends to one recording. ``sync`` is the durability point an ack stands for."""

    size: int  # bytes handed to ``write`` so far

    @abc.abstractmethod
    async def write(self, data: bytes) -> None:
        """Appends ``data``; readers of the recording may see it before ``sync``."""

    @abc.abstractmethod
    async def sync(self) -> int:
        """Makes every written byte durable; returns how many bytes that is."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Syncs and releases the recording; the backend may finish its upload afterwards."""

    @abc.abstractmethod
    def sha256(self) -> str:
        """Hex SHA-256 of every byte written so far (complete after ``close``)."""


@dataclass(frozen=True)
class SpoolDepth:
    """What a backend holds locally that is not yet in long-term storage."""

    recordings: int = 0
    bytes: int = 0


class Storage(abc.ABC):
    """A store of recordings: local disk, or S3 behind a local spool."""

    kind = "storage"  # the ``backend`` label of tsrecorder_storage_errors_total

    @abc.abstractmethod
    async def create(self, key: str) -> RecordingWriter:
        """Starts a new recording; StorageError if the key exists or cannot be created."""

    @abc.abstractmethod
    async def reopen(self, key: str) -> int | None:
        """After a crash: the size of what this recorder holds of ``key`` (None if nothing)."""

    async def adopt(self, key: str) -> int | None:
        """After the replica that was receiving ``key`` died (docs/recorder.md, "Fleet"):
        makes readable here what shared storage holds of it; its size (None: nothing). A
        shared disk holds every byte the dead replica wrote."""
        return await self.size(key)

    async def unfinished(self) -> list[str]:
        """Keys this recorder holds that were never finished (S3: still in its spool, not
        closed): after a restart, those another replica took over meanwhile are finished
        again from here. A disk store keeps nothing of its own."""
        return []

    @abc.abstractmethod
    async def finish(self, key: str) -> None:
        """Hands a closed recording (cast and metadata) over for long-term storage."""

    @abc.abstractmethod
    async def put_meta(self, key: str, document: bytes) -> None:
        """Stores the metadata document durably and atomically (replacing any older one)."""

    @abc.abstractmethod
    async def get_meta(self, key: str) -> bytes | None:
        """The metadata document, or None if there is none."""

    @abc.abstractmethod
    async def size(self, key: str) -> int | None:
        """The number of stored cast bytes, or None if the recording does not exist."""

    @abc.abstractmethod
    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Streams cast bytes ``[start, end)`` (``end`` None: to the current end)."""

    @abc.abstractmethod
    def keys(self) -> AsyncIterator[str]:
        """Every key that has a metadata document (for ``tssh-recorder reindex``)."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Removes a finished recording (cast, metadata) for retention; StorageError when it
        cannot, or when it is not yet all in long-term storage."""

    @abc.abstractmethod
    async def set_hold(self, key: str, document: bytes | None) -> None:
        """Places (``document``: who and why, JSON) or lifts (None) a legal hold, stored
        beside the recording so that a reindex cannot lose it."""

    @abc.abstractmethod
    async def get_hold(self, key: str) -> bytes | None:
        """The hold's document, or None when the recording is not on hold."""

    @abc.abstractmethod
    def describe(self) -> str:
        """A one-line description for logs, e.g. ``disk:/srv/rec``."""

    async def spool_depth(self) -> SpoolDepth:
        """Recordings and bytes waiting to reach long-term storage (none on disk)."""
        return SpoolDepth()

    async def start(self) -> None:
        """Starts background work (uploads); called once the event loop runs."""
        return None

    async def close(self) -> None:
        """Stops background work; nothing acknowledged may depend on it having run."""
        return None
