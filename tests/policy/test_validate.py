"""What a policy file may say: refusals (each names the rule and field, with file:line:col)
and the files Tailscale accepts, which must load.

Refusals restate Headscale's captures of Tailscale's answers (juanfont/headscale,
hscontrol/policy/v2/testdata/ssh_results/ssh-malformed-*.hujson, ssh-group-nested-*,
ssh-hosts-as-dst-*, ssh-unicode-cyrillic-tag, ssh-users-null) and its validation rules
(hscontrol/policy/v2/types.go: SSH source/destination combinations).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.policy.conftest import GROUPS, TAG_OWNERS, make_policy, policy_text
from tssh.errors import PolicyError
from tssh.policy import parse_policy

RULE = {"action": "accept", "src": ["autogroup:member"], "dst": ["tag:server"],
        "users": ["root"]}


def rule(**changes: Any) -> dict[str, Any]:
    out = dict(RULE)
    for key, value in changes.items():
        if value is ...:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def refusal(ssh: Any, **sections: Any) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        make_policy(ssh, **sections)
    return info.value


REFUSALS: list[tuple[str, Any, dict[str, Any], str, str]] = [
    # (id, ssh section, other sections, expected path, expected message fragment)
    ("action-missing", [rule(action=...)], {}, "ssh[0].action", "action must be specified"),
    ("action-empty", [rule(action="")], {}, "ssh[0].action", "action must be specified"),
    ("action-deny", [rule(action="deny")], {}, "ssh[0].action", "'deny' is not a valid action"),
    ("action-mixedcase", [rule(action="Accept")], {}, "ssh[0].action",
     "'Accept' is not a valid action"),
    ("action-uppercase", [rule(action="ACCEPT")], {}, "ssh[0].action", "not a valid action"),
    ("action-not-string", [rule(action=1)], {}, "ssh[0].action", "must be a string"),
    ("users-missing", [rule(users=...)], {}, "ssh[0].users", "users must be specified"),
    ("users-null", [rule(users=None)], {}, "ssh[0].users", "users must be specified"),
    ("users-empty", [rule(users=[])], {}, "ssh[0].users", "users must be specified"),
    ("user-empty", [rule(users=[""])], {}, "ssh[0].users[0]", 'user "" is not valid'),
    ("user-blank", [rule(users=["  "])], {}, "ssh[0].users[0]", 'user "" is not valid'),
    ("user-wildcard", [rule(users=["*"])], {}, "ssh[0].users[0]", 'user "*" is not valid'),
    ("users-mixed-valid-empty", [rule(users=["root", ""])], {}, "ssh[0].users[1]",
     "is not valid"),
    ("users-mixed-valid-wildcard", [rule(users=["root", "*"])], {}, "ssh[0].users[1]",
     'user "*" is not valid'),
    ("users-not-list", [rule(users="root")], {}, "ssh[0].users", "must be a list of strings"),
    ("user-not-string", [rule(users=["root", 0])], {}, "ssh[0].users[1]", "must be strings"),
    ("localpart-multi-glob", [rule(users=["localpart:*@*"])], {}, "ssh[0].users[0]",
     "localpart"),
    ("acceptenv-empty", [rule(acceptEnv=[""])], {}, "ssh[0].acceptEnv[0]",
     "acceptEnv values cannot be empty"),
    ("acceptenv-not-list", [rule(acceptEnv="TERM")], {}, "ssh[0].acceptEnv",
     "must be a list"),
    ("checkperiod-malformed", [rule(action="check", checkPeriod="abc")], {},
     "ssh[0].checkPeriod", 'invalid duration'),
    ("checkperiod-no-unit", [rule(action="check", checkPeriod="12")], {}, "ssh[0].checkPeriod",
     "missing unit"),
    ("checkperiod-negative", [rule(action="check", checkPeriod="-1m")], {},
     "ssh[0].checkPeriod", "checkPeriod -1m0s must be a positive duration"),
    ("checkperiod-over-by-1s", [rule(action="check", checkPeriod="168h0m1s")], {},
     "ssh[0].checkPeriod", "checkPeriod 168h0m1s is above the max (168h)"),
    ("checkperiod-too-long", [rule(action="check", checkPeriod="200h")], {},
     "ssh[0].checkPeriod", "checkPeriod 200h0m0s is above the max (168h)"),
    ("checkperiod-number", [rule(action="check", checkPeriod=3600)], {}, "ssh[0].checkPeriod",
     "must be a string"),
    ("src-wildcard", [rule(src=["*"])], {}, "ssh[0].src[0]", "'*' is not allowed"),
    ("src-ip", [rule(src=["100.64.0.1"])], {}, "ssh[0].src[0]", "IP addresses are not allowed"),
    ("src-cidr", [rule(src=["100.64.0.0/10"])], {}, "ssh[0].src[0]", "IP addresses"),
    ("src-host", [rule(src=["srv"])], {"hosts": {"srv": "100.64.0.16"}}, "ssh[0].src[0]",
     "hosts are not allowed"),
    ("src-autogroup-self", [rule(src=["autogroup:self"])], {}, "ssh[0].src[0]",
     "not allowed as an ssh source"),
    ("src-autogroup-internet", [rule(src=["autogroup:internet"])], {}, "ssh[0].src[0]",
     "not allowed as an ssh source"),
    ("src-unknown-group", [rule(src=["group:nope"])], {}, "ssh[0].src[0]",
     "group 'group:nope' is not defined"),
    ("src-unknown-tag", [rule(src=["tag:nope"])], {}, "ssh[0].src[0]",
     "tag 'tag:nope' is not defined in tagOwners"),
    ("src-bare-word", [rule(src=["alice"])], {}, "ssh[0].src[0]", "invalid ssh source"),
    ("src-bad-domain", [rule(src=["user:*@*"])], {}, "ssh[0].src[0]", "domain wildcard"),
    ("src-not-list", [rule(src="autogroup:member")], {}, "ssh[0].src", "must be a list"),
    ("dst-wildcard", [rule(dst=["*"])], {}, "ssh[0].dst[0]", "'*' is not allowed"),
    ("dst-host-single-ip", [rule(src=["thor@example.org"], dst=["srv"])],
     {"hosts": {"srv": "100.64.0.16"}}, "ssh[0].dst[0]", "invalid dst 'srv'"),
    ("dst-host-prefix", [rule(src=["thor@example.org"], dst=["netblock"])],
     {"hosts": {"netblock": "10.0.0.0/8"}}, "ssh[0].dst[0]", "invalid dst 'netblock'"),
    ("dst-ip", [rule(dst=["100.64.0.16"])], {}, "ssh[0].dst[0]", "IP addresses"),
    ("dst-group", [rule(dst=["group:admins"])], {}, "ssh[0].dst[0]", "groups are not allowed"),
    ("dst-autogroup-nonroot", [rule(dst=["autogroup:nonroot"])], {}, "ssh[0].dst[0]",
     "not allowed as an ssh destination"),
    ("dst-unknown-tag", [rule(dst=["tag:nope"])], {}, "ssh[0].dst[0]",
     "tag 'tag:nope' is not defined"),
    ("dst-user-other-src", [rule(src=["odin@example.com"], dst=["thor@example.org"])], {},
     "ssh[0].dst[0]", "requires the source to be exactly that user"),
    ("dst-user-group-src", [rule(src=["group:admins"], dst=["odin@example.com"])], {},
     "ssh[0].dst[0]", "requires the source to be exactly that user"),
    ("dst-user-tag-src", [rule(src=["tag:prod"], dst=["odin@example.com"])], {},
     "ssh[0].dst[0]", "tags in an ssh source cannot reach user-owned devices"),
    ("dst-self-tag-src", [rule(src=["tag:prod"], dst=["autogroup:self"])], {},
     "ssh[0].dst[0]", "autogroup:self requires"),
    ("dst-self-tagged-src", [rule(src=["autogroup:tagged"], dst=["autogroup:self"])], {},
     "ssh[0].dst[0]", "autogroup:self requires"),
    ("dst-member-tag-src", [rule(src=["tag:prod"], dst=["autogroup:member"])], {},
     "ssh[0].dst[0]", "cannot reach autogroup:member"),
    ("unknown-rule-field", [rule(proto="tcp")], {}, "ssh[0].proto", "unknown field 'proto'"),
    ("rule-not-object", ["accept"], {}, "ssh[0]", "must be an object"),
    ("ssh-not-list", {"action": "accept"}, {}, "ssh", "must be a list"),
    ("recorder-unknown-tag", [rule(recorder=["tag:nope"])], {}, "ssh[0].recorder[0]",
     "not defined in tagOwners"),
    ("recorder-bad", [rule(recorder=["recorder.example.com"])], {}, "ssh[0].recorder[0]",
     "invalid recorder"),
    ("enforce-recorder-string", [rule(enforceRecorder="yes")], {}, "ssh[0].enforceRecorder",
     "must be true or false"),
    ("second-rule-named", [rule(), rule(users=["*"])], {}, "ssh[1].users[0]", "not valid"),
    # Sections other than ssh.
    ("group-nested-two-deep", [], {"groups": {"group:inner": ["thor@example.org"],
                                              "group:outer": ["group:inner"]}},
     "groups.group:outer[0]", "group members cannot be recursive"),
    ("group-nested-cycle", [], {"groups": {"group:a": ["group:b"], "group:b": ["group:a"]}},
     "groups.group:a[0]", "cannot be recursive"),
    ("group-bad-name", [], {"groups": {"admins": ["odin@example.com"]}}, "groups.admins",
     "must look like group:<name>"),
    ("group-tag-member", [], {"groups": {"group:x": ["tag:prod"]}}, "groups.group:x[0]",
     "not a valid group member"),
    ("tag-cyrillic", [], {"tagOwners": {"tag:\u0441\u0435\u0440\u0432\u0435\u0440": []}},
     "tagOwners.tag:\u0441\u0435\u0440\u0432\u0435\u0440", "must start with an ASCII letter"),
    ("tag-digit", [], {"tagOwners": {"tag:1prod": []}}, "tagOwners.tag:1prod",
     "must start with an ASCII letter"),
    ("tag-empty", [], {"tagOwners": {"tag:": []}}, "tagOwners.tag:", "invalid tag"),
    ("tag-owner-unknown-group", [], {"tagOwners": {"tag:x": ["group:nope"]}},
     "tagOwners.tag:x[0]", "not defined in groups"),
    ("tag-owner-unknown-tag", [], {"tagOwners": {"tag:x": ["tag:nope"]}}, "tagOwners.tag:x[0]",
     "not defined in tagOwners"),
    ("host-bad-address", [], {"hosts": {"srv": "not-an-ip"}}, "hosts.srv",
     "is not an IP address"),
    ("acl-bad-action", [], {"acls": [{"action": "deny", "src": ["*"], "dst": ["*:*"]}]},
     "acls[0].action", "not a valid action"),
    ("acl-unknown-tag", [], {"acls": [{"action": "accept", "src": ["*"],
                                       "dst": ["tag:nope:22"]}]},
     "acls[0].dst[0]", "tag 'tag:nope' is not defined"),
    ("acl-unknown-group", [], {"acls": [{"action": "accept", "src": ["group:nope"],
                                         "dst": ["*:*"]}]},
     "acls[0].src[0]", "group 'group:nope' is not defined"),
    ("acl-unknown-field", [], {"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"],
                                         "extra": 1}]},
     "acls[0].extra", "unknown field"),
    ("acls-not-list", [], {"acls": {}}, "acls", "must be a list"),
    ("unknown-section", [], {"sshRules": []}, "sshRules", "unknown section 'sshRules'"),
    ("groups-not-object", [], {"groups": []}, "groups", "must be an object"),
    # sshTests shapes Tailscale refuses (ssh_results/sshtest-malformed-*).
    ("sshtest-dst-autogroup-internet", [rule()],
     {"sshTests": [{"src": "thor@example.org", "dst": ["autogroup:internet"],
                    "accept": ["root"]}]},
     "sshTests[0].dst[0]", "disallowed element 'autogroup:internet'"),
    ("sshtest-dst-cidr", [rule()],
     {"sshTests": [{"src": "thor@example.org", "dst": ["100.64.0.0/24"], "accept": ["root"]}]},
     "sshTests[0].dst[0]", "disallowed element"),
    ("sshtest-dst-with-port", [rule()],
     {"sshTests": [{"src": "thor@example.org", "dst": ["tag:server:22"], "accept": ["root"]}]},
     "sshTests[0].dst[0]", "unknown tag 'tag:server:22'"),
    ("sshtest-empty-src", [rule()], {"sshTests": [{"src": "", "dst": ["tag:server"],
                                                   "accept": ["root"]}]},
     "sshTests[0].src", "non-empty src"),
    ("sshtest-no-dst", [rule()], {"sshTests": [{"src": "thor@example.org", "accept": ["root"]}]},
     "sshTests[0].dst", "at least one dst"),
    ("sshtest-unknown-field", [rule()],
     {"sshTests": [{"src": "thor@example.org", "dst": ["tag:server"], "allow": ["root"]}]},
     "sshTests[0].allow", "unknown field"),
]


@pytest.mark.parametrize(("ssh", "sections", "path", "fragment"),
                         [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusal(ssh: Any, sections: dict[str, Any], path: str, fragment: str) -> None:
    err = refusal(ssh, **sections)
    text = str(err)
    # file:line:col: <path>: <message>
    assert re.match(r"test\.hujson:\d+:\d+: ", text), text
    assert err.line is not None and err.col is not None
    assert f": {path}: " in text, text
    assert fragment in text, text
    assert "\n" not in text


def test_error_position_points_at_the_value() -> None:
    text = '{\n  "ssh": [\n    {\n      "action": "accept",\n      "src": ["autogroup:member"],' \
           '\n      "dst": ["tag:server"],\n      "users": ["root", "*"],\n    },\n  ],\n' \
           '  "tagOwners": {"tag:server": []},\n}\n'
    with pytest.raises(PolicyError) as info:
        parse_policy(text, filename="f.hujson")
    err = info.value
    assert (err.file, err.line, err.col) == ("f.hujson", 7, 25)
    assert str(err).startswith('f.hujson:7:25: ssh[0].users[1]: user "*" is not valid')


ACCEPTED: list[tuple[str, Any, dict[str, Any]]] = [
    # Files Tailscale's control plane accepted (ssh_results captures with status 200).
    ("action-whitespace", [rule(action=" accept")], {}),
    ("checkperiod-zero", [rule(action="check", checkPeriod="0s")], {}),
    ("checkperiod-30s", [rule(action="check", checkPeriod="30s")], {}),
    ("checkperiod-exact-max", [rule(action="check", checkPeriod="168h")], {}),
    ("checkperiod-compound", [rule(action="check", checkPeriod="1h30m")], {}),
    ("checkperiod-always", [rule(action="check", checkPeriod="always")], {}),
    ("checkperiod-null", [rule(action="check", checkPeriod=None)], {}),
    ("acceptenv-null", [rule(acceptEnv=None)], {}),
    ("acceptenv-bad-glob", [rule(acceptEnv=["**"])], {}),
    ("acceptenv-glob-shapes", [rule(acceptEnv=["*X", "X*", "X*Y", "*X*"])], {}),
    ("user-autogroup-internet-literal", [rule(users=["autogroup:internet"])], {}),
    ("user-autogroup-self-literal", [rule(users=["autogroup:self"])], {}),
    ("user-autogroup-tagged-literal", [rule(users=["autogroup:tagged"])], {}),
    ("user-group-prefix-literal", [rule(users=["group:foo"])], {}),
    ("user-tag-prefix-literal", [rule(users=["tag:foo"])], {}),
    ("user-localpart-empty-literal", [rule(users=["localpart:"])], {}),
    ("user-localpart-no-at-literal", [rule(users=["localpart:foo"])], {}),
    ("user-localpart-no-domain-literal", [rule(users=["localpart:*@"])], {}),
    ("user-whitespace-leading", [rule(users=[" root"])], {}),
    ("user-emoji", [rule(users=["\U0001f680"])], {}),
    ("src-empty", [rule(src=[])], {}),
    ("src-missing", [rule(src=...)], {}),
    ("dst-empty", [rule(dst=[])], {}),
    ("dst-missing", [rule(dst=...)], {}),
    ("src-empty-group", [rule(src=["group:empty"])], {}),
    ("tag-owner-cycle", [rule(src=["thor@example.org"], dst=["tag:a"])],
     {"tagOwners": {"tag:a": ["tag:b"], "tag:b": ["tag:a"]}}),
    ("tag-owner-self", [rule(src=["thor@example.org"], dst=["tag:a"])],
     {"tagOwners": {"tag:a": ["tag:a"]}}),
    ("ssh-empty", [], {}),
    ("ssh-null", None, {}),
    ("no-ssh", ..., {}),
    ("user-dst-same-user", [rule(src=["thor@example.org"], dst=["thor@example.org"])], {}),
    ("recorder-address", [rule(recorder=["100.64.0.20:80", "fd7a:115c:a1e0::1"])], {}),
    ("enforce-recorder-null", [rule(enforceRecorder=None)], {}),
    ("checkperiod-on-accept-ignored", [rule(checkPeriod="1h")], {}),
    # Sections tssh does not act on are accepted untouched.
    ("other-sections", [rule()], {
        "grants": [{"src": ["*"], "dst": ["*"], "ip": ["*"]}],
        "tests": [{"src": "thor@example.org", "accept": ["tag:server:22"]}],
        "nodeAttrs": [{"target": ["*"], "attr": ["funnel"]}],
        "autoApprovers": {"routes": {"10.0.0.0/8": ["tag:server"]}, "exitNode": ["tag:server"]},
        "postures": {"posture:latest": ["node:tsReleaseTrack == 'stable'"]},
        "defaultSrcPosture": ["posture:latest"],
        "ipsets": {"ipset:corp": ["10.0.0.0/8"]},
        "derpMap": {"OmitDefaultRegions": False, "Regions": {}},
        "randomizeClientPort": True,
        "disableIPv4": False,
        "OneCGNATRoute": "",
        "attrs": {},
    }),
    ("acl-autogroups-left-to-tailscale", [], {
        "tagOwners": {"tag:server": ["autogroup:admin", "autogroup:it-admin"]},
        "acls": [{"action": "accept", "src": ["autogroup:owner", "autogroup:future-role"],
                  "dst": ["autogroup:internet:*"]}],
    }),
    ("acls-typical", [], {
        "hosts": {"office": "192.0.2.0/24"},
        "acls": [
            {"action": "accept", "src": ["group:admins", "office"], "dst": ["tag:server:22"]},
            {"action": "accept", "src": ["*"], "dst": ["autogroup:self:*"], "proto": "tcp"},
            {"action": "accept", "users": ["autogroup:member"], "ports": ["tag:prod:80,443"]},
        ],
    }),
]


@pytest.mark.parametrize(("ssh", "sections"), [a[1:] for a in ACCEPTED],
                         ids=[a[0] for a in ACCEPTED])
def test_accepted(ssh: Any, sections: dict[str, Any]) -> None:
    policy = make_policy(ssh, **sections)
    assert policy.groups.keys() == (sections.get("groups") or GROUPS).keys()


def test_model_keeps_trimmed_values_and_defaults() -> None:
    policy = make_policy([
        rule(action=" check ", users=[" root", "autogroup:nonroot", "localpart:*@example.com"],
             recorder=[" tag:prod"], enforceRecorder=True, acceptEnv=["GIT_*"]),
        rule(),
    ])
    first, second = policy.ssh
    assert first.action == "check" and first.check_period == "12h"
    assert first.recorder == ("tag:prod",) and first.enforce_recorder
    assert first.accept_env == ("GIT_*",)
    assert second.check_period is None and not second.enforce_recorder
    assert policy.has_ssh_section
    assert policy.groups["group:developers"] == ("thor@example.org", "odin@example.com")
    assert policy.tag_owners == {k: tuple(v) for k, v in TAG_OWNERS.items()}


def test_rule_order_puts_check_first() -> None:
    policy = make_policy([rule(), rule(action="check"), rule(), rule(action="check")])
    assert [r.index for r in policy.ordered_rules()] == [1, 3, 0, 2]


def test_policy_must_be_an_object() -> None:
    with pytest.raises(PolicyError, match=r"p:1:1: policy: the policy must be an object"):
        parse_policy("[]", filename="p")


def test_text_and_bytes_agree() -> None:
    text = policy_text([rule()])
    assert parse_policy(text) == parse_policy(text.encode())


def test_policy_text_is_plain_json_here() -> None:
    # The helpers build JSON; HuJSON comments are exercised in test_cli and test_hostile.
    assert json.loads(policy_text([rule()]))["ssh"][0] == RULE
