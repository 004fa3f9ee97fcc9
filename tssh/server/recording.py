"""Session recording in the daemon: which sessions are recorded, where to, and the audit trail.

The daemon owns one ``RecordingService``; a connection whose decision names recorders carries
a ``RecordingRequest``, and each of its sessions starts a ``SessionRecording`` before its
process exists (docs/recording.md). Nothing slips past: shells, exec with and without a pty, and
file transfers (``sftp``, ``scp``, ``rsync``) are all recorded. A transfer's recording holds
its start, an ``"m"`` marker naming it, and its exit status, not the transferred bytes (the
protocol stream is no terminal output; what the transfer did comes as markers from the
transfer audit, docs/audit.md). Which
sessions are transfers the session decides (the sftp subsystem, or a command the daemon
execs itself: ``tssh.server.transfer``, docs/recording.md); nothing here guesses it from
the command's text.

Recordings run in the daemon's recording worker process (``tssh.recording.worker_client``): the
daemon hands over raw bytes, the worker encodes and uploads them on another core. The session
feeds its recording synchronously from its I/O callbacks: ``record`` comes before the same
bytes are written to the channel, so output reaches the client only after it is in the
recording's pipeline; with ``enforceRecorder``, flow control pauses the session's reading
while that buffer is full, and once the upload has failed nothing more is forwarded (the
session is ended with a message). Without enforcement the session goes on and the failure is
audited.

Audit: every start (each recorder tried and why it failed), every failure while the session
runs, and every end (bytes sent, acknowledged, dropped) is one structured line on the
``tssh.audit`` logger with ``event`` = ``recording.start|recording.refused|recording.failed|
recording.end``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from tssh.audit.log import peer_fields
from tssh.config import Config
from tssh.errors import RecorderUnavailable, RecordingFailed
from tssh.identity.base import Peer, Resolver
from tssh.policy import Decision
from tssh.recording.asciicast import CastHeader, FittedHeader, HeaderTooLarge, fit_header
from tssh.recording.model import Attempt, RecordingOptions, RecordingStats
from tssh.recording.sink import RecordingSink
from tssh.recording.targets import RecorderAddress, recorder_targets
from tssh.recording.worker_client import RecordingWorker

log = logging.getLogger("tssh.recording")
audit = logging.getLogger("tssh.audit")

REFUSED_MESSAGE = ("tssh: this session must be recorded (enforceRecorder), but no session "
                   "recorder accepted the recording; session refused")
FAILED_MESSAGE = ("tssh: session recording failed and the policy requires it "
                  "(enforceRecorder); ending the session")
UNCONFIRMED_MESSAGE = ("tssh: the session recorder did not confirm the end of this "
                       "session's recording (enforceRecorder)")
REFUSED_EXIT_STATUS = 254  # what tailscaled returns when a required recording cannot start
RECORDING_FAILED_EXIT_STATUS = 254  # and what a script sees when it failed midway (enforced)
SHUTDOWN_GRACE = 5.0  # seconds the daemon waits at exit for recordings still finishing

@dataclass(frozen=True)
class RecordingRule:
    """What a connection's decision says about recording its sessions."""

    selectors: tuple[str, ...]  # the rule's recorder selectors, or literal addresses
    enforce: bool

    @classmethod
    def from_decision(cls, decision: Decision | None) -> RecordingRule | None:
        if decision is None or not decision.recorders:
            return None
        return cls(tuple(decision.recorders), decision.enforce_recorder)


@dataclass(frozen=True)
class SessionDescription:
    """What the recording's header says about the session."""

    session_id: str
    conn_id: str
    peer: Peer  # the SSH client's node
    login: str  # the user name the client asked for
    local_user: str
    source_address: str  # the address the connection came in on: recorders see it as ours
    command: str | None  # exec command
    subsystem: str | None
    term: str | None
    width: int
    height: int
    pty: bool
    # The transfer protocol (sftp, scp, rsync) when the session is a file transfer the daemon
    # runs itself (recorded as metadata only); None: an ordinary session, recorded in full.
    transfer: str | None = None
    peer_ip: str = ""  # the client's address (for the audit log)


def header_for(desc: SessionDescription, started_at: float) -> FittedHeader:
    """The asciicast header of a session (docs/recording.md): the client's node, logins,
    command; fitted under the header limit (HeaderTooLarge if it cannot be)."""
    command = desc.command or ""
    if not command and desc.subsystem:
        command = desc.subsystem
    return fit_header(CastHeader.for_session(
        desc.peer, ssh_user=desc.login, local_user=desc.local_user,
        connection_id=desc.conn_id, started_at=started_at,
        width=desc.width if desc.pty else 0, height=desc.height if desc.pty else 0,
        command=command, term=desc.term, includes_stderr=not desc.pty,
    ))


@dataclass
class _RecorderSeen:
    """The last outcome at one recorder, for ``tssh status``."""

    address: str
    name: str | None
    healthy: bool
    error: str | None
    checked: float

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "address": self.address, "healthy": self.healthy,
                "error": self.error,
                "checked": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.checked))}


class RecordingService:
    """The daemon's side of recording: targets, starts, the recordings still finishing."""

    def __init__(self, config: Config, resolver: Resolver,
                 options: RecordingOptions | None = None) -> None:
        self._config = config
        self._resolver = resolver
        self._options = options or RecordingOptions(local_dir=config.local_recording_dir)
        self._seen: dict[str, _RecorderSeen] = {}
        self._live: set[SessionRecording] = set()
        self._finishing: set[asyncio.Task[Any]] = set()
        self.worker = RecordingWorker(log_format=config.log_format, log_level=config.log_level)

    def request(self, decision: Decision | None) -> RecordingRequest | None:
        """What a connection admitted with ``decision`` needs to record its sessions."""
        rule = RecordingRule.from_decision(decision)
        if rule is None:
            return None
        self.worker.prewarm()  # starting it takes ~0.2 s: overlap that with session set-up
        return RecordingRequest(self, rule)

    async def _targets(self, rule: RecordingRule) -> tuple[list[RecorderAddress],
                                                           dict[str, str]]:
        peers = await self._resolver.peers()
        targets = recorder_targets(rule.selectors, peers, self._config.recorder_port)
        names = {}
        for target in targets:
            for peer in peers:
                if target.host in (a.split("/", 1)[0] for a in peer.addresses):
                    names[str(target)] = peer.name
                    break
        return targets, names

    async def start(self, rule: RecordingRule, desc: SessionDescription,
                    on_failure: Callable[[RecordingFailed], None]) -> SessionRecording:
        """Connect the session's recording; RecorderUnavailable when enforced and none took it."""
        try:
            targets, names = await self._targets(rule)
        except Exception as e:  # the identity backend failed: no recorder can be named
            log.error("cannot resolve the session's recorders",
                      extra={"session": desc.session_id, "error": str(e)})
            targets, names = [], {}
        options = replace(self._options, enforce=rule.enforce,
                          source_address=desc.source_address or None)
        base = self._audit_fields(desc, rule)
        try:
            fitted = header_for(desc, time.time())
        except HeaderTooLarge as e:
            audit.warning("session recording refused", extra={
                **base, "event": "recording.refused", "attempts": [], "reason": str(e)})
            raise RecorderUnavailable(str(e)) from None

        def failed(error: RecordingFailed) -> None:
            audit.error("session recording failed", extra={
                **base, "event": "recording.failed", "reason": str(error)})
            on_failure(error)

        try:
            recording = await self.worker.start_recording(targets, fitted.header,
                                                          options=options, on_failure=failed)
        except RecorderUnavailable as e:
            attempts = tuple(a for a in e.attempts if isinstance(a, Attempt))
            self._note_attempts(attempts, names)
            audit.warning("session recording refused", extra={
                **base, "event": "recording.refused",
                "attempts": [a.to_json() for a in attempts], "reason": str(e)})
            raise
        self._note_attempts(recording.attempts, names)
        for marker in fitted.markers:  # what the header had no room for, before any output
            recording.marker_nowait(marker)
        stats = recording.stats()
        outcome = {"v2": "recorder", "v1": "recorder", "local": "local", None: "unrecorded"}
        audit.log(
            logging.INFO if stats.protocol in ("v2", "v1") else logging.WARNING,
            "session recording started" if stats.destination else "session goes on unrecorded",
            extra={**base, "event": "recording.start",
                   "outcome": outcome[stats.protocol], "destination": stats.destination,
                   "protocol": stats.protocol,
                   "attempts": [a.to_json() for a in recording.attempts]})

        def ended(stats: RecordingStats) -> None:
            self._live.discard(session)
            self._ended(base, stats)

        session = SessionRecording(recording, rule, desc, on_end=ended,
                                   track=self._track_finish)
        self._live.add(session)
        return session

    @staticmethod
    def _audit_fields(desc: SessionDescription, rule: RecordingRule) -> dict[str, object]:
        return {"session": desc.session_id, "conn": desc.conn_id, **peer_fields(desc.peer),
                "peer_ip": desc.peer_ip or None, "login": desc.login,
                "local_user": desc.local_user, "enforced": rule.enforce,
                "transfer": desc.transfer}

    def _note_attempts(self, attempts: Iterable[Attempt], names: dict[str, str]) -> None:
        now = time.time()
        for a in attempts:
            self._seen[a.recorder] = _RecorderSeen(a.recorder, names.get(a.recorder),
                                                   a.error is None, a.error, now)

    def _track_finish(self, task: asyncio.Task[Any]) -> None:
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    def _ended(self, audit_fields: dict[str, object], stats: RecordingStats) -> None:
        if stats.destination is not None and stats.protocol in ("v2", "v1"):
            seen = self._seen.get(stats.destination)
            if seen is not None:
                seen.healthy = stats.state == "finished"
                seen.error = stats.error
                seen.checked = time.time()
        audit.log(
            logging.INFO if stats.state in ("finished", "unrecorded") else logging.WARNING,
            "session recording ended",
            extra={**audit_fields, "event": "recording.end", "recording": stats.to_json()})

    def recorders_status(self) -> list[dict[str, object]]:
        """Each recorder tried so far and how its last recording went (``tssh status``)."""
        return [seen.to_json() for seen in self._seen.values()]

    async def close(self) -> None:
        """At daemon exit: let finishing recordings end (bounded), cut the others."""
        if self._finishing:
            await asyncio.wait(set(self._finishing), timeout=SHUTDOWN_GRACE)
        for session in list(self._live):
            session.abort("the daemon shut down before the session ended")
        for task in list(self._finishing):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        await self.worker.close()


@dataclass(frozen=True)
class RecordingRequest:
    """Carried by a connection whose rule names recorders; starts each session's recording."""

    service: RecordingService
    rule: RecordingRule

    async def start(self, desc: SessionDescription,
                    on_failure: Callable[[RecordingFailed], None]) -> SessionRecording:
        return await self.service.start(self.rule, desc, on_failure)


class SessionRecording:
    """One session's recording, fed from the session's callbacks (never blocks).

    It writes into a ``RecordingSink`` and reads its state from there; ``on_end(stats)`` is
    told once when the recording has ended (closed or aborted), and ``track`` is given the
    task that closes it, for the daemon to wait for at exit.
    """

    def __init__(self, recording: RecordingSink, rule: RecordingRule,
                 desc: SessionDescription, *, on_end: Callable[[RecordingStats], None],
                 track: Callable[[asyncio.Task[Any]], None]) -> None:
        self._recording = recording
        self.rule = rule
        self.desc = desc
        self.transfer = transfer = desc.transfer
        self._on_end = on_end
        self._track = track
        self._ended = False
        if transfer is not None:
            recording.marker_nowait(
                f"tssh: file transfer session ({transfer}); transferred data is not recorded")

    @property
    def writable(self) -> bool:
        """False while flow control holds the session's output (enforced, buffer full)."""
        return self._recording.writable

    def set_flow_control(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        self._recording.set_flow_control(pause, resume)

    def record(self, data: bytes, stderr: bool = False) -> bool:
        """Record output; False if it must not reach the client (enforced and failed)."""
        if self.rule.enforce and self._recording.failure is not None:
            return False
        if self.transfer is None:
            if stderr:
                self._recording.stderr_nowait(data)
            else:
                self._recording.output_nowait(data)
        return True

    def marker(self, text: str) -> None:
        """A marker event ("m") in the recording: what the session did, in words (a file
        transfer's audit events, docs/audit.md)."""
        if not self._ended:
            self._recording.marker_nowait(text)

    def resize(self, cols: int, rows: int) -> None:
        if self.desc.pty:
            self._recording.resize_nowait(cols, rows)

    async def finish(self, exit_status: int) -> str | None:
        """Record the exit status and end the upload.

        Enforced: waits for the recorder to confirm, and returns the message for the client
        if it did not. Otherwise the upload ends in the background and this returns at once.
        """
        closing = self._end(exit_status)
        if closing is None or not self.rule.enforce:
            return None
        stats, told = await asyncio.shield(closing)
        if stats.state == "failed" and not told:
            return UNCONFIRMED_MESSAGE
        return None

    def end(self, exit_status: int) -> None:
        """``finish`` without waiting (a session that could not start its process)."""
        self._end(exit_status)

    def _end(self, exit_status: int) -> asyncio.Task[tuple[RecordingStats, bool]] | None:
        if self._ended:
            return None
        self._ended = True
        self._recording.exit_nowait(exit_status)
        task = asyncio.get_running_loop().create_task(self._close())
        self._track(task)
        return task

    async def _close(self) -> tuple[RecordingStats, bool]:
        """The stats, and whether the session was told of a failure already: one before
        ``close()`` went through on_failure, one after it is only in the stats."""
        told = self._recording.failure is not None
        stats = await self._recording.close()
        self._on_end(stats)
        return stats, told

    def abort(self, reason: str) -> None:
        """Cut the upload now (daemon shutdown); the recorder marks it incomplete."""
        if self._ended:
            return
        self._ended = True
        self._on_end(self._recording.abort(reason))

    def status(self) -> dict[str, object]:
        """This session's entry in ``tssh status``: recorder, protocol, bytes sent and acked."""
        stats = self._recording.stats()
        return {
            "recorder": stats.destination, "protocol": stats.protocol, "state": stats.state,
            "enforced": self.rule.enforce, "bytesSent": stats.bytes_sent,
            "bytesAcked": stats.bytes_acked, "bytesBuffered": stats.bytes_buffered,
            "bytesDropped": stats.bytes_dropped, "error": stats.error,
        }
