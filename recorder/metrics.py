"""Prometheus metrics of one recorder process (its own registry, so tests can make several).

Every name and label here is a contract with dashboards and alerts (docs/recorder.md,
"Metrics"; ``deploy/grafana/tssh-recorder.json``): add, never rename.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# the ``kind`` of tsrecorder_reads_total: the read audit's events, less ``recording.``
READ_KINDS = frozenset({"list", "show", "cast", "live", "events", "verify", "ui.list",
                        "ui.play"})


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.active = Gauge(
            "tsrecorder_recordings_active", "Recordings being uploaded now",
            registry=self.registry,
        )
        self.recordings = Counter(
            "tsrecorder_recordings", "Recordings finished, by final status",
            ["status"], registry=self.registry,
        )
        self.bytes = Counter(
            "tsrecorder_ingested_bytes", "Recording bytes received from uploaders",
            registry=self.registry,
        )
        self.acks = Counter(
            "tsrecorder_acks", "Ack frames sent to v2 uploaders", registry=self.registry
        )
        self.flagged = Counter(
            "tsrecorder_flagged_recordings",
            "Recordings whose header contradicts the tailnet about the SSH client's node",
            registry=self.registry,
        )
        self.events = Counter(
            "tsrecorder_events", "Kubernetes API request events stored (/v2/event)",
            registry=self.registry,
        )
        self.errors = Counter(
            "tsrecorder_errors", "Uploads refused or failed, by reason",
            ["reason"], registry=self.registry,
        )

        self.commit_seconds = Histogram(
            "tsrecorder_commit_seconds", "Time to make one group commit batch durable",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.commit_files = Histogram(
            "tsrecorder_commit_files", "Recordings made durable per group commit batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=self.registry,
        )

        self.ack_seconds = Histogram(
            "tsrecorder_ack_latency_seconds",
            "v2 uploads: time from the arrival of the oldest byte an ack newly covers to the "
            "ack frame handed to HTTP/2",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.storage_errors = Counter(
            "tsrecorder_storage_errors",
            "Storage operations that failed, by backend and operation",
            ["backend", "operation"], registry=self.registry,
        )
        self.spool_recordings = Gauge(
            "tsrecorder_s3_spool_recordings",
            "Recordings (and events) in the S3 spool, not yet all in the bucket",
            registry=self.registry,
        )
        self.spool_bytes = Gauge(
            "tsrecorder_s3_spool_bytes",
            "Spooled bytes not yet uploaded to the bucket", registry=self.registry,
        )
        self.index_lag = Gauge(
            "tsrecorder_index_lag_seconds",
            "Age of the oldest received byte of a live recording whose text is not yet in "
            "the index (0: caught up)", registry=self.registry,
        )
        self.index_backlog = Gauge(
            "tsrecorder_index_backlog_bytes",
            "Bytes of live recordings received but not yet in the text index",
            registry=self.registry,
        )
        self.index_rebuilds = Gauge(
            "tsrecorder_index_rebuilds_pending",
            "Recordings whose text is to be indexed from storage (fell behind, or ended and "
            "queued)",
            registry=self.registry,
        )
        self.index_errors = Counter(
            "tsrecorder_index_errors", "Text index writes that failed (reindex repairs them)",
            registry=self.registry,
        )
        self.reads = Counter(
            "tsrecorder_reads",
            "Reads of recordings (as in the read audit), by kind and outcome",
            ["kind", "outcome"], registry=self.registry,
        )

    def observe_commit(self, files: int, seconds: float) -> None:
        self.commit_files.observe(files)
        self.commit_seconds.observe(seconds)

    def read(self, event: str, allowed: bool) -> None:
        """One read of the read audit (``event`` as it names it), allowed or refused."""
        kind = event.removeprefix("recording.")
        self.reads.labels(kind if kind in READ_KINDS else "other",
                          "allowed" if allowed else "refused").inc()

    def storage_error(self, backend: str, operation: str) -> None:
        self.storage_errors.labels(backend, operation).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
