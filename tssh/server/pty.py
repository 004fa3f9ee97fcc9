"""Pseudo-terminals for sessions: the client's terminal modes (RFC 4254 §8), window size, and
who owns the terminal.

``apply_modes`` and ``tty_ownership`` are pure (termios attribute list in, new list out; ids
in, owner and mode out) so they are unit tested; ``open_pty``, ``set_window_size`` and
``give_tty`` are the thin I/O around them.

Ownership is OpenSSH's (``pty_setowner``): the user, group ``tty``, mode 0620, so that
``write`` and ``wall`` (setgid ``tty``) reach the session and ``mesg`` can switch that off;
without a ``tty`` group, the user's primary group and 0600.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import logging
import os
import struct
import termios
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("tssh.session")

TTY_GROUP = "tty"

# RFC 4254 §8 opcode -> termios control-character index.
_CC: dict[int, str] = {
    1: "VINTR", 2: "VQUIT", 3: "VERASE", 4: "VKILL", 5: "VEOF", 6: "VEOL", 7: "VEOL2",
    8: "VSTART", 9: "VSTOP", 10: "VSUSP", 12: "VREPRINT", 13: "VWERASE", 14: "VLNEXT",
    18: "VDISCARD",
}
# opcode -> (attribute index, flag name); indexes follow termios.tcgetattr's list.
_IFLAG, _OFLAG, _CFLAG, _LFLAG, _ISPEED, _OSPEED, _CCS = range(7)
_FLAGS: dict[int, tuple[int, str]] = {
    30: (_IFLAG, "IGNPAR"), 31: (_IFLAG, "PARMRK"), 32: (_IFLAG, "INPCK"),
    33: (_IFLAG, "ISTRIP"), 34: (_IFLAG, "INLCR"), 35: (_IFLAG, "IGNCR"),
    36: (_IFLAG, "ICRNL"), 37: (_IFLAG, "IUCLC"), 38: (_IFLAG, "IXON"), 39: (_IFLAG, "IXANY"),
    40: (_IFLAG, "IXOFF"), 41: (_IFLAG, "IMAXBEL"), 42: (_IFLAG, "IUTF8"),
    50: (_LFLAG, "ISIG"), 51: (_LFLAG, "ICANON"), 52: (_LFLAG, "XCASE"), 53: (_LFLAG, "ECHO"),
    54: (_LFLAG, "ECHOE"), 55: (_LFLAG, "ECHOK"), 56: (_LFLAG, "ECHONL"),
    57: (_LFLAG, "NOFLSH"), 58: (_LFLAG, "TOSTOP"), 59: (_LFLAG, "IEXTEN"),
    60: (_LFLAG, "ECHOCTL"), 61: (_LFLAG, "ECHOKE"), 62: (_LFLAG, "PENDIN"),
    70: (_OFLAG, "OPOST"), 71: (_OFLAG, "OLCUC"), 72: (_OFLAG, "ONLCR"), 73: (_OFLAG, "OCRNL"),
    74: (_OFLAG, "ONOCR"), 75: (_OFLAG, "ONLRET"),
    90: (_CFLAG, "CS7"), 91: (_CFLAG, "CS8"), 92: (_CFLAG, "PARENB"), 93: (_CFLAG, "PARODD"),
}
_ISPEED_OP, _OSPEED_OP = 128, 129
_VDISABLE = 0xFF  # what an SSH client sends for "no character"; Linux uses 0


def _speed_constant(baud: int) -> int | None:
    value = getattr(termios, f"B{baud}", None)
    return value if isinstance(value, int) else None


def apply_modes(attrs: list[Any], modes: Mapping[int, int]) -> list[Any]:
    """Return ``attrs`` (as from ``tcgetattr``) with the client's terminal modes applied.

    Unknown opcodes and flags this platform lacks are ignored, as OpenSSH does.
    """
    new = list(attrs)
    cc = list(new[_CCS])
    for opcode, value in modes.items():
        if opcode in _CC:
            index = getattr(termios, _CC[opcode], None)
            if isinstance(index, int) and index < len(cc):
                char = 0 if value == _VDISABLE else value & 0xFF
                cc[index] = char if isinstance(cc[index], int) else bytes([char])
        elif opcode in _FLAGS:
            slot, name = _FLAGS[opcode]
            flag = getattr(termios, name, None)
            if not isinstance(flag, int):
                continue
            current = int(new[slot])
            if name in ("CS7", "CS8"):
                current &= ~termios.CSIZE
            new[slot] = current | flag if value else current & ~flag
        elif opcode in (_ISPEED_OP, _OSPEED_OP):
            speed = _speed_constant(value)
            if speed is not None:
                new[_ISPEED if opcode == _ISPEED_OP else _OSPEED] = speed
    new[_CCS] = cc
    return new


@dataclass(frozen=True)
class WindowSize:
    cols: int
    rows: int
    width_px: int = 0
    height_px: int = 0


@dataclass(frozen=True)
class Pty:
    master: int
    slave: int
    name: str  # e.g. /dev/pts/3


def set_window_size(fd: int, size: WindowSize) -> None:
    """TIOCSWINSZ: the kernel sends SIGWINCH to the terminal's foreground process group."""
    packed = struct.pack(
        "HHHH", size.rows & 0xFFFF, size.cols & 0xFFFF, size.width_px & 0xFFFF,
        size.height_px & 0xFFFF,
    )
    fcntl.ioctl(fd, termios.TIOCSWINSZ, packed)


def open_pty(modes: Mapping[int, int], size: WindowSize) -> Pty:
    """A new pty pair with the client's modes and size; both fds close-on-exec."""
    master, slave = os.openpty()
    try:
        attrs = termios.tcgetattr(slave)
        termios.tcsetattr(slave, termios.TCSANOW, apply_modes(attrs, modes))
        set_window_size(slave, size)
        name = os.ttyname(slave)
        os.set_blocking(master, False)
    except BaseException:
        os.close(master)
        os.close(slave)
        raise
    return Pty(master=master, slave=slave, name=name)


@dataclass(frozen=True)
class TtyOwnership:
    uid: int
    gid: int
    mode: int


def tty_ownership(uid: int, primary_gid: int, tty_gid: int | None) -> TtyOwnership:
    """The owner, group and mode a session's terminal gets (OpenSSH's rule)."""
    if tty_gid is None:
        return TtyOwnership(uid, primary_gid, 0o600)
    return TtyOwnership(uid, tty_gid, 0o620)


def tty_group_id(name: str = TTY_GROUP) -> int | None:
    """The ``tty`` group's id, None if this system has no such group."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def give_tty(pty: Pty, uid: int, primary_gid: int, tty_gid: int | None) -> TtyOwnership:
    """Give the terminal to the session's user; returns what it got.

    Done on the open slave descriptor, so it is the very terminal the session gets. A daemon
    that is not root may not give the file to the ``tty`` group (it is not a member); it then
    keeps the user's own group and 0600: a group-writable terminal owned by the user's group
    would let that group's members write to it. Failures are logged, not fatal: the session
    still has its descriptors, and a terminal left as the kernel made it (0600) is no looser.
    """
    choices = [tty_ownership(uid, primary_gid, tty_gid)]
    if tty_gid is not None:
        choices.append(tty_ownership(uid, primary_gid, None))
    for wanted in choices:
        try:
            os.fchown(pty.slave, wanted.uid, wanted.gid)
            break
        except OSError as e:
            if e.errno == errno.EPERM and wanted is not choices[-1]:
                continue  # not a member of group tty: the user's own group, 0600
            log.warning("cannot give the terminal to the session's user",
                        extra={"tty": pty.name, "uid": uid, "error": e.strerror or str(e)})
            return _current(pty)
    try:
        os.fchmod(pty.slave, wanted.mode)
    except OSError as e:
        log.warning("cannot set the terminal's mode",
                    extra={"tty": pty.name, "mode": oct(wanted.mode),
                           "error": e.strerror or str(e)})
        return _current(pty)
    return wanted


def _current(pty: Pty) -> TtyOwnership:
    st = os.fstat(pty.slave)
    return TtyOwnership(st.st_uid, st.st_gid, st.st_mode & 0o777)
