"""Terminal modes from the client applied to a real pty."""

from __future__ import annotations

import fcntl
import grp
import os
import stat
import struct
import termios
from collections.abc import Iterator

import pytest

from tssh.server.pty import (
    Pty,
    TtyOwnership,
    WindowSize,
    apply_modes,
    give_tty,
    open_pty,
    set_window_size,
    tty_group_id,
    tty_ownership,
)


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


def test_tty_ownership_as_openssh() -> None:
    assert tty_ownership(1000, 1000, 5) == TtyOwnership(1000, 5, 0o620)
    assert tty_ownership(1000, 1001, None) == TtyOwnership(1000, 1001, 0o600)


def test_tty_group_id() -> None:
    try:
        expected: int | None = grp.getgrnam("tty").gr_gid
    except KeyError:
        expected = None
    assert tty_group_id() == expected
    assert tty_group_id("no-such-group-xyz") is None


@pytest.fixture
def pty() -> Iterator[Pty]:
    opened = open_pty({}, WindowSize(80, 24))
    try:
        yield opened
    finally:
        os.close(opened.master)
        os.close(opened.slave)


def _owner(pty: Pty) -> tuple[int, int, int]:
    st = os.stat(pty.name)  # by name: what write(1) and mesg(1) see
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a terminal to another user needs root")
@pytest.mark.parametrize(("tty_gid", "expected"), [(5, (4321, 5, 0o620)),
                                                   (None, (4321, 4322, 0o600))])
def test_give_tty_as_root(pty: Pty, tty_gid: int | None,
                          expected: tuple[int, int, int]) -> None:
    got = give_tty(pty, 4321, 4322, tty_gid)
    assert _owner(pty) == expected
    assert got == TtyOwnership(*expected)


@pytest.mark.skipif(os.geteuid() == 0, reason="tests what a daemon that is not root does")
def test_give_tty_not_root_falls_back_to_own_group(pty: Pty) -> None:
    foreign = next(g.gr_gid for g in grp.getgrall() if g.gr_gid not in os.getgroups())
    got = give_tty(pty, os.geteuid(), os.getegid(), foreign)
    assert _owner(pty) == (os.geteuid(), os.getegid(), 0o600)
    assert got == TtyOwnership(os.geteuid(), os.getegid(), 0o600)
