"""A login with no local account: "the same name" mappings do not match it.

tailscaled (tailscale/tailscale ssh/tailssh/tailssh.go, mapLocalUser) looks the account up
when a rule maps the login to ``=`` and treats a failed lookup, like root or uid 0, as "this
rule's users do not match", so evaluation goes on to later rules. ``autogroup:nonroot`` is
compiled to ``"*": "="``. A literal mapping (``"*": "ubuntu"``) is taken as written.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.policy.conftest import NODES, make_policy
from tssh.identity.base import Peer
from tssh.policy import evaluate
from tssh.policy.compiled import evaluate_compiled, parse_compiled_policy
from tssh.policy.decider import CompiledDecider, FileDecider
from tssh.policy.model import reject_user_message
from tssh.policy.selectors import LocalUser, NonRoot

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LAPTOP = Peer("laptop", "nLAP", ("100.64.0.2",), user="alice@example.com")
ACCOUNTS = {"root", "toor", "alice", "ubuntu"}
UID0 = {"root", "toor"}
MEMBER_TO_SERVER = {"src": ["autogroup:member"], "dst": ["tag:server"]}


def exists(user: str) -> bool:
    return user in ACCOUNTS


def compiled(*users: dict[str, str]) -> Any:
    return parse_compiled_policy({"rules": [
        {"principals": [{"any": True}], "sshUsers": u, "action": {"accept": True}}
        for u in users]})


# --- compiled policy ---------------------------------------------------------------------

def test_compiled_same_name_falls_through_for_a_missing_account() -> None:
    policy = compiled({"*": "="}, {"*": "ubuntu"})
    d = evaluate_compiled(policy, LAPTOP, "100.64.0.2", "nosuchuser", now=NOW,
                          account_exists=exists)
    assert (d.action, d.local_user, d.rule) == ("accept", "ubuntu", 1)
    # An existing account keeps its own name under the first rule.
    d = evaluate_compiled(policy, LAPTOP, "100.64.0.2", "alice", now=NOW, account_exists=exists)
    assert (d.action, d.local_user, d.rule) == ("accept", "alice", 0)


def test_compiled_default_looks_nothing_up() -> None:
    d = evaluate_compiled(compiled({"*": "="}, {"*": "ubuntu"}), LAPTOP, "100.64.0.2",
                          "nosuchuser", now=NOW)
    assert (d.local_user, d.rule) == ("nosuchuser", 0)


def test_compiled_missing_account_alone_is_rejected_as_a_user_mismatch() -> None:
    d = evaluate_compiled(compiled({"*": "="}), LAPTOP, "100.64.0.2", "nosuchuser", now=NOW,
                          account_exists=exists)
    assert (d.action, d.message) == ("reject", reject_user_message("nosuchuser"))


def test_compiled_literal_mapping_is_not_looked_up() -> None:
    """tailscaled only looks up ``=``; a literal target is refused later, at login."""
    calls: list[str] = []

    def record(user: str) -> bool:
        calls.append(user)
        return False

    d = evaluate_compiled(compiled({"*": "ghost"}), LAPTOP, "100.64.0.2", "x", now=NOW,
                          account_exists=record)
    assert (d.action, d.local_user, calls) == ("accept", "ghost", [])


def test_compiled_same_name_never_yields_uid0_even_if_it_exists() -> None:
    policy = compiled({"*": "="}, {"*": "ubuntu"})
    d = evaluate_compiled(policy, LAPTOP, "100.64.0.2", "toor", now=NOW,
                          is_root_account=UID0.__contains__, account_exists=exists)
    assert (d.local_user, d.rule) == ("ubuntu", 1)


# --- policy file -------------------------------------------------------------------------

def test_file_nonroot_falls_through_for_a_missing_account() -> None:
    policy = make_policy([{"action": "accept", **MEMBER_TO_SERVER, "users": ["autogroup:nonroot"]},
                          {"action": "accept", **MEMBER_TO_SERVER, "users": ["ubuntu"]}])
    src, dst = NODES["bulbasaur"], NODES["beedrill"]
    d = evaluate(policy, src, dst, "nosuchuser", account_exists=exists)
    # The second rule lists "ubuntu" only: the login itself is still what is asked for.
    assert (d.action, d.message) == ("reject", reject_user_message("nosuchuser"))
    d = evaluate(policy, src, dst, "ubuntu", account_exists=exists)
    assert (d.action, d.local_user, d.rule) == ("accept", "ubuntu", 0)


def test_file_nonroot_missing_account_goes_on_to_a_later_rule() -> None:
    policy = make_policy([
        {"action": "check", **MEMBER_TO_SERVER, "users": ["autogroup:nonroot"]},
        {"action": "accept", **MEMBER_TO_SERVER, "users": ["deploy"]},
    ])
    src, dst = NODES["bulbasaur"], NODES["beedrill"]
    # Without the lookup the check rule would claim "deploy"; with it, the accept rule does.
    assert evaluate(policy, src, dst, "deploy").action == "check"
    d = evaluate(policy, src, dst, "deploy", account_exists=exists)
    assert (d.action, d.local_user, d.rule) == ("accept", "deploy", 1)


def test_file_listed_name_is_not_looked_up() -> None:
    policy = make_policy([{"action": "accept", **MEMBER_TO_SERVER, "users": ["deploy"]}])
    d = evaluate(policy, NODES["bulbasaur"], NODES["beedrill"], "deploy",
                 account_exists=lambda _u: False)
    assert (d.action, d.local_user) == ("accept", "deploy")


# --- deciders ----------------------------------------------------------------------------

def test_deciders_pass_account_exists_through() -> None:
    server = NODES["beedrill"]
    file_decider = FileDecider(make_policy([
        {"action": "accept", **MEMBER_TO_SERVER, "users": ["autogroup:nonroot"]}]))
    tailnet_decider = CompiledDecider(compiled({"*": "="}), clock=lambda: NOW)
    for decider, src in ((file_decider, NODES["bulbasaur"]), (tailnet_decider, LAPTOP)):
        address = src.addresses[0]
        assert decider.decide(src, address, server, "ghost").action == "accept"
        assert decider.decide(src, address, server, "ghost",
                              account_exists=exists).action == "reject"
        assert decider.decide(src, address, server, "toor", account_exists=exists,
                              is_root_account=UID0.__contains__).action == "reject"


# --- properties --------------------------------------------------------------------------

LOGINS = ["root", "toor", "alice", "ubuntu", "ghost", "nosuchuser", "deploy"]
ENTRIES = ["root", "toor", "ubuntu", "deploy", "autogroup:nonroot"]
SSH_USER_VALUES = ["=", "ubuntu", "root", "", "ghost"]


@st.composite
def file_rules(draw: st.DrawFn) -> list[dict[str, Any]]:
    return [{"action": draw(st.sampled_from(["accept", "check"])), **MEMBER_TO_SERVER,
             "users": draw(st.lists(st.sampled_from(ENTRIES), min_size=1, max_size=3))}
            for _ in range(draw(st.integers(0, 5)))]


@st.composite
def compiled_rules(draw: st.DrawFn) -> list[dict[str, str]]:
    keys = st.sampled_from(["*", *LOGINS])
    return [draw(st.dictionaries(keys, st.sampled_from(SSH_USER_VALUES), max_size=3))
            for _ in range(draw(st.integers(0, 5)))]


PROPERTY = settings(max_examples=300, deadline=None)


@PROPERTY
@given(file_rules(), st.sampled_from(LOGINS), st.sets(st.sampled_from(LOGINS)))
def test_file_nonroot_yields_only_existing_non_root_accounts(
        rules: list[dict[str, Any]], login: str, accounts: set[str]) -> None:
    policy = make_policy(rules)
    d = evaluate(policy, NODES["bulbasaur"], NODES["beedrill"], login,
                 is_root_account=UID0.__contains__, account_exists=accounts.__contains__)
    if d.local_user is None:
        return
    assert d.rule is not None
    listed = {e.name for e in policy.ssh[d.rule].users if isinstance(e, LocalUser)}
    if d.local_user not in listed:  # only autogroup:nonroot can have admitted it
        assert any(isinstance(e, NonRoot) for e in policy.ssh[d.rule].users)
        assert d.local_user in accounts and d.local_user not in UID0
    # With every account present the same rule, or one tried before it, admits the login.
    everyone = evaluate(policy, NODES["bulbasaur"], NODES["beedrill"], login,
                        is_root_account=UID0.__contains__)
    order = [r.index for r in policy.ordered_rules()]
    assert everyone.rule is not None and order.index(everyone.rule) <= order.index(d.rule)


@PROPERTY
@given(compiled_rules(), st.sampled_from(LOGINS), st.sets(st.sampled_from(LOGINS)))
def test_compiled_matches_a_reference_walk(rules: list[dict[str, str]], login: str,
                                           accounts: set[str]) -> None:
    """The first rule mapping the login to an existing non-root account (for ``=``), or to any
    non-empty literal, wins; written independently of the evaluator's code."""
    expected_rule, expected_user = None, None
    for i, users in enumerate(rules):
        target = users[login] if login in users else users.get("*", "")
        if target == "=":
            target = login if login in accounts and login not in UID0 else ""
        if target:
            expected_rule, expected_user = i, target
            break
    d = evaluate_compiled(compiled(*rules), LAPTOP, "100.64.0.2", login, now=NOW,
                          is_root_account=UID0.__contains__, account_exists=accounts.__contains__)
    assert (d.rule, d.local_user) == (expected_rule, expected_user)
    assert json.loads(json.dumps(d.to_json()))["action"] == d.action
