"""Prometheus metrics, one registry per app so tests and processes never collide."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest


class Metrics:
    """The counters optline exports at /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.inbound_total = Counter("optline_inbound_total", "Inbound texts by class", ["kind"], registry=self.registry)
        self.duplicates_total = Counter("optline_inbound_duplicates_total", "Inbound texts already seen",
                                        registry=self.registry)
        self.replies_total = Counter("optline_replies_queued_total", "Replies queued", registry=self.registry)

    def inbound(self, result: Any) -> None:
        """Count one inbound text."""
        if result.duplicate:
            self.duplicates_total.inc()
            return
        self.inbound_total.labels(kind=result.kind).inc()
        if result.outbox_id is not None:
            self.replies_total.inc()

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
