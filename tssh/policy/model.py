"""The validated policy and the decision the evaluator returns. Typed, immutable, no I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from tssh.policy.duration import parse_duration
from tssh.policy.selectors import Selector, UserEntry

Action = Literal["accept", "check"]

DEFAULT_CHECK_PERIOD = "12h"
MAX_CHECK_PERIOD_NS = 168 * 3600 * 1_000_000_000
CHECK_ALWAYS = "always"

REJECT_MESSAGE = "tailnet policy does not permit you to SSH to this node"
UNKNOWN_PEER_MESSAGE = (
    "tailnet policy does not permit you to SSH to this node: the connecting address is not a "
    "known node of this tailnet"
)


def reject_user_message(login: str) -> str:
    """Tailscale's wording when a rule admits the source but not the requested login."""
    return f"tailnet policy does not permit you to SSH as user {json.dumps(login)}"


@dataclass(frozen=True)
class SshRule:
    """One entry of the ``ssh`` section, selectors parsed and values trimmed."""

    index: int  # position in the file's "ssh" list
    action: Action
    src: tuple[Selector, ...]
    dst: tuple[Selector, ...]
    users: tuple[UserEntry, ...]
    check_period: str | None  # "12h", "always", ...; None for accept rules
    accept_env: tuple[str, ...] = ()
    recorder: tuple[str, ...] = ()
    enforce_recorder: bool = False


@dataclass(frozen=True)
class SshTest:
    """One ``sshTests`` entry: from ``src`` to each of ``dst``, which logins get what."""

    index: int
    src: str
    dst: tuple[str, ...]
    accept: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    check: tuple[str, ...] = ()


@dataclass(frozen=True)
class Policy:
    """The parts of a tailnet policy file tssh acts on."""

    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    tag_owners: dict[str, tuple[str, ...]] = field(default_factory=dict)
    hosts: dict[str, str] = field(default_factory=dict)
    ssh: tuple[SshRule, ...] = ()
    ssh_tests: tuple[SshTest, ...] = ()
    has_ssh_section: bool = False
    filename: str = "<policy>"

    def ordered_rules(self) -> tuple[SshRule, ...]:
        """Rules in evaluation order: every ``check`` rule, then every ``accept`` rule.

        Tailscale's control plane emits them so whatever their order in the file; within each
        kind the file order is kept.
        """
        return (tuple(r for r in self.ssh if r.action == "check")
                + tuple(r for r in self.ssh if r.action == "accept"))


@dataclass(frozen=True)
class Decision:
    """What the policy says about one connection: accept, check (hold for approval) or reject."""

    action: Literal["accept", "check", "reject"]
    local_user: str | None = None
    rule: int | None = None
    recorders: tuple[str, ...] = ()  # the rule's raw selectors, e.g. "tag:recorder"
    enforce_recorder: bool = False
    check_period: str | None = None
    accept_env: tuple[str, ...] = ()
    message: str | None = None

    @property
    def allowed(self) -> bool:
        """Accepted outright or subject to a check; a reject is never allowed."""
        return self.action != "reject"

    @property
    def check_period_seconds(self) -> float | None:
        """The check period in seconds; None when not a check or when ``always`` (0 means
        re-check every connection too)."""
        if self.check_period is None or self.check_period == CHECK_ALWAYS:
            return None
        return parse_duration(self.check_period) / 1e9

    def to_json(self) -> dict[str, object]:
        """The ``tssh policy eval --json`` object (docs/policy.md)."""
        return {
            "action": self.action,
            "localUser": self.local_user,
            "rule": self.rule,
            "recorders": list(self.recorders),
            "enforceRecorder": self.enforce_recorder,
            "checkPeriod": self.check_period,
            "acceptEnv": list(self.accept_env),
            "message": self.message,
        }
