"""Prometheus metrics of one recorder process (its own registry, so tests can make several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
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
        self.errors = Counter(
            "tsrecorder_errors", "Uploads refused or failed, by reason",
            ["reason"], registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
