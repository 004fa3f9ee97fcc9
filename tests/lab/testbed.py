"""The reliability lab's tailnet: the whole product as an operator runs it, on a WireGuard mesh.

Five nodes (network namespaces joined by wireguard-go, tests/identity/wglab.py):

- ``client``: alice's laptop, where the stock ``ssh``, ``scp``, ``sftp`` and ``rsync`` run and
  the recorders' API is read (alice is a viewer);
- ``server1``, ``server2``: ``tssh daemon`` with the ``wireguard`` identity backend, each with
  its own copy of the inventory (so one can lose a node while the other keeps it);
- ``recdisk``: a recorder storing on a small file system of its own (a tmpfs mounted for the
  lab), so that "disk full" is a real ENOSPC;
- ``recs3``: a recorder storing in S3, moto's standalone server on that node's loopback.

alice may log in as two local accounts: ``enforced`` (every session recorded with
``enforceRecorder``) and ``unenforced`` (recorded, not enforced). server1 tries ``recdisk``
then ``recs3``; server2 the other way round.

Everything the lab starts is a ``Service`` known by PID and start time, written with the rest
of the lab's state to a file, so ``python -m tests.lab down`` ends exactly what ``up``
started, and nothing else.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tests.identity.wglab import REPO, Lab, build_lab, lab_unavailable_reason, run
from tests.openssh import CLIENT_OPTIONS
from tests.processes import start_time, stop_pid, stop_process
from tests.recorder.moto import AWS_ENV

NODES = ["client", "server1", "server2", "recdisk", "recs3"]
SERVERS = ("server1", "server2")
RECORDERS = ("recdisk", "recs3")
ALICE = "alice@example.com"
SSH_PORT = 22
RECORDER_PORT = 80
S3_PORT = 9000  # moto, on recs3's own loopback
BUCKET = "lab"
DISK_SIZE_MIB = 24
SSH_OPTIONS = (*CLIENT_OPTIONS, "-o", "ConnectTimeout=10")
RECORDER_ORDER = {"server1": ("recdisk", "recs3"), "server2": ("recs3", "recdisk")}
STATE_FILE = Path(tempfile.gettempdir()) / "tssh-lab.json"
NODE_IDS = {"client": "nCLI1", "server1": "nSRV1", "server2": "nSRV2",
            "recdisk": "nRED1", "recs3": "nRES1"}


class LabError(RuntimeError):
    """The lab could not be built, or a part of it did not come back."""


def unavailable_reason() -> str | None:
    """Why this machine cannot run the lab, or None if it can."""
    if reason := lab_unavailable_reason():
        return reason
    for tool in ("ssh", "scp", "sftp", "rsync", "useradd", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not (Path(sys.executable).parent / "moto_server").exists():
        return "moto_server is not installed beside the Python interpreter"
    return None


@dataclass
class Service:
    """One process the lab runs in a node: a daemon, a recorder or the S3 server."""

    name: str
    node: str
    argv: list[str]  # python arguments, or an absolute program and its arguments
    log: str
    port: int | None  # the tailnet port it listens on; None for S3 (the node's loopback)
    env: dict[str, str] = field(default_factory=dict)
    pid: int = 0
    started: int = 0  # the kernel's start time of ``pid``
    popen: subprocess.Popen[bytes] | None = field(default=None, compare=False, repr=False)

    def running(self) -> bool:
        return self.pid != 0 and start_time(self.pid) == self.started

    def state(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "popen"}


@dataclass
class Testbed:
    __test__ = False  # not a test class, whatever pytest guesses from the name

    lab: Lab
    workdir: Path
    enforced: str  # local account whose sessions must be recorded (enforceRecorder)
    unenforced: str  # local account whose sessions are recorded, not enforced
    services: dict[str, Service] = field(default_factory=dict)
    mounts: list[str] = field(default_factory=list)
    accounts: list[str] = field(default_factory=list)

    # -- addresses and files -------------------------------------------------------------

    def address(self, node: str) -> str:
        return self.lab.nodes[node].address

    def recorder_url(self, recorder: str) -> str:
        return f"http://{self.address(recorder)}:{RECORDER_PORT}"

    @property
    def disk_dst(self) -> Path:
        """recdisk's ``--dst``: the lab's small file system."""
        return self.workdir / "recdisk-dst"

    def state_dir(self, service: str) -> Path:
        return self.workdir / f"{service}-state"

    def inventory_path(self, service: str) -> Path:
        return self.workdir / f"inventory-{service}.hujson"

    def home(self, account: str) -> Path:
        return Path(os.path.expanduser(f"~{account}"))

    # -- the client node -----------------------------------------------------------------

    def client_argv(self, *argv: str) -> list[str]:
        return self.lab.exec_argv("client", *argv)

    def ssh_argv(self, server: str, login: str, *remote: str,
                 options: tuple[str, ...] = ()) -> list[str]:
        return self.client_argv("ssh", *options, *SSH_OPTIONS,
                                f"{login}@{self.address(server)}", *remote)

    def ssh(self, server: str, login: str, *remote: str, options: tuple[str, ...] = (),
            input: bytes | None = None, timeout: float = 30,
            ) -> subprocess.CompletedProcess[bytes]:
        """The stock ssh client on the client node, to ``server``'s tailnet address."""
        return subprocess.run(self.ssh_argv(server, login, *remote, options=options),
                              input=input, capture_output=True, timeout=timeout)

    @contextlib.contextmanager
    def live_ssh(self, server: str, login: str, script: str,
                 options: tuple[str, ...] = ()) -> Iterator[subprocess.Popen[bytes]]:
        """An ssh session running ``script`` in the background; killed on the way out if
        the test did not end it."""
        proc = subprocess.Popen(self.ssh_argv(server, login, script, options=options),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)

    # -- the recorders' API, read from the client node as alice --------------------------

    def api(self, recorder: str, path: str) -> tuple[int, Any]:
        """GET ``path`` of ``recorder``'s API from the client node: (status, JSON body)."""
        status, body = self.lab.http_get("client", self.recorder_url(recorder) + path)
        return status, json.loads(body) if body.strip().startswith((b"{", b"[")) else body

    def recordings(self, recorder: str, **filters: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"limit": "500", **filters})
        status, body = self.api(recorder, f"/api/v1/recordings?{query}")
        if status != 200:
            raise AssertionError(f"{recorder} list: {status} {body!r}")
        entries: list[dict[str, Any]] = body["recordings"]
        return entries

    def find_recording(self, recorder: str, marker: str, statuses: tuple[str, ...] = (
                       "complete",), timeout: float = 20, **filters: str) -> dict[str, Any]:
        """The recording on ``recorder`` whose command holds ``marker``, once its status is
        one of ``statuses``; found with the list's ``filters`` (``user``, ``node``)."""
        deadline = time.monotonic() + timeout
        seen: list[dict[str, Any]] = []
        while True:
            seen = [r for r in self.recordings(recorder, **filters)
                    if marker in r["header"].get("command", "")]
            for entry in seen:
                if entry["status"] in statuses:
                    return entry
            if time.monotonic() > deadline:
                raise AssertionError(f"no {'/'.join(statuses)} recording of {marker!r} on "
                                     f"{recorder} (filters {filters}): {seen}")
            time.sleep(0.2)

    def cast(self, recorder: str, recording_id: str) -> tuple[dict[str, Any], list[Any]]:
        """A recording's header and events, as the API serves its cast."""
        status, body = self.lab.http_get(
            "client", f"{self.recorder_url(recorder)}/api/v1/recordings/{recording_id}/cast")
        if status != 200:
            raise AssertionError(f"cast {recording_id}: {status}")
        lines = body.decode().splitlines()
        events = []
        for line in lines[1:]:
            with contextlib.suppress(ValueError):  # a torn last line of an interrupted one
                events.append(json.loads(line))
        return json.loads(lines[0]), events

    def output(self, recorder: str, recording_id: str) -> str:
        """The terminal output a recording holds (its ``"o"`` events, joined)."""
        return "".join(e[2] for e in self.cast(recorder, recording_id)[1] if e[1] == "o")

    def verify(self, recorder: str, recording_id: str) -> dict[str, Any]:
        status, body = self.api(recorder, f"/api/v1/recordings/{recording_id}/verify")
        if status != 200:
            raise AssertionError(f"verify {recording_id}: {status} {body!r}")
        result: dict[str, Any] = body
        return result

    def s3_object(self, key: str) -> bytes | None:
        """The object ``key`` in the lab's bucket, read inside recs3 with moto's credentials
        (moto refuses an unsigned GET); None while it does not exist."""
        out = subprocess.run(self.lab.exec_argv("recs3", sys.executable, "-c", S3_GET,
                                                f"http://127.0.0.1:{S3_PORT}", BUCKET, key),
                             capture_output=True, timeout=30, env={**os.environ, **AWS_ENV})
        if out.returncode == 3:
            return None
        if out.returncode != 0:
            raise LabError(f"reading s3://{BUCKET}/{key}: {out.stderr.decode()[-2000:]}")
        return out.stdout

    # -- the daemons ---------------------------------------------------------------------

    def tssh(self, server: str, *args: str, timeout: float = 20,
             ) -> subprocess.CompletedProcess[str]:
        """A ``tssh`` command on ``server`` (its control socket, in its state dir)."""
        return subprocess.run(
            [sys.executable, "-m", "tssh", *args, "--state-dir", str(self.state_dir(server))],
            cwd=REPO, capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )

    def wait_control(self, server: str, timeout: float = 30) -> dict[str, Any]:
        """``server``'s ``tssh status --json``, once its control socket answers."""
        deadline = time.monotonic() + timeout
        while (result := self.tssh(server, "status", "--json")).returncode != 0:
            if time.monotonic() > deadline:
                raise LabError(f"{server}: tssh status does not answer: {result.stderr}")
            time.sleep(0.1)
        status: dict[str, Any] = json.loads(result.stdout)
        return status

    def log_text(self, service: str) -> str:
        """A service's whole log (recorders log plain lines, daemons JSON lines)."""
        return Path(self.services[service].log).read_text(errors="replace")

    def log_entries(self, service: str) -> list[dict[str, Any]]:
        """The JSON lines of a service's log (daemons and recorders log one per line)."""
        entries = []
        for line in self.log_text(service).splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    entries.append(entry)
        return entries

    def wait_log(self, service: str, match: Callable[[dict[str, Any]], bool],
                 timeout: float = 20, what: str = "log line") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.log_entries(service) if match(e)]
            if found:
                return found[-1]
            if time.monotonic() > deadline:
                tail = self.log_text(service)[-3000:]
                raise AssertionError(f"no {what} in {service}'s log: {tail}")
            time.sleep(0.1)

    def write_inventory(self, service: str, without: tuple[str, ...] = ()) -> None:
        """``service``'s inventory: every node but ``without`` (it follows the file)."""
        nodes = [node_entry(self.lab, name) for name in NODES if name not in without]
        path = self.inventory_path(service)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"nodes": nodes}, indent=2))
        tmp.replace(path)

    # -- faults --------------------------------------------------------------------------

    def fill_disk(self) -> int:
        """Fill recdisk's file system to the last byte; the bytes written."""
        written = 0
        fd = os.open(self.disk_dst / "filler", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for size in (1 << 20, 4096, 1):
                while True:
                    try:
                        written += os.write(fd, b"\0" * size)
                    except OSError as e:
                        if e.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        return written

    def free_disk(self) -> None:
        (self.disk_dst / "filler").unlink(missing_ok=True)

    @contextlib.contextmanager
    def stepped_clock(self, name: str) -> Iterator[Callable[[float], None]]:
        """Run ``name`` under libfaketime for the duration: yields ``step(seconds)``, which
        sets its wall clock that far from the real one, at once (its monotonic clock is
        left alone, as an NTP step leaves it). ``name`` is restarted as it was on the way
        out."""
        library = faketime_library()
        if library is None:
            raise LabError("libfaketime is not installed (Debian package libfaketime)")
        service, control = self.services[name], self.workdir / f"{name}.faketime"
        control.write_text("+0\n")
        plain = service.env
        service.env = {**plain, "LD_PRELOAD": str(library),
                       "FAKETIME_TIMESTAMP_FILE": str(control), "FAKETIME_NO_CACHE": "1",
                       "FAKETIME_DONT_FAKE_MONOTONIC": "1"}

        def step(seconds: float) -> None:
            control.write_text(f"{seconds:+.0f}\n")

        try:
            self.stop(name)
            self.start(name)
            yield step
        finally:
            service.env = plain
            self.stop(name)
            self.start(name)

    def stop(self, name: str, kill: bool = False) -> None:
        """End a service: SIGTERM (a clean stop), or SIGKILL (a crash)."""
        service = self.services[name]
        if kill and service.running():
            os.kill(service.pid, signal.SIGKILL)
        if service.popen is not None:
            stop_process(service.popen)
        else:
            stop_pid(service.pid, service.started)

    def pause(self, name: str) -> None:
        """Freeze a service (SIGSTOP): it holds its connections and answers nothing."""
        os.kill(self.services[name].pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        os.kill(self.services[name].pid, signal.SIGCONT)

    def start(self, *names: str) -> None:
        """(Re)start services with the arguments they were first given, and wait until
        each answers."""
        for name in names:
            launch(self, self.services[name])
        for name in names:
            wait_ready(self, self.services[name])

    def restore(self) -> None:
        """Undo what a scenario may have done: every service running and awake, the
        inventories whole, the disk free. Run after each test."""
        self.free_disk()
        for name, service in self.services.items():
            if service.running():
                self.resume(name)
        for server in (*SERVERS, *RECORDERS):
            self.write_inventory(server)
        down = [name for name, s in self.services.items() if not s.running()]
        if "s3" in down:
            self.start("s3")
            down.remove("s3")
        self.start(*down)
        for server in SERVERS:
            result = self.tssh(server, "set", "--ssh")
            if result.returncode != 0:
                raise LabError(f"tssh set --ssh on {server}: {result.stderr}")

    # -- state and teardown --------------------------------------------------------------

    def save(self, path: Path) -> None:
        state = {"lab": self.lab.state(), "workdir": str(self.workdir),
                 "enforced": self.enforced, "unenforced": self.unenforced,
                 "services": [s.state() for s in self.services.values()],
                 "mounts": self.mounts, "accounts": self.accounts}
        path.write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, path: Path) -> Testbed:
        state = json.loads(path.read_text())
        bed = cls(Lab.from_state(state["lab"]), Path(state["workdir"]), state["enforced"],
                  state["unenforced"], mounts=state["mounts"], accounts=state["accounts"])
        for s in state["services"]:
            bed.services[s["name"]] = Service(**s)
        return bed

    def down(self) -> None:
        """End every service (by PID), unmount, remove the accounts and the mesh."""
        errors = []
        for name in reversed(list(self.services)):
            try:
                if self.services[name].running():
                    self.resume(name)
                self.stop(name)
            except Exception as e:  # tear down the rest all the same
                errors.append(f"{name}: {e}")
        for mount in self.mounts:
            subprocess.run(["umount", "-l", mount], capture_output=True, timeout=20)
        self.mounts.clear()
        for account in self.accounts:
            subprocess.run(["userdel", "-r", "-f", account], capture_output=True, timeout=20)
        self.accounts.clear()
        self.lab.close()
        if errors:
            raise LabError("lab torn down with errors: " + "; ".join(errors))


def faketime_library() -> Path | None:
    """Debian's libfaketime, which steps one process's wall clock (LD_PRELOAD), if
    installed."""
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
    return found[0] if found else None


def node_entry(lab: Lab, name: str) -> dict[str, Any]:
    """``name``'s inventory entry: the client is alice's, the others are tagged."""
    node = lab.nodes[name]
    entry: dict[str, Any] = {"name": name, "id": NODE_IDS[name], "addresses": [node.address],
                             "wireguardKey": node.public_key}
    if name == "client":
        entry["user"] = ALICE
    elif name in SERVERS:
        entry["tags"] = ["tag:prod"]
    else:
        entry["tags"] = ["tag:recorder"]
    return entry


def policy(recorders: list[str], enforced: str, unenforced: str) -> str:
    """alice may log in to the servers as ``enforced`` and ``unenforced``; both are recorded
    to ``recorders`` (addresses, in order), the first with ``enforceRecorder``."""
    rules = [{"action": "accept", "src": [ALICE], "dst": ["tag:prod"], "users": [user],
              "recorder": recorders,
              "enforceRecorder": enforce}
             for user, enforce in ((enforced, True), (unenforced, False))]
    return json.dumps({
        "tagOwners": {"tag:prod": [ALICE], "tag:recorder": [ALICE]},
        "groups": {"group:auditors": [ALICE]},
        "ssh": rules,
    }, indent=2)


def service_argv(bed: Testbed, name: str) -> tuple[str, list[str], int | None, dict[str, str]]:
    """(node, argv, tailnet port, extra environment) of one of the lab's services."""
    if name == "s3":
        moto = str(Path(sys.executable).parent / "moto_server")
        return "recs3", [moto, "-H", "127.0.0.1", "-p", str(S3_PORT)], None, AWS_ENV
    node = bed.lab.nodes[name]
    identity = ["--identity", "wireguard", "--netmap", str(bed.inventory_path(name)),
                "--policy", str(bed.workdir / f"policy-{name}.hujson"),
                "--wireguard-interface", node.interface]
    state = ["--state-dir", str(bed.state_dir(name))]
    if name in SERVERS:
        return name, ["-m", "tssh", "daemon", *identity, *state, "--port", str(SSH_PORT),
                      "--recorder-port", str(RECORDER_PORT)], SSH_PORT, {}
    dst = (["--dst", str(bed.disk_dst)] if name == "recdisk" else
           ["--dst", f"s3+http://127.0.0.1:{S3_PORT}", "--bucket", BUCKET])
    return name, ["-m", "recorder", *dst, *state, "--listen",
                  f"{node.address}:{RECORDER_PORT}", *identity,
                  "--viewer", "group:auditors"], RECORDER_PORT, AWS_ENV


def launch(bed: Testbed, service: Service) -> None:
    log = Path(service.log)
    if service.argv[0].startswith("/"):
        with log.open("ab") as out:
            proc = subprocess.Popen(bed.lab.exec_argv(service.node, *service.argv),
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env={**os.environ, **service.env})
    else:
        proc = bed.lab.start_python(service.node, service.argv, log, env=service.env)
    service.popen, service.pid = proc, proc.pid
    service.started = start_time(proc.pid) or 0


# Inside recs3: wait for moto, then create the bucket (moto keeps nothing across restarts).
MAKE_BUCKET = """
import sys, time, urllib.error, urllib.request
url = sys.argv[1]
for _ in range(300):
    try:
        urllib.request.urlopen(url, timeout=1).close()
        break
    except urllib.error.HTTPError:
        break
    except OSError:
        time.sleep(0.05)
req = urllib.request.Request(url + sys.argv[2], method="PUT")
try:
    urllib.request.urlopen(req, timeout=10).close()
except urllib.error.HTTPError as e:
    if e.code != 409:  # BucketAlreadyOwnedByYou
        raise
"""


# Inside recs3: print one object of the bucket; exit 3 if there is no such key.
S3_GET = """
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
try:
    body = s3.get_object(Bucket=sys.argv[2], Key=sys.argv[3])["Body"].read()
except s3.exceptions.NoSuchKey:
    sys.exit(3)
sys.stdout.buffer.write(body)
"""


def wait_ready(bed: Testbed, service: Service) -> None:
    assert service.popen is not None
    if service.port is not None:
        try:
            bed.lab.wait_until_listening(service.node, service.port, service.popen,
                                         Path(service.log), timeout=60)
        except (RuntimeError, TimeoutError) as e:
            raise LabError(f"{service.name} did not start: {e}") from None
        return
    out = subprocess.run(bed.lab.exec_argv(service.node, sys.executable, "-c", MAKE_BUCKET,
                                           f"http://127.0.0.1:{S3_PORT}/", BUCKET),
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise LabError(f"S3 on {service.node} did not start: {out.stderr[-2000:]}")


def up(workdir: Path) -> Testbed:
    """Build the lab under ``workdir`` and start every service; on any failure, whatever
    was started is ended before the error is raised."""
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)
    lab = build_lab(NODES)
    bed = Testbed(lab, workdir, enforced="", unenforced="")
    try:
        for role in ("enforced", "unenforced"):
            name = f"lab{role[0]}{os.urandom(5).hex()}"
            run("useradd", "-m", "-s", "/bin/bash", name)
            bed.accounts.append(name)
            setattr(bed, role, name)
        bed.disk_dst.mkdir()
        run("mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE_MIB}m,mode=0755", "lab-recdisk",
            str(bed.disk_dst))
        bed.mounts.append(str(bed.disk_dst))
        for name in (*SERVERS, *RECORDERS):
            bed.write_inventory(name)
            (workdir / f"policy-{name}.hujson").write_text(
                policy([bed.address(r) for r in RECORDER_ORDER.get(name, RECORDERS)],
                       bed.enforced, bed.unenforced))
        for name in ("s3", "recdisk", *SERVERS, "recs3"):
            node, argv, port, env = service_argv(bed, name)
            bed.services[name] = Service(name, node, argv, str(workdir / f"{name}.log"),
                                         port, env)
        # S3 first (recs3 needs its bucket); the others start meanwhile.
        for name in ("s3", "recdisk", *SERVERS):
            launch(bed, bed.services[name])
        wait_ready(bed, bed.services["s3"])
        launch(bed, bed.services["recs3"])
        for name in ("recdisk", *SERVERS, "recs3"):
            wait_ready(bed, bed.services[name])
        for server in SERVERS:  # the control socket comes up after the listener
            bed.wait_control(server)
    except BaseException:
        with contextlib.suppress(LabError):
            bed.down()
        raise
    return bed
