"""Recording client throughput: the asciicast encoder alone, and a v2 upload end to end.

Run from the repository root: ``python benchmarks/recording_throughput.py``. The encoder gets
events of 32 KiB, as the uploader makes them of a busy session's output; its figure is the best
of a few runs (this measures the code, not the machine's other jobs). The upload goes to the
tests' fake recorder in the same process, so its figure includes the recorder's side.
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
from tssh.recording.model import RecordingOptions
from tssh.recording.uploader import start_recording

EVENT = 32 * 1024  # the uploader's largest event (MAX_EVENT_INPUT)
EVENTS = 512
RUNS = 5
READ = 256 * 1024
READS = 256
PEER = Peer(name="laptop", id="nLAP1", addresses=(), user="alice@example.com", user_id="1")
HEADER = CastHeader.for_session(PEER, ssh_user="alice", local_user="alice",
                                connection_id="ssh-conn-20260101T000000-0000000000",
                                started_at=time.time())


def repeated(line: bytes, size: int) -> bytes:
    return (line * (size // len(line) + 1))[:size]


def session_events(line: bytes, parts: int = 8) -> list[bytes]:
    """``line`` repeated, cut into ``parts`` events of up to EVENT bytes."""
    stream = line * (parts * EVENT // len(line))
    return [stream[len(stream) * i // parts:len(stream) * (i + 1) // parts] for i in range(parts)]


# Eight consecutive events of a session's output (characters split between them, as reads
# split them), looping at the end of a line.
# `ls -l`: ASCII, a CR LF every 64 bytes.
TEXT = session_events(b"drwxr-xr-x  2 alice alice 4096 Jan  1 00:00 some-file-name.txt\r\n")
# `ls --color`: an ESC sequence every ~10 bytes.
COLOUR = session_events(b"\x1b[0m\x1b[01;34mbenchmarks\x1b[0m  \x1b[01;34mdocs\x1b[0m  pyproject"
                        b".toml  README.md  \x1b[01;32mrun.sh\x1b[0m  \x1b[01;36mlatest\x1b[0m\r\n")
# `tree` of non-English names: box drawing, CJK, accents.
UTF8 = session_events("│   ├── 日本語のファイル名.txt\r\n│   └── naïve café résumé.md\r\n".encode())
BINARY = session_events(os.urandom(8 * EVENT))
UPLOAD = repeated(TEXT[0], READ)


def encoder(name: str, events: list[bytes]) -> None:
    """Encodes ``events`` in a loop, EVENTS of them."""
    size = sum(len(event) for event in events) * EVENTS // len(events)
    best = float("inf")
    out = 0
    for _ in range(RUNS):
        enc = CastEncoder(HEADER, 0.0)
        out = 0
        start = time.perf_counter()
        for i in range(EVENTS):
            out += len(enc.output(float(i), events[i % len(events)]))
        best = min(best, time.perf_counter() - start)
    print(f"encoder, {name:6}: {size / best / 1e6:6.0f} MB/s of session output, "
          f"stream {out / size:.2f}x its size")


async def upload() -> None:
    async with FakeRecorder() as recorder:
        rec = await start_recording([recorder.address], HEADER,
                                    options=RecordingOptions(enforce=True))
        resumed = asyncio.Event()  # flow control, as the daemon's sessions do it
        resumed.set()
        rec.set_flow_control(resumed.clear, resumed.set)
        start = time.perf_counter()
        for _ in range(READS):
            await resumed.wait()
            rec.output_nowait(UPLOAD)
            await asyncio.sleep(0)
        stats = await rec.close()
        elapsed = time.perf_counter() - start
        print(f"v2 upload, text: {READS * READ / elapsed / 1e6:6.0f} MB/s of session output "
              f"({stats.state}, {stats.bytes_acked} bytes acked)")


if __name__ == "__main__":
    encoder("text", TEXT)
    encoder("colour", COLOUR)
    encoder("UTF-8", UTF8)
    encoder("binary", BINARY)
    asyncio.run(upload())
