"""Local accounts a session may run as: lookup (pwd/grp), expiry, the root-or-self rule.

A daemon running as root may start sessions as any local user the policy maps to, unless the
account has expired (shadow.py says when, as pam_unix would); a daemon running as a normal
user can only serve its own account, and says so. Such a daemon cannot read /etc/shadow, so
it does not check expiry: it only ever serves the account it already runs as.
"""

from __future__ import annotations

import datetime
import errno
import logging
import os
import pwd
import time
from dataclasses import dataclass
from pathlib import Path

from tssh.errors import TsshError
from tssh.server.shadow import AccountState, ShadowFormatError, account_state, find_entry

SHADOW_PATH = Path("/etc/shadow")
_DAY = 86400

audit = logging.getLogger("tssh.audit")


class AccountError(TsshError):
    """The local user a login maps to cannot be used on this node."""


class AccountExpiredError(AccountError):
    """The account exists but its shadow entry says it may no longer log in."""


class AccountCheckError(AccountError):
    """The account's shadow entry cannot be judged (file unreadable, entry malformed)."""


@dataclass(frozen=True)
class Account:
    """A local user with what a session needs to run as them."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary groups, primary included (as initgroups sets)
    home: str
    shell: str

    @property
    def shell_name(self) -> str:
        return os.path.basename(self.shell)


def lookup_account(name: str) -> Account:
    """The account called ``name``; raises AccountError if there is none."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise AccountError(f"no local user {name!r} on this node") from None
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return Account(
        name=entry.pw_name,
        uid=entry.pw_uid,
        gid=entry.pw_gid,
        groups=groups,
        home=entry.pw_dir or "/",
        shell=entry.pw_shell or "/bin/sh",
    )


def is_root_account(name: str) -> bool:
    """True for root and for any other uid-0 account (policy: ``autogroup:nonroot``)."""
    try:
        return pwd.getpwnam(name).pw_uid == 0
    except KeyError:
        return False


def can_serve(account: Account) -> bool:
    """Root serves everyone; any other daemon only its own user."""
    uid = os.geteuid()
    return uid == 0 or uid == account.uid


def daemon_user() -> str:
    """The name of the account this daemon runs as."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def today() -> int:
    """Days since 1970-01-01 in UTC, the unit of shadow dates (as pam_unix counts them)."""
    return int(time.time()) // _DAY


def _day_name(day: int) -> str:
    return (datetime.date(1970, 1, 1) + datetime.timedelta(days=day)).isoformat()


def check_account_current(
    account: Account, *, shadow_path: Path = SHADOW_PATH, day: int | None = None,
    daemon_uid: int | None = None,
) -> None:
    """Raise AccountExpiredError if the account's shadow entry refuses every login today,
    AccountCheckError if it cannot be judged.

    Read at each call, so ``usermod -e``/``chage -E`` apply from the next login. Checked only
    by a root daemon (see the module docstring). An account with no shadow entry (or a node
    with no shadow file) has no expiry. A shadow file root cannot read, or a malformed
    entry for this account, refuses the login: the daemon cannot tell what the admin meant.
    """
    uid = os.geteuid() if daemon_uid is None else daemon_uid
    if uid != 0:
        return
    try:
        text = shadow_path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as e:
        if e.errno == errno.ENOENT:
            return
        audit.error("account check failed", extra={
            "event": "account.unreadable", "local_user": account.name, "path": str(shadow_path),
            "error": e.strerror or str(e),
        })
        raise AccountCheckError(
            f'cannot check account "{account.name}" on this node: its shadow file is '
            "unreadable; the node's admin must look at the daemon's log"
        ) from None
    try:
        entry = find_entry(text, account.name)
    except ShadowFormatError as e:
        audit.error("account check failed", extra={
            "event": "account.malformed", "local_user": account.name, "path": str(shadow_path),
            "error": str(e),
        })
        raise AccountCheckError(
            f'cannot check account "{account.name}" on this node: its shadow entry is '
            "malformed; the node's admin must fix it (see the daemon's log)"
        ) from None
    if entry is None:
        return
    now = today() if day is None else day
    state = account_state(entry, now)
    if not state.refuses_login:
        return
    label = state.name.lower()
    fields: dict[str, object] = {"event": f"account.{label}", "local_user": account.name}
    if state is AccountState.EXPIRED:
        assert entry.expire is not None
        fields["expired_on"] = _day_name(entry.expire)
        message = f'account "{account.name}" has expired on this node'
    else:
        assert entry.last_change is not None and entry.max_days is not None
        fields["password_expired_on"] = _day_name(entry.last_change + entry.max_days + 1)
        message = (f'account "{account.name}" is disabled on this node: its password '
                   "expired and was not changed within the inactivity period")
    audit.warning(f"login refused: account {label}", extra=fields)
    raise AccountExpiredError(message)
