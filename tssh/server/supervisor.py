"""The daemon with worker processes (``workers`` > 1; docs/daemon.md, "Worker processes").

The supervisor keeps what must be one for the whole node: the listeners, the accept-time
identity screen (``tssh.server.screen``), the start-up bounds (per source and in all, so
they hold whatever the number of workers), the SSH switch, the control socket's answers and
the audit log. Each connection that passes the screen takes a start-up slot here and is
handed, socket and all (``SCM_RIGHTS``, ``tssh.server.handoff``), to the worker with the
fewest live connections; the worker says when it logged in or closed, which frees the slot.

Each worker (``tssh.server.worker``) follows the policy and the netmap itself, so a change
re-judges its live connections within the poll second. A worker that dies takes its
connections with it (their TCP connections close with the process); the supervisor frees
their slots and starts another, the other workers go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tssh
from tssh.audit.sink import AuditSink
from tssh.config import Config
from tssh.errors import ConfigError, ControlError, TsshError
from tssh.identity.base import Peer, Reloadable, Resolver
from tssh.identity.follow import follow_identity_file
from tssh.recording.worker_client import ControlChannel
from tssh.server.daemon import (
    POLICY_POLL_SECONDS,
    close_listeners,
    host_port,
    listen_addresses,
    open_audit_sink,
    open_listeners,
    read_ssh_enabled,
    write_ssh_enabled,
)
from tssh.server.handoff import Channel, ChannelClosed, HandedConnection, encode_config
from tssh.server.hostkeys import load_host_keys
from tssh.server.screen import (
    AcceptScreen,
    Screened,
    Screening,
    ScreeningProtocol,
    refusal_bytes,
)
from tssh.server.startups import StartupLimiter, begin_startup

log = logging.getLogger("tssh.daemon")

START_TIMEOUT = 60.0  # seconds a worker may take to load the policy, keys, and say ready
CALL_TIMEOUT = 30.0  # seconds a worker may take to answer a control call
STOP_GRACE = 15.0  # seconds a worker may take to end its sessions and recordings at exit
RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # between failed starts of a replacement
_PACKAGE_ROOT = str(Path(tssh.__file__).resolve().parents[1])
# What every SSH server says first; the supervisor speaks it only to refuse unknown peers.
_VERSION = b"SSH-2.0-tssh"


class WorkerError(ControlError):
    """A worker process refused a call or is not there to answer it."""


@dataclass
class _Handed:
    """A connection handed to a worker: it holds a start-up slot until ``released``."""

    address: str
    worker: WorkerProcess
    released: bool = False


@dataclass(eq=False)
class WorkerProcess:
    """One worker as the supervisor sees it."""

    index: int
    proc: subprocess.Popen[bytes]
    channel: Channel
    handoff: ControlChannel
    ready: asyncio.Future[None]
    live: set[int] = field(default_factory=set)  # hand-off ids of its connections
    calls: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    gone: bool = False
    follower: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def serving(self) -> bool:
        return (not self.gone and self.ready.done() and not self.ready.cancelled()
                and self.ready.exception() is None)


class _HandOff(asyncio.Protocol):
    """A screened connection's protocol in the supervisor: takes its start-up slot, then
    hands its socket (and what was read of it) to a worker on the next loop turn."""

    def __init__(self, supervisor: Supervisor, screened: Screened) -> None:
        self._supervisor = supervisor
        self._address = screened.address
        self._transport: asyncio.Transport | None = None
        self._early = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if not begin_startup(self._supervisor.startups, self._address):
            transport.abort()  # before the version exchange, as in one process
            return
        # The screen passes what arrived meanwhile to data_received just after this.
        asyncio.get_running_loop().call_soon(self._hand_off)

    def data_received(self, data: bytes) -> None:
        self._early += data

    def _hand_off(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            self._supervisor.startups.end(self._address)
            return
        transport.pause_reading()
        self._supervisor.hand_off(transport, bytes(self._early), self._address)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _start_worker(channel: socket.socket, handoff: socket.socket) -> subprocess.Popen[bytes]:
    """``python -m tssh.server.worker`` with its ends of the two socketpairs (a fork and
    exec, no waiting)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    # -P: never import from the working directory (the daemon may run as root).
    return subprocess.Popen(
        [sys.executable, "-P", "-m", "tssh.server.worker", "--channel-fd",
         str(channel.fileno()), "--handoff-fd", str(handoff.fileno())],
        pass_fds=(channel.fileno(), handoff.fileno()), stdin=subprocess.DEVNULL, env=env,
        cwd="/")


class Supervisor:
    """The ``ControlHandler`` and lifecycle of a daemon with ``config.workers`` workers:
    ``await start()``, serve until stopped, ``await close()``."""

    def __init__(self, config: Config, resolver: Resolver) -> None:
        self.config = config
        self._resolver = resolver
        self.startups = StartupLimiter(per_source=config.per_source_max_startups,
                                       max_startups=config.max_startups)
        self._screen = AcceptScreen(resolver.whois)
        self._screening = Screening()
        self._self_node: Peer | None = None
        self._addresses: tuple[str, ...] = ()
        self._listeners: list[asyncio.Server] = []
        self._enabled = True
        self._lock = asyncio.Lock()
        self._audit: AuditSink | None = None
        self._workers: list[WorkerProcess] = []
        self._handed: dict[int, _Handed] = {}
        self._ids = itertools.count(1)
        self._calls = itertools.count(1)
        self._turn = 0  # round robin among equally loaded workers
        self._stopping = False
        self._identity_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        config = self.config
        if config.check_oidc_issuer is not None:
            raise ConfigError("check_oidc_issuer needs workers = 1: the approval pages and "
                              "the logins they approve live in one process")
        self._audit = open_audit_sink(config)
        self._self_node = await self._resolver.self_node()
        self._addresses = listen_addresses(config, self._self_node)
        # Generated once here (when none are configured), before the workers read them.
        await asyncio.to_thread(load_host_keys, config.host_keys, config.state_dir)
        try:
            for index in range(config.workers):
                self._workers.append(await self._spawn(index))
            for worker in list(self._workers):
                await self._wait_ready(worker)
        except BaseException:
            await self._stop_workers()
            raise
        self._enabled = read_ssh_enabled(config.state_dir)
        if self._enabled:
            await self._open_listeners()
        if isinstance(self._resolver, Reloadable):
            # a node added to the file may connect at once (the workers re-judge the rest)
            self._identity_task = asyncio.create_task(follow_identity_file(
                self._resolver, self._screen.forget, POLICY_POLL_SECONDS))
        log.info("daemon started", extra={
            "node": self._self_node.name, "addresses": list(self._addresses),
            "port": config.port, "ssh": self._enabled, "identity": config.identity,
            "workers": [w.pid for w in self._workers]})

    async def close(self) -> None:
        self._stopping = True
        if self._identity_task is not None:
            self._identity_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._identity_task
        await self._close_listeners()
        self._screening.close()
        for task in list(self._background):
            task.cancel()
        await self._stop_workers()
        await self._resolver.close()
        if self._audit is not None:
            await asyncio.to_thread(self._audit.close)
            self._audit = None

    async def _open_listeners(self) -> None:
        def handoff(screened: Screened) -> asyncio.Protocol:
            return _HandOff(self, screened)

        def factory() -> ScreeningProtocol:
            return ScreeningProtocol(self._screen, handoff,
                                     lambda text: refusal_bytes(_VERSION, text),
                                     self._screening)

        self._listeners = await open_listeners(self.config, self._addresses, factory)

    async def _close_listeners(self) -> None:
        listeners, self._listeners = self._listeners, []
        await close_listeners(listeners)

    # --- workers -------------------------------------------------------------------------

    async def _spawn(self, index: int) -> WorkerProcess:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        handoff, their_handoff = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = _start_worker(theirs, their_handoff)
        except OSError:
            ours.close()
            handoff.close()
            raise
        finally:
            theirs.close()
            their_handoff.close()
        handoff.setblocking(False)
        channel = await Channel.open(ours)
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ready.add_done_callback(_retrieve)  # a failed start is logged where it is awaited
        worker = WorkerProcess(index, proc, channel, ControlChannel(handoff, lambda e: None),
                               ready)
        channel.send({"op": "start", "config": encode_config(self.config), "index": index,
                      "journal": self._audit is not None and self._audit.journal is not None})
        worker.follower = asyncio.create_task(self._follow(worker))
        log.info("worker process started", extra={"pid": proc.pid, "worker": index})
        return worker

    async def _wait_ready(self, worker: WorkerProcess) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(worker.ready), START_TIMEOUT)
        except TimeoutError:
            raise TsshError(f"worker process {worker.pid} did not start within "
                            f"{START_TIMEOUT:g} s") from None

    async def _follow(self, worker: WorkerProcess) -> None:
        """Read the worker's messages until its channel closes, then let it go."""
        try:
            while True:
                message = await worker.channel.receive()
                self._on_message(worker, message)
        except (ChannelClosed, ValueError, KeyError, TypeError) as e:
            reason = str(e)
        await self._gone(worker, reason)

    def _on_message(self, worker: WorkerProcess, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "audit":
            if self._audit is not None:
                journal = message.get("journal")
                self._audit.put(str(message["line"]).encode(),
                                journal if isinstance(journal, dict) else None)
        elif op == "released":
            self._release(int(message["id"]))
        elif op == "closed":
            conn_id = int(message["id"])
            self._release(conn_id)
            self._handed.pop(conn_id, None)
            worker.live.discard(conn_id)
        elif op == "answer":
            waiter = worker.calls.pop(int(message["call"]), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(message)
        elif op == "ready":
            if not worker.ready.done():
                worker.ready.set_result(None)
        elif op == "failed" and not worker.ready.done():
            worker.ready.set_exception(TsshError(str(message.get("error"))))

    async def _gone(self, worker: WorkerProcess, reason: str) -> None:
        """The worker's channel closed: it exited (or is about to). Its connections went
        with it; their start-up slots are freed here."""
        was_serving = worker.serving
        worker.gone = True
        worker.channel.close()
        worker.handoff.close()
        for waiter in worker.calls.values():
            if not waiter.done():
                waiter.set_exception(WorkerError(f"worker process {worker.pid} exited"))
        worker.calls.clear()
        for conn_id in list(worker.live):
            self._release(conn_id)
            self._handed.pop(conn_id, None)
        worker.live.clear()
        try:
            status = await asyncio.wait_for(asyncio.to_thread(worker.proc.wait), STOP_GRACE)
        except TimeoutError:
            worker.proc.kill()
            status = await asyncio.to_thread(worker.proc.wait)
        if not worker.ready.done():
            worker.ready.set_exception(TsshError(
                f"worker process {worker.pid} exited (status {status}) before it was ready"))
        if self._stopping:
            return
        log.error("worker process exited; its connections ended", extra={
            "pid": worker.pid, "worker": worker.index, "status": status, "reason": reason})
        if was_serving:
            task = asyncio.get_running_loop().create_task(self._replace(worker))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _replace(self, dead: WorkerProcess) -> None:
        """Start another worker in the dead one's place, retrying with a growing delay
        (a policy file broken since the start keeps a new worker from starting)."""
        for delay in itertools.chain(RESTART_DELAYS, itertools.repeat(RESTART_DELAYS[-1])):
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                worker = await self._spawn(dead.index)
            except OSError as e:
                log.error("cannot start a worker process", extra={"error": str(e)})
                continue
            self._workers = [worker if w is dead else w for w in self._workers]
            dead = worker
            try:
                await self._wait_ready(worker)
            except TsshError as e:
                log.error("replacement worker process did not start; trying again",
                          extra={"error": str(e), "retry_in": delay})
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()
                continue
            if self._enabled:
                with contextlib.suppress(TsshError):
                    await self._call(worker, "set_ssh", enabled=True)
            log.info("worker process replaced", extra={"pid": worker.pid,
                                                       "worker": worker.index})
            return

    async def _stop_workers(self) -> None:
        self._stopping = True
        for worker in self._workers:
            if worker.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(signal.SIGTERM)
        followers = [w.follower for w in self._workers if w.follower is not None]
        if followers:
            await asyncio.gather(*followers, return_exceptions=True)

    def _pick(self) -> WorkerProcess | None:
        """The serving worker with the fewest live connections; ties take turns."""
        serving = [w for w in self._workers if w.serving]
        if not serving:
            return None
        self._turn = (self._turn + 1) % len(serving)
        ordered = serving[self._turn:] + serving[:self._turn]
        return min(ordered, key=lambda w: len(w.live))

    def hand_off(self, transport: asyncio.Transport, early: bytes, address: str) -> None:
        """Pass a screened connection holding a start-up slot to a worker, then let go of
        it here (the worker's copy of the socket keeps the connection open)."""
        worker = self._pick()
        sock = transport.get_extra_info("socket")
        if worker is None or sock is None:
            log.error("no worker process is serving; connection closed",
                      extra={"peer_ip": address})
            self.startups.end(address)
            transport.abort()
            return
        try:
            copy = socket.socket(fileno=os.dup(sock.fileno()))
        except OSError as e:
            log.error("cannot hand a connection over", extra={"error": str(e)})
            self.startups.end(address)
            transport.abort()
            return
        conn_id = next(self._ids)
        self._handed[conn_id] = _Handed(address, worker)
        worker.live.add(conn_id)
        sent = worker.handoff.send(HandedConnection.encode(conn_id, early), copy)
        transport.abort()  # our descriptor only; the connection lives on in ``copy``

        def done(future: asyncio.Future[None]) -> None:
            copy.close()
            if future.cancelled() or future.exception() is not None:
                self._release(conn_id)
                self._handed.pop(conn_id, None)
                worker.live.discard(conn_id)

        sent.add_done_callback(done)

    def _release(self, conn_id: int) -> None:
        handed = self._handed.get(conn_id)
        if handed is not None and not handed.released:
            handed.released = True
            self.startups.end(handed.address)

    async def _call(self, worker: WorkerProcess, method: str, **args: object) -> Any:
        if not worker.serving:
            raise WorkerError(f"worker process {worker.pid} is not serving")
        call = next(self._calls)
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        worker.calls[call] = waiter
        worker.channel.send({"op": "call", "call": call, "method": method, "args": args})
        try:
            answer = await asyncio.wait_for(waiter, CALL_TIMEOUT)
        except TimeoutError:
            raise WorkerError(f"worker process {worker.pid} did not answer {method} within "
                              f"{CALL_TIMEOUT:g} s") from None
        finally:
            worker.calls.pop(call, None)
        if not answer.get("ok"):
            raise WorkerError(str(answer.get("error")))
        return answer.get("result")

    async def _each(self, method: str, **args: object) -> list[tuple[WorkerProcess, Any]]:
        """Ask every serving worker at once: (worker, result or the WorkerError)."""
        serving = [w for w in self._workers if w.serving]
        results = await asyncio.gather(*(self._call(w, method, **args) for w in serving),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, WorkerError):
                raise result
        return list(zip(serving, results, strict=True))

    # --- control socket (ControlHandler) -------------------------------------------------

    async def set_ssh(self, enabled: bool) -> None:
        async with self._lock:
            if enabled != self._enabled:
                if enabled:
                    await self._open_listeners()  # raises (and nothing changes) if it cannot
                else:
                    await self._close_listeners()
                    self._screening.close()
                self._enabled = enabled
                for _worker, result in await self._each("set_ssh", enabled=enabled):
                    if isinstance(result, WorkerError):
                        log.error("a worker process did not take the switch",
                                  extra={"error": str(result)})
                log.info("ssh switched", extra={"ssh": enabled})
            write_ssh_enabled(self.config.state_dir, enabled)

    async def status(self) -> dict[str, object]:
        """Every worker's status, merged: their connections, sessions, forwards and held
        logins together, ``workers`` listing each."""
        answers = [(w, s) for w, s in await self._each("status") if isinstance(s, dict)]
        merged: dict[str, Any] = dict(answers[0][1]) if answers else {}
        recorders: dict[str, dict[str, Any]] = {}
        for _w, status in answers:
            for seen in status.get("recorders", []):
                known = recorders.get(seen["address"])
                if known is None or str(seen.get("checked")) > str(known.get("checked")):
                    recorders[seen["address"]] = seen
        merged.update({
            "ssh": self._enabled,
            "node": self._self_node.name if self._self_node else None,
            "listening": [host_port(a, self.config.port) for a in self._addresses]
            if self._listeners else [],
            "addresses": list(self._addresses),
            "port": self.config.port,
            "identity": self.config.identity,
            "recorders": list(recorders.values()),
            "connections": sum(int(s.get("connections", 0)) for _w, s in answers),
            "sessions": [dict(session, worker=w.pid) for w, s in answers
                         for session in s.get("sessions", [])],
            "forwards": [dict(f, worker=w.pid) for w, s in answers
                         for f in s.get("forwards", [])],
            "checks": {
                "pending": [p for _w, s in answers for p in s["checks"]["pending"]],
                "approvals": answers[0][1]["checks"]["approvals"] if answers else [],
            },
            # The first running one (each worker starts its own at its first recording);
            # ``workers`` lists each.
            "recordingWorker": next((s["recordingWorker"] for _w, s in answers
                                     if s["recordingWorker"]["pid"] is not None),
                                    {"pid": None}),
            "workers": [{"pid": w.pid, "serving": w.serving,
                         "connections": len(w.live), "recordingWorker": next(
                             (s["recordingWorker"] for x, s in answers if x is w), None)}
                        for w in self._workers],
        })
        return merged

    async def check_list(self) -> list[dict[str, object]]:
        return [hold for _w, held in await self._each("check_list")
                if isinstance(held, list) for hold in held]

    async def _check_one(self, method: str, hold_id: str) -> dict[str, object]:
        """The held login is in one worker: the others say they do not know it."""
        refusal: WorkerError | None = None
        for worker, result in await self._each(method, id=hold_id):
            if isinstance(result, WorkerError):
                refusal = refusal or result
                continue
            # A remembered approval is in the file now: the other workers read it.
            for other in self._workers:
                if other is not worker and other.serving:
                    with contextlib.suppress(WorkerError):
                        await self._call(other, "check_reload")
            return dict(result)
        raise refusal or WorkerError("no worker process is serving")

    async def check_approve(self, hold_id: str) -> dict[str, object]:
        return await self._check_one("check_approve", hold_id)

    async def check_deny(self, hold_id: str) -> dict[str, object]:
        return await self._check_one("check_deny", hold_id)

    async def check_revoke(self, login: str | None) -> dict[str, object]:
        """Every worker drops the approvals and judges its connections; one at a time, as
        each saves the same file."""
        revoked: dict[str, None] = {}
        ended = 0
        for worker in [w for w in self._workers if w.serving]:
            result = await self._call(worker, "check_revoke", login=login)
            revoked.update(dict.fromkeys(result["revoked"]))
            ended += int(result["connectionsEnded"])
        return {"revoked": list(revoked), "connectionsEnded": ended}
