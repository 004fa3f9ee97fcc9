"""sshTests, restated from Headscale's captures of Tailscale's verdicts
(juanfont/headscale, hscontrol/policy/v2/testdata/sshtest_results/sshtest-*.hujson):
``pass`` where Tailscale accepted the policy, ``fail`` where it answered "test(s) failed".
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.policy.conftest import NODES, make_policy
from tssh.policy.sshtests import run_ssh_tests

THOR_ROOT = {"action": "accept", "src": ["thor@example.org"], "dst": ["tag:server"],
             "users": ["root"]}


def t(accept: list[str] | None = None, deny: list[str] | None = None,
      check: list[str] | None = None, src: str = "thor@example.org",
      dst: tuple[str, ...] = ("tag:server",)) -> dict[str, Any]:
    out: dict[str, Any] = {"src": src, "dst": list(dst)}
    for key, value in (("accept", accept), ("deny", deny), ("check", check)):
        if value is not None:
            out[key] = value
    return out


CASES: list[tuple[str, list[Any], list[dict[str, Any]], dict[str, Any], bool]] = [
    # (id, ssh rules, sshTests, other sections, passes)
    ("accept-and-deny-same-user", [THOR_ROOT], [t(accept=["root"], deny=["root"])], {}, False),
    ("accept-fail-no-ssh-rule", [], [t(accept=["root"])], {}, False),
    ("accept-fail-wrong-login-user", [THOR_ROOT], [t(accept=["ubuntu"])], {}, False),
    ("acceptenv-no-effect", [{**THOR_ROOT, "acceptEnv": ["GIT_EDITOR", "TERM"]}],
     [t(accept=["root"])], {}, True),
    ("action-check-treated-as-allowed",
     [{**THOR_ROOT, "action": "check", "checkPeriod": "12h"}], [t(check=["root"])], {}, True),
    ("check-also-counts-as-accept", [{**THOR_ROOT, "action": "check"}], [t(accept=["root"])],
     {}, True),
    ("check-fails-on-accept-rule", [THOR_ROOT], [t(check=["root"])], {}, False),
    ("allpass-autogroup-self-same-user",
     [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self"],
       "users": ["root"]}], [t(accept=["root"], dst=("thor@example.org",))], {}, True),
    ("allpass-basic-user-to-tag", [THOR_ROOT], [t(accept=["root"])], {}, True),
    ("checkperiod-no-effect", [{**THOR_ROOT, "action": "check", "checkPeriod": "24h"}],
     [t(check=["root"])], {}, True),
    ("deny-fail-policy-allows", [THOR_ROOT], [t(deny=["root"])], {}, False),
    ("deny-pass-cross-user-blocked",
     [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self"],
       "users": ["root"]}], [t(deny=["root"], dst=("odin@example.com",))], {}, True),
    ("deny-pass-no-rule", [{**THOR_ROOT, "dst": ["tag:prod"]}], [t(deny=["root"])], {}, True),
    ("dst-duplicate-tags", [THOR_ROOT], [t(accept=["root"], dst=("tag:server", "tag:server"))],
     {}, True),
    ("group-as-src-rule", [{**THOR_ROOT, "src": ["group:developers"]}], [t(accept=["root"])],
     {}, True),
    ("group-as-test-src", [{**THOR_ROOT, "src": ["group:developers"]}],
     [t(accept=["root"], src="group:developers")], {}, True),
    ("group-as-test-src-partial", [THOR_ROOT], [t(accept=["root"], src="group:developers")],
     {}, False),
    ("malformed-empty-accept-and-deny", [THOR_ROOT], [t()], {}, False),
    ("malformed-empty-user", [THOR_ROOT], [t(accept=[""])], {}, False),
    ("mixed-acls-tcp22-allow-no-ssh-rule", [], [t(accept=["root"])],
     {"acls": [{"action": "accept", "src": ["thor@example.org"], "dst": ["tag:server:22"]}]},
     False),
    ("mixed-acls-tcp22-deny-ssh-rule-allow", [THOR_ROOT], [t(accept=["root"])],
     {"acls": [{"action": "accept", "src": ["odin@example.com"], "dst": ["tag:prod:80"]}]},
     True),
    ("multi-rule-disjoint-srcs", [{**THOR_ROOT, "src": ["thor@example.org",
                                                        "freya@example.com"]}],
     [t(accept=["root"]), t(accept=["root"], src="freya@example.com")], {}, True),
    ("tag-as-dst", [THOR_ROOT], [t(accept=["root"])], {}, True),
    ("tag-as-src", [{**THOR_ROOT, "src": ["tag:prod"]}], [t(accept=["root"], src="tag:prod")],
     {}, True),
    ("user-literal-multi-rule", [THOR_ROOT, {**THOR_ROOT, "users": ["ubuntu"]}],
     [t(accept=["root", "ubuntu"])], {}, True),
    ("user-localpart-domain-match",
     [{**THOR_ROOT, "src": ["odin@example.com"], "users": ["localpart:*@example.com"]}],
     [t(accept=["odin"], src="odin@example.com")], {}, True),
    ("user-localpart-domain-mismatch", [{**THOR_ROOT, "users": ["localpart:*@example.com"]}],
     [t(accept=["thor"])], {}, False),
    ("user-nonroot-allows-alice", [{**THOR_ROOT, "users": ["autogroup:nonroot"]}],
     [t(accept=["alice"])], {}, True),
    ("user-nonroot-blocks-root", [{**THOR_ROOT, "users": ["autogroup:nonroot"]}],
     [t(accept=["root"])], {}, False),
    ("user-root-only", [THOR_ROOT], [t(accept=["root"])], {}, True),
    ("tagged-src-never-user-node",
     [{"action": "accept", "src": ["tag:prod"], "dst": ["autogroup:tagged"], "users": ["root"]}],
     [t(deny=["root"], src="tag:prod", dst=("odin@example.com",))], {}, True),
    ("address-needs-netmap", [THOR_ROOT], [t(accept=["root"], src="100.101.179.105")], {},
     False),
]


@pytest.mark.parametrize(("ssh", "tests", "sections", "passes"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_ssh_tests(ssh: list[Any], tests: list[dict[str, Any]], sections: dict[str, Any],
                   passes: bool) -> None:
    policy = make_policy(ssh, sshTests=tests, **sections)
    failures = run_ssh_tests(policy)
    assert (not failures) == passes, failures
    for f in failures:
        assert str(f).startswith("sshTests[")


def test_failure_names_test_src_login_and_dst() -> None:
    policy = make_policy([THOR_ROOT], sshTests=[t(accept=["root"]), t(deny=["root"])])
    failures = run_ssh_tests(policy)
    assert [str(f) for f in failures] == [
        "sshTests[1]: thor@example.org/root -> tag:server: expected DENIED, got ALLOWED via "
        "accept (rule ssh[0], local user 'root')",
    ]


NODE_LIST = list(NODES.values())


def test_netmap_resolves_addresses_hosts_and_names() -> None:
    # sshtest-ip-literal-src, sshtest-host-alias-as-dst, sshtest-malformed-dst-bare-ipv4.
    policy = make_policy([THOR_ROOT], hosts={"srv": "100.124.204.32"}, sshTests=[
        t(accept=["root"], src="100.101.179.105"),
        t(accept=["root"], dst=("srv",)),
        t(accept=["root"], dst=("100.124.204.32",)),
        t(accept=["root"], src="ivysaur", dst=("beedrill",)),
        t(deny=["root"], src="bulbasaur", dst=("beedrill",)),
    ])
    assert run_ssh_tests(policy, NODE_LIST) == []


def test_netmap_resolves_tags_to_every_tagged_node() -> None:
    policy = make_policy([{**THOR_ROOT, "dst": ["tag:prod"]}],
                         sshTests=[t(accept=["root"], dst=("tag:server",))])
    failures = run_ssh_tests(policy, NODE_LIST)
    assert len(failures) == 1 and "tag:server (beedrill)" in str(failures[0])


def test_unresolvable_names_fail_clearly() -> None:
    policy = make_policy([THOR_ROOT], sshTests=[t(accept=["root"], dst=("nowhere",))])
    (failure,) = run_ssh_tests(policy, NODE_LIST)
    assert "cannot resolve 'nowhere'" in str(failure)
    policy = make_policy([THOR_ROOT], sshTests=[t(accept=["root"], src="nobody@example.com")])
    (failure,) = run_ssh_tests(policy, NODE_LIST)
    assert "resolved to no nodes" in str(failure)
