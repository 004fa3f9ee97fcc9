"""What each lab scenario measured, collected for docs/reliability.md.

A scenario's test asserts its outcome as any test does, and also hands what it saw to
``record``. When ``TSSH_LAB_RESULTS`` names a file (``python -m tests.lab report`` sets it),
each outcome is appended to it as one JSON line; otherwise ``record`` does nothing, so the
tests run the same in CI and by hand. ``TSSH_LAB_LONG=1`` asks scenarios for their full
length (the report's run); without it they run the short version CI can afford.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS_ENV = "TSSH_LAB_RESULTS"
LONG_ENV = "TSSH_LAB_LONG"


@dataclass(frozen=True)
class Outcome:
    section: str  # the report's heading: "End to end", "Faults", "Links", "Load and abuse"
    scenario: str  # one line: "recorder killed mid-session, enforced"
    expected: str  # what should happen, as an operator would check it
    observed: str  # what did happen: the message, log line, status or figure seen
    passed: bool
    rerun: str  # the command that runs this scenario alone
    figures: dict[str, float | int | str] = field(default_factory=dict)


def long_run() -> bool:
    """True when the report asks for the full-length scenarios."""
    return os.environ.get(LONG_ENV) == "1"


def record(outcome: Outcome) -> None:
    path = os.environ.get(RESULTS_ENV)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(asdict(outcome), sort_keys=True) + "\n")


def load(path: Path) -> list[Outcome]:
    """Every outcome in ``path``, in the order recorded (a missing file holds none)."""
    if not path.exists():
        return []
    return [Outcome(**json.loads(line)) for line in path.read_text().splitlines() if line]
