"""acceptEnv matching, restated from tailscaled's tests (tailscale/tailscale,
ssh/tailssh/accept_env_test.go): glob shapes, and names that are always refused."""

from __future__ import annotations

import pytest

from tssh.policy.acceptenv import env_accepted, filter_env, glob_match, is_dangerous


@pytest.mark.parametrize(("pattern", "name", "match"), [
    ("*", "EXAMPLE_ENV", True), ("***", "123456", True), ("?", "A", True),
    ("?", "123", False), ("?*", "EXAMPLE_2", True), ("?*", "", False), ("*?", "A", True),
    ("*?", "", False), ("??", "CC", True), ("??", "123", False), ("*?*", "ABCDEFG", True),
    ("*?*", "C", True), ("*?*", "", False), ("?*?", "ABCDEFG", True), ("?*?", "A", False),
    ("**?TEST", "_TEST", True), ("**?TEST", "_TESTING", False), ("TEST**?", "TEST_", True),
    ("TEST**?", "A_TEST_", False), ("TEST_*", "TEST_A", True), ("TEST_*", "TEST", False),
    ("EXAMPLE_?_ENV", "EXAMPLE_A_ENV", True), ("EXAMPLE_?_ENV", "EXAMPLE_ENV", False),
    ("EXAMPLE_*_ENV", "EXAMPLE_aBcd2231---_ENV", True), ("EXAMPLE_*_ENV", "EXAMPLEENV", False),
    ("COMPLICA?ED_PATTERN*", "COMPLICATED_PATTERN_REST", True),
    ("COMPLICA?ED_PATTERN*", "COMPLICATED_PATT", False),
    ("COMPLICAT???ED_PATT??ERN", "COMPLICAT123ED_PATTggERN", True),
    ("COMPLICAT???ED_PATT??ERN", "COMPLICATED_PATTERN", False),
    ("DIRECT_MATCH", "DIRECT_MATCH", True), ("DIRECT_MATCH", "MISS", False),
    ("", "", True), ("aaa", "", False), ("", "aaa", False), ("aaaa", "aaa", False),
    ("aaa", "aaaa", False), ("*", "", True), ("a?", "aa", True), ("**", "aa", True),
    ("*a", "aa", True), ("a?", "ba", False), ("a*", "ba", False), ("?a", "ab", False),
    ("*a", "ab", False),
])
def test_glob(pattern: str, name: str, match: bool) -> None:
    assert glob_match(pattern, name) is match


@pytest.mark.parametrize("name", ["LD_PRELOAD", "LD_LIBRARY_PATH", "ld_preload", "Ld_Audit",
                                  "DYLD_INSERT_LIBRARIES", "GOTRACEBACK", "FOO,BAR", "", "A B",
                                  "A=B", "caf\u00e9", "X\x00Y"])
def test_always_refused(name: str) -> None:
    assert is_dangerous(name)
    assert not env_accepted(name, ["*", name])


def test_filter_env() -> None:
    sent = [("TERM", "xterm"), ("GIT_EDITOR", "vim"), ("LD_PRELOAD", "/x.so"),
            ("LC_ALL", "C"), ("FOO", "a\x00b"), ("BAR", "ok"), ("DYLD_X", "1")]
    assert filter_env(["GIT_*", "LC_?LL", "FOO", "BAR"], sent) == [
        ("GIT_EDITOR", "vim"), ("LC_ALL", "C"), ("BAR", "ok")]
    assert filter_env(["*"], sent) == [("TERM", "xterm"), ("GIT_EDITOR", "vim"),
                                       ("LC_ALL", "C"), ("BAR", "ok")]
    assert filter_env([], sent) == []
