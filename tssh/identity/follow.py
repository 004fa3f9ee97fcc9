"""Following a file-backed identity backend (netmap, WireGuard inventory) while serving.

The daemon and the recorder both poll the file: an edit that adds a node, or changes a node's
owner or tags, applies without a restart. A broken edit is logged once (the file's signature
is recorded even when it does not parse) and the last good file stays in force.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from tssh.errors import IdentityError
from tssh.identity.base import Reloadable

log = logging.getLogger("tssh.identity")

POLL_SECONDS = 1.0


async def follow_identity_file(source: Reloadable, on_change: Callable[[], None] | None = None,
                               interval: float = POLL_SECONDS) -> None:
    """Poll until cancelled; ``on_change()`` after each good edit."""
    while True:
        await asyncio.sleep(interval)
        try:
            changed = await asyncio.to_thread(source.reload_if_changed)
        except IdentityError as e:
            log.error("identity file not reloaded; the last good one stays in force",
                      extra={"error": str(e)})
            continue
        if changed:
            log.info("identity file updated")
            if on_change is not None:
                on_change()
