"""`tssh ssh` (host keys from the mesh) and `tssh demo` (a daemon that lets you in)."""

from __future__ import annotations

import copy
import getpass
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import (
    ALICE_IP,
    NETMAP,
    REPO,
    SSH_OPTIONS,
    LocalUser,
    TsshDaemon,
    nonroot_daemon,
    require_tool,
    run_ssh,
    write_identity_files,
)
from tests.ports import free_port, wait_for_port


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
        pytest.skip(reason="improbable key collision")
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
    # The identity settings can also come from the daemon's TOML file (relative to it).
    config = tmp_path / "tssh.toml"
    config.write_text(f'identity = "netmap"\nnetmap = "{netmap.name}"\nport = 2222\n')
    from_file = subprocess.run(
        [sys.executable, "-m", "tssh", "ssh", "--config", str(config), "nosuchnode"],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )
    assert from_file.stderr.strip() == "tssh: no node called 'nosuchnode' in the tailnet"
    unconfigured = subprocess.run(
        [sys.executable, "-m", "tssh", "ssh", "nosuchnode"], cwd=REPO, capture_output=True,
        text=True, timeout=30, env={k: v for k, v in os.environ.items()
                                    if not k.startswith("TSSH_")},
    )
    assert unconfigured.returncode == 2 and "needs a netmap file" in unconfigured.stderr


def test_demo_lets_current_user_in_and_stops_on_sigint(tmp_path: Path) -> None:
    port = free_port("127.0.0.1")
    recorder_port = free_port("127.0.0.3")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tssh", "demo", "--dir", str(tmp_path / "demo"), "--ssh-port",
         str(port), "--recorder-port", str(recorder_port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # One process imports and starts a daemon and a recorder: on a loaded 2-core machine
        # that took over 15 s. How fast is not what this test checks; a demo that dies fails
        # the wait at once.
        wait_for_port("127.0.0.1", port, proc, timeout=60)
        assert proc.stdout is not None
        banner = "".join(proc.stdout.readline() for _ in range(5))
        user = getpass.getuser()
        assert f"ssh -p {port} {user}@127.0.0.1" in banner
        assert f"web UI:      http://127.0.0.3:{recorder_port}/\n" in banner
        assert f"--recorder http://127.0.0.3:{recorder_port}" in banner
        # No -b: this machine's own source address is the demo node, reaching itself.
        result = subprocess.run(
            ["ssh", *SSH_OPTIONS, "-p", str(port), f"{user}@127.0.0.1", "id -un"],
            capture_output=True, text=True, timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"{user}\n"
        # ...and the session is on the demo's recorder, readable by the same user.
        listing = subprocess.run(
            [sys.executable, "-m", "tssh", "recordings", "list", "--json",
             "--recorder", f"http://127.0.0.3:{recorder_port}"],
            cwd=REPO, capture_output=True, text=True, timeout=30,
        )
        assert listing.returncode == 0, listing.stderr
        [recording] = json.loads(listing.stdout)["recordings"]
        assert recording["header"]["command"] == "id -un"
        assert recording["status"] == "complete"
        # ...and in the web UI the banner names (its list, and the player page)
        ui = httpx.get(f"http://127.0.0.3:{recorder_port}/", timeout=30)
        assert ui.status_code == 200 and "id -un" in ui.text
        assert f'href="play/{recording["id"]}"' in ui.text
        # `tssh status` as the banner says reaches the demo's daemon
        [command] = [line.split(":", 1)[1].split() for line in banner.splitlines()
                     if line.strip().startswith("status:")]
        assert command[:2] == ["tssh", "status"]
        status = subprocess.run([sys.executable, "-m", *command, "--json"], cwd=REPO,
                                capture_output=True, text=True, timeout=30)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["ssh"] is True
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (tmp_path / "demo" / "policy.hujson").is_file()


def test_demo_refuses_other_local_users(tmp_path: Path, local_user: LocalUser) -> None:
    """On loopback every local process shares the demo node's address: only the processes
    of the user who runs the demo may use it, or any local account could log in as them."""
    require_tool("runuser")
    require_tool("curl")
    port = free_port("127.0.0.1")
    recorder_port = free_port("127.0.0.3")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tssh", "demo", "--dir", str(tmp_path / "demo"), "--ssh-port",
         str(port), "--recorder-port", str(recorder_port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for_port("127.0.0.1", port, None)
        me = getpass.getuser()
        other = subprocess.run(
            ["runuser", "-u", local_user.name, "--", "ssh", *SSH_OPTIONS, "-p", str(port),
             f"{me}@127.0.0.1", "id -un"],
            capture_output=True, text=True, timeout=30,
        )
        assert other.returncode == 255, (other.stdout, other.stderr)
        assert other.stdout == ""
        own = subprocess.run(
            ["ssh", *SSH_OPTIONS, "-p", str(port), f"{me}@127.0.0.1", "id -un"],
            capture_output=True, text=True, timeout=30,
        )
        assert own.stdout == f"{me}\n", own.stderr
        # The recorder's API identifies readers the same way: by the 127.0.0.1 source.
        api = f"http://127.0.0.3:{recorder_port}/api/v1/recordings"
        theirs = subprocess.run(
            ["runuser", "-u", local_user.name, "--", "curl", "-s", "-o", "/dev/null", "-w",
             "%{http_code}", api], capture_output=True, text=True, timeout=30,
        )
        assert theirs.stdout == "403", theirs
        mine = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", api],
                              capture_output=True, text=True, timeout=30)
        assert mine.stdout == "200", mine
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    assert f"uid={local_user.uid}" in proc.stderr.read()


def _daemon_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tssh", "daemon", "--check-config", *args],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )


def test_check_config(tmp_path: Path) -> None:
    netmap, policy = write_identity_files(tmp_path)
    good = _daemon_check("--netmap", str(netmap), "--policy", str(policy), "--port", "2222")
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == "ok: node server, listening on 127.0.0.10 port 2222"
    policy.write_text('{"ssh": [\n  {"action": "Accept"}]}')
    bad = _daemon_check("--netmap", str(netmap), "--policy", str(policy))
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and f"{policy}:2:" in bad.stderr
    missing = _daemon_check("--policy", str(policy))
    assert missing.returncode == 2 and "netmap" in missing.stderr


def test_daemon_as_normal_user_serves_only_that_user(local_user: LocalUser) -> None:
    """Non-root mode: the daemon's own account gets in, any other is refused with a reason."""
    with nonroot_daemon(local_user, [local_user.name, "root"]) as d:
        own = run_ssh(d, local_user.name, "id -un")
        assert own.returncode == 0, own.stderr
        assert own.stdout.decode() == f"{local_user.name}\n"
        other = run_ssh(d, "root", "true")
        assert other.returncode == 255
        assert (f"tssh: this tssh daemon runs as '{local_user.name}', not root, and can "
                "only start sessions as").encode() in other.stderr
