"""The SFTP transfer audit parser: bytes in, events out, whatever the bytes."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.audit import sftp_wire as w
from tssh.audit import sftp as s
from tssh.audit.sftp import SftpAudit
from tssh.audit.transfer import TransferEvent

CREATE_WRITE = 0x02 | 0x08 | 0x10  # write, create, truncate: what `put` sends
H1, H2 = b"\x00\x00\x00\x01", b"\x00\x00\x00\x02"


@dataclass(frozen=True)
class Exchange:
    """One request and its replies, as the client and sftp-server send them."""

    client: bytes
    server: bytes


def upload(rid: int, path: str, chunks: list[bytes], h: bytes = H1) -> list[Exchange]:
    out = [Exchange(w.open_(rid, path, CREATE_WRITE, 0o644), w.handle(rid, h))]
    offset = 0
    for i, chunk in enumerate(chunks):
        out.append(Exchange(w.write(rid + 1 + i, h, offset, chunk), w.status(rid + 1 + i)))
        offset += len(chunk)
    out.append(Exchange(w.close(rid + 1 + len(chunks), h), w.status(rid + 1 + len(chunks))))
    return out


def download(rid: int, path: str, content: bytes, h: bytes = H2) -> list[Exchange]:
    return [Exchange(w.open_(rid, path, 0x01), w.handle(rid, h)),
            Exchange(w.read(rid + 1, h, 0, 32768), w.data(rid + 1, content)),
            Exchange(w.read(rid + 2, h, len(content), 32768), w.status(rid + 2, 1)),
            Exchange(w.close(rid + 3, h), w.status(rid + 3))]


def run(exchanges: list[Exchange]) -> list[TransferEvent]:
    audit = SftpAudit()
    events = []
    for x in exchanges:
        events += audit.client(x.client)
        events += audit.server(x.server)
    return events + audit.close()


def session() -> list[Exchange]:
    return [
        Exchange(w.init(), w.version()),
        *upload(10, "/home/u/a.bin", [b"x" * 32768, b"y" * 1000]),
        *download(20, "/home/u/a.bin", b"z" * 5000),
        Exchange(w.path_op(s.RENAME, 30, "a.bin", "b.bin"), w.status(30)),
        Exchange(w.extended(31, "posix-rename@openssh.com", "b.bin", "c.bin"), w.status(31)),
        Exchange(w.extended(32, "hardlink@openssh.com", "c.bin", "d.bin"), w.status(32)),
        Exchange(w.path_op(s.REMOVE, 33, "d.bin"), w.status(33)),
        Exchange(w.path_op(s.MKDIR, 34, "dir", mode=0o755), w.status(34)),
        Exchange(w.path_op(s.RMDIR, 35, "dir"), w.status(35, 2)),
        Exchange(w.path_op(s.SETSTAT, 36, "c.bin", mode=0o600), w.status(36)),
        Exchange(w.path_op(s.SYMLINK, 37, "c.bin", "link"), w.status(37)),
        Exchange(w.extended(38, "statvfs@openssh.com", "/"), w.packet(s.EXTENDED_REPLY,
                                                                       w.u32(38) + b"\0" * 88)),
        Exchange(w.open_(39, "/etc/shadow", 0x01), w.status(39, 3)),
        Exchange(w.path_op(s.OPENDIR, 40, "."), w.handle(40, b"D")),
        Exchange(w.close(41, b"D"), w.status(41)),
    ]


EXPECTED = [
    TransferEvent("sftp.open", {"path": "/home/u/a.bin", "flags": "write,create,truncate",
                                "mode": "0644", "status": "ok"}),
    TransferEvent("sftp.close", {"path": "/home/u/a.bin", "flags": "write,create,truncate",
                                 "mode": "0644", "bytes_read": 0, "bytes_written": 33768,
                                 "status": "ok"}),
    TransferEvent("sftp.open", {"path": "/home/u/a.bin", "flags": "read", "mode": None,
                                "status": "ok"}),
    TransferEvent("sftp.close", {"path": "/home/u/a.bin", "flags": "read", "mode": None,
                                 "bytes_read": 5000, "bytes_written": 0, "status": "ok"}),
    TransferEvent("sftp.rename", {"path": "a.bin", "new_path": "b.bin", "status": "ok"}),
    TransferEvent("sftp.rename", {"path": "b.bin", "new_path": "c.bin",
                                  "extension": "posix-rename@openssh.com", "status": "ok"}),
    TransferEvent("sftp.hardlink", {"path": "c.bin", "new_path": "d.bin",
                                    "extension": "hardlink@openssh.com", "status": "ok"}),
    TransferEvent("sftp.remove", {"path": "d.bin", "status": "ok"}),
    TransferEvent("sftp.mkdir", {"path": "dir", "mode": "0755", "status": "ok"}),
    TransferEvent("sftp.rmdir", {"path": "dir", "status": "no such file"}),
    TransferEvent("sftp.setstat", {"path": "c.bin", "mode": "0600", "status": "ok"}),
    TransferEvent("sftp.symlink", {"path": "link", "target": "c.bin", "status": "ok"}),
    TransferEvent("sftp.open", {"path": "/etc/shadow", "flags": "read", "mode": None,
                                "status": "permission denied"}),
]


def test_a_session_gives_one_event_per_change() -> None:
    assert run(session()) == EXPECTED


def test_a_file_left_open_is_closed_by_the_session_end() -> None:
    audit = SftpAudit()
    audit.client(w.open_(1, "big.iso", CREATE_WRITE))
    audit.server(w.handle(1, H1))
    audit.client(w.write(2, H1, 0, b"a" * 100))
    audit.server(w.status(2))
    audit.client(w.write(3, H1, 100, b"a" * 100))  # never acknowledged: not counted
    [closed] = audit.close()
    assert closed.fields["bytes_written"] == 100
    assert closed.fields["status"] == "session ended"


def test_a_failed_write_is_not_counted() -> None:
    events = run([*upload(1, "f", [b"a" * 10])[:1],
                  Exchange(w.write(2, H1, 0, b"a" * 10), w.status(2, 4)),
                  Exchange(w.close(3, H1), w.status(3))])
    assert events[-1].fields["bytes_written"] == 0


# --- any split of the streams gives the same events ------------------------------------

ops = st.sampled_from(["upload", "download", "rename", "remove", "mkdir", "symlink",
                       "setstat", "fail"])


def conversation(kinds: list[str], sizes: list[int]) -> list[Exchange]:
    out = [Exchange(w.init(), w.version())]
    for i, (kind, size) in enumerate(zip(kinds, sizes, strict=False)):
        rid = 100 * (i + 1)
        h = i.to_bytes(4, "big")
        if kind == "upload":
            out += upload(rid, f"up{i}", [b"u" * size, b"v" * (size // 3)], h)
        elif kind == "download":
            out += download(rid, f"down{i}", b"d" * size, h)
        elif kind == "rename":
            out.append(Exchange(w.path_op(s.RENAME, rid, f"r{i}", f"n{i}"), w.status(rid)))
        elif kind == "remove":
            out.append(Exchange(w.path_op(s.REMOVE, rid, f"x{i}"), w.status(rid, 2)))
        elif kind == "mkdir":
            out.append(Exchange(w.path_op(s.MKDIR, rid, f"d{i}", mode=0o700), w.status(rid)))
        elif kind == "symlink":
            out.append(Exchange(w.path_op(s.SYMLINK, rid, "t", f"l{i}"), w.status(rid)))
        elif kind == "setstat":
            out.append(Exchange(w.path_op(s.SETSTAT, rid, f"s{i}", mode=0o640), w.status(rid)))
        else:
            out.append(Exchange(w.open_(rid, f"f{i}", 1), w.status(rid, 3)))
    return out


@settings(max_examples=150, deadline=None)
@given(kinds=st.lists(ops, min_size=1, max_size=8),
       sizes=st.lists(st.integers(0, 70000), min_size=8, max_size=8),
       data=st.data())
def test_any_byte_split_gives_the_same_events(kinds: list[str], sizes: list[int],
                                              data: st.DataObject) -> None:
    exchanges = conversation(kinds, sizes)
    expected = run(exchanges)
    client = b"".join(x.client for x in exchanges)
    server = b"".join(x.server for x in exchanges)
    # A reply cannot pass before its request has: server byte b needs the client's bytes
    # up to the end of the request it answers.
    need: list[tuple[int, int]] = []  # (server end, client end) per exchange
    c_end = s_end = 0
    for x in exchanges:
        c_end += len(x.client)
        s_end += len(x.server)
        need.append((s_end, c_end))
    audit = SftpAudit()
    events: list[TransferEvent] = []
    cp = sp = 0
    while cp < len(client) or sp < len(server):
        required = next((c for s_stop, c in need if s_stop > sp), len(client))
        server_ok = sp < len(server) and cp >= required
        if server_ok and (cp == len(client) or data.draw(st.booleans())):
            step = data.draw(st.integers(1, len(server) - sp))
            # never past the next exchange's replies unless their request has passed
            limit = next(s_stop for s_stop, c in need if s_stop > sp)
            while limit < sp + step:
                nxt = next(((s_stop, c) for s_stop, c in need if s_stop > limit), None)
                if nxt is None or nxt[1] > cp:
                    break
                limit = nxt[0]
            step = min(step, limit - sp)
            events += audit.server(server[sp:sp + step])
            sp += step
        else:
            step = data.draw(st.integers(1, max(1, len(client) - cp)))
            events += audit.client(client[cp:cp + step])
            cp += step
    assert events + audit.close() == expected


def test_byte_at_a_time_gives_the_same_events() -> None:
    audit = SftpAudit()
    events: list[TransferEvent] = []
    for x in session():
        for b in x.client:
            events += audit.client(bytes([b]))
        for b in x.server:
            events += audit.server(bytes([b]))
    assert events + audit.close() == EXPECTED


# --- hostile streams -------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(client=st.lists(st.binary(max_size=300), max_size=20),
       server=st.lists(st.binary(max_size=300), max_size=20))
def test_arbitrary_bytes_never_raise(client: list[bytes], server: list[bytes]) -> None:
    audit = SftpAudit()
    for c, r in zip(client, server, strict=False):
        for event in audit.client(c) + audit.server(r):
            assert event.event.startswith("sftp.")
        held, pending, handles = audit.held
        assert held <= 2 * (s.MAX_PACKET + 4)
        assert pending <= s.MAX_PENDING and handles <= s.MAX_HANDLES
    audit.close()


@settings(max_examples=200, deadline=None)
@given(kinds=st.lists(ops, min_size=1, max_size=5),
       sizes=st.lists(st.integers(0, 5000), min_size=5, max_size=5),
       cut=st.integers(0, 10_000), data=st.data())
def test_truncated_and_corrupted_streams_never_raise(kinds: list[str], sizes: list[int],
                                                     cut: int, data: st.DataObject) -> None:
    exchanges = conversation(kinds, sizes)
    client = bytearray(b"".join(x.client for x in exchanges))
    server = bytearray(b"".join(x.server for x in exchanges))
    for stream in (client, server):  # flip a few bytes anywhere, lengths included
        for _ in range(data.draw(st.integers(0, 3))):
            if stream:
                i = data.draw(st.integers(0, len(stream) - 1))
                stream[i] = data.draw(st.integers(0, 255))
    audit = SftpAudit()
    audit.client(bytes(client[:cut]))
    audit.server(bytes(server[:cut]))
    audit.close()


def test_an_oversized_length_is_reported_once_and_passed_through() -> None:
    audit = SftpAudit()
    [event] = audit.client(w.u32(0xFFFFFFFF) + b"\x03rest")
    assert event.event == "sftp.unparsable"
    assert event.fields["direction"] == "client"
    assert "out of range" in str(event.fields["reason"])
    assert audit.client(b"\x00" * 100_000) == []  # passed through, nothing buffered
    assert audit.held[0] == 0
    # the other direction is still parsed
    assert audit.server(w.status(1)) == []


def test_a_zero_length_packet_is_unparsable() -> None:
    [event] = SftpAudit().server(w.u32(0))
    assert event.event == "sftp.unparsable" and event.fields["direction"] == "server"


def test_a_packet_whose_fields_run_past_its_end_is_reported_and_skipped() -> None:
    audit = SftpAudit()
    bad = w.packet(s.OPEN, w.u32(1) + w.u32(1000) + b"short")
    [event] = audit.client(bad)
    assert event.event == "sftp.unparsable" and event.fields["action"] == "packet skipped"
    # framing goes on: the next request is audited
    audit.client(w.path_op(s.REMOVE, 2, "f"))
    assert [e.event for e in audit.server(w.status(2))] == ["sftp.remove"]


def test_reports_of_malformed_packets_are_bounded() -> None:
    audit = SftpAudit()
    bad = w.packet(s.OPEN, b"\x00")
    events = audit.client(bad * 100)
    assert len(events) == s.MAX_REPORTS
    assert audit.unreported == 100 - s.MAX_REPORTS


def test_requests_without_replies_are_bounded() -> None:
    audit = SftpAudit()
    audit.client(b"".join(w.path_op(s.REMOVE, i, "x" * 100) for i in range(5000)))
    assert audit.held[1] == s.MAX_PENDING
    assert audit.forgotten == 5000 - s.MAX_PENDING


def test_a_huge_path_is_cut() -> None:
    audit = SftpAudit()
    audit.client(w.path_op(s.REMOVE, 1, "p" * 200_000))
    [event] = audit.server(w.status(1))
    assert len(str(event.fields["path"])) <= 4096 + 3


def test_write_content_is_never_copied_whole() -> None:
    """A write's data is skipped, not buffered: the framer holds at most its prefix."""
    audit = SftpAudit()
    audit.client(w.open_(1, "f", CREATE_WRITE))
    audit.server(w.handle(1, H1))
    packet = w.write(2, H1, 0, b"q" * 200_000)
    audit.client(packet[:150_000])
    assert audit.held[0] <= s.PREFIX[s.WRITE] + 5
