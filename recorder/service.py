"""The recorder's core: starts, appends to, finishes, recovers and reindexes recordings.

It wires storage, index, seal and live followers; the HTTP layers (``ingest``, ``api``) only
translate requests into calls here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from nacl.signing import SigningKey

from recorder import seal
from recorder.errors import (
    CastError,
    InvalidRecordingIdError,
    RecordingNotFoundError,
    StorageError,
)
from recorder.index.base import Index
from recorder.indexer import TextIndexer, rebuild
from recorder.keys import check_recording_id, event_key, new_recording_id, storage_key
from recorder.live import LiveHub
from recorder.metrics import Metrics
from recorder.model import Hold, NodeInfo, RecordingMeta, Status
from recorder.seek import Checkpoint, SeekIndexer
from recorder.storage.base import RecordingWriter, Storage
from recorder.stream import CastScanner, ReceivedHeader
from tssh.identity.base import Peer

log = logging.getLogger("tssh.recorder")
# the plain name, then random suffixes: a 16th clash in a row means the store answers
# "exists" for every name (docs/recorder.md, "Storage")
_KEY_ATTEMPTS = 16


def _connection_fallback(start: float) -> str:
    return f"rec-{int(start)}"


@dataclass(frozen=True)
class Reindexed:
    indexed: int  # recordings in storage, now in the index
    dropped: int  # index rows deleted: their recordings are no longer in storage


@dataclass
class IngestRecording:
    """One recording being uploaded: appends, syncs (the ack point) and finishes it."""

    service: RecorderService
    meta: RecordingMeta
    writer: RecordingWriter
    # time.monotonic() at meta.start: the end is the start plus the time elapsed since, so
    # that a step of the wall clock mid-recording (NTP, an operator) cannot put the end
    # before the start or hours after it (docs/recorder.md, "Clock")
    begun: float = field(default_factory=time.monotonic)
    durable: int = 0
    failed: bool = False
    finished: bool = False
    seek: SeekIndexer = field(default_factory=SeekIndexer)

    async def append(self, data: bytes) -> None:
        try:
            await self.writer.write(data)
        except StorageError:
            self.failed = True
            raise
        self.seek.feed(data)
        self.service.text.feed(self.meta.id, data)

    async def sync(self) -> int:
        try:
            self.durable = await self.writer.sync()
        except StorageError:
            self.failed = True
            raise
        await self.service.live.publish(self.meta.id, self.durable)
        return self.durable

    async def finish(self, status: Status, scanner: CastScanner, error: str | None) -> None:
        """Closes the writer, seals and indexes the recording. Never raises StorageError:
        a recording that cannot be closed cleanly is finished as ``incomplete``."""
        if self.finished:
            return
        self.finished = True
        svc = self.service
        try:
            if not self.failed:
                await self.writer.close()
                self.durable = self.writer.size
        except StorageError as e:
            self.failed = True
            error = error or str(e)
        if self.failed:
            status = "incomplete"
            with contextlib.suppress(StorageError):  # releases the file even so
                await self.writer.close()
        indexed = True
        try:
            if self.failed:  # the text of what storage holds, not of what arrived
                svc.text.discard(self.meta.id)
                indexed = False
                size, digest = await svc.hash_stored(self.meta.key)
            else:
                indexed = await svc.text.finish(self.meta.id)
                size, digest = self.writer.size, self.writer.sha256()
            meta = self.meta.with_(
                status=status, end=self.meta.start + (time.monotonic() - self.begun),
                size=size, exit_status=scanner.exit_status,
                last_event_time=scanner.last_time, error=error,
                # what was written past a storage failure may not be stored
                seek=tuple(cp for cp in self.seek.checkpoints if cp.offset < size),
            )
            await svc.seal_and_store(meta, digest)
            if not indexed:  # from storage, now that it is all there
                svc.rebuild_text_later(meta)
        finally:
            svc.seeking.pop(self.meta.id, None)
            await svc.live.end(self.meta.id)
            svc.metrics.active.dec()
            svc.metrics.recordings.labels(status).inc()


class RecorderService:
    def __init__(
        self, storage: Storage, index: Index, key: SigningKey, metrics: Metrics | None = None
    ) -> None:
        self.storage = storage
        self.index = index
        self.key = key
        self.public_key = seal.public_key_text(key)
        # keys whose seals verify: this recorder's, and its peers' when they share a bucket
        self.trusted_keys = frozenset({self.public_key})
        self.metrics = metrics or Metrics()
        self.live = LiveHub()
        self.text = TextIndexer(index, on_error=self.metrics.index_errors.inc)
        # the seek index of each recording being uploaded (a live one's is not stored yet)
        self.seeking: dict[str, SeekIndexer] = {}
        # a dead fleet replica's recordings claimed here and not finished yet (take_over)
        self.orphans: dict[str, RecordingMeta] = {}

    async def start(self) -> None:
        await self.storage.start()
        await self.index.open()
        # alive in a fleet's index before recovering: no other replica claims them meanwhile
        await self.index.heartbeat(self.public_key)
        await self.recover()

    async def close(self) -> None:
        await self.text.close()
        await self.storage.close()
        await self.index.close()

    async def begin(
        self, peer: Peer, address: str, header: ReceivedHeader, warnings: tuple[str, ...] = ()
    ) -> IngestRecording:
        start, begun = time.time(), time.monotonic()
        rid = new_recording_id(start)
        conn = header.connection_id or _connection_fallback(start)
        writer: RecordingWriter | None = None
        key = ""
        for attempt in range(_KEY_ATTEMPTS):
            key = storage_key(peer.id, start, conn, attempt)
            try:
                writer = await self.storage.create(key)
                break
            except StorageError:
                if await self.storage.size(key) is None:
                    raise
        if writer is None:
            raise StorageError(f"too many recordings named {key}")
        node = NodeInfo(
            id=peer.id, name=peer.name, user=peer.user, user_id=peer.user_id,
            tags=peer.tags, address=address,
        )
        meta = RecordingMeta(
            id=rid, key=key, node=node, start=start, header=header.fields,
            recorder=self.public_key, warnings=warnings,
        )
        if warnings:
            self.metrics.flagged.inc()
            log.warning("recording %s from %s flagged: %s", rid, peer.name, "; ".join(warnings))
        try:
            await self.storage.put_meta(key, _document(meta))
            await self.index.put(meta)
        except BaseException:
            with contextlib.suppress(StorageError):
                await writer.close()
            raise
        self.live.begin(rid)
        self.text.begin(rid)
        self.metrics.active.inc()
        log.info("recording %s started: node %s key %s", rid, peer.name, key)
        recording = IngestRecording(self, meta, writer, begun)
        self.seeking[rid] = recording.seek
        return recording

    async def sample_metrics(self) -> None:
        """Sets the gauges that are sampled rather than counted (spool depth, index lag),
        just before ``/metrics`` renders them."""
        depth = await self.storage.spool_depth()
        m = self.metrics
        m.spool_recordings.set(depth.recordings)
        m.spool_bytes.set(depth.bytes)
        m.index_lag.set(self.text.lag(time.monotonic()))
        m.index_backlog.set(self.text.backlog_bytes)
        m.index_rebuilds.set(self.text.rebuilds_pending())

    def checkpoints(self, meta: RecordingMeta) -> list[Checkpoint]:
        """The seek index: stored with the metadata, or being built for a live one."""
        building = self.seeking.get(meta.id)
        return list(building.checkpoints) if building is not None else list(meta.seek)

    async def store_event(self, peer: Peer, document: bytes) -> str:
        """Stores one ``/v2/event`` document from ``peer`` as its own object; its key."""
        key = event_key(peer.id, time.time())
        writer = await self.storage.create(key)
        try:
            await writer.write(document)
        finally:
            await writer.close()
        await self.storage.finish(key)
        self.metrics.events.inc()
        return key

    async def seal_and_store(self, meta: RecordingMeta, digest: str) -> RecordingMeta:
        sealed = meta.with_(seal=seal.seal(meta, digest, self.key))
        try:
            await self.storage.put_meta(meta.key, _document(sealed))
        except StorageError as e:
            log.error("recording %s: cannot store its metadata: %s", meta.id, e)
        await self.index.put(sealed)
        try:
            await self.storage.finish(meta.key)
        except StorageError as e:
            log.error("recording %s: cannot hand it to storage: %s", meta.id, e)
        log.info("recording %s %s: %d bytes", meta.id, meta.status, meta.size)
        return sealed

    async def hash_stored(
        self, key: str, *, observe: Callable[[bytes], None] | None = None,
    ) -> tuple[int, str]:
        """Size and SHA-256 of a stored cast; ``observe`` sees each chunk."""
        hasher = hashlib.sha256()
        size = 0
        if await self.storage.size(key) is not None:
            async for chunk in self.storage.read(key):
                hasher.update(chunk)
                size += len(chunk)
                if observe is not None:
                    observe(chunk)
        return size, hasher.hexdigest()

    def rebuild_text_later(self, meta: RecordingMeta) -> None:
        """Queues the rebuild of a recording's text from storage (it costs far more than
        storing: not on the path of an upload's final ack or of the recorder's start)."""
        key = meta.key

        def read() -> AsyncIterator[bytes]:
            return self.storage.read(key)

        self.text.rebuild_later(meta.id, read)

    async def recover(self) -> int:
        """Finishes every recording this recorder left open (crash, kill): kept, sealed and
        marked ``incomplete``."""
        count = 0
        for meta in await self.index.open_recordings(self.public_key):
            if await self.storage.reopen(meta.key) is None:
                # not in this recorder's own store: one it claimed from a dead replica
                await self.storage.adopt(meta.key)
            await self._finish_interrupted(meta, "the recorder stopped during the upload")
            count += 1
        for key in await self.storage.unfinished():
            taken = await self._taken_over(key)
            if taken is not None:  # it holds more than the replica that took it over had
                log.info("recording %s was finished by another replica while this one was "
                         "down; finishing it again with every byte stored here", taken.id)
                await self._finish_interrupted(taken, "the recorder stopped during the upload")
                count += 1
        return count

    async def _taken_over(self, key: str) -> RecordingMeta | None:
        """The metadata of an unfinished recording this recorder holds which another
        replica has finished meanwhile (a takeover), else None."""
        doc = await self.storage.get_meta(key)
        if doc is None:
            return None
        try:
            meta = RecordingMeta.from_json(json.loads(doc))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        row = await self.index.get(meta.id)
        if row is None or row.status == "live" or meta.status != "live":
            return None
        return meta

    async def take_over(self, stale_after: float) -> int:
        """Finishes the recordings left ``live`` by fleet replicas whose heartbeat is older
        than ``stale_after`` seconds (docs/recorder.md, "Fleet"): what shared storage holds
        of each, sealed by this recorder and marked ``incomplete``. One that cannot be
        finished now (storage down) stays claimed here and is tried again next time."""
        for meta in await self.index.claim_orphans(self.public_key, stale_after):
            log.warning("recording %s: its replica stopped heartbeating; finishing it here",
                        meta.id)
            self.orphans[meta.id] = meta
        count = 0
        for meta in list(self.orphans.values()):
            try:
                await self.storage.adopt(meta.key)
                await self._finish_interrupted(
                    meta, "the replica receiving it stopped during the upload; finished by "
                          "another replica from what shared storage held")
            except StorageError as e:
                log.error("recording %s: cannot finish it yet: %s", meta.id, e)
                continue
            del self.orphans[meta.id]
            count += 1
        return count

    async def _finish_interrupted(self, meta: RecordingMeta, error: str) -> None:
        """Seals an interrupted recording as what storage holds: size, hash, last event time,
        exit status and seek index read from the stored bytes."""
        scanner: CastScanner | None = CastScanner(line_limit=1 << 62)
        seek = SeekIndexer()  # the one built during the upload was lost with its process

        def observe(chunk: bytes) -> None:
            nonlocal scanner
            seek.feed(chunk)
            if scanner is not None:
                try:
                    scanner.feed(chunk)
                except CastError:  # a torn recording still gets sealed as it is
                    scanner = None

        size, digest = await self.hash_stored(meta.key, observe=observe)
        done = meta.with_(
            # never before the start, whatever the clock did across the restart
            status="incomplete", end=max(time.time(), meta.start), size=size,
            exit_status=scanner.exit_status if scanner else None,
            last_event_time=scanner.last_time if scanner else None,
            error=error, seek=tuple(seek.checkpoints),
        )
        await self.seal_and_store(done, digest)
        # the text indexed before the crash may lack what was stored last
        self.rebuild_text_later(done)

    async def reindex(self) -> Reindexed:
        """Makes the index hold exactly the recordings in storage: a row (with its legal hold),
        and the output text read from its cast, for every readable metadata document whose
        cast exists; every other row is deleted (its recording was removed from storage, or
        its files are unreadable)."""
        found: set[str] = set()
        async for key in self.storage.keys():
            doc = await self.storage.get_meta(key)
            if doc is None:
                continue
            try:
                meta = RecordingMeta.from_json(json.loads(doc))
                check_recording_id(meta.id)
            except (ValueError, KeyError, TypeError, AttributeError, InvalidRecordingIdError) as e:
                log.warning("skipping %s: unreadable metadata: %s", key, e)
                continue
            if meta.key != key:
                log.warning("skipping %s: its metadata names key %s", key, meta.key)
                continue
            if await self.storage.size(key) is None:
                log.warning("skipping %s: its metadata is there but its cast is gone", key)
                continue
            await self.index.put(meta)
            hold = await self.storage.get_hold(key)
            await self.index.set_hold(meta.id, None if hold is None else Hold.parse(hold))
            await rebuild(self.index, meta.id, self.storage.read(key))
            found.add(meta.id)
        dropped = await self.index.retain(found)
        await self.index.compact()
        if dropped:
            log.info("reindex: dropped %d index rows of recordings no longer in storage",
                     dropped)
        return Reindexed(len(found), dropped)

    async def get(self, recording_id: str) -> RecordingMeta:
        check_recording_id(recording_id)
        meta = await self.index.get(recording_id)
        if meta is None:
            raise RecordingNotFoundError(f"no recording {recording_id}")
        return self.with_live_size(meta)

    def with_live_size(self, meta: RecordingMeta) -> RecordingMeta:
        size = self.live.size(meta.id)
        return meta if size is None else meta.with_(size=size)

    async def verify(self, recording_id: str) -> seal.Verification:
        meta = await self.get(recording_id)
        doc = await self.storage.get_meta(meta.key)
        if doc is None:
            return seal.Verification(False, ("metadata document missing",), "", 0, None, False)
        try:
            stored = RecordingMeta.from_json(json.loads(doc))
        except (ValueError, KeyError, TypeError):
            return seal.Verification(
                False, ("metadata document is unreadable",), "", 0, None, False
            )
        size, digest = await self.hash_stored(meta.key)
        result = seal.verify(stored, digest, size, self.trusted_keys)
        if stored.id != meta.id:
            return seal.Verification(
                False, (*result.problems, "metadata document belongs to another recording"),
                digest, size, result.signed_by, result.trusted,
            )
        return result


def _document(meta: RecordingMeta) -> bytes:
    return json.dumps(meta.document(), ensure_ascii=False, indent=1).encode() + b"\n"
