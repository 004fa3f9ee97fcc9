"""Account expiry as the daemon checks it at login: the shadow file read on each call."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from tssh.server.account import (
    Account,
    AccountCheckError,
    AccountExpiredError,
    check_account_current,
    today,
)

TODAY = 20400


def _account(name: str = "bob") -> Account:
    return Account(name=name, uid=1000, gid=1000, groups=(1000,), home="/home/bob",
                   shell="/bin/sh")


def _shadow(tmp_path: Path, line: str) -> Path:
    path = tmp_path / "shadow"
    path.write_text(f"root:*:20000:0:99999:7:::\n{line}\n")
    return path


def test_today_counts_utc_days() -> None:
    assert today() == int(time.time()) // 86400


def test_expired_account_refused_and_audited(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    shadow = _shadow(tmp_path, f"bob:!:20000:0:99999:7::{TODAY - 1}:")
    with caplog.at_level(logging.WARNING, logger="tssh.audit"), \
            pytest.raises(AccountExpiredError) as info:
        check_account_current(_account(), shadow_path=shadow, day=TODAY, daemon_uid=0)
    assert str(info.value) == 'account "bob" has expired on this node'
    [record] = [r for r in caplog.records if r.name == "tssh.audit"]
    assert record.event == "account.expired"  # type: ignore[attr-defined]
    # Day 20399 is what `usermod -e 2025-11-07` writes.
    assert record.expired_on == "2025-11-07"  # type: ignore[attr-defined]


def test_inactive_account_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    shadow = _shadow(tmp_path, f"bob:$6$x:{TODAY - 200}:0:90:7:30::")
    with caplog.at_level(logging.WARNING, logger="tssh.audit"), \
            pytest.raises(AccountExpiredError, match='account "bob" is disabled'):
        check_account_current(_account(), shadow_path=shadow, day=TODAY, daemon_uid=0)
    [record] = [r for r in caplog.records if r.name == "tssh.audit"]
    assert record.event == "account.inactive"  # type: ignore[attr-defined]
    # Changed on day 20200, valid 90 days: expired from day 20291.
    assert record.password_expired_on == "2025-07-22"  # type: ignore[attr-defined]
    assert "$6$x" not in caplog.text


@pytest.mark.parametrize("line", [
    f"bob:!:20000:0:99999:7::{TODAY + 1}:",  # expires tomorrow
    "bob:!$6$locked:20000:0:99999:7:::",  # password locked (usermod -L): keyless still works
    "bob:*:20000:0:99999:7:::",  # no password at all
    "bob:$6$x:0:0:99999:7:::",  # password change required (passwd -e)
    f"bob:$6$x:{TODAY - 100}:0:90:7:::",  # password expired, no inactivity period
    "carol:*:20000:0:99999:7::1:",  # someone else is expired
])
def test_admitted(tmp_path: Path, line: str) -> None:
    check_account_current(_account(), shadow_path=_shadow(tmp_path, line), day=TODAY,
                          daemon_uid=0)


def test_no_shadow_file_means_no_expiry(tmp_path: Path) -> None:
    check_account_current(_account(), shadow_path=tmp_path / "absent", day=TODAY,
                          daemon_uid=0)


def test_not_checked_by_a_non_root_daemon(tmp_path: Path) -> None:
    shadow = _shadow(tmp_path, "bob:!:20000:0:99999:7::1:")
    check_account_current(_account(), shadow_path=shadow, day=TODAY, daemon_uid=1000)


def test_malformed_own_entry_refused(tmp_path: Path,
                                     caplog: pytest.LogCaptureFixture) -> None:
    shadow = _shadow(tmp_path, "bob:!:20000:0:99999:7::2026-01-01:")
    with caplog.at_level(logging.ERROR, logger="tssh.audit"), \
            pytest.raises(AccountCheckError, match="shadow entry is malformed"):
        check_account_current(_account(), shadow_path=shadow, day=TODAY, daemon_uid=0)
    [record] = [r for r in caplog.records if r.name == "tssh.audit"]
    assert "line 2: expiry date '2026-01-01'" in record.error  # type: ignore[attr-defined]


def test_unreadable_shadow_refused(tmp_path: Path) -> None:
    # A directory stands in for a file root cannot read (root reads any file).
    with pytest.raises(AccountCheckError, match="shadow file is unreadable"):
        check_account_current(_account(), shadow_path=tmp_path, day=TODAY, daemon_uid=0)


def test_read_at_each_call(tmp_path: Path) -> None:
    shadow = _shadow(tmp_path, "bob:!:20000:0:99999:7::1:")
    with pytest.raises(AccountExpiredError):
        check_account_current(_account(), shadow_path=shadow, day=TODAY, daemon_uid=0)
    shadow.write_text("bob:!:20000:0:99999:7:::\n")
    check_account_current(_account(), shadow_path=shadow, day=TODAY, daemon_uid=0)

