"""Recording client throughput: the asciicast encoder alone, and a v2 upload end to end.

Run from the repository root: ``python benchmarks/recording_throughput.py``. The upload goes to
the tests' fake recorder in the same process, so its figure includes the recorder's side.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.recording.fake_recorder import FakeRecorder
from tssh.identity.base import Peer
from tssh.recording.asciicast import CastEncoder, CastHeader
from tssh.recording.uploader import RecordingOptions, start_recording

READ = 256 * 1024
READS = 256
PEER = Peer(name="laptop", id="nLAP1", addresses=(), user="alice@example.com", user_id="1")
HEADER = CastHeader.for_session(PEER, ssh_user="alice", local_user="alice",
                                connection_id="ssh-conn-20260101T000000-0000000000",
                                started_at=time.time())
TEXT = (b"drwxr-xr-x  2 alice alice 4096 Jan  1 00:00 some-file-name.txt\r\n" * 5000)[:READ]
BINARY = os.urandom(READ)


def encoder(name: str, data: bytes) -> None:
    enc = CastEncoder(HEADER, 0.0)
    out = 0
    start = time.perf_counter()
    for i in range(READS):
        out += len(enc.output(float(i), data))
    elapsed = time.perf_counter() - start
    print(f"encoder, {name:6}: {READS * READ / elapsed / 1e6:6.0f} MB/s of session output, "
          f"stream {out / (READS * READ):.2f}x its size")


async def upload() -> None:
    async with FakeRecorder() as recorder:
        rec = await start_recording([recorder.address], HEADER,
                                    options=RecordingOptions(enforce=True))
        start = time.perf_counter()
        for _ in range(READS):
            await rec.output(TEXT)
        stats = await rec.close()
        elapsed = time.perf_counter() - start
        print(f"v2 upload, text: {READS * READ / elapsed / 1e6:6.0f} MB/s of session output "
              f"({stats.state}, {stats.bytes_acked} bytes acked)")


if __name__ == "__main__":
    encoder("text", TEXT)
    encoder("binary", BINARY)
    asyncio.run(upload())
