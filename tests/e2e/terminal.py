"""Waiting on a terminal a test drives through pexpect: for the size it reports and for the
job in its foreground, bounded in time, instead of sleeping and hoping."""

from __future__ import annotations

import os
import time

import pexpect


def expect_size(child: pexpect.spawn, size: str, old: str, timeout: float = 20.0) -> None:
    """``stty size`` until it prints ``size``: the resize travels as its own SSH request,
    so a loaded machine may run the command before the new size is set (never after)."""
    deadline = time.monotonic() + timeout
    while True:
        child.sendline("stty size")
        if child.expect([size, old]) == 0:
            return
        assert time.monotonic() < deadline, f"the terminal never became {size}"
        time.sleep(0.1)


def wait_foreground(pts: str, argv: list[bytes], timeout: float = 20.0) -> None:
    """Until ``argv`` is the foreground job of terminal ``pts`` (read from /proc), so a
    keystroke sent next reaches it rather than the shell that is still starting it."""
    rdev = os.stat(pts).st_rdev
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in os.listdir("/proc"):
            if not proc.isdigit():
                continue
            try:
                with open(f"/proc/{proc}/stat") as f:
                    stat = f.read()
                with open(f"/proc/{proc}/cmdline", "rb") as f:
                    cmdline = f.read().split(b"\0")[:-1]
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp session tty tpgid
            tty = int(fields[4])
            major, minor = (tty >> 8) & 0xFFF, (tty & 0xFF) | ((tty >> 12) & 0xFFF00)
            if (cmdline == argv and (major, minor) == (os.major(rdev), os.minor(rdev))
                    and fields[2] == fields[5]):
                return
        time.sleep(0.05)
    raise AssertionError(f"{argv} never became the foreground job of {pts}")
