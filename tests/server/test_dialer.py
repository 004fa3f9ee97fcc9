"""The forwarding helper, run as this process's own user: each socket kind, errors, removal."""

from __future__ import annotations

import asyncio
import errno
import socket
from pathlib import Path

import pytest

from tssh.server.dialer import DialerError, UserDialer


async def test_sockets_errors_and_removal(tmp_path: Path) -> None:
    dialer = UserDialer(None)
    try:
        listener, port = await dialer.tcp_listen("127.0.0.1", 0)
        assert port > 0 and listener.getsockname() == ("127.0.0.1", port)
        loop = asyncio.get_running_loop()
        sock = await dialer.tcp_connect("127.0.0.1", port)
        accepted, _ = await loop.sock_accept(listener)
        await loop.sock_sendall(sock, b"hello")
        assert await loop.sock_recv(accepted, 5) == b"hello"
        for s in (sock, accepted, listener):
            s.close()

        with pytest.raises(DialerError) as refused:
            await dialer.tcp_connect("127.0.0.1", port)  # nothing listens any more
        assert refused.value.errno == errno.ECONNREFUSED

        path = tmp_path / "l.sock"
        unix = await dialer.unix_listen(str(path))
        assert path.stat().st_mode & 0o777 == 0o600
        client = await dialer.unix_connect(str(path))
        client.close()
        unix.close()
        dialer.unlink(str(path))
        for _ in range(100):
            if not path.exists():
                break
            await asyncio.sleep(0.02)
        assert not path.exists()

        agent, agent_path = await dialer.agent_listen()
        agent_dir = Path(agent_path).parent
        assert agent_dir.stat().st_mode & 0o777 == 0o700
        agent.close()
        with pytest.raises(DialerError):
            await dialer.unix_connect(str(tmp_path / "none.sock"))
    finally:
        await dialer.close()
    for _ in range(100):  # the helper removes what it made when it ends
        if not agent_dir.exists():
            break
        await asyncio.sleep(0.02)
    assert not agent_dir.exists()
    with pytest.raises(DialerError):
        await dialer.tcp_connect("127.0.0.1", 1)


def test_helper_needs_only_the_standard_library() -> None:
    source = (Path(__file__).parents[2] / "tssh" / "server" / "dialer_helper.py").read_text()
    imports = {line.split()[1].split(".")[0] for line in source.splitlines()
               if line.startswith(("import ", "from "))}
    assert imports <= {"__future__", "json", "os", "socket", "sys", "tempfile", "threading"}
    assert socket.SOCK_SEQPACKET
