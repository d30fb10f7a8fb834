"""Prometheus metrics of the daemon, in a registry of its own (tests can make several engines)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import (
    ProcessCollector as _ProcessCollector,
)
from prometheus_client.metrics_core import Metric

__all__ = ["API_STATES", "Metrics"]

_PREFIX = "docutray_watch"

# What the API looks like from here: `paused` while a 429's Retry-After holds every request,
# `key_refused` after a 401/403 until a request succeeds again.
API_STATES = ("ok", "paused", "key_refused", "unreachable")


class Metrics:
    """Every metric the engine and the daemon update."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, node: str | None = None
    ) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        _ProcessCollector(registry=r)
        self.documents = Counter(
            f"{_PREFIX}_documents",
            "Documents finished, by pipeline and outcome.",
            ["pipeline", "outcome"],
            registry=r,
        )
        self.identified = Counter(
            f"{_PREFIX}_documents_identified",
            "Documents whose type was identified, by pipeline and document type code.",
            ["pipeline", "document_type"],
            registry=r,
        )
        self.in_flight = Gauge(
            f"{_PREFIX}_executions_in_flight", "Executions submitted and not finished.", registry=r
        )
        self.queue_depth = Gauge(
            f"{_PREFIX}_queue_depth",
            "Documents waiting for submission, by pipeline.",
            ["pipeline"],
            registry=r,
        )
        self.api_latency = Histogram(
            f"{_PREFIX}_api_request_duration_seconds",
            "DocuTray API request latency.",
            ["method", "status"],
            registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.api_retries = Counter(
            f"{_PREFIX}_api_retries",
            "API requests retried, by method and reason.",
            ["method", "reason"],
            registry=r,
        )
        self.rate_limited = Counter(
            f"{_PREFIX}_api_rate_limited", "429 answers from the API.", registry=r
        )
        self.request_rate = Gauge(
            f"{_PREFIX}_api_request_rate",
            "Requests per second the shared rate limiter allows now (learned under "
            "requests_per_second: auto).",
            registry=r,
        )
        self.status_requests = Counter(
            f"{_PREFIX}_status_requests", "Status reads sent to the API.", registry=r
        )
        self.submissions = Counter(
            f"{_PREFIX}_submissions",
            "Documents submitted (POSTs accepted), by pipeline.",
            ["pipeline"],
            registry=r,
        )
        self.deliveries = Counter(
            f"{_PREFIX}_sink_deliveries",
            "Results delivered, by pipeline and sink.",
            ["pipeline", "sink"],
            registry=r,
        )
        self.delivery_failures = Counter(
            f"{_PREFIX}_sink_delivery_failures",
            "Failed delivery attempts, by pipeline and sink.",
            ["pipeline", "sink"],
            registry=r,
        )
        self.last_delivery = Gauge(
            f"{_PREFIX}_last_successful_delivery_timestamp_seconds",
            "Unix time of the last successful delivery, by pipeline and sink.",
            ["pipeline", "sink"],
            registry=r,
        )
        self.oldest_pending = Gauge(
            f"{_PREFIX}_oldest_pending_document_age_seconds",
            "Age of the oldest unfinished document, by pipeline (0 when none).",
            ["pipeline"],
            registry=r,
        )
        self.journal_writable = Gauge(
            f"{_PREFIX}_journal_writable",
            "1 while the journal takes writes, 0 after a refused write (disk full, I/O error).",
            registry=r,
        )
        self.journal_writable.set(1)
        self.api_state = Gauge(
            f"{_PREFIX}_api_state",
            "1 for the API's current state (ok, paused by a 429, key_refused, unreachable), "
            "0 for the others.",
            ["state"],
            registry=r,
        )
        self.set_api_state("ok")
        # Cluster mode: which node this is, as a series of its own, and a `node` label added to
        # every series at render time (`render`), so sums over a cluster can be split by node.
        self.node: str | None = None
        self.node_info = Gauge(
            f"{_PREFIX}_node_info",
            "1, labelled with this daemon's cluster node name (cluster mode only).",
            ["node"],
            registry=r,
        )
        if node is not None:
            self.set_node(node)

    def set_node(self, name: str) -> None:
        """Cluster mode: publish `docutray_watch_node_info{node=name} 1` and label every
        exported series `node=name` (a node has one name at a time)."""
        self.node = name
        self.node_info.clear()
        self.node_info.labels(name).set(1)

    def set_api_state(self, state: str) -> None:
        """Mark `state` (one of `API_STATES`) as the current one."""
        for name in API_STATES:
            self.api_state.labels(name).set(1 if name == state else 0)

    def render(self) -> bytes:
        """The text exposition format (every series labelled `node=…` in cluster mode)."""
        if self.node is None:
            return generate_latest(self.registry)
        return generate_latest(_NodeLabelled(self.registry, self.node))


class _NodeLabelled:
    """The registry's families with `node=<name>` added to every sample that lacks it."""

    def __init__(self, registry: CollectorRegistry, node: str) -> None:
        self.registry = registry
        self.node = node

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            labelled = Metric(family.name, family.documentation, family.type, family.unit)
            labelled.samples = [
                sample._replace(labels={"node": self.node, **sample.labels})
                for sample in family.samples
            ]
            yield labelled
