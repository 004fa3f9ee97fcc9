"""Which client environment variables a rule's ``acceptEnv`` lets through.

Patterns are names or globs with ``*`` (any run, even empty) and ``?`` (one character).
Whatever the patterns say, names that steer the dynamic linker (``LD_*``, ``DYLD_*``) or that
hold characters outside ``[A-Za-z0-9_-]`` are always refused, as tailscaled does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]+")


def is_dangerous(name: str) -> bool:
    """Names never accepted from a client: linker controls and unsafe characters."""
    upper = name.upper()
    return (upper.startswith(("LD_", "DYLD_")) or upper == "GOTRACEBACK"
            or _SAFE_NAME.fullmatch(name) is None)


def glob_match(pattern: str, name: str) -> bool:
    """``*``/``?`` glob match in O(len(pattern) * len(name)), whatever the pattern."""
    p = n = 0
    star_p, star_n = -1, 0
    while n < len(name):
        if p < len(pattern) and pattern[p] in ("?", name[n]) and pattern[p] != "*":
            p += 1
            n += 1
        elif p < len(pattern) and pattern[p] == "*":
            star_p, star_n = p, n
            p += 1
        elif star_p >= 0:
            star_n += 1
            p, n = star_p + 1, star_n
        else:
            return False
    return all(c == "*" for c in pattern[p:])


def env_accepted(name: str, patterns: Iterable[str]) -> bool:
    """Whether the variable ``name`` may pass under ``patterns`` (a rule's ``acceptEnv``)."""
    if is_dangerous(name):
        return False
    return any(glob_match(p, name) for p in patterns)


def filter_env(patterns: Iterable[str], variables: Iterable[tuple[str, str]],
               ) -> list[tuple[str, str]]:
    """The ``(name, value)`` pairs a client sent that ``patterns`` let through, in order.

    Values holding NUL are dropped too: the environment block is NUL-terminated, so one would
    silently truncate on exec.
    """
    pats = tuple(patterns)
    if not pats:
        return []
    return [(k, v) for k, v in variables
            if "\x00" not in k and "\x00" not in v and env_accepted(k, pats)]
