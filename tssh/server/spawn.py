"""Start a session's process as the session's user, in its own session and process group.

``subprocess`` can switch uid, gid and groups but cannot give the child a controlling
terminal (that needs ``TIOCSCTTY`` in the child after ``setsid``), so this forks itself. The
child only makes system calls before ``execve``; failures travel back over a close-on-exec
pipe, as ``subprocess`` does it, so the caller gets an OSError rather than a silent exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import termios
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tssh.server.account import Account

_MAX_FD = 65536


@dataclass(frozen=True)
class SpawnRequest:
    executable: str
    argv: Sequence[str]  # argv[0] may differ from the executable ("-bash")
    env: Mapping[str, str]
    cwd: str
    account: Account | None  # None: keep the daemon's own credentials
    stdin: int
    stdout: int
    stderr: int
    controlling_tty: bool = False  # stdin is a pty slave that becomes the controlling tty


def _reset_process_state() -> None:
    """Undo what the daemon's launcher or Python set that a login must not inherit.

    Ignored signals survive ``execve`` (Python ignores SIGPIPE and SIGXFSZ; ``nohup`` or a
    service manager may ignore more), and so do the signal mask, the umask and the OOM score
    adjustment (a daemon shielded from the OOM killer would shield its users' processes).
    The umask keeps the daemon's bits but always masks group and world write, as sshd does.
    """
    for signum in signal.valid_signals():
        if signum not in (signal.SIGKILL, signal.SIGSTOP):
            with contextlib.suppress(OSError, ValueError):
                signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    os.umask(os.umask(0o022) | 0o022)
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
        f.write("0")


def _child(request: SpawnRequest, error_fd: int) -> None:
    """Runs in the forked child; never returns."""
    stage = "setsid"
    try:
        os.setsid()
        if request.controlling_tty:
            stage = "controlling tty"
            fcntl.ioctl(request.stdin, termios.TIOCSCTTY, 0)
        stage = "stdio"
        for target, fd in enumerate((request.stdin, request.stdout, request.stderr)):
            os.dup2(fd, target, inheritable=True)
        os.closerange(3, error_fd)
        os.closerange(error_fd + 1, _MAX_FD)
        stage = "process state"
        _reset_process_state()
        account = request.account
        if account is not None and os.geteuid() == 0:
            stage = "setgroups"
            os.setgroups(list(account.groups))
            stage = "setgid"
            os.setgid(account.gid)
            stage = "setuid"
            os.setuid(account.uid)
        stage = "chdir"
        try:
            os.chdir(request.cwd)
        except OSError:
            os.chdir("/")
        stage = "exec"
        os.execve(request.executable, list(request.argv), dict(request.env))  # noqa: S606
    except OSError as e:
        code = e.errno or errno.EIO
        os.write(error_fd, f"{code}:{stage}".encode())
    except BaseException:
        os.write(error_fd, f"{errno.EIO}:{stage}".encode())
    finally:
        os._exit(127)


def _fork(request: SpawnRequest) -> tuple[int, int]:
    """Fork the child; return its pid and the read end of its exec-status pipe."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child execs or exits
            os.close(read_fd)
            _child(request, write_fd)
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return pid, read_fd


def _collect(pid: int, read_fd: int, executable: str) -> int:
    """Read the exec status (EOF: exec succeeded) and close the pipe; raise if it failed."""
    report = b""
    try:
        while True:  # bounded: the child writes at most one short message, then exits
            chunk = os.read(read_fd, 256)
            if not chunk:
                break
            report += chunk
    finally:
        os.close(read_fd)
    if report:
        os.waitpid(pid, 0)
        code_text, _, stage = report.decode(errors="replace").partition(":")
        code = int(code_text) if code_text.isdigit() else errno.EIO
        raise OSError(code, f"{os.strerror(code)} ({stage}: {executable})")
    return pid


def spawn(request: SpawnRequest) -> int:
    """Fork and exec; return the child's pid (also its session and process group id).

    Blocks until the child has exec'd. Raises OSError with the child's errno if it could not.
    """
    pid, read_fd = _fork(request)
    return _collect(pid, read_fd, request.executable)


async def spawn_async(request: SpawnRequest) -> int:
    """``spawn`` without blocking the event loop while the child gets to ``execve``.

    In a large daemon fork and exec take milliseconds; other sessions' echo waits otherwise.
    """
    pid, read_fd = _fork(request)
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(read_fd, on_readable)
    try:
        await ready
    except BaseException:
        loop.remove_reader(read_fd)
        os.close(read_fd)
        raise
    loop.remove_reader(read_fd)
    return _collect(pid, read_fd, request.executable)


def decode_wait_status(status: int) -> tuple[int | None, int | None, bool]:
    """(exit status, terminating signal, core dumped) from a ``waitpid`` status."""
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status), os.WCOREDUMP(status)
    return os.waitstatus_to_exitcode(status), None, False
