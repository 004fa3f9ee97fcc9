"""Group commit: one durability point for many recordings at once.

With a thousand live recordings, an fsync per recording per ack is more syscalls (and journal
commits) than the disk and the executor can take, and ack latency grows without bound. Instead
every ``sync`` joins the next batch: one worker-thread call writes each member's pending bytes
and then makes them all durable together — with ``syncfs`` on the storage's file system when
the batch is large (one journal commit), else with an fsync per file. Batches form by
themselves: requests arriving while commits run go into the next one; up to ``MAX_INFLIGHT``
batches commit at once (a journal commit can take tens of milliseconds under load, and the
next batch need not wait for it to start).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

SYNCFS_BATCH = 8  # from this many files in a batch on, one syncfs beats one fsync each
MAX_INFLIGHT = 2  # batches committing at once: the next starts while one waits for the disk


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):
        return None


_SYNCFS = _load_syncfs()


@dataclass
class CommitJob:
    fd: int
    chunks: list[bytes]
    hasher: hashlib._Hash
    parent: Path | None  # fsync this directory too (a new file's name)
    error: OSError | None = None


def write_chunks(fd: int, chunks: list[bytes], hasher: hashlib._Hash) -> None:
    """Hashes and writes; runs in a worker thread (hashing releases the GIL)."""
    for data in chunks:
        hasher.update(data)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


CommitObserver = Callable[[int, float], None]  # (files in the batch, seconds)


class GroupCommit:
    def __init__(self, root: Path, observe: CommitObserver | None = None) -> None:
        self.root = root
        self._observe = observe
        self._queue: list[tuple[CommitJob, asyncio.Future[None]]] = []
        # own threads: acks never queue behind other file work in the default executor
        self._max_inflight = MAX_INFLIGHT
        self._inflight = 0
        self._tasks: set[asyncio.Future[None]] = set()
        self._thread = ThreadPoolExecutor(
            max_workers=MAX_INFLIGHT, thread_name_prefix="group-commit"
        )

    async def submit(self, job: CommitJob) -> None:
        """Returns once the job's bytes are written and durable; raises its OSError."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((job, future))
        self._maybe_start()
        await future

    def _maybe_start(self) -> None:
        if self._queue and self._inflight < self._max_inflight:
            batch, self._queue = self._queue, []
            self._inflight += 1
            task = asyncio.ensure_future(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[CommitJob, asyncio.Future[None]]]) -> None:
        loop = asyncio.get_running_loop()
        jobs = [job for job, _ in batch]
        started = loop.time()
        try:
            await loop.run_in_executor(self._thread, self._commit, jobs)
            if self._observe is not None:
                self._observe(len(jobs), loop.time() - started)
        except OSError as e:
            for job in jobs:
                job.error = job.error or e
        finally:
            self._inflight -= 1
        for job, future in batch:
            if future.done():
                continue
            if job.error is not None:
                future.set_exception(job.error)
            else:
                future.set_result(None)
        self._maybe_start()

    def _commit(self, jobs: list[CommitJob]) -> None:
        for job in jobs:
            try:
                write_chunks(job.fd, job.chunks, job.hasher)
            except OSError as e:
                job.error = e
        good = [job for job in jobs if job.error is None]
        if len(good) >= SYNCFS_BATCH and _SYNCFS is not None:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
            try:
                if _SYNCFS(fd) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            finally:
                os.close(fd)
            return
        for job in good:
            try:
                os.fsync(job.fd)
                if job.parent is not None:
                    fsync_dir(job.parent)
            except OSError as e:
                job.error = e
