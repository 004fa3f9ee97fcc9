"""The SSH policy as tailscaled receives it from its control plane (``tailcfg.SSHPolicy``).

With the ``tailscale`` identity backend the policy can come from the tailnet itself: the
control plane has already compiled the policy file for this node into an ordered list of rules
whose principals are node ids, node addresses and user logins, and whose ``sshUsers`` map a
requested login to a local account (``"*"`` for any, ``"="`` for "the same name", ``""`` for
none). This module parses that JSON and decides a connection exactly as tailscaled does
(``ssh/tailssh/tailssh.go``: evalSSHPolicy, matchRule, mapLocalUser), returning the same
:class:`Decision` as the policy-file evaluator. Pure: the caller supplies the clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from tssh.errors import PolicyError
from tssh.identity.base import Peer
from tssh.policy.model import (
    DEFAULT_CHECK_PERIOD,
    REJECT_MESSAGE,
    UNKNOWN_PEER_MESSAGE,
    Decision,
    reject_user_message,
)
from tssh.policy.selectors import owner


@dataclass(frozen=True)
class Principal:
    node: str = ""
    node_ip: str = ""
    user_login: str = ""
    any: bool = False


@dataclass(frozen=True)
class CompiledAction:
    accept: bool = False
    reject: bool = False
    hold_and_delegate: str = ""  # set for "check" rules: tailscaled asks this URL
    message: str = ""
    session_duration_ns: int = 0
    recorders: tuple[str, ...] = ()
    enforce_recorder: bool = False  # onRecordingFailure rejects or terminates the session
    allow_agent_forwarding: bool = False
    allow_local_port_forwarding: bool = False
    allow_remote_port_forwarding: bool = False


@dataclass(frozen=True)
class CompiledRule:
    index: int
    principals: tuple[Principal, ...]
    ssh_users: Mapping[str, str]
    action: CompiledAction | None
    accept_env: tuple[str, ...] = ()
    expires: datetime | None = None


@dataclass(frozen=True)
class CompiledPolicy:
    rules: tuple[CompiledRule, ...] = field(default_factory=tuple)


def parse_compiled_policy(value: Any, *, source: str = "SSHPolicy") -> CompiledPolicy:
    """Parse a ``tailcfg.SSHPolicy`` JSON value; None means no policy (everything rejected)."""
    if value is None:
        return CompiledPolicy()
    top = _obj(value, source)
    rules_raw = top.get("rules") or []
    if not isinstance(rules_raw, list):
        raise PolicyError(f"{source}.rules must be a list")
    rules = []
    for i, raw in enumerate(rules_raw):
        where = f"{source}.rules[{i}]"
        if raw is None:
            rules.append(CompiledRule(i, (), {}, None))
            continue
        r = _obj(raw, where)
        principals = tuple(
            Principal(node=_str(p, "node", where), node_ip=_str(p, "nodeIP", where),
                      user_login=_str(p, "userLogin", where), any=p.get("any") is True)
            for p in (_obj(x, f"{where}.principals") for x in _list(r, "principals", where)
                      if x is not None))
        users = r.get("sshUsers")
        users = {} if users is None else users
        if not isinstance(users, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in users.items()):
            raise PolicyError(f"{where}.sshUsers must map strings to strings")
        action_raw = r.get("action")
        action = None if action_raw is None else _action(_obj(action_raw, f"{where}.action"),
                                                         f"{where}.action")
        env = _list(r, "acceptEnv", where)
        if not all(isinstance(e, str) for e in env):
            raise PolicyError(f"{where}.acceptEnv must be a list of strings")
        expires_raw = r.get("ruleExpires")
        expires = None if expires_raw is None else _time(expires_raw, f"{where}.ruleExpires")
        rules.append(CompiledRule(i, principals, dict(users), action, tuple(env), expires))
    return CompiledPolicy(tuple(rules))


def evaluate_compiled(
    policy: CompiledPolicy, src: Peer | None, src_ip: str, login: str, *, now: datetime,
    is_root_account: Callable[[str], bool] = lambda u: u == "root",
    account_exists: Callable[[str], bool] = lambda _user: True,
) -> Decision:
    """Decide a connection from ``src`` (seen at ``src_ip``) asking for ``login``.

    ``account_exists`` lets ``=`` fall through to later rules for a login with no local
    account, as tailscaled does; the default looks nothing up."""
    if src is None:
        return Decision(action="reject", message=UNKNOWN_PEER_MESSAGE)
    failed_on_user = False
    for rule in policy.rules:
        action = rule.action
        if action is None or (rule.expires is not None and rule.expires < now):
            continue
        if not any(_principal_matches(p, src, src_ip) for p in rule.principals):
            continue
        if action.reject:
            return Decision(action="reject", rule=rule.index,
                            message=action.message or REJECT_MESSAGE)
        local = _map_local_user(rule.ssh_users, login, is_root_account, account_exists)
        if local is None:
            failed_on_user = True
            continue
        kind: Literal["accept", "check"]
        period = None
        if action.accept:
            kind = "accept"
        elif action.hold_and_delegate:
            kind = "check"
            # The compiled form does not carry the policy's checkPeriod (the control plane
            # keeps it); report Tailscale's default.
            period = DEFAULT_CHECK_PERIOD
        else:  # neither accept, reject nor check: nothing tssh can honour
            return Decision(action="reject", rule=rule.index,
                            message=action.message or REJECT_MESSAGE)
        return Decision(action=kind, local_user=local, rule=rule.index,
                        recorders=action.recorders, enforce_recorder=action.enforce_recorder,
                        check_period=period, accept_env=rule.accept_env,
                        message=action.message or None)
    return Decision(action="reject", message=reject_user_message(login) if failed_on_user
                    else REJECT_MESSAGE)


def _principal_matches(p: Principal, src: Peer, src_ip: str) -> bool:
    if p.any:
        return True
    if p.node and p.node == src.id:
        return True
    if p.node_ip and p.node_ip == src_ip:
        return True
    user = owner(src)
    return bool(p.user_login) and user is not None and p.user_login == user


def _map_local_user(users: Mapping[str, str], login: str, is_root_account: Callable[[str], bool],
                    account_exists: Callable[[str], bool]) -> str | None:
    """tailscaled's mapLocalUser: exact entry, else ``*``. ``=`` keeps the login unless it
    has no local account or is root (tailscaled looks the account up and treats either as no
    match); any other value is taken as written, existing or not."""
    if not login:
        return None
    value = users.get(login, users.get("*", ""))
    if value == "=":
        if login == "root" or not account_exists(login) or is_root_account(login):
            return None
        return login
    return value or None


def _action(a: dict[str, Any], where: str) -> CompiledAction:
    duration = a.get("sessionDuration", 0) or 0
    if not isinstance(duration, int) or isinstance(duration, bool):
        raise PolicyError(f"{where}.sessionDuration must be an integer (nanoseconds)")
    recorders = a.get("recorders") or []
    if not isinstance(recorders, list) or not all(isinstance(r, str) for r in recorders):
        raise PolicyError(f"{where}.recorders must be a list of IP:port strings")
    failure = a.get("onRecordingFailure")
    enforce = isinstance(failure, dict) and bool(
        failure.get("RejectSessionWithMessage") or failure.get("TerminateSessionWithMessage"))
    return CompiledAction(
        accept=a.get("accept") is True, reject=a.get("reject") is True,
        hold_and_delegate=_str(a, "holdAndDelegate", where), message=_str(a, "message", where),
        session_duration_ns=duration, recorders=tuple(recorders), enforce_recorder=enforce,
        allow_agent_forwarding=a.get("allowAgentForwarding") is True,
        allow_local_port_forwarding=a.get("allowLocalPortForwarding") is True,
        allow_remote_port_forwarding=a.get("allowRemotePortForwarding") is True,
    )


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PolicyError(f"{where} must be an object")
    return value


def _list(obj: dict[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key) or []
    if not isinstance(value, list):
        raise PolicyError(f"{where}.{key} must be a list")
    return value


def _str(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key) or ""
    if not isinstance(value, str):
        raise PolicyError(f"{where}.{key} must be a string")
    return value


_FRACTION = re.compile(r"(\.\d{6})\d+")


def _time(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise PolicyError(f"{where} must be an RFC 3339 time")
    try:
        t = datetime.fromisoformat(_FRACTION.sub(r"\1", value).replace("Z", "+00:00"))
    except ValueError:
        raise PolicyError(f"{where}: {value!r} is not an RFC 3339 time") from None
    if t.tzinfo is None:
        raise PolicyError(f"{where}: {value!r} has no time zone")
    return t
