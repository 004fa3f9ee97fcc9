"""Evaluation cases restated from Tailscale's documentation and Headscale's captures.

Each group of cases cites where its facts come from. The Headscale captures
(juanfont/headscale, hscontrol/policy/v2/testdata/ssh_results/<id>.hujson) record the SSH rules
Tailscale's control plane compiled for each node; a case here says what tailscaled on the
destination node decides from those rules for one source node and requested login.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.policy.conftest import NODES, make_policy
from tssh.policy import evaluate
from tssh.policy.model import REJECT_MESSAGE, UNKNOWN_PEER_MESSAGE
from tssh.policy.selectors import parse_selector, src_matches

SELF_MEMBER = {"src": ["autogroup:member"], "dst": ["autogroup:self"]}
MEMBER_TO_SERVER = {"src": ["autogroup:member"], "dst": ["tag:server"]}
THOR_TO_SERVER = {"src": ["thor@example.org"], "dst": ["tag:server"]}


def accept(users: list[str], base: dict[str, Any] = MEMBER_TO_SERVER, **kw: Any) -> dict[str, Any]:
    return {"action": "accept", **base, "users": users, **kw}


def check(users: list[str], base: dict[str, Any] = MEMBER_TO_SERVER, **kw: Any) -> dict[str, Any]:
    return {"action": "check", **base, "users": users, **kw}


@dataclass(frozen=True)
class Case:
    id: str
    ssh: Any
    src: str
    dst: str
    login: str
    action: str
    local_user: str | None = None
    rule: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    sections: dict[str, Any] = field(default_factory=dict)


CASES: list[Case] = [
    # headscale ssh_results/ssh-a1: autogroup:member -> autogroup:self as root. Each user's
    # node gets a rule whose only principal is that same user's node.
    Case("a1-own-node-root", [accept(["root"], SELF_MEMBER)], "bulbasaur", "bulbasaur", "root",
         "accept", "root", 0),
    Case("a1-other-users-node", [accept(["root"], SELF_MEMBER)], "bulbasaur", "ivysaur", "root",
         "reject"),
    Case("a1-thor-own-node", [accept(["root"], SELF_MEMBER)], "ivysaur", "ivysaur", "root",
         "accept", "root", 0),
    Case("a1-login-not-listed", [accept(["root"], SELF_MEMBER)], "bulbasaur", "bulbasaur", "odin",
         "reject"),
    Case("a1-self-on-tagged-node", [accept(["root"], SELF_MEMBER)], "bulbasaur", "beedrill",
         "root", "reject"),
    # ssh-a2: autogroup:nonroot compiles to {"*": "=", "root": ""}.
    Case("a2-nonroot-own-name", [accept(["autogroup:nonroot"], SELF_MEMBER)], "bulbasaur",
         "bulbasaur", "odin", "accept", "odin", 0),
    Case("a2-nonroot-any-name", [accept(["autogroup:nonroot"], SELF_MEMBER)], "ivysaur",
         "ivysaur", "ubuntu", "accept", "ubuntu", 0),
    Case("a2-nonroot-not-root", [accept(["autogroup:nonroot"], SELF_MEMBER)], "bulbasaur",
         "bulbasaur", "root", "reject"),
    # ssh-a3: root listed next to autogroup:nonroot: {"*": "=", "root": "root"}.
    Case("a3-root-listed", [accept(["root", "autogroup:nonroot"], SELF_MEMBER)], "venusaur",
         "venusaur", "root", "accept", "root", 0),
    Case("a3-nonroot", [accept(["root", "autogroup:nonroot"], SELF_MEMBER)], "venusaur",
         "venusaur", "freya", "accept", "freya", 0),
    # ssh-a4 / ssh-a5: literal users on a tagged destination.
    Case("a4-literal", [accept(["ubuntu"])], "bulbasaur", "beedrill", "ubuntu", "accept",
         "ubuntu", 0),
    Case("a4-root-not-listed", [accept(["ubuntu"])], "bulbasaur", "beedrill", "root", "reject"),
    Case("a4-tagged-src-not-member", [accept(["ubuntu"])], "kakuna", "beedrill", "ubuntu",
         "reject"),
    Case("a4-other-tagged-dst", [accept(["ubuntu"])], "bulbasaur", "kakuna", "ubuntu", "reject"),
    Case("a5-root", [accept(["root", "ubuntu"])], "venusaur", "beedrill", "root", "accept",
         "root", 0),
    Case("a5-unlisted", [accept(["root", "ubuntu"])], "venusaur", "beedrill", "admin",
         "reject"),
    # ssh-a6 / a7 / a8 / ssh-checkperiod-null: check rules and their period.
    Case("a6-check-default-period", [check(["root"], SELF_MEMBER)], "bulbasaur", "bulbasaur",
         "root", "check", "root", 0, {"check_period": "12h"}),
    Case("a7-check-1h", [check(["root"], SELF_MEMBER, checkPeriod="1h")], "bulbasaur",
         "bulbasaur", "root", "check", "root", 0, {"check_period": "1h"}),
    Case("a8-check-always", [check(["root"], SELF_MEMBER, checkPeriod="always")], "ivysaur",
         "ivysaur", "root", "check", "root", 0, {"check_period": "always"}),
    Case("checkperiod-null", [check(["root"], THOR_TO_SERVER, checkPeriod=None)], "ivysaur",
         "beedrill", "root", "check", "root", 0, {"check_period": "12h"}),
    # ssh-b1: a single user as source.
    Case("b1-user-src", [accept(["root"], THOR_TO_SERVER)], "ivysaur", "beedrill", "root",
         "accept", "root", 0),
    Case("b1-other-user", [accept(["root"], THOR_TO_SERVER)], "bulbasaur", "beedrill", "root",
         "reject"),
    # ssh-b2: group:developers = thor + odin.
    Case("b2-group-odin", [accept(["root"], {"src": ["group:developers"], "dst": ["tag:server"]})],
         "bulbasaur", "beedrill", "root", "accept", "root", 0),
    Case("b2-group-thor", [accept(["root"], {"src": ["group:developers"], "dst": ["tag:server"]})],
         "ivysaur", "beedrill", "root", "accept", "root", 0),
    Case("b2-not-in-group",
         [accept(["root"], {"src": ["group:developers"], "dst": ["tag:server"]})],
         "venusaur", "beedrill", "root", "reject"),
    # ssh-b3: a tag as source.
    Case("b3-tag-src", [accept(["root"], {"src": ["tag:prod"], "dst": ["tag:server"]})],
         "kakuna", "beedrill", "root", "accept", "root", 0),
    Case("b3-user-not-tag", [accept(["root"], {"src": ["tag:prod"], "dst": ["tag:server"]})],
         "bulbasaur", "beedrill", "root", "reject"),
    # ssh-b5: user:*@example.com matches odin and freya, not thor@example.org.
    Case("b5-domain-odin",
         [accept(["root"], {"src": ["user:*@example.com"], "dst": ["tag:server"]})],
         "bulbasaur", "beedrill", "root", "accept", "root", 0),
    Case("b5-domain-freya",
         [accept(["root"], {"src": ["user:*@example.com"], "dst": ["tag:server"]})],
         "venusaur", "beedrill", "root", "accept", "root", 0),
    Case("b5-other-domain",
         [accept(["root"], {"src": ["user:*@example.com"], "dst": ["tag:server"]})],
         "ivysaur", "beedrill", "root", "reject"),
    # ssh-b6 / ssh-src-autogroup-tagged-no-tagged-nodes: every tagged node, the destination
    # itself included, and no user-owned node.
    Case("b6-tagged-src",
         [accept(["root"], {"src": ["autogroup:tagged"], "dst": ["tag:server"]})],
         "weedle", "beedrill", "root", "accept", "root", 0),
    Case("b6-tagged-src-itself",
         [accept(["root"], {"src": ["autogroup:tagged"], "dst": ["tag:server"]})],
         "beedrill", "beedrill", "root", "accept", "root", 0),
    Case("b6-user-not-tagged",
         [accept(["root"], {"src": ["autogroup:tagged"], "dst": ["tag:server"]})],
         "bulbasaur", "beedrill", "root", "reject"),
    # ssh-c3: a user destination with exactly that user as source.
    Case("c3-user-dst",
         [accept(["root"], {"src": ["thor@example.org"], "dst": ["thor@example.org"]})],
         "ivysaur", "ivysaur", "root", "accept", "root", 0),
    Case("c3-user-dst-other-node",
         [accept(["root"], {"src": ["thor@example.org"], "dst": ["thor@example.org"]})],
         "ivysaur", "bulbasaur", "root", "reject"),
    # ssh-c4 / ssh-many-tags-as-dst: several tags as destinations.
    Case("c4-second-tag",
         [accept(["root"], {"src": ["autogroup:member"], "dst": ["tag:server", "tag:prod"]})],
         "bulbasaur", "kakuna", "root", "accept", "root", 0),
    Case("c4-untargeted-tag",
         [accept(["root"], {"src": ["autogroup:member"], "dst": ["tag:server", "tag:prod"]})],
         "bulbasaur", "blastoise", "root", "reject"),
    # ssh-d2: localpart:*@example.com compiles to one rule per source user of that domain,
    # mapping that user's local part to itself ({"odin": "odin"}), and root to nothing.
    Case("d2-localpart-odin", [accept(["localpart:*@example.com"])], "bulbasaur", "beedrill",
         "odin", "accept", "odin", 0),
    Case("d2-localpart-freya", [accept(["localpart:*@example.com"])], "venusaur", "beedrill",
         "freya", "accept", "freya", 0),
    Case("d2-localpart-not-other-name", [accept(["localpart:*@example.com"])], "venusaur",
         "beedrill", "odin", "reject"),
    Case("d2-localpart-not-root", [accept(["localpart:*@example.com"])], "bulbasaur",
         "beedrill", "root", "reject"),
    Case("d2-localpart-other-domain", [accept(["localpart:*@example.com"])], "ivysaur",
         "beedrill", "thor", "reject"),
    # ssh-d3 / d4 / d5: localpart next to root and autogroup:nonroot.
    Case("d3-localpart-and-root-root", [accept(["localpart:*@example.com", "root"])], "ivysaur",
         "beedrill", "root", "accept", "root", 0),
    Case("d3-localpart-and-root-odin", [accept(["localpart:*@example.com", "root"])],
         "bulbasaur", "beedrill", "odin", "accept", "odin", 0),
    Case("d4-localpart-and-nonroot-thor",
         [accept(["localpart:*@example.com", "autogroup:nonroot"])], "ivysaur", "beedrill",
         "thor", "accept", "thor", 0),
    Case("d4-localpart-and-nonroot-root",
         [accept(["localpart:*@example.com", "autogroup:nonroot"])], "bulbasaur", "beedrill",
         "root", "reject"),
    Case("d5-all-three-root",
         [accept(["localpart:*@example.com", "root", "autogroup:nonroot"])], "venusaur",
         "beedrill", "root", "accept", "root", 0),
    # ssh-d8: localpart with autogroup:self.
    Case("d8-self-localpart", [accept(["localpart:*@example.com"], SELF_MEMBER)], "bulbasaur",
         "bulbasaur", "odin", "accept", "odin", 0),
    # ssh-d10: user:*@domain source with localpart users.
    Case("d10-domain-and-localpart",
         [accept(["localpart:*@example.com"],
                 {"src": ["user:*@example.com"], "dst": ["tag:server"]})],
         "venusaur", "beedrill", "freya", "accept", "freya", 0),
    # ssh-dst-empty-tag: a defined tag no node carries.
    Case("dst-empty-tag",
         [accept(["root"], {"src": ["thor@example.org"], "dst": ["tag:unused"]})], "ivysaur",
         "beedrill", "root", "reject",
         sections={"tagOwners": {"tag:server": [], "tag:unused": ["odin@example.com"]}}),
    # ssh-dst-trailing-whitespace / ssh-src-leading-whitespace: selectors are trimmed.
    Case("dst-trailing-space",
         [accept(["root"], {"src": ["thor@example.org"], "dst": ["tag:server "]})], "ivysaur",
         "beedrill", "root", "accept", "root", 0),
    Case("src-leading-space",
         [accept(["root"], {"src": [" odin@example.com"], "dst": ["tag:server"]})], "bulbasaur",
         "beedrill", "root", "accept", "root", 0),
    # ssh-e3 / ssh-e4: an empty or null ssh section compiles to no rules.
    Case("e3-empty-ssh", [], "bulbasaur", "beedrill", "root", "reject"),
    Case("e4-null-ssh", None, "bulbasaur", "beedrill", "root", "reject"),
    Case("no-ssh-section", ..., "bulbasaur", "beedrill", "root", "reject"),
    # ssh-e5: localpart for a tagged source maps nothing.
    Case("e5-tag-src-localpart",
         [accept(["localpart:*@example.com"], {"src": ["tag:prod"], "dst": ["tag:server"]})],
         "kakuna", "beedrill", "kakuna", "reject"),
    # ssh-e6: check with localpart.
    Case("e6-check-localpart", [check(["localpart:*@example.com"], checkPeriod="1h")],
         "bulbasaur", "beedrill", "odin", "check", "odin", 0, {"check_period": "1h"}),
    # ssh-f1: two rules; each destination only sees the rules whose dst names it.
    Case("f1-self-rule",
         [accept(["root"], SELF_MEMBER), accept(["autogroup:nonroot"])], "bulbasaur",
         "bulbasaur", "root", "accept", "root", 0),
    Case("f1-server-nonroot",
         [accept(["root"], SELF_MEMBER), accept(["autogroup:nonroot"])], "bulbasaur",
         "beedrill", "odin", "accept", "odin", 1),
    Case("f1-server-no-root",
         [accept(["root"], SELF_MEMBER), accept(["autogroup:nonroot"])], "bulbasaur",
         "beedrill", "root", "reject"),
    # ssh-f2 / ssh-multi-rule-accept-then-check / check-then-accept: the check rule is
    # compiled first whatever the file order.
    Case("f2-check-before-accept", [accept(["root"]), check(["root"])], "bulbasaur",
         "beedrill", "root", "check", "root", 1, {"check_period": "12h"}),
    Case("accept-then-check",
         [accept(["root"], THOR_TO_SERVER), check(["root"], THOR_TO_SERVER, checkPeriod="1h")],
         "ivysaur", "beedrill", "root", "check", "root", 1, {"check_period": "1h"}),
    Case("check-then-accept",
         [check(["root"], THOR_TO_SERVER, checkPeriod="1h"), accept(["root"], THOR_TO_SERVER)],
         "ivysaur", "beedrill", "root", "check", "root", 0),
    Case("check-user-mismatch-falls-to-accept",
         [accept(["ubuntu"], THOR_TO_SERVER), check(["root"], THOR_TO_SERVER)],
         "ivysaur", "beedrill", "ubuntu", "accept", "ubuntu", 0),
    # ssh-f3 / f4: localpart rule first, then a second rule for other logins.
    Case("f3-second-rule-root", [accept(["localpart:*@example.com"]), accept(["root"])],
         "bulbasaur", "beedrill", "root", "accept", "root", 1),
    Case("f3-first-rule-odin", [accept(["localpart:*@example.com"]), accept(["root"])],
         "bulbasaur", "beedrill", "odin", "accept", "odin", 0),
    Case("f4-nonroot-fallback",
         [accept(["localpart:*@example.com"]), accept(["autogroup:nonroot"])], "ivysaur",
         "beedrill", "thor", "accept", "thor", 1),
    # ssh-g1 / g2 / ssh-multi-rule-overlap-conflicting-acceptenv: acceptEnv travels with the
    # first matching rule.
    Case("g1-accept-env", [accept(["root"], acceptEnv=["GIT_EDITOR", "TERM"])], "bulbasaur",
         "beedrill", "root", "accept", "root", 0, {"accept_env": ("GIT_EDITOR", "TERM")}),
    Case("g2-accept-env-globs", [accept(["root"], acceptEnv=["GIT_*", "CUSTOM_VAR_?"])],
         "venusaur", "beedrill", "root", "accept", "root", 0,
         {"accept_env": ("GIT_*", "CUSTOM_VAR_?")}),
    Case("overlap-acceptenv-first-wins",
         [accept(["root"], THOR_TO_SERVER, acceptEnv=["TERM"]),
          accept(["root"], THOR_TO_SERVER, acceptEnv=["LC_*"])],
         "ivysaur", "beedrill", "root", "accept", "root", 0, {"accept_env": ("TERM",)}),
    # ssh-malformed-action-whitespace: " accept" is accepted.
    Case("action-whitespace", [{**accept(["root"]), "action": " accept"}], "bulbasaur",
         "beedrill", "root", "accept", "root", 0),
    # ssh-malformed-checkperiod-zero / -too-short / -exact-max: accepted as written.
    Case("checkperiod-zero", [check(["root"], checkPeriod="0s")], "bulbasaur", "beedrill",
         "root", "check", "root", 0, {"check_period": "0s"}),
    Case("checkperiod-30s", [check(["root"], checkPeriod="30s")], "bulbasaur", "beedrill",
         "root", "check", "root", 0, {"check_period": "30s"}),
    Case("checkperiod-max", [check(["root"], checkPeriod="168h")], "bulbasaur", "beedrill",
         "root", "check", "root", 0, {"check_period": "168h"}),
    # ssh-malformed-dst-empty / -dst-missing / -src-empty / -src-missing: compile to nothing.
    Case("dst-empty", [{"action": "accept", "src": ["autogroup:member"], "dst": [],
                        "users": ["root"]}], "bulbasaur", "beedrill", "root", "reject"),
    Case("dst-missing", [{"action": "accept", "src": ["autogroup:member"], "users": ["root"]}],
         "bulbasaur", "beedrill", "root", "reject"),
    Case("src-empty", [{"action": "accept", "src": [], "dst": ["tag:server"], "users": ["root"]}],
         "bulbasaur", "beedrill", "root", "reject"),
    Case("src-missing", [{"action": "accept", "dst": ["tag:server"], "users": ["root"]}],
         "bulbasaur", "beedrill", "root", "reject"),
    # ssh-malformed-user-*: anything that is not "", "*", autogroup:nonroot or
    # localpart:*@domain is a literal local user name.
    Case("user-autogroup-member-literal", [accept(["autogroup:member"])], "bulbasaur",
         "beedrill", "autogroup:member", "accept", "autogroup:member", 0),
    Case("user-autogroup-member-not-a-group", [accept(["autogroup:member"])], "bulbasaur",
         "beedrill", "odin", "reject"),
    Case("user-group-literal", [accept(["group:admins"])], "bulbasaur", "beedrill", "odin",
         "reject"),
    Case("user-localpart-no-glob-literal", [accept(["localpart:foo@example.com"])], "bulbasaur",
         "beedrill", "localpart:foo@example.com", "accept", "localpart:foo@example.com", 0),
    Case("user-localpart-no-glob-not-foo", [accept(["localpart:foo@example.com"])], "bulbasaur",
         "beedrill", "foo", "reject"),
    Case("user-leading-space", [accept([" root"])], "bulbasaur", "beedrill", "root", "accept",
         "root", 0),
    Case("user-tab", [accept(["\troot"], THOR_TO_SERVER)], "ivysaur", "beedrill", "root",
         "accept", "root", 0),
    Case("user-emoji", [accept(["\U0001f680"], THOR_TO_SERVER)], "ivysaur", "beedrill",
         "\U0001f680", "accept", "\U0001f680", 0),
    # ssh-multi-rule-disjoint-srcs / -overlap-different-users / multi-src-multi-dst.
    Case("disjoint-second-src",
         [accept(["root"], THOR_TO_SERVER),
          accept(["root"], {"src": ["freya@example.com"], "dst": ["tag:server"]})],
         "venusaur", "beedrill", "root", "accept", "root", 1),
    Case("overlap-users-second-rule",
         [accept(["root"], THOR_TO_SERVER), accept(["ubuntu"], THOR_TO_SERVER)],
         "ivysaur", "beedrill", "ubuntu", "accept", "ubuntu", 1),
    Case("multi-src-multi-dst",
         [accept(["root", "ubuntu"], {"src": ["thor@example.org", "odin@example.com"],
                                      "dst": ["tag:server", "tag:prod"]})],
         "bulbasaur", "kakuna", "ubuntu", "accept", "ubuntu", 0),
    Case("multi-src-multi-dst-outsider",
         [accept(["root", "ubuntu"], {"src": ["thor@example.org", "odin@example.com"],
                                      "dst": ["tag:server", "tag:prod"]})],
         "venusaur", "kakuna", "ubuntu", "reject"),
    # ssh-src-empty-group: a group without members matches nobody.
    Case("src-empty-group",
         [accept(["root"], {"src": ["group:empty"], "dst": ["tag:server"]})], "bulbasaur",
         "beedrill", "root", "reject"),
    # Tailscale docs (kb/1193 Tailscale SSH; kb/1337 policy syntax "ssh"): the default policy
    # lets members reach their own devices, root only after a check.
    Case("docs-default-own-device-nonroot",
         [check(["autogroup:nonroot", "root"], SELF_MEMBER)], "bulbasaur", "bulbasaur", "odin",
         "check", "odin", 0),
    Case("docs-default-other-device",
         [check(["autogroup:nonroot", "root"], SELF_MEMBER)], "bulbasaur", "venusaur", "odin",
         "reject"),
    Case("docs-default-tagged-src",
         [check(["autogroup:nonroot", "root"], SELF_MEMBER)], "weedle", "bulbasaur", "root",
         "reject"),
    # docs: autogroup:member -> autogroup:member (any member to any member-owned device).
    Case("docs-member-to-member",
         [accept(["autogroup:nonroot"], {"src": ["autogroup:member"],
                                         "dst": ["autogroup:member"]})],
         "ivysaur", "venusaur", "thor", "accept", "thor", 0),
    Case("docs-member-to-member-not-tagged-dst",
         [accept(["autogroup:nonroot"], {"src": ["autogroup:member"],
                                         "dst": ["autogroup:member"]})],
         "ivysaur", "beedrill", "thor", "reject"),
    # docs: tags reach tagged devices (autogroup:tagged destination).
    Case("docs-tag-to-tagged",
         [accept(["deploy"], {"src": ["tag:prod"], "dst": ["autogroup:tagged"]})], "kakuna",
         "blastoise", "deploy", "accept", "deploy", 0),
    # docs: recorder and enforceRecorder (kb/1246 session recording) travel with the rule.
    Case("docs-recorder",
         [accept(["root"], recorder=["tag:prod"], enforceRecorder=True)], "bulbasaur",
         "beedrill", "root", "accept", "root", 0,
         {"recorders": ("tag:prod",), "enforce_recorder": True}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_evaluation(case: Case) -> None:
    policy = make_policy(case.ssh, **case.sections)
    d = evaluate(policy, NODES[case.src], NODES[case.dst], case.login)
    assert d.action == case.action, d
    assert d.local_user == case.local_user
    if case.action == "reject":
        assert d.rule is None
        assert d.message is not None and d.message.startswith(
            "tailnet policy does not permit you to SSH")
    else:
        assert d.rule == case.rule
        assert d.message is None
    for name, value in case.extra.items():
        assert getattr(d, name) == value, name


def test_case_count() -> None:
    assert len(CASES) >= 60


def test_unknown_peer_rejected_even_when_everything_is_allowed() -> None:
    policy = make_policy([accept(["root", "autogroup:nonroot"],
                                 {"src": ["autogroup:member", "autogroup:tagged"],
                                  "dst": ["autogroup:tagged"]})])
    d = evaluate(policy, None, NODES["beedrill"], "root")
    assert (d.action, d.local_user, d.rule) == ("reject", None, None)
    assert d.message == UNKNOWN_PEER_MESSAGE


def test_reject_messages_follow_tailscale() -> None:
    policy = make_policy([accept(["ubuntu"])])
    # No rule covers this source: the generic message.
    d = evaluate(policy, NODES["kakuna"], NODES["beedrill"], "ubuntu")
    assert d.message == REJECT_MESSAGE
    # A rule covers the source but not the login: tailscaled names the login.
    d = evaluate(policy, NODES["bulbasaur"], NODES["beedrill"], "root")
    assert d.message == 'tailnet policy does not permit you to SSH as user "root"'


def test_nonroot_consults_uid_zero_callback() -> None:
    policy = make_policy([accept(["autogroup:nonroot"])])
    uid0 = {"root", "toor"}
    d = evaluate(policy, NODES["bulbasaur"], NODES["beedrill"], "toor",
                 is_root_account=uid0.__contains__)
    assert d.action == "reject"
    d = evaluate(policy, NODES["bulbasaur"], NODES["beedrill"], "odin",
                 is_root_account=uid0.__contains__)
    assert (d.action, d.local_user) == ("accept", "odin")


def test_listed_name_is_allowed_even_if_uid_zero() -> None:
    # An explicit entry is the administrator's choice (tailscaled maps it without a lookup).
    policy = make_policy([accept(["toor"])])
    d = evaluate(policy, NODES["bulbasaur"], NODES["beedrill"], "toor",
                 is_root_account=lambda u: u in ("root", "toor"))
    assert (d.action, d.local_user) == ("accept", "toor")


def test_localpart_never_maps_to_root() -> None:
    # tssh tightening: a tailnet user root@example.com does not become local root.
    policy = make_policy([accept(["localpart:*@example.com"])])
    root_user = NODES["bulbasaur"].__class__("rootbox", "nRB", ("100.64.9.9",),
                                            user="root@example.com")
    d = evaluate(policy, root_user, NODES["beedrill"], "root")
    assert d.action == "reject"


def test_empty_login_never_matches() -> None:
    policy = make_policy([accept(["autogroup:nonroot"])])
    assert evaluate(policy, NODES["bulbasaur"], NODES["beedrill"], "").action == "reject"


def test_tagged_source_never_reaches_user_owned_node() -> None:
    # Validation refuses tag -> user destinations; evaluation refuses them too, so a node that
    # is both tagged and user-claimed in a netmap cannot slip through autogroup:member.
    policy = make_policy([accept(["root"], {"src": ["autogroup:member"],
                                            "dst": ["autogroup:member"]})])
    tagged_with_user = NODES["kakuna"].__class__("odd", "nODD", ("100.64.1.1",),
                                                 user="odin@example.com", tags=("tag:prod",))
    d = evaluate(policy, tagged_with_user, NODES["bulbasaur"], "root")
    assert d.action == "reject"


@pytest.mark.parametrize(("text", "peer", "matches"), [
    ("odin@example.com", "bulbasaur", True),
    ("odin@example.com", "ivysaur", False),
    ("group:developers", "ivysaur", True),
    ("group:developers", "venusaur", False),
    ("group:missing", "venusaur", False),
    (" tag:prod", "kakuna", True),
    ("tag:prod", "beedrill", False),
    ("autogroup:member", "venusaur", True),
    ("autogroup:member", "kakuna", False),
    ("autogroup:tagged", "kakuna", True),
    ("user:*@example.com", "venusaur", True),
    ("*@EXAMPLE.org", "ivysaur", True),
])
def test_config_selectors(text: str, peer: str, matches: bool) -> None:
    policy = make_policy([])
    assert src_matches(parse_selector(text), NODES[peer], policy.groups) is matches


@pytest.mark.parametrize("text", ["", "*", "tag:", "tag:1x", "group:", "autogroup:self",
                                  "alice", "@example.com", "user:*@", "10.0.0.1"])
def test_config_selector_refusals(text: str) -> None:
    with pytest.raises(ValueError):
        parse_selector(text)


def test_check_period_seconds() -> None:
    policy = make_policy([check(["root"], checkPeriod="1h30m"), check(["a"], checkPeriod="always"),
                          check(["b"]), accept(["c"])])
    src, dst = NODES["bulbasaur"], NODES["beedrill"]
    assert evaluate(policy, src, dst, "root").check_period_seconds == 5400
    assert evaluate(policy, src, dst, "a").check_period_seconds is None
    assert evaluate(policy, src, dst, "b").check_period_seconds == 12 * 3600
    accepted = evaluate(policy, src, dst, "c")
    assert accepted.check_period_seconds is None and accepted.allowed
    assert not evaluate(policy, src, dst, "z").allowed
