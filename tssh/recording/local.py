"""Debug fallback: the recording stream written to a local ``.cast`` file.

Used only when ``Config.local_recording_dir`` is set and no recorder accepted a recording that
is not enforced (a local file on the recorded machine is no audit trail: whoever logs in as
root can edit it, so it never satisfies ``enforceRecorder``). The file gets exactly the bytes
a recorder would have received. Blocking file calls run in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Literal

from tssh.errors import RecordingFailed


def cast_file_name(started_at: float, connection_id: str, n: int = 0) -> str:
    """``<UTC start>-<connection id>[-n].cast``, the recorder's naming (docs/recorder.md)."""
    stamp = datetime.fromtimestamp(started_at, UTC).strftime("%Y%m%dT%H%M%SZ")
    safe_id = "".join(c if c.isalnum() or c in "-_" else "_" for c in connection_id)
    return f"{stamp}-{safe_id}{f'-{n}' if n else ''}.cast"


def _create_exclusive(directory: Path, started_at: float, connection_id: str) -> tuple[Path,
                                                                                      BinaryIO]:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for n in range(1000):  # sessions multiplexed on one connection share its id
        path = directory / cast_file_name(started_at, connection_id, n)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        return path, os.fdopen(fd, "wb")
    raise FileExistsError(f"no free recording file name in {directory}")


class LocalCastFile:
    """A recording destination that appends to a file (``transport.Destination``)."""

    protocol: Literal["local"] = "local"

    def __init__(self, path: Path, file: BinaryIO) -> None:
        self.path = path
        self.destination = str(path)
        self._file = file
        self.bytes_sent = 0
        self.bytes_acked: int | None = None
        # A local file does not fail by itself; only writes can.
        self.failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def create(cls, directory: Path, started_at: float, connection_id: str
                     ) -> LocalCastFile:
        try:
            path, file = await asyncio.to_thread(
                _create_exclusive, directory, started_at, connection_id)
        except OSError as e:
            raise RecordingFailed(f"cannot create a local recording in {directory}: {e}") from e
        return cls(path, file)

    async def send(self, data: bytes) -> None:
        try:
            await asyncio.to_thread(self._file.write, data)
        except OSError as e:
            raise RecordingFailed(f"cannot write the local recording {self.path}: {e}") from e
        self.bytes_sent += len(data)

    async def finish(self, time_limit: float) -> None:
        try:
            await asyncio.to_thread(self._close, True)
        except OSError as e:
            raise RecordingFailed(f"cannot finish the local recording {self.path}: {e}") from e

    def abort(self) -> None:
        self._close(False)

    def _close(self, sync: bool) -> None:
        if self._file.closed:
            return
        try:
            self._file.flush()
            if sync:
                os.fsync(self._file.fileno())
        finally:
            self._file.close()
