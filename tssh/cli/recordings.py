"""``tssh recordings list|search|show|get|play|verify``: a client of the recorder's API
(docs/recorder.md)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from tssh.errors import RecordingsError

DEFAULT_RECORDER = "http://127.0.0.1:8080"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("recordings", help="list, fetch, replay and verify recordings")
    sub = p.add_subparsers(dest="recordings_command", metavar="ACTION", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--recorder", default=os.environ.get("TSSH_RECORDER", DEFAULT_RECORDER),
            help=f"recorder URL [TSSH_RECORDER] (default {DEFAULT_RECORDER})",
        )
        sp.add_argument(
            "--token", default=os.environ.get("TSSH_RECORDER_TOKEN"),
            help="API token, when not reading as a viewer node [TSSH_RECORDER_TOKEN]",
        )

    ls = sub.add_parser("list", help="recordings, newest first")
    common(ls)
    ls.add_argument("--node", help="uploading node (name or id)")
    ls.add_argument("--user", help="login, SSH user or local user")
    ls.add_argument("--since", help="RFC 3339 time or unix seconds")
    ls.add_argument("--until", help="RFC 3339 time or unix seconds")
    live = ls.add_mutually_exclusive_group()
    live.add_argument("--live", dest="live", action="store_const", const=True,
                      help="only recordings in progress")
    live.add_argument("--finished", dest="live", action="store_const", const=False,
                      help="only finished recordings")
    ls.add_argument("-q", "--query", dest="q",
                    help="words and \"phrases\" in the output or metadata (as search)")
    ls.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    ls.add_argument("--json", action="store_true", help="print the API's JSON")
    ls.set_defaults(func=_list)

    search = sub.add_parser(
        "search", help="recordings whose output matches words, with the times of the hits",
        description="Prints each matching recording, newest first, then its first hits: the "
        "time from the start of the recording and the line as it was shown. A word given "
        "with spaces in it (quoted for the shell) is a phrase. See docs/recorder.md, Search.",
    )
    common(search)
    search.add_argument("words", nargs="+", metavar="WORD",
                        help='words, "a phrase" (quoted), or a prefix*; put -- before a '
                        "word that starts with -")
    search.add_argument("--node", help="uploading node (name or id)")
    search.add_argument("--user", help="login, SSH user or local user")
    search.add_argument("--since", help="RFC 3339 time or unix seconds")
    search.add_argument("--until", help="RFC 3339 time or unix seconds")
    search.add_argument("--limit", type=int, default=20, help="how many recordings (default 20)")
    search.add_argument("--json", action="store_true", help="print the API's JSON")
    search.set_defaults(func=_search)

    show = sub.add_parser("show", help="metadata of one recording")
    common(show)
    show.add_argument("id")
    show.set_defaults(func=_show)

    get = sub.add_parser("get", help="download the asciicast file")
    common(get)
    get.add_argument("id")
    get.add_argument("-o", "--output", type=Path, help="file to write (default: ID.cast)")
    get.set_defaults(func=_get)

    play = sub.add_parser("play", help="replay a recording in this terminal")
    common(play)
    play.add_argument("id")
    play.add_argument("--speed", type=float, default=1.0, help="playback speed (default 1)")
    play.add_argument("--idle-time-limit", type=float, help="cap pauses to this many seconds")
    play.add_argument("-f", "--follow", action="store_true",
                      help="a live recording: print what it has so far, then its new output "
                      "as it happens, until the session ends")
    play.set_defaults(func=_play)

    verify = sub.add_parser("verify", help="check a recording's seal (exit 1 if broken)")
    common(verify)
    verify.add_argument("id")
    verify.set_defaults(func=_verify)


class _Api:
    def __init__(self, args: argparse.Namespace) -> None:
        self.base = str(args.recorder).rstrip("/")
        headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
        self.client = httpx.Client(base_url=self.base, headers=headers, timeout=30)

    def __enter__(self) -> _Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def _check(self, r: httpx.Response) -> httpx.Response:
        if r.status_code < 400:
            return r
        try:
            detail = r.json().get("detail")
        except (ValueError, AttributeError):
            detail = None
        hint = {401: " (give --token, or read from a viewer node)",
                403: " (this node is not a viewer)"}.get(r.status_code, "")
        raise RecordingsError(
            f"recorder {self.base} answered {r.status_code}: {detail or r.reason_phrase}{hint}"
        )

    def get_json(self, path: str, **params: Any) -> Any:
        try:
            r = self.client.get(path, params={k: v for k, v in params.items() if v is not None})
        except httpx.HTTPError as e:
            raise RecordingsError(f"cannot reach the recorder at {self.base}: {e}") from e
        try:
            return self._check(r).json()
        except ValueError as e:
            raise RecordingsError(f"recorder {self.base} answered with invalid JSON") from e

    def lines(self, path: str) -> Iterator[bytes]:
        """The lines of a streamed answer (``/live``), as they arrive; no read timeout, since
        a live session may be quiet for hours."""
        try:
            with self.client.stream("GET", path, timeout=httpx.Timeout(30, read=None)) as r:
                if r.status_code >= 400:
                    r.read()
                self._check(r)
                for line in r.iter_lines():
                    yield line.encode()
        except httpx.HTTPError as e:
            raise RecordingsError(f"following the recording at {self.base} failed: {e}") from e

    def download(self, rid: str, out: Any) -> int:
        size = 0
        try:
            with self.client.stream("GET", f"/api/v1/recordings/{quote(rid, safe='')}/cast") as r:
                if r.status_code >= 400:
                    r.read()  # the error's JSON body, for the message
                self._check(r)
                for chunk in r.iter_bytes():
                    out.write(chunk)
                    size += len(chunk)
        except httpx.HTTPError as e:
            raise RecordingsError(f"download from {self.base} failed: {e}") from e
        return size


def _row(rec: dict[str, Any]) -> list[str]:
    header = rec.get("header") or {}
    duration = rec.get("duration")
    who = header.get("srcNodeUser") or ",".join(header.get("srcNodeTags") or []) or "-"
    return [
        str(rec["id"]), str(rec.get("start") or "-"), str(rec["node"]["name"]),
        f"{who}->{header.get('localUser') or header.get('sshUser') or '-'}",
        "-" if duration is None else f"{float(duration):.1f}s", str(rec.get("size")),
        str(rec.get("status")),
    ]


def _fetch(args: argparse.Namespace, *, live: str | None, q: str | None) -> list[dict[str, Any]]:
    """Up to ``args.limit`` recordings, following the cursor."""
    with _Api(args) as api:
        out: list[dict[str, Any]] = []
        cursor = None
        while len(out) < args.limit:
            page = api.get_json(
                "/api/v1/recordings", node=args.node, user=args.user, since=args.since,
                until=args.until, live=live, q=q, limit=min(500, args.limit - len(out)),
                cursor=cursor,
            )
            out += page["recordings"]
            cursor = page.get("next")
            if not cursor:
                break
    return out


def _list(args: argparse.Namespace) -> int:
    live = None if args.live is None else str(bool(args.live)).lower()
    out = _fetch(args, live=live, q=args.q)
    if args.json:
        print(json.dumps({"recordings": out}, indent=1))
        return 0
    rows = [["ID", "START", "NODE", "WHO", "DURATION", "SIZE", "STATUS"]] + [_row(r) for r in out]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def search_query(words: list[str]) -> str:
    """The ``q=`` of the words given on the command line: one with a space in it is a phrase
    (the shell's quotes are gone by now), one with a double quote is taken as written."""
    return " ".join(
        f'"{w}"' if any(c.isspace() for c in w) and '"' not in w else w for w in words
    )


def offset(seconds: float) -> str:
    """A time into a recording, as a player shows it: ``m:ss.s`` or ``h:mm:ss.s``."""
    minutes, sec = divmod(max(0.0, float(seconds)), 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{sec:04.1f}" if hours else f"{minutes}:{sec:04.1f}"


def _search(args: argparse.Namespace) -> int:
    q = search_query(args.words)
    if len(q) > 200:
        raise RecordingsError("the search is longer than the recorder accepts (200 characters)")
    out = _fetch(args, live=None, q=q)
    if args.json:
        print(json.dumps({"recordings": out}, indent=1))
        return 0
    if not out:
        print(f"no recording matches {q}", file=sys.stderr)
        return 1
    for rec in out:
        print("  ".join(_row(rec)))
        hits = rec.get("matches") or []
        for hit in hits:
            print(f"  {offset(hit['time']):>9}  {hit['text']}")
        if not hits:
            print("            (its metadata matches)")
    return 0


def _show(args: argparse.Namespace) -> int:
    with _Api(args) as api:
        print(json.dumps(api.get_json(f"/api/v1/recordings/{quote(args.id, safe='')}"), indent=1))
    return 0


def _get(args: argparse.Namespace) -> int:
    target: Path = args.output or Path(f"{args.id}.cast")
    with _Api(args) as api:
        if str(target) == "-":
            size = api.download(args.id, sys.stdout.buffer)
        else:
            tmp = target.with_name(target.name + ".part")
            try:
                with open(tmp, "wb") as f:
                    size = api.download(args.id, f)
                tmp.replace(target)
            except OSError as e:
                raise RecordingsError(f"cannot write {target}: {e.strerror or e}") from e
            finally:
                tmp.unlink(missing_ok=True)
    print(f"{size} bytes written to {target}", file=sys.stderr)
    return 0


@dataclass
class LiveEvent:
    """What one line of a followed recording means for the terminal (pure, ``live_event``)."""

    output: str = ""
    exit_status: int | None = None
    size: tuple[int, int] | None = None  # the header's or a resize's COLSxROWS


def live_event(line: bytes, *, swapped: bool = False) -> LiveEvent:
    """The header gives the size; ``"o"`` events give output, ``"x"`` the exit status, ``"r"``
    a new size (``swapped``: spelled HEIGHTxWIDTH, as Tailscale's Kubernetes operator does,
    docs/recorder.md); anything else (input, markers, a torn line) shows nothing."""
    try:
        doc = json.loads(line)
    except ValueError:
        return LiveEvent()
    if isinstance(doc, dict):
        w, h = doc.get("width"), doc.get("height")
        return LiveEvent(size=(w, h) if isinstance(w, int) and isinstance(h, int) else None)
    if not isinstance(doc, list) or len(doc) < 3 or not isinstance(doc[2], str):
        return LiveEvent()
    code, data = doc[1], doc[2]
    if code == "o":
        return LiveEvent(output=data)
    if code == "x" and data.lstrip("-").isdigit():
        return LiveEvent(exit_status=int(data))
    if code == "r":
        cols, _, rows = data.partition("x")
        if swapped:
            cols, rows = rows, cols
        if cols.isdigit() and rows.isdigit():
            return LiveEvent(size=(int(cols), int(rows)))
    return LiveEvent()


def _follow(args: argparse.Namespace) -> int:
    """``play --follow``: the live stream (``/live``) written to this terminal as it comes."""
    out = sys.stdout
    exit_status: int | None = None
    with _Api(args) as api:
        meta = api.get_json(f"/api/v1/recordings/{quote(args.id, safe='')}")
        if meta.get("status") == "live":
            print(f"following {args.id} (live); Ctrl-C stops", file=sys.stderr, flush=True)
        header = meta.get("header")
        swapped = isinstance(header, dict) and isinstance(header.get("kubernetes"), dict)
        for line in api.lines(f"/api/v1/recordings/{quote(args.id, safe='')}/live"):
            ev = live_event(line, swapped=swapped)
            if ev.size is not None and out.isatty():
                print(f"\r\n[tssh: the session's terminal is {ev.size[0]}x{ev.size[1]}]\r",
                      file=sys.stderr, flush=True)
            if ev.output:
                out.write(ev.output)
                out.flush()
            if ev.exit_status is not None:
                exit_status = ev.exit_status
        done = api.get_json(f"/api/v1/recordings/{quote(args.id, safe='')}")
    print(f"\r\n[tssh: session ended, {done.get('status')}, "
          f"{'no exit status' if exit_status is None else f'exit status {exit_status}'}]",
          file=sys.stderr, flush=True)
    return 0


def _play(args: argparse.Namespace) -> int:
    if args.follow:
        return _follow(args)
    with _Api(args) as api, tempfile.TemporaryDirectory(prefix="tssh-play-") as d:
        path = Path(d) / "recording.cast"
        with open(path, "wb") as f:
            api.download(args.id, f)
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):  # an interrupted recording's torn last line
            path.write_bytes(data[: data.rfind(b"\n") + 1])
        cmd = [sys.executable, "-m", "asciinema", "play", "-s", str(args.speed)]
        if args.idle_time_limit is not None:
            cmd += ["-i", str(args.idle_time_limit)]
        return subprocess.call([*cmd, str(path)])


def _verify(args: argparse.Namespace) -> int:
    with _Api(args) as api:
        result = api.get_json(f"/api/v1/recordings/{quote(args.id, safe='')}/verify")
    if result.get("ok"):
        print(f"{args.id}: seal ok (sha256 {result.get('sha256')}, {result.get('size')} bytes)")
        return 0
    print(f"{args.id}: SEAL BROKEN", file=sys.stderr)
    for problem in result.get("problems", []):
        print(f"  - {problem}", file=sys.stderr)
    return 1
