"""The sans-I/O asciicast scanner: fed bytes in arbitrary pieces, it finds the header,
enforces limits and UTF-8, and notes the last event time and exit status."""

from __future__ import annotations

import json

import pytest

from recorder.errors import CastError
from recorder.stream import CastScanner, header_discrepancies, parse_header
from tests.recorder.conftest import cast_header, event
from tssh.identity.base import Peer


def feed_in_pieces(data: bytes, size: int, scanner: CastScanner | None = None) -> CastScanner:
    s = scanner or CastScanner()
    out = b""
    for i in range(0, len(data), size):
        out += s.feed(data[i : i + size])
    s.end()
    assert out == data  # everything is stored verbatim once the header is known
    return s


@pytest.mark.parametrize("size", [1, 7, 100, 4096, 1 << 20])
def test_exit_status_and_last_time_whatever_the_chunking(size: int) -> None:
    body = cast_header() + b"".join(event(i / 10, "é" * 30 + "\r\n") for i in range(300))
    body += event(31.5, "0", "x")
    s = feed_in_pieces(body, size)
    assert s.exit_status == 0
    assert s.last_time == 31.5
    assert s.header is not None and s.header.fields["sshUser"] == "alice"


def test_exit_status_numeric_form_and_nonzero() -> None:
    body = cast_header() + event(1.0, "bye\n") + b'[2.0, "x", 3]\n'
    assert feed_in_pieces(body, 1 << 20).exit_status == 3


def test_no_exit_event_means_unknown_status() -> None:
    body = cast_header() + event(1.0, 'a "x" inside output\n') + event(2.0, "more\n")
    s = feed_in_pieces(body, 1 << 20)
    assert s.exit_status is None and s.last_time == 2.0


def test_header_limit_and_line_limit() -> None:
    s = CastScanner(header_limit=100)
    with pytest.raises(CastError, match="header line longer"):
        s.feed(b'{"version": 2, "pad": "' + b"a" * 200)
    s = CastScanner(line_limit=1000)
    s.feed(cast_header())
    s.feed(b'[0.1, "o", "' + b"b" * 600)
    with pytest.raises(CastError, match="event line longer"):
        s.feed(b"b" * 600)
    s = CastScanner(line_limit=1000)  # many short lines in one big chunk are fine
    s.feed(cast_header() + event(0.1, "c" * 900) * 50)


def test_utf8_split_across_chunks_is_fine_invalid_bytes_are_not() -> None:
    body = cast_header() + "[0.1, \"o\", \"€uro\"]\n".encode()
    i = body.index("€".encode()) + 1
    s = CastScanner()
    s.feed(body[:i])
    s.feed(body[i:])
    s.end()
    s = CastScanner()
    s.feed(cast_header())
    with pytest.raises(CastError, match="UTF-8"):
        s.feed(b'[0.1, "o", "\xff"]\n')
    s = CastScanner()
    s.feed(cast_header() + b'[0.1, "o", "\xe2\x82')
    with pytest.raises(CastError, match="UTF-8"):
        s.end()


@pytest.mark.parametrize(("line", "message"), [
    (b'{"version": 2, "width": "80", "height": 24}', "'width'"),
    (b'{"version": 2, "width": 80, "height": true}', "'height'"),
    (b'{"version": 2, "width": 80, "height": 24, "timestamp": "now"}', "'timestamp'"),
    (b'{"version": 2, "width": 80, "height": 24, "srcNodeID": 5}', "'srcNodeID'"),
    (b'{"version": 2, "width": 80, "height": 24, "srcNodeTags": "tag:x"}', "'srcNodeTags'"),
    (b"[1, 2]", "JSON object"),
])
def test_header_validation(line: bytes, message: str) -> None:
    with pytest.raises(CastError, match=message):
        parse_header(line)


LAPTOP = Peer(name="laptop", id="nLAP1", addresses=("127.0.0.2",), user="alice@example.com",
              user_id="u1")


def test_header_claims_checked_against_the_tailnet() -> None:
    header = parse_header(cast_header().strip())
    assert header_discrepancies(header, LAPTOP) == []
    assert header_discrepancies(header, None) == []  # a node the recorder cannot see
    short = parse_header(cast_header(srcNode="LAPTOP").strip())
    assert header_discrepancies(short, LAPTOP) == []  # short name or FQDN, any case
    bob = parse_header(cast_header(srcNodeUser="bob@example.com", srcNodeUserID="u2").strip())
    problems = header_discrepancies(bob, LAPTOP)
    assert len(problems) == 2
    assert "srcNodeUser 'bob@example.com'" in problems[0] and "'u2'" in problems[1]
    renamed = parse_header(cast_header(srcNode="server.example.ts.net").strip())
    assert "srcNode 'server.example.ts.net'" in header_discrepancies(renamed, LAPTOP)[0]
    tagged = parse_header(cast_header(srcNodeTags=["tag:x"]).strip())
    assert any("srcNodeTags" in p for p in header_discrepancies(tagged, LAPTOP))
    anonymous = parse_header(json.dumps({"version": 2, "width": 1, "height": 1}).encode())
    assert header_discrepancies(anonymous, None) == []  # no claim, nothing to contradict


def test_unsafe_connection_id_is_not_used_for_keys() -> None:
    assert parse_header(cast_header(conn="../x").strip()).connection_id is None
    assert parse_header(cast_header(conn="ssh-conn-1-ab").strip()).connection_id == "ssh-conn-1-ab"
