"""What `tssh audit tail` shows and chooses (the pure part)."""

from __future__ import annotations

import pytest

from tssh.audit.entry import audit_entry
from tssh.audit.view import AuditFilter, SinceError, parse_since, render

NOW = 1_780_000_000.0


def test_a_readable_line_says_when_who_and_what() -> None:
    entry = audit_entry(NOW, {"event": "sftp.close", "conn": "ssh-conn-1", "peer": "laptop",
                              "user": "alice@example.com", "local_user": "alice",
                              "path": "a.bin", "bytes_written": 5, "mode": None})
    line = render(entry)
    assert line.startswith("2026-")
    assert "alice@example.com (laptop) as alice sftp.close path=a.bin bytesWritten=5" in line
    assert "mode=" not in line and line.endswith("[ssh-conn-1]")


def test_control_characters_are_escaped() -> None:
    line = render({"time": "t", "event": "sftp.remove", "path": "evil\x1b]0;owned\x07\n"})
    assert "\x1b" not in line and "\x07" not in line and "\n" not in line
    assert "\\x1b]0;owned\\x07\\x0a" in line


def test_since_takes_rfc3339_or_a_duration() -> None:
    assert parse_since("15m", NOW) == NOW - 900
    assert parse_since("1d", NOW) == NOW - 86400
    assert parse_since("2026-05-28T20:26:40Z", NOW) == parse_since("2026-05-28T20:26:40", NOW)
    with pytest.raises(SinceError, match="RFC 3339"):
        parse_since("yesterday", NOW)


def test_the_filter() -> None:
    entry = audit_entry(NOW, {"event": "x", "conn": "c1"})
    assert AuditFilter(since=NOW - 1, connection="c1").matches(entry)
    assert not AuditFilter(since=NOW + 1).matches(entry)
    assert not AuditFilter(connection="c2").matches(entry)
    assert not AuditFilter(since=NOW).matches({"event": "no time"})
