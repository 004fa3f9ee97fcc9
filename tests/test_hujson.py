"""HuJSON: exactly JSON plus comments and trailing commas, with positioned errors."""

from __future__ import annotations

import contextlib
import json
import time
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tssh.errors import PolicyError
from tssh.hujson import MAX_DEPTH, Position, loads, parse


def error_of(text: str | bytes) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        loads(text, filename="p.hujson")
    return info.value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ("[1, 2, 3,]", [1, 2, 3]),
        ('{"a": [1,], "b": {"c": true,},}', {"a": [1], "b": {"c": True}}),
        ('// top\n{"a": /* inline */ "x" // end\n}', {"a": "x"}),
        ("/* a\n * block\n */ null", None),
        ('"a // not a comment /* nor this */"', "a // not a comment /* nor this */"),
        ('"\\u00e9\\ud83d\\ude00\\n\\t\\/"', "é😀\n\t/"),
        ("-0.5e+3", -500.0),
        ("[]", []),
        ("{}", {}),
        ("[false, null]", [False, None]),
        ("12345678901234567890", 12345678901234567890),
    ],
)
def test_accepts_json_with_comments_and_trailing_commas(text: str, expected: object) -> None:
    assert loads(text) == expected


@pytest.mark.parametrize(
    ("text", "line", "col", "fragment"),
    [
        ("{'a': 1}", 1, 2, "quoted"),
        ("{a: 1}", 1, 2, "quoted"),
        ("[NaN]", 1, 2, "expected a value"),
        ("[Infinity]", 1, 2, "expected a value"),
        ("[0x10]", 1, 3, "invalid number"),
        ("[01]", 1, 3, "invalid number"),
        ("[1,,2]", 1, 4, "expected a value"),
        ("[,]", 1, 2, "expected a value"),
        ('{"a": 1,,}', 1, 9, "quoted"),
        ('{\n  "a": 1,\n  "a": 2\n}', 3, 3, "duplicate key 'a'"),
        ('{"a" 1}', 1, 6, "expected ':'"),
        ('{"a": 1 "b": 2}', 1, 9, "expected ','"),
        ("[1 2]", 1, 4, "expected ','"),
        ('"abc', 1, 1, "unterminated string"),
        ('"a\nb"', 1, 3, "control character"),
        ('"\\x41"', 1, 3, "invalid escape"),
        ('"\\u12"', 1, 4, "hex digits"),
        ("/* never closed", 1, 1, "unterminated /* comment"),
        ("[1] # shell comment", 1, 5, "expected end of file"),
        ("[1] [2]", 1, 5, "expected end of file"),
        ("", 1, 1, "expected a value"),
        ("/ x", 1, 1, "comment"),
        ("\ufeff{}", 1, 1, "byte order mark"),
        ("[tru]", 1, 2, "expected a value"),
    ],
)
def test_refuses_everything_else_with_position(
    text: str, line: int, col: int, fragment: str
) -> None:
    e = error_of(text)
    assert (e.file, e.line, e.col) == ("p.hujson", line, col)
    assert fragment in e.message
    assert str(e).startswith(f"p.hujson:{line}:{col}: ")


def test_invalid_utf8_reports_the_byte_position() -> None:
    e = error_of(b'{\n  "a": "caf\xe9"\n}')
    assert (e.line, e.col) == (2, 12)
    assert "invalid UTF-8" in e.message


def test_deep_nesting_is_refused_quickly() -> None:
    e = error_of("[" * 100_000)
    assert f"deeper than {MAX_DEPTH}" in e.message
    assert loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None


def test_large_file_parses_in_bounded_time() -> None:
    rules = "".join(
        f'{{"action": "accept", "src": ["user{i}@example.com"], "dst": ["tag:prod"], '
        f'"users": ["autogroup:nonroot"]}}, // rule {i}\n'
        for i in range(20_000)
    )
    text = f'{{"ssh": [{rules}]}}'
    assert len(text) > 2_000_000
    start = time.monotonic()
    doc = loads(text)
    assert len(doc["ssh"]) == 20_000
    assert time.monotonic() - start < 20



def test_memory_stays_proportional_to_the_values() -> None:
    """A policy or netmap up to the size cap must not take gigabytes to parse: nothing may be
    kept per value beyond the value itself (a position and a path per value cost ~1 KB at
    depth 100, i.e. 4 GB for an 8 MiB file of nested arrays)."""
    text = "[" * 100 + "0," * 50_000 + "0" + "]" * 100
    tracemalloc.start()
    try:
        doc = parse(text, filename="big.hujson")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000, f"peak {peak / 1e6:.1f} MB for a {len(text) / 1e3:.0f} KB text"
    inner = doc.value
    for _ in range(99):
        inner = inner[0]
    assert len(inner) == 50_001
    # Positions are still there for errors, found when asked for.
    assert doc.position((0,) * 99 + (7,)) == Position(1, 115)

def test_huge_number_is_refused() -> None:
    assert "too long" in error_of("1" * 5000).message


def test_positions_point_at_each_value() -> None:
    doc = parse('{\n  "ssh": [\n    {"users": ["root"]},\n  ],\n}', filename="f")
    assert doc.position(("ssh",)) == Position(2, 10)
    assert doc.position(("ssh", 0, "users")) == Position(3, 15)
    err = doc.error(("ssh", 0, "users", 0), "bad user")
    assert str(err) == "f:3:16: bad user"
    assert str(doc.error(("ssh", 7), "no such rule")) == "f:2:10: no such rule"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_every_json_document_reads_as_json_does(value: object) -> None:
    text = json.dumps(value, ensure_ascii=False)
    assert loads(text) == json.loads(text)
    assert loads(text.encode()) == json.loads(text)


@given(st.text(max_size=60))
def test_arbitrary_text_never_raises_anything_but_policy_error(text: str) -> None:
    with contextlib.suppress(PolicyError):
        loads(text)
