"""docs/api.md is what ``python -m recorder.apidoc`` generates from the app's schema now."""

from __future__ import annotations

from pathlib import Path

from recorder.apidoc import render, schema

ROOT = Path(__file__).resolve().parents[2]


def test_api_reference_matches_the_app() -> None:
    page = (ROOT / "docs/api.md").read_text()
    assert page == render(schema()), (
        "docs/api.md is out of date: run  python -m recorder.apidoc > docs/api.md")


def test_every_read_route_is_in_the_reference() -> None:
    page = (ROOT / "docs/api.md").read_text()
    for route in ("GET /api/v1/recordings`", "GET /api/v1/recordings/{recording_id}/cast`",
                  "GET /api/v1/recordings/{recording_id}/live`", "GET /healthz`"):
        assert route in page
    assert "| `q` | query | string (maxLength 200) |" in page
