"""The recording wire protocol (docs/recording.md) as sans-I/O state: bytes in, events, bytes out.

Nothing here touches a socket or a clock: callers pass received bytes and the current
(monotonic) time, and send what ``data_to_send`` returns. HTTP framing is done by the h2 and
h11 state machines (themselves sans-I/O); this module adds what the recorder protocol
decides on top of them:

- v2 (``POST /v2/record`` over h2c): the response body is a stream of JSON objects
  ``{"ack": n}`` / ``{"error": "..."}``. They are split the way Go's ``json.Decoder`` reads
  them in tailscaled: by object boundaries, whitespace (newlines included) optional between
  them, objects possibly split across reads. An ack is cumulative, never decreases and never
  exceeds what was sent (tssh is stricter than tailscaled here: a recorder that acks bytes it
  never got is broken). Any frame, even one acking nothing new, restarts the ack window; no
  frame within it fails the upload (tailscaled: 30 s). An error frame fails the upload.
  The response ending before the client ended its body is a failure (the upload "ended
  before the session"); after the body ended, it is the normal end.
- v1 (``POST /record`` over HTTP/1.1): ``Expect: 100-continue`` and a chunked body; any final
  response before ``100 Continue`` fails the attempt, a final response before the body ended
  fails the upload, and only ``200`` after the body ended is success.
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass
from typing import Literal

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import h11

from tssh.errors import RecorderProtocolError, RecordingFailed

RECORD_V2_PATH = "/v2/record"
RECORD_V1_PATH = "/record"
USER_AGENT = "tssh-recording/1"
MAX_FRAME_BYTES = 64 * 1024  # a response frame larger than this is a broken recorder


@dataclass(frozen=True)
class AckFrame:
    """``{"ack": n}``: the recorder has received ``acked`` body bytes so far."""

    acked: int


@dataclass(frozen=True)
class ErrorFrame:
    """``{"error": "..."}``: the recorder failed to store the recording (always last)."""

    message: str


Frame = AckFrame | ErrorFrame


class FrameDecoder:
    """Splits a v2 response body into frames, whatever the read boundaries."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._buf = ""
        self._pos = 0  # scan position inside _buf
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += self._utf8.decode(data)
        frames: list[Frame] = []
        start = 0
        i = self._pos
        buf = self._buf
        while i < len(buf):
            ch = buf[i]
            if self._depth == 0:
                if ch in " \t\r\n":
                    start = i + 1
                elif ch == "{":
                    start = i
                    self._depth = 1
                else:
                    raise RecorderProtocolError(
                        f"recorder sent {buf[i:i + 20]!r} where an ack frame was expected")
            elif self._in_string:
                if self._escaped:
                    self._escaped = False
                elif ch == "\\":
                    self._escaped = True
                elif ch == '"':
                    self._in_string = False
            elif ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                self._depth -= 1
                if self._depth == 0:
                    frames.append(parse_frame(buf[start:i + 1]))
                    start = i + 1
            i += 1
        self._buf = buf[start:]
        self._pos = i - start
        if len(self._buf) > MAX_FRAME_BYTES:
            raise RecorderProtocolError("recorder sent an ack frame larger than 64 KiB")
        return frames

    def end(self) -> None:
        """The response body ended: a frame cut in the middle is a protocol error."""
        if self._buf.strip() or self._utf8.decode(b"", True):
            raise RecorderProtocolError("recorder ended its response inside an ack frame")


def parse_frame(text: str) -> Frame:
    """One JSON object of the v2 response, with Go's zero values for missing fields."""
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise RecorderProtocolError(f"recorder sent a malformed ack frame: {e}") from None
    if not isinstance(obj, dict):
        raise RecorderProtocolError("recorder sent an ack frame that is not a JSON object")
    error = obj.get("error", "")
    if not isinstance(error, str):
        raise RecorderProtocolError("recorder sent a non-string error frame")
    if error:
        return ErrorFrame(error)
    ack = obj.get("ack", 0)
    if isinstance(ack, bool) or not isinstance(ack, int) or ack < 0:
        raise RecorderProtocolError(f"recorder sent an invalid ack {ack!r}")
    return AckFrame(ack)


class AckTracker:
    """Counts bytes sent and acknowledged, and when the next frame is due."""

    def __init__(self, window: float, now: float) -> None:
        self.window = window
        self.sent = 0
        self.acked = 0
        self.last_frame_at = now

    @property
    def unacked(self) -> int:
        return self.sent - self.acked

    @property
    def deadline(self) -> float:
        """The time by which the recorder must have sent another frame."""
        return self.last_frame_at + self.window

    def expired(self, now: float) -> bool:
        return now >= self.deadline

    def on_sent(self, n: int) -> None:
        self.sent += n

    def on_frame(self, frame: Frame, now: float) -> None:
        if isinstance(frame, ErrorFrame):
            raise RecordingFailed(f"recorder reported an error: {frame.message}")
        if frame.acked < self.acked:
            raise RecorderProtocolError(
                f"recorder's ack went backwards ({frame.acked} after {self.acked})")
        if frame.acked > self.sent:
            raise RecorderProtocolError(
                f"recorder acked {frame.acked} bytes but only {self.sent} were sent")
        self.acked = frame.acked
        self.last_frame_at = now

    def check(self, now: float) -> None:
        if self.expired(now):
            raise RecordingFailed(
                f"no ack frame from the recorder in {self.window:g}s")


# Events reported by V2Connection.receive / V1Connection.receive.
@dataclass(frozen=True)
class ProbeAnswered:
    """The ``HEAD /v2/record`` probe got a final response."""

    status: int


@dataclass(frozen=True)
class UploadAnswered:
    """The upload got its response headers (v2) or final response (v1)."""

    status: int


@dataclass(frozen=True)
class Continue:
    """v1: the recorder answered ``100 Continue``: it is ready for the body."""


@dataclass(frozen=True)
class Acked:
    acked: int


@dataclass(frozen=True)
class WindowOpened:
    """v2: flow control lets more body bytes go out."""


@dataclass(frozen=True)
class UploadEnded:
    """The recorder ended its response after the body ended: the upload succeeded."""


WireEvent = ProbeAnswered | UploadAnswered | Continue | Acked | WindowOpened | UploadEnded


class V2Connection:
    """One h2c connection to a recorder: the ``HEAD`` probe, then the ``POST`` upload."""

    protocol: Literal["v2"] = "v2"

    def __init__(self, authority: str, *, ack_window: float, now: float) -> None:
        self.authority = authority
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None))
        self._probe_stream: int | None = None
        self._upload_stream: int | None = None
        self._frames = FrameDecoder()
        self.tracker = AckTracker(ack_window, now)
        self.upload_status: int | None = None
        self.body_ended = False
        self.upload_ended = False
        self._received_any = False
        self._reset = False

    def data_to_send(self) -> bytes:
        return self._h2.data_to_send()

    def initiate(self) -> None:
        """Queue the connection preface (prior knowledge: no Upgrade dance)."""
        self._h2.initiate_connection()
        self._h2.update_settings({h2.settings.SettingCodes.ENABLE_PUSH: 0})

    def start_probe(self) -> None:
        self._probe_stream = self._h2.get_next_available_stream_id()
        self._h2.send_headers(self._probe_stream, self._headers("HEAD"), end_stream=True)

    def start_upload(self, now: float) -> None:
        self._upload_stream = self._h2.get_next_available_stream_id()
        headers = [*self._headers("POST"), (b"content-type", b"application/x-asciicast")]
        self._h2.send_headers(self._upload_stream, headers)
        self.tracker.last_frame_at = now

    def _headers(self, method: str) -> list[tuple[bytes, bytes]]:
        return [(b":method", method.encode()), (b":scheme", b"http"),
                (b":authority", self.authority.encode()), (b":path", RECORD_V2_PATH.encode()),
                (b"user-agent", USER_AGENT.encode())]

    def sendable(self) -> int:
        """How many body bytes flow control lets out now (one DATA frame at most)."""
        if self._upload_stream is None or self.body_ended or self.upload_ended or self._reset:
            return 0
        try:
            window = self._h2.local_flow_control_window(self._upload_stream)
        except h2.exceptions.StreamClosedError:
            return 0
        return max(0, min(window, self._h2.max_outbound_frame_size))

    def send_body(self, data: bytes) -> None:
        """Queue body bytes; ``len(data)`` must not exceed ``sendable()``."""
        if self._upload_stream is None:
            raise RuntimeError("upload not started")
        try:
            self._h2.send_data(self._upload_stream, data)
        except h2.exceptions.H2Error as e:
            raise RecordingFailed(f"cannot send to the recorder: {e!r}") from None
        self.tracker.on_sent(len(data))

    def end_body(self) -> None:
        if self._upload_stream is None:
            raise RuntimeError("upload not started")
        if not self.body_ended and not self.upload_ended:
            try:
                self._h2.end_stream(self._upload_stream)
            except h2.exceptions.H2Error as e:
                raise RecordingFailed(f"cannot end the upload: {e!r}") from None
        self.body_ended = True

    def receive(self, data: bytes, now: float) -> list[WireEvent]:
        """Feed bytes from the socket (``b""`` at EOF); raises RecordingFailed on failure."""
        if not data:
            if self._upload_stream is not None and not self.upload_ended:
                raise RecordingFailed("recorder closed the connection during the upload")
            raise RecordingFailed("recorder closed the connection")
        if not self._received_any and data.startswith(b"HTTP/"):
            raise RecorderProtocolError("recorder answered in HTTP/1 (no h2c on this port)")
        self._received_any = True
        try:
            h2_events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            raise RecorderProtocolError(f"HTTP/2 protocol error: {e}") from None
        out: list[WireEvent] = []
        for ev in h2_events:
            out.extend(self._handle(ev, now))
        return out

    def _handle(self, ev: h2.events.Event, now: float) -> list[WireEvent]:
        if isinstance(ev, h2.events.ResponseReceived):
            status = _status(ev.headers)
            if ev.stream_id == self._probe_stream:
                return [ProbeAnswered(status)]
            if ev.stream_id == self._upload_stream:
                self.upload_status = status
                self.tracker.last_frame_at = now
                if status != 200:
                    raise RecordingFailed(f"recorder answered {status} to POST /v2/record")
                return [UploadAnswered(status)]
        elif isinstance(ev, h2.events.DataReceived):
            if ev.flow_controlled_length:
                self._h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            if ev.stream_id == self._upload_stream and ev.data:
                events: list[WireEvent] = []
                for frame in self._frames.feed(ev.data):
                    self.tracker.on_frame(frame, now)
                    assert isinstance(frame, AckFrame)  # error frames raise above
                    events.append(Acked(frame.acked))
                return events
        elif isinstance(ev, h2.events.StreamEnded):
            if ev.stream_id == self._upload_stream:
                self._frames.end()
                self.upload_ended = True
                if not self.body_ended:
                    raise RecordingFailed("recorder ended the upload before the session ended")
                return [UploadEnded()]
        elif isinstance(ev, h2.events.StreamReset):
            if ev.stream_id in (self._upload_stream, self._probe_stream):
                self._reset = True
                raise RecordingFailed(f"recorder reset the stream (error code {ev.error_code})")
        elif isinstance(ev, h2.events.ConnectionTerminated):
            if self._upload_stream is None or not self.upload_ended:
                raise RecordingFailed(
                    f"recorder closed the HTTP/2 connection (error code {ev.error_code})")
        elif isinstance(ev, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            return [WindowOpened()]
        return []


def _status(headers: list[tuple[bytes, bytes]] | None) -> int:
    for name, value in headers or ():
        if name == b":status":
            try:
                return int(value)
            except ValueError:
                break
    raise RecorderProtocolError("recorder sent a response without a valid :status")


class V1Connection:
    """One HTTP/1.1 ``POST /record`` with ``Expect: 100-continue`` and a chunked body."""

    protocol: Literal["v1"] = "v1"

    def __init__(self, authority: str) -> None:
        self.authority = authority
        self._h11 = h11.Connection(h11.CLIENT)
        self._out = b""
        self.got_continue = False
        self.body_ended = False
        self.upload_ended = False
        self.sent = 0

    def data_to_send(self) -> bytes:
        out, self._out = self._out, b""
        return out

    def start_upload(self) -> None:
        request = h11.Request(method="POST", target=RECORD_V1_PATH, headers=[
            ("Host", self.authority), ("User-Agent", USER_AGENT),
            ("Content-Type", "application/x-asciicast"), ("Expect", "100-continue"),
            ("Transfer-Encoding", "chunked"),
        ])
        self._out += self._h11.send(request) or b""

    def send_body(self, data: bytes) -> None:
        if not data:
            return
        self._out += self._h11.send(h11.Data(data=data)) or b""
        self.sent += len(data)

    def end_body(self) -> None:
        if not self.body_ended and self._h11.our_state is h11.SEND_BODY:
            self._out += self._h11.send(h11.EndOfMessage()) or b""
        self.body_ended = True

    def receive(self, data: bytes, now: float = 0.0) -> list[WireEvent]:
        """Feed bytes from the socket (``b""`` at EOF); raises RecordingFailed on failure."""
        if not data and not self.upload_ended:
            if not self.got_continue:
                raise RecordingFailed("recorder closed the connection before 100 Continue")
            raise RecordingFailed("recorder closed the connection during the upload")
        try:
            self._h11.receive_data(data)
            out: list[WireEvent] = []
            while True:
                ev = self._h11.next_event()
                if ev is h11.NEED_DATA or ev is h11.PAUSED:
                    break
                out.extend(self._handle(ev))
                if isinstance(ev, h11.ConnectionClosed):
                    break
        except h11.RemoteProtocolError as e:
            raise RecorderProtocolError(f"HTTP/1.1 protocol error: {e}") from None
        return out

    def _handle(self, ev: object) -> list[WireEvent]:
        if isinstance(ev, h11.InformationalResponse):
            if ev.status_code == 100:
                self.got_continue = True
                return [Continue()]
            return []
        if isinstance(ev, h11.Response):
            if not self.got_continue:
                raise RecordingFailed(
                    f"recorder answered {ev.status_code} before 100 Continue")
            if not self.body_ended:
                raise RecordingFailed(
                    f"recorder answered {ev.status_code} before the session ended")
            if ev.status_code != 200:
                raise RecordingFailed(f"recorder answered {ev.status_code} to the upload")
            self.upload_ended = True
            return [UploadAnswered(ev.status_code), UploadEnded()]
        return []
