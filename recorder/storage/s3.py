"""Recordings in S3, behind a local spool in the state dir.

Every byte is first appended to ``<state>/spool/KEY.cast`` and fsynced before it is acked (the
same promise as the disk backend); a background uploader then moves it to the bucket: full
parts (``part_size``, at least 5 MiB) go up as a multipart upload while the recording is live,
the rest when it is closed, then the ``.json`` document. Upload progress (upload id, part
ETags) is kept in ``KEY.state`` beside the spool file, so an S3 outage or a recorder restart
resumes where it stopped; the spool files are deleted only once the object and its metadata
are in the bucket. boto3 is blocking, so every call runs in a small thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from recorder.errors import StorageError
from recorder.keys import check_key
from recorder.storage.base import RecordingWriter, SpoolDepth, Storage
from recorder.storage.commit import CommitObserver, fsync_dir
from recorder.storage.disk import DiskStorage

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger("tssh.recorder.s3")

MIN_PART = 5 * 1024 * 1024
PART_SIZE = 8 * 1024 * 1024
READ_CHUNK = 256 * 1024
RETRY_FIRST = 0.5
RETRY_MAX = 5.0


@dataclass
class UploadState:
    """What has reached the bucket for one spooled recording (persisted as ``KEY.state``)."""

    upload_id: str | None = None
    parts: list[dict[str, Any]] = field(default_factory=list)  # PartNumber, ETag, Size

    @property
    def uploaded(self) -> int:
        return sum(int(p["Size"]) for p in self.parts)


def _is_missing(e: ClientError) -> bool:
    code = str(e.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound", "NoSuchUpload")


class S3Storage(Storage):
    kind = "s3"

    def __init__(
        self, endpoint_url: str, bucket: str, spool: Path, *, part_size: int = PART_SIZE,
        observe_commit: CommitObserver | None = None,
        observe_error: Callable[[str], None] | None = None,
    ) -> None:
        """``observe_error`` is told ``"upload"`` each time the background upload of a
        spooled recording fails (it is retried): callers never see those errors."""
        if part_size < MIN_PART:
            raise StorageError(f"S3 part size must be at least {MIN_PART} bytes")
        self.endpoint_url = endpoint_url
        self.bucket = bucket
        self.part_size = part_size
        self.spool = DiskStorage(spool, observe_commit)
        self._observe_error = observe_error
        self._client: S3Client = boto3.client(
            "s3", endpoint_url=endpoint_url,
            config=BotoConfig(
                connect_timeout=3, read_timeout=30, retries={"max_attempts": 2, "mode": "standard"}
            ),
        )
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="s3")
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._workers: list[asyncio.Task[None]] = []
        self._retry: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def describe(self) -> str:
        return f"s3:{self.endpoint_url}/{self.bucket} (spool {self.spool.root})"

    async def _s3(self, fn: Any, /, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(**kwargs))

    async def _s3_unless_missing(self, fn: Any, /, **kwargs: Any) -> Any:
        """``_s3``, but None when the bucket has no such object or upload (the one place
        S3's ways of saying "missing" are read); other errors propagate."""
        try:
            return await self._s3(fn, **kwargs)
        except ClientError as e:
            if _is_missing(e):
                return None
            raise

    # -- spool bookkeeping ------------------------------------------------------------------

    def _state_path(self, key: str) -> Path:
        return self.spool.root / f"{check_key(key)}.state"

    def _load_state(self, key: str) -> UploadState:
        try:
            doc = json.loads(self._state_path(key).read_text())
        except FileNotFoundError:
            return UploadState()
        except (OSError, ValueError) as e:
            raise StorageError(f"unreadable upload state for {key}: {e}") from e
        return UploadState(upload_id=doc.get("uploadId"), parts=list(doc.get("parts", [])))

    def _save_state(self, key: str, state: UploadState) -> None:
        path = self._state_path(key)
        tmp = path.with_name(path.name + ".tmp")
        doc = {"uploadId": state.upload_id, "parts": state.parts}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w") as f:
                json.dump(doc, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            fsync_dir(path.parent)
        except OSError as e:
            raise StorageError(f"cannot write upload state for {key}: {e}") from e

    def _marker(self, key: str, name: str) -> Path:
        """``KEY.closed`` (no more bytes: finish the object) and ``KEY.metapending`` (the
        spooled .json is newer than the bucket's): written by the ingest side, read by the
        uploader, so neither waits for the other."""
        return self.spool.root / f"{check_key(key)}.{name}"

    def _set_marker(self, key: str, name: str) -> None:
        path = self._marker(key, name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            os.fsync(fd)
            os.close(fd)
            fsync_dir(path.parent)
        except OSError as e:
            raise StorageError(f"cannot write {path}: {e}") from e

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def _exists(self, path: Path) -> bool:
        return await asyncio.to_thread(path.exists)

    async def _spooled(self, key: str) -> bool:
        return await self._exists(self.spool.root / f"{check_key(key)}.cast") \
            or await self._exists(self._state_path(key))

    def _scan_spool(self) -> SpoolDepth:
        recordings = waiting = 0
        for state in self.spool.root.glob("*/*.state"):
            key = f"{state.parent.name}/{state.name[: -len('.state')]}"
            try:
                size = (self.spool.root / f"{check_key(key)}.cast").stat().st_size
                uploaded = self._load_state(key).uploaded
            except (OSError, StorageError):  # it left the spool meanwhile
                continue
            recordings += 1
            waiting += max(0, size - uploaded)
        return SpoolDepth(recordings, waiting)

    # -- Storage interface ------------------------------------------------------------------

    async def spool_depth(self) -> SpoolDepth:
        """Spooled recordings not yet all in the bucket, and their bytes not yet uploaded
        (a live recording's full parts go up while it streams)."""
        return await asyncio.to_thread(self._scan_spool)

    async def start(self) -> None:
        await self.spool.start()
        self._workers = [asyncio.create_task(self._work_loop()) for _ in range(2)]
        pending = await asyncio.to_thread(
            lambda: sorted(p for p in self.spool.root.glob("*/*.state"))
        )
        for path in pending:
            self.kick(f"{path.parent.name}/{path.name[: -len('.state')]}")

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def create(self, key: str) -> RecordingWriter:
        part = self.part_size
        kicked = 0

        def on_sync(durable: int) -> None:  # a full part more is durable: upload it
            nonlocal kicked
            if durable - kicked >= part:
                kicked += part * ((durable - kicked) // part)
                self.kick(key)

        writer = await self.spool.create_writer(key, on_sync)
        await asyncio.to_thread(self._save_state, key, UploadState())
        return writer

    async def reopen(self, key: str) -> int | None:
        return await self.spool.size(key)

    async def finish(self, key: str) -> None:
        if not self._spooled(key):  # adopted from a dead replica: already in the bucket
            return
        await asyncio.to_thread(self._set_marker, key, "closed")
        self.kick(key)

    async def unfinished(self) -> list[str]:
        def scan() -> list[str]:
            found = []
            for path in sorted(self.spool.root.glob("*/*.state")):
                key = f"{path.parent.name}/{path.name[: -len('.state')]}"
                if not self._marker(key, "closed").exists():
                    found.append(key)
            return found

        return await asyncio.to_thread(scan)

    async def adopt(self, key: str) -> int | None:
        """The dead replica's spool is lost with it; the bucket holds its metadata document
        and the parts of the cast it had uploaded (whole ``part_size`` pieces, as a multipart
        upload). Completes that upload into the object, so those bytes are readable; with
        no part uploaded the cast is stored empty (the recording is then its metadata)."""
        name = f"{check_key(key)}.cast"
        try:
            existing = await self.size_in_bucket(name)
            if existing is not None:
                return existing
            listed = await self._s3(self._client.list_multipart_uploads, Bucket=self.bucket,
                                    Prefix=name)
            uploads = [u for u in listed.get("Uploads", []) if u.get("Key") == name]
            best: tuple[str, list[dict[str, Any]]] | None = None
            for upload in uploads:
                got = await self._s3(self._client.list_parts, Bucket=self.bucket, Key=name,
                                     UploadId=upload["UploadId"])
                found = sorted(got.get("Parts", []), key=lambda p: int(p["PartNumber"]))
                # the dead replica uploaded parts 1, 2, ... in order: the gapless start
                found = [p for i, p in enumerate(found, 1) if int(p["PartNumber"]) == i]
                if best is None or len(found) > len(best[1]):
                    best = (str(upload["UploadId"]), found)
            if best is not None and best[1]:
                await self._s3(
                    self._client.complete_multipart_upload, Bucket=self.bucket, Key=name,
                    UploadId=best[0], MultipartUpload={"Parts": [
                        {"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in best[1]]})
            else:
                await self._s3(self._client.put_object, Bucket=self.bucket, Key=name, Body=b"")
            return await self.size_in_bucket(name)
        except (BotoCoreError, ClientError) as e:
            raise StorageError(f"cannot adopt {name} in S3: {e}") from e

    async def put_meta(self, key: str, document: bytes) -> None:
        await self.spool.put_meta(key, document)
        if await self._exists(self._state_path(key)):
            await asyncio.to_thread(self._set_marker, key, "metapending")
        else:  # the recording already left the spool: write through
            try:
                await self._s3(
                    self._client.put_object, Bucket=self.bucket, Key=f"{key}.json", Body=document
                )
            except (BotoCoreError, ClientError) as e:
                raise StorageError(f"cannot store {key}.json in S3: {e}") from e
            await asyncio.to_thread(self._remove_spool, key)
            return
        self.kick(key)

    async def get_meta(self, key: str) -> bytes | None:
        local = await self.spool.get_meta(key)
        if local is not None:
            return local
        return await self._get_object(f"{check_key(key)}.json")

    async def _get_object(self, name: str, byte_range: str | None = None) -> bytes | None:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": name}
        if byte_range:
            kwargs["Range"] = byte_range
        try:
            response = await self._s3_unless_missing(self._client.get_object, **kwargs)
            if response is None:
                return None
            body: bytes = await asyncio.get_running_loop().run_in_executor(
                self._pool, response["Body"].read
            )
            return body
        except (BotoCoreError, ClientError) as e:
            raise StorageError(f"cannot read {name} from S3: {e}") from e

    async def delete(self, key: str) -> None:
        if await self._spooled(key):
            raise StorageError(f"{key} is still being uploaded to S3: not deleted")
        for name in (f"{check_key(key)}.cast", f"{key}.json"):
            try:
                await self._s3(self._client.delete_object, Bucket=self.bucket, Key=name)
            except (BotoCoreError, ClientError) as e:
                raise StorageError(f"cannot delete {name} from S3: {e}") from e

    async def set_hold(self, key: str, document: bytes | None) -> None:
        name = f"{check_key(key)}.hold"
        try:
            if document is None:
                await self._s3(self._client.delete_object, Bucket=self.bucket, Key=name)
            else:
                await self._s3(self._client.put_object, Bucket=self.bucket, Key=name,
                               Body=document)
        except (BotoCoreError, ClientError) as e:
            raise StorageError(f"cannot write {name} in S3: {e}") from e

    async def get_hold(self, key: str) -> bytes | None:
        return await self._get_object(f"{check_key(key)}.hold")

    async def size(self, key: str) -> int | None:
        local = await self.spool.size(key)
        if local is not None:
            return local
        try:
            return await self.size_in_bucket(f"{check_key(key)}.cast")
        except (BotoCoreError, ClientError) as e:
            raise StorageError(f"cannot reach S3 for {key}: {e}") from e

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        if await self.spool.size(key) is not None:
            with contextlib.suppress(StorageError):
                async for chunk in self.spool.read(key, start, end):
                    yield chunk
                return
        total = await self.size(key)
        if total is None:
            raise StorageError(f"recording {key} is missing from S3")
        stop = total if end is None else min(end, total)
        pos = start
        while pos < stop:
            upto = min(stop, pos + 4 * READ_CHUNK)
            data = await self._get_object(f"{key}.cast", f"bytes={pos}-{upto - 1}")
            if not data:
                return
            pos += len(data)
            yield data

    async def keys(self) -> AsyncIterator[str]:
        seen: set[str] = set()
        async for key in self.spool.keys():
            seen.add(key)
            yield key
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket}
            if token:
                kwargs["ContinuationToken"] = token
            try:
                page = await self._s3(self._client.list_objects_v2, **kwargs)
            except (BotoCoreError, ClientError) as e:
                raise StorageError(f"cannot list bucket {self.bucket}: {e}") from e
            for obj in page.get("Contents", []):
                name = str(obj["Key"])
                if name.endswith(".json"):
                    key = name[: -len(".json")]
                    if key not in seen:
                        with contextlib.suppress(StorageError):
                            yield check_key(key)
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")

    # -- background upload ------------------------------------------------------------------

    def kick(self, key: str) -> None:
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def _requeue_later(self, key: str) -> None:
        delay = min(RETRY_MAX, self._retry.get(key, RETRY_FIRST / 2) * 2)
        self._retry[key] = delay
        asyncio.get_running_loop().call_later(delay, self.kick, key)

    async def _work_loop(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            try:
                async with self._lock(key):
                    await self._advance(key)
                self._retry.pop(key, None)
            except (BotoCoreError, ClientError, StorageError, OSError) as e:
                log.warning("S3 upload of %s paused, will retry: %s", key, e)
                self._upload_failed()
                self._requeue_later(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("S3 upload of %s failed unexpectedly, will retry", key)
                self._upload_failed()
                self._requeue_later(key)

    def _upload_failed(self) -> None:
        if self._observe_error is not None:
            self._observe_error("upload")

    async def _advance(self, key: str) -> None:
        """Moves one spooled recording as far towards the bucket as it can go."""
        if not await self._exists(self._state_path(key)):
            return
        state = await asyncio.to_thread(self._load_state, key)
        closed = await self._exists(self._marker(key, "closed"))
        size = await self.spool.size(key) or 0
        name = f"{key}.cast"
        while size - state.uploaded >= self.part_size or (
            closed and state.upload_id is not None and size > state.uploaded
        ):
            if state.upload_id is None:
                created = await self._s3(
                    self._client.create_multipart_upload, Bucket=self.bucket, Key=name
                )
                state.upload_id = str(created["UploadId"])
                await asyncio.to_thread(self._save_state, key, state)
            begin = state.uploaded
            length = min(self.part_size, size - begin)
            data = await asyncio.to_thread(self._read_spool, key, begin, length)
            number = len(state.parts) + 1
            try:
                part = await self._s3(
                    self._client.upload_part, Bucket=self.bucket, Key=name,
                    UploadId=state.upload_id, PartNumber=number, Body=data,
                )
            except ClientError as e:
                # The upload expired, was aborted, or the store lost it (some S3 servers
                # answer a part for an unknown upload with a 500, not NoSuchUpload): start
                # it again.
                if _is_missing(e) or not await self._upload_exists(name, state.upload_id):
                    state.upload_id, state.parts = None, []
                    await asyncio.to_thread(self._save_state, key, state)
                    continue
                raise
            state.parts.append({"PartNumber": number, "ETag": part["ETag"], "Size": len(data)})
            await asyncio.to_thread(self._save_state, key, state)
        if not closed:
            await self._upload_meta(key)
            return
        if state.upload_id is None:
            data = await asyncio.to_thread(self._read_spool, key, 0, size)
            await self._s3(self._client.put_object, Bucket=self.bucket, Key=name, Body=data)
        else:
            parts = [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in state.parts]
            try:
                await self._s3(
                    self._client.complete_multipart_upload, Bucket=self.bucket, Key=name,
                    UploadId=state.upload_id, MultipartUpload={"Parts": parts},
                )
            except ClientError as e:
                # Completed already (a retry after a lost answer) if the object has our size.
                head = await self.size_in_bucket(name)
                if head != size:
                    if _is_missing(e):
                        state.upload_id, state.parts = None, []
                        await asyncio.to_thread(self._save_state, key, state)
                    raise
        await self._upload_meta(key)
        await asyncio.to_thread(self._remove_spool, key)
        log.info("recording %s is in S3 (%d bytes)", key, size)

    async def _upload_exists(self, name: str, upload_id: str) -> bool:
        """Whether the store still knows a multipart upload (other errors propagate)."""
        parts = await self._s3_unless_missing(self._client.list_parts, Bucket=self.bucket,
                                              Key=name, UploadId=upload_id, MaxParts=1)
        return parts is not None

    async def size_in_bucket(self, name: str) -> int | None:
        """The object's size, None if the bucket has none (other errors propagate)."""
        head = await self._s3_unless_missing(self._client.head_object, Bucket=self.bucket,
                                             Key=name)
        return None if head is None else int(head["ContentLength"])

    async def _upload_meta(self, key: str) -> None:
        marker = self._marker(key, "metapending")
        if not await self._exists(marker):
            return
        doc = await self.spool.get_meta(key)
        if doc is not None:
            await self._s3(
                self._client.put_object, Bucket=self.bucket, Key=f"{key}.json", Body=doc
            )
        if await self.spool.get_meta(key) == doc:  # else a newer one came: go again
            await asyncio.to_thread(marker.unlink, missing_ok=True)
        else:
            self.kick(key)

    def _read_spool(self, key: str, start: int, length: int) -> bytes:
        with open(self.spool.root / f"{key}.cast", "rb") as f:
            f.seek(start)
            return f.read(length)

    def _remove_spool(self, key: str) -> None:
        for suffix in (".cast", ".json", ".metapending", ".closed", ".state"):
            with contextlib.suppress(FileNotFoundError):
                (self.spool.root / f"{key}{suffix}").unlink()
        with contextlib.suppress(OSError):
            (self.spool.root / key).parent.rmdir()
        self._locks.pop(key, None)
