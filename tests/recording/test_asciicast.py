import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tssh.identity.base import Peer
from tssh.recording.asciicast import (
    HEADER_LIMIT,
    TERM_LIMIT,
    CastEncoder,
    CastHeader,
    FittedHeader,
    HeaderTooLarge,
    fit_header,
    format_connection_id,
    new_connection_id,
)

ALICE = Peer(name="laptop.tail-net.ts.net.", id="nLAP1", addresses=("127.0.0.2",),
             user="alice@example.com", user_id="12345")
TAGGED = Peer(name="ci.tail-net.ts.net", id="nCI1", addresses=("127.0.0.3",),
              tags=("tag:ci", "tag:prod"))


def header(**kw: object) -> CastHeader:
    base: dict[str, object] = dict(ssh_user="alice", local_user="alice",
                                   connection_id="ssh-conn-20260101T000000-0011223344",
                                   started_at=1700000000.75, width=80, height=24)
    base.update(kw)
    return CastHeader.for_session(ALICE, **base)  # type: ignore[arg-type]


def events(data: bytes) -> list[list[object]]:
    lines = data.decode("utf-8").split("\n")
    assert lines[-1] == ""
    return [json.loads(line) for line in lines[:-1]]


def output_text(lines: bytes) -> str:
    return "".join(str(e[2]) for e in events(lines) if e[1] == "o")


def test_header_of_user_owned_node_has_tailscale_fields_in_order() -> None:
    h = header(command="uptime -p", term="screen")
    obj = json.loads(CastEncoder(h, 0.0).header_line())
    assert list(obj) == ["version", "width", "height", "timestamp", "command", "srcNode",
                         "srcNodeID", "srcNodeUserID", "srcNodeUser", "env", "sshUser",
                         "localUser", "connectionID", "tssh"]
    assert obj["version"] == 2
    assert (obj["width"], obj["height"], obj["timestamp"]) == (80, 24, 1700000000)
    assert obj["srcNode"] == "laptop.tail-net.ts.net"  # trailing dot dropped
    assert obj["srcNodeUser"] == "alice@example.com"
    assert obj["srcNodeUserID"] == 12345  # a number, as tailscaled writes it
    assert obj["env"] == {"TERM": "screen"}
    assert obj["tssh"] == {"stderr": False, "input": False}


def test_header_of_tagged_node_has_tags_and_no_user() -> None:
    h = CastHeader.for_session(TAGGED, ssh_user="root", local_user="root",
                               connection_id="c", started_at=5.0, includes_stderr=True)
    obj = json.loads(CastEncoder(h, 0.0).header_line())
    assert obj["srcNodeTags"] == ["tag:ci", "tag:prod"]
    assert "srcNodeUser" not in obj and "srcNodeUserID" not in obj
    assert "command" not in obj  # empty command omitted, as tailscaled does
    assert obj["env"] == {"TERM": "xterm-256color"}
    assert obj["tssh"] == {"stderr": True, "input": False}


def test_non_numeric_user_id_stays_a_string() -> None:
    peer = Peer(name="n", id="i", addresses=(), user="bob@x", user_id="uB0B")
    h = CastHeader.for_session(peer, ssh_user="b", local_user="b", connection_id="c",
                               started_at=0)
    assert h.to_json()["srcNodeUserID"] == "uB0B"


def test_connection_id_format() -> None:
    when = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert format_connection_id(when, bytes.fromhex("00ab12cd34")) == \
        "ssh-conn-20260304T050607-00ab12cd34"
    before = datetime.now(UTC).replace(microsecond=0)
    fresh = new_connection_id()
    prefix, stamp, nonce = fresh.rsplit("-", 2)
    assert prefix == "ssh-conn"
    assert before <= datetime.strptime(stamp, "%Y%m%dT%H%M%S").replace(tzinfo=UTC) \
        <= datetime.now(UTC)
    assert re.fullmatch("[0-9a-f]{10}", nonce)
    assert len({new_connection_id() for _ in range(100)}) == 100
    with pytest.raises(ValueError):
        format_connection_id(when, b"abc")


def test_times_are_relative_rounded_and_never_decrease() -> None:
    enc = CastEncoder(header(), start=100.0)
    out = enc.output(100.5, b"a") + enc.output(100.25, b"b") + enc.output(101.1234567, b"c")
    assert [e[0] for e in events(out)] == [0.5, 0.5, 1.123457]
    assert out.startswith(b'[0.5,"o","a"]\n')


def test_compact_lines_utf8_and_escaped_line_breaks() -> None:
    enc = CastEncoder(header(), start=0.0)
    line = enc.output(1.0, "é\n\x1b[0m\u2028\x85".encode())
    assert line == '[1,"o","é\\n\\u001b[0m\\u2028\\u0085"]\n'.encode()
    assert json.loads(line)[2] == "é\n\x1b[0m\u2028\x85"
    assert len(line.decode().splitlines()) == 1


def test_resize_exit_marker_events() -> None:
    enc = CastEncoder(header(), start=0.0)
    out = enc.resize(1.0, 132, 43) + enc.marker(2.0, "dropped") + enc.exit(3.0, 130)
    assert events(out) == [[1, "r", "132x43"], [2, "m", "dropped"], [3, "x", "130"]]


def test_exit_flushes_a_partial_character_first() -> None:
    enc = CastEncoder(header(), start=0.0)
    assert enc.output(1.0, b"ok \xe2\x82") == b'[1,"o","ok "]\n'
    assert events(enc.exit(2.0, 0)) == [[2, "o", "\ufffd"], [2, "x", "0"]]


def test_input_recorded_only_when_header_says_so() -> None:
    assert CastEncoder(header(), 0.0).input(1.0, b"secret\r") == b""
    enc = CastEncoder(header(includes_input=True), 0.0)
    assert events(enc.input(1.0, b"ls\r")) == [[1, "i", "ls\r"]]


def test_stderr_recorded_only_when_header_says_so_with_its_own_decoder() -> None:
    assert CastEncoder(header(), 0.0).stderr(1.0, b"err") == b""
    enc = CastEncoder(header(includes_stderr=True), 0.0)
    # A character split on stdout is not completed by stderr bytes, nor the reverse.
    out = enc.output(1.0, b"\xc3") + enc.stderr(1.0, b"\xe2\x82") + enc.output(2.0, b"\xa9")
    out += enc.stderr(3.0, b"\xac!")
    assert events(out) == [[2, "o", "é"], [3, "o", "€!"]]


def test_invalid_bytes_become_replacement_characters() -> None:
    enc = CastEncoder(header(), 0.0)
    out = enc.output(1.0, b"a\xffb\xc3(c\xed\xa0\x80d")
    # one U+FFFD per maximal invalid subsequence, as Python's (and asciinema's) decoder does
    assert output_text(out) == "a\ufffdb\ufffd(c\ufffd\ufffd\ufffdd"


def test_finish_flushes_trailing_partial_sequence_once() -> None:
    enc = CastEncoder(header(), 0.0)
    assert enc.output(1.0, b"\xf0\x9f\x98") == b""
    assert output_text(enc.finish(2.0)) == "\ufffd"
    assert enc.finish(3.0) == b""
    assert output_text(enc.output(4.0, b"\x80")) == "\ufffd"  # fresh decoder state after flush


@settings(max_examples=200, deadline=None)
@given(text=st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40),
       cuts=st.lists(st.integers(0, 200), max_size=8))
def test_split_reads_preserve_text(text: str, cuts: list[int]) -> None:
    data = text.encode()
    points = sorted({c % (len(data) + 1) for c in cuts})
    enc = CastEncoder(header(), 0.0)
    out = b""
    prev = 0
    for i, p in enumerate([*points, len(data)]):
        out += enc.output(float(i), data[prev:p])
        prev = p
    out += enc.finish(99.0)
    assert output_text(out) == text


def test_every_split_point_of_multibyte_characters() -> None:
    data = "a€b😀c©".encode()
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            enc = CastEncoder(header(), 0.0)
            out = enc.output(1, data[:i]) + enc.output(2, data[i:j]) + enc.output(3, data[j:])
            out += enc.finish(4)
            assert output_text(out) == "a€b😀c©", (i, j)


ASCIINEMA = Path(sys.executable).parent / "asciinema"


@pytest.mark.skipif(not ASCIINEMA.exists(), reason="asciinema is not installed beside python")
def test_asciinema_cat_plays_back_exactly_the_bytes_fed_in(tmp_path: Path) -> None:
    # Valid UTF-8 with controls, escapes, multibyte characters and JSON-special characters,
    # fed in reads that split characters.
    fed = ("$ ls\r\n\x1b[1;32mfichier été\x1b[0m \"q\" \\ \t\u2028\x85 😀\r\n").encode() * 50
    enc = CastEncoder(header(includes_stderr=True), start=0.0)
    cast = enc.header_line()
    step = 7
    for n, i in enumerate(range(0, len(fed), step)):
        cast += enc.output(n * 0.01, fed[i:i + step])
        if n % 10 == 0:
            cast += enc.resize(n * 0.01, 100 + n, 40)
    cast += enc.exit(10.0, 0)
    path = tmp_path / "s.cast"
    path.write_bytes(cast)
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "HOME": str(tmp_path)}
    result = subprocess.run([str(ASCIINEMA), "cat", str(path)], capture_output=True,
                            env=env, timeout=30, start_new_session=True,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert result.stdout == fed


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=60), cuts=st.lists(st.integers(0, 60), max_size=6))
def test_any_bytes_any_splits_decode_as_the_whole(data: bytes, cuts: list[int]) -> None:
    # Invalid sequences too: splitting never changes the text, nor adds replacement chars.
    enc = CastEncoder(header(), 0.0)
    out = b""
    prev = 0
    for p in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        out += enc.output(1.0, data[prev:p])
        prev = p
    out += enc.finish(2.0)
    assert output_text(out) == data.decode("utf-8", "replace")


# -- fitting client-supplied fields under the header limit ------------------------------------

def _long_header(command: str, term: str = "xterm") -> CastHeader:
    peer = Peer(name="laptop", id="nLAP1", addresses=("127.0.0.2",), user="alice@example.com")
    return CastHeader.for_session(peer, ssh_user="alice", local_user="alice",
                                  connection_id="ssh-conn-20260101T000000-0123456789",
                                  started_at=0, command=command, term=term)


def test_a_short_header_is_left_alone() -> None:
    header = _long_header("ls -l")
    assert fit_header(header) == FittedHeader(header)


@pytest.mark.parametrize("command", ["echo out # " + "x" * 70_000, "é\u2028\x00" * 30_000])
def test_a_long_command_is_cut_in_the_header_and_kept_whole_in_markers(command: str) -> None:
    fitted = fit_header(_long_header(command))
    line = CastEncoder(fitted.header, 0.0).header_line()
    assert len(line) <= HEADER_LIMIT
    assert len(line) > HEADER_LIMIT - 64  # as much of the command as fits
    assert fitted.header.command.startswith(command[:1000])
    assert "command cut" in fitted.header.command
    parts = [m.split(": ", 2)[2] for m in fitted.markers]
    assert "".join(parts) == command
    assert all(f"of {len(parts)}:" in m for m in fitted.markers)


def test_a_long_term_is_cut() -> None:
    fitted = fit_header(_long_header("true", term="x" * 70_000))
    assert fitted.header.term == "x" * TERM_LIMIT
    assert fitted.markers == ()


def test_a_header_that_cannot_fit_is_refused() -> None:
    with pytest.raises(HeaderTooLarge):
        fit_header(_long_header("true"), limit=100)
