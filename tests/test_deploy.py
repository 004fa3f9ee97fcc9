"""What deploy/ ships is valid where it can be checked here: the systemd units parse and
verify (``systemd-analyze verify``, with ExecStart pointed at this checkout's commands), and
the recorder's sandbox scores as systemd rates a well-confined service."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = sorted((ROOT / "deploy/systemd").glob("*.service"))
ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def installed(unit: Path, into: Path) -> Path:
    """The unit as it would be installed, its commands those of this venv."""
    target = into / unit.name
    bindir = Path(sys.executable).parent
    target.write_text(unit.read_text().replace("/usr/local/bin/", f"{bindir}/"))
    return target


def test_both_units_are_shipped() -> None:
    assert [u.name for u in UNITS] == ["tssh-recorder.service", "tssh.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_verifies(unit: Path, tmp_path: Path) -> None:
    assert ANALYZE is not None
    done = subprocess.run([ANALYZE, "verify", str(installed(unit, tmp_path))],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt directive and a missing command are reported."""
    assert ANALYZE is not None
    broken = tmp_path / "broken.service"
    broken.write_text("[Service]\nExecStartt=/bin/true\nExecStart=/nonexistent/tssh\n")
    done = subprocess.run([ANALYZE, "verify", str(broken)], capture_output=True, text=True,
                          timeout=60)
    assert "ExecStartt" in done.stderr and "/nonexistent/tssh" in done.stderr


def test_recorder_sandbox_is_rated_ok(tmp_path: Path) -> None:
    """systemd's own exposure score (0 best, 10 worst; "OK" is below 3): the recorder runs
    nobody's sessions, so nothing excuses a weak sandbox."""
    assert ANALYZE is not None
    unit = installed(ROOT / "deploy/systemd/tssh-recorder.service", tmp_path)
    done = subprocess.run([ANALYZE, "security", "--offline=yes", "--threshold=25",
                           str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert "Overall exposure level" in done.stdout
