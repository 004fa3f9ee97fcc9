import subprocess
import sys


def test_help_lists_usage() -> None:
    out = subprocess.run([sys.executable, "-m", "tssh", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "usage: tssh" in out.stdout


def test_no_command_is_an_error() -> None:
    out = subprocess.run([sys.executable, "-m", "tssh"], capture_output=True, text=True)
    assert out.returncode == 2
