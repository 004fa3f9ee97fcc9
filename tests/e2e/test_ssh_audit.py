"""docs/daemon.md: an independent SSH auditor (ssh-audit) finds nothing critical in the daemon.

ssh-audit connects, reads the server's KEXINIT and host keys, and rates every offered
algorithm against its own database. The same check run on stock OpenSSH 9.2 with its default
algorithms must fail, which shows the check can fail at all.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import SERVER_IP, TsshDaemon, free_port, require_tool, wait_for_port

SECTIONS = ("kex", "key", "enc", "mac")
STOCK_IP = "127.0.0.1"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ssh_audit") is None,
    reason="ssh-audit is not installed (the project's test extra has it)",
)


def audit(host: str, port: int) -> dict[str, object]:
    """ssh-audit's JSON report on ``host:port``."""
    result = subprocess.run(
        [sys.executable, "-m", "ssh_audit", "--json", "--timeout", "10", "-p", str(port), host],
        capture_output=True, text=True, timeout=60,
    )
    # Exit codes: 0 good, 1 connection error, 2 warnings, 3 failures.
    assert result.returncode in (0, 2, 3), (result.returncode, result.stdout, result.stderr)
    report = json.loads(result.stdout)
    assert isinstance(report, dict)
    report["exit_code"] = result.returncode
    return report


def failures(report: dict[str, object]) -> list[str]:
    """Every algorithm the auditor rated "fail" (its critical level), as ``section: name``."""
    out = []
    for section in SECTIONS:
        entries = report[section]
        assert isinstance(entries, list)
        for entry in entries:
            if entry.get("notes", {}).get("fail"):
                out.append(f"{section}: {entry['algorithm']} ({'; '.join(entry['notes']['fail'])})")
    return out


def test_daemon_passes_an_independent_audit(daemon: TsshDaemon) -> None:
    report = audit(SERVER_IP, daemon.port)
    for section in SECTIONS:  # the report really covers what we assert on
        assert report[section], f"ssh-audit reported no {section} algorithms"
    assert failures(report) == []
    assert report["cves"] == []
    assert report["exit_code"] != 3
    offered = {s: [e["algorithm"] for e in report[s]] for s in SECTIONS}  # type: ignore[attr-defined]
    assert "ssh-rsa" not in offered["key"]
    assert not any("cbc" in c for c in offered["enc"])
    assert not any("sha1" in m or "md5" in m for m in offered["mac"])


@pytest.fixture
def stock_sshd(tmp_path: Path) -> Iterator[int]:
    """Stock OpenSSH with its default algorithm lists, on loopback, stopped by PID."""
    sshd = "/usr/sbin/sshd"
    if not os.access(sshd, os.X_OK):
        pytest.skip(reason="openssh-server is not installed")
    if os.geteuid() != 0:
        pytest.skip(reason="sshd's privilege separation needs root")
    keygen = require_tool("ssh-keygen")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    key = tmp_path / "host_ed25519"
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    port = free_port(STOCK_IP)
    config = tmp_path / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress {STOCK_IP}\nHostKey {key}\nUsePAM no\n"
        f"PidFile {tmp_path / 'sshd.pid'}\nAuthorizedKeysFile none\n"
    )
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(STOCK_IP, port, proc)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_stock_openssh_defaults_fail_the_same_audit(stock_sshd: int) -> None:
    report = audit(STOCK_IP, stock_sshd)
    found = failures(report)
    assert report["exit_code"] == 3
    # OpenSSH 9.2 still offers NIST-curve key exchange and SHA-1 MACs by default.
    assert any(f.startswith("kex: ecdh-sha2-nistp") for f in found), found
    assert any(f.startswith("mac: ") and "sha1" in f for f in found), found
