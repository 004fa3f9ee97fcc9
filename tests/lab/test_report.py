"""docs/reliability.md from the outcomes: a table per section in the report's order, every
scenario with its figures and rerun command, cells that stay one cell, the limitations."""

from __future__ import annotations

from tests.lab.report import Limitation, Run, render
from tests.lab.results import Outcome


def test_the_report_has_a_row_per_scenario_under_its_section() -> None:
    outcomes = [
        Outcome("Load and abuse", "load: 40 sessions", "drops 0", "0 dropped", True,
                "python -m pytest -n 0 tests/lab/test_load.py", {"rate_hz": 81.04, "drops": 0}),
        Outcome("Faults", "recorder killed", "status 254", "a | b\nc", False, "pytest -k x"),
        Outcome("Elsewhere", "other", "x", "", True, "cmd"),
    ]
    text = render(outcomes, Run(False, 12.3, 1, "python -m pytest -n 0 tests/lab", 2, 3.5),
                  [Limitation("v2 | lost", "hypercorn")])
    lines = text.splitlines()
    headings = [line for line in lines if line.startswith("## ")]
    assert headings == ["## Faults", "## Load and abuse", "## Elsewhere", "## Found and not fixed"]
    assert "3 scenarios, 2 passed, 1 failed, 12 s" in text
    assert "2 CPUs, load average 3.5 at the start" in text
    assert ("| load: 40 sessions | drops 0 | 0 dropped | pass | rate_hz = 81, drops = 0 | "
            "`python -m pytest -n 0 tests/lab/test_load.py` |") in lines
    assert "| recorder killed | status 254 | a \\| b c | **FAIL** | — | `pytest -k x` |" in lines
    assert "| v2 \\| lost | hypercorn |" in lines
    assert "python -m tests.lab report --short" in text
