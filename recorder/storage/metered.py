"""A storage wrapper that counts failed operations (``tsrecorder_storage_errors_total``).

Storage errors surface in many places (an upload's append or sync, a read of the API, a
metadata write at the end of a recording, retention's deletes), and most callers handle them
their own way. Counting them here, once, by backend and operation, gives an operator one
number to alert on whatever the caller did with the error (docs/recorder.md, "Metrics").
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import TypeVar

from recorder.errors import StorageError
from recorder.storage.base import RecordingWriter, SpoolDepth, Storage

T = TypeVar("T")

ErrorObserver = Callable[[str, str], None]  # (backend, operation)


@contextlib.contextmanager
def _counting(count: Callable[[str], None], operation: str) -> Iterator[None]:
    try:
        yield
    except StorageError:
        count(operation)
        raise


async def _forward(count: Callable[[str], None], operation: str,
                   items: AsyncIterator[T]) -> AsyncIterator[T]:
    """``items`` re-yielded, counted as ``operation`` if they raise, and closed when the
    caller stops early (a storage read holds an open file)."""
    try:
        with _counting(count, operation):
            async for item in items:
                yield item
    finally:
        if isinstance(items, AsyncGenerator):
            await items.aclose()


class MeteredWriter(RecordingWriter):
    def __init__(self, inner: RecordingWriter, count: Callable[[str], None]) -> None:
        self._inner = inner
        self._count = count

    @property  # read-only: the inner writer keeps the count
    def size(self) -> int:  # type: ignore[override]
        return self._inner.size

    async def write(self, data: bytes) -> None:
        with _counting(self._count, "write"):
            await self._inner.write(data)

    async def sync(self) -> int:
        with _counting(self._count, "sync"):
            return await self._inner.sync()

    async def close(self) -> None:
        with _counting(self._count, "close"):
            await self._inner.close()

    def sha256(self) -> str:
        return self._inner.sha256()


class MeteredStorage(Storage):
    """``inner``, each StorageError its operations raise told to ``observe`` first."""

    def __init__(self, inner: Storage, observe: ErrorObserver) -> None:
        self.inner = inner
        self.kind = inner.kind
        self._observe = observe

    def _count(self, operation: str) -> None:
        self._observe(self.kind, operation)

    def describe(self) -> str:
        return self.inner.describe()

    async def start(self) -> None:
        with _counting(self._count, "start"):
            await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def spool_depth(self) -> SpoolDepth:
        return await self.inner.spool_depth()

    async def create(self, key: str) -> RecordingWriter:
        with _counting(self._count, "create"):
            return MeteredWriter(await self.inner.create(key), self._count)

    async def reopen(self, key: str) -> int | None:
        with _counting(self._count, "reopen"):
            return await self.inner.reopen(key)

    async def adopt(self, key: str) -> int | None:
        with _counting(self._count, "adopt"):
            return await self.inner.adopt(key)

    async def unfinished(self) -> list[str]:
        with _counting(self._count, "unfinished"):
            return await self.inner.unfinished()

    async def finish(self, key: str) -> None:
        with _counting(self._count, "finish"):
            await self.inner.finish(key)

    async def put_meta(self, key: str, document: bytes) -> None:
        with _counting(self._count, "put_meta"):
            await self.inner.put_meta(key, document)

    async def get_meta(self, key: str) -> bytes | None:
        with _counting(self._count, "get_meta"):
            return await self.inner.get_meta(key)

    async def size(self, key: str) -> int | None:
        with _counting(self._count, "size"):
            return await self.inner.size(key)

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        return _forward(self._count, "read", self.inner.read(key, start, end))

    def keys(self) -> AsyncIterator[str]:
        return _forward(self._count, "keys", self.inner.keys())

    async def delete(self, key: str) -> None:
        with _counting(self._count, "delete"):
            await self.inner.delete(key)

    async def set_hold(self, key: str, document: bytes | None) -> None:
        with _counting(self._count, "set_hold"):
            await self.inner.set_hold(key, document)

    async def get_hold(self, key: str) -> bytes | None:
        with _counting(self._count, "get_hold"):
            return await self.inner.get_hold(key)
