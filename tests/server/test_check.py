"""Check mode bookkeeping (tssh.server.check): holds, approvals per checkPeriod, the file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tssh.server.check import (
    ID_ALPHABET,
    ID_LENGTH,
    CheckBook,
    CheckError,
    CheckKey,
    load_approvals,
    new_hold_id,
    parse_approvals,
    period_seconds,
    save_approvals,
)

KEY = CheckKey("nBOB1", "sys", "sys")
OTHER = CheckKey("nBOB1", "deploy", "deploy")
T0 = 1_800_000_000.0


def test_hold_ids_are_short_random_and_typable() -> None:
    ids = {new_hold_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == ID_LENGTH and set(i) <= set(ID_ALPHABET) for i in ids)
    assert not set("01lio") & set(ID_ALPHABET)


@pytest.mark.parametrize(("period", "seconds"), [
    ("always", 0), ("0s", 0), ("0", 0), ("30s", 30), ("1h30m", 5400), ("12h", 43200),
    ("1.5h", 5400), (None, 0), ("bogus", 0),
])
def test_period_seconds(period: str | None, seconds: float) -> None:
    assert period_seconds(period) == seconds


def test_approval_remembered_for_the_period() -> None:
    book = CheckBook()
    held = book.hold(KEY, "bobpc", "1h", T0)
    assert book.pending() == [held]
    assert book.find(KEY, T0, "1h") is None
    approval = book.approve(held.id, T0 + 5)
    assert book.pending() == []
    assert approval.remembered and approval.expires == T0 + 5 + 3600
    assert book.find(KEY, T0 + 100, "1h") == approval
    assert book.find(KEY, T0 + 5 + 3599, "1h") == approval
    assert book.find(KEY, T0 + 5 + 3600, "1h") is None  # expired
    assert book.find(OTHER, T0 + 100, "1h") is None  # another login
    assert book.find(CheckKey("nOTHER", "sys", "sys"), T0 + 100, "1h") is None
    # A policy that now says a shorter period shortens the approval; "always" ignores it.
    assert book.find(KEY, T0 + 100, "1m") is None
    assert book.find(KEY, T0 + 50, "1m") == approval
    assert book.find(KEY, T0 + 100, "always") is None
    assert book.current(T0 + 100) == [approval]
    assert book.current(T0 + 4000) == []
    assert book.prune(T0 + 4000) == [approval] and book.approvals == {}


@pytest.mark.parametrize("period", ["always", "0s"])
def test_always_and_zero_approve_the_held_login_only(period: str) -> None:
    book = CheckBook()
    held = book.hold(KEY, "bobpc", period, T0)
    approval = book.approve(held.id, T0 + 1)
    assert not approval.remembered and approval.expires is None
    assert book.approvals == {}
    assert book.find(KEY, T0 + 2, period) is None


def test_deny_drop_and_unknown_ids() -> None:
    book = CheckBook()
    a = book.hold(KEY, "bobpc", "1h", T0)
    b = book.hold(KEY, "bobpc", "1h", T0 + 1)
    assert a.id != b.id
    assert book.deny(a.id) == a
    with pytest.raises(CheckError, match="no login held"):
        book.approve(a.id, T0)
    assert book.drop(b.id) == b
    assert book.drop(b.id) is None
    with pytest.raises(CheckError):
        book.deny("nosuchid")
    assert book.approvals == {}


def test_ids_are_taken_as_typed() -> None:
    book = CheckBook()
    held = book.hold(KEY, "bobpc", "1h", T0)
    typed = f" {held.id[:4].upper()}-{held.id[4:8]} {held.id[8:]} "
    assert book.get(typed) is held


def test_revoke_by_login_or_all() -> None:
    book = CheckBook()
    a = book.approve(book.hold(KEY, "bobpc", "1h", T0).id, T0)
    b = book.approve(book.hold(OTHER, "bobpc", "1h", T0).id, T0)
    assert book.revoke("deploy") == [b]
    assert list(book.approvals.values()) == [a]
    assert book.revoke() == [a]
    assert book.approvals == {}


def test_list_entry_shape() -> None:
    held = CheckBook().hold(KEY, "bobpc", "1h", T0)
    assert held.to_json() == {"id": held.id, "node": "bobpc", "login": "sys",
                              "localUser": "sys", "since": T0, "url": None}


def test_persistence_round_trip_mode_and_atomic(tmp_path: Path) -> None:
    book = CheckBook()
    a = book.approve(book.hold(KEY, "bobpc", "12h", T0).id, T0)
    save_approvals(tmp_path, book.current(T0))
    path = tmp_path / "check-approvals.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not (tmp_path / "check-approvals.json.tmp").exists()
    assert load_approvals(tmp_path) == [a]
    # A leftover temporary file with a wide mode does not widen the new file.
    tmp = tmp_path / "check-approvals.json.tmp"
    tmp.write_text("junk")
    tmp.chmod(0o644)
    save_approvals(tmp_path, [])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_approvals(tmp_path) == []


def test_missing_and_broken_files(tmp_path: Path) -> None:
    assert load_approvals(tmp_path) == []
    for text in ("", "[]", '{"version": 2, "approvals": []}', '{"version": 1}',
                 '{"version": 1, "approvals": [{"id": 1}]}',
                 '{"version": 1, "approvals": [{"id": "x"}]}'):
        with pytest.raises(ValueError):
            parse_approvals(text)
