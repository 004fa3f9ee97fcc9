"""A full-duplex h2c upload client behaving like Tailscale's recorder client (prior knowledge
HTTP/2, body streamed while ack frames are read). httpx sends the whole request body before it
reads the response, so this drives the h2 library over an asyncio socket directly.
Used by the tests and by benchmarks/bench_recorder.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import h2.config
import h2.connection
import h2.events


class H2Upload:
    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.frames: list[dict[str, Any]] = []  # every JSON frame of the response
        self.ack_times: list[tuple[float, int]] = []  # (monotonic time, ack value)
        self.ended = asyncio.Event()
        self.reset: int | None = None
        self._got_headers = asyncio.Event()
        self._changed = asyncio.Event()
        self._window = asyncio.Event()
        self._buf = b""
        self._sid = 1
        self._reader_task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, host: str, port: int, *, local_address: str | None = None,
        path: str = "/v2/record", method: str = "POST",
    ) -> H2Upload:
        self = cls()
        local = (local_address, 0) if local_address else None
        self._r, self._w = await asyncio.open_connection(host, port, local_addr=local)
        self._conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self._conn.initiate_connection()
        self._conn.send_headers(
            self._sid,
            [(":method", method), (":path", path), (":scheme", "http"),
             (":authority", f"{host}:{port}"), ("content-type", "application/octet-stream")],
            end_stream=method == "HEAD",
        )
        await self._flush()
        self._reader_task = asyncio.create_task(self._read_loop())
        return self

    async def wait_headers(self, timeout: float = 5.0) -> int:
        await asyncio.wait_for(self._got_headers.wait(), timeout)
        assert self.status is not None
        return self.status

    @property
    def acks(self) -> list[int]:
        return [f["ack"] for f in self.frames if "ack" in f]

    @property
    def error(self) -> str | None:
        for f in self.frames:
            if "error" in f:
                return str(f["error"])
        return None

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.ended.is_set() or self.error is not None:
                raise ConnectionError(f"recorder ended the upload: {self.error}")
            window = min(
                self._conn.local_flow_control_window(self._sid),
                self._conn.max_outbound_frame_size,
            )
            if window <= 0:
                self._window.clear()
                self._changed.clear()
                await asyncio.wait(
                    [asyncio.ensure_future(self._window.wait()),
                     asyncio.ensure_future(self._changed.wait())],
                    timeout=30, return_when=asyncio.FIRST_COMPLETED,
                )
                continue
            self._conn.send_data(self._sid, bytes(view[:window]))
            view = view[window:]
            await self._flush()

    async def end(self) -> None:
        if not self.ended.is_set():
            self._conn.end_stream(self._sid)
            await self._flush()

    async def wait_ack(self, at_least: int, timeout: float = 10.0) -> float:
        """Waits for an ack >= ``at_least``; returns the time it arrived (monotonic)."""
        deadline = time.monotonic() + timeout
        while True:
            for t, n in self.ack_times:
                if n >= at_least:
                    return t
            if self.ended.is_set():
                raise AssertionError(f"stream ended before ack {at_least}: {self.frames}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no ack >= {at_least} within {timeout}s: {self.acks[-3:]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def wait_end(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self.ended.wait(), timeout)

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
        self._w.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._w.wait_closed()

    async def _flush(self) -> None:
        data = self._conn.data_to_send()
        if data:
            self._w.write(data)
            await self._w.drain()

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self._r.read(65536)
                if not data:
                    break
                for event in self._conn.receive_data(data):
                    self._handle(event)
                await self._flush()
        except (ConnectionError, OSError):
            pass
        finally:
            self.ended.set()
            self._got_headers.set()
            self._window.set()
            self._changed.set()

    def _handle(self, event: Any) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            hdrs = dict(event.headers)
            self.status = int(hdrs[":status"])
            self.headers = hdrs
            self._got_headers.set()
        elif isinstance(event, h2.events.DataReceived):
            self._conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            self._buf += event.data
            now = time.monotonic()
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                if line.strip():
                    frame = json.loads(line)
                    self.frames.append(frame)
                    if "ack" in frame:
                        self.ack_times.append((now, int(frame["ack"])))
            self._changed.set()
        elif isinstance(event, h2.events.WindowUpdated):
            self._window.set()
        elif isinstance(
            event,
            h2.events.StreamEnded | h2.events.StreamReset | h2.events.ConnectionTerminated,
        ):
            if isinstance(event, h2.events.StreamReset):
                self.reset = event.error_code
            self.ended.set()
            self._changed.set()
            self._window.set()
