"""The daemon: listeners on this node's tailnet addresses, the live policy, the SSH switch.

One ``Daemon`` owns everything long-lived: the identity resolver, the policy (reloaded when
its file changes; a broken edit keeps the last good policy), the host keys, the listeners
(open only while SSH is enabled) and the live connections. It answers the connections'
questions (``Gatekeeper``) and the control socket's (``set_ssh``, ``status``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import asyncssh
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig

from tssh.audit.journal import Journal
from tssh.audit.log import emit
from tssh.audit.sink import AuditSink
from tssh.config import Config
from tssh.errors import ConfigError, IdentityError, TsshError
from tssh.forwarding import effective_forwarding
from tssh.identity.base import Peer, Reloadable, Resolver
from tssh.identity.follow import follow_identity_file
from tssh.listensocket import listen_device, open_listening_socket
from tssh.policy.decider import Decider
from tssh.server.account import check_account_current
from tssh.server.auth import Admission, TsshServer, decide
from tssh.server.check import (
    Approval,
    CheckBook,
    CheckError,
    CheckKey,
    Hold,
    load_approvals,
    save_approvals,
)
from tssh.server.connection import HOST_KEY_ALGS, TsshServerConnection, algorithm_options
from tssh.server.control import check_private_dir
from tssh.server.handoff import HandedConnection
from tssh.server.hostkeys import host_keypairs, load_host_keys
from tssh.server.limits import ConnectionLimits
from tssh.server.oidc import OidcApprover
from tssh.server.policy_source import PolicySource, open_policy_source
from tssh.server.recording import RecordingService
from tssh.server.screen import (
    AcceptScreen,
    Screened,
    Screening,
    ScreeningProtocol,
    refusal_bytes,
)
from tssh.server.session import HungUpGroups
from tssh.server.startups import StartupLimiter, begin_startup
from tssh.socket_owner import loopback_peer_uid

log = logging.getLogger("tssh.daemon")
# How a hold ends besides an approval.
DENIED, GONE, POLICY = "denied", "gone", "policy"
HoldOutcome = Approval | str
audit = logging.getLogger("tssh.audit")

STATE_FILE = "ssh.json"
DISABLED_MESSAGE = "tssh: SSH disabled on this node"
REVOKED_MESSAGE = "tssh: access revoked by a policy change"
SHUTDOWN_MESSAGE = "tssh: the SSH daemon on this node is shutting down"
CHECK_REVOKED_MESSAGE = "tssh: access revoked: the check approval for this login was revoked"
CHECK_NEEDED_MESSAGE = ("tssh: access revoked by a policy change: this login now needs a "
                        "check; log in again")
POLICY_POLL_SECONDS = 1.0
SETTLE_TIMEOUT = 10.0  # seconds a new session waits for live connections to be re-checked


def read_ssh_enabled(state_dir: Path) -> bool:
    """The persisted switch; SSH is on when nothing was ever set (running the daemon asks
    for it)."""
    try:
        data = json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return True
    return bool(data.get("ssh", True)) if isinstance(data, dict) else True


def write_ssh_enabled(state_dir: Path, enabled: bool) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps({"ssh": enabled}) + "\n")
    os.replace(tmp, state_dir / STATE_FILE)


def open_audit_sink(config: Config) -> AuditSink:
    """The state directory made and checked, and its audit log open: a daemon must not run
    unaudited."""
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Host keys and the SSH switch live here: another user able to write it could plant
    # a host key for us to serve. Checked before anything is read from it.
    check_private_dir(config.state_dir)
    sink = AuditSink.for_state_dir(config.state_dir, config.audit_max_bytes,
                                   config.audit_files, Journal.if_present())
    try:
        sink.start()
    except OSError as e:
        raise TsshError(f"cannot open the audit log in {config.state_dir}: "
                        f"{e.strerror or e}") from None
    return sink


def listen_addresses(config: Config, self_node: Peer) -> tuple[str, ...]:
    addresses = config.listen or self_node.addresses
    if not addresses:
        raise ConfigError(
            f"node {self_node.name!r} has no addresses to listen on; set listen in the config"
        )
    return addresses


async def open_listeners(config: Config, addresses: tuple[str, ...],
                         factory: Callable[[], asyncio.Protocol]) -> list[asyncio.Server]:
    """One listener per address, each connection starting with ``factory()``'s protocol;
    TsshError (and none left open) if one cannot be opened."""
    loop = asyncio.get_running_loop()
    # With the wireguard backend the sockets take only packets that came through the
    # WireGuard interface (the kernel refuses the rest); refusing to start beats silently
    # losing that boundary, so a failed device binding is an error.
    device = listen_device(config)
    listeners: list[asyncio.Server] = []
    try:
        for address in addresses:
            sock = open_listening_socket(address, config.port, device=device)
            try:
                server = await loop.create_server(factory, sock=sock)
            except BaseException:
                sock.close()
                raise
            listeners.append(server)
    except OSError as e:
        await close_listeners(listeners)
        raise TsshError(f"cannot listen on {address} port {config.port}: "
                        f"{e.strerror or e}") from None
    except BaseException:
        await close_listeners(listeners)
        raise
    log.info("listening", extra={"addresses": list(addresses), "port": config.port,
                                 "device": device})
    return listeners


async def close_listeners(listeners: list[asyncio.Server]) -> None:
    for server in listeners:
        server.close()
    for server in listeners:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1.0)


class Supervised(Protocol):
    """A worker process's daemon reports to its supervisor (``tssh.server.worker``)."""

    def released(self, conn_id: int) -> None:
        """The handed connection ``conn_id`` logged in or closed: its start-up slot is free."""
        ...

    def closed(self, conn_id: int) -> None: ...


class Daemon:
    """Lifecycle: ``await start()``, serve until stopped, ``await close()``.

    With ``supervised`` it is one worker process's (docs/daemon.md, "Worker processes"): no
    listeners, no audit file, no switch of its own; the supervisor hands it connections
    (``adopt``) after its own accept-time checks."""

    def __init__(self, config: Config, resolver: Resolver, *,
                 local_owner: int | None = None, supervised: Supervised | None = None) -> None:
        """``local_owner``: serve only local processes of this uid (the loopback demo)."""
        self.config = config
        self._local_owner = local_owner
        self._supervised = supervised
        self._handed: dict[TsshServer, int] = {}  # supervised: each connection's hand-off id
        self._resolver = resolver
        self._policy: PolicySource = open_policy_source(config, poll_interval=POLICY_POLL_SECONDS)
        self._decider: Decider | None = None
        self._self_node: Peer | None = None
        self._addresses: tuple[str, ...] = ()
        self._options: Any = None
        self._listeners: list[asyncio.Server] = []
        self._connections: set[TsshServer] = set()
        self._logging_in: set[TsshServer] = set()  # counted by _startups
        self._startups = StartupLimiter(per_source=config.per_source_max_startups,
                                        max_startups=config.max_startups)
        # Asked at accept, before a start-up slot: an unknown address gets neither a slot nor
        # an SSH handshake (docs/daemon.md, "A connection, step by step").
        self._screen = AcceptScreen(resolver.whois)
        self._screening = Screening()
        self._enabled = True
        self._watch_task: asyncio.Task[None] | None = None
        self._identity_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        # Set while every live connection has been checked against the current policy;
        # sessions starting meanwhile wait for it (see policy_settled).
        self._settled = asyncio.Event()
        self._settled.set()
        self._generation = 0  # of policy and identity changes: which re-check is the latest
        self._lock = asyncio.Lock()
        self._recorders = RecordingService(config, resolver)
        self._forwarding = config.forwarding()
        self._hung_up = HungUpGroups()
        # Check mode: held logins and approvals (docs/daemon.md, "Check mode").
        self._checks = CheckBook()
        self._hold_waiters: dict[str, tuple[TsshServer, asyncio.Future[HoldOutcome]]] = {}
        self.clock = time.time
        self._oidc: OidcApprover | None = None
        self._oidc_stop = asyncio.Event()
        self._oidc_task: asyncio.Task[None] | None = None
        self._audit: AuditSink | None = None

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        config = self.config
        if self._supervised is None:  # a worker's events go to its supervisor's log
            self._audit = open_audit_sink(config)
        await self._policy.start()
        self._decider = self._policy.current()
        self._self_node = await self._resolver.self_node()
        self._addresses = listen_addresses(config, self._self_node)
        keys = await asyncio.to_thread(load_host_keys, config.host_keys, config.state_dir)
        self._options = await asyncssh.SSHServerConnectionOptions.construct(
            server_factory=lambda: TsshServer(
                self, ConnectionLimits.from_config(config),
                cut_unparsable=config.audit_unparsable == "cut"),
            server_host_keys=host_keypairs(keys, HOST_KEY_ALGS),
            server_version="tssh",
            encoding=None,
            line_editor=False,
            agent_forwarding=False,
            x11_forwarding=False,
            allow_pty=True,
            window=config.channel_window,  # session channels (docs/config.md)
            login_timeout=config.login_grace_time,  # 0: none, as asyncssh and sshd take it
            keepalive_interval=config.client_alive_interval,
            keepalive_count_max=config.client_alive_count_max,
            **algorithm_options(),
        )
        self._load_approvals()
        if config.check_oidc_issuer is not None:
            await self._start_oidc()
        # Supervised, it serves what it is handed; the supervisor keeps the switch.
        self._enabled = self._supervised is not None or read_ssh_enabled(config.state_dir)
        if self._enabled and self._supervised is None:
            await self._open_listeners()
        self._watch_task = asyncio.create_task(self._follow_policy())
        if isinstance(self._resolver, Reloadable):
            # a node's user or tags may change: live connections are decided again
            self._identity_task = asyncio.create_task(follow_identity_file(
                self._resolver, self._identity_changed, POLICY_POLL_SECONDS))
        log.info(
            "daemon started",
            extra={"node": self._self_node.name, "addresses": list(self._addresses),
                   "port": config.port, "ssh": self._enabled, "identity": config.identity},
        )

    async def close(self) -> None:
        if self._identity_task is not None:
            self._identity_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._identity_task
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        await self._close_listeners()
        await self._end_connections(SHUTDOWN_MESSAGE)
        if self._oidc_task is not None:
            self._oidc_stop.set()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._oidc_task, 5)
        await self._recorders.close()
        await self._hung_up.finish()
        await self._policy.close()
        await self._resolver.close()
        if self._audit is not None:
            await asyncio.to_thread(self._audit.close)
            self._audit = None

    async def _open_listeners(self) -> None:
        loop = asyncio.get_running_loop()
        options = self._options
        version = b"SSH-2.0-" + options.version

        def ssh(screened: Screened) -> TsshServerConnection:
            conn = TsshServerConnection(loop, options, None, None)
            conn.screened = screened
            return conn

        def factory() -> ScreeningProtocol:
            return ScreeningProtocol(self._screen, ssh,
                                     lambda text: refusal_bytes(version, text),
                                     self._screening)

        self._listeners = await open_listeners(self.config, self._addresses, factory)

    async def _close_listeners(self) -> None:
        listeners, self._listeners = self._listeners, []
        await close_listeners(listeners)

    async def adopt(self, handed: HandedConnection) -> None:
        """Serve a connection the supervisor accepted and screened (supervised only). It
        asks the identity backend again at login: the supervisor's answer stays there."""
        loop = asyncio.get_running_loop()
        conn = TsshServerConnection(loop, self._options, None, None)
        conn.handoff_id, conn.early = handed.id, handed.early
        try:
            await loop.connect_accepted_socket(lambda: conn, sock=handed.sock)
        except OSError as e:
            handed.sock.close()
            log.warning("a handed connection could not be served",
                        extra={"error": str(e), "handoff": handed.id})
            if self._supervised is not None and conn.handoff_id not in self._handed.values():
                self._supervised.released(handed.id)
                self._supervised.closed(handed.id)

    async def _end_connections(self, message: str) -> None:
        self._screening.close()
        for server in list(self._connections):
            server.end(message)
        # Give the disconnect messages a moment to leave; bounded.
        for _ in range(20):
            if not self._connections:
                break
            await asyncio.sleep(0.05)

    # --- Gatekeeper (asked by each connection) ---------------------------------------

    async def whois(self, address: str) -> Peer | None:
        return await self._resolver.whois(address)

    def still_current(self, screened: Screened) -> bool:
        return self._screen.is_current(screened)

    async def admit(self, peer: Peer | None, peer_ip: str, login: str, *,
                    at_login: bool = True) -> Admission:
        """Decide in a worker thread: account lookups go through NSS, which may be LDAP or
        sssd and take seconds, while every session's I/O runs on this event loop.

        Account expiry is judged ``at_login`` only, as sshd does: a policy change must not
        end a live connection because the account expired since."""
        assert self._self_node is not None
        check = check_account_current if at_login else None
        for _ in range(3):
            decider = self._decider
            admission = await asyncio.to_thread(
                decide, decider, peer, peer_ip, self._self_node, login, check_account=check
            )
            # A connection still deciding is not among those _revalidate re-checks: a
            # decision made with a policy that was replaced meanwhile is made again.
            if decider is self._decider:
                break
        else:
            admission = decide(self._decider, peer, peer_ip, self._self_node, login,
                               check_account=check)
        if admission.account is not None and peer is not None:  # accepted, or once approved
            recording = self._recorders.request(admission.decision)
            groups = self._decider.groups if self._decider is not None else {}
            forwarding = effective_forwarding(self._forwarding, peer, admission.account.name,
                                              recording is not None, groups)
            admission = replace(admission, recording=recording, forwarding=forwarding)
        return admission

    def connection_opened(self, server: TsshServer) -> bool:
        if self._local_owner is not None:
            uid = loopback_peer_uid((server.peer_ip, server.peer_port),
                                    (server.local_ip, server.local_port))
            if uid != self._local_owner:
                log.warning(
                    "refused a connection from a local process of another user",
                    extra={"peer_ip": server.peer_ip, "peer_port": server.peer_port,
                           "uid": uid, "served_uid": self._local_owner},
                )
                return False
        if self._supervised is not None:  # the supervisor gave it a start-up slot
            handoff_id = getattr(server.conn, "handoff_id", None)
            if not isinstance(handoff_id, int):
                return False
            self._handed[server] = handoff_id
        elif not begin_startup(self._startups, server.peer_ip):
            return False
        self._logging_in.add(server)
        self._connections.add(server)
        return True

    def login_finished(self, server: TsshServer) -> None:
        if server in self._logging_in:
            self._logging_in.discard(server)
            if self._supervised is None:
                self._startups.end(server.peer_ip)
            else:
                self._supervised.released(self._handed[server])

    def connection_closed(self, server: TsshServer) -> None:
        self.login_finished(server)
        self._connections.discard(server)
        handoff_id = self._handed.pop(server, None)
        if self._supervised is not None and handoff_id is not None:
            self._supervised.closed(handoff_id)
        for hold_id, (held_by, waiter) in list(self._hold_waiters.items()):
            if held_by is server:  # the client left while held: no hold stays behind
                held = self._checks.drop(hold_id)
                if held is not None:
                    audit.info("check abandoned: the client left", extra=self._check_fields(
                        "check.abandoned", held, server))
                if not waiter.done():
                    waiter.set_result(GONE)

    @property
    def hung_up_groups(self) -> HungUpGroups:
        return self._hung_up

    # --- check mode -----------------------------------------------------------------------

    async def check_login(self, server: TsshServer, peer: Peer, login: str,
                          admission: Admission) -> Admission:
        """Hold a check rule's login until it is approved, denied or times out; a remembered
        approval for (node, login, local user) admits it at once."""
        assert admission.account is not None and admission.decision is not None
        assert self._self_node is not None
        period = admission.decision.check_period or "12h"
        key = CheckKey(peer.id or peer.name, login, admission.account.name)
        target = f"{login}@{self._self_node.name}"
        remembered = self._checks.find(key, self.clock(), period)
        if remembered is not None:
            server.approval = remembered
            log.info("check passed by a remembered approval", extra={
                "conn": server.conn_id, "approval": remembered.id, "login": login,
                "expires": _iso(remembered.expires)})
            return admission
        held = self._checks.hold(key, peer.name, period, self.clock(), user=peer.user)
        if self._oidc is not None:
            held.url = self._oidc.url_for(held.id)
        waiter: asyncio.Future[HoldOutcome] = asyncio.get_running_loop().create_future()
        self._hold_waiters[held.id] = (server, waiter)
        audit.info("check held: login waits for an approval", extra=self._check_fields(
            "check.held", held, server, timeout=self.config.check_timeout))
        server.hold(f"tssh: approval required for {target}: {held.id}\r\n"
                    f"tssh: waiting up to {self.config.check_timeout} s; on {self._self_node.name} "
                    f"run: tssh check approve {held.id}\r\n"
                    + (f"tssh: or approve as {peer.user} at {held.url}\r\n"
                       if held.url and peer.user else ""))
        try:
            async with asyncio.timeout(self.config.check_timeout):
                outcome = await waiter
        except TimeoutError:
            if self._checks.drop(held.id) is not None:
                audit.warning("check timed out", extra=self._check_fields(
                    "check.timeout", held, server, timeout=self.config.check_timeout))
            return replace(admission, account=None, message=(
                f"approval for {target} not given within {self.config.check_timeout} s: "
                "login refused"))
        finally:
            self._hold_waiters.pop(held.id, None)
        if outcome == DENIED:
            return replace(admission, account=None,
                           message=f"approval for {target} was denied: login refused")
        if outcome == GONE:  # the client left, or the daemon is ending its connections
            return replace(admission, account=None, message="the connection closed while "
                           "the login was held")
        # The policy may have changed while the login waited (POLICY: it did, and no longer
        # holds this login): decide it again.
        again = await self.admit(peer, server.peer_ip, login)
        if again.account is None or again.account.name != admission.account.name:
            return again if again.account is None else replace(
                again, account=None, message="the policy changed while this login was held")
        if again.check_needed:
            if not isinstance(outcome, Approval):
                return replace(again, account=None, message="the policy changed while this "
                               "login was held: log in again")
            server.approval = outcome
        return again

    async def _recheck_holds(self) -> None:
        """After a policy or identity change: a held login the policy no longer holds for a
        check (now accepted outright, or refused) stops waiting and is decided anew."""
        for hold_id, (server, waiter) in list(self._hold_waiters.items()):
            held = self._checks.holds.get(hold_id)
            if held is None or waiter.done():
                continue
            try:
                peer = await self._resolver.whois(server.peer_ip)
            except IdentityError:
                continue  # judged when approved
            admission = await self.admit(peer, server.peer_ip, held.key.login, at_login=False)
            if admission.check_needed:
                continue
            if self._checks.drop(hold_id) is not None and not waiter.done():
                audit.info("check dropped: the policy no longer holds this login",
                           extra=self._check_fields("check.dropped", held, server))
                waiter.set_result(POLICY)

    def _check_fields(self, event: str, held: Hold, server: TsshServer | None,
                      **more: object) -> dict[str, object]:
        fields: dict[str, object] = {
            "event": event, "check": held.id, "node": held.node, "node_id": held.key.node_id,
            "user": held.user,
            "login": held.key.login, "local_user": held.key.local_user,
            "check_period": held.period, **more}
        if server is not None:
            fields.update(conn=server.conn_id, peer_ip=server.peer_ip)
        return fields

    def check_list(self) -> list[dict[str, object]]:
        return [dict(h.to_json(), since=_iso(h.since)) for h in self._checks.pending()]

    def check_approve(self, hold_id: str, **how: object) -> dict[str, object]:
        """Raises CheckError (a TsshError for the control socket) for an unknown id.
        ``how``: audit fields saying who approved other than on the node (OIDC)."""
        held = self._checks.get(hold_id)
        waiter = self._hold_waiters.get(held.id)
        approval = self._checks.approve(held.id, self.clock())
        if approval.remembered:
            self._save_approvals()
        audit.info("check approved", extra=self._check_fields(
            "check.approved", held, waiter[0] if waiter else None,
            expires=_iso(approval.expires), **how))
        if waiter is not None and not waiter[1].done():
            waiter[1].set_result(approval)
        return {"id": held.id, "login": held.key.login, "node": held.node,
                "expires": _iso(approval.expires)}

    async def _start_oidc(self) -> None:
        config = self.config
        assert config.check_oidc_issuer is not None and config.check_oidc_client_id is not None
        secret = None
        if config.check_oidc_client_secret_file is not None:
            try:
                secret = config.check_oidc_client_secret_file.read_text().strip()
            except OSError as e:
                raise ConfigError(f"check_oidc_client_secret_file: cannot read "
                                  f"{config.check_oidc_client_secret_file}: "
                                  f"{e.strerror or e}") from None
        approver = OidcApprover(
            config.check_oidc_issuer, config.check_oidc_client_id, secret,
            f"http://{host_port(self._addresses[0], config.check_port)}",
            is_held=lambda hold_id: hold_id in self._checks.holds,
            approve=self._approve_oidc, claim=config.check_oidc_claim,
            max_age=config.check_oidc_max_age)
        hc = HypercornConfig()
        hc.bind = [host_port(a, config.check_port) for a in self._addresses]
        hc.accesslog = None
        hc.errorlog = logging.getLogger("hypercorn.error")
        hc.keep_alive_timeout = 10
        hc.graceful_timeout = 2
        self._oidc = approver
        self._oidc_task = asyncio.create_task(
            hypercorn_serve(approver.asgi, hc,  # type: ignore[arg-type]
                            shutdown_trigger=self._oidc_stop.wait))
        self._oidc_task.add_done_callback(_log_pages_ended)
        try:
            await approver.provider()
        except TsshError as e:  # asked again at the first approval page
            log.warning("OIDC discovery failed; approval pages will try again",
                        extra={"error": str(e)})
        log.info("check approval pages", extra={"url": approver.url_for("ID"),
                                                "issuer": config.check_oidc_issuer})

    async def _approve_oidc(self, hold_id: str, email: str) -> str:
        """The identity provider says ``email`` signed in: approve if that is the tailnet
        user of the held login's node."""
        held = self._checks.get(hold_id)
        if held.user is None or held.user.lower() != email.lower():
            audit.warning("check approval refused: signed in as someone else",
                          extra=self._check_fields("check.oidc_refused", held, None,
                                                   signed_in=email, user=held.user))
            raise CheckError(f"signed in as {email}, but this login is held for "
                             f"{held.user or 'a tagged node'}: not approved")
        result = self.check_approve(hold_id, via="oidc", approver=email)
        expires = f" until {result['expires']}" if result.get("expires") else ""
        return f"approved {held.key.login} from {held.node}{expires}; you may close this page"

    def check_deny(self, hold_id: str) -> dict[str, object]:
        held = self._checks.deny(hold_id)
        waiter = self._hold_waiters.get(held.id)
        audit.info("check denied", extra=self._check_fields(
            "check.denied", held, waiter[0] if waiter else None))
        if waiter is not None and not waiter[1].done():
            waiter[1].set_result(DENIED)
        return {"id": held.id, "login": held.key.login, "node": held.node}

    async def check_revoke(self, login: str | None) -> dict[str, object]:
        """Drop approvals (for ``login`` only, if given); live connections they admitted are
        judged again, and ended when nothing but the approval admitted them."""
        dropped = self._checks.revoke(login)
        self._save_approvals()
        ids = {a.id for a in dropped}
        affected = [server for server in list(self._connections)
                    if server.approval is not None and (
                        server.approval.id in ids or (not server.approval.remembered and (
                            login is None or server.approval.key.login == login)))]
        for gone in dropped:
            audit.info("access revoked: check approval dropped", extra={
                "event": "access.revoked", "approval": gone.id, "node": gone.node,
                "login": gone.key.login, "local_user": gone.key.local_user})
        ended = 0
        for server in affected:
            approval, server.approval = server.approval, None
            peer = server.context.peer if server.context else None
            # An ended connection is audited there (access.revoked, with the approval).
            if not await self._rejudge(server, CHECK_REVOKED_MESSAGE, peer,
                                       approval=approval.id if approval else None):
                ended += 1
        return {"revoked": [a.id for a in dropped], "connectionsEnded": ended}

    def reload_approvals(self) -> None:
        """Another worker process changed the saved approvals: take the file's."""
        self._checks.approvals.clear()
        self._load_approvals()

    def _load_approvals(self) -> None:
        try:
            approvals = load_approvals(self.config.state_dir)
        except ValueError as e:
            log.error("cannot read the saved check approvals; starting with none",
                      extra={"error": str(e)})
            return
        now = self.clock()
        for approval in approvals:
            self._checks.approvals[approval.id] = approval
        self._checks.prune(now)

    def _save_approvals(self) -> None:
        self._checks.prune(self.clock())
        try:
            save_approvals(self.config.state_dir, self._checks.current(self.clock()))
        except OSError as e:
            log.error("cannot save the check approvals; they last until the daemon stops",
                      extra={"error": str(e)})

    # --- policy reload -------------------------------------------------------------------

    async def _follow_policy(self) -> None:
        """Apply each new policy; the source keeps the last good one when an update is bad."""
        try:
            await self._policy.run(self._policy_changed)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.error("policy source failed; the last policy stays in force",
                      extra={"error": str(e)})

    def _policy_changed(self, decider: Decider) -> None:
        self._decider = decider
        log.info("policy updated", extra={"rules": decider.rule_count})
        self._recheck_connections()

    def _identity_changed(self) -> None:
        self._screen.forget()  # a node added to the file may connect at once
        self._recheck_connections()

    def _recheck_connections(self) -> None:
        self._generation += 1
        self._settled.clear()
        task = asyncio.get_running_loop().create_task(self._revalidate())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _revalidate(self) -> None:
        """End connections the new policy (or identity) no longer admits as the same local
        user; give the others the new rule's recording settings."""
        generation = self._generation
        try:
            await self._revalidate_connections()
        finally:
            if generation == self._generation:  # else a newer re-check is under way
                self._settled.set()
        log.info("connections revalidated", extra={"connections": len(self._connections)})

    async def policy_settled(self) -> bool:
        """True once live connections were re-checked against the current policy, so that a
        session opened just after a policy change runs (and is recorded) as the new policy
        says, not as its connection's old decision did. False if that takes longer than
        SETTLE_TIMEOUT (NSS lookups stuck): the session is refused rather than started under
        a decision that may no longer hold."""
        if self._settled.is_set():
            return True
        try:
            async with asyncio.timeout(SETTLE_TIMEOUT):
                await self._settled.wait()
        except TimeoutError:
            log.warning("live connections not re-checked against the new policy in time; "
                        "new sessions on them are refused until they are",
                        extra={"waited": SETTLE_TIMEOUT})
            return False
        return True

    async def _revalidate_connections(self) -> None:
        await self._recheck_holds()
        for server in list(self._connections):
            ctx = server.context
            if ctx is None:
                continue
            try:  # who the peer is now: its user or tags may have changed too
                peer = await self._resolver.whois(ctx.peer_ip)
            except IdentityError as e:
                log.warning("identity backend failed while re-checking a connection; "
                            "judged as the node it was at login",
                            extra={"conn": ctx.conn_id, "error": str(e)})
                peer = ctx.peer
            await self._rejudge(server, REVOKED_MESSAGE, peer)

    async def _rejudge(self, server: TsshServer, message: str, now_peer: Peer | None,
                       approval: str | None = None) -> bool:
        """Decide a live connection again; end it with ``message`` if it is not admitted as
        the same local user any more. ``now_peer``: who the node is now. True if it goes
        on."""
        ctx = server.context
        if ctx is None:
            return True
        admission = await self.admit(now_peer, ctx.peer_ip, ctx.login, at_login=False)
        reason = admission.message if now_peer else "peer no longer known"
        if now_peer is not None and admission.check_needed and server.approval is None:
            # A check rule decides now: an approval must cover it (it may be remembered).
            assert admission.account is not None and admission.decision is not None
            server.approval = self._checks.find(
                CheckKey(now_peer.id or now_peer.name, ctx.login, admission.account.name),
                self.clock(), admission.decision.check_period or "12h")
            if server.approval is None:
                if message == REVOKED_MESSAGE:
                    message = CHECK_NEEDED_MESSAGE
                reason = "a check rule decides and no approval covers the connection"
                admission = replace(admission, account=None)
        if admission.accepted:
            server.approval = None  # an accept rule admits it now: no approval needed
        if now_peer is None or admission.account is None \
                or admission.account.name != ctx.account.name:
            emit("access.revoked", "connection revoked", server.audit_fields(),
                 reason=reason, client_message=message, approval=approval)
            server.end(message)
            return False
        if (admission.recording != ctx.recording or now_peer != ctx.peer
                or admission.forwarding != ctx.forwarding):
            # Sessions and forwards opened from now on run (and are recorded) as the new
            # rule says.
            server.context = replace(ctx, peer=now_peer, recording=admission.recording,
                                     forwarding=admission.forwarding)
        return True

    # --- control socket (ControlHandler) -------------------------------------------------

    async def set_ssh(self, enabled: bool) -> None:
        async with self._lock:
            if self._supervised is not None:  # the supervisor has the listeners and file
                if not enabled:
                    await self._end_connections(DISABLED_MESSAGE)
                self._enabled = enabled
                return
            if enabled != self._enabled:
                if enabled:
                    await self._open_listeners()  # raises (and nothing changes) if it cannot
                else:
                    await self._close_listeners()
                    await self._end_connections(DISABLED_MESSAGE)
                self._enabled = enabled
                log.info("ssh switched", extra={"ssh": enabled})
            write_ssh_enabled(self.config.state_dir, enabled)

    async def status(self) -> dict[str, object]:
        """The status object ``tssh status`` renders (keys per ``ControlHandler.status``)."""
        sessions = [
            {"id": s.info.id, "user": _tailnet_identity(server.context.peer)
             if server.context else None,
             "localUser": s.info.user, "from": f"{s.info.peer} ({s.info.peer_ip})",
             "kind": s.info.kind, "bytesIn": s.info.bytes_in, "bytesOut": s.info.bytes_out,
             "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s.info.started)),
             "recording": s.recording.status() if s.recording else None}
            for server in self._connections for s in server.sessions.values()
        ]
        forwards = [
            {"connection": server.conn_id, "localUser": server.context.account.name
             if server.context else None, **f}
            for server in self._connections if server.forwards is not None
            for f in server.forwards.status()
        ]
        return {
            "ssh": self._enabled,
            "node": self._self_node.name if self._self_node else None,
            "listening": [host_port(a, self.config.port) for a in self._addresses]
            if self._listeners else [],
            "addresses": list(self._addresses),
            "port": self.config.port,
            "identity": self.config.identity,
            "policy": self._policy.status().to_json(),
            "recorders": self._recorders.recorders_status(),
            "recordingWorker": {"pid": self._recorders.worker.pid},
            "connections": len(self._connections),
            "sessions": sessions,
            "forwards": forwards,
            "checks": {
                "pending": [dict(h.to_json(), since=_iso(h.since))
                            for h in self._checks.pending()],
                "approvals": [{"id": a.id, "node": a.node, "login": a.key.login,
                               "localUser": a.key.local_user, "period": a.period,
                               "approved": _iso(a.approved_at), "expires": _iso(a.expires)}
                              for a in self._checks.current(self.clock())],
            },
        }


def _log_pages_ended(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the check approval pages stopped; only tssh check approve can approve",
                  extra={"error": str(task.exception())})


def _iso(when: float | None) -> str | None:
    return None if when is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def _tailnet_identity(peer: Peer) -> str:
    """Who is connecting: the node's owner, or its tags for a tagged node."""
    return peer.user or ",".join(peer.tags) or peer.name


def host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
