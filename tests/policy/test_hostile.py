"""Hostile and broken policy files: each gives one clear PolicyError with a position, fast."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.policy.conftest import NODES, policy_text
from tssh.errors import PolicyError
from tssh.policy import MAX_POLICY_BYTES, evaluate, load_policy, parse_policy
from tssh.policy.acceptenv import env_accepted


@contextmanager
def within(seconds: float) -> Iterator[None]:
    start = time.monotonic()
    yield
    elapsed = time.monotonic() - start
    assert elapsed < seconds, f"took {elapsed:.2f}s"


def error_of(data: str | bytes) -> PolicyError:
    with within(5), pytest.raises(PolicyError) as info:
        parse_policy(data, filename="evil.hujson")
    err = info.value
    assert err.file == "evil.hujson"
    assert "\n" not in str(err)
    return err


def test_deep_nesting() -> None:
    err = error_of('{"ssh": ' + "[" * 200_000 + "]" * 200_000 + "}")
    assert err.line == 1 and err.col is not None
    assert "nesting" in err.message


def test_deep_nesting_unclosed() -> None:
    err = error_of("[" * 1_000_000)
    assert "nesting" in err.message


def test_huge_file_is_refused_before_parsing() -> None:
    data = b'{"groups": {"group:x": ["' + b"a" * MAX_POLICY_BYTES + b'@example.com"]}}'
    err = error_of(data)
    assert "larger than" in err.message


def test_huge_file_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "big.hujson"
    with path.open("wb") as f:
        f.write(b"{" + b" " * (MAX_POLICY_BYTES + 10) + b"}")
    with within(5), pytest.raises(PolicyError, match="larger than"):
        load_policy(path)


def test_large_but_legal_file_loads_quickly() -> None:
    users = [f"user{i}@example.com" for i in range(20_000)]
    rules = [{"action": "accept", "src": [u], "dst": ["tag:server"], "users": ["root"]}
             for u in users[:2_000]]
    text = policy_text(rules, groups={"group:many": users})
    with within(10):
        policy = parse_policy(text)
        d = evaluate(policy, NODES["bulbasaur"], NODES["beedrill"], "root")
    assert d.action == "reject"


def test_duplicate_top_level_key() -> None:
    err = error_of('{\n  "ssh": [],\n  "ssh": []\n}')
    assert (err.line, err.col) == (3, 3)
    assert "duplicate key 'ssh'" in err.message


def test_duplicate_key_in_rule() -> None:
    err = error_of('{"ssh": [{"action": "accept", "action": "check"}]}')
    assert "duplicate key 'action'" in err.message


def test_invalid_utf8() -> None:
    err = error_of(b'{\n  "groups": {"group:x": ["\xff\xfe@example.com"]}\n}')
    assert err.line == 2
    assert "UTF-8" in err.message


@pytest.mark.parametrize(("text", "path"), [
    ('{"ssh": "accept"}', "ssh"),
    ('{"ssh": [{"action": "accept", "src": {}, "dst": [], "users": ["root"]}]}', "ssh[0].src"),
    ('{"ssh": [{"action": "accept", "src": [1], "dst": [], "users": ["root"]}]}',
     "ssh[0].src[0]"),
    ('{"ssh": [{"action": "accept", "src": [], "dst": [], "users": {"root": "root"}}]}',
     "ssh[0].users"),
    ('{"ssh": [{"action": true, "src": [], "dst": [], "users": ["root"]}]}', "ssh[0].action"),
    ('{"ssh": [{"action": "accept", "src": [], "dst": [], "users": ["root"], '
     '"enforceRecorder": 1}]}', "ssh[0].enforceRecorder"),
    ('{"ssh": [null]}', "ssh[0]"),
    ('{"groups": {"group:x": "alice@example.com"}}', "groups.group:x"),
    ('{"groups": {"group:x": [null]}}', "groups.group:x[0]"),
    ('{"tagOwners": []}', "tagOwners"),
    ('{"hosts": {"h": 1}}', "hosts.h"),
    ('{"sshTests": [{"src": ["a@b"], "dst": ["tag:x"], "accept": ["root"]}]}',
     "sshTests[0].src"),
    ('"just a string"', "policy"),
    ("null", "policy"),
])
def test_wrong_types(text: str, path: str) -> None:
    err = error_of(text)
    assert err.line is not None and err.col is not None
    assert err.message.startswith(f"{path}: "), err.message


@pytest.mark.parametrize("text", [
    "", "{", '{"ssh": [}', '{"ssh": [] /* unterminated', "{'ssh': []}", '{ssh: []}',
    '{"a": NaN}', '{"a": 0x10}', "\ufeff{}", '{"a": "\x01"}', "{} {}",
])
def test_syntax_errors(text: str) -> None:
    err = error_of(text)
    assert err.line is not None and err.col is not None


def test_huge_selector_strings() -> None:
    long_name = "x" * 1_000_000
    text = json.dumps({"ssh": [{"action": "accept", "src": [long_name + "@example.com"],
                                "dst": ["autogroup:self"], "users": [long_name]}]})
    with within(5):
        policy = parse_policy(text)
        d = evaluate(policy, NODES["bulbasaur"], NODES["bulbasaur"], long_name)
    assert d.action == "reject"


def test_pathological_accept_env_glob_is_linear() -> None:
    pattern = "*a" * 50 + "*b"
    with within(2):
        assert not env_accepted("a" * 20_000, [pattern])


def test_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read policy file") as info:
        load_policy(tmp_path)
    assert info.value.file == str(tmp_path)
