"""The daemon's local control socket: ``tssh set --ssh``, ``tssh status`` (docs/daemon.md).

Socket: ``<state_dir>/control.sock``, a Unix stream socket, mode 0600.

Access: the server reads each connecting process's credentials from the kernel (SO_PEERCRED)
and serves only root and the daemon's own uid; anyone else gets an error answer and the
connection is closed. The file mode is a second fence, not the check. The state directory
must belong to the daemon's user and be writable by nobody else: whoever can write it could
replace the socket (with their own, or with a symlink the daemon's chmod would follow).

Protocol: the client sends one request, a JSON object on one line (UTF-8, at most 64 KiB,
ending in ``\\n``); the server sends one response line and closes the connection.

    -> {"op": "status"}
    <- {"ok": true, "result": {...the daemon's status object...}}
    -> {"op": "set", "ssh": false}
    <- {"ok": true, "result": {"ssh": false}}
    -> {"op": "check.list"}
    <- {"ok": true, "result": {"pending": [{"id", "node", "login", "localUser", "since",
                                            "url"}]}}
    -> {"op": "check.approve", "id": "k7qdm2xa9fpt"}     (also "check.deny")
    <- {"ok": true, "result": {"id", "login", "node", "expires"}}
    -> {"op": "check.revoke", "login": "sys"}            (login absent or null: all)
    <- {"ok": true, "result": {"revoked": [ids], "connectionsEnded": 1}}
    <- {"ok": false, "error": "permission denied: ..."}        (any failure)

Unknown ops and malformed requests get ``ok: false`` with a message. The status object is
the daemon's to define; ``tssh status`` renders whatever keys it has (see
``ControlHandler.status`` for the keys it knows how to present).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeAlias, TypeVar

from tssh.errors import ControlError, TsshError

SOCKET_NAME = "control.sock"
MAX_LINE = 64 * 1024
REQUEST_TIMEOUT = 10.0  # seconds a client may take to send its request

log = logging.getLogger(__name__)


def control_socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


T = TypeVar("T")
MaybeAwaitable: TypeAlias = T | Awaitable[T]


async def _settled(value: MaybeAwaitable[T]) -> T:
    if inspect.isawaitable(value):
        return await value
    return value


class ControlHandler(Protocol):
    """What the daemon implements behind the socket."""

    async def set_ssh(self, enabled: bool) -> None:
        """Turn the SSH server on or off at once and remember it across restarts."""
        ...

    async def status(self) -> dict[str, object]:
        """A JSON-able status object. ``tssh status`` presents these keys specially:

        ``ssh`` (bool), ``listening`` (list of "addr:port"), ``identity`` (backend name),
        ``policy`` ({"source": str, "error": str | None}), ``recorders`` (list of
        {"name", "address", "healthy", "error"}), ``sessions`` (list of {"id", "user",
        "localUser", "from", "started"}), ``checks`` ({"pending": [...], "approvals":
        [{"id", "node", "login", "localUser", "period", "approved", "expires"}]}); any other
        key is shown as it is.
        """
        ...

    def check_list(self) -> MaybeAwaitable[list[dict[str, object]]]:
        """Logins held for a check: {"id", "node", "login", "localUser", "since", "url"}.
        (These three may answer at once or, across worker processes, asynchronously.)"""
        ...

    def check_approve(self, hold_id: str) -> MaybeAwaitable[dict[str, object]]:
        """Approve a held login; raises a TsshError for an id that is not held."""
        ...

    def check_deny(self, hold_id: str) -> MaybeAwaitable[dict[str, object]]: ...

    async def check_revoke(self, login: str | None) -> dict[str, object]:
        """Drop approvals (all, or ``login``'s); end the live connections only they admit."""
        ...


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket, from the kernel."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


class ControlServer:
    """Serves the control protocol on ``path`` for ``handler``."""

    def __init__(
        self, path: Path, handler: ControlHandler, *, daemon_uid: int | None = None
    ) -> None:
        self.path = path
        self._handler = handler
        self._allowed = frozenset({0, os.geteuid() if daemon_uid is None else daemon_uid})
        self._server: asyncio.Server | None = None
        self._inode: int | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind the socket (replacing a stale one) and start serving.

        Raises ControlError if another daemon answers on the socket already, if the path
        is something other than a socket, if the state directory is not private, or if the
        socket cannot be made there.
        """
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            check_private_dir(self.path.parent)
            self._remove_stale()
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_LINE + 1
            )
            os.chmod(self.path, 0o600)
            self._inode = os.stat(self.path).st_ino
        except OSError as e:  # no permission, not a directory, path too long for a socket...
            if self._server is not None:
                await self.close()
            raise ControlError(
                f"cannot open the control socket {self.path}: {e.strerror or e}"
            ) from e

    def _remove_stale(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlError(f"{self.path} exists and is not a socket; move it away")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(str(self.path))
        except (ConnectionRefusedError, FileNotFoundError):
            self.path.unlink(missing_ok=True)  # left by a daemon that died
            return
        except OSError as e:
            raise ControlError(f"cannot check control socket {self.path}: {e}") from e
        finally:
            probe.close()
        raise ControlError(f"another tssh daemon is running: {self.path} answers")

    async def close(self) -> None:
        """Stop serving, end open control connections, remove the socket file."""
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            if self._connections:
                await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(OSError):
            if self._inode is not None and os.stat(self.path).st_ino == self._inode:
                self.path.unlink()
        self._inode = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            response = await self._answer(reader, writer)
            try:
                line = json.dumps(response)
            except (TypeError, ValueError):  # the handler returned something JSON cannot hold
                log.exception("control answer is not JSON")
                line = json.dumps(_error("internal error in the daemon; see its log"))
            writer.write(line.encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> dict[str, Any]:
        sock = writer.get_extra_info("socket")
        uid = peer_uid(sock) if sock is not None else -1
        if uid not in self._allowed:
            log.warning("control socket: refused uid %d", uid)
            return _error(
                f"permission denied: uid {uid} may not control this tssh daemon"
                " (run as root or as the daemon's user)"
            )
        try:
            line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
        except TimeoutError:
            return _error(f"no request within {REQUEST_TIMEOUT:g} s")
        except (asyncio.LimitOverrunError, ValueError):
            return _error(f"request longer than {MAX_LINE} bytes")
        try:
            request = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than json allows
            return _error("request is not a JSON line")
        if not isinstance(request, dict):
            return _error("request must be a JSON object")
        try:
            return await self._dispatch(request)
        except TsshError as e:
            return _error(str(e))
        except Exception:
            log.exception("control request %r failed", request.get("op"))
            return _error("internal error in the daemon; see its log")

    async def _dispatch(self, request: Mapping[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "status":
            return {"ok": True, "result": await self._handler.status()}
        if op == "set":
            if "ssh" not in request:
                return _error("set: nothing to set (known setting: ssh)")
            enabled = request["ssh"]
            if not isinstance(enabled, bool):
                return _error("set: ssh must be true or false")
            await self._handler.set_ssh(enabled)
            return {"ok": True, "result": {"ssh": enabled}}
        if op == "check.list":
            return {"ok": True,
                    "result": {"pending": await _settled(self._handler.check_list())}}
        if op in ("check.approve", "check.deny"):
            hold_id = request.get("id")
            if not isinstance(hold_id, str) or not hold_id.strip():
                return _error(f"{op}: id must be the held login's id (tssh check list)")
            if op == "check.approve":
                return {"ok": True,
                        "result": await _settled(self._handler.check_approve(hold_id))}
            return {"ok": True, "result": await _settled(self._handler.check_deny(hold_id))}
        if op == "check.revoke":
            login = request.get("login")
            if login is not None and (not isinstance(login, str) or not login):
                return _error("check.revoke: login must be a login name, or absent for all")
            return {"ok": True, "result": await self._handler.check_revoke(login)}
        return _error(f"unknown op {op!r}")


def check_private_dir(directory: Path) -> None:
    """Refuse a directory that another user owns or may write (see the module docstring)."""
    st = os.stat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise ControlError(f"{directory} is not a directory")
    if st.st_uid != os.geteuid():
        raise ControlError(
            f"{directory} is owned by uid {st.st_uid}, not by this daemon's user"
            f" (uid {os.geteuid()}); use a state directory of its own"
        )
    if st.st_mode & 0o022:
        raise ControlError(
            f"{directory} is writable by other users (mode {stat.S_IMODE(st.st_mode):o});"
            f" chmod 700 {directory}, or use another state directory"
        )


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


# --- client -------------------------------------------------------------------------------

def control_request(
    path: Path, request: Mapping[str, object], *, timeout: float = 30.0
) -> dict[str, Any]:
    """Send one request to the daemon at ``path`` and return its ``result``.

    Blocking (the CLI's use). Raises ControlError with one actionable line: daemon not
    running, permission denied, no answer, or the daemon's own error message.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise ControlError(
                f"tssh daemon is not running (no control socket {path});"
                " use --state-dir or TSSH_STATE_DIR if it runs with another state directory"
            ) from None
        except ConnectionRefusedError:
            raise ControlError(
                f"tssh daemon is not running ({path} refuses connections)"
            ) from None
        except PermissionError:
            raise ControlError(
                f"permission denied on {path}: run as root or as the daemon's user"
            ) from None
        except OSError as e:
            raise ControlError(f"cannot connect to {path}: {e.strerror or e}") from None
        send_failed: OSError | None = None
        try:
            try:
                sock.sendall(json.dumps(dict(request)).encode() + b"\n")
            except (BrokenPipeError, ConnectionResetError) as e:
                # The daemon refuses a uid as soon as it connects, without reading the
                # request, and closes: a client still sending gets EPIPE, but the refusal
                # is waiting in its receive buffer.
                send_failed = e
            data = _read_line(sock)
        except TimeoutError:
            raise ControlError(f"tssh daemon did not answer within {timeout:g} s") from None
        except OSError as e:
            raise ControlError(f"control connection to {path} failed: {e}") from None
        except ControlError:
            if send_failed is None:
                raise
            raise ControlError(f"control connection to {path} failed: {send_failed}") from None
    finally:
        sock.close()
    try:
        response = json.loads(data)
    except ValueError:
        raise ControlError("tssh daemon sent an unreadable answer") from None
    if not isinstance(response, dict):
        raise ControlError("tssh daemon sent an unreadable answer")
    if not response.get("ok"):
        raise ControlError(str(response.get("error") or "tssh daemon refused the request"))
    result = response.get("result")
    return result if isinstance(result, dict) else {}


def _read_line(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if b"\n" in chunk or size > 64 * MAX_LINE:
            break
    data = b"".join(chunks)
    if not data:
        raise ControlError("tssh daemon closed the control connection without answering")
    return data.split(b"\n", 1)[0]


def set_ssh(path: Path, enabled: bool) -> None:
    control_request(path, {"op": "set", "ssh": enabled})


def get_status(path: Path) -> dict[str, Any]:
    return control_request(path, {"op": "status"})


def check_request(path: Path, op: str, **fields: object) -> dict[str, Any]:
    """``tssh check``: one ``check.*`` request."""
    return control_request(path, {"op": f"check.{op}", **fields})
