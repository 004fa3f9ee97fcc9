"""SFTP v3 packets as OpenSSH's client and sftp-server write them, for the parser's tests."""

from __future__ import annotations

import struct

from tssh.audit import sftp as s


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


def u64(n: int) -> bytes:
    return struct.pack(">Q", n)


def string(data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return u32(len(raw)) + raw


def packet(ptype: int, body: bytes) -> bytes:
    return u32(len(body) + 1) + bytes([ptype]) + body


def attrs(mode: int | None = None, size: int | None = None, uid: int | None = None,
          times: tuple[int, int] | None = None) -> bytes:
    flags, body = 0, b""
    if size is not None:
        flags |= s.ATTR_SIZE
        body += u64(size)
    if uid is not None:
        flags |= s.ATTR_UIDGID
        body += u32(uid) + u32(uid)
    if mode is not None:
        flags |= s.ATTR_PERMISSIONS
        body += u32(mode)
    if times is not None:
        flags |= s.ATTR_ACMODTIME
        body += u32(times[0]) + u32(times[1])
    return u32(flags) + body


def init() -> bytes:
    return packet(s.INIT, u32(3))


def version() -> bytes:
    return packet(s.VERSION, u32(3) + string("posix-rename@openssh.com") + string("1"))


def open_(rid: int, path: str, pflags: int, mode: int | None = None) -> bytes:
    return packet(s.OPEN, u32(rid) + string(path) + u32(pflags) + attrs(mode))


def handle(rid: int, h: bytes) -> bytes:
    return packet(s.HANDLE, u32(rid) + string(h))


def status(rid: int, code: int = 0) -> bytes:
    return packet(s.STATUS, u32(rid) + u32(code) + string("msg") + string(""))


def write(rid: int, h: bytes, offset: int, data: bytes) -> bytes:
    return packet(s.WRITE, u32(rid) + string(h) + u64(offset) + string(data))


def read(rid: int, h: bytes, offset: int, length: int) -> bytes:
    return packet(s.READ, u32(rid) + string(h) + u64(offset) + u32(length))


def data(rid: int, content: bytes) -> bytes:
    return packet(s.DATA, u32(rid) + string(content))


def close(rid: int, h: bytes) -> bytes:
    return packet(s.CLOSE, u32(rid) + string(h))


def path_op(ptype: int, rid: int, *paths: str, mode: int | None = None) -> bytes:
    body = u32(rid) + b"".join(string(p) for p in paths)
    if ptype in (s.MKDIR, s.SETSTAT):
        body += attrs(mode)
    return packet(ptype, body)


def extended(rid: int, name: str, *args: str) -> bytes:
    return packet(s.EXTENDED, u32(rid) + string(name) + b"".join(string(a) for a in args))
