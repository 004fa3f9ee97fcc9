"""``tssh status`` shows each live session's recording: recorder, protocol, bytes."""

from __future__ import annotations

from tssh.cli.status import render_status


def _session(recording: object) -> dict[str, object]:
    return {"id": "s1", "user": "alice@example.com", "localUser": "alice", "kind": "shell",
            "recording": recording}


def test_recorded_session_shows_recorder_protocol_and_bytes() -> None:
    text = render_status({"sessions": [_session({
        "recorder": "100.64.0.20:80", "protocol": "v2", "state": "recording",
        "enforced": True, "bytesSent": 1200, "bytesAcked": 1100, "bytesBuffered": 0,
        "bytesDropped": 0, "error": None})]})
    assert text == (
        "sessions: 1\n"
        "  s1: alice@example.com as alice (kind=shell)\n"
        "    recording to 100.64.0.20:80 (v2, enforced): sent 1200 B, acked 1100 B\n"
    )


def test_failed_v1_and_unrecorded_sessions() -> None:
    text = render_status({"sessions": [
        _session({"recorder": "100.64.0.21:80", "protocol": "v1", "state": "failed",
                  "enforced": False, "bytesSent": 10, "bytesAcked": None,
                  "bytesDropped": 5, "error": "connection to the recorder lost"}),
        _session({"recorder": None, "protocol": None, "state": "unrecorded",
                  "enforced": False, "bytesSent": 0, "bytesAcked": None}),
        _session(None),
    ]})
    lines = text.splitlines()
    assert lines[2] == ("    recording to 100.64.0.21:80 (v1) [failed]: sent 10 B, "
                        "dropped 5 B, error: connection to the recorder lost")
    assert lines[4] == "    recording: none (no recorder accepted it)"
    assert lines[5] == "  s1: alice@example.com as alice (kind=shell)"
    assert len(lines) == 6  # a session not on a recorded rule has no recording line
