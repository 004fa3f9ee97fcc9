"""Larger HTTP/2 flow-control windows for hypercorn's h2 connections.

hypercorn 0.18 keeps h2's defaults: a 64 KiB window per stream and per connection, and
16 KiB frames. An uploader
then stops after every 64 KiB until a WINDOW_UPDATE comes back through both event loops, which
caps one upload far below what the disk takes. hypercorn acknowledges DATA as it queues it for
the application (whose queue is bounded), so a larger window does not let memory grow: it only
lets bytes flow without waiting for the round trip. hypercorn has no setting for this, so the
recorder wraps its protocol's ``initiate`` (tests/recorder/test_ingest_v2.py checks the
settings a client sees).

Second, h2 logs every received frame with an eagerly built ``repr(frame)``, and hyperframe's
repr of a DATA frame copies the whole payload and hex-encodes it before keeping 20 characters:
about a third of the recorder's CPU during a bulk upload. DATA frames get a repr that names the
payload's size instead (only debug output changes).

Third, the recorder refuses an upload (unknown node, no upload place) before it reads the
body (docs/recorder.md, "Limits"), as RFC 9113 section 8.1 allows. hypercorn forgets a stream
once the application has returned, and DATA the client was still sending then raises KeyError
inside hypercorn, which ends the whole connection: the client sees a broken pipe instead of
the answer. Such late DATA is dropped here, its bytes handed back to the connection's window.
"""

from __future__ import annotations

from typing import Any

import h2.events
import h2.settings
from hypercorn.protocol.h2 import H2Protocol
from hyperframe.frame import DataFrame

STREAM_WINDOW = 4 * 1024 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
MAX_FRAME = 256 * 1024  # fewer, larger DATA frames for bulk output (h2 parses each one)
_DEFAULT_WINDOW = 65535
_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    original = H2Protocol.initiate

    async def initiate(self: Any, headers: Any = None, settings: Any = None) -> None:
        await original(self, headers, settings)
        conn = self.connection
        conn.update_settings({
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME,
        })
        conn.increment_flow_control_window(CONNECTION_WINDOW - _DEFAULT_WINDOW)
        await self._flush()

    handle_events = H2Protocol._handle_events

    async def _handle_events(self: Any, events: list[h2.events.Event]) -> None:
        run: list[h2.events.Event] = []
        for event in events:
            if isinstance(event, h2.events.DataReceived) and event.stream_id not in self.streams:
                await handle_events(self, run)  # the run may be what opens this stream
                run = []
                if event.stream_id not in self.streams:
                    self.connection.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id)
                    continue
            run.append(event)
        await handle_events(self, run)

    H2Protocol.initiate = initiate  # type: ignore[method-assign]
    H2Protocol._handle_events = _handle_events  # type: ignore[method-assign]
    DataFrame._body_repr = _data_body_repr  # type: ignore[method-assign,assignment]
    _installed = True


def _data_body_repr(self: DataFrame) -> str:
    return f"<{len(self.data)} bytes>"
