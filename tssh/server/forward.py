"""One connection's forwards: ``-L``/``-D``/``-W``, ``-R``, Unix sockets both ways, ``-A``.

Each request is judged by the connection's forwarding settings (tssh/forwarding.py); the
socket is made as the session's user (tssh/server/dialer.py); the daemon relays bytes
between it and the SSH channel, counting them. Every forward is audited (``forward.open``,
``forward.close`` with bytes each way, ``forward.refused``), marked in the connection's
session recordings, listed by ``tssh status``, and closed with the connection (also at once
when access is revoked). See docs/daemon.md, "Forwarding".
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

import asyncssh
from asyncssh.constants import OPEN_ADMINISTRATIVELY_PROHIBITED, OPEN_CONNECT_FAILED
from asyncssh.forward import SSHForwarder
from asyncssh.listener import SSHListener

from tssh.forwarding import (
    ForwardingSettings,
    agent_refusal,
    listen_address,
    stream_local_refusal,
    tcp_refusal,
)
from tssh.server.dialer import UserDialer

log = logging.getLogger("tssh.forward")
audit = logging.getLogger("tssh.audit")

CHANNEL_CHUNK = 32 * 1024  # asyncssh slices a larger write quadratically (session.py)
WRITE_HIGH_WATER = 1024 * 1024


@dataclass
class Forward:
    """One forward, as ``tssh status`` and the audit log show it. ``sent``: bytes from the
    client to the destination; ``received``: back."""

    id: int
    kind: str  # local | remote | remote-listener | local-unix | remote-unix |
    #            remote-unix-listener | agent | agent-listener
    destination: str
    origin: str = ""
    opened: float = field(default_factory=time.time)
    sent: int = 0
    received: int = 0
    closed: bool = False

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "kind": self.kind, "destination": self.destination,
                "origin": self.origin,
                "opened": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.opened)),
                "bytesSent": self.sent, "bytesReceived": self.received}


class _Side(SSHForwarder):
    """One end of a relay, counting what it reads; the channel end writes in packet-sized
    pieces."""

    def __init__(self, count: Callable[[int], None], peer: SSHForwarder | None = None,
                 chunked: bool = False, on_close: Callable[[], None] | None = None,
                 hold: bool = False) -> None:
        """``hold``: a socket end, paused until its channel end's session starts (what it
        reads before then would have nowhere to go)."""
        super().__init__(peer)
        self._count = count
        self._chunked = chunked
        self._on_close = on_close
        self._hold = hold
        self._pending: list[bytes] = []

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            super().write(pending[0] if len(pending) == 1 else b"".join(pending))

    def write_eof(self) -> None:
        self._flush()
        super().write_eof()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # A channel end: asyncssh's default high-water mark (64 KiB) is below one socket read
        # (256 KiB), so every read would pause and resume the socket (tssh/server/session.py
        # sizes its channels the same way). A socket end keeps asyncio's 64 KiB: Python
        # 3.11's transport moves its whole unsent buffer after each partial send.
        if self._chunked:
            with contextlib.suppress(AttributeError, ValueError):
                transport.set_write_buffer_limits(  # type: ignore[attr-defined]
                    high=WRITE_HIGH_WATER)
        if self._hold:
            transport.pause_reading()  # type: ignore[attr-defined]

    def session_started(self) -> None:
        """A channel end is open: its socket end may read now."""
        peer = self._peer
        if peer is not None:
            with contextlib.suppress(Exception):
                peer.resume_reading()

    def data_received(self, data: bytes, datatype: int | None = None) -> None:
        self._count(len(data))
        super().data_received(data, datatype)

    def write(self, data: bytes) -> None:
        if not self._chunked:
            # A socket end: packets that arrive together (one read of the SSH connection
            # holds several) go out in one send, not one system call per 32 KiB packet.
            if not self._pending:
                asyncio.get_running_loop().call_soon(self._flush)
            self._pending.append(data)
            return
        if len(data) <= CHANNEL_CHUNK:
            super().write(data)
            return
        view = memoryview(data)
        for start in range(0, len(data), CHANNEL_CHUNK):
            super().write(view[start:start + CHANNEL_CHUNK])  # type: ignore[arg-type]

    def close(self) -> None:
        self._flush()
        super().close()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()


class _Listener(SSHListener):
    """A listening socket made by the helper, served by the daemon's event loop."""

    def __init__(self, server: asyncio.AbstractServer, port: int,
                 on_close: Callable[[], None]) -> None:
        super().__init__()
        self._server = server
        self._port = port
        self._on_close: Callable[[], None] | None = on_close

    def get_port(self) -> int:
        return self._port

    def close(self) -> None:
        self._server.close()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    async def wait_closed(self) -> None:
        await self._server.wait_closed()


class _AgentListener:
    """What asyncssh's connection keeps as its agent listener (``get_path``, ``close``)."""

    def __init__(self, listener: _Listener, path: str) -> None:
        self._listener = listener
        self._path = path

    def get_path(self) -> str:
        return self._path

    def close(self) -> None:
        self._listener.close()


@dataclass(frozen=True)
class ForwardContext:
    """Who the forwards are for, for audit records."""

    conn_id: str
    node: str
    node_id: str
    login: str
    local_user: str
    address: str


class Forwards:
    """The forwards of one connection."""

    def __init__(self, conn: Any, dialer: UserDialer,
                 settings: Callable[[], ForwardingSettings | None],
                 context: Callable[[], ForwardContext],
                 marker: Callable[[str], None],
                 settled: Callable[[], Awaitable[bool]] | None = None,
                 on_activity: Callable[[], None] | None = None) -> None:
        """``settings``: the connection's settings now (None: no forward may open);
        ``marker``: writes an ``"m"`` event into the connection's session recordings;
        ``settled``: False when a policy change could not be applied to the connection in
        time (the forward is refused, as a session would be)."""
        self._settled = settled
        self._touch = on_activity or (lambda: None)
        self._conn = conn
        self._dialer = dialer
        self._settings = settings
        self._context = context
        self._marker = marker
        self._ids = itertools.count(1)
        self.live: dict[int, Forward] = {}
        self._closers: dict[int, Callable[[], None]] = {}
        self._ended = False
        self.agent_path: str | None = None

    # --- bookkeeping --------------------------------------------------------------------

    def _fields(self, event: str, fwd: Forward, **more: object) -> dict[str, object]:
        ctx = self._context()
        return {"event": event, "connectionID": ctx.conn_id, "node": ctx.node,
                "nodeID": ctx.node_id, "login": ctx.login, "localUser": ctx.local_user,
                "address": ctx.address, "kind": fwd.kind, "destination": fwd.destination,
                "origin": fwd.origin, **more}

    def _open(self, kind: str, destination: str, origin: str = "") -> Forward:
        fwd = Forward(next(self._ids), kind, destination, origin)
        self.live[fwd.id] = fwd
        audit.info("forward opened", extra=self._fields("forward.open", fwd))
        self._marker(f"tssh: forward opened: {kind} {destination}")
        return fwd

    def _close(self, fwd: Forward) -> None:
        if fwd.closed:
            return
        fwd.closed = True
        self.live.pop(fwd.id, None)
        self._closers.pop(fwd.id, None)
        audit.info("forward closed", extra=self._fields(
            "forward.close", fwd, bytesSent=fwd.sent, bytesReceived=fwd.received,
            seconds=round(time.time() - fwd.opened, 3)))
        self._marker(f"tssh: forward closed: {fwd.kind} {fwd.destination} "
                     f"({fwd.sent} bytes sent, {fwd.received} received)")

    def _refuse(self, kind: str, destination: str, text: str, *, debug: bool) -> None:
        """Audit and log a refusal; ``debug``: the SSH request has no failure text, so the
        client gets it as a debug message (``ssh -v`` prints it)."""
        fwd = Forward(0, kind, destination)
        audit.info("forward refused", extra=self._fields("forward.refused", fwd, reason=text))
        if debug:
            with contextlib.suppress(Exception):
                self._conn.send_debug(text, always_display=True)

    async def _settle(self) -> None:
        """Wait until a policy change in progress has reached this connection."""
        if self._settled is not None and not await self._settled():
            raise asyncssh.ChannelOpenError(
                OPEN_ADMINISTRATIVELY_PROHIBITED, "tssh: the policy changed and this "
                "connection could not be re-checked in time; try again")

    def _current(self) -> ForwardingSettings:
        settings = self._settings()
        if settings is None or self._ended:
            raise asyncssh.ChannelOpenError(OPEN_ADMINISTRATIVELY_PROHIBITED,
                                            "tssh: this connection is ending")
        return settings

    def close_all(self) -> None:
        """Close every forward and listener now (the connection ends)."""
        self._ended = True
        for closer in list(self._closers.values()):
            with contextlib.suppress(Exception):
                closer()
        for fwd in list(self.live.values()):
            self._close(fwd)

    async def finish(self) -> None:
        self.close_all()
        await self._dialer.close()

    # --- relays ---------------------------------------------------------------------------

    async def _relay_from_socket(self, fwd: Forward, sock: socket.socket,
                                 unix: bool) -> SSHForwarder:
        """The session for the channel of ``fwd``, relaying to ``sock``."""
        loop = asyncio.get_running_loop()

        touch = self._touch

        def received(n: int) -> None:
            fwd.received += n
            touch()

        def sent(n: int) -> None:
            fwd.sent += n
            touch()

        def done() -> None:
            self._close(fwd)

        def make_socket_side() -> _Side:
            return _Side(received, on_close=done, hold=True)

        try:
            if unix:
                _, far = await loop.create_unix_connection(make_socket_side, sock=sock)
            else:
                _, far = await loop.create_connection(make_socket_side, sock=sock)
        except OSError as e:
            sock.close()
            self._close(fwd)
            raise asyncssh.ChannelOpenError(OPEN_CONNECT_FAILED, str(e)) from None
        if self._ended:  # the connection ended meanwhile: close_all has run already
            far.close()
            raise asyncssh.ChannelOpenError(OPEN_CONNECT_FAILED, "tssh: the connection ended")
        near = _Side(sent, peer=far, chunked=True, on_close=done)
        self._closers[fwd.id] = near.close
        return near

    def _accepting(self, fwd_kind: str, destination: str,
                   open_channel: Callable[[Callable[[], SSHForwarder], str, int],
                                          Coroutine[Any, Any, Any]]) -> Callable[[], _Side]:
        """The protocol factory of a listener: each accepted connection opens a channel to
        the client (``open_channel(session_factory, orig_host, orig_port)``)."""

        def factory() -> _Side:
            fwd_box: list[Forward] = []

            def received(n: int) -> None:  # from the local socket: towards the client
                self._touch()
                if fwd_box:
                    fwd_box[0].received += n

            def sent(n: int) -> None:
                self._touch()
                if fwd_box:
                    fwd_box[0].sent += n

            def done() -> None:
                if fwd_box:
                    self._close(fwd_box[0])

            side = _Accepted(received, on_close=done, hold=True)

            async def start(orig_host: str, orig_port: int) -> None:
                fwd = self._open(fwd_kind, destination, f"{orig_host}:{orig_port}"
                                 if orig_host else "")
                fwd_box.append(fwd)
                self._closers[fwd.id] = side.close
                try:
                    await open_channel(lambda: _Side(sent, peer=side, chunked=True,
                                                     on_close=done), orig_host, orig_port)
                except (asyncssh.Error, OSError) as e:
                    log.info("forwarded connection refused by the client",
                             extra={"destination": destination, "error": str(e)})
                    side.close()

            side.starter = start
            return side

        return factory

    # --- direct-tcpip: -L, -D, -W ----------------------------------------------------------

    def direct_tcp(self, host: str, port: int, orig_host: str, orig_port: int) -> Any:
        destination = _host_port(host, port)

        def judge() -> None:
            refusal = tcp_refusal(self._current(), "local", host, port)
            if refusal is not None:
                self._refuse("local", destination, refusal, debug=False)
                raise asyncssh.ChannelOpenError(OPEN_ADMINISTRATIVELY_PROHIBITED, refusal)

        judge()

        async def connect() -> SSHForwarder:
            await self._settle()
            judge()  # as the policy now says
            try:
                sock = await self._dialer.tcp_connect(host, port)
            except OSError as e:
                raise asyncssh.ChannelOpenError(
                    OPEN_CONNECT_FAILED, f"tssh: cannot connect to {destination} as "
                    f"{self._context().local_user}: {e.strerror or e}") from None
            fwd = self._open("local", destination, _host_port(orig_host, orig_port))
            return await self._relay_from_socket(fwd, sock, unix=False)

        return connect()

    # --- tcpip-forward: -R ------------------------------------------------------------------

    async def tcp_listen(self, host: str, port: int) -> SSHListener | bool:
        try:
            await self._settle()
            settings = self._current()
        except asyncssh.ChannelOpenError:
            return False
        requested = _host_port(host, port)
        refusal = tcp_refusal(settings, "remote", host, port)
        if refusal is not None:
            self._refuse("remote-listener", requested, refusal, debug=True)
            return False
        bind = listen_address(settings, host)
        try:
            sock, bound = await self._dialer.tcp_listen(bind, port)
        except OSError as e:
            text = (f"tssh: cannot listen on {_host_port(bind, port)} as "
                    f"{self._context().local_user}: {e.strerror or e}")
            self._refuse("remote-listener", requested, text, debug=True)
            return False
        where = _host_port(bind, bound)
        conn = self._conn

        def open_channel(factory: Callable[[], SSHForwarder], orig_host: str,
                         orig_port: int) -> Coroutine[Any, Any, Any]:
            return cast(Coroutine[Any, Any, Any],
                        conn.create_connection(factory, host, bound, orig_host, orig_port))

        return await self._serve(sock, "remote-listener", where, "remote", open_channel,
                                 bound, unix=False)

    async def _serve(self, sock: socket.socket, kind: str, where: str, conn_kind: str,
                     open_channel: Callable[[Callable[[], SSHForwarder], str, int],
                                            Coroutine[Any, Any, Any]],
                     port: int, unix: bool, path: str | None = None) -> _Listener:
        loop = asyncio.get_running_loop()
        factory = self._accepting(conn_kind, where, open_channel)
        if unix:
            server = await loop.create_unix_server(factory, sock=sock)
        else:
            server = await loop.create_server(factory, sock=sock)
        fwd = self._open(kind, where)

        def closed() -> None:
            if path is not None:
                self._dialer.unlink(path)
            self._close(fwd)

        listener = _Listener(server, port, closed)
        self._closers[fwd.id] = listener.close
        if self._ended:  # the connection ended while the socket was being made
            listener.close()
        return listener

    # --- Unix sockets --------------------------------------------------------------------

    def direct_unix(self, path: str) -> Any:
        def judge() -> None:
            refusal = stream_local_refusal(self._current(), "local")
            if refusal is not None:
                self._refuse("local-unix", path, refusal, debug=False)
                raise asyncssh.ChannelOpenError(OPEN_ADMINISTRATIVELY_PROHIBITED, refusal)

        judge()

        async def connect() -> SSHForwarder:
            await self._settle()
            judge()
            try:
                sock = await self._dialer.unix_connect(path)
            except OSError as e:
                raise asyncssh.ChannelOpenError(
                    OPEN_CONNECT_FAILED, f"tssh: cannot connect to {path} as "
                    f"{self._context().local_user}: {e.strerror or e}") from None
            fwd = self._open("local-unix", path)
            return await self._relay_from_socket(fwd, sock, unix=True)

        return connect()

    async def unix_listen(self, path: str) -> SSHListener | bool:
        try:
            await self._settle()
            settings = self._current()
        except asyncssh.ChannelOpenError:
            return False
        refusal = stream_local_refusal(settings, "remote")
        if refusal is not None:
            self._refuse("remote-unix-listener", path, refusal, debug=True)
            return False
        try:
            sock = await self._dialer.unix_listen(path)
        except OSError as e:
            text = (f"tssh: cannot listen on {path} as {self._context().local_user}: "
                    f"{e.strerror or e}")
            self._refuse("remote-unix-listener", path, text, debug=True)
            return False
        conn = self._conn

        def open_channel(factory: Callable[[], SSHForwarder], _host: str,
                         _port: int) -> Coroutine[Any, Any, Any]:
            return cast(Coroutine[Any, Any, Any], conn.create_unix_connection(factory, path))

        return await self._serve(sock, "remote-unix-listener", path, "remote-unix",
                                 open_channel, 0, unix=True, path=path)

    # --- agent -------------------------------------------------------------------------------

    async def agent(self) -> _AgentListener | None:
        """The connection's agent socket (made once, as the user), or None: refused."""
        try:
            await self._settle()
            settings = self._current()
        except asyncssh.ChannelOpenError:
            return None
        refusal = agent_refusal(settings)
        if refusal is not None:
            self._refuse("agent", "", refusal, debug=True)
            return None
        try:
            sock, path = await self._dialer.agent_listen()
        except OSError as e:
            self._refuse("agent", "", f"tssh: cannot make the agent socket as "
                         f"{self._context().local_user}: {e.strerror or e}", debug=True)
            return None
        conn = self._conn

        def open_channel(factory: Callable[[], SSHForwarder], _host: str,
                         _port: int) -> Coroutine[Any, Any, Any]:
            return cast(Coroutine[Any, Any, Any], conn.create_agent_connection(factory))

        listener = await self._serve(sock, "agent-listener", path, "agent", open_channel, 0,
                                     unix=True, path=path)
        self.agent_path = path
        return _AgentListener(listener, path)

    def status(self) -> list[dict[str, object]]:
        return [f.to_json() for f in self.live.values()]


class _Accepted(_Side):
    """A connection accepted on a listener: held (reading paused) until its channel to the
    client is open."""

    starter: Callable[[str, int], Coroutine[Any, Any, None]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        orig = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else ("", 0)
        if self.starter is not None:
            task = asyncio.get_running_loop().create_task(self.starter(*orig))
            _tasks.add(task)
            task.add_done_callback(_tasks.discard)


_tasks: set[asyncio.Task[None]] = set()


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
