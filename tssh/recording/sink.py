"""What a session writes its recording into: one interface, two implementations. Pure.

``uploader.Recording`` encodes and uploads in the process that holds it (the recording
worker runs one per recording); ``worker_client.WorkerRecording`` hands the raw bytes to
that worker. The daemon's session side (``tssh.server.recording``) holds a
``RecordingSink`` and does not know which it has.

The session is driven by callbacks, so nothing here blocks or raises: every ``*_nowait``
returns at once, and with ``enforce`` flow control replaces waiting. A failure while the
session runs is ``failure``, set before ``on_failure`` (given at the start) is called with
it; a failure once ``close()`` began is only in the stats it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from tssh.errors import RecordingFailed
from tssh.recording.model import Attempt, RecordingStats

ABORTED = "recording aborted before the session ended"


class RecordingSink(Protocol):
    """A session's recording in progress (docs/recording.md)."""

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        """Each recorder tried at the start and why it failed (also when unrecorded)."""
        ...

    @property
    def failure(self) -> RecordingFailed | None:
        """Why the recording failed; None while it has not. The one place this is kept."""
        ...

    @property
    def writable(self) -> bool:
        """False while flow control holds the session paused (enforced, buffer full)."""
        ...

    def set_flow_control(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        """With ``enforce``: ``pause()`` when the buffer is full, ``resume()`` when it has
        drained to half. The session stops reading its process's output between the two
        (as with asyncio's ``pause_writing``), so the recorder's pace limits the session's."""
        ...

    def output_nowait(self, data: bytes) -> None:
        """PTY output, or stdout of a non-PTY session."""
        ...

    def stderr_nowait(self, data: bytes) -> None:
        """Stderr of a non-PTY session (recorded if the header says so)."""
        ...

    def input_nowait(self, data: bytes) -> None:
        """Keyboard input (recorded only if the header says input is captured)."""
        ...

    def resize_nowait(self, cols: int, rows: int) -> None: ...

    def exit_nowait(self, status: int) -> None: ...

    def marker_nowait(self, label: str) -> None:
        """An ``"m"`` event: what the session did, in words."""
        ...

    async def close(self) -> RecordingStats:
        """End the upload and wait for the recorder to confirm (bounded); the outcome is
        ``state`` in the stats."""
        ...

    def abort(self, reason: str = ABORTED) -> RecordingStats:
        """Cut the upload now (daemon shutdown): no flush, no wait, ``on_failure`` not
        called. The recorder keeps what it acknowledged, marked incomplete."""
        ...

    def stats(self) -> RecordingStats:
        """Destination, protocol, bytes written/sent/acked/buffered/dropped (``tssh
        status``)."""
        ...
