"""Forwarding with the stock client: -L, -D, -R, -W, Unix sockets, -A; narrowed by the
config, made as the session's user, ended with the connection on revocation."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    ALICE_IP,
    POLICY,
    REPO,
    SERVER_IP,
    DaemonFactory,
    LocalUser,
    TsshDaemon,
    nonroot_daemon,
    require_tool,
    ssh_command,
    write_identity_files,
)
from tests.e2e.recorders import (  # noqa: F401  (fixtures)
    RecordingSetup,
    recorder_loop_fixture,
    recording_fixture,
)
from tests.polling import wait_for
from tests.ports import free_port


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


# --- helpers: an echo server, a client with a shell on the same connection ----------------

class EchoServer:
    """A TCP (or Unix socket) echo server in a thread of the test, on loopback."""

    def __init__(self, path: Path | None = None) -> None:
        if path is None:
            self.sock = socket.socket()
            self.sock.bind(("127.0.0.1", 0))
            self.port = int(self.sock.getsockname()[1])
        else:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.bind(str(path))
            self.port = 0
        self.sock.listen(16)
        self.peers: list[str] = []
        self.open = 0  # connections not yet closed by their other end
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, addr = self.sock.accept()
            except OSError:
                return
            self.peers.append(str(addr))
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        self.open += 1
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)
        self.open -= 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


def roundtrip(sock: socket.socket, payload: bytes = b"ping through the tunnel") -> bytes:
    sock.settimeout(10)
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def connect_retry(port: int, proc: subprocess.Popen[bytes], host: str = "127.0.0.1",
                  timeout: float = 20) -> socket.socket:
    """A connection to a port the ssh client (or the daemon) is about to listen on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            assert proc.stderr is not None
            raise AssertionError(f"ssh exited {proc.returncode}: {proc.stderr.read()!r}")
        with contextlib.suppress(OSError):
            return socket.create_connection((host, port), timeout=2)
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port}")


SHELL = "echo started; read line; echo got $line; exec sleep 30"


@contextlib.contextmanager
def client(daemon: TsshDaemon, user: str, *options: str,
           remote: str = SHELL) -> Iterator[subprocess.Popen[bytes]]:
    """``ssh OPTIONS user@server`` with a shell that says ``started``, then echoes one line
    (see ``shell_goes_on``); killed on the way out."""
    proc = subprocess.Popen(ssh_command(daemon, user, remote, options=options),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        if remote == SHELL:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"started\n"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def shell_goes_on(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"still-here\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == b"got still-here\n"


def stderr_until(proc: subprocess.Popen[bytes], text: str, timeout: float = 10) -> str:
    """Read the client's stderr until ``text`` shows (without blocking past ``timeout``)."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    os.set_blocking(fd, False)
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and text.encode() not in seen:
        with contextlib.suppress(BlockingIOError, TypeError):
            seen += os.read(fd, 65536)
        time.sleep(0.05)
    assert text.encode() in seen, seen.decode(errors="replace")
    return seen.decode(errors="replace")


def socks5_connect(port: int, host: str, dest_port: int) -> socket.socket:
    """The SOCKS5 handshake (no authentication, CONNECT to an IPv4 address)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"\x05\x01\x00")
    assert sock.recv(2) == b"\x05\x00"
    sock.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(host) + dest_port.to_bytes(2, "big"))
    reply = sock.recv(10)
    if reply[:2] != b"\x05\x00":
        sock.close()
        raise ConnectionRefusedError(f"SOCKS5 reply {reply!r}")
    return sock


FWD = ("-o", "ExitOnForwardFailure=yes")


# --- -L, -D, -R, -W ------------------------------------------------------------------------

def test_local_forward(daemon: TsshDaemon, echo: EchoServer) -> None:
    port = free_port()
    with client(daemon, "root", *FWD, "-L", f"{port}:127.0.0.1:{echo.port}") as proc:
        with connect_retry(port, proc) as sock:
            assert roundtrip(sock) == b"ping through the tunnel"
            big = os.urandom(3 * 1024 * 1024)
            assert roundtrip(sock, big) == big
            live = daemon.status()["forwards"]
            assert isinstance(live, list)
            assert [(f["kind"], f["destination"]) for f in live] == [
                ("local", f"127.0.0.1:{echo.port}")]
            assert live[0]["bytesSent"] >= len(big)
        shell_goes_on(proc)
    entries = daemon.log_entries()
    opened = [e for e in entries if e.get("event") == "forward.open"]
    assert opened and opened[0]["destination"] == f"127.0.0.1:{echo.port}"
    assert opened[0]["localUser"] == "root" and opened[0]["login"] == "root"
    closed = wait_for(lambda: [e for e in daemon.log_entries()
                               if e.get("event") == "forward.close"])
    assert closed[0]["bytesSent"] >= 3 * 1024 * 1024 + 23
    assert closed[0]["bytesReceived"] == closed[0]["bytesSent"]


def test_dynamic_forward_socks(daemon: TsshDaemon, echo: EchoServer) -> None:
    port = free_port()
    with client(daemon, "root", *FWD, "-D", str(port)) as proc:
        connect_retry(port, proc).close()
        with socks5_connect(port, "127.0.0.1", echo.port) as sock:
            assert roundtrip(sock) == b"ping through the tunnel"
        shell_goes_on(proc)


def test_remote_forward_and_port_zero(daemon: TsshDaemon, echo: EchoServer) -> None:
    port = free_port()
    with client(daemon, "root", *FWD, "-o", "LogLevel=INFO",
                "-R", f"{port}:127.0.0.1:{echo.port}",
                "-R", f"0:127.0.0.1:{echo.port}") as proc:
        text = stderr_until(proc, "Allocated port")
        allocated = int(re.search(r"Allocated port (\d+)", text).group(1))  # type: ignore[union-attr]
        for p in (port, allocated):
            with connect_retry(p, proc) as sock:
                assert roundtrip(sock) == b"ping through the tunnel"
        listeners = {f["destination"] for f in daemon.status()["forwards"]  # type: ignore[union-attr]
                     if f["kind"] == "remote-listener"}
        assert listeners == {f"127.0.0.1:{port}", f"127.0.0.1:{allocated}"}
        shell_goes_on(proc)


def test_stdio_forward_through_proxyjump(daemon_factory: DaemonFactory,
                                         echo: EchoServer) -> None:
    """``ssh -J``: the jump (alice, via -W) reaches the same daemon again, from 127.0.0.1."""
    daemon_factory.policy.write_text(POLICY.replace('"ssh": [', '''"ssh": [
    {"action": "accept", "src": ["scanner@example.com"], "dst": ["tag:prod"],
     "users": ["root"]},'''))
    daemon = daemon_factory()
    config = daemon.workdir / "ssh_config"
    config.write_text(f"Host jump\n  HostName {SERVER_IP}\n  Port {daemon.port}\n  User root\n"
                      f"  BindAddress {ALICE_IP}\nHost *\n  StrictHostKeyChecking no\n"
                      "  UserKnownHostsFile /dev/null\n  BatchMode yes\n  LogLevel ERROR\n")
    hop = subprocess.run(["ssh", "-F", str(config), "-J", "jump", "-p", str(daemon.port),
                          f"root@{SERVER_IP}", "echo through-the-jump"],
                         capture_output=True, timeout=60)
    assert hop.returncode == 0, hop.stderr
    assert hop.stdout == b"through-the-jump\n"
    opened = [e for e in daemon.log_entries() if e.get("event") == "forward.open"]
    assert opened[0]["destination"] == f"{SERVER_IP}:{daemon.port}"
    stdio = subprocess.run(ssh_command(daemon, "root", options=("-W", f"127.0.0.1:{echo.port}")),
                           input=b"plain -W\n", capture_output=True, timeout=30)
    assert stdio.stdout == b"plain -W\n"


# --- Unix sockets and the agent, as the user ------------------------------------------------

def test_unix_socket_forward(daemon: TsshDaemon, tmp_path: Path) -> None:
    remote = tmp_path / "remote.sock"
    server = EchoServer(remote)
    local = tmp_path / "local.sock"
    try:
        with client(daemon, "root", *FWD, "-L", f"{local}:{remote}") as proc:
            deadline = time.monotonic() + 20
            while not local.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(str(local))
                assert roundtrip(sock) == b"ping through the tunnel"
            shell_goes_on(proc)
    finally:
        server.close()
    kinds = [e["kind"] for e in daemon.log_entries() if e.get("event") == "forward.open"]
    assert kinds == ["local-unix"]


def test_agent_forwarding(daemon: TsshDaemon, local_user: LocalUser, tmp_path: Path) -> None:
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    sock = agent_dir / "agent.sock"
    agent = subprocess.Popen([require_tool("ssh-agent"), "-D", "-a", str(sock)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(sock.exists, what="ssh-agent socket")
        key = tmp_path / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "forwarded-key",
                        "-f", str(key)], check=True)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", str(key)], env=env, check=True, capture_output=True)
        remote = ('ssh-add -l; stat -c "%U %a" "$SSH_AUTH_SOCK" "$(dirname "$SSH_AUTH_SOCK")";'
                  ' echo "$SSH_AUTH_SOCK"')
        result = subprocess.run(ssh_command(daemon, local_user.name, remote, options=("-A",)),
                                env=env, capture_output=True, timeout=60)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.decode().splitlines()
        assert "forwarded-key (ED25519)" in lines[0]
        assert lines[1:3] == [f"{local_user.name} 600", f"{local_user.name} 700"]
        path = Path(lines[3])
        wait_for(lambda: not path.exists() and not path.parent.exists(),
                 what="agent socket removed")
    finally:
        agent.terminate()
        agent.wait(10)


def test_agent_refused_shell_goes_on(daemon_factory: DaemonFactory, tmp_path: Path) -> None:
    daemon = daemon_factory(["--allow-agent-forwarding", "no"])
    agent_sock = tmp_path / "a.sock"
    agent = subprocess.Popen([require_tool("ssh-agent"), "-D", "-a", str(agent_sock)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(agent_sock.exists, what="ssh-agent socket")
        result = subprocess.run(
            ssh_command(daemon, "root", 'echo "${SSH_AUTH_SOCK:-none}"',
                        options=("-A", "-o", "LogLevel=DEBUG1")),
            env={**os.environ, "SSH_AUTH_SOCK": str(agent_sock)}, capture_output=True,
            timeout=60)
    finally:
        agent.terminate()
        agent.wait(10)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"none\n"
    assert (b"Remote: tssh: allow_agent_forwarding = false refuses agent forwarding"
            in result.stderr)


# --- refusals: the text names the setting, the shell on the connection goes on -------------

# The client prints a failed channel open at LogLevel INFO (the tests' default is ERROR).
INFO = ("-o", "LogLevel=INFO")
REFUSED_LOCAL = 'tssh: allow_tcp_forwarding = "remote" refuses local forwarding'


def test_local_dynamic_and_stdio_refused(daemon_factory: DaemonFactory,
                                         echo: EchoServer) -> None:
    daemon = daemon_factory(["--allow-tcp-forwarding", "remote"])
    port, socks = free_port(), free_port()
    with client(daemon, "root", *INFO, "-L", f"{port}:127.0.0.1:{echo.port}",
                "-D", str(socks)) as proc:
        with connect_retry(port, proc) as sock:
            sock.settimeout(10)
            assert sock.recv(100) == b""  # the client closes it: the channel open failed
        stderr_until(proc, f"administratively prohibited: {REFUSED_LOCAL}")
        with pytest.raises((ConnectionRefusedError, ConnectionResetError, AssertionError)):
            socks5_connect(socks, "127.0.0.1", echo.port).close()
        shell_goes_on(proc)
    stdio = subprocess.run(ssh_command(daemon, "root",
                                       options=(*INFO, "-W", f"127.0.0.1:{echo.port}")),
                           input=b"x", capture_output=True, timeout=30)
    assert stdio.returncode == 255
    assert REFUSED_LOCAL.encode() in stdio.stderr
    refused = [e for e in daemon.log_entries() if e.get("event") == "forward.refused"]
    assert refused and refused[0]["reason"] == REFUSED_LOCAL
    assert echo.peers == []


def test_permit_open_refuses_other_destinations(daemon_factory: DaemonFactory,
                                                echo: EchoServer) -> None:
    daemon = daemon_factory(["--permit-open", "127.0.0.1:1"])
    port = free_port()
    with client(daemon, "root", *INFO, "-L", f"{port}:127.0.0.1:{echo.port}") as proc:
        connect_retry(port, proc).close()
        stderr_until(proc, f"tssh: permit_open does not include 127.0.0.1:{echo.port}")
        shell_goes_on(proc)


def test_remote_refused(daemon_factory: DaemonFactory, echo: EchoServer) -> None:
    daemon = daemon_factory(["--allow-tcp-forwarding", "local"])
    port = free_port()
    with client(daemon, "root", "-o", "LogLevel=DEBUG1", "-R",
                f"{port}:127.0.0.1:{echo.port}") as proc:
        text = stderr_until(proc, "remote port forwarding failed")
        assert ('Remote: tssh: allow_tcp_forwarding = "local" refuses remote forwarding'
                in text)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        shell_goes_on(proc)


def test_unix_socket_refused_by_match_block(daemon_factory: DaemonFactory,
                                            tmp_path: Path) -> None:
    config = tmp_path / "tssh.toml"
    config.write_text('[[match]]\nsrc = ["alice@example.com"]\nusers = ["root"]\n'
                      'allow_stream_local_forwarding = "no"\n')
    daemon = daemon_factory(["--config", str(config)])
    remote = tmp_path / "r.sock"
    server = EchoServer(remote)
    local = tmp_path / "l.sock"
    try:
        with client(daemon, "root", *INFO, "-L", f"{local}:{remote}") as proc:
            wait_for(local.exists, timeout=20, what="the client's Unix socket")
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(str(local))
                sock.settimeout(10)
                assert sock.recv(10) == b""
            stderr_until(proc, 'tssh: allow_stream_local_forwarding = "no" refuses Unix '
                         "socket forwarding to this node (match 1)")
            shell_goes_on(proc)
    finally:
        server.close()


def test_low_port_refused_to_a_normal_user(daemon: TsshDaemon, local_user: LocalUser,
                                           echo: EchoServer) -> None:
    """The listener is made as the user: the kernel refuses a port below 1024."""
    with client(daemon, local_user.name, "-o", "LogLevel=DEBUG1",
                "-R", f"127.0.0.1:999:127.0.0.1:{echo.port}") as proc:
        stderr_until(proc, f"Remote: tssh: cannot listen on 127.0.0.1:999 as "
                     f"{local_user.name}: Permission denied")
        shell_goes_on(proc)
    with client(daemon, local_user.name, "-L", f"{free_port()}:127.0.0.1:{echo.port}") as proc:
        shell_goes_on(proc)  # a normal user may forward otherwise


# --- revocation ends the whole connection ---------------------------------------------------

ONLY_NONROOT = POLICY.replace('"users": ["autogroup:nonroot", "root"]',
                              '"users": ["autogroup:nonroot"]')


@pytest.mark.parametrize("how", ["policy", "set-ssh-false"])
def test_revocation_ends_shell_tunnels_and_listeners(daemon: TsshDaemon, echo: EchoServer,
                                                     how: str) -> None:
    local, remote = free_port(), free_port()
    with client(daemon, "root", *FWD, "-L", f"{local}:127.0.0.1:{echo.port}",
                "-R", f"{remote}:127.0.0.1:{echo.port}") as proc:
        tunnel = connect_retry(local, proc)
        assert roundtrip(tunnel) == b"ping through the tunnel"
        with connect_retry(remote, proc) as through_listener:
            assert roundtrip(through_listener) == b"ping through the tunnel"
        wait_for(lambda: echo.open == 1, what="one connection left open at the echo server")
        if how == "policy":
            daemon.policy.write_text(ONLY_NONROOT)
        else:
            result = daemon.tssh("set", "--ssh=false")
            assert result.returncode == 0, result.stderr
        out, err = proc.communicate(timeout=15)
        ended = time.monotonic()
        message = (b"tssh: access revoked by a policy change" if how == "policy"
                   else b"tssh: SSH disabled on this node")
        assert message in out + err
        assert b"not-reached" not in out
        # The daemon's side of the tunnel and the -R listener are gone too, within a second.
        wait_for(lambda: echo.open == 0, timeout=1.0, what="the tunnel closed at the far end")
        tunnel.settimeout(1)
        with contextlib.suppress(ConnectionResetError):
            assert tunnel.recv(10) == b""
        tunnel.close()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", remote), timeout=1).close()
        assert time.monotonic() - ended < 1.0
    assert daemon.status()["forwards"] == []
    closes = [e for e in daemon.log_entries() if e.get("event") == "forward.close"]
    assert {e["kind"] for e in closes} >= {"local", "remote", "remote-listener"}


# --- recorded connections ------------------------------------------------------------------

def test_forwards_marked_in_the_recording(recording: RecordingSetup, local_user: LocalUser,
                                          echo: EchoServer) -> None:
    rec = recording.recorder()
    daemon = recording.daemon(enforce=False)
    port = free_port()
    with client(daemon, local_user.name, *FWD, "-L", f"{port}:127.0.0.1:{echo.port}") as proc:
        with connect_retry(port, proc) as sock:
            assert roundtrip(sock) == b"ping through the tunnel"
        wait_for(lambda: [e for e in daemon.log_entries() if e.get("event") == "forward.close"],
                 what="the forward closed")
        shell_goes_on(proc)
        proc.terminate()
    [upload] = recording.loop.wait_upload(rec)
    markers = [e[2] for e in upload.cast()[1] if e[1] == "m"]
    assert f"tssh: forward opened: local 127.0.0.1:{echo.port}" in markers
    assert (f"tssh: forward closed: local 127.0.0.1:{echo.port} (23 bytes sent, 23 received)"
            in markers)


def test_match_recorded_forbids_forwards(recording: RecordingSetup, local_user: LocalUser,
                                         echo: EchoServer, tmp_path: Path) -> None:
    recording.recorder()
    config = tmp_path / "tssh.toml"
    config.write_text('[[match]]\nrecorded = true\nallow_tcp_forwarding = "no"\n')
    daemon = recording.daemon(enforce=False, extra_args=("--config", str(config)))
    port = free_port()
    with client(daemon, local_user.name, *INFO, "-L", f"{port}:127.0.0.1:{echo.port}") as proc:
        connect_retry(port, proc).close()
        stderr_until(proc, 'tssh: allow_tcp_forwarding = "no" refuses local forwarding '
                     "(match 1)")
        shell_goes_on(proc)
    assert echo.peers == []


# --- more: Unix socket listeners and sockets only others may open, X11, VS Code's pattern ---

def test_remote_unix_listener_made_as_the_user(daemon: TsshDaemon, local_user: LocalUser,
                                               tmp_path: Path, echo: EchoServer) -> None:
    listen = local_user.home / "fwd.sock"
    with client(daemon, local_user.name, *FWD, "-R", f"{listen}:127.0.0.1:{echo.port}") as proc:
        wait_for(listen.exists, timeout=20, what="the listener's socket file")
        st = listen.stat()
        assert (st.st_uid, st.st_mode & 0o777) == (local_user.uid, 0o600)
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(listen))
            assert roundtrip(sock) == b"ping through the tunnel"
        shell_goes_on(proc)
    wait_for(lambda: not listen.exists(), what="the listener's socket removed")


def test_unix_socket_the_user_may_not_open(daemon: TsshDaemon, local_user: LocalUser,
                                           tmp_path: Path) -> None:
    private = tmp_path / "root-only"
    private.mkdir(mode=0o700)
    server = EchoServer(private / "s.sock")
    local = tmp_path / "l.sock"
    try:
        with client(daemon, local_user.name, *INFO,
                    "-L", f"{local}:{private / 's.sock'}") as proc:
            wait_for(local.exists, timeout=20, what="the client's Unix socket")
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(str(local))
                sock.settimeout(10)
                assert sock.recv(10) == b""
            stderr_until(proc, f"connect failed: tssh: cannot connect to {private / 's.sock'} "
                         f"as {local_user.name}: Permission denied")
            shell_goes_on(proc)
    finally:
        server.close()
    assert server.peers == []


def test_x11_refused_with_a_reason(daemon: TsshDaemon) -> None:
    result = subprocess.run(ssh_command(daemon, "root", "echo ran",
                                        options=("-X", "-o", "LogLevel=DEBUG1")),
                            env={**os.environ, "DISPLAY": "127.0.0.1:99"}, capture_output=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"ran\n"
    assert b"Remote: tssh: X11 forwarding is not supported by this server" in result.stderr


def test_vscode_pattern_socks_with_a_script_on_stdin(daemon: TsshDaemon,
                                                     echo: EchoServer) -> None:
    """VS Code Remote-SSH: ``ssh -T -D PORT host bash``, a script on stdin, then its traffic
    through the SOCKS port while the script runs."""
    port = free_port()
    proc = subprocess.Popen(ssh_command(daemon, "root", "bash",
                                        options=("-T", *FWD, "-D", str(port))),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"echo server-ready\nread done\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"server-ready\n"
        for _ in range(3):
            with socks5_connect(port, "127.0.0.1", echo.port) as sock:
                assert roundtrip(sock) == b"ping through the tunnel"
        proc.stdin.write(b"now\necho bye $done\n")
        proc.stdin.close()
        assert proc.stdout.readline() == b"bye now\n"
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_forwarding_on_a_daemon_that_is_not_root(local_user: LocalUser,
                                                 echo: EchoServer) -> None:
    with nonroot_daemon(local_user, [local_user.name]) as daemon:
        port = free_port()
        with client(daemon, local_user.name, *FWD, "-L", f"{port}:127.0.0.1:{echo.port}",
                    "-R", f"0:127.0.0.1:{echo.port}") as proc:
            with connect_retry(port, proc) as sock:
                assert roundtrip(sock) == b"ping through the tunnel"
            shell_goes_on(proc)
