"""The web UI's HTML (docs/recorder.md, "Web UI"): the recordings list and the player page.

Pure: renders the API's JSON documents (the list answer of ``GET /api/v1/recordings``, the
metadata of one recording) to HTML strings, so the pages show exactly what the API says and
every choice here is a unit test. Every value from a recording is escaped; the only script
is the UI's own files, so a recorded ``<script>`` stays text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any, Literal
from urllib.parse import urlencode

from recorder import kubernetes

Automation = Literal["group", "hide", "show"]
AUTOMATION: tuple[Automation, ...] = ("group", "hide", "show")
FILTERS = ("user", "node", "since", "until", "q")
SEGMENT_FROM = 8 * 1024 * 1024  # bytes: smaller recordings load whole (one fetch, all markers)


@dataclass(frozen=True)
class ListView:
    """What the list page was asked for: the filters (passed to the API as they are), the
    page's cursor, and what to do with non-interactive sessions."""

    filters: Mapping[str, str] = field(default_factory=dict)
    live_only: bool = False
    automation: Automation = "group"
    cursor: str | None = None
    limit: int | None = None  # page size, the API's default when None

    def query(self, **changes: str | None) -> str:
        """This view's query string, with ``changes`` (None removes a parameter)."""
        params: dict[str, str | None] = {k: v for k, v in self.filters.items() if v}
        if self.live_only:
            params["live"] = "true"
        if self.automation != "group":
            params["automation"] = self.automation
        if self.cursor:
            params["cursor"] = self.cursor
        if self.limit:
            params["limit"] = str(self.limit)
        params.update(changes)
        return urlencode({k: v for k, v in params.items() if v})


def interactive(rec: Mapping[str, Any]) -> bool:
    """A session with a PTY. Without one (``ssh host cmd``, transfers, automation such as
    Ansible, one session per task) the header says so: tssh's ``"tssh": {"stderr": true}``,
    and for any uploader a 0x0 terminal (docs/recording.md)."""
    header = _header(rec)
    extra = header.get("tssh")
    if isinstance(extra, dict) and extra.get("stderr") is True:
        return False
    return not (header.get("width") == 0 and header.get("height") == 0)


def who(rec: Mapping[str, Any]) -> str:
    """``login → local user``; header fields are as the uploader sent them, any JSON type."""
    header = _header(rec)
    tags = header.get("srcNodeTags")
    tags_text = ",".join(str(t) for t in tags) if isinstance(tags, list) else ""
    src = header.get("srcNodeUser") or tags_text or "?"
    local = header.get("localUser") or header.get("sshUser")
    return f"{src} → {local}" if local else str(src)


def _header(rec: Mapping[str, Any]) -> Mapping[str, Any]:
    header = rec.get("header")
    return header if isinstance(header, dict) else {}


def _command(rec: Mapping[str, Any]) -> str:
    command = _header(rec).get("command")
    return str(command) if command else ("shell" if interactive(rec) else "-")


def pod_text(rec: Mapping[str, Any]) -> str | None:
    """``kubectl exec namespace/pod (container)`` for a recording from Tailscale's
    Kubernetes operator (docs/recorder.md, "Kubernetes recordings"), else None."""
    k8s = kubernetes.session(_header(rec))
    if k8s is None:
        return None
    where = "/".join(p for p in (k8s.namespace, k8s.pod) if p) or "?"
    container = f" ({k8s.container})" if k8s.container else ""
    return f"kubectl {k8s.session_type or 'session'} {where}{container}"


def duration_text(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def size_text(size: Any) -> str:
    if not isinstance(size, int):
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # not reached


def start_text(start: Any) -> str:
    """``2026-11-25T09:00:00.000Z`` → ``2026-11-25 09:00:00Z`` (UTC, as stored)."""
    if not isinstance(start, str):
        return "-"
    return start.replace("T", " ").split(".")[0].rstrip("Z") + "Z"


def player_href(rec_id: str, t: float | None = None, q: str | None = None) -> str:
    params = {k: v for k, v in (("t", None if t is None else f"{t:g}"), ("q", q)) if v}
    return f"play/{escape(rec_id)}" + (f"?{escape(urlencode(params))}" if params else "")


def _page(title: str, body: str, *, scripts: Sequence[str] = (),
          styles: Sequence[str] = ()) -> str:
    links = "".join(f'<link rel="stylesheet" href="{escape(s)}">' for s in ("ui/app.css", *styles))
    tags = "".join(f'<script src="{escape(s)}"></script>' for s in scripts)
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<link rel="icon" href="data:,">'
            f'<base href="/"><title>{escape(title)}</title>{links}</head>'
            f"<body>{body}{tags}</body></html>\n")


def _status(rec: Mapping[str, Any]) -> str:
    status = str(rec.get("status") or "?")
    return f'<span class="status {escape(status)}">{escape(status)}</span>'


def hold_text(rec: Mapping[str, Any]) -> str | None:
    """The legal hold (docs/recorder.md, "Retention") as one line; None when not on hold."""
    hold = rec.get("hold")
    if not isinstance(hold, Mapping):
        return None
    return (f"{hold.get('reason') or '-'} (by {hold.get('by') or '?'}, "
            f"{start_text(hold.get('at'))})")


def _hold(rec: Mapping[str, Any]) -> str:
    text = hold_text(rec)
    return "" if text is None else (
        f' <span class="status hold" title="legal hold: {escape(text)}">hold</span>')


def _matches(rec: Mapping[str, Any], q: str | None) -> str:
    matches = rec.get("matches")
    if not isinstance(matches, list) or not matches:
        return ""
    items = []
    for m in matches:
        if not isinstance(m, dict) or not isinstance(m.get("time"), int | float):
            continue
        t = float(m["time"])
        items.append(f'<li><a class="match" href="{player_href(str(rec["id"]), t, q)}">'
                     f'<span class="t">{escape(duration_text(t))}</span> '
                     f'{escape(str(m.get("text", "")))}</a></li>')
    return f'<ul class="matches">{"".join(items)}</ul>' if items else ""


def _pod(rec: Mapping[str, Any]) -> str:
    text = pod_text(rec)
    return "" if text is None else f'<span class="pod">{escape(text)}</span> '


def _row(rec: Mapping[str, Any], q: str | None) -> str:
    rid = str(rec["id"])
    command = _command(rec)
    return (
        f'<tr class="rec" data-id="{escape(rid)}" data-status="{escape(str(rec.get("status")))}">'
        f'<td class="start"><a href="{player_href(rid)}">{escape(start_text(rec.get("start")))}'
        f'</a></td><td class="who">{escape(who(rec))}</td>'
        f'<td class="node">{escape(str((rec.get("node") or {}).get("name", "?")))}</td>'
        f'<td class="cmd">{_pod(rec)}{escape(str(command))}{_matches(rec, q)}</td>'
        f'<td class="dur">{escape(duration_text(rec.get("duration")))}</td>'
        f'<td class="size">{escape(size_text(rec.get("size")))}</td>'
        f'<td class="st">{_status(rec)}{_hold(rec)}</td></tr>'
    )


def _group(members: list[Mapping[str, Any]], q: str | None) -> str:
    first = members[0]
    header = _header(first)
    live = sum(1 for m in members if m.get("status") == "live")
    commands = "".join(
        f'<li><a href="{player_href(str(m["id"]))}">{escape(start_text(m.get("start")))}</a> '
        f'<code>{escape(_command(m))}</code> '
        f'{_status(m)}{_hold(m)}{_matches(m, q)}</li>' for m in members)
    size = sum(m.get("size") or 0 for m in members if isinstance(m.get("size"), int))
    badge = '<span class="status live">live</span>' if live else ""
    return (
        f'<tr class="group" data-connection="{escape(str(header.get("connectionID") or ""))}">'
        f'<td class="start">{escape(start_text(first.get("start")))}</td>'
        f'<td class="who">{escape(who(first))}</td>'
        f'<td class="node">{escape(str((first.get("node") or {}).get("name", "?")))}</td>'
        f'<td class="cmd"><details><summary>{len(members)} non-interactive session'
        f'{"s" if len(members) != 1 else ""} on one connection'
        f'{f" ({live} live)" if live else ""}</summary><ul>{commands}</ul></details></td>'
        f'<td class="dur"></td><td class="size">{escape(size_text(size))}</td>'
        f'<td class="st">{badge}</td></tr>'
    )


def rows(recordings: Sequence[Mapping[str, Any]], view: ListView) -> str:
    """The table body: one row per recording, newest first; non-interactive sessions grouped
    per uploading node and SSH connection (at the place of the group's newest), hidden, or
    shown as any other, as the view says; those with search matches are always rows."""
    q = view.filters.get("q") or None
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    order: list[Mapping[str, Any] | tuple[str, str]] = []
    hidden = 0
    for rec in recordings:
        # a search hit is what the reader looks for: never folded away or hidden
        if view.automation == "show" or interactive(rec) or rec.get("matches"):
            order.append(rec)
            continue
        if view.automation == "hide":
            hidden += 1
            continue
        conn = _header(rec).get("connectionID") or rec["id"]
        key = (str((rec.get("node") or {}).get("id")), str(conn))
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(rec)
    out = [_group(groups[item], q) if isinstance(item, tuple) else _row(item, q)
           for item in order]
    if hidden:
        out.append(f'<tr class="hidden-note"><td colspan="7">{hidden} non-interactive '
                   f'session{"s" if hidden != 1 else ""} hidden on this page</td></tr>')
    if not out:
        out.append('<tr class="empty"><td colspan="7">No recordings.</td></tr>')
    return "".join(out)


def _field(name: str, label: str, value: str, kind: str = "text", hint: str = "") -> str:
    placeholder = f' placeholder="{escape(hint)}"' if hint else ""
    return (f'<label>{escape(label)}<input type="{kind}" name="{name}" value="{escape(value)}"'
            f"{placeholder}></label>")


def list_page(listing: Mapping[str, Any], view: ListView, *, error: str | None = None) -> str:
    """The recordings list: filters, search box, the rows, and the pager (the API's cursor)."""
    f = view.filters
    options = "".join(
        f'<option value="{a}"{" selected" if a == view.automation else ""}>{label}</option>'
        for a, label in (("group", "grouped"), ("hide", "hidden"), ("show", "shown")))
    form = (
        '<form class="filters" method="get" action="./">'
        + _field("q", "Search", f.get("q", ""), "search", "words or \"a phrase\"")
        + _field("user", "User", f.get("user", ""))
        + _field("node", "Node", f.get("node", ""))
        + _field("since", "Since", f.get("since", ""), hint="2026-11-25T09:00Z")
        + _field("until", "Until", f.get("until", ""))
        + f'<label>Non-interactive<select name="automation">{options}</select></label>'
        + '<label class="check"><input type="checkbox" name="live" value="true"'
        + (" checked" if view.live_only else "") + "> live only</label>"
        + '<button type="submit">Show</button></form>'
    )
    nxt = listing.get("next")
    pager = '<nav class="pager">'
    if view.cursor:  # the cursor only goes on: back to the start is the way back
        pager += f'<a href="./?{escape(view.query(cursor=None))}">« Newest</a>'
    if nxt:
        pager += f'<a class="older" href="./?{escape(view.query(cursor=str(nxt)))}">Older »</a>'
    pager += "</nav>"
    # the first page follows new and live recordings: list.js reloads the rows
    refresh = "" if view.cursor else f' data-refresh="./?{escape(view.query(fragment="rows"))}"'
    body = (
        '<header><h1><a href="./">Recordings</a></h1></header>' + form
        + (f'<p class="error">{escape(error)}</p>' if error else "")
        + '<table class="recordings"><thead><tr><th>Start (UTC)</th><th>Who</th><th>Node</th>'
        '<th>Command</th><th>Duration</th><th>Size</th><th>Status</th></tr></thead>'
        f'<tbody id="rows"{refresh}>'
        + rows(listing.get("recordings") or [], view) + "</tbody></table>" + pager
    )
    return _page("Recordings", body, scripts=("ui/list.js",))


@dataclass(frozen=True)
class Marker:
    time: float
    label: str


def player_page(meta: Mapping[str, Any], *, t: float | None, hits: Sequence[Marker],
                vendor_problem: str | None) -> str:
    """One recording: its metadata and the player (asciinema-player, driven by player.js:
    the eventsource driver for a live recording, the cast file otherwise)."""
    rid = str(meta["id"])
    exit_status = meta.get("exitStatus")
    facts = [
        ("Who", who(meta)), ("Node", str((meta.get("node") or {}).get("name", "?"))),
        ("Start", start_text(meta.get("start"))), ("Duration", duration_text(meta.get("duration"))),
        ("Size", size_text(meta.get("size"))),
        ("Command", _command(meta)),
        ("Exit status", "-" if exit_status is None else str(exit_status)),
    ]
    held = hold_text(meta)
    if held is not None:
        facts.append(("Legal hold", held))
    k8s = kubernetes.session(_header(meta))
    if k8s is not None:
        facts += [("Pod", k8s.pod or "-"), ("Namespace", k8s.namespace or "-"),
                  ("Container", k8s.container or "-"), ("Session type", k8s.session_type or "-")]
    # ids (who, node, ..., exit-status): player.js fills in the end of a live session
    dl = "".join(f'<dt>{escape(k)}</dt><dd id="{k.lower().replace(" ", "-")}">{escape(v)}</dd>'
                 for k, v in facts)
    dl += f'<dt>Status</dt><dd id="status">{_status(meta)}</dd>'
    warnings = "".join(f'<p class="warning">{escape(str(w))}</p>'
                       for w in meta.get("warnings") or [])
    if meta.get("error"):
        warnings += f'<p class="warning">{escape(str(meta["error"]))}</p>'
    # opened at a time far into a long recording: a segment from the seek index's last
    # checkpoint before it, not the whole cast (docs/recorder.md, "Seeking in long recordings")
    size = meta.get("size")
    far = t is not None and isinstance(size, int) and size >= SEGMENT_FROM
    config = {
        "id": rid, "status": meta.get("status"), "t": t,
        "cast": f"api/v1/recordings/{rid}/cast" + (f"?from={t:g}" if far and t else ""),
        "events": f"api/v1/recordings/{rid}/events",
        "meta": f"api/v1/recordings/{rid}", "hits": [[h.time, h.label] for h in hits],
        # the Kubernetes operator writes resizes as HEIGHTxWIDTH: player.js turns them round
        "resizeSwapped": kubernetes.resize_is_swapped(_header(meta)),
    }
    speeds = "".join(f'<option value="{s}"{" selected" if s == "1" else ""}>{s}&times;</option>'
                     for s in ("0.5", "1", "2", "4", "8"))
    if vendor_problem is not None:
        player = f'<div class="error" id="player-missing">{escape(vendor_problem)}</div>'
        scripts: tuple[str, ...] = ()
        styles: tuple[str, ...] = ()
    else:
        player = (
            '<div class="controls"><label>Speed <select id="speed">' + speeds + "</select>"
            '</label><span id="live-note"></span></div><div id="player"></div>'
            '<ol id="markers" class="markers"></ol>'
        )
        scripts = ("ui/vendor/asciinema-player.min.js", "ui/player.js")
        styles = ("ui/vendor/asciinema-player.css",)
    # JSON in a script-free attribute: escape() makes it safe HTML, player.js parses it
    body = (
        f'<header><h1><a href="./">Recordings</a> &rsaquo; {escape(rid)}</h1></header>'
        f'<dl class="meta">{dl}</dl>{warnings}'
        f'<main id="view" data-config="{escape(json.dumps(config))}">{player}</main>'
    )
    return _page(f"Recording {rid}", body, scripts=scripts, styles=styles)


def problem_page(title: str, message: str) -> str:
    return _page(title, f'<header><h1><a href="./">Recordings</a></h1></header>'
                        f'<p class="error">{escape(message)}</p>')
