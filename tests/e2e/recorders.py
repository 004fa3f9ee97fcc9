"""Recorder nodes for end-to-end recording tests, and a daemon whose policy records sessions.

``recorder_node`` is the real one (``python -m recorder serve``) on rec1's address.

The recorders are the uploader tests' fake recorder (h2c and HTTP/1.1, failures on demand),
served from a background thread with its own event loop so that a test drives the stock
``ssh`` client synchronously while the daemon (a real process) uploads to them. They listen on
the tailnet addresses of the netmap's recorder nodes, on the daemon's ``--recorder-port``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.e2e.conftest import ALICE_IP, NETMAP, REPO, SERVER_IP, TsshDaemon
from tests.ports import free_port, wait_for_port
from tests.processes import stop_process
from tests.recording.fake_recorder import Behavior, FakeRecorder

T = TypeVar("T")

REC1_IP = "127.0.0.20"
REC2_IP = "127.0.0.21"
RECORDING_NETMAP = {
    **NETMAP,
    "nodes": [
        *NETMAP["nodes"],  # type: ignore[misc]
        {"name": "rec1", "id": "nREC1", "addresses": [REC1_IP], "tags": ["tag:recorder"]},
        {"name": "rec2", "id": "nREC2", "addresses": [REC2_IP], "tags": ["tag:recorder"]},
    ],
}


def recording_policy(enforce: bool, recorders: tuple[str, ...] = ("tag:recorder",)) -> str:
    """alice may log in as any non-root user; every session recorded to ``recorders``
    (none: not recorded)."""
    rule: dict[str, object] = {"action": "accept", "src": ["alice@example.com"],
                               "dst": ["tag:prod"], "users": ["autogroup:nonroot"]}
    if recorders:
        rule.update({"recorder": list(recorders), "enforceRecorder": enforce})
    return json.dumps({
        "tagOwners": {"tag:prod": ["alice@example.com"],
                      "tag:recorder": ["alice@example.com"]},
        "ssh": [rule],
    }, indent=2)


@dataclass(frozen=True)
class UploadSnapshot:
    protocol: str
    peer: str  # source address the daemon uploaded from
    body: bytes
    complete: bool

    def cast(self) -> tuple[dict[str, Any], list[list[Any]]]:
        """The header and the events of the asciicast body."""
        lines = self.body.decode("utf-8").splitlines()
        return json.loads(lines[0]), [json.loads(line) for line in lines[1:]]

    def output(self) -> str:
        return "".join(e[2] for e in self.cast()[1] if e[1] == "o")


class RecorderLoop:
    """An event loop in a thread that runs fake recorders; every call is bounded in time."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.recorders: list[FakeRecorder] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def call(self, fn: Callable[[], T]) -> T:
        async def wrapped() -> T:
            return fn()
        return self.run(wrapped())

    def start(self, host: str, port: int, behavior: Behavior | None = None) -> FakeRecorder:
        rec = self.run(FakeRecorder(behavior, host=host, port=port).start())
        self.recorders.append(rec)
        return rec

    def kill(self, rec: FakeRecorder) -> None:
        """Close the listener and cut every connection (the recorder node dies)."""
        self.run(rec.close())

    def uploads(self, rec: FakeRecorder) -> list[UploadSnapshot]:
        return self.call(lambda: [UploadSnapshot(u.protocol, u.peer, bytes(u.body), u.complete)
                                  for u in rec.uploads])

    def wait_upload(self, rec: FakeRecorder, complete: bool = True, count: int = 1,
                    timeout: float = 15.0) -> list[UploadSnapshot]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            uploads = self.uploads(rec)
            if len(uploads) >= count and (not complete or all(u.complete for u in uploads)):
                return uploads
            time.sleep(0.05)
        raise TimeoutError(f"no {count} {'complete ' if complete else ''}upload(s) "
                           f"in {timeout}s: {self.uploads(rec)}")

    def close(self) -> None:
        for rec in self.recorders:
            self.run(rec.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def recorder_port() -> int:
    """A port free on both recorder addresses (the recorder port is one for all)."""
    for _ in range(50):
        port = free_port(REC1_IP)
        with socket.socket() as s:
            try:
                s.bind((REC2_IP, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free on both recorder addresses")


@pytest.fixture(name="recorder_loop")
def recorder_loop_fixture() -> Iterator[RecorderLoop]:
    loop = RecorderLoop()
    try:
        yield loop
    finally:
        loop.close()


class RecordingSetup:
    """Starts daemons whose policy records alice's sessions; stops them at teardown."""

    def __init__(self, workdir: Path, loop: RecorderLoop) -> None:
        self.workdir = workdir
        self.loop = loop
        self.recorder_port = recorder_port()
        self.daemons: list[TsshDaemon] = []

    def recorder(self, host: str = REC1_IP, behavior: Behavior | None = None) -> FakeRecorder:
        return self.loop.start(host, self.recorder_port, behavior)

    def daemon(self, *, enforce: bool, recorders: tuple[str, ...] = ("tag:recorder",),
               extra_args: tuple[str, ...] = ()) -> TsshDaemon:
        n = len(self.daemons)
        netmap = self.workdir / f"netmap{n}.hujson"
        netmap.write_text(json.dumps(RECORDING_NETMAP, indent=2))
        policy = self.workdir / f"policy{n}.hujson"
        policy.write_text(recording_policy(enforce, recorders))
        d = TsshDaemon(
            workdir=self.workdir, port=free_port(SERVER_IP), netmap=netmap, policy=policy,
            state_dir=self.workdir / f"state{n}",
            extra_args=("--recorder-port", str(self.recorder_port), *extra_args),
        )
        self.daemons.append(d)
        d.start()
        return d

    def audit(self, daemon: TsshDaemon, event: str) -> list[dict[str, Any]]:
        return [e for e in daemon.log_entries()
                if e.get("logger") == "tssh.audit" and e.get("event") == event]

    def wait_audit(self, daemon: TsshDaemon, event: str, timeout: float = 15.0
                   ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if entries := self.audit(daemon, event):
                return entries
            time.sleep(0.05)
        raise TimeoutError(f"no audit event {event} in the daemon log")


@pytest.fixture(name="recording")
def recording_fixture(tmp_path: Path, recorder_loop: RecorderLoop) -> Iterator[RecordingSetup]:
    setup = RecordingSetup(tmp_path, recorder_loop)
    try:
        yield setup
    finally:
        for d in setup.daemons:
            d.stop()


@dataclass
class RecorderNode:
    proc: subprocess.Popen[bytes]
    dst: Path
    log: Path
    url: str

    def recordings(self) -> list[dict[str, Any]]:
        """Every recording the recorder lists, asked as alice (a viewer) from her laptop."""
        transport = httpx.HTTPTransport(local_address=ALICE_IP)
        with httpx.Client(base_url=self.url, transport=transport, timeout=20) as client:
            r = client.get("/api/v1/recordings", params={"limit": 500})
            assert r.status_code == 200, r.text
            listed: list[dict[str, Any]] = r.json()["recordings"]
            return listed

    def cast(self, meta: dict[str, Any]) -> tuple[dict[str, Any], list[list[Any]]]:
        lines = (self.dst / f"{meta['storageKey']}.cast").read_text("utf-8").splitlines()
        return json.loads(lines[0]), [json.loads(line) for line in lines[1:]]

    def casts(self) -> list[Path]:
        return sorted((self.dst / "nSRV1").rglob("*.cast"))

    def wait_cast(self, ending: bytes, timeout: float = 15) -> bytes:
        """The one stored recording, once it ends with ``ending`` (the exit event)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            casts = self.casts()
            if casts and (data := casts[0].read_bytes()).rstrip().endswith(ending):
                assert len(casts) == 1, casts
                return data
            time.sleep(0.05)
        raise AssertionError(f"no finished recording in {self.dst}: {self.casts()}; "
                             f"{self.log.read_text(errors='replace')[-2000:]}")


@pytest.fixture(name="recorder_node")
def recorder_node_fixture(recording: RecordingSetup, tmp_path: Path) -> Iterator[RecorderNode]:
    netmap = tmp_path / "recorder-netmap.json"
    netmap.write_text(json.dumps({**RECORDING_NETMAP, "self": "rec1"}))
    policy = tmp_path / "recorder-policy.hujson"
    policy.write_text('{"ssh": []}')
    dst = tmp_path / "recordings"
    log = tmp_path / "recorder.log"
    port = recording.recorder_port
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "recorder", "serve", "--dst", str(dst), "--listen",
             f"{REC1_IP}:{port}", "--netmap", str(netmap), "--policy", str(policy),
             "--state-dir", str(tmp_path / "recorder-state"),
             "--viewer", "alice@example.com"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(REPO)})
    try:
        wait_for_port(REC1_IP, port, proc, log=log)
        yield RecorderNode(proc, dst, log, f"http://{REC1_IP}:{port}")
    finally:
        stop_process(proc)


# Test modules import the fixtures (pytest finds them in the module's namespace).
__all__ = ["ALICE_IP", "REC1_IP", "REC2_IP", "SERVER_IP", "Behavior", "RecorderNode",
           "RecordingSetup", "UploadSnapshot", "recorder_loop_fixture", "recorder_node_fixture",
           "recording_fixture"]
