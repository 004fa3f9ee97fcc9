"""The audit sink: JSON lines in a 0600 file, rotated by size, and the journal's protocol."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import stat
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from tssh.audit.entry import audit_entry, field_name
from tssh.audit.journal import Journal, datagram
from tssh.audit.log import connection_scope, emit
from tssh.audit.sink import AuditFile, AuditSink, audit_files


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[AuditSink]:
    s = AuditSink.for_state_dir(tmp_path)
    s.start()
    try:
        yield s
    finally:
        s.close()


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_an_event_is_one_line_with_the_common_fields_first(tmp_path: Path) -> None:
    s = AuditSink.for_state_dir(tmp_path)
    s.start()
    emit("session.end", "session ended", {"conn": "ssh-conn-1", "peer_ip": "100.64.0.2",
                                          "peer": "laptop", "node_id": "n1"},
         local_user="alice", exit_status=3, signal=None)
    s.close()
    [entry] = lines(tmp_path / "audit.jsonl")
    assert list(entry)[:9] == ["time", "event", "connectionID", "node", "nodeID", "user",
                               "login", "localUser", "address"]
    assert entry["event"] == "session.end" and entry["connectionID"] == "ssh-conn-1"
    assert entry["address"] == "100.64.0.2" and entry["localUser"] == "alice"
    assert entry["exitStatus"] == 3 and entry["message"] == "session ended"
    assert str(entry["time"]).endswith("Z")
    assert stat.S_IMODE((tmp_path / "audit.jsonl").stat().st_mode) == 0o600


def test_an_existing_file_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text("")
    path.chmod(0o644)
    f = AuditFile(path)
    f.open()
    f.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_secrets_never_get_in() -> None:
    entry = audit_entry(0.0, {"event": "check.approved", "client_secret": "s3cret",
                              "id_token": "eyJ", "nested": {"password": "p", "ok": 1},
                              "approver": "alice@example.com"})
    assert "s3cret" not in json.dumps(entry) and "eyJ" not in json.dumps(entry)
    assert entry["nested"] == {"ok": 1} and entry["approver"] == "alice@example.com"


def test_field_names() -> None:
    assert field_name("conn") == "connectionID"
    assert field_name("bytes_written") == "bytesWritten"
    assert field_name("node_id") == "nodeID"
    assert field_name("newPath") == "newPath"


def test_the_connection_in_scope_fills_what_an_event_does_not_say(tmp_path: Path) -> None:
    s = AuditSink.for_state_dir(tmp_path)
    s.start()

    async def login() -> None:
        connection_scope({"conn": "ssh-conn-9", "peer_ip": "100.64.0.9"})
        # an account check deep in a worker thread knows nothing of connections
        await asyncio.to_thread(emit, "account.expired", "login refused: account expired",
                                local_user="bob")

    asyncio.run(login())
    emit("outside", "no connection here")
    s.close()
    first, second = lines(tmp_path / "audit.jsonl")
    assert (first["connectionID"], first["address"], first["localUser"]) == (
        "ssh-conn-9", "100.64.0.9", "bob")
    assert second["connectionID"] is None


def test_rotation_keeps_the_configured_number_of_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    f = AuditFile(path, max_bytes=1000, files=3)
    f.open()
    for i in range(100):
        f.write([json.dumps({"n": i, "pad": "x" * 80}).encode() + b"\n"])
    f.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    for p in tmp_path.iterdir():
        assert p.stat().st_size <= 1000
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    numbers = [json.loads(line)["n"] for p in audit_files(path)
               for line in p.read_text().splitlines()]
    assert numbers == list(range(numbers[0], 100))  # oldest first, nothing lost in between
    assert len(numbers) > 20


def test_one_file_only_starts_over(tmp_path: Path) -> None:
    f = AuditFile(tmp_path / "audit.jsonl", max_bytes=100, files=1)
    f.open()
    for _ in range(10):
        f.write([b"y" * 60 + b"\n"])
    f.close()
    assert [p.name for p in tmp_path.iterdir()] == ["audit.jsonl"]


def test_a_burst_is_written_whole(sink: AuditSink, tmp_path: Path) -> None:
    log = logging.getLogger("tssh.audit")
    for i in range(2000):
        log.info("burst", extra={"event": "test.burst", "n": i})
    sink.close()
    assert [e["n"] for e in lines(tmp_path / "audit.jsonl")] == list(range(2000))


def test_the_journal_protocol() -> None:
    assert datagram({"MESSAGE": "hi", "TSSH_EVENT": "x"}) == b"MESSAGE=hi\nTSSH_EVENT=x\n"
    assert datagram({"MESSAGE": "a\nb"}) == b"MESSAGE\n" + struct.pack("<Q", 3) + b"a\nb\n"


def test_events_reach_a_journal_socket(tmp_path: Path) -> None:
    address = tmp_path / "journal.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(address))
    server.settimeout(5)
    try:
        journal = Journal.if_present(address)
        assert journal is not None
        s = AuditSink.for_state_dir(tmp_path, journal=journal)
        s.start()
        emit("sftp.close", "sftp.close path=a", {"conn": "ssh-conn-2"}, path="a",
             level=logging.WARNING)
        s.close()
        received = server.recv(65536)
    finally:
        server.close()
    fields = dict(line.split("=", 1) for line in received.decode().splitlines())
    assert fields["TSSH_EVENT"] == "sftp.close"
    assert fields["TSSH_CONNECTION_ID"] == "ssh-conn-2"
    assert fields["PRIORITY"] == "4" and fields["SYSLOG_IDENTIFIER"] == "tssh"
    assert json.loads(fields["TSSH_AUDIT"])["path"] == "a"


def test_no_journal_socket_means_no_journal(tmp_path: Path) -> None:
    assert Journal.if_present(tmp_path / "absent") is None
