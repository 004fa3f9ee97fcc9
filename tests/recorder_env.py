"""The environment variables the recorder reads, taken from its own source, so that the
deployment files under deploy/ can be checked to set only variables that do something."""

from __future__ import annotations

import re
from pathlib import Path

from tssh.config import ENV_PREFIX, PARSERS

ROOT = Path(__file__).resolve().parent.parent

# Named in a deployment file for a feature that is not built yet; each says why.
PENDING: dict[str, str] = {}


def recorder_variables() -> set[str]:
    """TSRECORDER_* as `tssh-recorder` reads them, and the daemon's TSSH_* (identity and
    policy come as for the daemon, docs/recorder.md)."""
    source = (ROOT / "recorder/cli.py").read_text()
    names = set(re.findall(r"\bTSRECORDER_[A-Z_]+\b", source))
    assert names, "recorder/cli.py names no TSRECORDER_ variable: has the CLI moved?"
    return names | {ENV_PREFIX + key.upper() for key in PARSERS} | {"TSSH_CONFIG"}


def unknown(names: set[str]) -> set[str]:
    """Of ``names`` (variables starting TSRECORDER_ or TSSH_), those the recorder ignores."""
    ours = {n for n in names if n.startswith(("TSRECORDER_", "TSSH_"))}
    return ours - recorder_variables() - set(PENDING)
