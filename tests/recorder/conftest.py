"""Fixtures: a netmap of loopback nodes, a policy with groups, and the recorder as a real
subprocess (``python -m recorder``) on a free loopback port, stopped by PID."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ports import free_port
from tests.processes import stop_process
from tests.recorder.moto import MotoServer
from tests.recorder.postgres import PostgresServer
from tests.recorder.postgres import binaries as postgres_binaries
from tests.recorder.postgres import skip_reason as postgres_skip_reason

REPO = Path(__file__).resolve().parents[2]

SERVER = "127.0.0.10"  # tag:prod node that uploads
SERVER2 = "127.0.0.11"  # another uploading node
ALICE = "127.0.0.2"  # viewer by login
BOB = "127.0.0.3"  # viewer through group:auditors
MONITOR = "127.0.0.4"  # viewer through tag:monitor
CAROL = "127.0.0.5"  # known user, not a viewer
STRANGER = "127.0.0.99"  # not in the netmap

NETMAP = {
    "self": "recorder",
    "nodes": [
        {"name": "server", "id": "nSRV1", "addresses": [SERVER], "tags": ["tag:prod"]},
        {"name": "server2", "id": "nSRV2", "addresses": [SERVER2], "tags": ["tag:prod"]},
        {"name": "laptop", "id": "nLAP1", "addresses": [ALICE], "user": "alice@example.com"},
        {"name": "bobbook", "id": "nBOB1", "addresses": [BOB], "user": "bob@example.com"},
        {"name": "monitor", "id": "nMON1", "addresses": [MONITOR], "tags": ["tag:monitor"]},
        {"name": "carolpc", "id": "nCAR1", "addresses": [CAROL], "user": "carol@example.com"},
        {"name": "recorder", "id": "nREC1", "addresses": ["127.0.0.1"], "tags": ["tag:rec"]},
    ],
}

POLICY = """{
  // only the groups matter to the recorder
  "groups": {"group:auditors": ["bob@example.com"],},
  "ssh": [],
}"""

VIEWERS = ("alice@example.com", "group:auditors", "tag:monitor")


def cast_header(node_id: str = "nLAP1", conn: str = "ssh-conn-20261125T090000-0123456789",
                **extra: Any) -> bytes:
    """A header as the server's daemon writes it: ``srcNode*`` name the SSH client's node
    (alice's laptop by default), not the uploading server."""
    header: dict[str, Any] = {
        "version": 2, "width": 80, "height": 24, "timestamp": 1764061200,
        "command": "/bin/bash", "srcNode": "laptop.example.ts.net", "srcNodeID": node_id,
        "srcNodeUser": "alice@example.com", "env": {"TERM": "xterm"},
        "sshUser": "alice", "localUser": "alice", "connectionID": conn,
    }
    header.update(extra)
    return json.dumps(header).encode() + b"\n"


def event(t: float, data: str, code: str = "o") -> bytes:
    return json.dumps([t, code, data]).encode() + b"\n"


@dataclass
class RecorderProc:
    """One ``tssh-recorder`` subprocess and the directories it uses."""

    tmp: Path
    dst: str
    extra: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    preexec: Any = None

    @property
    def state_dir(self) -> Path:
        return self.tmp / "state"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.tmp / "recorder.log"

    def args(self) -> list[str]:
        netmap = self.tmp / "netmap.hujson"
        policy = self.tmp / "policy.hujson"
        if not netmap.exists():
            netmap.write_text(json.dumps(NETMAP, indent=1))
            policy.write_text(POLICY)
        args = [
            sys.executable, "-m", "recorder", "--dst", self.dst,
            "--listen", f"127.0.0.1:{self.port}", "--state-dir", str(self.state_dir),
            "--netmap", str(netmap), "--policy", str(policy), *self.extra,
        ]
        for v in VIEWERS:
            args += ["--viewer", v]
        return args

    def start(self, timeout: float = 60.0) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), **self.env}
        log = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            self.args(), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=self.preexec,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"recorder exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        stop_process(self.proc)  # never leave a recorder behind that failed to start in time
        raise AssertionError(f"recorder did not start: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)

    def client(self, source: str = ALICE, **kw: Any) -> httpx.Client:
        transport = httpx.HTTPTransport(local_address=source)
        return httpx.Client(base_url=self.url, transport=transport, timeout=10, **kw)

    def aclient(self, source: str = ALICE, **kw: Any) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(local_address=source, **kw)
        return httpx.AsyncClient(base_url=self.url, transport=transport, timeout=10)

    def token(self, name: str = "ci") -> str:
        out = subprocess.run(
            [sys.executable, "-m", "recorder", "token", "--state-dir", str(self.state_dir),
             "create", name],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
            text=True, check=True,
        )
        return out.stdout.strip()


def assert_acked_bytes_survived(recorder: RecorderProc, sent: bytes, acked: int) -> dict[str, Any]:
    """The one recording an upload cut short left (recorder SIGKILLed and restarted, or
    upload refused midway) is kept, marked incomplete, holds at least every acknowledged byte
    unchanged, and its seal verifies."""
    with recorder.client(ALICE) as c:
        [meta] = c.get("/api/v1/recordings").json()["recordings"]
        assert meta["status"] == "incomplete"
        assert meta["size"] >= acked
        cast = c.get(f"/api/v1/recordings/{meta['id']}/cast").content
        assert cast[:acked] == sent[:acked]
        assert c.get(f"/api/v1/recordings/{meta['id']}/verify").json()["ok"] is True
    assert isinstance(meta, dict)
    return meta


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[RecorderProc]:
    rec = RecorderProc(tmp_path, str(tmp_path / "store"))
    try:
        rec.start()
        yield rec
    finally:
        rec.stop()


def recv_until(sock: socket.socket, marker: bytes) -> bytes:
    """What ``sock`` receives until ``marker`` has arrived (or the recorder closes)."""
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[MotoServer]:
    if not MotoServer.exe().exists():
        pytest.skip(reason="moto_server is not installed beside the Python interpreter")
    server = MotoServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    reason = postgres_skip_reason()
    bin_dir = postgres_binaries()
    if reason is not None or bin_dir is None:
        pytest.skip(reason=reason or "PostgreSQL is not installed")
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """The DSN of a fresh database of the session's PostgreSQL server."""
    return postgres_server.new_database()
