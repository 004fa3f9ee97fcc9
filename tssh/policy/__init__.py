"""The Tailscale policy file: HuJSON parsing, model, validation, evaluation. Pure code, no I/O
except :func:`load_policy` reading the file it is given."""

from __future__ import annotations

import os
from pathlib import Path

from tssh.errors import PolicyError
from tssh.hujson import parse
from tssh.policy.evaluate import evaluate
from tssh.policy.model import Decision, Policy, SshRule, SshTest
from tssh.policy.selectors import Selector, parse_selector, src_matches
from tssh.policy.validate import build_policy

__all__ = [
    "MAX_POLICY_BYTES",
    "Decision",
    "Policy",
    "PolicyError",
    "Selector",
    "SshRule",
    "SshTest",
    "evaluate",
    "load_policy",
    "parse_policy",
    "parse_selector",
    "src_matches",
]

# Real policy files are kilobytes; anything this large is a mistake or an attack.
MAX_POLICY_BYTES = 8 * 1024 * 1024


def parse_policy(text: str | bytes, filename: str = "<policy>") -> Policy:
    """Parse and validate a policy; raises PolicyError("file:line:col: message")."""
    if len(text) > MAX_POLICY_BYTES:
        raise PolicyError(f"policy is larger than {MAX_POLICY_BYTES // (1024 * 1024)} MiB",
                          file=filename)
    return build_policy(parse(text, filename=filename))


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read, parse and validate the policy file at ``path``."""
    name = os.fspath(path)
    try:
        with Path(name).open("rb") as f:
            data = f.read(MAX_POLICY_BYTES + 1)
    except OSError as e:
        raise PolicyError(f"cannot read policy file: {e.strerror or e}", file=name) from None
    return parse_policy(data, filename=name)
