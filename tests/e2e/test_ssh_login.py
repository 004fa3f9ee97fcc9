"""Who gets in: the policy decides per connection, the stock client sees why it was refused."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import subprocess

import asyncssh
import pytest

from tests.e2e.conftest import (
    ALICE_IP,
    BOB_IP,
    CAROL_IP,
    REPO,
    SERVER_IP,
    UNKNOWN_IP,
    DaemonFactory,
    TsshDaemon,
    run_ssh,
)
from tests.ports import free_port, port_closed, wait_for_port


def test_exec_exit_status_and_separate_stderr(daemon: TsshDaemon) -> None:
    result = run_ssh(daemon, "root", "echo out; echo err >&2; exit 3")
    assert result.returncode == 3
    assert result.stdout == b"out\n"
    assert b"err\n" in result.stderr and b"out" not in result.stderr


def test_stdin_reaches_command_and_eof_ends_it(daemon: TsshDaemon) -> None:
    data = os.urandom(3 * 1024 * 1024)
    result = run_ssh(daemon, "root", "sha256sum", input=data)
    assert result.returncode == 0
    assert result.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()


def test_unknown_peer_refused_with_banner(daemon: TsshDaemon) -> None:
    result = run_ssh(daemon, "root", "true", source=UNKNOWN_IP)
    assert result.returncode == 255
    assert f"tssh: unknown peer {UNKNOWN_IP}".encode() in result.stderr
    # Refused at accept (docs/daemon.md): audited there, never reaching a login.
    entries = [e for e in daemon.log_entries() if e.get("event") == "connection.unknown_peer"]
    assert entries and entries[-1]["peer_ip"] == UNKNOWN_IP
    assert not [e for e in daemon.log_entries() if e.get("msg") == "login refused"]
    assert not [e for e in daemon.log_entries() if e.get("msg") == "session started"]


def test_peer_without_rule_refused(daemon: TsshDaemon) -> None:
    result = run_ssh(daemon, "root", "true", source=CAROL_IP)
    assert result.returncode == 255
    assert b"tssh: tailnet policy does not permit you to SSH to this node" in result.stderr


def test_user_not_in_rule_refused(daemon: TsshDaemon) -> None:
    result = run_ssh(daemon, "root", "true", source=BOB_IP)
    assert result.returncode == 255
    assert b'tssh: tailnet policy does not permit you to SSH as user "root"' in result.stderr
    # ... while the user the rule names gets in (and meets its nologin shell, as with sshd).
    allowed = run_ssh(daemon, "nobody", "id -un", source=BOB_IP)
    assert allowed.returncode == 1
    assert b"not available" in allowed.stdout + allowed.stderr


def test_check_rule_holds_then_times_out(daemon_factory: DaemonFactory) -> None:
    """The whole check flow is in test_check_mode.py; nobody approves here."""
    daemon = daemon_factory(extra_args=["--check-timeout", "1"])
    result = run_ssh(daemon, "sys", "true", source=BOB_IP)
    assert result.returncode == 255
    assert b"tssh: approval for sys@server not given within 1 s: login refused" in result.stderr


def test_unknown_local_user_refused(daemon: TsshDaemon) -> None:
    # autogroup:nonroot does not match a login with no local account (as tailscaled).
    result = run_ssh(daemon, "no-such-user-xyz", "true")
    assert result.returncode == 255
    assert (b'tssh: tailnet policy does not permit you to SSH as user "no-such-user-xyz"'
            in result.stderr)


def test_sha1_key_exchange_refused(daemon: TsshDaemon) -> None:
    result = run_ssh(
        daemon, "root", "true",
        options=("-o", "KexAlgorithms=diffie-hellman-group14-sha1", "-o", "LogLevel=INFO"),
    )
    assert result.returncode == 255
    assert b"key exchange" in result.stderr.lower()


def test_cbc_cipher_refused(daemon: TsshDaemon) -> None:
    result = run_ssh(daemon, "root", "true",
                     options=("-o", "Ciphers=aes128-cbc", "-o", "LogLevel=INFO"))
    assert result.returncode == 255
    assert b"no matching cipher" in result.stderr


def test_sha1_host_key_signature_refused(daemon: TsshDaemon) -> None:
    """The RSA host key signs with SHA-2 only (rsa-sha2-*), never SHA-1 ``ssh-rsa``."""
    result = run_ssh(daemon, "root", "true",
                     options=("-o", "HostKeyAlgorithms=ssh-rsa", "-o", "LogLevel=INFO"))
    assert result.returncode == 255
    assert b"no matching host key type" in result.stderr


@pytest.mark.parametrize("method", ["password", "publickey"])
async def test_insisting_client_accepted_by_policy_not_credentials(
    daemon: TsshDaemon, method: str
) -> None:
    """A client that skips `none` and sends a password or key: the credential is ignored."""
    kwargs: dict[str, object]
    if method == "password":
        kwargs = {"password": "anything", "preferred_auth": "password"}
    else:
        kwargs = {"client_keys": [asyncssh.generate_private_key("ssh-ed25519")],
                  "preferred_auth": "publickey"}
    async with asyncssh.connect(
        SERVER_IP, daemon.port, local_addr=(ALICE_IP, 0), username="root", known_hosts=None,
        **kwargs,
    ) as conn:
        result = await conn.run("id -u", check=True)
        assert result.stdout == "0\n"
    with pytest.raises((asyncssh.PermissionDenied, asyncssh.DisconnectError)):
        async with asyncssh.connect(
            SERVER_IP, daemon.port, local_addr=(CAROL_IP, 0), username="root",
            known_hosts=None, **kwargs,
        ) as conn:
            await asyncio.wait_for(conn.run("true"), 10)


def test_unauthenticated_connections_per_source_are_bounded(daemon: TsshDaemon) -> None:
    """A node holding many connections open without authenticating (each lives until the
    login timeout) gets only PER_SOURCE_STARTUPS of them; other nodes still log in."""
    from tssh.server.startups import PER_SOURCE_STARTUPS

    held: list[socket.socket] = []
    try:
        for _ in range(PER_SOURCE_STARTUPS + 5):
            s = socket.create_connection((SERVER_IP, daemon.port), 5,
                                         source_address=(CAROL_IP, 0))
            held.append(s)
        greeted, dropped = 0, 0
        for s in held:
            s.settimeout(5)
            try:
                data = s.recv(64)
            except OSError:
                data = b""
            if data.startswith(b"SSH-2.0-"):
                greeted += 1
            else:
                dropped += 1
        assert (greeted, dropped) == (PER_SOURCE_STARTUPS, 5)
        result = run_ssh(daemon, "root", "echo in")
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"in\n"
    finally:
        for s in held:
            s.close()
    # Once they are gone the source may connect again.
    result = run_ssh(daemon, "root", "echo again", source=CAROL_IP)
    assert b"tailnet policy does not permit you" in result.stderr


def test_forwarding_allowed_by_default_refused_by_the_config(
        daemon_factory: DaemonFactory) -> None:
    """As Tailscale SSH: an admitted login may forward; the config narrows it (more in
    tests/e2e/test_forwarding.py)."""
    daemon = daemon_factory()
    result = run_ssh(daemon, "root", options=("-W", f"{SERVER_IP}:{daemon.port}"),
                     input=b"", timeout=30)
    assert result.stdout.startswith(b"SSH-2.0-tssh")
    narrowed = daemon_factory(["--allow-tcp-forwarding", "no"],
                              state_dir=daemon_factory.workdir / "state-narrowed")
    result = run_ssh(narrowed, "root", options=("-W", f"{SERVER_IP}:{narrowed.port}",
                                                "-o", "LogLevel=INFO"))
    assert result.returncode == 255
    assert b'administratively prohibited: tssh: allow_tcp_forwarding = "no"' in result.stderr


def test_explicit_listen_address(daemon_factory: DaemonFactory) -> None:
    port = free_port("127.0.0.11")
    d = TsshDaemon(daemon_factory.workdir, port, daemon_factory.netmap, daemon_factory.policy,
                   daemon_factory.workdir / "state-listen", extra_args=("--listen", "127.0.0.11"))
    daemon_factory.started.append(d)
    with d.log.open("ab") as log:
        d.proc = subprocess.Popen(d.command(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    wait_for_port("127.0.0.11", port, d.proc)
    assert port_closed(SERVER_IP, port, timeout=0.5)
    d.wait_for_control()
    assert d.status()["listening"] == [f"127.0.0.11:{port}"]


def test_large_output_keeps_order_under_flow_control(daemon: TsshDaemon) -> None:
    """More than the channel window and the daemon's buffers: reading pauses and resumes."""
    size = 40 * 1024 * 1024
    result = run_ssh(daemon, "root", f"seq 1 100000000 | head -c {size}; "
                     f"seq 1 100 | head -c 200 >&2", timeout=60)
    assert result.returncode == 0, result.stderr[-500:]
    expected = subprocess.run(f"seq 1 100000000 | head -c {size}", shell=True,
                              capture_output=True, check=True).stdout
    assert len(result.stdout) == size
    assert hashlib.sha256(result.stdout).digest() == hashlib.sha256(expected).digest()
    assert result.stderr == subprocess.run("seq 1 100 | head -c 200", shell=True,
                                           capture_output=True, check=True).stdout
