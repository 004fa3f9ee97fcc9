"""The web UI's routes (``--ui``; docs/recorder.md, "Web UI"): the list at ``/``, a player page
per recording at ``/play/{id}``, and the UI's files at ``/ui/...``. ``recorder.api`` mounts
this router behind the same access check as the API, pages and files alike.

The list calls the API's own list function in-process, so the page shows what
``GET /api/v1/recordings`` answers for the same query (search matches included), and the HTML
comes from ``recorder.pages``. The player files (asciinema-player from npm) are installed by
``./dev`` into ``recorder/ui/vendor/``; nothing is loaded from anywhere but this recorder.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from recorder.errors import InvalidRecordingIdError, RecordingNotFoundError
from recorder.index.base import MAX_LIMIT
from recorder.pages import AUTOMATION, FILTERS, ListView, Marker, list_page, player_page, rows
from recorder.service import RecorderService

UI_DIR = Path(__file__).resolve().parent / "ui"
VENDOR_DIR = UI_DIR / "vendor"
VENDOR_FILES = ("asciinema-player.min.js", "asciinema-player.css")
OWN_FILES = {"app.css": "text/css", "list.js": "text/javascript",
             "player.js": "text/javascript"}
INSTALL_HINT = (
    "the player (asciinema-player) is not installed in recorder/ui/vendor/: run ./dev demo "
    "or ./dev test once (they install it), or run `npm ci` in recorder/ui and copy "
    "node_modules/asciinema-player/dist/bundle/asciinema-player.min.js and "
    "asciinema-player.css into recorder/ui/vendor/"
)
_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
            # the pages load nothing from anywhere but this recorder (the player's terminal
            # is WebAssembly compiled from the bundle, hence wasm-unsafe-eval)
            "Content-Security-Policy": "default-src 'self'; script-src 'self' "
            "'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "font-src 'self' data:; frame-ancestors 'none'"}

ListRecordings = Callable[..., Awaitable[dict[str, Any]]]


def vendor_problem(directory: Path | None = None) -> str | None:
    """None when the player files are installed (in ``VENDOR_DIR``), else what to do."""
    directory = VENDOR_DIR if directory is None else directory
    missing = [name for name in VENDOR_FILES if not (directory / name).is_file()]
    return None if not missing else INSTALL_HINT


def _view(request: Request) -> ListView:
    params = request.query_params
    automation = params.get("automation", "group")
    return ListView(
        filters={k: params[k].strip() for k in FILTERS if params.get(k, "").strip()},
        live_only=params.get("live") == "true",
        automation=automation if automation in AUTOMATION else "group",
        cursor=params.get("cursor") or None,
        limit=_limit(params.get("limit")),
    )


def _limit(text: str | None) -> int | None:
    """The UI's page size; anything but 1-MAX_LIMIT in ASCII digits is the default (a
    5,000-digit value is never converted: Python refuses ints over 4,300 digits)."""
    if not text or not text.isascii() or not text.isdigit() or len(text) > 4:
        return None
    return int(text) if 1 <= int(text) <= MAX_LIMIT else None


def build_ui(service: RecorderService, list_recordings: ListRecordings) -> APIRouter:
    """``list_recordings`` is the API's list route function (called with its query
    parameters as keyword arguments; raises HTTPException 400 for a bad query)."""
    router = APIRouter()

    async def listing(view: ListView, **extra: Any) -> tuple[dict[str, Any], str | None]:
        args: dict[str, Any] = {**view.filters, "live": True if view.live_only else None,
                                "cursor": view.cursor, **extra}
        if view.limit is not None:
            args.setdefault("limit", view.limit)
        try:
            return await list_recordings(**args), None
        except HTTPException as e:
            if e.status_code != 400:
                raise
            return {"recordings": [], "next": None}, str(e.detail)

    @router.get("/", response_class=HTMLResponse)
    async def index(request: Request) -> Response:
        view = _view(request)
        answer, error = await listing(view)
        if request.query_params.get("fragment") == "rows":
            return HTMLResponse(rows(answer["recordings"], view), headers=_HEADERS)
        return HTMLResponse(list_page(answer, view, error=error), headers=_HEADERS)

    @router.get("/play/{recording_id}", response_class=HTMLResponse)
    async def play(recording_id: str, request: Request) -> Response:
        try:
            meta = service.with_live_size(await service.get(recording_id))
        except InvalidRecordingIdError as e:
            raise HTTPException(400, str(e)) from e
        except RecordingNotFoundError as e:
            raise HTTPException(404, str(e)) from e
        t = _seconds(request.query_params.get("t"))
        hits = [Marker(t, "search hit")] if t is not None else []
        q = (request.query_params.get("q") or "").strip()
        if q:
            hits = await _hits(meta.id, meta.start, q) or hits
        return HTMLResponse(player_page(meta.to_json(), t=t, hits=hits,
                                        vendor_problem=vendor_problem()), headers=_HEADERS)

    async def _hits(rid: str, start: float, q: str) -> list[Marker]:
        """The search's matches in this one recording: the list filtered to its start."""
        answer, _ = await listing(ListView(), q=q, since=f"{start - 0.001:.3f}",
                                  until=f"{start + 0.001:.3f}", limit=500)
        for rec in answer["recordings"]:
            if rec["id"] == rid:
                return [Marker(float(m["time"]), f"search: {m.get('text', '')}")
                        for m in rec.get("matches") or []
                        if isinstance(m, dict) and isinstance(m.get("time"), int | float)]
        return []

    @router.get("/ui/vendor/{name}")
    async def vendor(name: str) -> Response:
        if name not in VENDOR_FILES:
            raise HTTPException(404, "no such file")
        if vendor_problem() is not None:
            raise HTTPException(404, INSTALL_HINT)
        return FileResponse(VENDOR_DIR / name, headers=_HEADERS,
                            media_type="text/css" if name.endswith(".css")
                            else "text/javascript")

    @router.get("/ui/{name}")
    async def own(name: str) -> Response:
        media = OWN_FILES.get(name)
        if media is None:
            raise HTTPException(404, "no such file")
        return FileResponse(UI_DIR / name, media_type=media, headers=_HEADERS)

    return router


def _seconds(text: str | None) -> float | None:
    try:
        t = float(text) if text else None
    except ValueError:
        return None
    return t if t is not None and 0 <= t < 10**9 else None
