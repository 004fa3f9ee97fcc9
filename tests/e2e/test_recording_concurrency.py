"""Many recorded sessions at once: one connection with dozens of channels, many connections.

Multiplexing clients (OpenSSH ControlMaster, VS Code, Ansible with pipelining) open many
session channels on one SSH connection. Every one is recorded (``enforceRecorder``), acked and
confirmed, however many run at once: the real daemon and the real recorder node
(``python -m recorder serve``), driven with asyncssh ``conn.run`` under ``asyncio.gather``.
Each recording must hold exactly what the client saw, end with exit status 0 and be listed as
complete by the recorder's API.

The daemon's per-connection limit, ``max_sessions``, is 64 by default (above what these
tests open on one connection); the last test shows what a client sees beyond it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncssh
import pytest

from tests.e2e.conftest import ALICE_IP, REPO, SERVER_IP, LocalUser, TsshDaemon
from tests.e2e.recorders import (  # noqa: F401  (fixtures)
    RecorderNode,
    RecordingSetup,
    recorder_loop_fixture,
    recorder_node_fixture,
    recording_fixture,
)

pytestmark = pytest.mark.skipif(not (REPO / "recorder" / "__main__.py").exists(),
                                reason="the recorder node is not in this tree")

RUN_TIMEOUT = 60.0  # seconds for a whole burst of sessions (a loaded 2-core machine)


def _connect(daemon: TsshDaemon, user: LocalUser) -> Any:
    return asyncssh.connect(SERVER_IP, daemon.port, local_addr=(ALICE_IP, 0),
                            username=user.name, known_hosts=None)


def _command(conn_no: int, session_no: int) -> str:
    """A command whose output names its session and differs in length from the others'."""
    return f"echo 'session {conn_no}.{session_no}'; seq 1 {50 + 7 * session_no}"


async def _burst(daemon: TsshDaemon, user: LocalUser, connections: int, sessions: int,
                 pty: bool = False) -> dict[str, asyncssh.SSHCompletedProcess]:
    """``sessions`` concurrent channels on each of ``connections`` concurrent connections;
    each session's completed process, by command."""
    async def one_connection(c: int) -> list[tuple[str, asyncssh.SSHCompletedProcess]]:
        async with _connect(daemon, user) as conn:
            commands = [_command(c, s) for s in range(sessions)]
            options: dict[str, Any] = {"term_type": "xterm", "term_size": (100, 30)} \
                if pty else {}
            results = await asyncio.gather(*(conn.run(cmd, **options) for cmd in commands))
            return list(zip(commands, results, strict=True))

    async with asyncio.timeout(RUN_TIMEOUT):
        per_connection = await asyncio.gather(*(one_connection(c) for c in range(connections)))
    return {cmd: result for results in per_connection for cmd, result in results}


def _check_every_session_recorded(node: RecorderNode,
                                  seen: dict[str, asyncssh.SSHCompletedProcess],
                                  pty: bool = False) -> None:
    """Every session ended well and was recorded completely: listed complete with exit status
    0, and its recording's output is what the client saw, byte for byte."""
    for cmd, result in seen.items():
        assert (result.exit_status, result.stderr) == (0, ""), (cmd, result.stderr)
        assert result.stdout  # a session's own output, not an empty recording's
    listed = node.recordings()
    by_command = {meta["header"].get("command"): meta for meta in listed}
    assert len(listed) == len(by_command) == len(seen), (len(listed), len(seen))
    assert set(by_command) == set(seen)
    for cmd, meta in by_command.items():
        assert (meta["status"], meta["exitStatus"], meta["error"]) == ("complete", 0, None), \
            meta
        header, events = node.cast(meta)
        assert (header["width"], header["height"]) == ((100, 30) if pty else (0, 0))
        recorded = "".join(e[2] for e in events if e[1] == "o")
        assert recorded == seen[cmd].stdout, cmd
        assert events[-1][1:] == ["x", "0"]


async def test_fifty_concurrent_exec_channels_on_one_connection_are_all_recorded(
        recording: RecordingSetup, recorder_node: RecorderNode,
        local_user: LocalUser) -> None:
    daemon = recording.daemon(enforce=True)
    seen = await _burst(daemon, local_user, connections=1, sessions=50)
    _check_every_session_recorded(recorder_node, seen)


async def test_twenty_concurrent_pty_sessions_on_one_connection_are_all_recorded(
        recording: RecordingSetup, recorder_node: RecorderNode,
        local_user: LocalUser) -> None:
    daemon = recording.daemon(enforce=True)
    seen = await _burst(daemon, local_user, connections=1, sessions=20, pty=True)
    _check_every_session_recorded(recorder_node, seen, pty=True)


async def test_two_hundred_concurrent_sessions_over_twenty_connections_are_all_recorded(
        recording: RecordingSetup, recorder_node: RecorderNode,
        local_user: LocalUser) -> None:
    daemon = recording.daemon(enforce=True)
    seen = await _burst(daemon, local_user, connections=20, sessions=10)
    assert len(seen) == 200
    _check_every_session_recorded(recorder_node, seen)


async def test_a_channel_beyond_max_sessions_is_refused_and_the_others_are_recorded(
        recording: RecordingSetup, recorder_node: RecorderNode,
        local_user: LocalUser) -> None:
    daemon = recording.daemon(enforce=True, extra_args=("--max-sessions", "4"))
    async with _connect(daemon, local_user) as conn:
        # Each session stays open until every channel open has been answered.
        commands = [f"echo 'session {i}'; sleep 2" for i in range(6)]
        outcomes: Sequence[Any] = await asyncio.wait_for(asyncio.gather(
            *(conn.run(cmd) for cmd in commands), return_exceptions=True), RUN_TIMEOUT)
        refused = [o for o in outcomes if isinstance(o, asyncssh.ChannelOpenError)]
        assert len(refused) == 2, outcomes
        assert all(r.code == asyncssh.constants.OPEN_RESOURCE_SHORTAGE for r in refused)
        assert "at most 4 sessions per connection (max_sessions)" in refused[0].reason
        # the connection goes on: a session opened once the others ended runs
        again = await conn.run("echo again")
        assert (again.exit_status, again.stdout) == (0, "again\n")
    ran = {cmd: o for cmd, o in zip(commands, outcomes, strict=True)
           if not isinstance(o, BaseException)}
    ran["echo again"] = again
    _check_every_session_recorded(recorder_node, ran)
