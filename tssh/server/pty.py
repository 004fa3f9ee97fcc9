"""Pseudo-terminals for sessions: the client's terminal modes (RFC 4254 §8) and window size.

``apply_modes`` is pure (termios attribute list in, new list out) so the opcode table is unit
tested; ``open_pty`` and ``set_window_size`` are the thin I/O around it.
"""

from __future__ import annotations

import fcntl
import os
import struct
import termios
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
