"""Prometheus metrics of one recorder process (its own registry, so tests can make several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


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

    def observe_commit(self, files: int, seconds: float) -> None:
        self.commit_files.observe(files)
        self.commit_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
