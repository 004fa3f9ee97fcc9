"""Local accounts a session may run as: lookup (pwd/grp) and the root-or-self rule.

A daemon running as root may start sessions as any local user the policy maps to; a daemon
running as a normal user can only serve its own account, and says so.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass

from tssh.errors import TsshError


class AccountError(TsshError):
    """The local user a login maps to cannot be used on this node."""


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
