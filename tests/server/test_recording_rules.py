"""The daemon's recording decisions that need no recorder: headers, rules (which sessions
are transfers: test_transfer.py)."""

from __future__ import annotations

from tssh.identity.base import Peer
from tssh.policy import Decision
from tssh.server.recording import (
    RecordingRule,
    SessionDescription,
    header_for,
)

LAPTOP = Peer(name="laptop.example.ts.net", id="nLAP1", addresses=("100.64.0.2",),
              user="alice@example.com", user_id="42")
CI = Peer(name="ci", id="nCI1", addresses=("100.64.0.3",), tags=("tag:ci",))


def _desc(**kw: object) -> SessionDescription:
    base: dict[str, object] = dict(
        session_id="s1", conn_id="ssh-conn-20260101T000000-0011223344", peer=LAPTOP,
        login="alice", local_user="alice", source_address="100.64.0.1", command=None,
        subsystem=None, term="xterm-kitty", width=120, height=40, pty=True)
    base.update(kw)
    return SessionDescription(**base)  # type: ignore[arg-type]


def test_header_of_a_pty_shell() -> None:
    h = header_for(_desc(), 1_700_000_000.5).header.to_json()
    assert h["srcNode"] == "laptop.example.ts.net"
    assert h["srcNodeID"] == "nLAP1"
    assert h["srcNodeUser"] == "alice@example.com" and h["srcNodeUserID"] == 42
    assert (h["width"], h["height"], h["timestamp"]) == (120, 40, 1_700_000_000)
    assert h["env"] == {"TERM": "xterm-kitty"}
    assert h["sshUser"] == h["localUser"] == "alice"
    assert "command" not in h
    assert h["tssh"] == {"stderr": False, "input": False}


def test_header_of_exec_without_pty_from_a_tagged_node() -> None:
    h = header_for(_desc(peer=CI, command="make deploy", pty=False, login="deploy",
                         local_user="deploy", term=None), 0).header.to_json()
    assert h["command"] == "make deploy"
    assert h["srcNodeTags"] == ["tag:ci"] and "srcNodeUser" not in h
    assert (h["width"], h["height"]) == (0, 0)
    assert h["tssh"]["stderr"] is True


def test_header_of_sftp_names_the_subsystem() -> None:
    assert header_for(_desc(subsystem="sftp", pty=False), 0).header.to_json()["command"] == "sftp"


def test_rule_from_decision() -> None:
    recorded = Decision(action="accept", local_user="alice", rule=0,
                        recorders=("tag:recorder",), enforce_recorder=True)
    assert RecordingRule.from_decision(recorded) == RecordingRule(("tag:recorder",), True)
    plain = Decision(action="accept", local_user="alice", rule=0)
    assert RecordingRule.from_decision(plain) is None
    assert RecordingRule.from_decision(None) is None
