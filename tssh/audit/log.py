"""How the daemon emits audit events: the ``tssh.audit`` logger, and the connection in scope.

Every audit event is a log record on ``tssh.audit`` whose ``extra=`` holds ``event`` and the
event's fields: it reaches the daemon's log like any other line, and the audit sink
(``tssh.audit.sink``) writes it to ``audit.jsonl`` and the journal (docs/audit.md).

A connection's login runs in one asyncio task (and the worker threads it starts, which copy
the task's context): ``connection_scope`` sets the connection's common fields there, so an
event emitted deep inside, by code that knows nothing of connections (an account check),
still carries the connection's id.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextvars import ContextVar

from tssh.identity.base import Peer

audit_log = logging.getLogger("tssh.audit")

_connection: ContextVar[Mapping[str, object] | None] = ContextVar("tssh_audit_connection",
                                                                  default=None)


def connection_scope(fields: Mapping[str, object]) -> None:
    """Set the current task's connection fields (``conn``, ``peer_ip``, ...: the log's
    names); tasks and threads started from here on inherit them."""
    _connection.set(dict(fields))


def update_connection_scope(**fields: object) -> None:
    """Add fields to the current task's connection (the peer once known, the local user)."""
    _connection.set({**(_connection.get() or {}), **fields})


def peer_fields(peer: Peer | None) -> dict[str, object]:
    """The common fields that say who the peer is: its node, and the tailnet user who owns
    it (its tags for a tagged node)."""
    if peer is None:
        return {"peer": None, "node_id": None, "user": None}
    return {"peer": peer.name, "node_id": peer.id,
            "user": peer.user or ",".join(peer.tags) or None}


def connection_defaults() -> Mapping[str, object] | None:
    """The connection fields in scope where an event is emitted, if any."""
    return _connection.get()


def emit(event: str, message: str, *common: Mapping[str, object], level: int = logging.INFO,
         **fields: object) -> None:
    """One audit event: ``message`` for the log, ``common`` (say, a connection's
    ``audit_fields()``) and ``fields`` for both, named as the log names them (``conn``,
    ``peer_ip``, ``local_user``; the audit file renames them)."""
    extra: dict[str, object] = {}
    for mapping in common:
        extra.update(mapping)
    extra.update(fields)
    extra["event"] = event
    audit_log.log(level, message, extra=extra)
