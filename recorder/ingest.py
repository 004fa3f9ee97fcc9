"""Recording upload endpoints, as raw ASGI: ``/v2/record`` (h2c, acks), ``/record`` (v1), and
``/v2/event`` (Kubernetes API request events from Tailscale's operator, one JSON document each).

Why raw ASGI: ``/v2/record`` is full duplex (ack frames go out while the body still arrives).
Starlette's ``StreamingResponse`` also listens for ``http.disconnect`` on the same ``receive``
channel, which under hypercorn swallows request-body messages; so these two paths read
``http.request`` messages themselves, and everything else goes to the FastAPI app.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from recorder import kubernetes
from recorder.arrivals import Arrivals
from recorder.errors import CastError, HeaderTimeoutError, StorageError, UploadLimitError
from recorder.limits import UploadLimits
from recorder.metrics import Metrics
from recorder.model import Status
from recorder.service import IngestRecording, RecorderService
from recorder.stream import CastScanner, header_discrepancies
from tssh.errors import IdentityError
from tssh.identity.base import Peer, Resolver

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("tssh.recorder.ingest")

IDLE_ACK = 10.0  # seconds between acks while the uploader sends nothing
ACK_INTERVAL = 0.0  # pause after each ack; 0: acks follow the group commit rate
# A v2 upload starts at most one sync per SYNC_PACE seconds. A fast stream would otherwise
# fsync a few KiB at a time, back to back (hundreds per second, most of the recorder's CPU);
# paced, one fsync covers what arrived in the meantime. Its flow is governed by HTTP/2
# windows, not by acks, so fewer acks cost it nothing; an upload writing less often than
# this (a terminal) still gets each write acked as soon as its group commit is done.
SYNC_PACE = 0.1
V1_SYNC_INTERVAL = 1.0  # v1 has no acks; still sync this often for crash safety and live
# Seconds an upload (v1 or v2) may stay open without a complete asciicast header line. After
# the header there is no idle limit: an idle session legitimately sends nothing for hours
# (docs/recorder.md, "Limits").
HEADER_TIMEOUT = 30.0
DRAIN_LIMIT = 30.0  # seconds to wait for an uploader to stop sending after an error frame
ARRIVAL_GRAIN = 0.001  # request messages within a millisecond share one arrival time


async def _drain(receive: Receive, limit: float) -> None:
    """Discards the rest of a request body. hypercorn 0.18 fails the whole HTTP/2 connection
    (other streams included) when DATA arrives for a stream whose response has ended, so the
    response stays open until the uploader ends or resets its half (or ``limit`` passes)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limit):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect" or not message.get("more_body"):
                    return


class Upload:
    """One upload's state: scanner, recording, and the receive loop feeding them."""

    def __init__(
        self, service: RecorderService, resolver: Resolver, peer: Peer, address: str, *,
        sync_every: float | None,
    ) -> None:
        self.service = service
        self.resolver = resolver
        self.metrics: Metrics = service.metrics
        self.peer = peer
        self.address = address
        self.scanner = CastScanner()
        self.recording: IngestRecording | None = None
        self.data = asyncio.Event()
        self.headed = asyncio.Event()  # the header line is complete (the recording may not
        # have begun yet)
        self.ended = False  # the client ended its body
        self.disconnected = False
        self.body_done = False  # no more request messages will come
        self._sync_every = sync_every
        self._last_sync = time.monotonic()
        # v2: when each received byte arrived, for tsrecorder_ack_latency_seconds (received
        # byte N is recording byte N: only the header line waits in the scanner)
        self.arrivals = Arrivals(ARRIVAL_GRAIN) if sync_every is None else None
        self.acked = 0  # bytes covered by the acks sent so far

    async def receive_loop(self, receive: Receive) -> None:
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    self.disconnected = self.body_done = True
                    return
                body = message.get("body", b"")
                if body:
                    await self._accept(bytes(body))
                if not message.get("more_body", False):
                    self.body_done = True
                    self.scanner.end()
                    self.ended = True
                    return
        finally:
            self.data.set()

    async def _accept(self, body: bytes) -> None:
        self.metrics.bytes.inc(len(body))
        if self.arrivals is not None:
            self.arrivals.arrived(len(body), time.monotonic())
        out = self.scanner.feed(body)
        if self.recording is None and self.scanner.header is not None:
            self.headed.set()
            header = self.scanner.header
            try:
                known = await self._known(header.src_node_id)
                warnings = header_discrepancies(header, known)
            except IdentityError as e:
                warnings = [f"could not check the header's node against the tailnet: {e}"]
            self.recording = await self.service.begin(
                self.peer, self.address, header, tuple(warnings)
            )
        if out and self.recording is not None:
            await self.recording.append(out)
            self.data.set()
            if self._sync_every is not None:
                now = time.monotonic()
                if now - self._last_sync >= self._sync_every:
                    self._last_sync = now
                    await self.recording.sync()

    async def sync(self) -> int:
        return 0 if self.recording is None else await self.recording.sync()

    async def _known(self, node_id: str | None) -> Peer | None:
        """The tailnet's record of the node the header names (the SSH client's)."""
        if node_id is None:
            return None
        return next((p for p in await self.resolver.peers() if p.id == node_id), None)

    async def finish(self, error: str | None) -> int:
        """Finishes the recording (complete only when the body ended cleanly); its size."""
        if self.recording is None:
            return 0
        status: Status = "complete" if self.ended and error is None else "incomplete"
        if error is None and not self.ended:
            error = "the uploader went away before ending the recording"
        await self.recording.finish(status, self.scanner, error)
        return self.recording.writer.size if not self.recording.failed else self.recording.durable


def _reason(e: Exception) -> str:
    if isinstance(e, HeaderTimeoutError):
        return "header_timeout"
    if isinstance(e, CastError):
        return "bad_cast"
    if isinstance(e, StorageError):
        return "storage"
    return "internal"


async def _simple(send: Send, status: int, text: str, *, head: bool = False) -> None:
    body = b"" if head else (json.dumps({"error": text}) + "\n").encode()
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _ok(send: Send) -> None:
    body = b"{}\n"
    await send({
        "type": "http.response.start", "status": 200,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body, "more_body": False})


class IngestApp:
    """Serves the upload paths itself and hands every other request to ``fallback``."""

    def __init__(
        self, service: RecorderService, resolver: Resolver, fallback: ASGIApp,
        *, ack_interval: float = ACK_INTERVAL, idle_ack: float = IDLE_ACK,
        header_timeout: float = HEADER_TIMEOUT, sync_pace: float = SYNC_PACE,
        limits: UploadLimits | None = None,
    ) -> None:
        self.service = service
        self.limits = limits or UploadLimits()
        self.resolver = resolver
        self.fallback = fallback
        self.ack_interval = ack_interval
        self.sync_pace = sync_pace
        self.idle_ack = idle_ack
        self.header_timeout = header_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v2/record":
            await self._v2(scope, receive, send)
        elif scope["type"] == "http" and scope["path"] == "/record":
            await self._v1(scope, receive, send)
        elif scope["type"] == "http" and scope["path"] == "/v2/event":
            await self._event(scope, receive, send)
        else:
            await self.fallback(scope, receive, send)

    async def _uploader(self, scope: Scope, send: Send) -> tuple[Peer, str] | None:
        """The uploading node, or None after answering 403 (unknown) or 503 (no backend)."""
        client = scope.get("client")
        address = str(client[0]) if client else ""
        try:
            peer = await self.resolver.whois(address) if address else None
        except IdentityError as e:
            log.warning("identity backend failed for %s: %s", address, e)
            self.service.metrics.errors.labels("identity").inc()
            await _simple(send, 503, f"identity backend unavailable: {e}")
            return None
        if peer is None:
            self.service.metrics.errors.labels("unknown_peer").inc()
            await _simple(send, 403, "unknown node: uploads are accepted from tailnet nodes only")
            return None
        return peer, address

    async def _admitted(self, scope: Scope, receive: Receive, send: Send,
                        upload: Callable[[tuple[Peer, str], Receive, Send], Awaitable[None]],
                        ) -> None:
        """Runs ``upload`` for a known node holding one of the recorder's upload places;
        answers 403/503 instead (before the body is read) and frees the place after."""
        who = await self._uploader(scope, send)
        if who is None:
            return
        peer = who[0]
        try:
            self.limits.acquire(peer.id)
        except UploadLimitError as e:
            self.service.metrics.errors.labels(e.reason).inc()
            log.warning("upload from %s refused: %s", peer.name, e)
            await _simple(send, 503, str(e))
            return
        try:
            await upload(who, receive, send)
        finally:
            self.limits.release(peer.id)

    async def _v2(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        http2 = scope.get("http_version") == "2"
        if method == "HEAD":
            await _simple(send, 200 if http2 else 505, "", head=True)
            return
        if method != "POST":
            await _simple(send, 405, "use POST")
            return
        if not http2:
            await _simple(send, 505, "/v2/record needs HTTP/2 (h2c); use /record over HTTP/1.1")
            return
        await self._admitted(scope, receive, send, self._v2_upload)

    async def _v2_upload(self, who: tuple[Peer, str], receive: Receive, send: Send) -> None:
        upload = Upload(self.service, self.resolver, who[0], who[1], sync_every=None)
        await send({
            "type": "http.response.start", "status": 200,
            "headers": [(b"content-type", b"application/json")],
        })
        reader = asyncio.create_task(upload.receive_loop(receive))
        error: str | None = None
        acked = -1
        loop = asyncio.get_running_loop()
        idle_due = False
        timer: asyncio.TimerHandle | None = None

        def tick() -> None:  # one timer per upload, not one per ack
            nonlocal idle_due, timer
            idle_due = True
            upload.data.set()
            timer = loop.call_later(self.idle_ack, tick)

        timer = loop.call_later(self.idle_ack, tick)
        header_late = False

        def header_due() -> None:
            nonlocal header_late
            header_late = True
            upload.data.set()

        deadline = loop.call_later(self.header_timeout, header_due)
        synced = -math.inf  # when the last sync started
        try:
            while not reader.done():
                await upload.data.wait()
                upload.data.clear()
                if reader.done():
                    break
                if header_late and not upload.headed.is_set():
                    raise HeaderTimeoutError(
                        f"no asciicast header within {self.header_timeout:g} s"
                    )
                pause = synced + self.sync_pace - loop.time()
                if pause > 0 and not idle_due:
                    # the end of the body (or an error) ends the pause: the final ack is not
                    # delayed
                    await asyncio.wait((reader,), timeout=pause)
                    if reader.done():
                        break
                synced = loop.time()
                durable = await upload.sync()
                if durable != acked or idle_due:
                    await self._ack(send, upload, durable)
                    acked = durable
                    idle_due = False
                if self.ack_interval > 0:
                    await asyncio.sleep(self.ack_interval)
            reader.result()
        except (CastError, StorageError) as e:
            error = str(e)
            self.service.metrics.errors.labels(_reason(e)).inc()
        except Exception as e:
            log.exception("upload from %s failed", who[0].name)
            error = "internal error in the recorder"
            self.service.metrics.errors.labels(_reason(e)).inc()
        finally:
            deadline.cancel()
            if timer is not None:
                timer.cancel()
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
        size = await upload.finish(error)
        if upload.disconnected:
            return
        with contextlib.suppress(Exception):  # the client may be gone already
            if error is None:
                await self._ack(send, upload, size)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            else:
                frame = (json.dumps({"error": error}) + "\n").encode()
                await send({"type": "http.response.body", "body": frame, "more_body": True})
                if not upload.body_done:
                    await _drain(receive, DRAIN_LIMIT)
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _header_within_timeout(self, upload: Upload, reader: asyncio.Task[None]) -> None:
        """Raises HeaderTimeoutError if neither the header line nor the end of the body
        arrives within ``header_timeout`` (v2 checks the same in its ack loop)."""
        headed = asyncio.ensure_future(upload.headed.wait())
        try:
            await asyncio.wait((reader, headed), timeout=self.header_timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            headed.cancel()
        if not reader.done() and not upload.headed.is_set():
            raise HeaderTimeoutError(f"no asciicast header within {self.header_timeout:g} s")

    async def _ack(self, send: Send, upload: Upload, n: int) -> None:
        """Sends an ack frame for ``n`` durable bytes. An ack that covers new bytes observes
        the ack latency: from the arrival of the oldest of them (its request message) until
        hypercorn took the frame (docs/recorder.md, "Metrics")."""
        frame = (json.dumps({"ack": n}) + "\n").encode()
        await send({"type": "http.response.body", "body": frame, "more_body": True})
        metrics = self.service.metrics
        metrics.acks.inc()
        if upload.arrivals is not None and n > upload.acked:
            first = upload.arrivals.consumed(n - upload.acked)
            upload.acked = n
            if first is not None:
                metrics.ack_seconds.observe(time.monotonic() - first)

    async def _event(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``/v2/event``: Tailscale's Kubernetes API server proxy posts one JSON document per
        API request it lets through (``"type": "Kubernetes API Request"``) and first probes
        with HEAD, which must answer 200 (docs/recorder.md, "Kubernetes recordings"). Each is
        stored verbatim as its own object beside the node's recordings."""
        if scope["method"] == "HEAD":
            await _simple(send, 200, "", head=True)
            return
        if scope["method"] != "POST":
            await _simple(send, 405, "use POST")
            return
        who = await self._uploader(scope, send)
        if who is None:
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > kubernetes.EVENT_LIMIT:
                self.service.metrics.errors.labels("event_too_large").inc()
                await _simple(send, 413, f"an event is at most {kubernetes.EVENT_LIMIT} bytes")
                await _drain(receive, DRAIN_LIMIT)
                return
            if not message.get("more_body"):
                break
        try:
            doc = json.loads(bytes(body))
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            self.service.metrics.errors.labels("bad_event").inc()
            await _simple(send, 400, "an event is one JSON object")
            return
        try:
            key = await self.service.store_event(who[0], bytes(body).rstrip(b"\n") + b"\n")
        except StorageError as e:
            self.service.metrics.errors.labels("storage").inc()
            await _simple(send, 507, str(e))
            return
        log.info("event %r from %s stored as %s", str(doc.get("type"))[:80], who[0].name, key)
        await _ok(send)

    async def _v1(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await _simple(send, 405, "use POST")
            return
        await self._admitted(scope, receive, send, self._v1_upload)

    async def _v1_upload(self, who: tuple[Peer, str], receive: Receive, send: Send) -> None:
        upload = Upload(self.service, self.resolver, who[0], who[1], sync_every=V1_SYNC_INTERVAL)
        error: str | None = None
        status = 200
        reader = asyncio.create_task(upload.receive_loop(receive))
        try:
            await self._header_within_timeout(upload, reader)
            await reader
        except (CastError, StorageError) as e:
            error = str(e)
            status = (408 if isinstance(e, HeaderTimeoutError)
                      else 400 if isinstance(e, CastError) else 507)
            self.service.metrics.errors.labels(_reason(e)).inc()
        except Exception as e:
            log.exception("upload from %s failed", who[0].name)
            error, status = "internal error in the recorder", 500
            self.service.metrics.errors.labels(_reason(e)).inc()
        finally:
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
        size = await upload.finish(error)
        if upload.disconnected:
            return
        if error is None and upload.recording is not None and upload.recording.failed:
            error, status = "the recording could not be stored completely", 507
        # hypercorn 0.18 hands the body to the application through a bounded queue, and
        # sending the response waits for the connection's handler, which waits for room in
        # that queue: a refused upload whose body is still arriving is read (and discarded)
        # while the answer goes out, or both would wait until the uploader gave up.
        drain = (None if upload.body_done
                 else asyncio.create_task(_drain(receive, DRAIN_LIMIT)))
        try:
            with contextlib.suppress(Exception):
                if error is None:
                    body = (json.dumps({"size": size}) + "\n").encode()
                    await send({
                        "type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())],
                    })
                    await send({"type": "http.response.body", "body": body,
                                "more_body": False})
                else:
                    await _simple(send, status, error)
                if drain is not None:
                    await drain
        finally:
            if drain is not None and not drain.done():
                drain.cancel()
