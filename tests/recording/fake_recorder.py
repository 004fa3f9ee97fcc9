"""A small recorder for the uploader's tests: h2c and HTTP/1.1 on one port, failures on demand.

Speaks docs/recording.md as a recorder does (HEAD probe, full-duplex ``/v2/record`` with cumulative
acks, ``/record`` with ``100 Continue``) and misbehaves when told: no h2c, no v2, refusal,
stall, death or an early end after N body bytes, no acks, error frames.
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings
import h11

from recorder import h2tuning

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@dataclass
class Behavior:
    h2c: bool = True  # False: an HTTP/1.1-only server (answers the h2 preface with a 400)
    v2: bool = True  # False: HEAD /v2/record -> 404 (an older recorder)
    status: int = 200  # answer to POST /v2/record, or final answer to /record
    continue_status: int = 100  # v1: answer before the body (e.g. 403: refuse at once)
    acks: bool = True
    ack_until: int | None = None  # stop acking once this many body bytes arrived
    ack_separator: bytes = b"\n"  # b"": frames concatenated with no newline
    split_acks: bool = False  # send each frame in two DATA frames
    idle_ack: float | None = None  # seconds between acks while no data arrives
    stall_after: int | None = None  # stop reading the socket after this many body bytes
    stall_for: float | None = None  # then resume after this long (None: never)
    release: asyncio.Event | None = None  # or resume once the test sets it (no timer race)
    die_after: int | None = None  # abort the TCP connection after this many body bytes
    end_after: int | None = None  # end the response (final ack) after this many bytes
    error_after: int | None = None  # send an error frame and end after this many bytes
    silent: bool = False  # accept connections, read, never answer
    small_receive_buffer: bool = False  # so that a stall backs up to the client quickly
    keep_body: bool = True  # False: count the bytes only (benchmarks)
    ack_per_read: bool = False  # one ack per socket read, not per DATA frame (less chatty)
    tuned: bool = False  # advertise the recorder node's HTTP/2 windows and frame size


@dataclass
class Upload:
    protocol: str
    peer: str  # source address of the uploader
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False
    size: int = 0  # bytes received (all of them in body unless keep_body is False)

    def add(self, data: bytes, keep: bool) -> int:
        self.size += len(data)
        if keep:
            self.body += data
        return self.size


class FakeRecorder:
    def __init__(self, behavior: Behavior | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.behavior = behavior or Behavior()
        self.host = host
        self.port = port
        self.uploads: list[Upload] = []
        self.probes = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.closed = asyncio.Event()

    @property
    def open_connections(self) -> int:
        return len(self._writers)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    async def start(self) -> FakeRecorder:
        self._server = await asyncio.start_server(self._serve, self.host, self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self.closed.set()
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=5)
            for t in pending:
                t.cancel()
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> FakeRecorder:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        if self.behavior.small_receive_buffer:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            first = await reader.read(65536)
            if self.behavior.silent:
                while await reader.read(65536):
                    pass
                return
            if first.startswith(PREFACE[:len(first)]) and first:
                while len(first) < len(PREFACE) and (more := await reader.read(65536)):
                    first += more
                if not self.behavior.h2c:
                    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
                    await writer.drain()
                    return
                await _H2Session(self, reader, writer).run(first)
            else:
                await _H1Session(self, reader, writer).run(first)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()
            self._tasks.discard(task)

    def peer_of(self, writer: asyncio.StreamWriter) -> str:
        return str(writer.get_extra_info("peername")[0])


class _H2Session:
    def __init__(self, rec: FakeRecorder, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.rec = rec
        self.b = rec.behavior
        self.reader = reader
        self.writer = writer
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.uploads: dict[int, Upload] = {}
        self.ended: set[int] = set()
        self.unacked: set[int] = set()  # ack_per_read: streams with data since the last ack

    def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())

    def frame(self, sid: int, obj: dict[str, object], end: bool = False) -> None:
        data = json.dumps(obj).encode() + self.b.ack_separator
        if self.b.split_acks and len(data) > 1:
            self.conn.send_data(sid, data[:len(data) // 2])
            data = data[len(data) // 2:]
        self.conn.send_data(sid, data, end_stream=end)
        if end:
            self.ended.add(sid)
        self.flush()

    async def idle_acks(self, sid: int) -> None:
        assert self.b.idle_ack is not None
        while sid not in self.ended:
            await asyncio.sleep(self.b.idle_ack)
            if sid not in self.ended:
                self.frame(sid, {"ack": self.uploads[sid].size})

    async def run(self, first: bytes) -> None:
        self.conn.initiate_connection()
        if self.b.tuned:
            self.conn.update_settings({
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: h2tuning.STREAM_WINDOW,
                h2.settings.SettingCodes.MAX_FRAME_SIZE: h2tuning.MAX_FRAME,
            })
            self.conn.increment_flow_control_window(
                h2tuning.CONNECTION_WINDOW - 65535)  # from the default window
        data = first
        idle: list[asyncio.Task[None]] = []
        try:
            while data:
                self.unacked.clear()
                for ev in self.conn.receive_data(data):
                    if await self.handle(ev, idle) == "stop":
                        return
                for sid in self.unacked - self.ended:
                    self.frame(sid, {"ack": self.uploads[sid].size})
                self.flush()
                await self.writer.drain()
                data = await self.reader.read(65536)
        finally:
            for t in idle:
                t.cancel()

    async def handle(self, ev: h2.events.Event, idle: list[asyncio.Task[None]]) -> str | None:
        b = self.b
        if isinstance(ev, h2.events.RequestReceived):
            headers = dict(ev.headers)
            method, path = headers[b":method"], headers[b":path"]
            if method == b"HEAD":
                self.rec.probes += 1
                status = b"200" if b.v2 and path == b"/v2/record" else b"404"
                self.conn.send_headers(ev.stream_id, [(b":status", status)], end_stream=True)
            elif method == b"POST" and path == b"/v2/record" and b.v2:
                if b.status != 200:
                    self.conn.send_headers(ev.stream_id, [(b":status", str(b.status).encode())],
                                           end_stream=True)
                    return None
                upload = Upload("v2", self.rec.peer_of(self.writer))
                self.rec.uploads.append(upload)
                self.uploads[ev.stream_id] = upload
                self.conn.send_headers(ev.stream_id, [(b":status", b"200")])
                if b.idle_ack is not None and b.acks:
                    idle.append(asyncio.create_task(self.idle_acks(ev.stream_id)))
            else:
                self.conn.send_headers(ev.stream_id, [(b":status", b"404")], end_stream=True)
        elif isinstance(ev, h2.events.DataReceived):
            self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            upload = self.uploads.get(ev.stream_id)
            if upload is None or ev.stream_id in self.ended:
                return None
            n = upload.add(ev.data, b.keep_body)
            if b.die_after is not None and n >= b.die_after:
                self.writer.transport.abort()
                return "stop"
            if b.error_after is not None and n >= b.error_after:
                self.frame(ev.stream_id, {"error": "storage failed"}, end=True)
                return None
            if b.end_after is not None and n >= b.end_after:
                self.frame(ev.stream_id, {"ack": n}, end=True)
                return None
            acking = b.acks and (b.ack_until is None or n <= b.ack_until)
            if acking and b.ack_per_read:
                self.unacked.add(ev.stream_id)
            elif acking:
                self.frame(ev.stream_id, {"ack": n})
            if b.stall_after is not None and n >= b.stall_after:
                b.stall_after = None
                if b.release is not None:
                    await b.release.wait()
                elif b.stall_for is None:
                    await self.rec.closed.wait()
                    return "stop"
                else:
                    await asyncio.sleep(b.stall_for)
        elif isinstance(ev, h2.events.StreamEnded):
            upload = self.uploads.get(ev.stream_id)
            if upload is not None and ev.stream_id not in self.ended:
                upload.complete = True
                self.frame(ev.stream_id, {"ack": upload.size}, end=True)
        return None


class _H1Session:
    def __init__(self, rec: FakeRecorder, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.rec = rec
        self.b = rec.behavior
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(h11.SERVER)

    def send(self, *events: object) -> None:
        for ev in events:
            self.writer.write(self.conn.send(ev) or b"")  # type: ignore[arg-type]

    async def run(self, first: bytes) -> None:
        b = self.b
        self.conn.receive_data(first)
        upload: Upload | None = None
        while True:
            ev = self.conn.next_event()
            if ev is h11.NEED_DATA:
                await self.writer.drain()
                self.conn.receive_data(await self.reader.read(65536))
                continue
            if isinstance(ev, h11.ConnectionClosed) or ev is h11.PAUSED:
                return
            if isinstance(ev, h11.Request):
                if ev.method != b"POST" or ev.target != b"/record":
                    self.send(h11.Response(status_code=404, headers=[("Content-Length", "0")]),
                              h11.EndOfMessage())
                    await self.writer.drain()
                    return
                if b.continue_status != 100:
                    self.send(h11.Response(status_code=b.continue_status,
                                           headers=[("Content-Length", "0")]),
                              h11.EndOfMessage())
                    await self.writer.drain()
                    return
                upload = Upload("v1", self.rec.peer_of(self.writer))
                self.rec.uploads.append(upload)
                self.send(h11.InformationalResponse(status_code=100, headers=[]))
            elif isinstance(ev, h11.Data):
                assert upload is not None
                n = upload.add(ev.data, b.keep_body)
                if b.die_after is not None and n >= b.die_after:
                    self.writer.transport.abort()
                    return
                if b.end_after is not None and n >= b.end_after:
                    self.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]),
                              h11.EndOfMessage())
                    await self.writer.drain()
                    return
                if b.stall_after is not None and n >= b.stall_after:
                    b.stall_after = None
                    if b.release is not None:
                        await b.release.wait()
                    elif b.stall_for is None:
                        await self.rec.closed.wait()
                        return
                    else:
                        await asyncio.sleep(b.stall_for)
            elif isinstance(ev, h11.EndOfMessage):
                assert upload is not None
                upload.complete = True
                self.send(h11.Response(status_code=b.status, headers=[("Content-Length", "0")]),
                          h11.EndOfMessage())
                await self.writer.drain()
                return
