"""The wheel a user installs: built by the project's own backend (recorder/ui/wheel_backend.py),
installed into a clean venv, its commands working and the web UI's player inside.

Offline: the build runs without isolation (the test venv has the setuptools it needs) on a
checkout whose player ``./dev`` has installed already, and the clean venv gets the wheel alone
(``--no-deps --no-index``), finding the dependencies in this venv's site-packages."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _backend() -> object:
    spec = importlib.util.spec_from_file_location("wheel_backend",
                                                  ROOT / "recorder/ui/wheel_backend.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not _backend().player_vendored():
        pytest.skip(reason="the web UI's player is not in recorder/ui/vendor/ (./dev "
                    "installs it; the test does not reach the npm registry)")
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    [built] = out.glob("tssh-*.whl")
    return built


def test_wheel_carries_both_packages_and_the_player(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("tssh/cli/main.py", "recorder/cli.py", "recorder/ui/player.js",
                   "recorder/ui/vendor/asciinema-player.min.js",
                   "recorder/ui/vendor/asciinema-player.css"):
        assert needed in names, needed
    assert not any(n.startswith(("tests/", "recorder/ui/node_modules/")) for n in names)


def test_wheel_installs_clean_and_runs(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bin_dir = venv / "bin"
    subprocess.run([str(bin_dir / "pip"), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, timeout=120)
    # The dependencies from this venv, after the clean venv's own site-packages.
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(bin_dir / argv[0]), *argv[1:]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)

    where = run("python", "-c", "import tssh, recorder.web as w; "
                "print(tssh.__file__); print(w.vendor_problem())")
    assert where.returncode == 0, where.stderr
    location, problem = where.stdout.splitlines()
    assert location.startswith(str(venv)), location  # the installed copy, not the checkout
    assert problem == "None"  # the player is there
    assert run("tssh", "--help").returncode == 0
    assert run("tssh-recorder", "--help").returncode == 0
    checked = run("tssh", "policy", "check", str(ROOT / "policy.example.hujson"))
    assert checked.returncode == 0 and "sshTests passed" in checked.stdout, checked.stderr
