"""Go duration parsing for checkPeriod (Go's time.ParseDuration grammar)."""

from __future__ import annotations

import pytest

from tssh.policy.duration import DurationError, format_duration, parse_duration

S = 1_000_000_000


@pytest.mark.parametrize(("text", "ns"), [
    ("0", 0), ("0s", 0), ("30s", 30 * S), ("12h", 12 * 3600 * S), ("1h30m", 5400 * S),
    ("1.5h", 5400 * S), ("+5m", 300 * S), ("-1m", -60 * S), ("1m30.5s", 90 * S + S // 2),
    (".5s", S // 2), ("1.s", S), ("100ms", S // 10), ("10us", 10_000), ("10\u00b5s", 10_000),
    ("7ns", 7), ("1h1m1s1ms1us1ns", 3661 * S + 1_001_001),
])
def test_parse(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["", "abc", "1", "12", "h", "1d", "1 h", "1h 30m", "--1s",
                                  ".s", "1.5", "9999999999999999h", "always", "-"])
def test_invalid(text: str) -> None:
    with pytest.raises(DurationError, match="time: "):
        parse_duration(text)


@pytest.mark.parametrize(("ns", "text"), [
    (0, "0s"), (30 * S, "30s"), (60 * S, "1m0s"), (168 * 3600 * S + S, "168h0m1s"),
    (200 * 3600 * S, "200h0m0s"), (-60 * S, "-1m0s"), (S // 2, "500ms"), (1500, "1.5\u00b5s"),
])
def test_format_like_go(ns: int, text: str) -> None:
    assert format_duration(ns) == text
