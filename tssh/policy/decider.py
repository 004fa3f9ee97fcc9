"""One way to ask "may this peer log in as this user?", whichever form the policy came in.

A policy file is decided by :func:`tssh.policy.evaluate` (selectors, check-before-accept
ordering); the policy tailscaled received from its control plane is already compiled to
principals and is decided by :func:`tssh.policy.compiled.evaluate_compiled`. The daemon holds a
:class:`Decider` and never needs to know which. Pure: the clock is injected.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

from tssh.identity.address import canonical_address
from tssh.identity.base import Peer
from tssh.policy.compiled import CompiledPolicy, evaluate_compiled
from tssh.policy.evaluate import evaluate
from tssh.policy.model import Decision, Policy

RecorderForm = Literal["selector", "address"]


def _is_root_name(user: str) -> bool:
    return user == "root"


def _any_account_exists(user: str) -> bool:
    return True


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Decider(Protocol):
    """Decides connections with one loaded policy."""

    @property
    def recorder_form(self) -> RecorderForm:
        """How ``Decision.recorders`` names recorders: policy selectors (``tag:recorder``,
        resolved through the identity backend) or ``IP:port`` addresses (compiled policy)."""
        ...

    @property
    def rule_count(self) -> int:
        """How many SSH rules the policy holds (for ``tssh status``)."""
        ...

    @property
    def groups(self) -> Mapping[str, tuple[str, ...]]:
        """The policy's groups, for ``group:`` selectors in the daemon's config (a compiled
        policy has none: its groups were expanded by the control plane)."""
        ...

    def decide(
        self, src: Peer | None, src_address: str, dst: Peer, login: str, *,
        is_root_account: Callable[[str], bool] = _is_root_name,
        account_exists: Callable[[str], bool] = _any_account_exists,
    ) -> Decision:
        """The decision for ``src`` (None: unknown), connecting from ``src_address`` to
        ``dst`` (this node), asking to log in as ``login``.

        ``is_root_account`` (root or uid 0) and ``account_exists`` let "the same name"
        mappings (``autogroup:nonroot``, ``=``) skip root and logins with no local account,
        so that later rules are tried; the defaults look nothing up."""
        ...


@dataclass(frozen=True)
class FileDecider:
    """A policy file (Tailscale's format) decides."""

    policy: Policy

    @property
    def recorder_form(self) -> RecorderForm:
        return "selector"

    @property
    def rule_count(self) -> int:
        return len(self.policy.ssh)

    @property
    def groups(self) -> Mapping[str, tuple[str, ...]]:
        return self.policy.groups

    def decide(
        self, src: Peer | None, src_address: str, dst: Peer, login: str, *,
        is_root_account: Callable[[str], bool] = _is_root_name,
        account_exists: Callable[[str], bool] = _any_account_exists,
    ) -> Decision:
        # The file's selectors name nodes and users; the address adds nothing to them.
        return evaluate(self.policy, src, dst, login, is_root_account=is_root_account,
                        account_exists=account_exists)


@dataclass(frozen=True)
class CompiledDecider:
    """The tailnet's compiled SSH policy decides, as tailscaled would.

    Rules may carry an expiry, hence the clock. ``dst`` is implied: the control plane compiled
    the policy for this node only.
    """

    policy: CompiledPolicy
    clock: Callable[[], datetime] = field(default=_utc_now, compare=False)

    @property
    def recorder_form(self) -> RecorderForm:
        return "address"

    @property
    def rule_count(self) -> int:
        return len(self.policy.rules)

    @property
    def groups(self) -> Mapping[str, tuple[str, ...]]:
        return {}

    def decide(
        self, src: Peer | None, src_address: str, dst: Peer, login: str, *,
        is_root_account: Callable[[str], bool] = _is_root_name,
        account_exists: Callable[[str], bool] = _any_account_exists,
    ) -> Decision:
        try:  # tailscaled compares parsed addresses, IPv4-mapped ones unmapped
            address = canonical_address(src_address)
        except ValueError:
            address = src_address
        return evaluate_compiled(self.policy, src, address, login, now=self.clock(),
                                 is_root_account=is_root_account,
                                 account_exists=account_exists)
