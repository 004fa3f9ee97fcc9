"""One SSH session channel running one process as the session's user.

Shell, exec and the ``sftp`` subsystem, with or without a pty. The data path is an own loop
on raw file descriptors rather than asyncssh's stream API (which reads 8 KiB at a time):
large non-blocking ``os.read`` calls from the process, written to the channel, with reading
paused while the channel's send buffer is above its high-water mark; input from the client
written to the process with the channel paused while the pipe is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from tssh.audit.log import emit, peer_fields
from tssh.audit.scp import ScpAudit, scp_command
from tssh.audit.sftp import SftpAudit
from tssh.audit.transfer import TransferEvent, TransferParser
from tssh.errors import RecorderUnavailable, RecordingFailed
from tssh.forwarding import ForwardingSettings
from tssh.identity.base import Peer
from tssh.server.account import Account
from tssh.server.env import SessionEnvInput, build_env
from tssh.server.limits import duration_message
from tssh.server.pty import (
    Pty,
    WindowSize,
    give_tty,
    open_pty,
    set_window_size,
    tty_group_id,
)
from tssh.server.recording import (
    FAILED_MESSAGE,
    RECORDING_FAILED_EXIT_STATUS,
    REFUSED_EXIT_STATUS,
    REFUSED_MESSAGE,
    RecordingRequest,
    SessionDescription,
    SessionRecording,
)
from tssh.server.spawn import SpawnRequest, decode_wait_status, spawn_async
from tssh.server.stdin_pump import StdinPump
from tssh.server.transfer import TransferCommand, parse_transfer

log = logging.getLogger("tssh.session")

SFTP_SERVER = "/usr/lib/openssh/sftp-server"
READ_SIZE = 256 * 1024
PIPE_SIZE = 1024 * 1024
CHANNEL_HIGH_WATER = 1024 * 1024
HANGUP_GRACE = 2.0  # seconds between SIGHUP and SIGKILL of a closed session's processes
# ... and of a session whose enforced recording failed: nothing it does is recorded any more,
# so it gets no more time than it takes to act on SIGHUP (docs/recording.md).
UNRECORDED_GRACE = 0.1
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


@dataclass(frozen=True)
class ConnectionContext:
    """What every session of one authorized connection shares."""

    conn_id: str
    login: str  # the user name the client asked for
    account: Account
    peer: Peer
    peer_ip: str
    peer_port: int
    local_ip: str
    local_port: int
    accept_env: tuple[str, ...] = ()
    recording: RecordingRequest | None = None  # the rule names recorders
    # docs/config.md, "Forwarding"
    forwarding: ForwardingSettings = field(default_factory=ForwardingSettings)
    session_max_duration: int = 0  # seconds a session may run; 0: no limit

    def audit_fields(self) -> dict[str, object]:
        """The common audit fields of the connection (docs/audit.md)."""
        return {"conn": self.conn_id, "peer_ip": self.peer_ip, **peer_fields(self.peer),
                "login": self.login, "local_user": self.account.name}


@dataclass
class SessionInfo:
    """A live session, as ``tssh status`` shows it."""

    id: str
    user: str
    peer: str
    peer_ip: str
    kind: str  # shell | exec | subsystem
    started: float = field(default_factory=time.time)
    bytes_in: int = 0  # from the client
    bytes_out: int = 0  # to the client (stdout and stderr)


def _signal_number(name: str) -> int | None:
    value = getattr(signal, f"SIG{name}", None)
    return int(value) if isinstance(value, signal.Signals) else None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name.removeprefix("SIG")
    except ValueError:
        return str(number)


UNPARSABLE_MESSAGE = ("tssh: this transfer stream could not be audited and this node cuts "
                      "such sessions (audit_unparsable); session ended")
UNSETTLED_MESSAGE = ("tssh: the policy changed and this connection could not be re-checked "
                     "in time; session refused (try again)")

# One read buffer for every session (the event loop is single-threaded); each read is copied
# out once, to exactly its size, so whoever keeps the data (the channel, a recording) holds
# an immutable ``bytes``. ``os.read(fd, 256 KiB)`` would instead allocate (mmap) and free
# 256 KiB per call, which costs ten times more than the read itself for a keystroke's echo.
_READ_BUFFER = bytearray(READ_SIZE)
_READ_VIEW = memoryview(_READ_BUFFER)
# Data goes to the channel in packet-sized pieces: asyncssh cuts a larger write into packets
# by slicing its front off a bytearray, moving the rest each time (quadratic in the write).
# 32 KiB is the largest packet OpenSSH accepts.
CHANNEL_CHUNK = 32 * 1024


def _read(fd: int) -> bytes:
    count = os.readv(fd, [_READ_BUFFER])
    return bytes(_READ_VIEW[:count])


def _set_pipe_size(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)


class HungUpGroups:
    """Process groups of ended sessions that got SIGHUP and may not have exited yet.

    Each gets SIGKILL after ``HANGUP_GRACE``; a daemon that stops sooner calls ``finish`` so
    that nothing it started outlives it merely because it ignored SIGHUP.
    """

    def __init__(self) -> None:
        self._pending: set[int] = set()

    def add(self, pgid: int, grace: float = HANGUP_GRACE) -> None:
        self._pending.add(pgid)
        asyncio.get_running_loop().call_later(grace, self._kill, pgid)

    def _kill(self, pgid: int) -> None:
        if pgid in self._pending:
            self._pending.discard(pgid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)

    async def finish(self, grace: float = HANGUP_GRACE) -> None:
        """Wait up to ``grace`` seconds for the groups to exit, then SIGKILL the rest."""
        deadline = time.monotonic() + grace
        while self._pending and time.monotonic() < deadline:
            for pgid in list(self._pending):
                try:
                    os.killpg(pgid, 0)
                except ProcessLookupError:
                    self._pending.discard(pgid)
                except PermissionError:
                    pass
            if self._pending:
                await asyncio.sleep(0.05)
        for pgid in list(self._pending):
            self._kill(pgid)


class ProcessSession(asyncssh.SSHServerSession[bytes]):
    """The asyncssh session handler: requests in, one child process, exit status out."""

    def __init__(
        self,
        ctx: ConnectionContext,
        session_id: str,
        on_close: Callable[[ProcessSession], None],
        hung_up: HungUpGroups,
        sftp_server: str = SFTP_SERVER,
        settle: Callable[[], Awaitable[ConnectionContext | None]] | None = None,
        cut_unparsable: bool = False,
    ) -> None:
        """``settle``: the connection's context as the current policy has it, awaited
        before the process starts (None refuses the session)."""
        self._ctx = ctx
        self._settle = settle
        self._hung_up_groups = hung_up
        self._on_close = on_close
        self._sftp_server = sftp_server
        self._loop = asyncio.get_running_loop()
        self._chan: Any = None
        self.info = SessionInfo(
            id=session_id, user=ctx.account.name, peer=ctx.peer.name, peer_ip=ctx.peer_ip,
            kind="shell",
        )
        self._term: str | None = None
        self._size = WindowSize(80, 24)
        self._modes: dict[int, int] = {}
        self._want_pty = False
        self._command: str | None = None
        self._subsystem: str | None = None
        self._transfer: tuple[TransferCommand | None] | None = None  # decided once
        self._pty: Pty | None = None
        self._pid: int | None = None
        self._pidfd: int | None = None
        self._exit: tuple[int | None, int | None, bool] | None = None
        self._stdin = StdinPump(self._pause_reading, self._resume_reading)
        self._outputs: dict[int, bool] = {}  # fd -> is stderr
        self._reading = False
        self._starting = True
        self._hung_up = False
        self._closed = False
        self._finished = False
        self._start_task: asyncio.Task[None] | None = None
        self.recording: SessionRecording | None = None
        self._unrecorded = False  # the enforced recording failed: nothing more may run
        self._chan_paused = False
        self._finish_task: asyncio.Task[None] | None = None
        self._duration_timer: asyncio.TimerHandle | None = None
        # The transfer audit of an sftp or scp session: both directions pass through it.
        self._transfer_audit: TransferParser | None = None
        self._cut_unparsable = cut_unparsable
        self._cut = False  # cut for an unparsable transfer stream
        self._started_at = time.monotonic()

    # --- asyncssh callbacks: requests -------------------------------------------------

    def connection_made(self, chan: Any) -> None:
        self._chan = chan
        chan.set_write_buffer_limits(high=CHANNEL_HIGH_WATER)

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Any
    ) -> bool:
        self._want_pty = True
        self._term = term_type or None
        cols, rows, wpx, hpx = term_size
        self._size = WindowSize(cols or 80, rows or 24, wpx, hpx)
        self._modes = dict(term_modes)
        return True

    def shell_requested(self) -> bool:
        self.info.kind = "shell"
        return True

    def exec_requested(self, command: str) -> bool:
        self.info.kind = "exec"
        self._command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem != "sftp" or not os.access(self._sftp_server, os.X_OK):
            log.info("subsystem refused", extra={"subsystem": subsystem})
            return False
        self.info.kind = "subsystem"
        self._subsystem = subsystem
        return True

    def break_received(self, msec: int) -> bool:
        return False

    def session_started(self) -> None:
        # Before any data: the parser must see each direction from its first byte.
        self._transfer_audit = self._transfer_parser(self._argv()[1])
        self._start_task = self._loop.create_task(self._start_safely())

    async def _start_safely(self) -> None:
        try:
            await self._start()
        except OSError as e:
            self._starting = False
            log.warning(
                "session start failed",
                extra={"session": self.info.id, "user": self.info.user, "error": str(e)},
            )
            self._write_error(f"tssh: cannot start the session: {e.strerror or e}\r\n")
            if self.recording is not None:
                self.recording.end(1)
            if not self._closed:
                self._chan.exit(1)

    # --- process start -------------------------------------------------------------

    def _transfer_command(self) -> TransferCommand | None:
        """The exec command as a file transfer the daemon runs itself (no shell, no PTY), or
        None (docs/recording.md). Decided once, so the recording and the process agree."""
        if self._transfer is None:
            command = self._command
            transfer = None
            if command is not None and self._subsystem is None and not self._want_pty:
                transfer = parse_transfer(command, self._ctx.account.shell)
            self._transfer = (transfer,)
        return self._transfer[0]

    def _transfer_kind(self) -> str | None:
        """What the recording calls the session if it is a file transfer (metadata only)."""
        if self._subsystem == "sftp":
            return "sftp"
        transfer = self._transfer_command()
        return transfer.protocol if transfer is not None else None

    def _argv(self) -> tuple[str, list[str]]:
        account = self._ctx.account
        if self._subsystem == "sftp":
            return self._sftp_server, [os.path.basename(self._sftp_server)]
        if (transfer := self._transfer_command()) is not None:
            return transfer.executable, list(transfer.argv)
        if self._command is not None:
            return account.shell, [account.shell_name, "-c", self._command]
        return account.shell, [f"-{account.shell_name}"]

    async def _start_recording(self, request: RecordingRequest) -> bool:
        """Connect the recording before the process exists; False: refused (enforced)."""
        ctx = self._ctx
        desc = SessionDescription(
            session_id=self.info.id, conn_id=ctx.conn_id, peer=ctx.peer, login=ctx.login,
            local_user=ctx.account.name, source_address=ctx.local_ip, command=self._command,
            subsystem=self._subsystem, term=self._term, width=self._size.cols,
            height=self._size.rows, pty=self._want_pty and self._subsystem is None,
            transfer=self._transfer_kind(), peer_ip=ctx.peer_ip,
        )
        try:
            self.recording = await request.start(desc, self._recording_failed)
        except RecorderUnavailable:
            self._write_error(REFUSED_MESSAGE + "\r\n")
            if not self._closed:
                self._chan.exit(REFUSED_EXIT_STATUS)
            return False
        self.recording.set_flow_control(self._pause_output, self._resume_output)
        if desc.pty and (self._size.cols, self._size.rows) != (desc.width, desc.height):
            self.recording.resize(self._size.cols, self._size.rows)  # resized meanwhile
        return True

    def _recording_failed(self, error: RecordingFailed) -> None:
        """Enforced: no more input reaches the process, no more output the client, and the
        process group is killed after UNRECORDED_GRACE (or as soon as it exists)."""
        if self.recording is None or not self.recording.rule.enforce:
            return
        self._unrecorded = True
        self._write_error(f"\r\n{FAILED_MESSAGE}\r\n")
        self.hangup(UNRECORDED_GRACE)

    async def _start(self) -> None:
        if self._settle is not None:
            settled = await self._settle()
            if settled is None:
                self._starting = False
                self._write_error(UNSETTLED_MESSAGE + "\r\n")
                if not self._closed:
                    self._chan.exit(1)
                return
            self._ctx = settled
        ctx = self._ctx
        account = ctx.account
        if ctx.recording is not None and not await self._start_recording(ctx.recording):
            return
        if self._unrecorded:  # the recording failed between its start and here
            self._starting = False
            assert self.recording is not None
            self.recording.end(RECORDING_FAILED_EXIT_STATUS)
            self._send_exit(RECORDING_FAILED_EXIT_STATUS, None, False)
            return
        if self._cut:  # before its process started
            self._starting = False
            if self.recording is not None:
                self.recording.end(1)
            if not self._closed:
                self._chan.exit(1)
            return
        if self._want_pty and self._subsystem is None:
            self._pty = open_pty(self._modes, self._size)
        env = build_env(
            SessionEnvInput(
                user=account.name, home=account.home, shell=account.shell, uid=account.uid,
                peer_ip=ctx.peer_ip, peer_port=ctx.peer_port, local_ip=ctx.local_ip,
                local_port=ctx.local_port,
                term=self._term if self._pty else None,
                tty=self._pty.name if self._pty else None,
            ),
            self._chan.get_environment(),
            ctx.accept_env,
        )
        agent = self._chan.get_agent_path()
        if agent:  # ssh -A: the connection's agent socket (tssh/server/forward.py)
            env["SSH_AUTH_SOCK"] = agent
        executable, argv = self._argv()
        if self._pty is not None:
            pty = self._pty
            give_tty(pty, account.uid, account.gid, tty_group_id())
            try:
                self._pid = await spawn_async(SpawnRequest(
                    executable=executable, argv=argv, env=env, cwd=account.home,
                    account=account, stdin=pty.slave, stdout=pty.slave, stderr=pty.slave,
                    controlling_tty=True,
                ))
            except BaseException:
                os.close(pty.master)
                raise
            finally:
                os.close(pty.slave)
            self._stdin.attach(pty.master, shared=True)
            self._outputs = {pty.master: False}
        else:
            await self._start_with_pipes(executable, argv, env)
        self._watch_exit()
        if self._closed:  # the client went away while the process started
            self._release_fds()
            self.hangup()
            return
        if self._unrecorded:  # the recording failed while the process was being started
            self.hangup(UNRECORDED_GRACE)
        if self._cut:  # its transfer stream was cut meanwhile
            self._stdin.discard()
            self.hangup()
        self._resume_output()
        self._starting = False
        self._stdin.start()  # input that arrived while the process started
        if ctx.session_max_duration:
            self._duration_timer = self._loop.call_later(
                ctx.session_max_duration, self.terminate,
                duration_message(ctx.session_max_duration))
        self._started_at = time.monotonic()
        emit("session.start", "session started", ctx.audit_fields(), session=self.info.id,
             kind=self.info.kind, pty=self._pty is not None, command=self._command,
             subsystem=self._subsystem, transfer=self._transfer_kind(), pid=self._pid)

    def _transfer_parser(self, argv: list[str]) -> TransferParser | None:
        """The parser that audits this session's transfers (docs/audit.md), if it is one."""
        home = self._ctx.account.home
        if self._subsystem == "sftp":
            return SftpAudit(cwd=home)
        transfer = self._transfer_command()
        if transfer is None or transfer.protocol != "scp":
            return None
        command = scp_command(argv)
        if command is None:
            return None
        target_is_dir = False
        if command.upload:  # where an upload lands depends on what the target is now
            target_is_dir = os.path.isdir(os.path.join(home, command.paths[0]))
        return ScpAudit(command, target_is_dir, cwd=home)

    def _audit_transfer(self, data: bytes | None, to_client: bool) -> None:
        """Feed the transfer parser one direction's ``data`` (None: the session ended). It
        never raises on what a peer sends; should it raise anyway (a bug), the audit of this
        session stops and says so, and the session goes on."""
        parser = self._transfer_audit
        if parser is None:
            return
        try:
            if data is None:
                events = parser.close()
            else:
                events = parser.server(data) if to_client else parser.client(data)
        except Exception as e:
            self._transfer_audit = None
            log.exception("transfer audit failed", extra={"session": self.info.id})
            emit("transfer.audit_failed", "transfer audit stopped: the parser failed",
                 self._ctx.audit_fields(), level=logging.ERROR, session=self.info.id,
                 error=str(e) or type(e).__name__)
            return
        if events:
            self._transferred(events)

    def _transferred(self, events: list[TransferEvent]) -> None:
        """Each transfer event to the audit log and, on a recorded session, the recording
        (as a marker the recorder's search can find)."""
        if not events:
            return
        fields = {**self._ctx.audit_fields(), "session": self.info.id}
        unparsable = False
        for event in events:
            unparsable = unparsable or event.event.endswith(".unparsable")
            emit(event.event, event.summary(), fields, event.fields)
            if self.recording is not None:
                self.recording.marker(f"tssh: {event.summary()}")
        if unparsable and self._cut_unparsable and self._transfer_audit is not None:
            self._transfer_audit = None
            emit("transfer.cut", "session ended: its transfer stream could not be audited",
                 fields, level=logging.WARNING)
            self._cut = True  # nothing more reaches the process, none starts
            self._stdin.discard()  # input not yet written is dropped
            self.terminate(UNPARSABLE_MESSAGE)

    async def _start_with_pipes(self, executable: str, argv: list[str],
                                env: dict[str, str]) -> None:
        in_r, in_w = os.pipe2(os.O_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        child_ends = (in_r, out_w, err_w)
        try:
            _set_pipe_size(out_r)
            self._pid = await spawn_async(SpawnRequest(
                executable=executable, argv=argv, env=env, cwd=self._ctx.account.home,
                account=self._ctx.account, stdin=in_r, stdout=out_w, stderr=err_w,
            ))
        except BaseException:
            for fd in (in_w, out_r, err_r):
                os.close(fd)
            raise
        finally:
            for fd in child_ends:
                os.close(fd)
        for fd in (in_w, out_r, err_r):
            os.set_blocking(fd, False)
        self._stdin.attach(in_w, shared=False)
        self._outputs = {out_r: False, err_r: True}

    def _watch_exit(self) -> None:
        assert self._pid is not None
        self._pidfd = os.pidfd_open(self._pid)
        self._loop.add_reader(self._pidfd, self._on_process_exit)

    # --- output: process -> channel ---------------------------------------------------

    def _resume_output(self) -> None:
        if self._reading or self._closed or self._chan_paused:
            return
        if self.recording is not None and not self.recording.writable:
            return  # the recording's buffer is full (enforced): the recorder sets the pace
        self._reading = True
        for fd in self._outputs:
            self._loop.add_reader(fd, self._on_output, fd)

    def _pause_output(self) -> None:
        if not self._reading:
            return
        self._reading = False
        for fd in self._outputs:
            self._loop.remove_reader(fd)

    def _on_output(self, fd: int) -> None:
        try:
            data = _read(fd)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno != errno.EIO:  # EIO: a pty whose last slave closed
                log.warning("session read failed", extra={"session": self.info.id,
                                                          "error": str(e)})
            data = b""
        if data:
            self._send(fd, data)
            return
        self._close_output(fd)

    def _send(self, fd: int, data: bytes) -> None:
        if self._closed:
            return
        self.info.bytes_out += len(data)
        stderr = self._outputs.get(fd, False)
        if self._transfer_audit is not None and not stderr:
            self._audit_transfer(data, to_client=True)
        # Into the recording first, then to the client.
        if self.recording is not None and not self.recording.record(data, stderr):
            return
        write = self._chan.write_stderr if stderr else self._chan.write
        if len(data) <= CHANNEL_CHUNK:
            write(data)
            return
        view = memoryview(data)
        for start in range(0, len(data), CHANNEL_CHUNK):
            write(view[start:start + CHANNEL_CHUNK])

    def _close_output(self, fd: int) -> None:
        if fd not in self._outputs:
            return
        if self._reading:
            self._loop.remove_reader(fd)
        del self._outputs[fd]
        if self._pty is not None and fd == self._pty.master:
            self._stdin.detach()  # the same fd; closed below
        os.close(fd)
        self._maybe_finish()

    def _drain_pty(self) -> None:
        """After the shell exits: forward what it wrote, without waiting on its children."""
        if self._pty is None or self._pty.master not in self._outputs:
            return
        fd = self._pty.master
        for _ in range(64):  # bounded: at most 16 MiB already in the pty
            try:
                data = _read(fd)
            except OSError:
                break
            if not data:
                break
            self._send(fd, data)
        self._close_output(fd)

    # --- input: channel -> process ----------------------------------------------------

    def data_received(self, data: bytes, datatype: int | None) -> None:
        self.info.bytes_in += len(data)
        if self._stdin.eof or self._unrecorded or self._cut:
            return
        if self._transfer_audit is not None:
            self._audit_transfer(data, to_client=False)
            if self._cut:
                return
        self._stdin.feed(data, self._starting)

    def _pause_reading(self) -> None:
        self._chan.pause_reading()

    def _resume_reading(self) -> None:
        self._chan.resume_reading()

    def eof_received(self) -> bool:
        self._stdin.end(self._starting)
        return True  # half-open: output keeps flowing

    # --- flow control, window, signals ---------------------------------------------

    def pause_writing(self) -> None:
        self._chan_paused = True
        self._pause_output()

    def resume_writing(self) -> None:
        self._chan_paused = False
        self._resume_output()

    def terminal_size_changed(self, width: int, height: int, pixwidth: int,
                              pixheight: int) -> None:
        self._size = WindowSize(width, height, pixwidth, pixheight)
        if self.recording is not None:
            self.recording.resize(width, height)
        pty = self._pty
        # The master is open from the pty request until the output closes (or start fails).
        if pty is not None and (self._starting or pty.master in self._outputs):
            with contextlib.suppress(OSError):
                set_window_size(pty.master, self._size)

    def signal_received(self, signal_name: str) -> None:
        number = _signal_number(signal_name)
        if number is None:
            log.info("unknown signal ignored", extra={"session": self.info.id,
                                                      "signal": signal_name})
            return
        self._signal_group(number)

    def _signal_group(self, number: int) -> bool:
        """Signal the session's process group; False if it has no process left.

        Linux does not hand out a number still in use as a process group id, so while the
        group has members this cannot reach anyone else.
        """
        if self._pid is None:
            return False
        try:
            os.killpg(self._pid, number)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    # --- exit ------------------------------------------------------------------------

    def _on_process_exit(self) -> None:
        assert self._pid is not None and self._pidfd is not None
        try:
            pid, status = os.waitpid(self._pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self._pid, 0
        if pid == 0:
            return
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        if self._duration_timer is not None:
            self._duration_timer.cancel()
        self._exit = decode_wait_status(status)
        self._drain_pty()
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self._finished or self._exit is None or self._outputs:
            return
        self._finished = True
        status, signum, core = self._exit
        if self._transfer_audit is not None:
            self._audit_transfer(None, to_client=False)
            self._transfer_audit = None
        emit("session.end", "session ended", self._ctx.audit_fields(), session=self.info.id,
             kind=self.info.kind, command=self._command, subsystem=self._subsystem,
             exit_status=status, signal=_signal_name(signum) if signum is not None else None,
             core_dumped=core or None,
             duration=round(time.monotonic() - self._started_at, 3))
        if self.recording is not None:
            self._finish_task = self._loop.create_task(
                self._finish_recording(status, signum, core))
            return
        self._send_exit(status, signum, core)

    async def _finish_recording(self, status: int | None, signum: int | None,
                                core: bool) -> None:
        """End the recording (an enforced one confirmed) before the client sees the exit."""
        assert self.recording is not None
        code = status if status is not None else 128 + (signum or 0)
        message = await self.recording.finish(code)
        if message is not None:
            self._write_error(message + "\r\n")
        if self._unrecorded or message is not None:  # a script must see that recording failed
            self._send_exit(RECORDING_FAILED_EXIT_STATUS, None, False)
            return
        self._send_exit(status, signum, core)

    def _send_exit(self, status: int | None, signum: int | None, core: bool) -> None:
        if self._closed:
            return
        if signum is not None:
            self._chan.exit_with_signal(_signal_name(signum), core, "")
        else:
            self._chan.exit(status if status is not None else 255)

    def _write_error(self, message: str) -> None:
        if self._closed or self._chan is None:
            return
        with contextlib.suppress(OSError, asyncssh.Error):  # the channel may be closing
            if self._pty is not None:
                self._chan.write(message.encode())
            else:
                self._chan.write_stderr(message.encode())

    def terminate(self, message: str) -> None:
        """End the session from the daemon's side (SSH disabled, access revoked)."""
        self._write_error(f"\r\n{message}\r\n")
        self.hangup()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._duration_timer is not None:
            self._duration_timer.cancel()
        self._release_fds()
        self.hangup()
        self._on_close(self)

    def _release_fds(self) -> None:
        self._pause_output()
        self._stdin.release()
        for fd in list(self._outputs):
            os.close(fd)
        self._outputs.clear()

    def hangup(self, grace: float = HANGUP_GRACE) -> None:
        """SIGHUP the session's process group now, SIGKILL what is left after ``grace``."""
        if self._pid is None or self._hung_up:
            return
        self._hung_up = True
        if not self._signal_group(signal.SIGHUP):
            return  # the group is gone: nothing to kill later (and its id may be reused)
        self._signal_group(signal.SIGCONT)
        self._hung_up_groups.add(self._pid, grace)
