"""The lab's result file: what one scenario records is what the report reads back."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lab.results import LONG_ENV, RESULTS_ENV, Outcome, load, long_run, record


def test_record_appends_and_load_reads_back(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "results.jsonl"
    monkeypatch.setenv(RESULTS_ENV, str(path))
    first = Outcome("Faults", "recorder killed", "session ends", "ended, status 254", True,
                    "pytest tests/lab -k killed", {"acked_bytes": 4096})
    second = Outcome("Links", "bulk at 100 ms", "beats sshd", "1.3x", False, "pytest tests/lab")
    record(first)
    record(second)
    assert load(path) == [first, second]


def test_record_without_a_results_file_writes_nothing(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    record(Outcome("Faults", "x", "y", "z", True, "cmd"))
    assert list(tmp_path.iterdir()) == []
    assert load(tmp_path / "absent.jsonl") == []


def test_long_run_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LONG_ENV, raising=False)
    assert not long_run()
    monkeypatch.setenv(LONG_ENV, "1")
    assert long_run()
