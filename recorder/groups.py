"""Groups of the policy file, for ``--viewer group:x`` selectors."""

from __future__ import annotations

from pathlib import Path

from recorder.errors import SettingsError
from tssh.errors import PolicyError
from tssh.policy import load_policy


def load_groups(path: Path) -> dict[str, tuple[str, ...]]:
    """The policy's ``groups`` ("group:x" -> member logins); the file must be a valid policy."""
    try:
        return dict(load_policy(path).groups)
    except PolicyError as e:
        raise SettingsError(f"policy {e}") from e
