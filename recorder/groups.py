"""Groups of the policy file, for ``--viewer group:x`` selectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recorder.errors import SettingsError
from tssh.errors import PolicyError
from tssh.policy.hujson import loads


def load_groups(path: Path) -> dict[str, tuple[str, ...]]:
    """The policy file's ``groups`` ("group:x" -> member logins)."""
    try:
        doc: Any = loads(path.read_bytes(), filename=str(path))
    except OSError as e:
        raise SettingsError(f"cannot read the policy {path}: {e.strerror or e}") from e
    except PolicyError as e:
        raise SettingsError(f"policy {e}") from e
    groups = doc.get("groups", {}) if isinstance(doc, dict) else {}
    if not isinstance(groups, dict):
        raise SettingsError(f"{path}: 'groups' must be an object")
    return {
        str(k): tuple(str(m) for m in v) for k, v in groups.items() if isinstance(v, list)
    }
