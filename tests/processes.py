"""Stopping a server a test or benchmark started, by its PID."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any


def stop_process(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it is still running after ``grace`` seconds (a clean shutdown
    is part of what tests check, a hung one must not hang the suite). An exited process is
    left alone."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def start_time(pid: int) -> int | None:
    """The kernel's start time of process ``pid`` (clock ticks since boot, field 22 of
    /proc/PID/stat), or None if no such process runs. A PID and its start time name one
    process: a PID reused after it exited has another start time."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else int(fields[19])


def stop_pid(pid: int, started: int, grace: float = 10.0) -> None:
    """``stop_process`` for a process known only by PID and start time (one another
    program started): SIGTERM, SIGKILL after ``grace`` seconds; nothing if that process
    is gone, its PID reused included."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if start_time(pid) != started:
            return
        os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and start_time(pid) == started:
            time.sleep(0.05)
