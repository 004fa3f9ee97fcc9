"""`tssh ssh` (host keys from the mesh) and `tssh demo` (a daemon that lets you in)."""

from __future__ import annotations

import copy
import getpass
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    ALICE_IP,
    NETMAP,
    REPO,
    SSH_OPTIONS,
    TsshDaemon,
    free_port,
    require_tool,
    wait_for_port,
)


def _server_key(daemon: TsshDaemon) -> str:
    require_tool("ssh-keyscan")
    scan = subprocess.run(
        ["ssh-keyscan", "-t", "ed25519", "-p", str(daemon.port), "127.0.0.10"],
        capture_output=True, text=True, timeout=20,
    )
    line = scan.stdout.strip().splitlines()[0]
    return " ".join(line.split()[1:3])


def _client_netmap(tmp_path: Path, key: str) -> Path:
    netmap = copy.deepcopy(NETMAP)
    netmap["nodes"][0]["hostKeys"] = [key]  # type: ignore[index]
    path = tmp_path / "client-netmap.json"
    path.write_text(json.dumps(netmap))
    return path


def _tssh_ssh(netmap: Path, daemon: TsshDaemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tssh", "ssh", "--netmap", str(netmap), "--port",
         str(daemon.port), "root@server", "-F", "/dev/null", "-o", "BatchMode=yes",
         "-b", ALICE_IP, *args],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )


def test_tssh_ssh_verifies_host_key_from_netmap(daemon: TsshDaemon, tmp_path: Path) -> None:
    key = _server_key(daemon)
    good = _tssh_ssh(_client_netmap(tmp_path, key), daemon, "id", "-un")
    assert good.returncode == 0, good.stderr
    assert good.stdout == "root\n"
    wrong = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBh+7EyiNvG9s03QdVqUXCicEn7gElSzsGAxNNdH8E4X"
    if wrong == key:
        pytest.skip("improbable key collision")
    bad = _tssh_ssh(_client_netmap(tmp_path, wrong), daemon, "true")
    assert bad.returncode == 255
    assert "Host key verification failed" in bad.stderr


def test_tssh_ssh_unknown_machine(tmp_path: Path) -> None:
    netmap = _client_netmap(tmp_path, "ssh-ed25519 AAAA")
    missing = subprocess.run(
        [sys.executable, "-m", "tssh", "ssh", "--netmap", str(netmap), "nosuchnode"],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )
    assert missing.returncode != 0
    assert missing.stderr.strip() == "tssh: no node called 'nosuchnode' in the tailnet"


def test_demo_lets_current_user_in_and_stops_on_sigint(tmp_path: Path) -> None:
    port = free_port("127.0.0.2")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tssh", "demo", "--dir", str(tmp_path / "demo"), "--ssh-port",
         str(port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for_port("127.0.0.2", port, None)
        assert proc.stdout is not None
        banner = proc.stdout.readline() + proc.stdout.readline()
        user = getpass.getuser()
        assert f"ssh -p {port} {user}@127.0.0.2" in banner
        # No -b: this machine's own source address is the demo's laptop node.
        result = subprocess.run(
            ["ssh", *SSH_OPTIONS, "-p", str(port), f"{user}@127.0.0.2", "id -un"],
            capture_output=True, text=True, timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"{user}\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (tmp_path / "demo" / "policy.hujson").is_file()
