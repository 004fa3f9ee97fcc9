"""The read API (docs/recorder.md): list, metadata, cast (with Range), live follow (NDJSON
and server-sent events), verify; legal holds for admins; health, metrics and the public key;
with ``ui``, the web UI. Every recording route, and every page and file of the UI, goes
through ``access``."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from recorder import kubernetes
from recorder.access import Access, Denied, Reader, may_hold
from recorder.errors import (
    InvalidRecordingIdError,
    RecordingNotFoundError,
    StorageError,
    TokenError,
)
from recorder.index.base import DEFAULT_LIMIT, MAX_LIMIT, Cursor
from recorder.index.base import Query as IndexQuery
from recorder.live import follow_elsewhere
from recorder.model import RecordingMeta, parse_time
from recorder.readaudit import ReadAudit, ReadEvent, event_name
from recorder.retention import set_hold
from recorder.seek import REPLAY, Checkpoint, choose, screen_event, segment_header
from recorder.service import RecorderService
from recorder.sse import KEEPALIVE, CastEvents
from recorder.stream import HEADER_LIMIT
from tssh.errors import IdentityError
from tssh.socket_owner import loopback_peer_uid

_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)", re.ASCII)
_BEYOND = 1 << 63  # stands for any position past every possible size (no int of 5,000 digits)
SSE_KEEPALIVE = 15.0  # seconds of silence before an SSE comment keeps the stream open


def _position(digits: str) -> int:
    """A range position; one longer than 18 digits (after leading zeros) is past any size,
    whatever its value, so it is never converted (Python refuses ints over 4,300 digits)."""
    digits = digits.lstrip("0") or "0"
    return _BEYOND if len(digits) > 18 else int(digits)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """A single ``bytes=`` range as [start, end); None when unsatisfiable (416).

    RFC 9110 §14.1.2: positions are ASCII digits of any length; an end past the size means
    the end; a start at or past the size, or a suffix of 0, is unsatisfiable."""
    m = _RANGE.fullmatch(header.strip(" \t"))
    if m is None or (not m.group(1) and not m.group(2)):
        raise HTTPException(416, "only one 'bytes=START-END' range is supported")
    if not m.group(1):
        suffix = _position(m.group(2))
        return (max(0, size - suffix), size) if suffix > 0 and size > 0 else None
    start = _position(m.group(1))
    end = size if not m.group(2) else min(size, _position(m.group(2)) + 1)
    return (start, end) if start < size and start < end else None


async def _keepalive(source: AsyncIterator[bytes], every: float) -> AsyncIterator[bytes | None]:
    """``source``'s items, and None after each ``every`` seconds without one. A task reads
    ``source`` into a small queue (so backpressure still reaches storage reads): cancelling a
    pending ``anext`` on the generator itself would close it."""
    queue: asyncio.Queue[tuple[bytes | None, BaseException | None, bool]] = asyncio.Queue(4)

    async def pump() -> None:
        try:
            async for item in source:
                await queue.put((item, None, False))
            await queue.put((None, None, True))
        except Exception as e:  # handed to the reader, raised there
            await queue.put((None, e, True))

    task = asyncio.create_task(pump())
    try:
        while True:
            try:
                item, error, last = await asyncio.wait_for(queue.get(), every)
            except TimeoutError:
                yield None
                continue
            if error is not None:
                raise error
            if last:
                return
            yield item
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _read_all(service: RecorderService, key: str, start: int, end: int) -> bytes:
    parts = [chunk async for chunk in service.storage.read(key, start, end)]
    return b"".join(parts)


async def _read_line(service: RecorderService, key: str) -> bytes | None:
    """The first line of a stored cast (the header), without its newline."""
    got = bytearray()
    async for chunk in service.storage.read(key, 0, HEADER_LIMIT):
        got += chunk
        if b"\n" in got:
            break
    nl = got.find(b"\n")
    return bytes(got[:nl]) if nl >= 0 else None


class HoldRequest(BaseModel):
    """The body of ``PUT /api/v1/recordings/{id}/hold``."""

    reason: str = Field(min_length=1, max_length=1000)


def build_api(service: RecorderService, access: Access, *,
              local_owner: int | None = None, ui: bool = False,
              audit: ReadAudit | None = None) -> FastAPI:
    """``local_owner``: readers must also be local processes of this uid (loopback demo).
    ``ui``: also serve the web UI (``recorder.web``), behind the same access check.
    ``audit``: every read of recordings is written there, with its reader."""
    app = FastAPI(title="tssh-recorder", docs_url=None, redoc_url=None, openapi_url=None)

    def audited(request: Request, result: Reader | Denied | None, status: int,
                event: str | None = None) -> None:
        name = event or event_name(request.url.path)
        if name is None:
            return
        if event is None:  # a read; holds and releases are changes, not reads
            service.metrics.read(name, allowed=status == 200)
        if audit is None:
            return
        who = result if isinstance(result, Reader) else None
        audit.write(ReadEvent(
            event=name, reader_kind=who.kind if who else "unknown",
            reader=who.name if who else None, node=who.node if who else None,
            address=request.client.host if request.client else None,
            recording=request.path_params.get("recording_id"),
            query=request.url.query, range=request.headers.get("range"), status=status,
        ))

    async def reader(request: Request) -> Reader:
        try:
            result = await _reader(request)
        except HTTPException as e:
            audited(request, None, e.status_code)
            raise
        audited(request, result, 200)
        return result

    async def _reader(request: Request) -> Reader:
        address = request.client.host if request.client else None
        if local_owner is not None:
            server = request.scope.get("server")
            uid = (loopback_peer_uid((request.client.host, request.client.port),
                                     (str(server[0]), int(server[1])))
                   if request.client and server else None)
            if uid != local_owner:
                raise HTTPException(403, "this demo recorder serves only the local processes "
                                    "of the user who runs it")
        try:
            result = await access.check(request.headers.get("authorization"), address)
        except TokenError as e:
            raise HTTPException(500, str(e)) from e
        except IdentityError as e:
            raise HTTPException(503, f"identity backend unavailable: {e}") from e
        if isinstance(result, Denied):
            headers = {"WWW-Authenticate": "Bearer"} if result.status == 401 else None
            raise HTTPException(result.status, result.message, headers=headers)
        return result

    async def admin(request: Request) -> None:
        """Lets through (as ``request.state.admin``) a reader who may place and lift legal
        holds (``--admin``); audited as ``recording.hold`` or ``recording.release``,
        refusals included."""
        event = "recording.hold" if request.method == "PUT" else "recording.release"
        try:
            result = await _reader(request)
        except HTTPException as e:
            audited(request, None, e.status_code, event)
            raise
        refused = may_hold(result)
        audited(request, result, 200 if refused is None else refused.status, event)
        if refused is not None:
            raise HTTPException(refused.status, refused.message)
        request.state.admin = result

    guarded = APIRouter(dependencies=[Depends(reader)])

    async def recording(recording_id: str) -> RecordingMeta:
        try:
            return await service.get(recording_id)
        except InvalidRecordingIdError as e:
            raise HTTPException(400, str(e)) from e
        except RecordingNotFoundError as e:
            raise HTTPException(404, str(e)) from e

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness: the recorder answers. Open to everyone."""
        return {"ok": True, "storage": service.storage.describe()}

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics of this recorder process. Open to everyone on the tailnet."""
        await service.sample_metrics()
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    @app.get("/api/v1/key")
    async def key() -> dict[str, str]:
        """This recorder's Ed25519 public key, which its seals verify with."""
        return {"algorithm": "ed25519", "publicKey": service.public_key}

    @guarded.get("/api/v1/recordings")
    async def list_recordings(
        node: str | None = None,
        user: str | None = None,
        since: str | None = None,
        until: str | None = None,
        live: bool | None = None,
        q: Annotated[str | None, Query(max_length=200)] = None,
        connection: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Recordings, newest first: filters, ``q=`` full-text search (words, "phrases")
        with ``matches``, and cursor paging (``next``)."""
        try:
            query = IndexQuery(
                node=node, user=user,
                since=parse_time(since) if since else None,
                until=parse_time(until) if until else None,
                live=live, q=q, connection=connection, limit=limit,
                cursor=Cursor.decode(cursor) if cursor else None,
            )
        except ValueError as e:
            raise HTTPException(400, f"bad query: {e}") from e
        page = await service.index.query(query)
        found = []
        for m in page.recordings:
            doc = service.with_live_size(m).to_json()
            del doc["seek"]  # per recording, fetched with its metadata
            if q is not None and q.strip():
                doc["matches"] = [hit.to_json() for hit in page.matches.get(m.id, ())]
            found.append(doc)
        return {"recordings": found, "next": page.next.encode() if page.next else None}

    @guarded.get("/api/v1/recordings/{recording_id}")
    async def show(recording_id: str) -> dict[str, Any]:
        """One recording's metadata: header fields, node, start, end, size, status, seal."""
        return (await recording(recording_id)).to_json()

    async def segment(meta: RecordingMeta, cp: Checkpoint) -> Response:
        """The cast from checkpoint ``cp`` on (``recorder.seek``): header, the synthetic
        screen event, then the stored bytes from the checkpoint's offset."""
        header_line = await _read_line(service, meta.key)
        if header_line is None:
            raise HTTPException(404, "the recording's header is not stored")
        window = await _read_all(service, meta.key, max(0, cp.offset - REPLAY), cp.offset)
        head = (segment_header(header_line, cp, kubernetes.resize_is_swapped(meta.header))
                + screen_event(window, cp))

        async def body() -> AsyncIterator[bytes]:
            yield head
            async for chunk in service.storage.read(meta.key, cp.offset, None):
                yield chunk

        return StreamingResponse(body(), media_type="application/x-asciicast", headers={
            "Cache-Control": "no-store", "X-Segment-Offset": str(cp.offset),
            "X-Segment-Time": repr(cp.time),
            "Content-Disposition": f'attachment; filename="{meta.id}.cast"'})

    @guarded.get("/api/v1/recordings/{recording_id}/cast")
    async def cast(recording_id: str, request: Request,
                   start_at: Annotated[float | None, Query(alias="from", ge=0, le=1e12)] = None,
                   ) -> Response:
        """With ``from=SECONDS`` (and no Range): a segment of the cast that starts at the
        last checkpoint of the seek index before that time (docs/recorder.md, "Seeking in
        long recordings"); the whole cast when there is none."""
        meta = await recording(recording_id)
        if start_at is not None and not request.headers.get("range"):
            cp = choose(service.checkpoints(meta), start_at)
            if cp is not None:
                return await segment(meta, cp)
        size = meta.size
        headers = {"Accept-Ranges": "bytes", "Cache-Control": "no-store"}
        start, end, status = 0, size, 200
        rng = request.headers.get("range")
        if rng:
            span = _parse_range(rng, size)
            if span is None:
                return Response(
                    status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"}
                )
            start, end = span
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        headers["Content-Length"] = str(end - start)
        headers["Content-Disposition"] = f'attachment; filename="{meta.id}.cast"'

        async def body() -> AsyncIterator[bytes]:
            if end > start:
                async for chunk in service.storage.read(meta.key, start, end):
                    yield chunk

        return StreamingResponse(
            body(), status_code=status, headers=headers, media_type="application/x-asciicast"
        )

    def follow(meta: RecordingMeta) -> AsyncIterator[bytes]:
        """The recording's whole lines: those stored, then new ones until it ends."""
        def read(start: int, end: int) -> AsyncIterator[bytes]:
            return service.storage.read(meta.key, start, end)

        async def final_size() -> int | None:
            done = await service.index.get(meta.id)
            return None if done is None else done.size

        if meta.status == "live" and not service.live.is_live(meta.id):
            # live on another replica of a fleet: what shared storage holds, polled
            async def poll() -> tuple[int | None, bool]:
                done = await service.index.get(meta.id)
                if done is None or done.status != "live":
                    return (None if done is None else done.size), True
                return await service.storage.size(meta.key), False

            return follow_elsewhere(read, poll)
        return service.live.follow(meta.id, read, final_size)

    @guarded.get("/api/v1/recordings/{recording_id}/live")
    async def live(recording_id: str) -> Response:
        """The events so far, then new ones as they arrive, as NDJSON, until it ends."""
        meta = await recording(recording_id)
        return StreamingResponse(
            follow(meta), media_type="application/x-ndjson", headers={"Cache-Control": "no-store"},
        )

    @guarded.get("/api/v1/recordings/{recording_id}/events")
    async def events(recording_id: str) -> Response:
        """The same as server-sent events, for the web UI's player (eventsource driver)."""
        """The recording as server-sent events for asciinema-player's eventsource driver
        (``recorder.sse``): what is stored, then new events live, then ``done``."""
        meta = await recording(recording_id)

        async def body() -> AsyncIterator[bytes]:
            cast = CastEvents()
            yield cast.start()
            tail = b""
            async for chunk in _keepalive(follow(meta), SSE_KEEPALIVE):
                if chunk is None:
                    yield KEEPALIVE
                    continue
                lines = (tail + chunk).split(b"\n")
                tail = lines.pop()
                out = b"".join(cast.line(line) for line in lines if line)
                if out:
                    yield out
            if tail:
                yield cast.line(tail)
            done = await service.index.get(meta.id)
            yield cast.done(done.status if done is not None else "incomplete")

        return StreamingResponse(body(), media_type="text/event-stream", headers={
            "Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @guarded.get("/api/v1/recordings/{recording_id}/verify")
    async def verify(recording_id: str) -> JSONResponse:
        """Check the recording against its seal: SHA-256 and signed metadata."""
        meta = await recording(recording_id)
        if meta.status == "live":
            raise HTTPException(409, "recording is still live; it is sealed when it ends")
        result = await service.verify(recording_id)
        return JSONResponse({"id": recording_id, **result.to_json()})

    if ui:
        from recorder.web import build_ui

        guarded.include_router(build_ui(service, list_recordings))
    app.include_router(guarded)

    async def hold_change(recording_id: str, reason: str | None,
                          request: Request) -> dict[str, Any]:
        who: Reader = request.state.admin
        try:
            meta = await set_hold(service, recording_id, reason, who.name)
        except InvalidRecordingIdError as e:
            raise HTTPException(400, str(e)) from e
        except RecordingNotFoundError as e:
            raise HTTPException(404, str(e)) from e
        except StorageError as e:
            raise HTTPException(503, f"the hold could not be stored: {e}") from e
        return meta.to_json()

    @app.put("/api/v1/recordings/{recording_id}/hold", dependencies=[Depends(admin)])
    async def place_hold(recording_id: str, body: HoldRequest,
                         request: Request) -> dict[str, Any]:
        """Admins only (``--admin``): places a legal hold (``{"reason": text}``), or replaces
        the one there; retention never deletes a recording on hold. Answers the recording's
        metadata, its ``hold`` set."""
        return await hold_change(recording_id, body.reason, request)

    @app.delete("/api/v1/recordings/{recording_id}/hold", dependencies=[Depends(admin)])
    async def release_hold(recording_id: str, request: Request) -> dict[str, Any]:
        """Admins only: lifts the legal hold (none there is no error). Answers the
        recording's metadata, its ``hold`` null."""
        return await hold_change(recording_id, None, request)

    return app
