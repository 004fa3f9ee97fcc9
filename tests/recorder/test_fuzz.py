"""Property tests: no input to the read API or to ingest gets a 5xx, logs a traceback, or
changes what is stored.

The API and the asciicast header fields are fuzzed against the ASGI app in-process (httpx's
ASGITransport, whose ``client`` address is the viewer's or the uploader's, so access and
identity run as in production; an exception in the app fails the example). The HTTP/1.1
request head of an upload (Content-Type, Content-Length, Transfer-Encoding, Expect) is fuzzed
against a real recorder, since hypercorn and h11 parse those before the app runs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import socket
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from recorder.app import RecorderApp, build_app, open_service
from recorder.cli import _settings, build_parser
from tests.recorder.conftest import (
    ALICE,
    NETMAP,
    POLICY,
    SERVER,
    VIEWERS,
    RecorderProc,
    cast_header,
    event,
)
from tssh.identity.factory import open_resolver

FUZZ = settings(max_examples=80, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# header values httpx can send: visible ASCII, space and tab (no CR/LF), some Latin-1
_VALUE = st.text(st.characters(codec="latin-1", exclude_characters="\r\n\x00",
                               exclude_categories=["Cc"]), max_size=60)
_DIGITS = st.one_of(st.integers(-10, 10**20).map(str), st.just("9" * 5000),
                    st.just("0" * 5000 + "7"), st.just("١٢٣"))
_TIME = st.one_of(
    _DIGITS, st.floats().map(repr), st.sampled_from(
        ["nan", "inf", "-inf", "1e400", "-1e20", "0001-01-01T00:00:00+23:59",
         "9999-12-31T23:59:59-23:59", "2026-11-25T09:00:00Z", "2026-13-45", "yesterday", ""]),
    st.text(max_size=30),
)
_ANY_TEXT = st.one_of(st.text(max_size=80), _DIGITS, st.just("\x00"), st.just("%00"),
                      st.just("../../etc/passwd"))


def _store_digest(store: Path) -> dict[str, str]:
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.rglob("*")) if p.is_file()}


class InProcess:
    """The recorder's ASGI app with its storage and index, driven by one event loop."""

    def __init__(self, tmp: Path) -> None:
        (tmp / "netmap.json").write_text(json.dumps(NETMAP))
        (tmp / "policy.hujson").write_text(POLICY)
        args = build_parser().parse_args([
            "serve", "--dst", str(tmp / "store"), "--state-dir", str(tmp / "state"),
            "--netmap", str(tmp / "netmap.json"), "--policy", str(tmp / "policy.hujson"),
            *(a for v in VIEWERS for a in ("--viewer", v)),
        ])
        self.settings = _settings(args)
        self.store = tmp / "store"
        self.runner = asyncio.Runner()
        self.app: RecorderApp = self.runner.run(self._start())

    async def _start(self) -> RecorderApp:
        service = open_service(self.settings)
        app = build_app(self.settings, service, open_resolver(self.settings.identity))
        await service.start()
        return app

    def client(self, source: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(self.app.asgi, client=(source, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://recorder", timeout=30)

    def run(self, coro: Any) -> Any:
        return self.runner.run(coro)

    def close(self) -> None:
        async def stop() -> None:
            await self.app.service.close()
            await self.app.resolver.close()

        self.runner.run(stop())
        self.runner.close()

    def upload(self, body: bytes, **headers: bytes) -> httpx.Response:
        async def post() -> httpx.Response:
            async with self.client(SERVER) as c:
                return await c.post("/record", content=body, headers=headers)

        return self.run(post())  # type: ignore[no-any-return]

    def upload_v2(self, body: bytes) -> tuple[int, list[dict[str, Any]]]:
        """POST /v2/record as hypercorn hands an h2 stream to the app (ASGITransport speaks
        only HTTP/1.1): the response status and its JSON frames."""
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "2", "method": "POST",
            "scheme": "http", "path": "/v2/record", "raw_path": b"/v2/record",
            "query_string": b"", "headers": [], "client": (SERVER, 40001),
            "server": ("127.0.0.1", 80),
        }
        incoming = [{"type": "http.request", "body": body, "more_body": False}]
        status: list[int] = []
        out = bytearray()

        async def receive() -> dict[str, Any]:
            return incoming.pop(0) if incoming else {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            else:
                out.extend(message.get("body", b""))

        async def run() -> None:
            await asyncio.wait_for(self.app.asgi(scope, receive, send), 30)

        self.run(run())
        return status[0], [json.loads(line) for line in bytes(out).splitlines() if line]

    def listing(self) -> list[dict[str, Any]]:
        async def get() -> list[dict[str, Any]]:
            async with self.client(ALICE) as c:
                r = await c.get("/api/v1/recordings", params={"limit": 500})
                assert r.status_code == 200, r.text
                return list(r.json()["recordings"])

        return self.run(get())  # type: ignore[no-any-return]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[InProcess]:
    rec = InProcess(tmp_path)
    try:
        yield rec
    finally:
        rec.close()


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [f"{r.name}: {r.getMessage()}" for r in bad]


def _seed(app: InProcess) -> list[dict[str, Any]]:
    for i in range(3):
        body = cast_header(conn=f"seed-{i}") + b"".join(event(j / 10, f"{i}.{j}\n")
                                                        for j in range(20))
        assert app.upload(body).status_code == 200
    return app.listing()


def test_read_api_never_fails_on_bad_input(
    app: InProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """Each example sends four requests, so that every parameter reaches the code that
    parses it: the listing with fuzzed query parameters; a fuzzed id (and sub-path); a
    stored recording's cast with a fuzzed Range; the listing with a fuzzed Authorization."""
    seeded = _seed(app)
    ids = [str(m["id"]) for m in seeded]
    before = _store_digest(app.store)

    ids_st = st.one_of(
        st.sampled_from(ids), st.sampled_from(ids).map(lambda i: i + "\n"),
        st.sampled_from(ids).map(lambda i: i.upper()), _ANY_TEXT,
    )
    params_st = st.dictionaries(
        st.sampled_from(["node", "user", "since", "until", "live", "q", "limit", "cursor"]),
        st.one_of(_ANY_TEXT, _TIME, st.sampled_from(["true", "false", "1", "yes", "maybe"]),
                  st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode())),
        max_size=5,
    )
    range_st = st.one_of(
        _VALUE,
        st.tuples(st.one_of(st.just(""), _DIGITS), st.one_of(st.just(""), _DIGITS)).map(
            lambda p: f"bytes={p[0]}-{p[1]}"),
        st.sampled_from(["bytes=0-0,5-9", "bytes=-0", "bytes= 1-2", "items=0-1", "bytes=5-1"]),
    )
    auth_st = st.one_of(_VALUE, _VALUE.map(lambda t: f"Bearer {t}"),
                        st.just("Bearer "), st.just("Basic Zm9vOmJhcg=="))

    @FUZZ
    @given(rid=ids_st, tail=st.sampled_from(["", "/cast", "/live", "/verify", "/x"]),
           params=params_st, rng=range_st, auth=auth_st, which=st.sampled_from(ids))
    @example(rid=ids[0], tail="/cast", params={}, rng="bytes=0-" + "9" * 5000, auth="",
             which=ids[0]).via("issue 18: 500 from int() of 5,000 digits")
    @example(rid=ids[0] + "\n", tail="", params={"since": "1e400", "until": "nan"},
             rng="bytes=" + "9" * 5000 + "-", auth="Bearer x", which=ids[1]).via("limits")
    @example(rid="x", tail="", params={"since": "0001-01-01T00:00:00+23:59",
                                       "cursor": base64.urlsafe_b64encode(b"1e999|x").decode(),
                                       "limit": "9" * 5000},
             rng="bytes=-" + "0" * 5000 + "1", auth="Bearer \xa0", which=ids[2]).via("limits")
    def one(rid: str, tail: str, params: dict[str, str], rng: str, auth: str,
            which: str) -> None:
        async def go() -> None:
            async with app.client(ALICE) as c:
                for url, query, headers in (
                    ("/api/v1/recordings", params, {}),
                    (f"/api/v1/recordings/{quote(rid, safe='')}{tail}", {}, {}),
                    (f"/api/v1/recordings/{which}/cast", {}, {"Range": rng.encode()}),
                    ("/api/v1/recordings", {}, {"Authorization": auth.encode()}),
                ):
                    r = await c.get(url, params=query, headers=headers)
                    assert r.status_code < 500, (url, query, headers, r.status_code, r.text)

        app.run(go())

    one()
    assert _store_digest(app.store) == before
    assert app.listing() == seeded
    _no_tracebacks(caplog)


_JSON_LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
    st.just(10**4000), st.just("\ud800"),
)
_JSON = st.recursive(_JSON_LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)
_HEADER_FIELDS = ["version", "width", "height", "timestamp", "srcNode", "srcNodeID",
                  "srcNodeUser", "srcNodeUserID", "srcNodeTags", "sshUser", "localUser",
                  "connectionID", "command", "env", "title"]


def _header_line(fields: dict[str, Any], raw: bytes | None) -> bytes:
    if raw is not None:
        return raw
    try:
        return json.dumps(fields).encode("utf-8", "surrogatepass") + b"\n"
    except ValueError:  # a 10**4000 leaf: json.dumps refuses ints over 4,300 digits too
        return b'{"version": 2, "width": 80, "height": 24, "n": ' + b"9" * 5000 + b"}\n"


def test_ingest_never_fails_on_bad_header_fields(
    app: InProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """The asciicast header line's fields (and a few hostile event lines), and the ingest
    request headers as the app sees them."""
    seeded = _seed(app)
    before = _store_digest(app.store)
    valid = json.loads(cast_header())

    fields_st = st.builds(
        lambda base, changes, dropped: {
            **{k: v for k, v in base.items() if k not in dropped}, **changes},
        st.just(valid),
        st.dictionaries(st.one_of(st.sampled_from(_HEADER_FIELDS), st.text(max_size=8)),
                        _JSON, max_size=4),
        st.sets(st.sampled_from(_HEADER_FIELDS), max_size=3),
    )
    raw_st = st.one_of(
        st.none(), st.none(), st.binary(max_size=80).map(lambda b: b + b"\n"),
        st.sampled_from([b"[" * 70000 + b"\n", b'{"version": 2, "width": NaN}\n',
                         b'{"version": 2, "width": 80, "height": 24, "timestamp": 1e999}\n',
                         b'{"version": 2, "width": 80, "height": 24, "x": "\\udfff"}\n',
                         b"\xef\xbb\xbf" + cast_header(), b"\n"]),
    )
    events_st = st.lists(st.one_of(
        st.sampled_from([b'[1e999, "o", "x"]\n', b'[-1e999, "x", "0"]\n', b'[NaN, "o", ""]\n',
                         b'[1, "x", ' + b"9" * 90 + b"]\n", b"[0.5, \"o\", \"\xff\"]\n",
                         b'[0.1, "o", "\\ud800"]\n', b"[" * 1000 + b"\n"]),
        st.binary(max_size=40),
    ), max_size=3)
    headers_st = st.dictionaries(
        st.sampled_from(["Content-Type", "Expect", "X-Extra"]), _VALUE, max_size=3)

    @FUZZ
    @given(fields=fields_st, raw=raw_st, events=events_st, headers=headers_st)
    @example(fields=valid, raw=b"[" * 70000 + b"\n", events=[], headers={})
    @example(fields={**valid, "n": 10**4000}, raw=None, events=[], headers={})
    @example(fields={**valid, "timestamp": float("nan")}, raw=None, events=[], headers={})
    @example(fields={**valid, "env": {"x": float("inf")}}, raw=None, events=[], headers={})
    @example(fields={**valid, "sshUser": "\udc80"}, raw=None, events=[], headers={})
    @example(fields=valid, raw=None, events=[b'[1e999, "o", "x"]\n'],
             headers={"Content-Type": "text/plain", "Expect": "nothing"})
    def one(fields: dict[str, Any], raw: bytes | None, events: list[bytes],
            headers: dict[str, str]) -> None:
        body = _header_line(fields, raw) + b"".join(events)
        r = app.upload(body, **{k: v.encode() for k, v in headers.items()})
        assert r.status_code < 500, (body[:300], r.status_code, r.text)
        status, frames = app.upload_v2(body)
        assert status == 200 and frames, (body[:300], status, frames)
        assert all("internal" not in str(f.get("error")) for f in frames), (body[:300], frames)

    one()
    after = app.listing()  # every stored recording can still be listed (strict JSON)...
    assert [m for m in after if m["id"] in {s["id"] for s in seeded}] == seeded

    async def read_all() -> None:  # ...shown, read and verified
        async with app.client(ALICE) as c:
            for m in after:
                for tail in ("", "/cast", "/verify"):
                    r = await c.get(f"/api/v1/recordings/{m['id']}{tail}")
                    assert r.status_code == 200, (m["id"], tail, r.text)

    app.run(read_all())
    now = _store_digest(app.store)
    assert {k: v for k, v in now.items() if k in before} == before
    _no_tracebacks(caplog)


@pytest.fixture
def real(tmp_path: Path) -> Iterator[RecorderProc]:
    rec = RecorderProc(tmp_path, str(tmp_path / "store"), extra=["--header-timeout", "3"])
    try:
        rec.start()
        yield rec
    finally:
        rec.stop()


_FIELD = st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b)


def test_ingest_request_head_never_gets_500(real: RecorderProc) -> None:
    """Content-Type, Content-Length, Transfer-Encoding and Expect as sent on the wire. The one
    5xx allowed is h11's 501 for a transfer coding other than chunked, which RFC 9112 §6.1
    asks for."""
    body = cast_header(conn="wire") + event(0.1, "x\n")
    seeded_body = cast_header(conn="seed") + event(0.1, "kept\n")
    with real.client(SERVER) as c:
        assert c.post("/record", content=seeded_body).status_code == 200
    store = real.tmp / "store"
    before = _store_digest(store)

    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(
        ctype=st.one_of(st.none(), _FIELD),
        length=st.one_of(st.none(), _FIELD, st.integers(-5, len(body) * 2).map(
            lambda n: str(n).encode()), st.just(b"9" * 5000), st.just(b"5, 5")),
        te=st.one_of(st.none(), st.just(b"chunked"), _FIELD),
        expect=st.one_of(st.none(), st.just(b"100-continue"), _FIELD),
    )
    def one(ctype: bytes | None, length: bytes | None, te: bytes | None,
            expect: bytes | None) -> None:
        head = b"POST /record HTTP/1.1\r\nHost: recorder\r\n"
        for name, value in ((b"Content-Type", ctype), (b"Content-Length", length),
                            (b"Transfer-Encoding", te), (b"Expect", expect)):
            if value is not None:
                head += name + b": " + value + b"\r\n"
        payload = (f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
                   if te == b"chunked" else body)
        with socket.create_connection(("127.0.0.1", real.port), timeout=20,
                                      source_address=(SERVER, 0)) as s:
            s.sendall(head + b"\r\n" + payload)
            s.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        statuses = [int(line.split()[1]) for line in answer.split(b"\r\n")
                    if line.startswith(b"HTTP/1.1 ")]
        for status in statuses:
            if status == 501:
                assert te not in (None, b"chunked"), (head, answer[:300])
            else:
                assert status < 500, (head, answer[:300])

    one()
    now = _store_digest(store)
    assert {k: v for k, v in now.items() if k in before} == before
    text = real.log.read_text()
    assert "Traceback" not in text and " ERROR " not in text, text[-3000:]
    with real.client(ALICE) as c:
        assert c.get("/api/v1/recordings", params={"limit": 500}).status_code == 200
