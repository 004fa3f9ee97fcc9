"""Recordings on a local file system: ``<dst>/<node id>/<start>-<conn id>.cast`` + ``.json``.

Durability: ``sync`` writes what is buffered and makes it durable through the storage's group
commit (``commit.py``): an fsync of the file (and, the first time, of its directory, so the new
name survives a power cut), or one syncfs of the file system for a large batch. An ack
therefore promises that every acknowledged byte is on stable storage as far as the kernel and
the disk's write cache honour fsync.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiofiles
import aiofiles.os

from recorder.errors import StorageError
from recorder.keys import check_key
from recorder.storage.base import RecordingWriter, Storage
from recorder.storage.commit import (
    CommitJob,
    CommitObserver,
    GroupCommit,
    fsync_dir,
    write_chunks,
)

READ_CHUNK = 256 * 1024
_WRITE_BUFFER = 1024 * 1024  # hand to the kernel in the background past this, without fsync
_MAX_BACKLOG = 8 * 1024 * 1024  # past this, appends wait for the disk


def describe_os_error(e: OSError, path: Path) -> str:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"storage full while writing {path}"
    if e.errno == errno.EFBIG:
        return f"file size limit reached while writing {path}"
    return f"cannot write {path}: {e.strerror or e}"


class DiskWriter(RecordingWriter):
    """Buffers appends and writes them out in large pieces; ``sync`` fsyncs.

    Writing and fsyncing run in the executor under separate locks, so an fsync in progress
    (the slow part) never stops the next bytes from reaching the kernel.
    """

    def __init__(
        self, path: Path, fd: int, commit: GroupCommit,
        on_sync: Callable[[int], None] | None = None,
    ) -> None:
        self.path = path
        self._commit = commit
        self._on_sync = on_sync
        self._fd: int | None = fd
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._hasher = hashlib.sha256()
        self._written = 0  # bytes handed to the kernel
        self._durable = 0  # bytes covered by a completed fsync
        self._dir_synced = False
        self._write_lock = asyncio.Lock()
        self._background: asyncio.Future[None] | None = None
        self._sync_lock = asyncio.Lock()
        self.size = 0

    async def write(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        self.size += len(data)
        if self._buffered >= _WRITE_BUFFER:
            if self._background is not None and self._buffered >= _MAX_BACKLOG:
                await self._background  # backpressure: the disk is slower than the uploader
            if self._background is None or self._background.done():
                if self._background is not None:
                    self._background.result()  # a failed write fails this one
                self._background = asyncio.ensure_future(self._write_out())

    def sha256(self) -> str:
        return self._hasher.hexdigest()

    async def sync(self) -> int:
        async with self._sync_lock:
            if self._background is not None:
                background, self._background = self._background, None
                await background
            async with self._write_lock:
                chunks, count = self._chunks, self._buffered
                self._chunks, self._buffered = [], 0
                target = self._written + count
                if target == self._durable:
                    return self._durable
                job = CommitJob(
                    self._require_fd(), chunks, self._hasher,
                    None if self._dir_synced else self.path.parent,
                )
                try:
                    await self._commit.submit(job)
                except OSError as e:
                    raise StorageError(describe_os_error(e, self.path)) from e
                self._written = self._durable = target
                self._dir_synced = True
            if self._on_sync is not None:
                self._on_sync(self._durable)
            return self._durable

    async def close(self) -> None:
        try:
            await self.sync()
        finally:
            async with self._write_lock, self._sync_lock:
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None

    def _require_fd(self) -> int:
        if self._fd is None:
            raise StorageError(f"{self.path} is closed")
        return self._fd

    async def _write_out(self) -> None:
        async with self._write_lock:
            if not self._chunks:
                return
            chunks, count = self._chunks, self._buffered
            self._chunks, self._buffered = [], 0
            fd = self._require_fd()
            try:
                await asyncio.get_running_loop().run_in_executor(
                    None, write_chunks, fd, chunks, self._hasher
                )
            except OSError as e:
                raise StorageError(describe_os_error(e, self.path)) from e
            self._written += count


def replace_durably(path: Path, document: bytes) -> None:
    """Writes ``path`` atomically (temporary file, fsync, rename, fsync of the directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        view = memoryview(document)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


class DiskStorage(Storage):
    kind = "disk"

    def __init__(self, root: Path, observe_commit: CommitObserver | None = None) -> None:
        self.root = root
        self._commit = GroupCommit(root, observe_commit)

    def describe(self) -> str:
        return f"disk:{self.root}"

    def _path(self, key: str, suffix: str) -> Path:
        return self.root / f"{check_key(key)}{suffix}"

    async def start(self) -> None:
        try:
            await aiofiles.os.makedirs(self.root, exist_ok=True)
        except OSError as e:
            raise StorageError(f"cannot create storage directory {self.root}: {e}") from e

    async def create(self, key: str) -> RecordingWriter:
        return await self.create_writer(key)

    async def create_writer(
        self, key: str, on_sync: Callable[[int], None] | None = None
    ) -> DiskWriter:
        """``create``, with a callback told each new durable size (the S3 spool uses it)."""
        path = self._path(key, ".cast")

        def make() -> int:
            path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o640)

        try:
            fd = await asyncio.get_running_loop().run_in_executor(None, make)
        except FileExistsError as e:
            raise StorageError(f"recording {key} already exists") from e
        except OSError as e:
            raise StorageError(describe_os_error(e, path)) from e
        return DiskWriter(path, fd, self._commit, on_sync)

    async def reopen(self, key: str) -> int | None:
        return await self.size(key)

    async def finish(self, key: str) -> None:
        return None  # the file already is the long-term copy

    async def put_meta(self, key: str, document: bytes) -> None:
        path = self._path(key, ".json")
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, replace_durably, path, document
            )
        except OSError as e:
            raise StorageError(describe_os_error(e, path)) from e

    async def get_meta(self, key: str) -> bytes | None:
        path = self._path(key, ".json")
        try:
            async with aiofiles.open(path, "rb") as f:
                return await f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StorageError(f"cannot read {path}: {e.strerror or e}") from e

    async def delete(self, key: str) -> None:
        def do() -> None:
            for suffix in (".cast", ".json"):  # the cast first: a document alone is skipped
                self._path(key, suffix).unlink(missing_ok=True)

        try:
            await asyncio.to_thread(do)
        except OSError as e:
            raise StorageError(f"cannot delete {key}: {e.strerror or e}") from e

    async def set_hold(self, key: str, document: bytes | None) -> None:
        path = self._path(key, ".hold")
        try:
            if document is None:
                await asyncio.to_thread(path.unlink, missing_ok=True)
            else:
                await asyncio.to_thread(replace_durably, path, document)
        except OSError as e:
            raise StorageError(describe_os_error(e, path)) from e

    async def get_hold(self, key: str) -> bytes | None:
        path = self._path(key, ".hold")
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StorageError(f"cannot read {path}: {e.strerror or e}") from e

    async def size(self, key: str) -> int | None:
        try:
            return (await aiofiles.os.stat(self._path(key, ".cast"))).st_size
        except FileNotFoundError:
            return None

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        path = self._path(key, ".cast")
        try:
            async with aiofiles.open(path, "rb") as f:
                await f.seek(start)
                pos = start
                while end is None or pos < end:
                    want = READ_CHUNK if end is None else min(READ_CHUNK, end - pos)
                    chunk = await f.read(want)
                    if not chunk:
                        return
                    pos += len(chunk)
                    yield chunk
        except FileNotFoundError as e:
            raise StorageError(f"recording file {key}.cast is missing from storage") from e

    async def keys(self) -> AsyncIterator[str]:
        def scan() -> list[str]:
            found: list[str] = []
            if not self.root.is_dir():
                return found
            for node in sorted(self.root.iterdir()):
                if not node.is_dir():
                    continue
                for f in sorted(node.iterdir()):
                    if f.name.endswith(".json"):
                        found.append(f"{node.name}/{f.name[: -len('.json')]}")
            return found

        for key in await asyncio.to_thread(scan):
            yield key
