"""The web UI's routes never fail on bad input: fuzzed query parameters for the list and the
player page, over recordings with hostile header fields (the app in-process, as in
``test_fuzz.py``, with ``--ui``)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from recorder.app import RecorderApp
from tests.recorder.conftest import ALICE, cast_header, event
from tests.recorder.test_fuzz import _ANY_TEXT, _TIME, FUZZ, InProcess, _no_tracebacks


class UiInProcess(InProcess):
    async def _start(self) -> RecorderApp:
        self.settings = dataclasses.replace(self.settings, ui=True)
        return await super()._start()


@pytest.fixture
def ui_app(tmp_path: Path) -> Iterator[UiInProcess]:
    rec = UiInProcess(tmp_path)
    try:
        yield rec
    finally:
        rec.close()


# what ingest accepts (it checks the header's types) that a page could still trip on
HOSTILE_HEADERS: list[dict[str, Any]] = [
    {"command": "<script>alert(1)</script>", "srcNodeUser": "<img src=x onerror=alert(1)>"},
    {"tssh": "yes", "srcNodeTags": ["tag:<b>"], "connectionID": ""},
    {"width": 0, "height": 0, "tssh": {"stderr": True}, "command": ""},
    {"width": 0, "height": 0, "tssh": {"stderr": True}, "command": "a\u2028b\x1b[31m"},
]


def test_ui_routes_never_fail_on_bad_input(ui_app: UiInProcess,
                                           caplog: pytest.LogCaptureFixture) -> None:
    for fields in HOSTILE_HEADERS:
        header = {**json.loads(cast_header()), **fields}
        body = json.dumps(header).encode() + b"\n" + event(0.1, "x\n") + event(1e300, "y\n")
        assert ui_app.upload(body).status_code == 200, fields
    ids = [str(m["id"]) for m in ui_app.listing()]

    params_st = st.dictionaries(
        st.sampled_from(["node", "user", "since", "until", "live", "q", "limit", "cursor",
                         "automation", "fragment", "t"]),
        st.one_of(_ANY_TEXT, _TIME, st.sampled_from(["rows", "hide", "show", "true", "1e999"])),
        max_size=5,
    )

    @FUZZ
    @given(params=params_st, rid=st.one_of(st.sampled_from(ids), _ANY_TEXT),
           path=st.sampled_from(["/", "/play/", "/ui/", "/ui/vendor/"]))
    @example(params={"limit": "9" * 5000, "t": "9" * 5000}, rid="x", path="/").via(
        "int() of 5,000 digits")
    def one(params: dict[str, str], rid: str, path: str) -> None:
        async def go() -> None:
            async with ui_app.client(ALICE) as c:
                for url in ("/", f"/play/{quote(rid, safe='')}", path + quote(rid, safe="")):
                    r = await c.get(url, params=params)
                    assert r.status_code < 500, (url, params, r.status_code, r.text)
                    assert "<script>alert" not in r.text and "<img src=x" not in r.text

        ui_app.run(go())

    one()
    _no_tracebacks(caplog)


def test_missing_player_files_are_explained(ui_app: UiInProcess, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import recorder.web

    monkeypatch.setattr(recorder.web, "VENDOR_DIR", tmp_path / "no-vendor")
    assert ui_app.upload(cast_header() + event(0.1, "x\n")).status_code == 200
    [rid] = [m["id"] for m in ui_app.listing()]

    async def go() -> None:
        async with ui_app.client(ALICE) as c:
            page = await c.get(f"/play/{rid}")
            assert page.status_code == 200
            assert 'id="player-missing"' in page.text and "npm ci" in page.text
            assert "asciinema-player.min.js\"" not in page.text  # no script that cannot load
            js = await c.get("/ui/vendor/asciinema-player.min.js")
            assert js.status_code == 404 and "npm ci" in js.json()["detail"]
            assert (await c.get("/")).status_code == 200  # the list works without it

    ui_app.run(go())
