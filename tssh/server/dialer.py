"""Sockets made as the session's user, by a helper process (tssh/server/dialer_helper.py).

A root daemon that dialled ``-L`` destinations or bound ``-R`` listeners itself would give
every user root's network rights: ports below 1024, Unix sockets only root may open. So one
helper per connection runs with the user's uid, gid and groups (started by the same code
that starts sessions, tssh/server/spawn.py), makes each socket and hands it back over a
Unix socketpair (``SCM_RIGHTS``); the daemon then only relays bytes on it. The helper is
started at the first forward and ends when the connection does.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from tssh.server.account import Account
from tssh.server.spawn import SpawnRequest, spawn_async

log = logging.getLogger("tssh.forward")

_HELPER_SOURCE: str | None = None
REQUEST_TIMEOUT = 15.0  # the helper's connect timeout is 10 s


def _helper_source() -> str:
    global _HELPER_SOURCE
    if _HELPER_SOURCE is None:
        _HELPER_SOURCE = (Path(__file__).parent / "dialer_helper.py").read_text()
    return _HELPER_SOURCE


def _interpreter() -> str:
    """A Python 3 every user may run: the daemon's own (its base interpreter, not a
    virtualenv's link) when everyone may reach it, else the system's. The helper needs only
    the standard library, so any Python 3.11 or later will do."""
    for candidate in (getattr(sys, "_base_executable", None), sys.executable,
                      "/usr/bin/python3", "/usr/local/bin/python3"):
        if candidate and _anyone_may_run(Path(candidate)):
            return candidate
    return sys.executable


def _anyone_may_run(path: Path) -> bool:
    """Every directory on the way searchable by others and the file executable by them
    (the daemon may be root, for which ``os.access`` says yes to everything)."""
    try:
        real = path.resolve(strict=True)
        if not real.stat().st_mode & 0o001:
            return False
        return all(parent.stat().st_mode & 0o001 for parent in real.parents)
    except OSError:
        return False


class DialerError(OSError):
    """The helper could not make the socket (errno and text as the user's own call would
    have failed), or the helper itself is gone."""


class UserDialer:
    """Makes sockets as ``account`` (None: as the daemon, which then is that user)."""

    def __init__(self, account: Account | None) -> None:
        self._account = account
        self._ctl: socket.socket | None = None
        self._pid: int | None = None
        self._starting: asyncio.Lock = asyncio.Lock()
        self._next = 0
        self._pending: dict[int, asyncio.Future[tuple[dict[str, Any], socket.socket | None]]] = {}
        self._closed = False

    async def _start(self) -> socket.socket:
        async with self._starting:
            if self._closed:
                raise DialerError(errno.ESHUTDOWN, "the connection is closing")
            if self._ctl is not None:
                return self._ctl
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            account = self._account
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            try:
                python = _interpreter()
                self._pid = await spawn_async(SpawnRequest(
                    executable=python, argv=[python, "-I", "-S", "-c", _helper_source()],
                    env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                    cwd=account.home if account else "/", account=account,
                    stdin=theirs.fileno(), stdout=null, stderr=2,
                ))
            except BaseException:
                ours.close()
                raise
            finally:
                theirs.close()
                os.close(null)
            ours.setblocking(False)
            asyncio.get_running_loop().add_reader(ours.fileno(), self._on_readable)
            self._ctl = ours
            return ours

    def _on_readable(self) -> None:
        ctl = self._ctl
        if ctl is None:
            return
        try:
            data, fds, _flags, _addr = socket.recv_fds(ctl, 65536, 1)
        except BlockingIOError:
            return
        except OSError:
            data, fds = b"", []
        if not data:
            self._lost()
            return
        sock = socket.socket(fileno=fds[0]) if fds else None
        try:
            answer = json.loads(data)
            waiter = self._pending.pop(int(answer["id"]))
        except (ValueError, KeyError, TypeError):
            if sock is not None:
                sock.close()
            return
        if waiter.done():
            if sock is not None:
                sock.close()
            return
        waiter.set_result((answer, sock))

    def _lost(self) -> None:
        ctl, self._ctl = self._ctl, None
        if ctl is not None:
            asyncio.get_running_loop().remove_reader(ctl.fileno())
            ctl.close()
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(DialerError(errno.EPIPE, "the forwarding helper ended"))
        self._pending.clear()

    async def _request(self, op: str, **args: object) -> tuple[dict[str, Any], socket.socket]:
        ctl = await self._start()
        self._next += 1
        rid = self._next
        waiter = asyncio.get_running_loop().create_future()
        self._pending[rid] = waiter
        try:
            ctl.send(json.dumps({"id": rid, "op": op, **args}).encode())
            async with asyncio.timeout(REQUEST_TIMEOUT):
                answer, sock = await waiter
        except TimeoutError:
            raise DialerError(errno.ETIMEDOUT, "timed out") from None
        except BlockingIOError:
            raise DialerError(errno.EAGAIN, "the forwarding helper is busy") from None
        finally:
            self._pending.pop(rid, None)
        if not answer.get("ok") or sock is None:
            if sock is not None:
                sock.close()
            code = int(answer.get("errno") or errno.EIO)
            raise DialerError(code, str(answer.get("error") or os.strerror(code)))
        sock.setblocking(False)
        return answer, sock

    async def tcp_connect(self, host: str, port: int) -> socket.socket:
        return (await self._request("tcp_connect", host=host, port=port))[1]

    async def tcp_listen(self, host: str, port: int) -> tuple[socket.socket, int]:
        answer, sock = await self._request("tcp_listen", host=host, port=port)
        return sock, int(answer["port"])

    async def unix_connect(self, path: str) -> socket.socket:
        return (await self._request("unix_connect", path=path))[1]

    async def unix_listen(self, path: str) -> socket.socket:
        return (await self._request("unix_listen", path=path))[1]

    async def agent_listen(self) -> tuple[socket.socket, str]:
        answer, sock = await self._request("agent_listen")
        return sock, str(answer["path"])

    def unlink(self, path: str) -> None:
        """Ask the helper to remove a Unix socket it made (no answer awaited)."""
        ctl = self._ctl
        if ctl is not None:
            with contextlib.suppress(OSError):
                ctl.send(json.dumps({"id": 0, "op": "unlink", "path": path}).encode())

    async def close(self) -> None:
        """End the helper: it removes its Unix sockets and exits when its end closes."""
        self._closed = True
        self._lost()
        pid, self._pid = self._pid, None
        if pid is None:
            return
        for _ in range(40):  # bounded: 2 s, then SIGKILL
            done, _status = await asyncio.to_thread(_reap, pid)
            if done:
                return
            await asyncio.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        await asyncio.to_thread(os.waitpid, pid, 0)


def _reap(pid: int) -> tuple[bool, int]:
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True, 0
    return done != 0, status
