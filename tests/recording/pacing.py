"""Writing to a recording as the daemon's sessions do: no more while flow control says pause."""

from __future__ import annotations

import asyncio

from tssh.recording.uploader import Recording


class Pacer:
    """The session's side of ``Recording.set_flow_control``: ``await pacer.ready()`` before
    each write waits while the recording holds the session paused."""

    def __init__(self, rec: Recording) -> None:
        self.resumed = asyncio.Event()
        self.resumed.set()
        self.pauses = 0
        rec.set_flow_control(self._pause, self.resumed.set)

    def _pause(self) -> None:
        self.pauses += 1
        self.resumed.clear()

    async def ready(self) -> None:
        await self.resumed.wait()
        await asyncio.sleep(0)  # let the upload run between writes, as a real session does
