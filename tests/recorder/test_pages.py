"""The web UI's HTML, rendered from API documents (``recorder.pages``, pure)."""

from __future__ import annotations

import json
from html import unescape
from pathlib import Path
from typing import Any

from recorder.pages import ListView, Marker, interactive, list_page, player_page, rows
from recorder.web import INSTALL_HINT, vendor_problem


def rec(rid: str, *, conn: str = "c1", pty: bool = True, node: str = "nSRV1",
        **extra: Any) -> dict[str, Any]:
    header: dict[str, Any] = {"width": 80 if pty else 0, "height": 24 if pty else 0,
                              "srcNodeUser": "alice@example.com", "localUser": "alice",
                              "connectionID": conn, "command": f"cmd {rid}",
                              "tssh": {"stderr": not pty, "input": False}}
    return {"id": rid, "status": "complete", "node": {"id": node, "name": "server"},
            "start": "2026-11-25T09:00:00.000Z", "duration": 1.5, "size": 2048,
            "header": header, **extra}


def test_interactive_by_header() -> None:
    assert interactive(rec("a"))
    assert not interactive(rec("a", pty=False))
    tailscale = rec("a")
    del tailscale["header"]["tssh"]
    tailscale["header"].update(width=0, height=0)  # tailscaled's non-PTY session
    assert not interactive(tailscale)


def test_recorded_text_is_escaped() -> None:
    evil = rec("a", matches=[{"time": 1.25, "text": "<script>alert(1)</script>"}])
    evil["header"]["command"] = '"><img src=x onerror=alert(1)>'
    html = list_page({"recordings": [evil], "next": None}, ListView(filters={"q": "alert"}))
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_matches_link_to_the_player_at_their_time() -> None:
    with_matches = rec("r1", matches=[{"time": 12.5, "text": "rm -rf /tmp/x"},
                                      {"time": 30, "text": "second"}])
    html = rows([with_matches, rec("r2")], ListView(filters={"q": "rm -rf"}))
    assert 'href="play/r1?t=12.5&amp;q=rm+-rf"' in html
    assert "rm -rf /tmp/x" in html and 'href="play/r1?t=30&amp;q=rm+-rf"' in html
    assert html.count('class="match"') == 2  # r2 has no "matches": no list, no error


def test_non_interactive_sessions_grouped_per_connection_and_node() -> None:
    recs = [rec("i1"), rec("a1", pty=False), rec("a2", pty=False),
            rec("b1", pty=False, conn="c2"), rec("a3", pty=False, node="nSRV2"), rec("i2")]
    grouped = rows(recs, ListView())
    assert grouped.count('<tr class="rec"') == 2 and grouped.count('<tr class="group"') == 3
    assert "2 non-interactive sessions on one connection" in grouped
    assert grouped.index("i1") < grouped.index("a1") < grouped.index("b1") < grouped.index("i2")
    hidden = rows(recs, ListView(automation="hide"))
    assert hidden.count("<tr") == 3 and "4 non-interactive sessions hidden" in hidden
    shown = rows(recs, ListView(automation="show"))
    assert shown.count('<tr class="rec"') == 6
    hit = rec("a4", pty=False, matches=[{"time": 1, "text": "rm -rf"}])
    for automation in ("group", "hide"):
        html = rows([hit, *recs], ListView(automation=automation))  # type: ignore[arg-type]
        assert '<tr class="rec" data-id="a4"' in html and "rm -rf" in html


def test_pager_keeps_the_filters() -> None:
    view = ListView(filters={"user": "bob", "q": "a b"}, live_only=True)
    html = list_page({"recordings": [rec("a")], "next": "CUR"}, view)
    assert 'href="./?user=bob&amp;q=a+b&amp;live=true&amp;cursor=CUR"' in html
    assert 'data-refresh="./?user=bob&amp;q=a+b&amp;live=true&amp;fragment=rows"' in html
    page2 = list_page({"recordings": [], "next": None}, ListView(cursor="CUR"))
    assert "data-refresh" not in page2 and "Newest" in page2 and "No recordings." in page2


def test_player_page_config_and_missing_vendor(tmp_path: Path) -> None:
    meta = rec("r1", exitStatus=3, warnings=["header says otherwise"])
    html = player_page(meta, t=2.0, hits=[Marker(2.0, "search hit")], vendor_problem=None)
    config = json.loads(unescape(html.split('data-config="', 1)[1].split('"', 1)[0]))
    assert config == {"id": "r1", "status": "complete", "t": 2.0,
                      "cast": "api/v1/recordings/r1/cast",
                      "events": "api/v1/recordings/r1/events", "meta": "api/v1/recordings/r1",
                      "hits": [[2.0, "search hit"]], "resizeSwapped": False}
    # far into a long recording: a segment from the seek index (docs/recorder.md)
    big = player_page({**meta, "size": 9 << 20}, t=700.0, hits=[], vendor_problem=None)
    assert "api/v1/recordings/r1/cast?from=700&quot;" in big
    assert "cast?from" not in player_page({**meta, "size": 9 << 20}, t=None, hits=[],
                                          vendor_problem=None)
    assert 'src="ui/vendor/asciinema-player.min.js"' in html and "header says otherwise" in html
    assert vendor_problem(tmp_path) == INSTALL_HINT
    (tmp_path / "asciinema-player.min.js").write_text("")
    (tmp_path / "asciinema-player.css").write_text("")
    assert vendor_problem(tmp_path) is None
    missing = player_page(meta, t=None, hits=[], vendor_problem=INSTALL_HINT)
    assert "npm ci" in missing and "asciinema-player.min.js</" not in missing
    assert "<script" not in missing


def test_a_hold_is_shown_in_the_list_and_on_the_player_page() -> None:
    held = rec("r1", hold={"reason": "case <42>", "by": "bob@example.com",
                           "at": "2026-12-01T10:00:00.000Z"})
    html = rows([held, rec("r2")], ListView())
    assert html.count('class="status hold"') == 1
    assert 'title="legal hold: case &lt;42&gt; (by bob@example.com, 2026-12-01 10:00:00Z)"' \
        in html
    page = player_page(held, t=None, hits=[], vendor_problem=None)
    assert ('<dt>Legal hold</dt><dd id="legal-hold">case &lt;42&gt; (by bob@example.com, '
            '2026-12-01 10:00:00Z)</dd>') in page
    assert "Legal hold" not in player_page(rec("r2", hold=None), t=None, hits=[],
                                           vendor_problem=None)
