"""Decide one SSH connection: may this peer log in to this node as this local user?

Mirrors what tailscaled does with the rules its control plane compiled for this node: rules in
order (``check`` before ``accept``), the first whose destination, source and user mapping all
match wins, and a rule whose source matches but whose ``users`` do not falls through.
"""

from __future__ import annotations

from collections.abc import Callable

from tssh.identity.base import Peer
from tssh.policy.model import (
    REJECT_MESSAGE,
    UNKNOWN_PEER_MESSAGE,
    Decision,
    Policy,
    SshRule,
    reject_user_message,
)
from tssh.policy.selectors import dst_matches, map_login, owner, src_matches


def _is_root_name(user: str) -> bool:
    return user == "root"


def _any_account_exists(user: str) -> bool:
    return True


def evaluate(
    policy: Policy,
    src: Peer | None,
    dst: Peer,
    login: str,
    *,
    is_root_account: Callable[[str], bool] = _is_root_name,
    account_exists: Callable[[str], bool] = _any_account_exists,
) -> Decision:
    """The decision for ``src`` (None: an address no identity backend knows) logging in to
    ``dst`` (this node) as ``login``.

    ``is_root_account`` says whether a local account is root or has uid 0; it keeps
    ``autogroup:nonroot`` from ever yielding such an account. ``account_exists`` says whether
    a local account exists: ``autogroup:nonroot`` does not match a login with no account, so
    evaluation goes on to later rules, as tailscaled does. The defaults look nothing up.
    Never raises for a valid policy.
    """
    if src is None:
        return Decision(action="reject", message=UNKNOWN_PEER_MESSAGE)
    failed_on_user = False
    for rule in policy.ordered_rules():
        if not applies(rule, src, dst, policy):
            continue
        local_user = map_login(rule.users, src, login, is_root_account, account_exists)
        if local_user is None:
            failed_on_user = True
            continue
        return Decision(
            action=rule.action,
            local_user=local_user,
            rule=rule.index,
            recorders=rule.recorder,
            enforce_recorder=rule.enforce_recorder,
            check_period=rule.check_period,
            accept_env=rule.accept_env,
        )
    message = reject_user_message(login) if failed_on_user else REJECT_MESSAGE
    return Decision(action="reject", message=message)


def applies(rule: SshRule, src: Peer, dst: Peer, policy: Policy) -> bool:
    """Whether ``rule`` covers connections from ``src`` to ``dst`` (users aside).

    Tagged sources never reach user-owned nodes, whatever the selectors say.
    """
    if src.is_tagged and owner(dst) is not None:
        return False
    if not any(dst_matches(d, dst, src) for d in rule.dst):
        return False
    return any(src_matches(s, src, policy.groups) for s in rule.src)
