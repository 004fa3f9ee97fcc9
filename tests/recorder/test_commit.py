"""Group commit: many writers share durability points; one writer's error stays its own."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path

import pytest

from recorder.errors import StorageError
from recorder.storage.commit import SYNCFS_BATCH
from recorder.storage.disk import DiskStorage


@pytest.mark.parametrize("writers", [1, SYNCFS_BATCH * 4])
async def test_concurrent_syncs_make_every_writer_durable(tmp_path: Path, writers: int) -> None:
    store = DiskStorage(tmp_path)
    await store.start()
    ws = [await store.create(f"n{i}/k") for i in range(writers)]
    expected = [b""] * writers

    async def run(i: int) -> None:
        for j in range(20):
            data = f"{i}:{j}\n".encode() * 50
            await ws[i].write(data)
            expected[i] += data
            assert await ws[i].sync() == len(expected[i])

    await asyncio.gather(*(run(i) for i in range(writers)))
    for i, w in enumerate(ws):
        await w.close()
        assert (tmp_path / f"n{i}" / "k.cast").read_bytes() == expected[i]
        assert w.sha256() == hashlib.sha256(expected[i]).hexdigest()


async def test_a_failing_writer_does_not_fail_the_batch(tmp_path: Path) -> None:
    import os

    store = DiskStorage(tmp_path)
    await store.start()
    good = [await store.create(f"g{i}/k") for i in range(SYNCFS_BATCH)]
    bad = await store.create("bad/k")
    os.close(bad._fd)  # type: ignore[attr-defined]
    bad._fd = os.open(os.devnull, os.O_RDONLY)  # type: ignore[attr-defined]  # writes fail
    for w in [*good, bad]:
        await w.write(b"data\n")
    results = await asyncio.gather(*(w.sync() for w in [*good, bad]), return_exceptions=True)
    assert results[:-1] == [5] * SYNCFS_BATCH
    assert isinstance(results[-1], StorageError)
    for w in [*good, bad]:
        with contextlib.suppress(StorageError):
            await w.close()
