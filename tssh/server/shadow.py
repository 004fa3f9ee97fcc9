"""The shadow password file (shadow(5)) and what it says about an account on a given day.

Pure: ``find_entry`` parses the file's text and ``account_state`` judges one entry, so every
edge case is a unit test; account.py reads the file. Python's ``spwd`` module is deprecated
(gone in 3.13), hence the parser.

The judgement follows ``pam_unix``'s account check, which is what sshd applies on Debian
(``UsePAM yes``) to every login, key-based ones included: an account is expired from the day
its expiry date names (``chage -E``, ``usermod -e``; ``usermod -e 1`` is the documented way to
lock an account for key logins too), and disabled once its password has been expired for
longer than the inactivity period. A merely expired password, or one the admin requires to
be changed (last change ``0``), only concerns logins that use the password.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

# name:password:lastchg:min:max:warn:inactive:expire[:flag]; glibc requires the first eight.
_MIN_FIELDS = 8
_MAX_FIELDS = 9
_NUMBER = re.compile(r"-?[0-9]+")


class ShadowFormatError(ValueError):
    """A user's shadow line cannot be read; ``str()`` says which line and field."""


@dataclass(frozen=True)
class ShadowEntry:
    """One user's line, without the password hash (nothing here needs it, and a value that
    is never held is never logged). Day counts are days since 1970-01-01 (UTC); None: the
    field is empty (or ``-1``), which disables the feature it controls."""

    name: str
    last_change: int | None  # 0: the password must be changed at the next login
    min_days: int | None
    max_days: int | None
    warn_days: int | None
    inactive_days: int | None
    expire: int | None  # the first day the account can no longer be used


class AccountState(enum.Enum):
    ACTIVE = enum.auto()
    PASSWORD_EXPIRED = enum.auto()  # includes "must change" (last change 0)
    INACTIVE = enum.auto()  # the password expired longer ago than the inactivity period
    EXPIRED = enum.auto()  # the account's expiry date has come

    @property
    def refuses_login(self) -> bool:
        """True where pam_unix refuses every login, whatever the credential."""
        return self in (AccountState.INACTIVE, AccountState.EXPIRED)


def _day_field(value: str, field: str, line_no: int) -> int | None:
    value = value.strip()
    if value == "":
        return None
    if not _NUMBER.fullmatch(value):
        raise ShadowFormatError(f"line {line_no}: {field} {value!r} is not a number of days")
    number = int(value)
    return None if number == -1 else number


def parse_entry(line: str, line_no: int = 1) -> ShadowEntry:
    """One shadow line; raises ShadowFormatError if it is not one."""
    fields = line.split(":")
    if not _MIN_FIELDS <= len(fields) <= _MAX_FIELDS:
        raise ShadowFormatError(
            f"line {line_no}: {len(fields)} fields, a shadow line has {_MIN_FIELDS} or "
            f"{_MAX_FIELDS}"
        )
    name = fields[0]
    if not name:
        raise ShadowFormatError(f"line {line_no}: empty user name")
    days = [
        _day_field(value, field, line_no)
        for value, field in zip(fields[2:8], (
            "last change", "minimum age", "maximum age", "warning period",
            "inactivity period", "expiry date",
        ), strict=True)
    ]
    return ShadowEntry(name, *days)


def find_entry(text: str, name: str) -> ShadowEntry | None:
    """The first line for ``name`` (as ``getspnam``), or None if it has none.

    Blank lines, ``#`` comments and NIS ``+``/``-`` lines are skipped; other users' lines are
    not judged, so one bad line elsewhere cannot lock everyone out. A malformed line for
    ``name`` raises ShadowFormatError: the caller cannot tell what it meant (a date written
    as ``2025-01-31`` instead of a day count would otherwise silently never expire).
    """
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", "+", "-")):
            continue
        if line.split(":", 1)[0] == name:
            return parse_entry(line, line_no)
    return None


def account_state(entry: ShadowEntry, today: int) -> AccountState:
    """What pam_unix's account check concludes for ``entry`` on day ``today``."""
    if entry.expire is not None and today >= entry.expire:
        return AccountState.EXPIRED
    changed = entry.last_change
    if changed is None:  # shadow(5): password aging is off
        return AccountState.ACTIVE
    if changed == 0:
        return AccountState.PASSWORD_EXPIRED
    if today < changed:  # changed "in the future" (clock set back): nothing has aged yet
        return AccountState.ACTIVE
    age = today - changed
    if entry.max_days is None or age <= entry.max_days:
        return AccountState.ACTIVE
    if entry.inactive_days is not None and age > entry.max_days + entry.inactive_days:
        return AccountState.INACTIVE
    return AccountState.PASSWORD_EXPIRED
