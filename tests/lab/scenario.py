"""One lab scenario: its assertions run inside ``scenario``, which records the outcome for
the report whether they pass or fail (a failed scenario is a row of the report too)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from tests.lab.results import Outcome, record


@dataclass
class Observation:
    """What the scenario saw, filled in as it runs: the report's "observed" and figures."""

    observed: list[str] = field(default_factory=list)
    figures: dict[str, float | int | str] = field(default_factory=dict)

    def saw(self, text: str) -> None:
        self.observed.append(text)


@contextlib.contextmanager
def scenario(section: str, name: str, expected: str, rerun: str) -> Iterator[Observation]:
    seen = Observation()
    try:
        yield seen
    except BaseException as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        record(Outcome(section, name, expected, "; ".join([*seen.observed,
                       f"FAILED: {reason}"]), False, rerun, seen.figures))
        raise
    record(Outcome(section, name, expected, "; ".join(seen.observed), True, rerun,
                   seen.figures))
