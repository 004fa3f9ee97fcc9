"""A worker process of the daemon: serves the SSH connections its supervisor hands it.

Started by the supervisor (``tssh.server.supervisor``) as ``python -m tssh.server.worker
--channel-fd N --handoff-fd M``; never by hand. It runs an ordinary supervised ``Daemon``:
its own policy and netmap followers (so a change re-judges its live connections within the
poll second, as in a single-process daemon), its own recording worker, no listeners. Its
audit events go to the supervisor, which writes the one audit log. The messages are in
``tssh.server.handoff``; docs/daemon.md ("Worker processes") says why the hand-off.

It ends its connections and exits when the supervisor's channel closes (the supervisor
stopped or died) or on SIGTERM; SIGINT is ignored, as Ctrl-C on a foreground daemon reaches
its whole process group and the supervisor decides.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
from typing import Any

from tssh.audit.log import audit_log
from tssh.audit.sink import encode_record
from tssh.errors import TsshError
from tssh.identity.factory import open_resolver
from tssh.logformat import configure_logging
from tssh.server.daemon import Daemon
from tssh.server.handoff import Channel, ChannelClosed, decode_config, receive_handed

log = logging.getLogger("tssh.daemon")


class SupervisorLink:
    """The worker's side of the channel: reports, audit events, answers."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def released(self, conn_id: int) -> None:
        self.channel.send({"op": "released", "id": conn_id})

    def closed(self, conn_id: int) -> None:
        self.channel.send({"op": "closed", "id": conn_id})


class AuditRelay(logging.Handler):
    """On ``tssh.audit`` in a worker: each event encoded here (with this process's
    connection fields) and sent to the supervisor's audit log."""

    def __init__(self, channel: Channel, journal: bool) -> None:
        super().__init__(logging.DEBUG)
        self._channel = channel
        self._journal = journal

    def install(self) -> None:
        audit_log.setLevel(logging.INFO)  # whatever the log level: every event
        audit_log.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line, journal = encode_record(record, journal=self._journal)
            self._channel.send({"op": "audit", "line": line.decode(), "journal": journal})
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        audit_log.removeHandler(self)
        super().close()


async def _call(daemon: Daemon, method: str, args: dict[str, Any]) -> object:
    """One control call from the supervisor (tssh status, set, check)."""
    if method == "status":
        return await daemon.status()
    if method == "set_ssh":
        await daemon.set_ssh(bool(args["enabled"]))
        return {}
    if method == "check_list":
        return daemon.check_list()
    if method == "check_approve":
        return daemon.check_approve(str(args["id"]))
    if method == "check_deny":
        return daemon.check_deny(str(args["id"]))
    if method == "check_revoke":
        login = args.get("login")
        return await daemon.check_revoke(login if isinstance(login, str) else None)
    if method == "check_reload":
        daemon.reload_approvals()
        return {}
    raise TsshError(f"unknown worker call {method!r}")


async def _answer_calls(channel: Channel, daemon: Daemon) -> None:
    """Until the supervisor closes the channel."""
    while True:
        try:
            message = await channel.receive()
        except ChannelClosed:
            return
        if message.get("op") != "call":
            continue
        call = message.get("call")
        try:
            result = await _call(daemon, str(message.get("method")), message.get("args") or {})
            channel.send({"op": "answer", "call": call, "ok": True, "result": result})
        except TsshError as e:
            channel.send({"op": "answer", "call": call, "ok": False, "error": str(e)})
        except Exception as e:
            log.exception("worker call %r failed", message.get("method"))
            channel.send({"op": "answer", "call": call, "ok": False,
                          "error": f"internal error in a worker process: {e}"})


async def serve(channel_sock: socket.socket, handoff: socket.socket) -> int:
    loop = asyncio.get_running_loop()
    channel = await Channel.open(channel_sock)
    try:
        start = await channel.receive()
        config = decode_config(str(start["config"]))
    except (ChannelClosed, ValueError, KeyError) as e:
        log.error("worker process: no start message from the supervisor",
                  extra={"error": str(e)})
        return 1
    configure_logging(config.log_format, config.log_level)
    relay = AuditRelay(channel, journal=bool(start.get("journal")))
    relay.install()
    link = SupervisorLink(channel)
    daemon = Daemon(config, open_resolver(config), supervised=link)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    adopting: set[asyncio.Task[None]] = set()

    def on_handoff() -> None:
        while True:
            try:
                handed = receive_handed(handoff)
            except (BlockingIOError, InterruptedError):
                return
            except (OSError, ValueError) as e:
                log.error("unreadable hand-off from the supervisor", extra={"error": str(e)})
                return
            if handed is None:  # the supervisor closed it
                loop.remove_reader(handoff.fileno())
                stop.set()
                return
            task = loop.create_task(daemon.adopt(handed))
            adopting.add(task)
            task.add_done_callback(adopting.discard)

    try:
        try:
            await daemon.start()
        except (TsshError, OSError) as e:
            channel.send({"op": "failed", "error": str(e)})
            with contextlib.suppress(ChannelClosed):
                await channel.drain()
            return 1
        loop.add_reader(handoff.fileno(), on_handoff)
        channel.send({"op": "ready"})
        calls = loop.create_task(_answer_calls(channel, daemon))
        stopping = loop.create_task(stop.wait())
        await asyncio.wait({calls, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in (calls, stopping):
            task.cancel()
    finally:
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(handoff.fileno())
        await daemon.close()
        relay.close()
        with contextlib.suppress(ChannelClosed):
            await channel.drain()
        channel.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tssh.server.worker")
    parser.add_argument("--channel-fd", type=int, required=True)
    parser.add_argument("--handoff-fd", type=int, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = socket.socket(fileno=args.channel_fd)
    handoff = socket.socket(fileno=args.handoff_fd)
    handoff.setblocking(False)
    return asyncio.run(serve(channel, handoff))


if __name__ == "__main__":
    raise SystemExit(main())
