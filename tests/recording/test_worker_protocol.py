"""The daemon <-> recording worker protocol (pure): frames, reports, start requests."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tssh.identity.base import Peer
from tssh.recording.asciicast import CastHeader
from tssh.recording.model import RecordingOptions
from tssh.recording.targets import RecorderAddress
from tssh.recording.worker_protocol import (
    FRAME,
    MAX_PAYLOAD,
    Frame,
    FrameReader,
    Kind,
    ReportReader,
    StartRequest,
    WorkerProtocolError,
    encode_report,
    frame_header,
)

frames_strategy = st.lists(st.tuples(st.sampled_from(list(Kind)),
                                     st.floats(allow_nan=False, allow_infinity=False),
                                     st.binary(max_size=300)), max_size=20)


def encode(frames: list[tuple[Kind, float, bytes]]) -> bytes:
    return b"".join(frame_header(k, at, len(p)) + p for k, at, p in frames)


@given(frames_strategy, st.lists(st.integers(min_value=1, max_value=50), max_size=40))
def test_frames_survive_any_split_of_the_stream(
        frames: list[tuple[Kind, float, bytes]], cuts: list[int]) -> None:
    stream = encode(frames)
    reader = FrameReader()
    got: list[Frame] = []
    pos = 0
    for cut in cuts:
        got += reader.feed(stream[pos:pos + cut])
        pos += cut
    got += reader.feed(stream[pos:])
    assert [(f.kind, f.at, f.payload) for f in got] == frames
    assert reader.pending == 0


def test_an_incomplete_frame_waits_for_the_rest() -> None:
    reader = FrameReader()
    data = encode([(Kind.OUTPUT, 1.5, b"hello")])
    assert reader.feed(data[:-1]) == []
    assert reader.pending == len(data) - 1
    [frame] = reader.feed(data[-1:])
    assert frame == Frame(Kind.OUTPUT, 1.5, b"hello")


def test_unknown_kind_and_oversized_frames_are_refused() -> None:
    with pytest.raises(WorkerProtocolError, match="unknown frame kind 99"):
        FrameReader().feed(FRAME.pack(99, 0.0, 0))
    with pytest.raises(WorkerProtocolError, match="corrupt"):
        FrameReader().feed(FRAME.pack(Kind.OUTPUT, 0.0, MAX_PAYLOAD + 1))


def test_reports_are_json_lines_in_any_split() -> None:
    stream = encode_report({"type": "stats", "n": 1}) + encode_report({"type": "closed"})
    reader = ReportReader()
    assert reader.feed(stream[:5]) == []
    assert reader.feed(stream[5:]) == [{"type": "stats", "n": 1}, {"type": "closed"}]


@pytest.mark.parametrize("line", [b"not json\n", b"[1]\n", b'{"no": "type"}\n'])
def test_malformed_reports_are_refused(line: bytes) -> None:
    with pytest.raises(WorkerProtocolError):
        ReportReader().feed(line)


def test_start_request_round_trips() -> None:
    peer = Peer(name="ci.example.ts.net", id="nCI", addresses=("100.64.0.9",),
                tags=("tag:ci", "tag:prod"))
    header = CastHeader.for_session(peer, ssh_user="root", local_user="root",
                                    connection_id="ssh-conn-20260101T000000-0123456789",
                                    started_at=time.time(), width=80, height=24,
                                    command="echo \u00e9t\u00e9 \u2028", includes_stderr=True)
    request = StartRequest(
        (RecorderAddress("100.64.0.5", 80), RecorderAddress("fd7a::5", 8080)), header,
        RecordingOptions(enforce=True, source_address="100.64.0.1",
                         local_dir=Path("/var/tmp/casts"), buffer_limit=4096))
    assert StartRequest.decode(request.encode()) == request


@pytest.mark.parametrize("data", [b"", b"{}", b'{"targets": [], "header": {}, "options": {}}',
                                  b'{"targets": [["h"]], "header": 1, "options": []}'])
def test_malformed_start_requests_are_refused(data: bytes) -> None:
    with pytest.raises(WorkerProtocolError, match="malformed start request"):
        StartRequest.decode(data)
