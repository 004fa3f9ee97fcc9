"""Properties that hold for every valid policy, checked on generated policies and peers."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tssh.identity.base import Peer
from tssh.policy import Policy, evaluate, parse_policy
from tssh.policy.acceptenv import env_accepted, glob_match, is_dangerous
from tssh.policy.duration import format_duration, parse_duration
from tssh.policy.selectors import LocalUser

USERS = ["alice@example.com", "bob@example.com", "carol@example.org", "root@example.com"]
TAGS = ["tag:prod", "tag:web", "tag:db"]
GROUPS = {"group:ops": USERS[:2], "group:all": USERS, "group:none": []}
LOGINS = ["root", "toor", "alice", "bob", "carol", "ubuntu", "deploy", "", "daemon"]
UID0 = {"root", "toor"}

user_src = st.sampled_from([*USERS, *GROUPS, "autogroup:member", "user:*@example.com",
                            "*@example.org"])
tag_src = st.sampled_from([*TAGS, "autogroup:tagged"])
user_entries = st.sampled_from(["root", "toor", "alice", "ubuntu", "deploy", "autogroup:nonroot",
                                "localpart:*@example.com", "localpart:*@example.org",
                                " bob", "group:ops"])


@st.composite
def rules(draw: st.DrawFn) -> dict[str, Any]:
    tagged = draw(st.booleans())
    if tagged:
        src = draw(st.lists(tag_src, max_size=3))
        dst = draw(st.lists(st.sampled_from([*TAGS, "autogroup:tagged"]), max_size=3))
    else:
        src = draw(st.lists(user_src, max_size=3))
        dst = draw(st.lists(st.sampled_from([*TAGS, "autogroup:tagged", "autogroup:self",
                                             "autogroup:member"]), max_size=3))
    rule: dict[str, Any] = {
        "action": draw(st.sampled_from(["accept", "check", " check", "accept "])),
        "src": src, "dst": dst, "users": draw(st.lists(user_entries, min_size=1, max_size=4)),
    }
    if rule["action"].strip() == "check" and draw(st.booleans()):
        rule["checkPeriod"] = draw(st.sampled_from(["0s", "30s", "1h30m", "168h", "always"]))
    if draw(st.booleans()):
        rule["recorder"] = draw(st.lists(st.sampled_from(TAGS), max_size=2))
        rule["enforceRecorder"] = draw(st.booleans())
    if draw(st.booleans()):
        rule["acceptEnv"] = draw(st.lists(st.sampled_from(["TERM", "GIT_*", "LC_?", "*"]),
                                          max_size=3))
    return rule


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    doc = {"groups": GROUPS, "tagOwners": {t: ["group:ops"] for t in TAGS},
           "ssh": draw(st.lists(rules(), max_size=8))}
    return parse_policy(json.dumps(doc), filename="gen.hujson")


@st.composite
def peers(draw: st.DrawFn) -> Peer:
    n = draw(st.integers(0, 10_000))
    if draw(st.booleans()):
        return Peer(f"t{n}", f"nT{n}", ("100.64.0.1",),
                    tags=tuple(draw(st.lists(st.sampled_from(TAGS), min_size=1, max_size=2))))
    return Peer(f"u{n}", f"nU{n}", ("100.64.0.2",), user=draw(st.sampled_from(
        [*USERS, "dave@example.net"])))


SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(policies(), peers(), peers(), st.sampled_from(LOGINS))
def test_evaluation_never_raises_and_is_consistent(policy: Policy, src: Peer, dst: Peer,
                                                   login: str) -> None:
    d = evaluate(policy, src, dst, login, is_root_account=UID0.__contains__)
    assert d.action in ("accept", "check", "reject")
    if d.action == "reject":
        assert d.local_user is None and d.rule is None and d.message
        return
    assert d.rule is not None and d.message is None
    rule = policy.ssh[d.rule]
    assert rule.action == d.action
    assert d.local_user == login
    assert d.recorders == rule.recorder and d.accept_env == rule.accept_env
    assert (d.check_period is None) == (d.action == "accept")
    # Check rules come first: no check rule can also have admitted this connection.
    if d.action == "accept":
        assert all(evaluate(Policy(groups=policy.groups, ssh=(r,)), src, dst, login,
                            is_root_account=UID0.__contains__).action == "reject"
                   for r in policy.ssh if r.action == "check")
    # Tagged sources never reach user-owned nodes.
    assert not (src.is_tagged and not dst.is_tagged)
    assert json.loads(json.dumps(d.to_json()))["action"] == d.action


@SETTINGS
@given(policies(), peers(), st.sampled_from(LOGINS))
def test_unknown_peer_always_rejected(policy: Policy, dst: Peer, login: str) -> None:
    d = evaluate(policy, None, dst, login)
    assert (d.action, d.local_user, d.rule) == ("reject", None, None)


@SETTINGS
@given(policies(), peers(), peers(), st.sampled_from(LOGINS))
def test_root_only_when_listed(policy: Policy, src: Peer, dst: Peer, login: str) -> None:
    """autogroup:nonroot and localpart never yield root or a uid 0 account."""
    d = evaluate(policy, src, dst, login, is_root_account=UID0.__contains__)
    rule = policy.ssh[d.rule] if d.rule is not None else None
    listed = {e.name for e in rule.users if isinstance(e, LocalUser)} if rule else set()
    assert d.local_user is None or d.local_user not in UID0 or d.local_user in listed


@pytest.mark.parametrize(("users", "expected"), [
    (["root"], "root"),
    (["autogroup:nonroot", "localpart:*@example.com", "group:ops"], None),
])
def test_root_is_given_when_listed_and_only_then(users: list[str], expected: str | None) -> None:
    """The property above, where it cannot hold vacuously: root asked for and matched."""
    src = Peer("u1", "nU1", ("100.64.0.2",), user="alice@example.com")
    dst = Peer("t1", "nT1", ("100.64.0.1",), tags=("tag:prod",))
    policy = parse_policy(json.dumps({
        "groups": GROUPS, "tagOwners": {"tag:prod": ["group:ops"]},
        "ssh": [{"action": "accept", "src": ["alice@example.com"], "dst": ["tag:prod"],
                 "users": users}]}))
    d = evaluate(policy, src, dst, "root", is_root_account=UID0.__contains__)
    assert d.local_user == expected
    assert d.action == ("accept" if expected else "reject")


@given(st.text(alphabet="abAB_-*?", max_size=8), st.text(alphabet="abAB_-", max_size=10))
def test_glob_matches_like_a_regex(pattern: str, name: str) -> None:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    assert glob_match(pattern, name) == (re.fullmatch(regex, name, re.DOTALL) is not None)


@given(st.text(max_size=30), st.lists(st.text(min_size=1, max_size=5), max_size=4))
def test_dangerous_names_never_accepted(name: str, patterns: list[str]) -> None:
    for danger in (f"LD_{name}", f"DYLD_{name}", f"ld_{name}", f"{name}=x", f"{name} x"):
        assert is_dangerous(danger)
        assert not env_accepted(danger, [*patterns, "*"])


@given(st.integers(min_value=-9_000_000_000, max_value=9_000_000_000))
def test_duration_round_trip(seconds: int) -> None:
    ns = seconds * 1_000_000_000
    assert parse_duration(format_duration(ns)) == ns
