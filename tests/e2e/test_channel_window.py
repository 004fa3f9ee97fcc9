"""The session channel window the daemon grants (docs/config.md, "Channel window"), as the
stock client reports it: it bounds an upload to window / RTT on a long path."""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import DaemonFactory, require_tool, run_ssh


def granted_window(output: bytes) -> int:
    """The window in ssh's "channel 0: open confirm rwindow N rmax M" debug line."""
    match = re.search(rb"channel 0: open confirm rwindow (\d+) rmax (\d+)", output)
    assert match, output[-3000:]
    return int(match.group(1))


@pytest.mark.parametrize(("flags", "window"), [
    ((), 8 * 1024 * 1024),
    (("--channel-window", "16777216"), 16 * 1024 * 1024),
])
def test_session_channel_gets_the_configured_window(daemon_factory: DaemonFactory,
                                                    flags: tuple[str, ...],
                                                    window: int) -> None:
    require_tool("ssh")
    daemon = daemon_factory(list(flags))
    result = run_ssh(daemon, "root", "echo in", options=("-o", "LogLevel=DEBUG2"))
    assert result.returncode == 0 and result.stdout == b"in\n", result.stderr[-2000:]
    assert granted_window(result.stderr) == window
