"""How many uploads the recorder holds open at once, and the file descriptors they need.

Each upload holds a connection and a recording file open for as long as its session runs (an
idle SSH session sends nothing for hours), so the bound is on how many run at once, per
uploading node and in total, not on how long each one lasts (docs/recorder.md, "Limits").
"""

from __future__ import annotations

import logging
import resource
from collections import Counter
from dataclasses import dataclass, field

from recorder.errors import UploadLimitError

log = logging.getLogger("tssh.recorder")

# A busy server runs a few hundred sessions; the whole recorder, with the limit raised to a
# usual hard limit (1,048,576 or 524,288), has room for every one of them with three
# descriptors each (connection, cast, a sync in flight).
MAX_UPLOADS_PER_NODE = 256
MAX_UPLOADS = 4096


@dataclass
class UploadLimits:
    """Counts running uploads by node; ``acquire`` refuses one over either cap."""

    per_node: int = MAX_UPLOADS_PER_NODE
    total: int = MAX_UPLOADS
    _running: Counter[str] = field(default_factory=Counter)

    @property
    def running(self) -> int:
        return self._running.total()

    def acquire(self, node_id: str) -> None:
        if self._running[node_id] >= self.per_node:
            raise UploadLimitError(
                f"too many uploads from this node: {self.per_node} are running", "node_limit"
            )
        if self.running >= self.total:
            raise UploadLimitError(
                f"the recorder is at its limit of {self.total} uploads", "upload_limit"
            )
        self._running[node_id] += 1

    def release(self, node_id: str) -> None:
        self._running[node_id] -= 1
        if self._running[node_id] <= 0:
            del self._running[node_id]


def raise_fd_limit() -> int:
    """Raises the soft RLIMIT_NOFILE to the hard limit (a default soft limit of 1024, or 128
    in a container, is far below what ``MAX_UPLOADS`` needs); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as e:  # e.g. an infinite hard limit above nr_open
            log.warning("cannot raise the open file limit from %d to %d: %s", soft, hard, e)
    log.info("open file limit: %s", "unlimited" if soft == resource.RLIM_INFINITY else soft)
    return soft
