import json

import h2.config
import h2.connection
import h2.events
import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tssh.errors import RecorderProtocolError, RecordingFailed
from tssh.recording.wire import (
    Acked,
    AckFrame,
    AckTracker,
    Continue,
    ErrorFrame,
    FrameDecoder,
    ProbeAnswered,
    UploadAnswered,
    UploadEnded,
    V1Connection,
    V2Connection,
    WindowOpened,
)

# --- frame decoding ---------------------------------------------------------------------


def test_newline_delimited_and_concatenated_frames() -> None:
    dec = FrameDecoder()
    assert dec.feed(b'{"ack":5}\n{"ack":9}{"ack": 12}  \r\n\t{}') == [
        AckFrame(5), AckFrame(9), AckFrame(12), AckFrame(0)]


def test_frame_split_at_every_byte() -> None:
    stream = '{"ack":1}\n{"ack":2, "note":"a}{\\"b"}{"error":"disk full ☹"}'.encode()
    for cut in range(len(stream) + 1):
        dec = FrameDecoder()
        frames = dec.feed(stream[:cut]) + dec.feed(stream[cut:])
        assert frames == [AckFrame(1), AckFrame(2), ErrorFrame("disk full ☹")], cut
        dec.end()


@given(st.lists(st.integers(0, 2**40), max_size=6), st.lists(st.integers(1, 7), max_size=30))
def test_any_chunking_gives_the_same_frames(acks: list[int], sizes: list[int]) -> None:
    stream = b"".join(json.dumps({"ack": a}).encode() + b" " * (a % 2) for a in acks)
    dec = FrameDecoder()
    frames = []
    pos = 0
    for size in [*sizes, len(stream)]:
        frames += dec.feed(stream[pos:pos + size])
        pos += size
    assert frames == [AckFrame(a) for a in acks]


@pytest.mark.parametrize("bad", [b'[1]', b'"ack"', b'{"ack":-1}', b'{"ack":1.5}', b'{"ack":true}',
                                 b'{"ack":"3"}', b'{"error":5}', b'{"ack":1,}', b'ok'])
def test_malformed_frames_are_protocol_errors(bad: bytes) -> None:
    with pytest.raises(RecorderProtocolError):
        FrameDecoder().feed(bad)


def test_response_ending_inside_a_frame_is_an_error() -> None:
    dec = FrameDecoder()
    assert dec.feed(b'{"ack":1}{"ack"') == [AckFrame(1)]
    with pytest.raises(RecorderProtocolError):
        dec.end()


def test_oversized_frame_is_refused() -> None:
    with pytest.raises(RecorderProtocolError, match="64 KiB"):
        FrameDecoder().feed(b'{"pad":"' + b"x" * 70_000)


# --- ack tracking -----------------------------------------------------------------------


def test_acks_are_cumulative_and_bounded_by_what_was_sent() -> None:
    t = AckTracker(window=30.0, now=0.0)
    t.on_sent(100)
    t.on_frame(AckFrame(40), 1.0)
    assert (t.sent, t.acked, t.unacked) == (100, 40, 60)
    t.on_frame(AckFrame(40), 2.0)  # nothing new: still restarts the window
    assert t.deadline == 32.0
    with pytest.raises(RecorderProtocolError, match="backwards"):
        t.on_frame(AckFrame(39), 3.0)
    with pytest.raises(RecorderProtocolError, match="only 100"):
        t.on_frame(AckFrame(101), 3.0)


def test_error_frame_fails_the_upload() -> None:
    with pytest.raises(RecordingFailed, match="disk full"):
        AckTracker(30.0, 0.0).on_frame(ErrorFrame("disk full"), 1.0)


def test_ack_window_expiry() -> None:
    t = AckTracker(window=30.0, now=10.0)
    t.check(39.9)
    t.on_frame(AckFrame(0), 20.0)
    t.check(49.9)
    assert not t.expired(49.9) and t.expired(50.0)
    with pytest.raises(RecordingFailed, match="30s"):
        t.check(50.0)


# --- v2 over an in-memory h2 server -------------------------------------------------------


class H2Peer:
    def __init__(self) -> None:
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.conn.initiate_connection()
        self.body = b""
        self.requests: dict[int, bytes] = {}

    def receive(self, data: bytes) -> list[h2.events.Event]:
        events = self.conn.receive_data(data)
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self.requests[ev.stream_id] = dict(ev.headers)[b":method"]
            if isinstance(ev, h2.events.DataReceived):
                self.body += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        return events


def pump(client: V2Connection, server: H2Peer, now: float = 0.0) -> list[object]:
    server.receive(client.data_to_send())
    return client.receive(server.conn.data_to_send(), now)


def test_v2_probe_upload_acks_and_end() -> None:
    client = V2Connection("127.0.0.1:80", ack_window=30.0, now=0.0)
    server = H2Peer()
    client.initiate()
    client.start_probe()
    server.receive(client.data_to_send())
    server.conn.send_headers(1, [(b":status", b"200")], end_stream=True)
    events = client.receive(server.conn.data_to_send(), 0.0)
    assert ProbeAnswered(200) in events
    client.start_upload(1.0)
    server.receive(client.data_to_send())
    assert server.requests[3] == b"POST"
    server.conn.send_headers(3, [(b":status", b"200")])
    assert UploadAnswered(200) in client.receive(server.conn.data_to_send(), 1.0)
    n = client.sendable()
    assert n > 0
    client.send_body(b"hello\n")
    server.receive(client.data_to_send())
    assert server.body == b"hello\n"
    server.conn.send_data(3, b'{"ack":3}{"a')
    server.conn.send_data(3, b'ck":6}\n')
    events = client.receive(server.conn.data_to_send(), 2.0)
    assert [e for e in events if isinstance(e, Acked)] == [Acked(3), Acked(6)]
    assert client.tracker.deadline == 32.0
    client.end_body()
    server.receive(client.data_to_send())
    server.conn.send_data(3, b'{"ack":6}', end_stream=True)
    events = client.receive(server.conn.data_to_send(), 3.0)
    assert events[-1] == UploadEnded() and client.upload_ended
    assert client.sendable() == 0


def started_upload() -> tuple[V2Connection, H2Peer]:
    client = V2Connection("r:80", ack_window=30.0, now=0.0)
    server = H2Peer()
    client.initiate()
    client.start_upload(0.0)
    server.receive(client.data_to_send())
    server.conn.send_headers(1, [(b":status", b"200")])
    client.receive(server.conn.data_to_send(), 0.0)
    return client, server


def test_v2_response_ending_before_the_body_is_an_early_end() -> None:
    client, server = started_upload()
    server.conn.send_data(1, b'{"ack":0}', end_stream=True)
    with pytest.raises(RecordingFailed, match="before the session ended"):
        client.receive(server.conn.data_to_send(), 1.0)


def test_v2_error_frame_and_reset_fail_the_upload() -> None:
    client, server = started_upload()
    server.conn.send_data(1, b'{"error":"bucket gone"}')
    with pytest.raises(RecordingFailed, match="bucket gone"):
        client.receive(server.conn.data_to_send(), 1.0)
    client, server = started_upload()
    server.conn.reset_stream(1)
    with pytest.raises(RecordingFailed, match="reset"):
        client.receive(server.conn.data_to_send(), 1.0)


def test_v2_flow_control_limits_what_can_be_sent() -> None:
    client, server = started_upload()
    total = 0
    while (n := client.sendable()) > 0:
        client.send_body(b"x" * n)
        total += n
    assert total == 65535  # the default initial window, nothing acknowledged yet
    server.receive(client.data_to_send())  # the peer acknowledges: WINDOW_UPDATE
    events = client.receive(server.conn.data_to_send(), 1.0)
    assert WindowOpened() in events and client.sendable() > 0


def test_v2_eof_and_garbage() -> None:
    client, _ = started_upload()
    with pytest.raises(RecordingFailed, match="closed the connection"):
        client.receive(b"", 1.0)
    client = V2Connection("r:80", ack_window=30.0, now=0.0)
    client.initiate()
    client.start_probe()
    with pytest.raises(RecorderProtocolError, match="HTTP/1"):
        client.receive(b"HTTP/1.1 400 Bad Request\r\n\r\n", 0.0)


# --- v1 over an in-memory h11 server --------------------------------------------------------


def v1_pair() -> tuple[V1Connection, h11.Connection]:
    client = V1Connection("127.0.0.1:80")
    server = h11.Connection(h11.SERVER)
    client.start_upload()
    server.receive_data(client.data_to_send())
    req = server.next_event()
    assert isinstance(req, h11.Request)
    assert (b"expect", b"100-continue") in req.headers
    assert (b"transfer-encoding", b"chunked") in req.headers
    assert req.target == b"/record"
    return client, server


def test_v1_continue_body_and_200() -> None:
    client, server = v1_pair()
    events = client.receive(server.send(h11.InformationalResponse(status_code=100, headers=[]))
                            or b"")
    assert events == [Continue()]
    client.send_body(b"line1\n")
    client.send_body(b"line2\n")
    client.end_body()
    server.receive_data(client.data_to_send())
    got = b""
    while True:
        ev = server.next_event()
        if isinstance(ev, h11.Data):
            got += ev.data
        elif isinstance(ev, h11.EndOfMessage):
            break
    assert got == b"line1\nline2\n"
    out = server.send(h11.Response(status_code=200, headers=[("Content-Length", "0")])) or b""
    out += server.send(h11.EndOfMessage()) or b""
    assert client.receive(out) == [UploadAnswered(200), UploadEnded()]


def test_v1_response_before_continue_fails() -> None:
    client, server = v1_pair()
    out = server.send(h11.Response(status_code=403, headers=[("Content-Length", "0")])) or b""
    with pytest.raises(RecordingFailed, match="403 before 100 Continue"):
        client.receive(out)


def test_v1_final_response_before_body_end_is_early_end() -> None:
    client, server = v1_pair()
    client.receive(server.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
    out = server.send(h11.Response(status_code=200, headers=[("Content-Length", "0")])) or b""
    with pytest.raises(RecordingFailed, match="before the session ended"):
        client.receive(out)


def test_v1_non_200_at_end_and_eof() -> None:
    client, server = v1_pair()
    client.receive(server.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
    client.end_body()
    out = server.send(h11.Response(status_code=500, headers=[("Content-Length", "0")])) or b""
    with pytest.raises(RecordingFailed, match="500"):
        client.receive(out)
    client, _ = v1_pair()
    with pytest.raises(RecordingFailed, match="before 100 Continue"):
        client.receive(b"")


def test_v2_sending_on_a_reset_stream_is_a_recording_failure() -> None:
    client, server = started_upload()
    server.conn.reset_stream(1)
    with pytest.raises(RecordingFailed):
        client.receive(server.conn.data_to_send(), 1.0)
    assert client.sendable() == 0
    with pytest.raises(RecordingFailed, match="cannot send"):
        client.send_body(b"x")
    with pytest.raises(RecordingFailed, match="cannot end"):
        client.end_body()
