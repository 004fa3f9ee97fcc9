"""Slowloris on the recorder's ingest (issue 15, section 5): many uploads trickling their
request head or their asciicast header a byte at a time, while a real v2 upload and a real
v1 upload go through. The header timeout and the upload caps (docs/recorder.md, "Limits")
must hold: every slow connection closed by the header timeout, the real uploads stored."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from benchmarks.bench_ssh import percentile
from tests.lab.results import Outcome, long_run, record
from tests.recorder.conftest import ALICE, SERVER, SERVER2, RecorderProc, cast_header, event
from tests.recorder.h2upload import H2Upload

pytestmark = pytest.mark.xdist_group("lab")

HEADER_TIMEOUT = 3
TRICKLE_SECONDS = 0.5  # one byte per connection this often
GIVE_UP = HEADER_TIMEOUT + 15  # a slow connection still open then: the limit failed
RERUN = "sudo .venv/bin/python -m pytest -n 0 tests/lab/test_ingest_slowloris.py"


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[RecorderProc]:
    rec = RecorderProc(tmp_path, str(tmp_path / "store"),
                       extra=["--header-timeout", str(HEADER_TIMEOUT)])
    try:
        rec.start()
        yield rec
    finally:
        rec.stop()


async def trickle(port: int, prefix: bytes, then: bytes) -> float:
    """Send ``prefix`` at once, then ``then`` one byte per TRICKLE_SECONDS until the recorder
    closes the connection: seconds it stayed open (GIVE_UP if it never closed)."""
    start = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                   local_addr=(SERVER, 0))
    try:
        writer.write(prefix)
        for i in range(int(GIVE_UP / TRICKLE_SECONDS)):
            writer.write(then[i % len(then):i % len(then) + 1])
            try:
                await writer.drain()
                if reader.at_eof():
                    break
                data = await asyncio.wait_for(reader.read(65536), TRICKLE_SECONDS)
                if not data and reader.at_eof():
                    break
            except TimeoutError:
                continue
            except OSError:  # reset: closed too
                break
        else:
            return GIVE_UP
        return time.monotonic() - start
    finally:
        writer.close()


def v1_head(port: int) -> bytes:
    return (f"POST /record HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n").encode()


async def real_v2_upload(port: int) -> float:
    """A whole recording through /v2/record: seconds until its final ack."""
    start = time.monotonic()
    up = await H2Upload.open("127.0.0.1", port, local_address=SERVER2)
    try:
        assert await up.wait_headers(15) == 200
        body = cast_header(conn="ssh-conn-real-v2") + event(0.1, "hello\r\n")
        await up.send(body)
        await up.end()
        await up.wait_end(30)
        assert up.error is None, up.frames
        assert up.acks[-1] == len(body)
    finally:
        await up.close()
    return time.monotonic() - start


def real_v1_upload(port: int) -> float:
    start = time.monotonic()
    body = cast_header(conn="ssh-conn-real-v1") + event(0.1, "hello\r\n")
    with httpx.Client(transport=httpx.HTTPTransport(local_address=SERVER2), timeout=30) as c:
        answer = c.post(f"http://127.0.0.1:{port}/record", content=body)
    assert answer.status_code == 200, answer.text
    return time.monotonic() - start


async def test_slow_uploads_are_cut_while_real_ones_go_through(recorder: RecorderProc) -> None:
    count = 1000 if long_run() else 200
    port = recorder.port
    heads = [trickle(port, b"", b"POST /record HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
             for _ in range(count // 2)]
    # Head complete (the 100 Continue comes back), then the header line a byte at a time.
    bodies = [trickle(port, v1_head(port), b'1\r\n{\r\n')
              for _ in range(count - count // 2)]
    slow = asyncio.gather(*heads, *bodies)
    await asyncio.sleep(1.0)  # every slow connection open and trickling
    v2_seconds = await real_v2_upload(port)
    v1_seconds = await asyncio.to_thread(real_v1_upload, port)
    lasted = await slow
    assert recorder.proc is not None and recorder.proc.poll() is None
    with recorder.client(ALICE) as c:
        listing = c.get("/api/v1/recordings").json()["recordings"]
        metrics = c.get("/metrics").text
    stored = {m["storageKey"].rsplit("-", 1)[1] for m in listing}
    longest = max(lasted)
    passed = (stored == {"v2", "v1"} and longest < GIVE_UP
              and all(m["status"] == "complete" for m in listing))
    record(Outcome(
        section="Load and abuse", scenario=f"slowloris on the recorder: {count} uploads "
        "trickling their request head or asciicast header, one byte per 0.5 s",
        expected=f"each closed by the header timeout ({HEADER_TIMEOUT} s); a real v2 and "
                 "a real v1 upload stored meanwhile",
        observed=f"slow connections closed after {min(lasted):.1f}-{longest:.1f} s "
                 f"(p50 {percentile(lasted, 50):.1f}); real uploads {v2_seconds:.2f} s (v2), "
                 f"{v1_seconds:.2f} s (v1); stored: {sorted(stored)}",
        passed=passed, rerun=RERUN,
        figures={"slow_connections": count, "slow_closed_max_s": round(longest, 2),
                 "real_v2_s": round(v2_seconds, 3), "real_v1_s": round(v1_seconds, 3)}))
    assert stored == {"v2", "v1"}, listing
    assert all(m["status"] == "complete" for m in listing), listing
    assert longest < GIVE_UP, f"a slow upload outlived the header timeout: {longest:.1f} s"
    assert 'tsrecorder_errors_total{reason="header_timeout"}' in metrics
