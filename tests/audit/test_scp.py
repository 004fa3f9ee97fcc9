"""The legacy scp transfer audit parser, on the byte streams OpenSSH's scp exchanges."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tssh.audit.scp import ScpAudit, ScpCommand, scp_command
from tssh.audit.transfer import TransferEvent

OK = b"\0"


def test_the_command_line_says_direction_and_paths() -> None:
    assert scp_command(["scp", "-p", "-t", "up loaded.bin"]) == ScpCommand(
        True, ("up loaded.bin",), False)
    assert scp_command(["scp", "-r", "-f", "--", "-odd", "b"]) == ScpCommand(
        False, ("-odd", "b"), True)
    assert scp_command(["scp", "-v", "x"]) is None


def feed(audit: ScpAudit, steps: list[tuple[str, bytes]]) -> list[TransferEvent]:
    events: list[TransferEvent] = []
    for side, data in steps:
        events += audit.client(data) if side == "c" else audit.server(data)
    return events + audit.close()


def upload_steps(content: bytes) -> list[tuple[str, bytes]]:
    # sink ready; T line (-p); C line; data + status byte; each answered
    return [("s", OK), ("c", b"T1700000000 0 1700000000 0\n"), ("s", OK),
            ("c", b"C0644 %d up.bin\n" % len(content)), ("s", OK),
            ("c", content + OK), ("s", OK)]


def test_an_upload_to_a_file_name() -> None:
    audit = ScpAudit(ScpCommand(True, ("up loaded.bin",), False))
    events = feed(audit, upload_steps(b"x" * 70000))
    assert events == [TransferEvent("scp.upload", {
        "path": "up loaded.bin", "sent_name": "up.bin", "mode": "0644", "bytes": 70000,
        "size": 70000, "status": "ok"})]


def test_an_upload_into_a_directory_and_its_subdirectories() -> None:
    audit = ScpAudit(ScpCommand(True, ("dest",), True), target_is_dir=True)
    steps = [("s", OK), ("c", b"D0755 0 tree\n"), ("s", OK), ("c", b"C0600 3 a\n"),
             ("s", OK), ("c", b"abc\0"), ("s", OK), ("c", b"D0755 0 sub\n"), ("s", OK),
             ("c", b"C0644 0 empty\n"), ("s", OK), ("c", b"\0"), ("s", OK), ("c", b"E\n"),
             ("s", OK), ("c", b"E\n"), ("s", OK)]
    events = feed(audit, steps)
    assert [(e.fields["path"], e.fields["bytes"], e.fields["mode"]) for e in events] == [
        ("dest/tree/a", 3, "0600"), ("dest/tree/sub/empty", 0, "0644")]


def test_a_refused_file_sends_no_data() -> None:
    audit = ScpAudit(ScpCommand(True, ("/root/x",), False))
    steps = [("s", OK), ("c", b"C0644 5 x\n"), ("s", b"\x01scp: /root/x: Permission denied\n"),
             ("c", b"C0644 2 y\n"), ("s", OK), ("c", b"hi\0"), ("s", OK)]
    events = feed(audit, steps)
    assert [e.fields["status"] for e in events] == ["scp: /root/x: Permission denied", "ok"]
    assert events[1].fields["bytes"] == 2


def test_a_download_names_the_source() -> None:
    audit = ScpAudit(ScpCommand(False, ("dir/file.txt",), False))
    steps = [("c", OK), ("s", b"C0640 4 file.txt\n"), ("c", OK), ("s", b"data\0"), ("c", OK)]
    [event] = feed(audit, steps)
    assert event == TransferEvent("scp.download", {
        "path": "dir/file.txt", "sent_name": "file.txt", "mode": "0640", "bytes": 4,
        "size": 4, "status": "ok"})


def test_a_missing_source_is_an_error_line() -> None:
    audit = ScpAudit(ScpCommand(False, ("nope",), False))
    [event] = feed(audit, [("c", OK), ("s", b"\x01scp: nope: No such file or directory\n")])
    assert event.fields == {"path": None, "status": "scp: nope: No such file or directory"}


def test_a_transfer_cut_short_is_reported_at_the_end() -> None:
    audit = ScpAudit(ScpCommand(True, ("f",), False))
    [event] = feed(audit, [("s", OK), ("c", b"C0644 100 f\n"), ("s", OK), ("c", b"x" * 40)])
    assert event.fields["bytes"] == 40 and event.fields["status"] == "session ended"


def test_not_scp_is_unparsable_and_passed_through() -> None:
    audit = ScpAudit(ScpCommand(True, ("f",), False))
    assert audit.server(OK) == []
    [event] = audit.client(b"GET / HTTP/1.1\n")
    assert event.event == "scp.unparsable"
    assert audit.client(b"C0644 1 f\n") == []


def test_a_line_without_end_is_bounded() -> None:
    audit = ScpAudit(ScpCommand(True, ("f",), False))
    events = audit.client(b"C" + b"0" * 100_000)
    assert [e.event for e in events] == ["scp.unparsable"]


@settings(max_examples=200, deadline=None)
@given(content=st.binary(max_size=3000), data=st.data())
def test_any_byte_split_gives_the_same_events(content: bytes, data: st.DataObject) -> None:
    steps = [*upload_steps(content), ("c", b"C0644 3 second\n"), ("s", OK),
             ("c", b"abc\0"), ("s", OK)]
    expected = feed(ScpAudit(ScpCommand(True, ("d",), False), True), steps)
    audit = ScpAudit(ScpCommand(True, ("d",), False), True)
    split: list[tuple[str, bytes]] = []
    for side, chunk in steps:  # each step cut anywhere, the order between sides kept
        while chunk:
            n = data.draw(st.integers(1, len(chunk)))
            split.append((side, chunk[:n]))
            chunk = chunk[n:]
    assert feed(audit, split) == expected
    assert [e.fields["path"] for e in expected] == ["d/up.bin", "d/second"]


@settings(max_examples=300, deadline=None)
@given(client=st.lists(st.binary(max_size=200), max_size=20),
       server=st.lists(st.binary(max_size=200), max_size=20), upload=st.booleans())
def test_arbitrary_bytes_never_raise(client: list[bytes], server: list[bytes],
                                     upload: bool) -> None:
    audit = ScpAudit(ScpCommand(upload, ("a", "b"), True))
    for c, s in zip(client, server, strict=False):
        audit.client(c)
        audit.server(s)
    audit.close()
