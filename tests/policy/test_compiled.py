"""The compiled policy tailscaled receives (tailcfg.SSHPolicy), decided as tailscaled does.

Cases restate tailscale/tailscale ssh/tailssh/tailssh_test.go (TestMatchRule,
TestEvalSSHPolicy) and compiled rules recorded in Headscale's captures
(juanfont/headscale hscontrol/policy/v2/testdata/ssh_results/ssh-a2, ssh-a6, ssh-d2).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tssh.errors import PolicyError
from tssh.identity.base import Peer
from tssh.policy.compiled import evaluate_compiled, parse_compiled_policy

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ALICE = Peer("laptop", "nLAP", ("100.64.0.2",), user="foo@bar.com")
TAGGED = Peer("ci", "nCI", ("100.64.0.3",), tags=("tag:ci",))
ACCEPT = {"accept": True}
ANY = [{"any": True}]


def decide(rules: list[Any], login: str, src: Peer | None = ALICE, ip: str = "100.64.0.2",
           is_root: Any = lambda u: u == "root") -> Any:
    policy = parse_compiled_policy({"rules": rules})
    return evaluate_compiled(policy, src, ip, login, now=NOW, is_root_account=is_root)


def rule(users: dict[str, str], principals: list[Any] = ANY, action: Any = ACCEPT,
         **extra: Any) -> dict[str, Any]:
    return {"principals": principals, "sshUsers": users, "action": action, **extra}


@pytest.mark.parametrize(("rules", "login", "action", "user"), [
    # TestMatchRule
    ([{"principals": ANY, "sshUsers": {"*": "ubuntu"}}], "alice", "reject", None),  # nil action
    ([rule({"*": "ubuntu"}, ruleExpires="1970-01-01T00:01:40Z")], "alice", "reject", None),
    ([rule({"*": "ubuntu"}, principals=[])], "alice", "reject", None),
    ([rule({})], "alice", "reject", None),
    ([rule({"*": "ubuntu"})], "alice", "accept", "ubuntu"),
    ([rule({"*": "ubuntu"}, principals=[None, {"any": True}])], "alice", "accept", "ubuntu"),
    ([rule({"*": "ubuntu", "alice": "thealice"})], "alice", "accept", "thealice"),
    ([rule({"*": "ubuntu"}, principals=[{"nodeIP": "100.64.0.2"}])], "x", "accept", "ubuntu"),
    ([rule({"*": "ubuntu"}, principals=[{"nodeIP": "100.64.0.9"}])], "x", "reject", None),
    ([rule({"*": "ubuntu"}, principals=[{"node": "nLAP"}])], "x", "accept", "ubuntu"),
    ([rule({"*": "ubuntu"}, principals=[{"userLogin": "foo@bar.com"}])], "x", "accept",
     "ubuntu"),
    ([rule({"*": "="})], "bob", "accept", "bob"),
    # ssh-a2: autogroup:nonroot compiles to {"*": "=", "root": ""}.
    ([rule({"*": "=", "root": ""})], "root", "reject", None),
    ([rule({"*": "="})], "root", "reject", None),
    ([rule({"*": "="})], "toor", "reject", None),  # uid 0 by the callback below
    # ssh-d2: localpart compiles to per-user rules.
    ([rule({"root": ""}, principals=[{"nodeIP": "100.64.0.2"}]),
      rule({"foo": "foo"}, principals=[{"nodeIP": "100.64.0.2"}])], "foo", "accept", "foo"),
    # TestEvalSSHPolicy: first match wins, users that do not match fall through.
    ([rule({"other": "other1"}), rule({"*": "ubuntu", "alice": "thealice"}),
      rule({"*": "ubuntu", "alice": "x"})], "alice", "accept", "thealice"),
    ([], "alice", "reject", None),
    # ssh-a6: a check rule is a holdAndDelegate action.
    ([rule({"root": "root"}, action={"holdAndDelegate": "https://x/machine/ssh/action"})],
     "root", "check", "root"),
    # A reject action ends evaluation with its message.
    ([rule({}, action={"reject": True, "message": "no"}), rule({"*": "ubuntu"})], "a",
     "reject", None),
])
def test_compiled(rules: list[Any], login: str, action: str, user: str | None) -> None:
    d = decide(rules, login, is_root=lambda u: u in ("root", "toor"))
    assert (d.action, d.local_user) == (action, user)


def test_first_match_carries_accept_env_and_index() -> None:
    d = decide([rule({"other": "o"}), rule({"alice": "a"}, acceptEnv=["EXAMPLE", "?_?"])],
               "alice")
    assert (d.rule, d.accept_env) == (1, ("EXAMPLE", "?_?"))


def test_messages() -> None:
    assert decide([rule({"fedora": "ubuntu"})], "alice").message == \
        'tailnet policy does not permit you to SSH as user "alice"'
    assert decide([], "alice").message == \
        "tailnet policy does not permit you to SSH to this node"
    assert decide([rule({}, action={"reject": True, "message": "go away"})], "a").message == \
        "go away"
    assert decide([rule({"*": "u"})], "a", src=None).action == "reject"


def test_recorders_and_enforcement() -> None:
    d = decide([rule({"*": "u"}, action={
        "accept": True, "recorders": ["100.64.0.20:80"],
        "onRecordingFailure": {"RejectSessionWithMessage": "recorder down"}})], "a")
    assert d.recorders == ("100.64.0.20:80",) and d.enforce_recorder


def test_tagged_source_does_not_match_user_login() -> None:
    d = decide([rule({"*": "u"}, principals=[{"userLogin": "foo@bar.com"}])], "a", src=TAGGED,
               ip="100.64.0.3")
    assert d.action == "reject"


def test_rule_not_yet_expired() -> None:
    d = decide([rule({"*": "u"}, ruleExpires="2030-01-01T00:00:00.123456789Z")], "a")
    assert d.action == "accept"


@pytest.mark.parametrize("bad", [
    [], "x", {"rules": "x"}, {"rules": [1]}, {"rules": [{"sshUsers": []}]},
    {"rules": [{"action": {"sessionDuration": "1h"}}]},
    {"rules": [{"ruleExpires": "yesterday"}]}, {"rules": [{"ruleExpires": "2030-01-01T00:00"}]},
    {"rules": [{"principals": [{"nodeIP": 1}]}]},
])
def test_malformed(bad: Any) -> None:
    with pytest.raises(PolicyError):
        parse_compiled_policy(bad)


def test_none_is_no_policy() -> None:
    assert parse_compiled_policy(None).rules == ()
