"""The terminal-text state machine: escapes, controls, line model, and splits of any kind."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.events import CastText, OutputEvents
from recorder.text import MAX_LINE, Line, TerminalText


def lines(*events: str | tuple[float, str]) -> list[Line]:
    t = TerminalText()
    out: list[Line] = []
    for e in events:
        time, text = e if isinstance(e, tuple) else (0.0, e)
        out += t.feed(time, text)
    return out + t.end()


def texts(*events: str | tuple[float, str]) -> list[str]:
    return [line.text for line in lines(*events)]


def test_plain_lines_and_times() -> None:
    got = lines((0.5, "$ ls\r\n"), (1.25, "a.txt  b.txt\r\n"), (2.0, "$ "))
    assert got == [Line(0.5, "$ ls"), Line(1.25, "a.txt  b.txt"), Line(2.0, "$")]


def test_line_time_is_its_last_character() -> None:
    """A search hit's time: when the line was complete on screen (a player there shows it)."""
    assert lines((1.0, "$ "), (4.0, "e"), (4.5, "cho hi\r\n")) == [Line(4.5, "$ echo hi")]


def test_sgr_inside_a_word() -> None:
    assert texts("pass\x1b[1;31mw\x1b[0mord\r\n") == ["password"]


def test_word_split_across_events() -> None:
    assert texts("$ sec", "ret-token\r\n") == ["$ secret-token"]


def test_escape_split_across_events() -> None:
    for cut in range(1, 9):
        seq = "ab\x1b[38;5;196mcd\r\n"
        assert texts(seq[:cut], seq[cut:]) == ["abcd"], cut


def test_osc_title_is_not_indexed() -> None:
    assert texts("\x1b]0;user@host: ~/secret\x07$ ls\r\n") == ["$ ls"]
    assert texts("\x1b]2;title\x1b\\after\r\n") == ["after"]  # ST terminator
    assert texts("\x1b]0;ti", "tle\x07", "x\r\n") == ["x"]  # split across events
    assert texts("\x9d0;c1 title\x9cok\n") == ["ok"]  # C1 OSC and ST


def test_control_strings_are_skipped() -> None:
    assert texts("a\x1bPq#0;2;0;0;0#1~~~\x1b\\b\n") == ["ab"]  # DCS (sixel)
    assert texts("a\x1b_apc payload\x1b\\b\n") == ["ab"]  # APC
    assert texts("a\x1bXsos\x9cb\x1b^pm\x1b\\c\n") == ["abc"]  # SOS, PM
    # BEL does not end a DCS (only OSC); CAN aborts any string
    assert texts("a\x1bPx\x07y\x1b\\b\n") == ["ab"]
    assert texts("a\x1bPxy\x18b\n") == ["ab"]


def test_esc_in_a_string_starts_the_next_sequence() -> None:
    assert texts("\x1b]0;t\x1b[1mbold\n") == ["bold"]


def test_backspace_and_erase_edit_the_line() -> None:
    assert texts("$ rm -rg\x08f /tmp/x\r\n") == ["$ rm -rf /tmp/x"]
    assert texts("$ lsx\x08\x1b[K -l\r\n") == ["$ ls -l"]
    assert texts("abc\x08\x08\x1b[P\n") == ["ac"]  # DCH
    assert texts("ac\x08\x1b[@b\n") == ["abc"]  # ICH
    assert texts("abcdef\r\x1b[2Cx\x1b[1X\n") == ["abx ef"]  # CUF, ECH


def test_carriage_return_overwrites() -> None:
    assert texts("progress 10%\rprogress 99%\r\n") == ["progress 99%"]
    assert texts("long line here\rshort\x1b[K\n") == ["short"]


def test_cursor_movement() -> None:
    assert texts("abc\x1b[10Gx\n") == ["abc      x"]  # CHA
    assert texts("one\x1b[2;1Htwo\n") == ["one", "two"]  # CUP: another row
    assert texts("one\x1b[Atwo\n") == ["one", "two"]  # CUU
    assert texts("a\tb\n") == ["a       b"]  # HT
    assert texts("\x1b[?1049h\x1b[?25lvisible\x1b[?25h\n") == ["visible"]  # private modes
    assert texts("x\x1b[H\x1b[2Jy\n") == ["x", "y"]  # clear screen ends the line


def test_c0_and_other_escapes() -> None:
    assert texts("a\x07b\x00c\x7fd\x0e\x0fe\n") == ["abcde"]
    assert texts("\x1b(Bascii\x1b)0\x1b=\x1b>\x1b7\x1b8\n") == ["ascii"]
    assert texts("one\x1bEtwo\x1bDthree\x1bMfour\n") == ["one", "two", "three", "four"]
    assert texts("a\x1b[1;2\x18b\n") == ["ab"]  # CAN aborts a CSI
    assert texts("ab\x1b[1\x08m\x08z\n") == ["zb"]  # BS acts inside a CSI


def test_blank_lines_are_dropped() -> None:
    assert texts("\r\n\r\n   \r\nx\r\n\x1b[m\r\n") == ["x"]


def test_long_line_wraps() -> None:
    got = texts("y" * (MAX_LINE * 2 + 5) + "\n")
    assert [len(t) for t in got] == [MAX_LINE, MAX_LINE, 5]


def test_huge_parameters_are_clamped() -> None:
    assert texts("a\x1b[99999999999999999999Cb\n") == ["a", "b"]  # past the width: wraps
    assert texts("abc\x1b[9999999999999999999999999999999Dx\n") == ["xbc"]


def test_partial_line() -> None:
    t = TerminalText()
    assert t.feed(1.0, "done\r\n$ sudo rebo") == [Line(1.0, "done")]
    assert t.partial() == Line(1.0, "$ sudo rebo")
    assert t.feed(2.0, "ot\r\n") == [Line(2.0, "$ sudo reboot")]
    assert t.partial() is None


def test_surrogates_from_json_escapes() -> None:
    emoji = json.loads('"\\ud83d\\ude00"')  # one character
    assert texts(f"a{emoji}b\n") == ["a\U0001f600b"]
    high, low = json.loads('"\\ud83d"'), json.loads('"\\ude00"')
    assert texts("a" + high, low + "b\n") == ["a\U0001f600b"]  # a pair split across events
    assert texts("a" + high + "b\n") == ["a\ufffdb"]  # a lone one
    assert texts("a" + low + "\n") == ["a\ufffd"]


def test_utf8_split_across_chunks_of_the_cast() -> None:
    body = (json.dumps({"version": 2, "width": 80, "height": 24}) + "\n"
            + json.dumps([0.5, "o", "héllo wörld €\r\n"], ensure_ascii=False) + "\n").encode()
    for cut in range(len(body)):
        c = CastText()
        got = c.feed(body[:cut]) + c.feed(body[cut:]) + c.end()
        assert got == [Line(0.5, "héllo wörld €")], cut


def test_output_events_skip_header_input_and_junk() -> None:
    body = b"".join([
        b'{"version": 2, "width": 80, "height": 24}\n',
        b'[0.1, "i", "typed"]\n', b'[0.2, "o", "shown"]\n', b'not json "o"\n',
        b'[1e999, "o", "inf"]\n', b'[0.3, "r", "80x24"]\n', b'[0.4, "o", 5]\n',
        b'[0.5, "o", "last"]',
    ])
    ev = OutputEvents()
    assert ev.feed(body) == [(0.2, "shown")]
    assert ev.end() == [(0.5, "last")]


def test_overlong_event_line_is_skipped() -> None:
    ev = OutputEvents(line_limit=64)
    assert ev.feed(b"{}\n") == []
    assert ev.feed(b'[1, "o", "' + b"x" * 100) == []
    assert ev.feed(b'"]\n[2, "o", "ok"]\n') == [(2.0, "ok")]


_ALPHABET = st.sampled_from([
    "a", "b", " ", "é", "€", "\U0001f600", "\r", "\n", "\x08", "\t", "\x07", "\x1b", "[",
    "]", "\\", ";", "1", "3", "?", "m", "K", "C", "D", "G", "H", "P", "@", "X", "A", "J",
    "\x18", "\x9b", "\x9c", "\x9d", "\x90", "(", "_", "^", "0", "\x00", "\x7f",
])


@settings(max_examples=400, deadline=None)
@given(st.lists(_ALPHABET, min_size=0, max_size=80).map("".join), st.data())
def test_any_split_gives_the_same_text(text: str, data: st.DataObject) -> None:
    whole = TerminalText()
    expected = whole.feed(1.0, text)
    expected_partial = whole.partial()
    expected += whole.end()
    cuts = sorted(data.draw(st.sets(st.integers(0, len(text)), max_size=10)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    split = TerminalText()
    got: list[Line] = []
    for piece in pieces:
        got += split.feed(1.0, piece)
    assert split.partial() == expected_partial
    got += split.end()
    assert got == expected
    slow = TerminalText(fast=False)  # the fast paths change nothing
    assert slow.feed(1.0, text) + slow.end() == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["o", "i", "r"]),
                          st.lists(_ALPHABET, max_size=12).map("".join)), max_size=12),
       st.data())
def test_any_split_of_the_cast_bytes_gives_the_same_text(
    events: list[tuple[str, str]], data: st.DataObject
) -> None:
    body = b'{"version": 2, "width": 80, "height": 24}\n' + b"".join(
        json.dumps([i / 10, code, s]).encode() + b"\n" for i, (code, s) in enumerate(events)
    )
    whole = CastText()
    expected = whole.feed(body) + whole.end()
    cuts = sorted(data.draw(st.sets(st.integers(0, len(body)), max_size=8)))
    split = CastText()
    got: list[Line] = []
    for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True):
        got += split.feed(body[a:b])
    assert got + split.end() == expected
