"""The selectors an ``ssh`` rule uses, and how each one matches a peer.

Sources and destinations name nodes (users, groups, tags, autogroups); ``users`` entries name
local accounts. Matching is pure: it takes :class:`~tssh.identity.base.Peer` values and the
policy's groups, never looks anything up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tssh.identity.base import Peer

AUTOGROUP_MEMBER = "autogroup:member"
AUTOGROUP_TAGGED = "autogroup:tagged"
AUTOGROUP_SELF = "autogroup:self"
AUTOGROUP_NONROOT = "autogroup:nonroot"


@dataclass(frozen=True)
class User:
    """A user's login (``alice@example.com``): every node that user owns."""

    login: str


@dataclass(frozen=True)
class Domain:
    """``user:*@example.com``: every node owned by a user of that domain."""

    domain: str


@dataclass(frozen=True)
class Group:
    """``group:name``: every node owned by one of the group's members."""

    name: str


@dataclass(frozen=True)
class Tag:
    """``tag:name``: every node carrying that tag."""

    name: str


@dataclass(frozen=True)
class Autogroup:
    """``autogroup:member``, ``autogroup:tagged`` or (destination only) ``autogroup:self``."""

    name: str


Selector = User | Domain | Group | Tag | Autogroup


@dataclass(frozen=True)
class NonRoot:
    """``autogroup:nonroot``: the requested login, as itself, unless it is a root account."""


@dataclass(frozen=True)
class Localpart:
    """``localpart:*@domain``: the source user ``alice@domain`` may log in as ``alice``."""

    domain: str


@dataclass(frozen=True)
class LocalUser:
    """A literal local account name (``root``, ``ubuntu``, even ``group:x``)."""

    name: str


UserEntry = NonRoot | Localpart | LocalUser


def owner(peer: Peer) -> str | None:
    """The login owning ``peer``, or None for a tagged node (tags replace user ownership)."""
    return None if peer.is_tagged else peer.user


def src_matches(sel: Selector, peer: Peer, groups: Mapping[str, tuple[str, ...]]) -> bool:
    """Whether the connecting ``peer`` is one of the nodes ``sel`` names."""
    user = owner(peer)
    match sel:
        case User(login):
            return user is not None and user == login
        case Domain(domain):
            return user is not None and _domain_of(user) == domain.lower()
        case Group(name):
            return user is not None and user in groups.get(name, ())
        case Tag(name):
            return name in peer.tags
        case Autogroup(name):
            if name == AUTOGROUP_MEMBER:
                return user is not None
            if name == AUTOGROUP_TAGGED:
                return peer.is_tagged
    return False


def dst_matches(sel: Selector, dst: Peer, src: Peer) -> bool:
    """Whether the node ``dst`` (this server) is one of the nodes ``sel`` names, for ``src``.

    ``autogroup:self`` depends on the source: the destination must be owned by the same user
    as the (untagged) source.
    """
    dst_user = owner(dst)
    match sel:
        case User(login):
            return dst_user is not None and dst_user == login
        case Tag(name):
            return name in dst.tags
        case Autogroup(name):
            if name == AUTOGROUP_MEMBER:
                return dst_user is not None
            if name == AUTOGROUP_TAGGED:
                return dst.is_tagged
            if name == AUTOGROUP_SELF:
                return dst_user is not None and owner(src) == dst_user
    return False


def map_login(
    entries: tuple[UserEntry, ...], src: Peer, login: str, is_root_account: Callable[[str], bool],
    account_exists: Callable[[str], bool] = lambda _user: True,
) -> str | None:
    """The local account ``login`` maps to under ``entries`` for ``src``, or None.

    A listed name maps to itself (``root`` only when listed). ``localpart:*@d`` maps the
    source user ``x@d``'s login ``x`` to ``x``. ``autogroup:nonroot`` maps any other login to
    itself unless it is root, a uid 0 account, or no local account at all: Tailscale compiles
    it to ``"*": "="``, which tailscaled treats as no match when the account does not exist,
    so a later rule may still map the login (to ``ubuntu``, say).
    """
    if not login:
        return None
    for entry in entries:
        if isinstance(entry, LocalUser) and entry.name == login:
            return login
    user = owner(src)
    if user is not None:
        local, _, domain = user.rpartition("@")
        for entry in entries:
            if (isinstance(entry, Localpart) and local == login
                    and domain.lower() == entry.domain.lower()
                    and login != "root" and not is_root_account(login)):
                return login
    if any(isinstance(e, NonRoot) for e in entries):
        if login == "root" or not account_exists(login) or is_root_account(login):
            return None
        return login
    return None


def _domain_of(login: str) -> str | None:
    local, at, domain = login.rpartition("@")
    return domain.lower() if at and local else None


def parse_selector(text: str) -> Selector:
    """A selector naming peers, as the daemon's config and the recorder's ``--viewer`` take
    them: a user login, ``user:*@domain``, ``group:``, ``tag:``, ``autogroup:member`` or
    ``autogroup:tagged``. Raises ValueError with the reason. Groups are resolved against a
    policy at match time (:func:`src_matches`)."""
    entry = text.strip()
    if entry.startswith("group:") and len(entry) > len("group:"):
        return Group(entry)
    if entry.startswith("tag:"):
        name = entry.removeprefix("tag:")
        if not name or not (name[0].isascii() and name[0].isalpha()):
            raise ValueError(f"invalid tag {entry!r}: tag names start with an ASCII letter")
        return Tag(entry)
    if entry in (AUTOGROUP_MEMBER, AUTOGROUP_TAGGED):
        return Autogroup(entry)
    for prefix in ("user:*@", "*@"):
        if entry.startswith(prefix):
            domain = entry.removeprefix(prefix)
            if not domain or "*" in domain or "@" in domain:
                raise ValueError(f"invalid domain wildcard {entry!r}")
            return Domain(domain.lower())
    local, at, domain = entry.rpartition("@")
    if at and local and domain and "*" not in entry and not entry.startswith(("autogroup:",
                                                                                "user:")):
        return User(entry)
    raise ValueError(f"{entry!r} is not a selector (use a login, user:*@domain, group:, tag:, "
                     "autogroup:member or autogroup:tagged)")
