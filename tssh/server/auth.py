"""Who may log in: one decision per connection, from the peer's tailnet identity and the policy.

There are no keys or passwords. The client's first authentication request, whatever its
method (``none`` from OpenSSH; ``password`` or ``publickey`` from clients that insist), starts
the decision: resolve the source address, evaluate the policy for (peer, this node, login),
map to a local account. Accept ends authentication at once; anything else sends a banner
that says why and disconnects. The credential a client offers is never looked at, as in
Tailscale SSH.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncssh
from asyncssh.constants import OPEN_ADMINISTRATIVELY_PROHIBITED, OPEN_RESOURCE_SHORTAGE

from tssh.audit.log import connection_scope, emit, peer_fields, update_connection_scope
from tssh.forwarding import ForwardingSettings
from tssh.identity.base import Peer
from tssh.policy import Decision
from tssh.policy.decider import Decider
from tssh.recording.asciicast import new_connection_id
from tssh.server.account import (
    Account,
    AccountError,
    check_account_current,
    daemon_user,
    lookup_account,
)
from tssh.server.check import Approval
from tssh.server.dialer import UserDialer
from tssh.server.forward import ForwardContext, Forwards
from tssh.server.limits import ConnectionLimits, IdleWatch, idle_message
from tssh.server.recording import RecordingRequest
from tssh.server.screen import Screened, unknown_peer_message
from tssh.server.session import ConnectionContext, HungUpGroups, ProcessSession

log = logging.getLogger("tssh.auth")
_finishing: set[asyncio.Task[None]] = set()  # forwarding helpers of closed connections


@dataclass(frozen=True)
class Admission:
    """The outcome of one login attempt: an account to run as, or the reason for refusal."""

    account: Account | None
    message: str | None  # shown to the client as "tssh: <message>" when refused
    decision: Decision | None = None
    recording: RecordingRequest | None = None  # the rule names recorders
    forwarding: ForwardingSettings = field(default_factory=ForwardingSettings)

    @property
    def accepted(self) -> bool:
        """Admitted outright (an accept rule); see ``check_needed`` for a check rule."""
        return self.account is not None and not self.check_needed

    @property
    def check_needed(self) -> bool:
        """A check rule decides: the login may run as ``account`` once approved."""
        return (self.account is not None and self.decision is not None
                and self.decision.action == "check")


def decide(
    decider: Decider | None,
    peer: Peer | None,
    peer_ip: str,
    self_node: Peer,
    login: str,
    *,
    lookup: Callable[[str], Account] = lookup_account,
    check_account: Callable[[Account], None] | None = check_account_current,
    daemon_uid: int | None = None,
    daemon_name: str | None = None,
) -> Admission:
    """Apply the policy and the local account rules to one login; no network I/O.

    ``check_account`` (account expiry, read from the shadow file) runs on the account the
    login maps to; None skips it, for decisions that are not logins (a policy change).
    """
    if peer is None:
        return Admission(None, unknown_peer_message(peer_ip))
    if decider is None:
        return Admission(None, "no valid policy is loaded on this node")
    # The policy's "same name" mappings (autogroup:nonroot, "=") skip root, uid-0 aliases and
    # logins with no local account so that later rules apply; judge that with the very lookup
    # the session's account comes from.
    def find(name: str) -> Account | None:
        try:
            return lookup(name)
        except AccountError:
            return None

    def is_root(name: str) -> bool:
        found = find(name)
        return found is not None and found.uid == 0

    decision = decider.decide(peer, peer_ip, self_node, login, is_root_account=is_root,
                              account_exists=lambda name: find(name) is not None)
    # A check rule's login is judged as an accept's (the account must exist and be usable),
    # then held for an approval by the daemon (Admission.check_needed).
    if decision.action not in ("accept", "check") or decision.local_user is None:
        message = decision.message or "tailnet policy does not permit you to SSH to this node"
        return Admission(None, message, decision)
    try:
        account = lookup(decision.local_user)
    except AccountError as e:
        return Admission(None, str(e), decision)
    uid = os.geteuid() if daemon_uid is None else daemon_uid
    if uid != 0 and account.uid != uid:
        name = daemon_name or daemon_user()
        return Admission(
            None,
            f"this tssh daemon runs as {name!r}, not root, and can only start sessions as "
            f"{name!r}, not as {account.name!r}",
            decision,
        )
    if check_account is not None:
        try:
            check_account(account)
        except AccountError as e:
            return Admission(None, str(e), decision)
    return Admission(account, None, decision)


class Gatekeeper(Protocol):
    """What a connection needs from the daemon."""

    async def whois(self, address: str) -> Peer | None: ...

    def still_current(self, screened: Screened) -> bool:
        """May the login go by this accept-time answer, or must it ask again?"""
        ...

    async def admit(self, peer: Peer | None, peer_ip: str, login: str) -> Admission: ...

    async def check_login(self, server: TsshServer, peer: Peer, login: str,
                          admission: Admission) -> Admission:
        """For a check rule's admission: the admission to go on with once approved (by a
        remembered approval, or after holding the login), or a refusal (account None)."""
        ...

    def connection_opened(self, server: TsshServer) -> bool:
        """False: refused (too many logging in, or another local user in the demo);
        the connection is closed at once."""
        ...

    def login_finished(self, server: TsshServer) -> None: ...

    async def policy_settled(self) -> bool:
        """False: live connections could not be re-checked against a new policy in time."""
        ...

    def connection_closed(self, server: TsshServer) -> None: ...

    @property
    def hung_up_groups(self) -> HungUpGroups: ...




def _addr(info: Any) -> tuple[str, int]:
    if isinstance(info, tuple) and len(info) >= 2:
        return str(info[0]), int(info[1])
    return "", 0


class TsshServer(asyncssh.SSHServer):
    """asyncssh's per-connection server object: the decision, then session channels."""

    def __init__(self, gate: Gatekeeper, limits: ConnectionLimits | None = None,
                 cut_unparsable: bool = False) -> None:
        """``cut_unparsable``: end a session whose transfer stream the audit cannot parse
        (``audit_unparsable = "cut"``, docs/audit.md)."""
        self._gate = gate
        self._limits = limits or ConnectionLimits()
        self._max_sessions = self._limits.max_sessions
        self._idle_task: asyncio.Task[None] | None = None
        self._cut_unparsable = cut_unparsable
        self.conn_id = new_connection_id()
        self.conn: Any = None
        self.peer_ip = ""
        self.peer_port = 0
        self.local_ip = ""
        self.local_port = 0
        self.context: ConnectionContext | None = None
        self._ended = False
        self.sessions: dict[str, ProcessSession] = {}
        self._refused = False
        self._screened: Screened | None = None
        self._session_count = 0
        self.approval: Approval | None = None  # the check approval that admitted this login
        self.forwards: Forwards | None = None  # made at the first forward
        self._opened = time.monotonic()
        self._audited = False  # a login began: its connection's end is audited too

    def connection_made(self, conn: Any) -> None:
        self.conn = conn
        self.peer_ip, self.peer_port = _addr(conn.get_extra_info("peername"))
        self.local_ip, self.local_port = _addr(conn.get_extra_info("sockname"))
        if not self._gate.connection_opened(self):
            self._refused = True
            conn.abort()  # before the version exchange: costs the daemon nothing more
            return
        # The listener asked the identity backend at accept; the login reuses that answer
        # while it is current.
        screened = getattr(conn, "screened", None)
        self._screened = screened if isinstance(screened, Screened) else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_task is not None:
            self._idle_task.cancel()
        self._end_forwards()
        for session in list(self.sessions.values()):
            session.hangup()  # normally done already by the session's own connection_lost
        if self._audited:
            emit("connection.closed", "connection closed", self.audit_fields(),
                 duration=round(time.monotonic() - self._opened, 3),
                 sessions=self._session_count, error=str(exc) if exc else None)
        elif not self._refused:
            # It never asked to log in: a scan, a client that gave up, or bytes that are not
            # SSH (docs/daemon.md, "A connection, step by step"). One line each, as sshd's.
            log.info("connection closed before login", extra={
                "conn": self.conn_id, "peer_ip": self.peer_ip, "peer_port": self.peer_port,
                "duration": round(time.monotonic() - self._opened, 3),
                "error": str(exc) if exc else None})
        self._gate.connection_closed(self)

    def _end_forwards(self) -> None:
        forwards = self.forwards
        if forwards is not None:
            forwards.close_all()
            task = asyncio.get_running_loop().create_task(forwards.finish())
            _finishing.add(task)
            task.add_done_callback(_finishing.discard)
    def audit_fields(self) -> dict[str, object]:
        """The common audit fields of this connection, as far as they are known."""
        ctx = self.context
        fields: dict[str, object] = {"conn": self.conn_id, "peer_ip": self.peer_ip}
        if ctx is not None:
            fields.update(peer_fields(ctx.peer), login=ctx.login, local_user=ctx.account.name)
        return fields

    async def begin_auth(self, username: str) -> bool:
        """Return False (no further authentication) when admitted; disconnect otherwise."""
        if self._refused:  # in connection_made
            return True
        if self.context is not None:
            # A second user name on the same connection: decide again from scratch.
            self.context = None
        # Events emitted while this login is decided (account checks in worker threads too)
        # carry the connection's id (tssh.audit.log).
        connection_scope({"conn": self.conn_id, "peer_ip": self.peer_ip, "login": username})
        self._audited = True
        try:
            peer = await self._peer()
        except Exception as e:
            reason = ("cannot tell who you are right now: this node's identity source "
                      "is not answering; try again later")
            emit("connection.refused", "login refused", level=logging.WARNING,
                 conn=self.conn_id, peer_ip=self.peer_ip, login=username,
                 reason=reason, error=str(e))
            self._refuse(reason)
            return True
        update_connection_scope(**peer_fields(peer))
        admission = await self._gate.admit(peer, self.peer_ip, username)
        if admission.check_needed and peer is not None:
            admission = await self._gate.check_login(self, peer, username, admission)
        decision = admission.decision
        accepted = admission.account is not None and peer is not None
        emit(
            "connection.accepted" if accepted else "connection.refused",
            "login accepted" if accepted else "login refused",
            level=logging.INFO if accepted else logging.WARNING,
            conn=self.conn_id, peer_ip=self.peer_ip, **peer_fields(peer),
            login=username, local_user=admission.account.name if admission.account else None,
            rule=decision.rule if decision else None,
            action=decision.action if decision else None, reason=admission.message,
            approval=self.approval.id if accepted and self.approval else None,
            recorded=admission.recording is not None if accepted else None,
        )
        if admission.account is None or peer is None:
            self._refuse(admission.message or "not permitted")
            return True
        self.context = ConnectionContext(
            conn_id=self.conn_id, login=username, account=admission.account, peer=peer,
            peer_ip=self.peer_ip, peer_port=self.peer_port, local_ip=self.local_ip,
            local_port=self.local_port,
            accept_env=tuple(decision.accept_env) if decision else (),
            recording=admission.recording, forwarding=admission.forwarding,
            session_max_duration=self._limits.session_max_duration,
        )
        self._gate.login_finished(self)
        if self._limits.idle_timeout and self._idle_task is None:
            self._idle_task = asyncio.get_running_loop().create_task(self._watch_idle())
        return False

    async def _peer(self) -> Peer | None:
        """Who the peer is now: the accept-time answer while it is current (the same
        identity file, a few seconds old), else the backend is asked again."""
        screened = self._screened
        if screened is not None and self._gate.still_current(screened):
            return screened.peer
        return await self._gate.whois(self.peer_ip)

    def hold(self, text: str) -> None:
        """The login is held for a check: tell the client (an auth banner, shown before any
        answer to its request) and stop asyncssh's login timer (the check has its own)."""
        with contextlib.suppress(OSError):
            self.conn.send_auth_banner(text)
        suspend = getattr(self.conn, "suspend_login_timer", None)
        if suspend is not None:
            suspend()

    def _refuse(self, message: str) -> None:
        conn = self.conn
        text = f"tssh: {message}"
        with contextlib.suppress(OSError):
            conn.send_auth_banner(text + "\r\n")
        conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, text)

    # Credentials are a formality: begin_auth decided already (see the module docstring).
    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def session_requested(self) -> ProcessSession | bool:
        if self.context is None:
            return False
        if len(self.sessions) >= self._max_sessions:
            # The client's channel open fails with this reason (OpenSSH prints "channel N:
            # open failed: resource shortage: ..."); its other sessions go on.
            log.warning("session refused: too many sessions on this connection",
                        extra={"conn": self.conn_id, "max_sessions": self._max_sessions})
            raise asyncssh.ChannelOpenError(
                OPEN_RESOURCE_SHORTAGE,
                f"tssh: at most {self._max_sessions} sessions per connection (max_sessions)")
        self._session_count += 1
        session_id = f"{self.conn_id}-{self._session_count}"
        session = ProcessSession(self.context, session_id, self._session_closed,
                                 self._gate.hung_up_groups, settle=self.current_context,
                                 cut_unparsable=self._cut_unparsable)
        self.sessions[session_id] = session
        return session

    def _session_closed(self, session: ProcessSession) -> None:
        self.sessions.pop(session.info.id, None)

    def _bytes_moved(self) -> int:
        """Every byte through this connection's sessions and forwards so far."""
        total = sum(s.info.bytes_in + s.info.bytes_out for s in self.sessions.values())
        if self.forwards is not None:
            total += sum(f.sent + f.received for f in self.forwards.live.values())
        return total + len(self.sessions) + (len(self.forwards.live) if self.forwards else 0)

    async def _watch_idle(self) -> None:
        """``idle_timeout``: no byte in or out on any channel for that long ends the
        connection with a message (docs/daemon.md, "Limits")."""
        limits = self._limits
        watch = IdleWatch(limits.idle_timeout)
        loop = asyncio.get_running_loop()
        while not self._ended:
            if watch.idle(self._bytes_moved(), loop.time()):
                emit("connection.idle", "connection idle: closing it", self.audit_fields(),
                     idle_timeout=limits.idle_timeout)
                self.end(idle_message(limits.idle_timeout))
                return
            await asyncio.sleep(limits.idle_check_interval)

    # --- forwarding (tssh/server/forward.py; docs/daemon.md, "Forwarding") -------------

    def _forwarding(self) -> Forwards:
        if self.forwards is None:
            ctx = self.context
            if ctx is None or self._ended:
                raise asyncssh.ChannelOpenError(OPEN_ADMINISTRATIVELY_PROHIBITED,
                                                "tssh: not logged in")
            self.forwards = Forwards(self.conn, UserDialer(ctx.account), self._forward_settings,
                                     self._forward_context, self._mark,
                                     settled=self._gate.policy_settled)
        return self.forwards

    def _forward_settings(self) -> ForwardingSettings | None:
        return None if self._ended or self.context is None else self.context.forwarding

    def _forward_context(self) -> ForwardContext:
        ctx = self.context
        if ctx is None:
            return ForwardContext(self.conn_id, "", "", "", "", self.peer_ip)
        return ForwardContext(ctx.conn_id, ctx.peer.name, ctx.peer.id, ctx.login,
                              ctx.account.name, ctx.peer_ip)

    def _mark(self, label: str) -> None:
        """Forwards show in every recording of this connection (docs/recording.md)."""
        for session in self.sessions.values():
            if session.recording is not None:
                session.recording.marker(label)

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str,
                             orig_port: int) -> Any:
        return self._forwarding().direct_tcp(dest_host, dest_port, orig_host, orig_port)

    def server_requested(self, listen_host: str, listen_port: int) -> Any:
        try:
            forwards = self._forwarding()
        except asyncssh.ChannelOpenError:
            return False
        return forwards.tcp_listen(listen_host, listen_port)

    def unix_connection_requested(self, dest_path: str) -> Any:
        return self._forwarding().direct_unix(dest_path)

    def unix_server_requested(self, listen_path: str) -> Any:
        try:
            forwards = self._forwarding()
        except asyncssh.ChannelOpenError:
            return False
        return forwards.unix_listen(listen_path)

    async def agent_requested(self) -> Any:
        """``ssh -A`` (asked by TsshServerConnection): the agent listener, or None."""
        try:
            forwards = self._forwarding()
        except asyncssh.ChannelOpenError:
            return None
        return await forwards.agent()

    async def current_context(self) -> ConnectionContext | None:
        """The connection's context under the current policy (a new session's, once a policy
        change in progress has reached this connection); None: the session may not start."""
        if not await self._gate.policy_settled() or self._ended:
            return None
        return self.context

    def end(self, message: str) -> None:
        """End every session of this connection with ``message``, then the connection."""
        self._ended = True
        if self.forwards is not None:  # tunnels and listeners end at once, not at disconnect
            self.forwards.close_all()
        for session in list(self.sessions.values()):
            session.terminate(message)
        if self.conn is not None:
            self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, message)
