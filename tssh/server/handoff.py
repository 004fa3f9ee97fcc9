"""What passes between the daemon's supervisor and its worker processes (docs/daemon.md,
"Worker processes").

Two socketpairs per worker, both made by the supervisor before it starts the worker:

- the **hand-off socket** (``SOCK_SEQPACKET``, supervisor to worker): one datagram per
  accepted connection, ``{"id": N, "early": BASE64}`` (the bytes the supervisor read while
  it screened the connection, usually the client's version line) with the connection's
  socket attached (``SCM_RIGHTS``). Sent with the recording worker's ``ControlChannel``,
  which queues while the worker's receive buffer is full.
- the **channel** (``SOCK_STREAM``, both ways): one JSON object per line.
  Supervisor to worker: first ``{"op": "start", "config": BASE64 (pickled Config),
  "journal": bool, "index": N}``, then ``{"op": "call", "call": K, "method": M, "args":
  {...}}`` (methods in ``tssh.server.worker``). Worker to supervisor: ``{"op": "ready"}`` or
  ``{"op": "failed", "error": TEXT}`` once; then ``{"op": "answer", "call": K, "ok": bool,
  "result" | "error"}``, ``{"op": "released", "id": N}`` (the connection logged in or closed:
  its start-up slot is free), ``{"op": "closed", "id": N}``, ``{"op": "audit", "line": TEXT,
  "journal": {...} | null}`` (one audit event, encoded in the worker).

Either side reading EOF on the channel knows the other has gone.
"""

from __future__ import annotations

import asyncio
import base64
import json
import pickle
import socket
from dataclasses import dataclass
from typing import Any

from tssh.config import Config

MAX_LINE = 64 * 1024 * 1024  # a status answer lists every session of the worker
MAX_HANDOFF = 256 * 1024  # a hand-off datagram: the id and the early bytes (at most 64 KiB)


class ChannelClosed(ConnectionError):
    """The process at the other end of the channel has gone."""


@dataclass(frozen=True)
class HandedConnection:
    """One accepted connection, as the worker receives it."""

    id: int
    early: bytes
    sock: socket.socket

    @staticmethod
    def encode(conn_id: int, early: bytes) -> bytes:
        return json.dumps({"id": conn_id, "early": base64.b64encode(early).decode()}).encode()


def receive_handed(sock: socket.socket) -> HandedConnection | None:
    """Read one hand-off datagram (non-blocking socket); None when the supervisor closed the
    socket. BlockingIOError when nothing is waiting."""
    message, fds, _flags, _addr = socket.recv_fds(sock, MAX_HANDOFF, 1)
    if not message and not fds:
        return None
    try:
        header = json.loads(message)
        conn_id, early = int(header["id"]), base64.b64decode(header["early"])
    except (ValueError, KeyError, TypeError):
        for fd in fds:
            socket.close(fd)
        raise
    if len(fds) != 1:
        for fd in fds:
            socket.close(fd)
        raise ValueError("a hand-off datagram without exactly one socket")
    conn = socket.socket(fileno=fds[0])
    conn.setblocking(False)
    return HandedConnection(conn_id, early, conn)


def encode_config(config: Config) -> str:
    """The worker's configuration, exactly the supervisor's (a trusted process of ours)."""
    return base64.b64encode(pickle.dumps(config)).decode()


def decode_config(text: str) -> Config:
    # From our own supervisor, over a socketpair it made before starting this process.
    config = pickle.loads(base64.b64decode(text))  # noqa: S301
    if not isinstance(config, Config):
        raise ValueError("the start message holds no Config")
    return config


class Channel:
    """JSON lines over a stream socket; ``send`` never waits (the writer buffers)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, sock: socket.socket) -> Channel:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_LINE)
        return cls(reader, writer)

    def send(self, message: dict[str, Any]) -> None:
        if self._writer.is_closing():
            return
        self._writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    async def drain(self) -> None:
        try:
            await self._writer.drain()
        except ConnectionError as e:
            raise ChannelClosed(str(e)) from None

    async def receive(self) -> dict[str, Any]:
        """The next message; ChannelClosed at EOF or on a broken socket."""
        try:
            line = await self._reader.readline()
        except (ConnectionError, ValueError, asyncio.LimitOverrunError) as e:
            raise ChannelClosed(str(e)) from None
        if not line:
            raise ChannelClosed("the other process closed the channel")
        message = json.loads(line)
        if not isinstance(message, dict):
            raise ValueError("a channel message is not a JSON object")
        return message

    def close(self) -> None:
        self._writer.close()
