"""tssh on a real tailnet, run the way a user runs it.

A WireGuard mesh (wireguard-go in network namespaces, 100.64.0.0/10): "server" runs
`tssh daemon` with the ``wireguard`` identity backend, listening on its tailnet address and
bound to its WireGuard interface (the kernel refuses anything arriving over the underlay);
"laptop" (alice) uses the stock OpenSSH client, scp and sftp; "recorder" runs the recorder
node (`python -m recorder`, same backend, same binding) on its tailnet address, and alice
reads recordings through its API as a viewer; "rogue" is a WireGuard peer whose key the
inventory does not know.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import SSH_OPTIONS, require_tool
from tests.identity.wglab import Lab, build_lab, lab_unavailable_reason, local_account, run
from tests.processes import stop_process

ALICE = "alice@example.com"
SSH_PORT = 22
RECORDER_PORT = 80
NODES = ["server", "laptop", "recorder", "rogue"]

POLICY = """{
  // tssh on a WireGuard tailnet
  "tagOwners": {"tag:prod": ["alice@example.com"], "tag:recorder": ["alice@example.com"]},
  "groups": {"group:auditors": ["alice@example.com"]},
  "ssh": [
    {"action": "accept", "src": ["alice@example.com"], "dst": ["tag:prod"],
     "users": ["autogroup:nonroot"], "recorder": ["tag:recorder"]},
  ],
}
"""


def write_inventory(lab: Lab, path: Path) -> None:
    """Every node but "rogue": its key is on the interfaces, not in the inventory."""
    n = lab.nodes
    nodes = [
        {"name": "server", "id": "nSRV1", "addresses": [n["server"].address],
         "tags": ["tag:prod"], "wireguardKey": n["server"].public_key},
        {"name": "laptop", "id": "nLAP1", "addresses": [n["laptop"].address], "user": ALICE,
         "wireguardKey": n["laptop"].public_key},
        {"name": "recorder", "id": "nREC1", "addresses": [n["recorder"].address],
         "tags": ["tag:recorder"], "wireguardKey": n["recorder"].public_key},
    ]
    path.write_text(json.dumps({"nodes": nodes}, indent=2))


@dataclass
class Tailnet:
    lab: Lab
    workdir: Path
    user: str
    home: Path
    daemon_log: Path
    recorder_log: Path

    @property
    def recorder_url(self) -> str:
        return f"http://{self.lab.nodes['recorder'].address}:{RECORDER_PORT}"

    def http_get(self, node: str, path: str) -> tuple[int, bytes]:
        """GET the recorder's ``path`` from ``node``'s namespace: (status, body)."""
        return self.lab.http_get(node, self.recorder_url + path)

    @property
    def server(self) -> str:
        return self.lab.nodes["server"].address

    def ssh(self, node: str, login: str, *remote: str, timeout: float = 30,
            ) -> subprocess.CompletedProcess[bytes]:
        """The stock ssh client on ``node``, to the server's tailnet address."""
        return subprocess.run(
            self.lab.exec_argv(node, "ssh", *SSH_OPTIONS, f"{login}@{self.server}", *remote),
            capture_output=True, timeout=timeout,
        )

    def log_entries(self) -> list[dict[str, object]]:
        entries = []
        for line in self.daemon_log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entries.append(json.loads(line))
        return entries

    def refusal(self, peer_ip: str) -> dict[str, object]:
        """The daemon's "login refused" entry for ``peer_ip``; asserts no session followed."""
        entries = self.log_entries()
        refused = [e for e in entries
                   if e.get("msg") == "login refused" and e.get("peer_ip") == peer_ip]
        assert refused, f"no refusal of {peer_ip} in the daemon log"
        conns = {e.get("conn") for e in refused}
        assert not [e for e in entries
                    if e.get("msg") == "session started" and e.get("conn") in conns]
        return refused[-1]


@pytest.fixture(scope="module")
def tailnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tailnet]:
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason=f"WireGuard lab unavailable: {reason}")
    for tool in ("ssh", "scp", "sftp", "ss", "useradd"):
        require_tool(tool)
    workdir = tmp_path_factory.mktemp("tailnet")
    os.chmod(workdir, 0o755)
    lab = build_lab(NODES)
    try:
        with local_account() as (user, home):
            inventory = workdir / "inventory.hujson"
            write_inventory(lab, inventory)
            policy = workdir / "policy.hujson"
            policy.write_text(POLICY)
            identity = ["--identity", "wireguard", "--netmap", str(inventory),
                        "--policy", str(policy)]
            recorder, server = lab.nodes["recorder"], lab.nodes["server"]
            recorder_log, daemon_log = workdir / "recorder.log", workdir / "daemon.log"
            processes = []
            try:
                processes.append(lab.start_python("recorder", [
                    "-m", "recorder", "--dst", str(workdir / "recordings"),
                    "--state-dir", str(workdir / "recorder-state"),
                    "--listen", f"{recorder.address}:{RECORDER_PORT}",
                    *identity, "--wireguard-interface", recorder.interface,
                    "--viewer", "group:auditors",
                ], recorder_log))
                processes.append(lab.start_python("server", [
                    "-m", "tssh", "daemon", *identity,
                    "--wireguard-interface", server.interface, "--port", str(SSH_PORT),
                    "--recorder-port", str(RECORDER_PORT), "--state-dir", str(workdir / "state"),
                ], daemon_log))
                lab.wait_until_listening("recorder", RECORDER_PORT, processes[0], recorder_log)
                lab.wait_until_listening("server", SSH_PORT, processes[1], daemon_log)
                yield Tailnet(lab, workdir, user, home, daemon_log, recorder_log)
            finally:
                for proc in reversed(processes):
                    stop_process(proc)
    finally:
        lab.close()


def test_daemon_and_recorder_listen_on_their_tailnet_addresses_only(tailnet: Tailnet) -> None:
    """...and only on their WireGuard interfaces (SO_BINDTODEVICE)."""
    lab = tailnet.lab
    assert lab.listening("server") == {lab.bound_address("server", SSH_PORT)}
    assert lab.listening("recorder") == {lab.bound_address("recorder", RECORDER_PORT)}


def test_keyless_login_runs_a_command_and_returns_its_status(tailnet: Tailnet) -> None:
    result = tailnet.ssh("laptop", tailnet.user, "id -un; echo $SSH_CONNECTION; exit 7")
    assert result.returncode == 7, result.stderr
    name, connection = result.stdout.decode().split("\n")[:2]
    assert name == tailnet.user
    # The daemon saw the laptop's tailnet address, on its own tailnet address.
    assert connection.split()[0] == tailnet.lab.nodes["laptop"].address
    assert connection.split()[2] == tailnet.server


def test_login_the_policy_does_not_allow_is_refused_with_the_banner(tailnet: Tailnet) -> None:
    as_root = tailnet.ssh("laptop", "root", "true")
    assert as_root.returncode == 255
    assert b'tssh: tailnet policy does not permit you to SSH as user "root"' in as_root.stderr
    # A tagged node (the recorder) has no rule at all.
    recorder = tailnet.ssh("recorder", tailnet.user, "true")
    assert recorder.returncode == 255
    assert b"tssh: tailnet policy does not permit you to SSH to this node" in recorder.stderr
    entry = tailnet.refusal(tailnet.lab.nodes["recorder"].address)
    assert entry["peer"] == "recorder"


def test_wireguard_peer_missing_from_the_inventory_is_refused(tailnet: Tailnet) -> None:
    rogue = tailnet.lab.nodes["rogue"].address
    result = tailnet.ssh("rogue", tailnet.user, "true")
    assert result.returncode == 255
    assert f"tssh: unknown peer {rogue}".encode() in result.stderr
    # refused at accept, before any SSH: one audit line, and no login was ever considered
    entries = tailnet.log_entries()
    assert [e for e in entries if e.get("event") == "connection.unknown_peer"
            and e.get("peer_ip") == rogue]
    assert not [e for e in entries if e.get("peer_ip") == rogue
                and e.get("msg") in ("login accepted", "login refused")]


@contextlib.contextmanager
def underlay_route(lab: Lab, src: str, dst: str) -> Iterator[None]:
    """Route ``src``'s packets for ``dst``'s tailnet address over the underlay (veth),
    bypassing WireGuard: they arrive with ``src``'s underlay source address, on ``dst``'s
    veth, at its tailnet address."""
    route = [f"{lab.nodes[dst].address}/32", "via", lab.nodes[dst].underlay, "dev", "veth0"]
    run("ip", "-n", lab.nodes[src].netns, "route", "add", *route)
    try:
        yield
    finally:
        run("ip", "-n", lab.nodes[src].netns, "route", "del", *route)


def tcp_connect(lab: Lab, node: str, address: str, port: int) -> str:
    """Open a TCP connection from ``node``: "connected", "refused" or "timeout"."""
    out = subprocess.run(
        lab.exec_argv(node, sys.executable, "-c", TCP_CONNECT, address, str(port)),
        capture_output=True, timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.decode().strip()


TCP_CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()
    print("connected")
except ConnectionRefusedError:
    print("refused")
except TimeoutError:
    print("timeout")
"""


def test_packet_from_outside_the_mesh_never_reaches_the_daemon(tailnet: Tailnet) -> None:
    """Reach the tailnet address over the underlay, bypassing WireGuard: the daemon's
    listener is bound to the WireGuard interface, so the kernel refuses the TCP connection
    and the daemon never hears of it."""
    lab = tailnet.lab
    rogue = lab.nodes["rogue"]
    with underlay_route(lab, "rogue", "server"):
        probe = tcp_connect(lab, "rogue", tailnet.server, SSH_PORT)
        result = tailnet.ssh("rogue", tailnet.user, "true")
    assert probe in ("refused", "timeout")
    assert result.returncode == 255
    assert b"Connection refused" in result.stderr or b"timed out" in result.stderr, result.stderr
    assert rogue.underlay not in tailnet.daemon_log.read_text(errors="replace")
    # The same route through WireGuard still works: the refusal is about the interface.
    assert tcp_connect(lab, "laptop", tailnet.server, SSH_PORT) == "connected"


def test_packet_from_outside_the_mesh_never_reaches_the_recorder(tailnet: Tailnet) -> None:
    lab = tailnet.lab
    recorder, rogue = lab.nodes["recorder"], lab.nodes["rogue"]
    with underlay_route(lab, "rogue", "recorder"):
        probe = tcp_connect(lab, "rogue", recorder.address, RECORDER_PORT)
    assert probe in ("refused", "timeout")
    assert rogue.underlay not in tailnet.recorder_log.read_text(errors="replace")
    assert tcp_connect(lab, "laptop", recorder.address, RECORDER_PORT) == "connected"


def test_scp_and_sftp_over_the_mesh(tailnet: Tailnet) -> None:
    local = tailnet.workdir / "payload.bin"
    payload = os.urandom(300_000)
    local.write_bytes(payload)
    target = f"{tailnet.user}@{tailnet.server}"
    scp = [*tailnet.lab.exec_argv("laptop", "scp"), *SSH_OPTIONS]
    # scp over the SFTP protocol (OpenSSH 9's default), then the legacy scp protocol.
    run(*scp, str(local), f"{target}:up-sftp.bin")
    run(*scp, "-O", str(local), f"{target}:up-scp.bin")
    for name in ("up-sftp.bin", "up-scp.bin"):
        stored = tailnet.home / name
        assert stored.read_bytes() == payload
        assert stored.stat().st_uid == pwd.getpwnam(tailnet.user).pw_uid
    back = tailnet.workdir / "back.bin"
    run(*scp, "-O", f"{target}:up-scp.bin", str(back))
    assert back.read_bytes() == payload

    batch = tailnet.workdir / "sftp.batch"
    fetched = tailnet.workdir / "fetched.bin"
    batch.write_text(f"mkdir sub\nput {local} sub/p.bin\nls -l sub\nget sub/p.bin {fetched}\n")
    result = subprocess.run(
        [*tailnet.lab.exec_argv("laptop", "sftp"), *SSH_OPTIONS, "-b", str(batch), target],
        capture_output=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert b"p.bin" in result.stdout
    assert fetched.read_bytes() == payload
    assert (tailnet.home / "sub" / "p.bin").stat().st_uid == pwd.getpwnam(tailnet.user).pw_uid


def test_recordings_api_over_the_mesh_reads_only_for_viewers(tailnet: Tailnet) -> None:
    status, body = tailnet.http_get("laptop", "/api/v1/recordings")
    assert status == 200, body
    assert isinstance(json.loads(body)["recordings"], list)
    # The uploading node (tagged, not a viewer) and a key the inventory lacks.
    assert tailnet.http_get("server", "/api/v1/recordings")[0] == 403
    assert tailnet.http_get("rogue", "/api/v1/recordings")[0] == 401


def test_session_over_the_mesh_is_recorded_and_readable_by_a_viewer(tailnet: Tailnet) -> None:
    marker = f"recorded-{uuid.uuid4().hex[:12]}"
    result = tailnet.ssh("laptop", tailnet.user, f"echo {marker}; exit 3")
    assert result.returncode == 3, result.stderr
    assert marker.encode() in result.stdout

    found: dict[str, object] | None = None
    deadline = time.monotonic() + 15
    while found is None and time.monotonic() < deadline:
        status, body = tailnet.http_get("laptop", "/api/v1/recordings?limit=100")
        assert status == 200, body
        for entry in json.loads(body)["recordings"]:
            if entry["status"] == "complete" and marker in entry["header"].get("command", ""):
                found = entry
        if found is None:
            time.sleep(0.2)
    assert found is not None, f"no complete recording of the session: {body[:2000]!r}"
    header = found["header"]
    assert isinstance(header, dict)
    assert header["srcNode"].split(".")[0] == "laptop" and header["srcNodeID"] == "nLAP1"
    assert header["srcNodeUser"] == ALICE
    assert header["localUser"] == tailnet.user
    # The recorder identified the uploader by WireGuard key: the server, from its tailnet address.
    node = found["node"]
    assert isinstance(node, dict)
    assert (node["id"], node["name"], node["address"]) == ("nSRV1", "server", tailnet.server)
    assert found["exitStatus"] == 3

    status, cast = tailnet.http_get("laptop", f"/api/v1/recordings/{found['id']}/cast")
    assert status == 200
    first, *events = cast.decode().splitlines()
    assert json.loads(first)["version"] == 2
    output = "".join(e[2] for e in map(json.loads, events) if e[1] == "o")
    assert marker in output
    status, body = tailnet.http_get("laptop", f"/api/v1/recordings/{found['id']}/verify")
    assert status == 200 and json.loads(body)["ok"] is True, body
    started = [e for e in tailnet.log_entries() if e.get("msg") == "recording started"]
    assert {(e["recorder"], e["protocol"]) for e in started} == {
        (f"{tailnet.lab.nodes['recorder'].address}:{RECORDER_PORT}", "v2")}
    # The uploader itself cannot read what it uploaded.
    assert tailnet.http_get("server", f"/api/v1/recordings/{found['id']}/cast")[0] == 403
