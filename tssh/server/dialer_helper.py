"""The per-connection forwarding helper: makes sockets as the session's user.

The daemon (root) starts this with the user's uid, gid and groups (``tssh.server.dialer``),
its source given with ``python -I -S -c`` so that the user need not be able to read any of
tssh's files. Standard library only. File descriptor 0 is a ``SOCK_SEQPACKET`` socket to
the daemon; each message is one JSON request ``{"id", "op", ...}``, each answer one JSON
object ``{"id", "ok", ...}`` with, on success, the socket passed along (``SCM_RIGHTS``).
Because the socket is made here, the kernel judges it as the user's: a port below 1024, a
Unix socket in a directory the user may not enter, an address the user's firewall rules
refuse, all fail as they would for the user's own programs.

Unix socket listeners and the agent directory are removed by this process (as the user) on
``unlink`` or when the daemon's end closes, and only if the path is still the socket made
here, so a path the user replaced meanwhile is left alone.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import threading

CONNECT_TIMEOUT = 10.0
_lock = threading.Lock()
_made: dict[str, tuple[int, int, str | None]] = {}  # path -> (st_dev, st_ino, dir to remove)


def _reply(ctl: socket.socket, answer: dict[str, object], sock: socket.socket | None) -> None:
    data = json.dumps(answer).encode()
    with _lock:
        if sock is None:
            ctl.send(data)
        else:
            socket.send_fds(ctl, [data], [sock.fileno()])
    if sock is not None:
        sock.close()


def _tcp_connect(req: dict[str, object]) -> tuple[socket.socket, dict[str, object]]:
    sock = socket.create_connection((str(req["host"]), int(str(req["port"]))),
                                    timeout=CONNECT_TIMEOUT)
    sock.settimeout(None)
    return sock, {}


def _tcp_listen(req: dict[str, object]) -> tuple[socket.socket, dict[str, object]]:
    host, port = str(req["host"]), int(str(req["port"]))
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock, {"port": sock.getsockname()[1]}


def _unix_connect(req: dict[str, object]) -> tuple[socket.socket, dict[str, object]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        sock.connect(str(req["path"]))
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return sock, {}


def _bind_unix(path: str, directory: str | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0o177)  # the socket file 0600: only the user may connect
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        sock.listen(128)
        st = os.lstat(path)
    except BaseException:
        sock.close()
        raise
    with _lock:
        _made[path] = (st.st_dev, st.st_ino, directory)
    return sock


def _unix_listen(req: dict[str, object]) -> tuple[socket.socket, dict[str, object]]:
    return _bind_unix(str(req["path"]), None), {}


def _agent_listen(_req: dict[str, object]) -> tuple[socket.socket, dict[str, object]]:
    directory = tempfile.mkdtemp(prefix="tssh-agent-")  # 0700, the user's
    path = os.path.join(directory, "agent.sock")
    try:
        return _bind_unix(path, directory), {"path": path}
    except BaseException:
        os.rmdir(directory)
        raise


def _remove(path: str) -> None:
    with _lock:
        made = _made.pop(path, None)
    if made is None:
        return
    dev, ino, directory = made
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == (dev, ino):
            os.unlink(path)
        if directory is not None:
            os.rmdir(directory)
    except OSError:
        pass


OPS = {"tcp_connect": _tcp_connect, "tcp_listen": _tcp_listen,
       "unix_connect": _unix_connect, "unix_listen": _unix_listen,
       "agent_listen": _agent_listen}


def _serve(ctl: socket.socket, req: dict[str, object]) -> None:
    rid = req.get("id")
    op = str(req.get("op"))
    try:
        sock, extra = OPS[op](req)
    except KeyError:
        _reply(ctl, {"id": rid, "ok": False, "errno": 22, "error": f"unknown op {op}"}, None)
        return
    except OSError as e:
        _reply(ctl, {"id": rid, "ok": False, "errno": e.errno or 5,
                     "error": e.strerror or str(e)}, None)
        return
    except (ValueError, IndexError) as e:
        _reply(ctl, {"id": rid, "ok": False, "errno": 22, "error": str(e)}, None)
        return
    _reply(ctl, {"id": rid, "ok": True, **extra}, sock)


def main() -> None:
    ctl = socket.socket(fileno=0)
    while True:
        try:
            data = ctl.recv(65536)
        except OSError:
            break
        if not data:
            break
        try:
            req = json.loads(data)
        except ValueError:
            continue
        if req.get("op") == "unlink":  # here, not in a thread the exit below could cut short
            _remove(str(req.get("path")))
            continue
        threading.Thread(target=_serve, args=(ctl, req), daemon=True).start()
    for path in list(_made):
        _remove(path)
    sys.exit(0)


if __name__ == "__main__":
    main()
