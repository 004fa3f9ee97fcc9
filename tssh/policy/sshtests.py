"""Run a policy's ``sshTests``: assertions about who may SSH where, as which user.

Each test names a source (a user login, ``tag:``, ``group:``, or with a netmap also a node
name or address) and destinations (tags, user logins, or with a netmap host aliases and
addresses). Without a netmap, tssh stands in a node for each named user or tag, which is what
the policy's selectors can tell apart. Assertions: ``accept`` (the login gets in, by an
accept or a check rule), ``check`` (it gets in by a check rule), ``deny`` (it is rejected).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tssh.identity.base import Peer
from tssh.policy.evaluate import evaluate
from tssh.policy.model import Decision, Policy, SshTest


@dataclass(frozen=True)
class SshTestFailure:
    """One failed assertion (or an unresolvable test), for ``tssh policy check`` to print."""

    test: int  # index in "sshTests"
    message: str

    def __str__(self) -> str:
        return f"sshTests[{self.test}]: {self.message}"


class _Unresolved(Exception):
    pass


def _synthetic_user_node(login: str) -> Peer:
    return Peer(name=f"node-of-{login}", id=f"test:{login}", addresses=(), user=login)


def _synthetic_tag_node(tag: str) -> Peer:
    return Peer(name=f"node-with-{tag}", id=f"test:{tag}", addresses=(), tags=(tag,))


def _by_address(nodes: Sequence[Peer], text: str) -> list[Peer]:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return []
    found = []
    for node in nodes:
        for addr in node.addresses:
            try:
                if ipaddress.ip_address(addr.split("/")[0]) in net:
                    found.append(node)
                    break
            except ValueError:
                continue
    return found


def _resolve(policy: Policy, name: str, nodes: Sequence[Peer] | None, *, is_src: bool,
             ) -> list[Peer]:
    """The nodes a test's ``src`` or ``dst`` entry stands for."""
    if name.startswith("tag:"):
        if nodes is None:
            return [_synthetic_tag_node(name)]
        return [n for n in nodes if name in n.tags]
    if name.startswith("group:"):
        if not is_src:
            raise _Unresolved(f"groups are not valid test destinations ({name!r})")
        if name not in policy.groups:
            raise _Unresolved(f"group {name!r} is not defined in groups")
        members = policy.groups[name]
        if nodes is None:
            return [_synthetic_user_node(m) for m in members]
        return [n for n in nodes if not n.is_tagged and n.user in members]
    if "@" in name:
        if nodes is None:
            return [_synthetic_user_node(name)]
        return [n for n in nodes if not n.is_tagged and n.user == name]
    address = policy.hosts.get(name, name)
    try:
        ipaddress.ip_network(address, strict=False)
    except ValueError:
        if nodes is not None:
            named = [n for n in nodes if n.name == name or n.name.split(".")[0] == name]
            if named:
                return named
        raise _Unresolved(f"cannot resolve {name!r}: not a user, tag, group, host or "
                          "address") from None
    if nodes is None:
        raise _Unresolved(f"{name!r} is an address; resolving it needs a netmap (--netmap)")
    return _by_address(nodes, address)


def _outcome(d: Decision) -> str:
    if d.action == "reject":
        return f"DENIED ({d.message})"
    return f"ALLOWED via {d.action} (rule ssh[{d.rule}], local user {d.local_user!r})"


def run_test(
    policy: Policy, test: SshTest, nodes: Sequence[Peer] | None = None,
    *, is_root_account: Callable[[str], bool] = lambda u: u == "root",
) -> list[SshTestFailure]:
    """Every failure of one test; empty when it passes."""
    def fail(message: str) -> SshTestFailure:
        return SshTestFailure(test.index, message)

    if not (test.accept or test.deny or test.check):
        return [fail("no accept, deny or check assertions")]
    try:
        sources = _resolve(policy, test.src, nodes, is_src=True)
        destinations = [(d, _resolve(policy, d, nodes, is_src=False)) for d in test.dst]
    except _Unresolved as e:
        return [fail(str(e))]
    failures: list[SshTestFailure] = []
    if not sources:
        failures.append(fail(f"src {test.src!r} resolved to no nodes"))
    for label, dst_nodes in destinations:
        if not dst_nodes:
            failures.append(fail(f"dst {label!r} resolved to no nodes"))
    for kind, logins in (("accept", test.accept), ("deny", test.deny), ("check", test.check)):
        for login in logins:
            if not login:
                failures.append(fail(f'{kind}: an empty user name ("") is not a login'))
                continue
            for src in sources:
                for label, dst_nodes in destinations:
                    for dst in dst_nodes:
                        d = evaluate(policy, src, dst, login, is_root_account=is_root_account)
                        ok = {"accept": d.action in ("accept", "check"),
                              "check": d.action == "check",
                              "deny": d.action == "reject"}[kind]
                        if not ok:
                            want = {"accept": "ALLOWED", "check": "ALLOWED via check",
                                    "deny": "DENIED"}[kind]
                            where = label if dst.name.startswith(("node-of-", "node-with-")) \
                                else f"{label} ({dst.name})"
                            failures.append(fail(f"{test.src}/{login} -> {where}: expected "
                                                 f"{want}, got {_outcome(d)}"))
    return failures


def run_ssh_tests(
    policy: Policy, nodes: Sequence[Peer] | None = None,
    *, is_root_account: Callable[[str], bool] = lambda u: u == "root",
) -> list[SshTestFailure]:
    """Every failure of every ``sshTests`` entry, in file order; empty when all pass."""
    failures: list[SshTestFailure] = []
    for test in policy.ssh_tests:
        failures.extend(run_test(policy, test, nodes, is_root_account=is_root_account))
    return failures


def rules_exercised(
    policy: Policy, nodes: Sequence[Peer] | None = None,
    *, is_root_account: Callable[[str], bool] = lambda u: u == "root",
) -> set[int]:
    """Indexes of the ``ssh`` rules that some ``sshTests`` login gets in through: a rule no
    test reaches is a rule no test protects."""
    used: set[int] = set()
    for test in policy.ssh_tests:
        try:
            sources = _resolve(policy, test.src, nodes, is_src=True)
            targets = [n for d in test.dst for n in _resolve(policy, d, nodes, is_src=False)]
        except _Unresolved:
            continue
        for login in (*test.accept, *test.check):
            for src in sources:
                for dst in targets:
                    d = evaluate(policy, src, dst, login, is_root_account=is_root_account)
                    if d.rule is not None:
                        used.add(d.rule)
    return used
