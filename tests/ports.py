"""Loopback ports for tests and benchmarks: pick a free one, wait until one listens or closes.

Every wait is bounded in time; a process handed in is watched so that a server that died at
start-up fails the wait at once, with the end of its log when one is given.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on at ``host`` right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, proc: subprocess.Popen[Any] | None = None,
                  timeout: float = 60.0, log: Path | None = None) -> None:
    """Until ``host:port`` accepts a TCP connection; RuntimeError if ``proc`` exits first,
    TimeoutError after ``timeout`` seconds (generous: a start-up bound on a loaded 2-core
    machine, not something a test asserts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = f": {log.read_text(errors='replace')[-3000:]}" if log is not None else ""
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before "
                               f"listening on {host}:{port}{tail}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port}")


def port_closed(host: str, port: int, timeout: float = 5.0) -> bool:
    """Whether ``host:port`` refuses connections within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), 0.2):
                pass
        except OSError:
            return True
        time.sleep(0.05)
    return False
