"""Terminal modes from the client applied to a real pty."""

from __future__ import annotations

import fcntl
import os
import struct
import termios

from tssh.server.pty import WindowSize, apply_modes, open_pty, set_window_size


def _attrs() -> list[object]:
    master, slave = os.openpty()
    try:
        return termios.tcgetattr(slave)
    finally:
        os.close(master)
        os.close(slave)


def test_flags_set_and_cleared() -> None:
    attrs = _attrs()
    new = apply_modes(attrs, {53: 0, 51: 1, 36: 1, 72: 0})  # ECHO off, ICANON, ICRNL, ONLCR off
    assert not int(new[3]) & termios.ECHO  # type: ignore[call-overload]
    assert int(new[3]) & termios.ICANON  # type: ignore[call-overload]
    assert int(new[0]) & termios.ICRNL  # type: ignore[call-overload]
    assert not int(new[1]) & termios.ONLCR  # type: ignore[call-overload]


def test_control_characters_and_disable() -> None:
    new = apply_modes(_attrs(), {1: 7, 3: 0x7F, 10: 0xFF})
    cc = new[6]
    assert cc[termios.VINTR] in (7, b"\x07")  # type: ignore[index]
    assert cc[termios.VERASE] in (0x7F, b"\x7f")  # type: ignore[index]
    assert cc[termios.VSUSP] in (0, b"\x00")  # type: ignore[index]


def test_cs8_replaces_character_size_and_speed() -> None:
    new = apply_modes(_attrs(), {90: 1, 91: 1, 128: 38400, 129: 9600, 250: 1})
    assert int(new[2]) & termios.CSIZE == termios.CS8  # type: ignore[call-overload]
    assert new[4] == termios.B38400 and new[5] == termios.B9600


def test_open_pty_applies_modes_and_size() -> None:
    pty = open_pty({53: 0}, WindowSize(132, 43))
    try:
        assert pty.name.startswith("/dev/pts/")
        assert not termios.tcgetattr(pty.slave)[3] & termios.ECHO
        set_window_size(pty.master, WindowSize(100, 30))
        rows, cols, _, _ = struct.unpack(
            "HHHH", fcntl.ioctl(pty.slave, termios.TIOCGWINSZ, b"\0" * 8)
        )
        assert (rows, cols) == (30, 100)
    finally:
        os.close(pty.master)
        os.close(pty.slave)
