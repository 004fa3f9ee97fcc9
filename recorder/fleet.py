"""Replica liveness in a fleet: each replica heartbeats in the shared index, and finishes the
live recordings of any replica whose heartbeat is older than the timeout (docs/recorder.md,
"Fleet"), so that a replica that never comes back does not leave them ``live``."""

from __future__ import annotations

import asyncio
import logging

from recorder.service import RecorderService

log = logging.getLogger("tssh.recorder")

BEATS_PER_TIMEOUT = 3  # a replica is presumed dead after missing about this many beats


async def keep_alive(service: RecorderService, replica_timeout: float) -> None:
    """Heartbeats every ``replica_timeout / 3`` seconds and takes over the recordings of
    replicas silent for ``replica_timeout``; runs until cancelled. A failed round (database
    or storage down) is logged and the next one tried: an outage must not stop the recorder."""
    interval = replica_timeout / BEATS_PER_TIMEOUT
    while True:
        try:
            await service.index.heartbeat(service.public_key)
            taken = await service.take_over(replica_timeout)
            if taken:
                log.info("fleet: finished %d recordings of a replica that stopped", taken)
        except Exception:
            log.exception("fleet heartbeat failed; next in %g s", interval)
        await asyncio.sleep(interval)
