"""Forwarding with the stock client: -L, -D, -R, -W, Unix sockets, -A; narrowed by the
config, made as the session's user, ended with the connection on revocation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import REPO, write_identity_files


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tssh", "daemon", "--check-config", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=30)


def test_check_config_explains_forwarding(tmp_path: Path) -> None:
    netmap, policy = write_identity_files(tmp_path)
    config = tmp_path / "tssh.toml"
    config.write_text('allow_tcp_forwarding = "local"\n'
                      '[[match]]\nsrc = ["bob@example.com"]\nallow_agent_forwarding = false\n'
                      '[[match]]\nusers = ["nobody"]\nallow_tcp_forwarding = "no"\n')
    base = ("--config", str(config), "--netmap", str(netmap), "--policy", str(policy))
    alice = _check(*base, "--explain", "laptop", "root")
    assert alice.returncode == 0, alice.stderr
    lines = alice.stdout.splitlines()
    assert lines[1] == ("forwarding for laptop (alice@example.com) as root: accept by rule 0, "
                        "not recorded")
    assert '  allow_tcp_forwarding = "local"  (top level)' in lines
    assert "  allow_agent_forwarding = true  (default)" in lines
    bob = _check(*base, "--explain", "127.0.0.3", "nobody")
    assert bob.returncode == 0, bob.stderr
    assert '  allow_tcp_forwarding = "no"  (match 2)' in bob.stdout
    assert "  allow_agent_forwarding = false  (match 1)" in bob.stdout
    unknown = _check(*base, "--explain", "nosuch", "root")
    assert unknown.returncode != 0 and "no node 'nosuch'" in unknown.stderr
