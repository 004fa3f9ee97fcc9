"""A step of the recorder's wall clock during an upload (NTP, an operator's ``date -s``): the
recording's end follows its start by the time that really passed, never before it, never
hours after. The reliability lab does the same to a real recorder process with libfaketime
(tests/lab/test_faults.py); this drives the service in-process with a stepped clock."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from recorder.index.sqlite import SqliteIndex
from recorder.service import RecorderService
from recorder.storage.disk import DiskStorage
from recorder.stream import CastScanner
from tests.recorder.conftest import cast_header, event
from tssh.identity.base import Peer

SERVER = Peer(name="server", id="nSRV1", addresses=("100.64.0.2",), tags=("tag:prod",))


@pytest.mark.parametrize("step", [-7200.0, 7200.0])
async def test_a_clock_step_mid_upload_leaves_end_after_start_by_the_elapsed_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: float) -> None:
    (tmp_path / "dst").mkdir()
    service = RecorderService(DiskStorage(tmp_path / "dst"),
                              SqliteIndex(tmp_path / "index.sqlite3"), SigningKey.generate())
    await service.start()
    try:
        scanner = CastScanner()
        body = cast_header() + event(0.1, "before the step\n")
        scanner.feed(body)
        assert scanner.header is not None
        recording = await service.begin(SERVER, "100.64.0.2", scanner.header)
        await recording.append(body)
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + step)
        await recording.sync()
        await recording.finish("complete", scanner, None)
        meta = await service.index.get(recording.meta.id)
    finally:
        await service.close()
    assert meta is not None and meta.end is not None
    assert 0 <= meta.end - meta.start < 5, (meta.start, meta.end)
