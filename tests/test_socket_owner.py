"""Finding the owner of a loopback connection's client end in the kernel's socket table."""

from __future__ import annotations

import os
import socket

from tssh.socket_owner import find_owner, loopback_peer_uid

TABLE = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0200007F:08AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0200007F:08AE 0100007F:B3F2 01 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0100007F:B3F2 0200007F:08AE 01 00000000:00000000 00:00000000 00000000  1001        0 3 1
"""


def test_client_row_not_the_servers_accepted_socket() -> None:
    assert find_owner(TABLE, ("127.0.0.1", 0xB3F2), ("127.0.0.2", 2222)) == 1001
    assert find_owner(TABLE, ("127.0.0.1", 1), ("127.0.0.2", 2222)) is None
    assert find_owner(TABLE, ("::1", 0xB3F2), ("::1", 2222)) is None


def test_real_loopback_connection_is_ours() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with socket.create_connection(listener.getsockname(), 5) as client:
            accepted, _ = listener.accept()
            with accepted:
                assert loopback_peer_uid(client.getsockname(),
                                         listener.getsockname()) == os.geteuid()
