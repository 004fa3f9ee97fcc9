"""Shadow file parsing and the account judgement pam_unix makes from it."""

from __future__ import annotations

import pytest

from tssh.server.shadow import (
    AccountState,
    ShadowEntry,
    ShadowFormatError,
    account_state,
    find_entry,
    parse_entry,
)

TEXT = """\
root:$y$j9T$abc:20000:0:99999:7:::
# a comment line
daemon:*:19000:0:99999:7:::

+nisuser::::::::
  bob:!$6$salt$hash:20100:1:90:14:30:20400:
carol:*:20100::::::
broken:x:notanumber:0:99999:7:::
bob:second-entry:1:2:3:4:5:6:
"""


def entry(**fields: int | None) -> ShadowEntry:
    base: dict[str, int | None] = {"last_change": 20000, "min_days": 0, "max_days": None,
                                   "warn_days": 7, "inactive_days": None, "expire": None}
    base.update(fields)
    return ShadowEntry("u", **base)  # type: ignore[arg-type]


def test_finds_the_first_entry_with_every_field() -> None:
    bob = find_entry(TEXT, "bob")
    assert bob == ShadowEntry("bob", 20100, 1, 90, 14, 30, 20400)


def test_empty_fields_are_none() -> None:
    assert find_entry(TEXT, "carol") == ShadowEntry("carol", 20100, *[None] * 5)
    assert find_entry(TEXT, "root") == ShadowEntry("root", 20000, 0, 99999, 7,
                                                   None, None)


def test_minus_one_means_unset() -> None:
    assert parse_entry("u:*:-1:-1:-1:-1:-1:-1:") == ShadowEntry("u", *[None] * 6)


def test_missing_user_comments_and_nis_lines() -> None:
    assert find_entry(TEXT, "nobody-here") is None
    assert find_entry(TEXT, "# a comment line") is None
    assert find_entry(TEXT, "+nisuser") is None
    assert find_entry("", "root") is None


def test_a_name_is_matched_whole() -> None:
    assert find_entry(TEXT, "bo") is None
    assert find_entry(TEXT, "roo") is None


def test_malformed_line_of_another_user_is_not_judged() -> None:
    assert find_entry(TEXT, "carol") is not None  # "broken" comes later and is skipped


def test_malformed_line_of_the_user_names_line_and_field() -> None:
    with pytest.raises(ShadowFormatError, match=r"line 8: last change 'notanumber'"):
        find_entry(TEXT, "broken")


@pytest.mark.parametrize(("line", "message"), [
    ("u:*:1:2:3", "5 fields"),
    ("u:*:1:2:3:4:5:6:7:8", "10 fields"),
    (":*:1:2:3:4:5:6:", "empty user name"),
    ("u:*:1:2:3:4:5:2025-01-31:", "expiry date '2025-01-31'"),
    ("u:*:1:2:3:4:5:1.5:", "expiry date '1.5'"),
])
def test_malformed_lines(line: str, message: str) -> None:
    with pytest.raises(ShadowFormatError, match=message):
        parse_entry(line)


def test_eight_fields_without_the_reserved_one_are_accepted() -> None:
    assert parse_entry("u:*:1:2:3:4:5:6").expire == 6


@pytest.mark.parametrize(("expire", "today", "state"), [
    (None, 30000, AccountState.ACTIVE),
    (20401, 20400, AccountState.ACTIVE),  # expires tomorrow
    (20400, 20400, AccountState.EXPIRED),  # the expiry day itself, as pam_unix counts
    (20399, 20400, AccountState.EXPIRED),
    (1, 20400, AccountState.EXPIRED),  # usermod -e 1: usermod(8)'s full lock
    (0, 20400, AccountState.EXPIRED),
])
def test_account_expiry(expire: int | None, today: int, state: AccountState) -> None:
    assert account_state(entry(expire=expire), today) is state


def test_expiry_wins_over_a_fresh_password() -> None:
    assert account_state(entry(last_change=20399, max_days=90, expire=20000),
                         20400) is AccountState.EXPIRED


@pytest.mark.parametrize(("fields", "today", "state"), [
    ({"max_days": 90}, 20090, AccountState.ACTIVE),  # last valid day
    ({"max_days": 90}, 20091, AccountState.PASSWORD_EXPIRED),
    ({"last_change": 0, "max_days": 90}, 20000, AccountState.PASSWORD_EXPIRED),  # must change
    ({"last_change": 0}, 20000, AccountState.PASSWORD_EXPIRED),
    ({"last_change": None, "max_days": 1, "inactive_days": 1}, 30000, AccountState.ACTIVE),
    ({"max_days": 90, "inactive_days": 10}, 20100, AccountState.PASSWORD_EXPIRED),
    ({"max_days": 90, "inactive_days": 10}, 20101, AccountState.INACTIVE),
    ({"max_days": None, "inactive_days": 10}, 30000, AccountState.ACTIVE),
    ({"last_change": 20500, "max_days": 1, "inactive_days": 1}, 20400,
     AccountState.ACTIVE),  # changed "in the future"
])
def test_password_aging(fields: dict[str, int | None], today: int,
                        state: AccountState) -> None:
    assert account_state(entry(**fields), today) is state


def test_only_expired_and_inactive_refuse() -> None:
    assert {s for s in AccountState if s.refuses_login} == {AccountState.EXPIRED,
                                                            AccountState.INACTIVE}
