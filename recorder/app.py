"""Wires the recorder: storage, index, key, identity, access, ingest and API into one ASGI
app, and serves it with hypercorn (HTTP/1.1 and h2c on one port)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig

from recorder import h2tuning
from recorder.access import Access
from recorder.api import build_api
from recorder.groups import load_groups
from recorder.index.base import Index
from recorder.index.sqlite import SqliteIndex
from recorder.ingest import ASGIApp, IngestApp
from recorder.limits import UploadLimits, raise_fd_limit
from recorder.metrics import Metrics
from recorder.readaudit import ReadAudit
from recorder.retention import SCHEDULE, RetentionPolicy, run_retention
from recorder.seal import load_or_create_key
from recorder.service import RecorderService
from recorder.settings import RecorderSettings
from recorder.storage.base import Storage
from recorder.storage.disk import DiskStorage
from recorder.storage.metered import MeteredStorage
from recorder.tokens import TokenStore
from tssh.identity.base import Reloadable, Resolver
from tssh.identity.factory import open_resolver
from tssh.identity.follow import follow_identity_file
from tssh.listensocket import listen_device, open_listening_socket

log = logging.getLogger("tssh.recorder")


def open_storage(settings: RecorderSettings, metrics: Metrics) -> Storage:
    """The backend of ``--dst``, its failures counted in ``metrics``."""
    target = settings.s3()
    backend: Storage
    if target is None:
        backend = DiskStorage(Path(settings.dst), metrics.observe_commit)
    else:
        from recorder.storage.s3 import S3Storage

        backend = S3Storage(
            target.endpoint_url, target.bucket, settings.state_dir / "spool",
            observe_commit=metrics.observe_commit,
            observe_error=lambda operation: metrics.storage_error("s3", operation),
        )
    return MeteredStorage(backend, metrics.storage_error)


def open_index(settings: RecorderSettings) -> Index:
    url = settings.index_url()
    if url is None:
        return SqliteIndex(settings.state_dir / "index.sqlite3")
    from recorder.index.postgres import PostgresIndex

    return PostgresIndex(url)


def open_service(settings: RecorderSettings) -> RecorderService:
    metrics = Metrics()
    service = RecorderService(
        open_storage(settings, metrics),
        open_index(settings),
        load_or_create_key(settings.state_dir / "seal.key"),
        metrics,
    )
    service.trusted_keys = service.trusted_keys | frozenset(settings.trusted_keys)
    return service


@dataclass
class RecorderApp:
    service: RecorderService
    resolver: Resolver
    asgi: ASGIApp


def build_app(
    settings: RecorderSettings, service: RecorderService, resolver: Resolver
) -> RecorderApp:
    policy = settings.identity.policy
    groups = load_groups(policy) if policy is not None else {}
    tokens = TokenStore(settings.state_dir / "tokens.json")
    access = Access(resolver, settings.viewers, groups, tokens, settings.admins)
    api = build_api(service, access, local_owner=settings.local_owner, ui=settings.ui,
                    audit=ReadAudit(settings.state_dir / "read-audit.jsonl"))
    ingest = IngestApp(
        service, resolver, api, ack_interval=settings.ack_interval, idle_ack=settings.idle_ack,
        sync_pace=settings.sync_pace, header_timeout=settings.header_timeout,
        limits=UploadLimits(settings.max_uploads_per_node, settings.max_uploads),
    )
    return RecorderApp(service, resolver, ingest)


def hypercorn_config(settings: RecorderSettings) -> HypercornConfig:
    """Hypercorn's settings. With the wireguard identity backend this also opens the
    listening socket, bound to the WireGuard interface (the kernel then refuses connections
    that arrive over any other interface), and hands its descriptor to hypercorn."""
    host, port = settings.listen_address()
    config = HypercornConfig()
    config.backlog = 4096
    device = listen_device(settings.identity)
    if device is None:
        config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    else:
        sock = open_listening_socket(host, port, device=device, backlog=config.backlog)
        config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns (and closes) it from here
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    # hypercorn's idle timer runs from the connection's start until a request head is
    # complete (bytes trickling in do not reset it), and between requests: so this also
    # bounds a connection that never completes its request head. Reads have no timeout
    # (read_timeout None): a recording legitimately idles for hours (docs/recorder.md,
    # "Limits"). h11_max_incomplete_size (16 KiB) bounds the head's size.
    config.keep_alive_timeout = settings.header_timeout
    config.graceful_timeout = 5
    return config


async def serve_recorder(
    settings: RecorderSettings,
    *,
    shutdown: asyncio.Event | None = None,
) -> None:
    """Runs a recorder until ``shutdown`` is set (or SIGINT/SIGTERM when none is given).

    The demo starts it in-process with its own event; ``tssh-recorder`` runs it as ``main``.
    """
    service = open_service(settings)
    resolver = open_resolver(settings.identity)
    app = build_app(settings, service, resolver)
    stop = shutdown or asyncio.Event()
    if shutdown is None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    h2tuning.install()
    if settings.ui:
        from recorder.web import vendor_problem

        problem = vendor_problem()
        if problem is not None:  # the list works; the player page says the same
            log.warning("--ui: %s", problem)
    raise_fd_limit()  # each upload holds a connection and a file (docs/recorder.md, "Limits")
    await service.start()
    follow = asyncio.create_task(follow_identity_file(resolver)) \
        if isinstance(resolver, Reloadable) else None  # new uploaders and viewers apply
    policy = RetentionPolicy(settings.retain_days, settings.retain_bytes)
    fleet = None
    if settings.index_url() is not None:  # replicas share the index (docs/recorder.md, "Fleet")
        from recorder.fleet import keep_alive

        fleet = asyncio.create_task(keep_alive(service, settings.replica_timeout))
    retention = asyncio.create_task(
        _retain(service, policy, settings.state_dir / "retention.jsonl")) \
        if policy.active else None
    try:
        config = hypercorn_config(settings)
        device = listen_device(settings.identity)
        log.info("recorder listening on %s%s, storing to %s, index %s", settings.listen,
                 f" (interface {device} only)" if device else "",
                 service.storage.describe(), service.index.describe())
        await serve(app.asgi, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
    finally:
        for task in (follow, retention, fleet):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await service.close()
        await resolver.close()


async def _retain(service: RecorderService, policy: RetentionPolicy, trail: Path) -> None:
    """Applies ``--retain-days`` and ``--retain-bytes`` at start-up, then every hour."""
    while True:
        try:
            done = await run_retention(service, policy, trail)
            if done.deleted or done.failed:
                log.info("retention: %d recordings deleted, %d on hold kept, %d failed",
                         len(done.deleted), len(done.held), len(done.failed))
        except Exception:
            log.exception("retention run failed; next in %d s", SCHEDULE)
        await asyncio.sleep(SCHEDULE)
