"""Shared fixtures for end-to-end tests: a real `tssh daemon` process and the stock ssh client.

The daemon listens on 127.0.0.10 (node "server"); clients pick their tailnet identity by
binding a source address with ``ssh -b``: 127.0.0.2 is alice's laptop, 127.0.0.3 bob's,
127.0.0.4 carol's (no rule), 127.0.0.5 is nobody the netmap knows.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.openssh import CLIENT_OPTIONS
from tests.ports import free_port, wait_for_port
from tests.processes import stop_process

REPO = Path(__file__).resolve().parents[2]
SERVER_IP = "127.0.0.10"
ALICE_IP = "127.0.0.2"
BOB_IP = "127.0.0.3"
CAROL_IP = "127.0.0.4"
UNKNOWN_IP = "127.0.0.5"
SCANNER_IP = "127.0.0.1"

NETMAP = {
    "self": "server",
    "nodes": [
        {"name": "server", "id": "nSRV1", "addresses": [SERVER_IP], "tags": ["tag:prod"]},
        {"name": "laptop", "id": "nLAP1", "addresses": [ALICE_IP], "user": "alice@example.com"},
        {"name": "bobpc", "id": "nBOB1", "addresses": [BOB_IP], "user": "bob@example.com"},
        {"name": "carolpc", "id": "nCAR1", "addresses": [CAROL_IP],
         "user": "carol@example.com"},
        # Tools that cannot choose a source address (ssh-keyscan, ssh-audit) connect from
        # 127.0.0.1: a node, so that it gets a key exchange, which no rule lets log in.
        {"name": "scanner", "id": "nSCN1", "addresses": [SCANNER_IP],
         "user": "scanner@example.com"},
    ],
}

# alice: any non-root user and root, FOO_* variables; bob: "nobody", and "sys" after a
# check; carol: nothing.
POLICY = """{
  // tssh e2e policy
  "tagOwners": {"tag:prod": ["alice@example.com"]},
  "ssh": [
    {"action": "accept", "src": ["alice@example.com"], "dst": ["tag:prod"],
     "users": ["autogroup:nonroot", "root"], "acceptEnv": ["FOO_*"]},
    {"action": "accept", "src": ["bob@example.com"], "dst": ["tag:prod"], "users": ["nobody"]},
    {"action": "check", "src": ["bob@example.com"], "dst": ["tag:prod"], "users": ["sys"]},
  ],
}
"""

SSH_OPTIONS = (*CLIENT_OPTIONS, "-o", "ConnectTimeout=10")

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="creating local users needs root")


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(reason=f"{name} is not installed")
    return path


TEST_MAX_STARTUPS = "256"
# TSSH_E2E_WORKERS=2: every daemon of the suite runs with that many worker processes
# (docs/daemon.md, "Worker processes"); unset, with the default (one process).
E2E_WORKERS = os.environ.get("TSSH_E2E_WORKERS")


@dataclass
class TsshDaemon:
    """A `tssh daemon` process, started and stopped by PID."""

    workdir: Path
    port: int
    netmap: Path
    policy: Path
    state_dir: Path
    extra_args: Sequence[str] = ()
    user: str | None = None
    # The interpreter and import path the daemon runs with (another user may need others).
    python: str = sys.executable
    pythonpath: str = str(REPO)
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.workdir / "daemon.log"

    def command(self) -> list[str]:
        return [
            self.python, "-m", "tssh", "daemon", "--netmap", str(self.netmap),
            "--policy", str(self.policy), "--port", str(self.port),
            "--state-dir", str(self.state_dir),
            # Tests open many connections at once; the default random early drop (sshd's
            # 10:30:100) is driven on its own in test_limits.py and tests/server.
            "--max-startups", TEST_MAX_STARTUPS,
            *(("--workers", E2E_WORKERS) if E2E_WORKERS else ()), *self.extra_args,
        ]

    def start(self, expect_listening: bool = True) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                user=self.user, env={**os.environ, "PYTHONPATH": self.pythonpath},
            )
        if expect_listening:
            wait_for_port(SERVER_IP, self.port, self.proc, log=self.log)
        self.wait_for_control()

    def wait_for_control(self, timeout: float = 60.0) -> None:
        """Until `tssh status` answers (the control socket comes up after the listeners)."""
        deadline = time.monotonic() + timeout
        sock = self.state_dir / "control.sock"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}")
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
                s.connect(str(sock))
                return
            time.sleep(0.05)
        raise TimeoutError(f"no control socket at {sock}")

    def status(self) -> dict[str, object]:
        result = self.tssh("status", "--json")
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        assert isinstance(data, dict)
        return data

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc)

    def log_entries(self) -> list[dict[str, object]]:
        entries = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entries.append(json.loads(line))
        return entries

    def tssh(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        """Run a `tssh` command against this daemon's state dir."""
        return subprocess.run(
            [sys.executable, "-m", "tssh", *args, "--state-dir", str(self.state_dir)],
            cwd=REPO, capture_output=True, text=True, timeout=timeout,
        )


def write_identity_files(directory: Path, policy: str = POLICY) -> tuple[Path, Path]:
    netmap = directory / "netmap.hujson"
    netmap.write_text(json.dumps(NETMAP, indent=2))
    policy_path = directory / "policy.hujson"
    policy_path.write_text(policy)
    return netmap, policy_path


class DaemonFactory:
    """Builds daemons on fresh ports; the fixture stops every one of them at teardown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.netmap, self.policy = write_identity_files(workdir)
        self.started: list[TsshDaemon] = []

    def __call__(self, extra_args: Sequence[str] = (), user: str | None = None,
                 state_dir: Path | None = None, port: int | None = None) -> TsshDaemon:
        d = TsshDaemon(
            workdir=self.workdir, port=port or free_port(SERVER_IP), netmap=self.netmap,
            policy=self.policy, state_dir=state_dir or self.workdir / "state",
            extra_args=extra_args, user=user,
        )
        self.started.append(d)
        d.start()
        return d


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[DaemonFactory]:
    factory = DaemonFactory(tmp_path)
    try:
        yield factory
    finally:
        for d in factory.started:
            d.stop()


@pytest.fixture
def daemon(daemon_factory: DaemonFactory) -> TsshDaemon:
    return daemon_factory()


def ssh_command(daemon: TsshDaemon, user: str, *remote: str, source: str = ALICE_IP,
                options: Sequence[str] = ()) -> list[str]:
    return [
        # ssh keeps the first value of an option: the test's own options go first.
        "ssh", *options, *SSH_OPTIONS, "-p", str(daemon.port), "-b", source,
        f"{user}@{SERVER_IP}", *remote,
    ]


def run_ssh(daemon: TsshDaemon, user: str, *remote: str, source: str = ALICE_IP,
            options: Sequence[str] = (), input: bytes | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ssh_command(daemon, user, *remote, source=source, options=options),
        input=input, capture_output=True, timeout=timeout,
    )


@contextlib.contextmanager
def live_session(daemon: TsshDaemon, user: str = "root") -> Iterator[subprocess.Popen[bytes]]:
    """An ssh session that is running (it printed ``started``) and would go on for 60 s, then
    print ``not-reached``; killed on the way out if the test did not end it."""
    session = subprocess.Popen(
        ssh_command(daemon, user, "echo started; sleep 60; echo not-reached"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert session.stdout is not None
        assert session.stdout.readline() == b"started\n"
        yield session
    finally:
        if session.poll() is None:
            session.kill()
            session.wait()


@dataclass(frozen=True)
class LocalUser:
    name: str
    uid: int
    gid: int
    home: Path


@pytest.fixture
def local_user() -> Iterator[LocalUser]:
    """A fresh local account with a home and bash; removed at teardown."""
    if os.geteuid() != 0:
        pytest.skip(reason="creating local users needs root")
    require_tool("useradd")
    name = f"tt{uuid.uuid4().hex[:10]}"
    group = f"{name}g"
    subprocess.run(["groupadd", group], check=True)
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", "-G", group, name], check=True)
    import pwd

    entry = pwd.getpwnam(name)
    try:
        yield LocalUser(name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))
    finally:
        subprocess.run(["userdel", "-r", "-f", name], check=False, capture_output=True)
        subprocess.run(["groupdel", group], check=False, capture_output=True)


def interpreter_for(user: str) -> tuple[str, str]:
    """A Python and import path with which ``user`` can run the daemon.

    This interpreter first; else the system's Python of the same minor version with this
    environment's site-packages (same ABI), for when this one lives in a directory other users
    cannot enter. Skips the test when neither works.
    """
    paths = dict.fromkeys([str(REPO), sysconfig.get_paths()["purelib"],
                           sysconfig.get_paths()["platlib"]])
    candidates = [(sys.executable, str(REPO)),
                  (f"/usr/bin/python3.{sys.version_info.minor}", os.pathsep.join(paths))]
    for python, pythonpath in candidates:
        if not os.access(python, os.X_OK):
            continue
        probe = subprocess.run(["runuser", "-u", user, "--", python, "-c", "import asyncssh, tssh"],
                               cwd=REPO, capture_output=True,
                               env={**os.environ, "PYTHONPATH": pythonpath})
        if probe.returncode == 0:
            return python, pythonpath
    pytest.skip(reason="neither this Python nor the system's can import tssh as another user "
                "(a directory on the way is not readable by other users)")


class UserDaemon(TsshDaemon):
    """Runs the daemon with the user's uid, gid and groups, as a service manager would
    (``Popen(user=...)`` changes only the uid and leaves root's groups)."""

    uid = gid = -1

    def command(self) -> list[str]:
        setpriv = require_tool("setpriv")
        return [setpriv, f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups",
                *super().command()]


@contextlib.contextmanager
def nonroot_daemon(user: LocalUser, logins: Sequence[str]) -> Iterator[TsshDaemon]:
    """A daemon running as ``user`` (its uid, gid and groups) whose policy lets alice in as
    ``logins``; started, and stopped with its files removed on the way out."""
    python, pythonpath = interpreter_for(user.name)
    work = Path(tempfile.mkdtemp(prefix="tssh-nonroot-"))
    try:
        os.chmod(work, 0o755)
        users = ", ".join(f'"{login}"' for login in logins)
        policy_text = POLICY.replace('"users": ["autogroup:nonroot", "root"]',
                                     f'"users": [{users}]')
        netmap, policy = write_identity_files(work, policy_text)
        state = work / "state"
        state.mkdir()
        os.chown(state, user.uid, user.gid)
        d = UserDaemon(work, free_port(SERVER_IP), netmap, policy, state, python=python,
                       pythonpath=pythonpath)
        d.uid, d.gid = user.uid, user.gid
        try:
            d.start()
            yield d
        finally:
            d.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
