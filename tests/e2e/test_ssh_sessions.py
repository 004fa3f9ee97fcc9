"""Sessions as the local user: pty, credentials, environment, signals, clean-up."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import asyncssh
import pexpect
import pytest

from tests.e2e.conftest import (
    ALICE_IP,
    SERVER_IP,
    DaemonFactory,
    LocalUser,
    TsshDaemon,
    free_port,
    needs_root,
    run_ssh,
    ssh_command,
)
from tests.e2e.terminal import expect_size, wait_foreground


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_exec_runs_with_uid_gid_groups_home(daemon: TsshDaemon, local_user: LocalUser) -> None:
    result = run_ssh(daemon, local_user.name, "id -u; id -g; id -G; pwd; echo $USER $HOME")
    assert result.returncode == 0, result.stderr
    uid, gid, groups, cwd, names = result.stdout.decode().splitlines()
    assert (int(uid), int(gid)) == (local_user.uid, local_user.gid)
    expected = sorted(os.getgrouplist(local_user.name, local_user.gid))
    assert sorted(int(g) for g in groups.split()) == expected
    assert len(expected) >= 2  # the extra group from the fixture is there
    assert cwd == str(local_user.home)
    assert names == f"{local_user.name} {local_user.home}"


def test_interactive_pty_login_shell(daemon: TsshDaemon, local_user: LocalUser) -> None:
    argv = ssh_command(daemon, local_user.name, options=("-t",))
    child = pexpect.spawn(argv[0], argv[1:], timeout=10, dimensions=(30, 100))
    try:
        child.sendline('echo "A$((40+2))B $0"; tty; stty size; id -u; echo "T=$TERM"')
        child.expect(r"A42B -bash")
        child.expect(r"/dev/pts/\d+")
        pts = child.after.decode()
        child.expect(r"30 100")
        child.expect(str(local_user.uid))
        child.expect(r"T=\S+")
        assert child.after != b"T="
        child.setwinsize(40, 120)
        expect_size(child, "40 120", old="30 100")
        # Ctrl-C reaches the foreground job through the terminal, not the shell.
        child.sendline("sleep 30")
        wait_foreground(pts, [b"sleep", b"30"])
        child.sendcontrol("c")
        child.sendline("echo after=$?")
        child.expect("after=130")
        child.sendline("exit 7")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 7


def test_ctrl_c_on_forced_tty_command(daemon: TsshDaemon) -> None:
    argv = ssh_command(daemon, "root", "echo ready; sleep 30; echo not-reached",
                       options=("-t",))
    child = pexpect.spawn(argv[0], argv[1:], timeout=10)
    try:
        child.expect("ready")
        start = time.monotonic()
        child.sendcontrol("c")
        child.expect(pexpect.EOF)
        assert time.monotonic() - start < 5
        assert b"not-reached" not in (child.before or b"")
    finally:
        child.close(force=True)
    assert child.exitstatus == 130 or child.signalstatus is not None or child.exitstatus == 255


def test_environment_filtering(daemon: TsshDaemon) -> None:
    env = {**os.environ, "FOO_BAR": "yes", "LD_PRELOAD": "/nonexistent/evil.so",
           "BASH_ENV": "/tmp/evil", "OTHER_VAR": "no", "LANG": "C.UTF-8"}
    argv = ssh_command(
        daemon, "root",
        'echo "${FOO_BAR-unset} ${LD_PRELOAD-unset} ${BASH_ENV-unset} ${OTHER_VAR-unset} '
        '${LANG-unset}"',
        options=("-o", "SendEnv=FOO_BAR LD_PRELOAD BASH_ENV OTHER_VAR LANG"),
    )
    import subprocess

    result = subprocess.run(argv, env=env, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == "yes unset unset unset C.UTF-8"


async def _connect(daemon: TsshDaemon, user: str = "root") -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        SERVER_IP, daemon.port, local_addr=(ALICE_IP, 0), username=user, known_hosts=None,
    )


async def test_exit_signal_reported(daemon: TsshDaemon) -> None:
    async with await _connect(daemon) as conn:
        result = await conn.run("kill -TERM $$")
        assert result.exit_signal is not None and result.exit_signal[0] == "TERM"
    stock = run_ssh(daemon, "root", "kill -KILL $$")
    assert stock.returncode == 255


async def test_signal_request_reaches_process_group(daemon: TsshDaemon) -> None:
    async with await _connect(daemon) as conn:
        proc = await conn.create_process("sleep 300 & echo $!; wait")
        pid = int(await asyncio.wait_for(proc.stdout.readline(), 10))
        assert _pid_alive(pid)
        proc.send_signal("TERM")  # reaches the shell *and* its background child
        await asyncio.wait_for(proc.wait_closed(), 10)
        for _ in range(50):
            if not _pid_alive(pid):
                break
            await asyncio.sleep(0.1)
        assert not _pid_alive(pid)


async def test_channel_close_hangs_up_process_group(daemon: TsshDaemon) -> None:
    async with await _connect(daemon) as conn:
        proc = await conn.create_process("trap '' HUP; sleep 300 & echo $!; sleep 300")
        pid = int(await asyncio.wait_for(proc.stdout.readline(), 10))
        assert _pid_alive(pid)
    # SIGHUP first; the shell ignores it, so SIGKILL follows after the grace period.
    for _ in range(60):
        if not _pid_alive(pid):
            break
        await asyncio.sleep(0.1)
    assert not _pid_alive(pid)


def test_many_exec_sessions_on_one_connection(daemon: TsshDaemon) -> None:
    if not os.path.exists("/usr/bin/ssh"):
        pytest.skip(reason="no ssh")

    async def run() -> list[str]:
        async with await _connect(daemon) as conn:
            results = await asyncio.gather(*(conn.run(f"echo {i}") for i in range(8)))
            return [str(r.stdout).strip() for r in results]

    assert asyncio.run(run()) == [str(i) for i in range(8)]


class _HarshlyStartedDaemon(TsshDaemon):
    """A daemon started the way a careless launcher might: signals ignored (nohup-style),
    umask 000 and shielded from the OOM killer. Sessions must not inherit any of it.
    """

    def command(self) -> list[str]:
        setup = ('trap "" HUP QUIT TSTP TTIN TTOU USR1; umask 000; '
                 "echo -800 > /proc/self/oom_score_adj; ")
        return ["sh", "-c", setup + 'exec "$@"', "sh", *super().command()]


@needs_root
def test_session_does_not_inherit_daemon_process_state(daemon_factory: DaemonFactory,
                                                       local_user: LocalUser) -> None:
    harsh = _HarshlyStartedDaemon(
        workdir=daemon_factory.workdir, port=free_port(), netmap=daemon_factory.netmap,
        policy=daemon_factory.policy, state_dir=daemon_factory.workdir / "harsh-state",
    )
    daemon_factory.started.append(harsh)
    harsh.start()
    assert harsh.proc is not None
    with open(f"/proc/{harsh.proc.pid}/status") as f:
        daemon_ignored = next(line for line in f if line.startswith("SigIgn:")).split()[1]
    assert int(daemon_ignored, 16) & (1 << (signal.SIGQUIT - 1))  # the setup took effect
    probe = "umask; grep ^SigIgn: /proc/self/status; cat /proc/self/oom_score_adj"
    for options in (("-T",), ("-tt",)):  # pipes, then a pty
        result = run_ssh(harsh, local_user.name, probe, options=options)
        assert result.returncode == 0, (result.stdout, result.stderr)
        umask, ignored, oom = result.stdout.decode().replace("\r", "").split("\n")[:3]
        assert umask == "0022"  # the daemon's umask 000, tightened as sshd does
        assert int(ignored.split()[1], 16) == 0, ignored
        assert oom == "0"


def test_session_holds_only_its_stdio(daemon: TsshDaemon) -> None:
    """No daemon descriptor (listener, control socket, host key, other sessions' pipes, the
    pty master) reaches a session: it could accept SSH connections or answer control
    requests in the daemon's name."""
    assert daemon.proc is not None
    open_in_daemon = len(os.listdir(f"/proc/{daemon.proc.pid}/fd"))
    assert open_in_daemon > 5  # listener, control socket, epoll, ... are there to leak
    for options in (("-T",), ("-tt",)):
        result = run_ssh(daemon, "root", "ls /proc/$$/fd; exit 0", options=options)
        assert result.returncode == 0, result.stderr
        assert result.stdout.decode().split() == ["0", "1", "2"]


def test_session_that_cannot_start_says_why(daemon: TsshDaemon, local_user: LocalUser) -> None:
    import subprocess

    subprocess.run(["usermod", "-s", "/nonexistent/shell", local_user.name], check=True)
    result = run_ssh(daemon, local_user.name, "true")
    assert result.returncode == 1
    assert b"tssh: cannot start the session: No such file or directory" in result.stderr


def test_client_terminal_modes_reach_the_pty(daemon: TsshDaemon) -> None:
    import shlex

    argv = ssh_command(daemon, "root", "stty -a", options=("-t",))
    # The local terminal's modes travel in the pty request: make two of them unusual.
    script = f"stty erase ^H intr ^B; exec {shlex.join(argv)}"
    child = pexpect.spawn("/bin/sh", ["-c", script], timeout=10)
    try:
        child.expect(pexpect.EOF)
        output = (child.before or b"").decode(errors="replace")
    finally:
        child.close(force=True)
    assert "erase = ^H" in output and "intr = ^B" in output


async def test_daemon_stop_leaves_no_session_process_behind(daemon: TsshDaemon) -> None:
    conn = await _connect(daemon)
    try:
        proc = await conn.create_process("trap '' HUP; sleep 300 & echo $!; sleep 300")
        pid = int(await asyncio.wait_for(proc.stdout.readline(), 10))
        assert _pid_alive(pid)
        await asyncio.to_thread(daemon.stop)  # SIGTERM: sessions end, SIGHUP is ignored here
    finally:
        conn.close()
    for _ in range(20):  # the daemon kills what ignored SIGHUP before it exits
        if not _pid_alive(pid):
            break
        await asyncio.sleep(0.05)
    assert not _pid_alive(pid)
