"""The recorder's operational metrics move as docs/recorder.md ("Metrics") says, over real
uploads and reads against a real recorder process (and moto's S3 server for the spool)."""

from __future__ import annotations

import time
from pathlib import Path

from tests.polling import wait_for
from tests.recorder.conftest import (
    ALICE,
    CAROL,
    SERVER,
    STRANGER,
    RecorderProc,
    cast_header,
    event,
)
from tests.recorder.h2upload import H2Upload
from tests.recorder.moto import AWS_ENV, MotoServer
from tests.recorder.scrape import scrape

BUCKET = "recordings"


async def test_an_upload_raises_bytes_acks_and_the_ack_latency(recorder: RecorderProc) -> None:
    with recorder.client(ALICE) as c:
        before = scrape(c)
    assert before.value("tsrecorder_ack_latency_seconds_count") == 0
    up = await H2Upload.open("127.0.0.1", recorder.port, local_address=SERVER)
    waited = 0.0  # what the uploader saw: from each send to the ack that covers it
    try:
        assert await up.wait_headers() == 200
        sent = b""
        for i in range(6):
            chunk = cast_header() if i == 0 else event(0.1 * i, f"line {i}\r\n")
            sent_at = time.monotonic()
            await up.send(chunk)
            sent += chunk
            waited += await up.wait_ack(len(sent), timeout=5) - sent_at
        await up.end()
        await up.wait_end()
        assert up.error is None and up.acks[-1] == len(sent)
    finally:
        await up.close()
    with recorder.client(ALICE) as c:
        after = scrape(c)
    assert after.value("tsrecorder_ingested_bytes_total") == len(sent)
    acks = after.value("tsrecorder_acks_total")
    observed = after.value("tsrecorder_ack_latency_seconds_count")
    # each chunk was acked before the next was sent: six acks covered new bytes, and idle
    # acks (none here) or a final ack repeating the last are not observed
    assert 6 <= observed <= acks
    assert after.value("tsrecorder_ack_latency_seconds_bucket", le="+Inf") == observed
    latency = after.value("tsrecorder_ack_latency_seconds_sum")
    # the recorder's span (arrival to ack sent) lies inside the uploader's (send to ack
    # received): both are CLOCK_MONOTONIC of one machine
    assert 0 < latency <= waited, (latency, waited)


async def test_index_lag_rises_with_output_and_returns_to_zero(recorder: RecorderProc) -> None:
    """Output waits up to half a second for the text index's next write: meanwhile the lag
    and the backlog show it; once written, both are 0 while the recording is still live."""
    up = await H2Upload.open("127.0.0.1", recorder.port, local_address=SERVER)
    try:
        with recorder.client(ALICE) as c:

            def caught_up() -> bool:
                now = scrape(c)
                return (now.value("tsrecorder_index_lag_seconds") == 0
                        and now.value("tsrecorder_index_backlog_bytes") == 0)

            assert await up.wait_headers() == 200
            sent = cast_header()
            await up.send(sent)
            await up.wait_ack(len(sent))
            wait_for(caught_up, timeout=10, interval=0.1, what="the header indexed")
            # about 2 MiB of lines (under the 4 MiB a recording may be behind): extracting
            # and writing them takes the indexer a while, on top of the half second between
            # writes
            output = b"".join(event(i / 1000, f"{i:06d} " + "word " * 20 + "\r\n")
                              for i in range(18000))
            output_at = time.monotonic()
            await up.send(output)
            sent += output
            await up.wait_ack(len(sent))
            busy = scrape(c)
            # the age of bytes sent after output_at (one machine's monotonic clock)
            assert 0 < busy.value("tsrecorder_index_lag_seconds") < time.monotonic() - output_at
            assert 0 < busy.value("tsrecorder_index_backlog_bytes") <= len(output)
            wait_for(caught_up, timeout=30, interval=0.1, what="the output indexed")
            assert scrape(c).value("tsrecorder_recordings_active") == 1  # still live
            hits = c.get("/api/v1/recordings", params={"q": "017999"}).json()["recordings"]
            assert len(hits) == 1
        await up.end()
        await up.wait_end()
    finally:
        await up.close()


def test_reads_are_counted_by_kind_and_outcome(recorder: RecorderProc) -> None:
    body = cast_header() + event(0.5, "hello\r\n")
    with recorder.client(SERVER) as c:
        assert c.post("/record", content=iter([body])).status_code == 200
    with recorder.client(ALICE) as c:
        before = scrape(c)
        [meta] = c.get("/api/v1/recordings").json()["recordings"]
        base = f"/api/v1/recordings/{meta['id']}"
        for path in ("", "/cast", "/live", "/events", "/verify"):
            assert c.get(base + path).status_code == 200, path
        assert c.get("/api/v1/recordings").status_code == 200
    with recorder.client(CAROL) as c:
        assert c.get("/api/v1/recordings").status_code == 403
    with recorder.client(STRANGER) as c:
        assert c.get(base + "/cast").status_code == 401
    with recorder.client(ALICE) as c:
        after = scrape(c)

    def delta(kind: str, outcome: str) -> float:
        return (after.value("tsrecorder_reads_total", kind=kind, outcome=outcome)
                - before.value("tsrecorder_reads_total", kind=kind, outcome=outcome))

    assert delta("list", "allowed") == 2
    assert delta("list", "refused") == 1
    assert delta("cast", "refused") == 1
    for kind in ("show", "cast", "live", "events", "verify"):
        assert delta(kind, "allowed") == 1, kind
    assert after.value("tsrecorder_reads_total") - before.value("tsrecorder_reads_total") == 9
    # /metrics itself is not a read of recordings
    assert delta("other", "allowed") == delta("other", "refused") == 0


def test_s3_spool_depth_grows_while_s3_is_down(tmp_path: Path, moto: MotoServer) -> None:
    moto.client().create_bucket(Bucket=BUCKET)
    rec = RecorderProc(tmp_path, f"s3+http://127.0.0.1:{moto.port}",
                       extra=["--bucket", BUCKET], env=AWS_ENV)
    try:
        rec.start()
        moto.stop()  # S3 goes away: recordings wait in the spool
        body = cast_header() + event(0.5, "spooled\r\n") + event(0.6, "0", "x")
        with rec.client(SERVER) as c:
            assert c.post("/record", content=iter([body])).status_code == 200
        with rec.client(ALICE) as c:
            waiting = scrape(c)
            assert waiting.value("tsrecorder_s3_spool_recordings") == 1
            assert waiting.value("tsrecorder_s3_spool_bytes") == len(body)
            wait_for(lambda: scrape(c).value("tsrecorder_storage_errors_total", backend="s3",
                                             operation="upload") >= 1,
                     timeout=20, interval=0.2, what="a failed S3 upload counted")
            moto.start()  # back, empty (moto keeps no state)
            moto.client().create_bucket(Bucket=BUCKET)

            def drained() -> bool:
                now = scrape(c)
                return (now.value("tsrecorder_s3_spool_recordings") == 0
                        and now.value("tsrecorder_s3_spool_bytes") == 0)

            wait_for(drained, timeout=60, interval=0.2, what="the spool drained")
    finally:
        rec.stop()
