"""A cheap fingerprint of a file the daemon follows (policy, netmap), so that polling it
costs one ``stat`` and the file is re-read only when it may have changed."""

from __future__ import annotations

import os
from pathlib import Path

FileSignature = tuple[int, int, int, int, int]


def file_signature(path: Path) -> FileSignature | None:
    """Changes whenever the file is rewritten in place (size, mtime, ctime) or replaced by a
    rename (device, inode); None while it cannot be stat'ed (a reader reports why)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
