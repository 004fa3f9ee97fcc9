"""`tssh policy` driven like a user: a real process, real files, exit codes and output."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tssh.policy import load_policy
from tssh.policy.sshtests import rules_exercised

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "policy.example.hujson"

POLICY = """{
  // who is who
  "groups": {"group:admins": ["alice@example.com"]},
  "tagOwners": {"tag:prod": ["group:admins"], "tag:recorder": ["group:admins"]},
  "ssh": [
    {"action": "accept", "src": ["autogroup:member"], "dst": ["tag:prod"],
     "users": ["autogroup:nonroot"], "recorder": ["tag:recorder"], "enforceRecorder": true,
     "acceptEnv": ["GIT_*"]},
    {"action": "check", "src": ["group:admins"], "dst": ["tag:prod"], "users": ["root"],
     "checkPeriod": "1h"},
  ],
}
"""

NETMAP = """{
  "self": "server",
  "nodes": [
    {"name": "server", "id": "nSRV1", "addresses": ["127.0.0.10"], "tags": ["tag:prod"]},
    {"name": "laptop", "id": "nLAP1", "addresses": ["127.0.0.2"], "user": "alice@example.com"},
    {"name": "ci", "id": "nCI1", "addresses": ["127.0.0.3"], "tags": ["tag:recorder"]},
  ],
}
"""


def tssh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tssh", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=60)


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    policy = tmp_path / "policy.hujson"
    policy.write_text(POLICY)
    netmap = tmp_path / "netmap.hujson"
    netmap.write_text(NETMAP)
    return policy, netmap


def eval_json(policy: Path, netmap: Path, *extra: str) -> dict[str, object]:
    out = tssh("policy", "eval", "--policy", str(policy), "--netmap", str(netmap), *extra,
               "--json")
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    decision = json.loads(out.stdout)
    assert isinstance(decision, dict)
    return decision


def test_eval_accept_prints_design_shape(files: tuple[Path, Path]) -> None:
    d = eval_json(*files, "--src", "127.0.0.2", "--dst", "server", "--user", "alice")
    assert d == {"action": "accept", "localUser": "alice", "rule": 0,
                 "recorders": ["tag:recorder"], "enforceRecorder": True, "checkPeriod": None,
                 "acceptEnv": ["GIT_*"], "message": None}


def test_eval_check_rule_wins_for_root(files: tuple[Path, Path]) -> None:
    d = eval_json(*files, "--src", "laptop", "--dst", "server", "--user", "root")
    assert (d["action"], d["localUser"], d["rule"], d["checkPeriod"]) == ("check", "root", 1, "1h")


def test_eval_dst_defaults_to_self(files: tuple[Path, Path]) -> None:
    d = eval_json(*files, "--src", "nLAP1", "--user", "alice")
    assert d["action"] == "accept"


def test_eval_reject_exits_zero(files: tuple[Path, Path]) -> None:
    d = eval_json(*files, "--src", "ci", "--dst", "server", "--user", "alice")
    assert d["action"] == "reject"
    assert d["localUser"] is None and d["rule"] is None
    assert d["message"] == "tailnet policy does not permit you to SSH to this node"


def test_eval_unknown_source_is_rejected(files: tuple[Path, Path]) -> None:
    d = eval_json(*files, "--src", "127.0.0.99", "--dst", "server", "--user", "alice")
    assert d["action"] == "reject"
    assert "not a known node" in str(d["message"])


def test_eval_human_output(files: tuple[Path, Path]) -> None:
    policy, netmap = files
    out = tssh("policy", "eval", "--policy", str(policy), "--netmap", str(netmap),
               "--src", "laptop", "--user", "alice")
    assert out.returncode == 0
    assert "accept" in out.stdout and "tag:recorder" in out.stdout


def test_eval_broken_policy_exits_2_with_position(tmp_path: Path,
                                                  files: tuple[Path, Path]) -> None:
    bad = tmp_path / "bad.hujson"
    bad.write_text('{\n  "ssh": [\n    {"action": "Accept", "src": [], "dst": [],'
                   ' "users": ["root"]},\n  ],\n}\n')
    out = tssh("policy", "eval", "--policy", str(bad), "--netmap", str(files[1]),
               "--src", "laptop", "--user", "alice", "--json")
    assert out.returncode == 2
    assert out.stdout == ""
    assert f"{bad}:3:16: ssh[0].action:" in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_eval_unknown_dst_node_is_an_error(files: tuple[Path, Path]) -> None:
    policy, netmap = files
    out = tssh("policy", "eval", "--policy", str(policy), "--netmap", str(netmap),
               "--src", "laptop", "--dst", "nowhere", "--user", "alice")
    assert out.returncode == 2
    assert "nowhere" in out.stderr and "Traceback" not in out.stderr


def test_eval_missing_file_is_one_line(files: tuple[Path, Path], tmp_path: Path) -> None:
    out = tssh("policy", "eval", "--policy", str(tmp_path / "missing.hujson"), "--netmap",
               str(files[1]), "--src", "laptop", "--user", "alice")
    assert out.returncode == 2
    assert "cannot read policy file" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [("policy", "--help"), ("policy", "eval", "--help"),
                                  ("policy", "check", "--help")])
def test_help(argv: tuple[str, ...]) -> None:
    out = tssh(*argv)
    assert out.returncode == 0
    assert "usage: tssh policy" in out.stdout


def test_check_passes_and_fails(tmp_path: Path) -> None:
    policy = tmp_path / "p.hujson"
    body = POLICY.rstrip().rstrip("}")
    policy.write_text(body + """
  "sshTests": [
    {"src": "alice@example.com", "dst": ["tag:prod"], "accept": ["alice"], "check": ["root"]},
    {"src": "bob@example.com", "dst": ["tag:prod"], "accept": ["bob"], "deny": ["root"]},
  ],
}
""")
    out = tssh("policy", "check", str(policy))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 sshTests passed" in out.stdout

    policy.write_text(body + """
  "sshTests": [
    {"src": "bob@example.com", "dst": ["tag:prod"], "accept": ["root"]},
  ],
}
""")
    out = tssh("policy", "check", str(policy))
    assert out.returncode == 1
    assert "sshTests[0]: bob@example.com/root -> tag:prod: expected ALLOWED" in out.stdout


def test_check_with_netmap_resolves_addresses(tmp_path: Path,
                                              files: tuple[Path, Path]) -> None:
    policy = tmp_path / "p.hujson"
    policy.write_text(POLICY.rstrip().rstrip("}") + """
  "hosts": {"srv": "127.0.0.10"},
  "sshTests": [{"src": "127.0.0.2", "dst": ["srv", "server"], "accept": ["alice"]}],
}
""")
    out = tssh("policy", "check", str(policy))
    assert out.returncode == 1
    assert "needs a netmap" in out.stdout
    out = tssh("policy", "check", str(policy), "--netmap", str(files[1]))
    assert out.returncode == 0, out.stdout


def test_check_invalid_policy_exits_2(tmp_path: Path) -> None:
    policy = tmp_path / "p.hujson"
    policy.write_text('{"ssh": [{"action": "accept", "src": ["*"], "dst": ["tag:x"],'
                      ' "users": ["root"]}], "tagOwners": {"tag:x": []}}')
    out = tssh("policy", "check", str(policy))
    assert out.returncode == 2
    assert f"{policy}:1:39: ssh[0].src[0]:" in out.stderr


def test_example_policy_passes_check() -> None:
    if not EXAMPLE.exists():
        pytest.fail("policy.example.hujson is missing from the repository root")
    out = tssh("policy", "check", str(EXAMPLE))
    assert out.returncode == 0, out.stdout + out.stderr


def test_example_policy_tests_every_rule() -> None:
    policy = load_policy(EXAMPLE)
    assert rules_exercised(policy) == set(range(len(policy.ssh)))
    # and the check can fail: a rule that no test reaches (here shadowed by its twin) is missing
    extra = replace(policy, ssh=(*policy.ssh, policy.ssh[-1]))
    assert len(policy.ssh) not in rules_exercised(extra)


def test_eval_example_policy(tmp_path: Path) -> None:
    netmap = tmp_path / "netmap.hujson"
    netmap.write_text("""{
  "self": "prod1.example.ts.net",
  "nodes": [
    {"name": "prod1.example.ts.net", "id": "nP1", "addresses": ["127.0.0.10"],
     "tags": ["tag:prod"]},
    {"name": "alice-laptop", "id": "nA", "addresses": ["127.0.0.2"], "user": "alice@example.com"},
    {"name": "carol-laptop", "id": "nC", "addresses": ["127.0.0.3"], "user": "carol@example.com"},
  ],
}""")
    common = ("--dst", "prod1")
    root = eval_json(EXAMPLE, netmap, "--src", "alice-laptop", *common, "--user", "root")
    assert (root["action"], root["rule"], root["checkPeriod"]) == ("check", 2, "1h")
    alice = eval_json(EXAMPLE, netmap, "--src", "127.0.0.2", *common, "--user", "alice")
    assert (alice["action"], alice["localUser"], alice["enforceRecorder"]) == (
        "accept", "alice", True)
    assert alice["acceptEnv"] == ["GIT_*", "EDITOR"]
    carol = eval_json(EXAMPLE, netmap, "--src", "nC", *common, "--user", "carol")
    assert carol["action"] == "reject"
