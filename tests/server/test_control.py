"""The control socket: a real ControlServer in-process, the CLI as a subprocess, and
peer-credential checks from a process that really runs as another uid."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from tssh.errors import ControlError
from tssh.server.check import CheckError
from tssh.server.control import ControlServer, control_request, get_status

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534


class FakeDaemon:
    """A ControlHandler that remembers what it was told."""

    def __init__(self) -> None:
        self.ssh = True
        self.calls: list[bool] = []

    async def set_ssh(self, enabled: bool) -> None:
        self.calls.append(enabled)
        self.ssh = enabled

    async def status(self) -> dict[str, object]:
        return {
            "ssh": self.ssh,
            "listening": ["100.64.0.1:22"] if self.ssh else [],
            "identity": "netmap",
            "policy": {"source": "/etc/tssh/policy.hujson", "error": None},
            "recorders": [{"name": "rec", "address": "100.64.0.20:80", "healthy": True,
                           "error": None}],
            "sessions": [],
            "version": "test",
        }

    HELD: ClassVar[dict[str, object]] = {
        "id": "k7qdm2xa9fpt", "node": "bobpc", "login": "sys", "localUser": "sys",
        "since": "2026-12-03T18:00:00Z", "url": None}

    def check_list(self) -> list[dict[str, object]]:
        return [dict(self.HELD)]

    def check_approve(self, hold_id: str) -> dict[str, object]:
        if hold_id != self.HELD["id"]:
            raise CheckError(f"no login held as {hold_id!r}")
        return {"id": hold_id, "login": "sys", "node": "bobpc",
                "expires": "2026-12-04T06:00:00Z"}

    def check_deny(self, hold_id: str) -> dict[str, object]:
        return {"id": hold_id, "login": "sys", "node": "bobpc"}

    async def check_revoke(self, login: str | None) -> dict[str, object]:
        self.revoked = login
        return {"revoked": ["a", "b"], "connectionsEnded": 1}


async def cli(*args: str) -> tuple[int, str, str]:
    """Run ``python -m tssh ARGS`` without blocking the loop that serves the socket."""
    env = {k: v for k, v in os.environ.items() if k != "TSSH_STATE_DIR"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tssh", *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[tuple[FakeDaemon, Path]]:
    handler = FakeDaemon()
    server = ControlServer(tmp_path / "control.sock", handler)
    await server.start()
    try:
        yield handler, tmp_path
    finally:
        await server.close()
    assert not (tmp_path / "control.sock").exists()


async def test_status_json_and_text(daemon: tuple[FakeDaemon, Path]) -> None:
    _, state = daemon
    assert (state / "control.sock").stat().st_mode & 0o777 == 0o600
    code, out, err = await cli("status", "--json", "--state-dir", str(state))
    assert (code, err) == (0, "")
    assert json.loads(out)["recorders"][0]["address"] == "100.64.0.20:80"
    code, out, _ = await cli("status", "--state-dir", str(state))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "SSH: on"
    assert "listening: 100.64.0.1:22" in lines
    assert "policy: /etc/tssh/policy.hujson" in lines
    assert "  rec (100.64.0.20:80): healthy" in lines
    assert "version: test" in lines


async def test_set_ssh_on_and_off(daemon: tuple[FakeDaemon, Path]) -> None:
    handler, state = daemon
    code, out, err = await cli("set", "--ssh=false", "--state-dir", str(state))
    assert (code, out, err) == (0, "", "")
    assert handler.calls == [False]
    _, out, _ = await cli("status", "--state-dir", str(state))
    assert out.splitlines()[0] == "SSH: off"
    code, _, _ = await cli("set", "--ssh", "--state-dir", str(state))
    assert code == 0 and handler.calls == [False, True]


async def test_state_dir_from_environment(daemon: tuple[FakeDaemon, Path]) -> None:
    _, state = daemon
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tssh", "status", "--json", cwd=REPO,
        env={**os.environ, "TSSH_STATE_DIR": str(state)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0 and json.loads(out)["identity"] == "netmap"


@pytest.mark.parametrize("how", ["flag", "environment"])
async def test_state_dir_from_the_daemons_config_file(
        daemon: tuple[FakeDaemon, Path], tmp_path: Path, how: str) -> None:
    """A daemon configured only in its TOML file is reached with the same file."""
    _, state = daemon
    config = tmp_path / "tssh.toml"
    config.write_text(f'state_dir = "{state}"\nport = 2200\n')  # other keys are not read
    env = {k: v for k, v in os.environ.items() if k not in ("TSSH_STATE_DIR", "TSSH_CONFIG")}
    args = ["--config", str(config)] if how == "flag" else []
    if how == "environment":
        env["TSSH_CONFIG"] = str(config)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tssh", "status", "--json", *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    assert json.loads(out)["identity"] == "netmap"


async def test_daemon_not_running(tmp_path: Path) -> None:
    code, out, err = await cli("status", "--state-dir", str(tmp_path))
    assert code == 1 and out == ""
    assert err.startswith("tssh: tssh daemon is not running (no control socket ")
    assert len(err.splitlines()) == 1
    # A socket left behind by a daemon that died: connection refused.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "control.sock"))
    stale.close()
    code, _, err = await cli("set", "--ssh", "--state-dir", str(tmp_path))
    assert code == 1 and "tssh daemon is not running" in err and "refuses connections" in err


async def test_stale_socket_is_replaced_and_a_live_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    first = ControlServer(path, FakeDaemon())
    await first.start()
    try:
        second = ControlServer(path, FakeDaemon())
        with pytest.raises(ControlError, match="another tssh daemon is running"):
            await second.start()
        assert (await asyncio.to_thread(get_status, path))["ssh"] is True
    finally:
        await first.close()
    path.write_text("not a socket")
    with pytest.raises(ControlError, match="is not a socket"):
        await ControlServer(path, FakeDaemon()).start()


async def test_malformed_requests_get_error_answers(daemon: tuple[FakeDaemon, Path]) -> None:
    handler, state = daemon
    path = state / "control.sock"

    def raw(line: bytes) -> dict[str, object]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(path))
            s.sendall(line)
            data = s.makefile("rb").readline()
        answer: dict[str, object] = json.loads(data)
        return answer

    assert await asyncio.to_thread(raw, b"hello\n") == {
        "ok": False, "error": "request is not a JSON line"}
    assert await asyncio.to_thread(raw, b'{"op": "reboot"}\n') == {
        "ok": False, "error": "unknown op 'reboot'"}
    assert await asyncio.to_thread(raw, b'{"op": "set", "ssh": "no"}\n') == {
        "ok": False, "error": "set: ssh must be true or false"}
    deep = await asyncio.to_thread(raw, b"[" * 30000 + b"]" * 30000 + b"\n")
    assert deep == {"ok": False, "error": "request is not a JSON line"}
    too_long = await asyncio.to_thread(raw, b'{"op": "' + b"x" * 70000 + b'"}\n')
    assert too_long == {"ok": False, "error": "request longer than 65536 bytes"}
    with pytest.raises(ControlError, match="nothing to set"):
        await asyncio.to_thread(control_request, path, {"op": "set"})
    assert handler.calls == []


# --- another uid ---------------------------------------------------------------------------

@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another uid can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="tssh-control-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def as_uid(uid: int, path: Path, request: dict[str, object] | None = None) -> str:
    """Fork, become ``uid`` for real, send ``request`` (default: ask for status); what the
    child saw, as text."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            try:
                answer = control_request(path, request or {"op": "status"}, timeout=10)
                result = "ok " + json.dumps(answer)
            except ControlError as e:
                result = f"ControlError: {e}"
            os.write(write_end, result.encode())
        except BaseException as e:
            os.write(write_end, f"child failed: {e!r}".encode())
        finally:
            os._exit(0)
    os.close(write_end)

    def read_all() -> str:
        chunks = []
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
        os.close(read_end)
        os.waitpid(pid, 0)
        return b"".join(chunks).decode()

    return await asyncio.wait_for(asyncio.to_thread(read_all), 30)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another uid")


@needs_root
async def test_other_uid_is_refused_by_file_mode(shared_dir: Path) -> None:
    server = ControlServer(shared_dir / "control.sock", FakeDaemon())
    await server.start()
    try:
        seen = await as_uid(NOBODY, shared_dir / "control.sock")
    finally:
        await server.close()
    assert seen.startswith("ControlError: permission denied on ")


@needs_root
async def test_other_uid_is_refused_by_peer_credentials(shared_dir: Path) -> None:
    handler = FakeDaemon()
    server = ControlServer(shared_dir / "control.sock", handler)
    await server.start()
    try:
        (shared_dir / "control.sock").chmod(0o666)  # a mistake in the file mode...
        seen = await as_uid(NOBODY, shared_dir / "control.sock")
    finally:
        await server.close()
    # ...is caught by the kernel-reported uid of the peer.
    assert seen == ("ControlError: permission denied: uid 65534 may not control this tssh"
                    " daemon (run as root or as the daemon's user)")


@needs_root
async def test_refusal_reaches_a_client_still_sending(shared_dir: Path) -> None:
    """The refusal is sent before the request is read: a client still sending (here a request
    longer than the socket buffer; on a loaded machine, a slow one) gets EPIPE on send and must
    still read why it was refused."""
    server = ControlServer(shared_dir / "control.sock", FakeDaemon())
    await server.start()
    try:
        (shared_dir / "control.sock").chmod(0o666)
        seen = await as_uid(NOBODY, shared_dir / "control.sock",
                            {"op": "status", "pad": "x" * (4 << 20)})
    finally:
        await server.close()
    assert seen.startswith("ControlError: permission denied: uid 65534 may not control"), seen


def test_client_reads_an_answer_sent_before_its_request_was_read(tmp_path: Path) -> None:
    """The client side of the above, without root: a server that answers at once and closes."""
    path = tmp_path / "control.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    listener.settimeout(10)

    def answer_and_close() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b'{"ok": false, "error": "permission denied: not you"}\n')

    thread = threading.Thread(target=answer_and_close)
    thread.start()
    try:
        with pytest.raises(ControlError, match=r"^permission denied: not you$"):
            control_request(path, {"op": "status", "pad": "x" * (4 << 20)}, timeout=10)
    finally:
        thread.join(10)
        listener.close()


@needs_root
async def test_the_daemons_own_uid_is_served(shared_dir: Path) -> None:
    server = ControlServer(shared_dir / "control.sock", FakeDaemon(), daemon_uid=NOBODY)
    await server.start()
    try:
        (shared_dir / "control.sock").chmod(0o666)
        seen = await as_uid(NOBODY, shared_dir / "control.sock")
    finally:
        await server.close()
    assert seen.startswith("ok ") and json.loads(seen[3:])["ssh"] is True


# --- where the socket lives -----------------------------------------------------------------

@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o770])
async def test_state_dir_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    """Anyone who can write the directory could swap the socket for a symlink between bind
    and chmod (making the daemon chmod another file) or for their own socket."""
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(mode)
    with pytest.raises(ControlError, match=r"writable by other users.*chmod 700"):
        await ControlServer(state / "control.sock", FakeDaemon()).start()
    assert not (state / "control.sock").exists()


@needs_root
async def test_state_dir_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, NOBODY, NOBODY)
    with pytest.raises(ControlError, match=r"owned by uid 65534"):
        await ControlServer(state / "control.sock", FakeDaemon()).start()
    assert not (state / "control.sock").exists()


async def test_state_dir_is_created_private(tmp_path: Path) -> None:
    server = ControlServer(tmp_path / "new" / "state" / "control.sock", FakeDaemon())
    await server.start()
    try:
        assert (tmp_path / "new" / "state").stat().st_mode & 0o777 == 0o700
    finally:
        await server.close()



async def test_unusable_socket_path_is_a_control_error(tmp_path: Path) -> None:
    """No OSError traceback for the daemon's user: one ControlError line naming the path."""
    (tmp_path / "file").write_text("")
    with pytest.raises(ControlError, match="cannot open the control socket"):
        await ControlServer(tmp_path / "file" / "control.sock", FakeDaemon()).start()
    deep = tmp_path / ("d" * 100)
    deep.mkdir(mode=0o700)
    with pytest.raises(ControlError, match="cannot open the control socket"):
        await ControlServer(deep / "control.sock", FakeDaemon()).start()


async def test_a_status_that_is_not_json_gets_an_error_answer(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A daemon bug (a Path or datetime in the status) must reach the user as the daemon's
    error line and land in its log, not as a connection closed without a word."""

    class BadStatus(FakeDaemon):
        async def status(self) -> dict[str, object]:
            return {"ssh": True, "stateDir": tmp_path}

    server = ControlServer(tmp_path / "control.sock", BadStatus())
    await server.start()
    try:
        with pytest.raises(ControlError, match="internal error in the daemon; see its log"):
            await asyncio.to_thread(get_status, tmp_path / "control.sock")
    finally:
        await server.close()
    assert "not JSON serializable" in caplog.text


async def test_check_commands(daemon: tuple[FakeDaemon, Path]) -> None:
    handler, state = daemon
    code, out, err = await cli("check", "list", "--json", "--state-dir", str(state))
    assert (code, err) == (0, "")
    assert json.loads(out) == {"pending": [FakeDaemon.HELD]}
    code, out, _ = await cli("check", "list", "--state-dir", str(state))
    assert out == "k7qdm2xa9fpt  sys from bobpc as sys, waiting since 2026-12-03T18:00:00Z\n"
    code, out, _ = await cli("check", "approve", "k7qdm2xa9fpt", "--state-dir", str(state))
    assert (code, out) == (0, "approved sys from bobpc until 2026-12-04T06:00:00Z\n")
    code, out, err = await cli("check", "approve", "nope", "--state-dir", str(state))
    assert code == 1 and err == "tssh: no login held as 'nope'\n"
    code, out, _ = await cli("check", "deny", "k7qdm2xa9fpt", "--state-dir", str(state))
    assert (code, out) == (0, "denied sys from bobpc\n")
    code, out, _ = await cli("check", "revoke", "--login", "sys", "--state-dir", str(state))
    assert (code, out) == (0, "revoked 2 approval(s); ended 1 connection(s)\n")
    assert handler.revoked == "sys"
    code, out, _ = await cli("check", "revoke", "--state-dir", str(state))
    assert code == 0 and handler.revoked is None


@pytest.mark.parametrize(("request_", "error"), [
    ({"op": "check.approve"}, "check.approve: id must be the held login's id"),
    ({"op": "check.deny", "id": 3}, "check.deny: id must be the held login's id"),
    ({"op": "check.revoke", "login": ""}, "check.revoke: login must be a login name"),
])
async def test_check_requests_checked(daemon: tuple[FakeDaemon, Path],
                                      request_: dict[str, object], error: str) -> None:
    _, state = daemon
    with pytest.raises(ControlError, match=error):
        await asyncio.to_thread(control_request, state / "control.sock", request_)
