"""Reading ``audit.jsonl`` and its rotated files back, for ``tssh audit tail``.

The files are read oldest first (``audit.jsonl.N`` ... ``audit.jsonl.1``, ``audit.jsonl``).
Following waits for new lines in ``audit.jsonl`` and, when the daemon rotates it (the path
names a new file), finishes the old one before it goes on with the new one. A line that is
not a JSON object (one cut short by a crash) is skipped.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tssh.audit.sink import audit_files, rotated_name

POLL = 0.2  # seconds between looks at a followed file


def parse_line(line: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def read_entries(path: Path) -> Iterator[dict[str, Any]]:
    """Every entry of the audit files at ``path``, oldest first."""
    for file in audit_files(path):
        try:
            handle = file.open("rb")
        except FileNotFoundError:  # rotated away meanwhile
            continue
        with handle:
            for line in handle:
                entry = parse_line(line)
                if entry is not None:
                    yield entry


def _rotated_since(path: Path, old: tuple[int, int]) -> Iterator[dict[str, Any]]:
    """Entries of the rotated files newer than the file ``old`` (inode, device) was."""
    newer: list[Path] = []
    for index in range(1, 100):
        candidate = rotated_name(path, index)
        try:
            st = candidate.stat()
        except FileNotFoundError:
            break
        if (st.st_ino, st.st_dev) == old:
            break
        newer.append(candidate)
    for file in reversed(newer):
        try:
            with file.open("rb") as handle:
                for line in handle:
                    entry = parse_line(line)
                    if entry is not None:
                        yield entry
        except FileNotFoundError:
            continue


def position(path: Path) -> tuple[int, int, int] | None:
    """Where ``path`` ends now (inode, device, size): ``follow`` goes on from there."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_dev, st.st_size


def follow(path: Path, start: tuple[int, int, int] | None = None,
           poll: float = POLL) -> Iterator[dict[str, Any]]:
    """Entries appended to ``path`` after ``start`` (a ``position``; None: from the start
    of a file yet to appear); runs until the caller stops. Were the file rotated since
    ``start``, the rotated files newer than it come first."""
    handle = None
    partial = b""
    try:
        while handle is None:
            try:
                handle = path.open("rb")
            except FileNotFoundError:
                time.sleep(poll)
                continue
            if start is not None:
                opened = os.fstat(handle.fileno())
                if (opened.st_ino, opened.st_dev) == start[:2]:
                    handle.seek(start[2])
                else:
                    handle.close()
                    handle = None
                    yield from _rotated_since(path, start[:2])
                    start = None
        while True:
            chunk = handle.read(1 << 16)
            if chunk:
                partial += chunk
                *lines, partial = partial.split(b"\n")
                for line in lines:
                    entry = parse_line(line)
                    if entry is not None:
                        yield entry
                continue
            try:
                current = path.stat()
            except FileNotFoundError:
                time.sleep(poll)
                continue
            opened = os.fstat(handle.fileno())
            if (current.st_ino, current.st_dev) != (opened.st_ino, opened.st_dev):
                # Rotated (the old file is read to its end above): the files rotated after
                # it, newest last, then the new one from its start.
                handle.close()
                handle = None
                yield from _rotated_since(path, (opened.st_ino, opened.st_dev))
                handle = path.open("rb")
                partial = b""
                continue
            if current.st_size < handle.tell():  # truncated
                handle.seek(0)
                partial = b""
                continue
            time.sleep(poll)
    finally:
        if handle is not None:
            handle.close()
