"""What only the running daemon knows, for `GET /api/live`: the last hour in one-minute buckets
(documents done and failed, API requests and their mean latency, 429 answers), the API's state
and each sink's health. Read from the Prometheus registry every few seconds, so the engine needs
no hook of its own: the ring keeps the differences between two samples.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from docutray_watch.metrics import Metrics

if TYPE_CHECKING:
    from docutray_watch.config import Config
    from docutray_watch.engine import Engine

__all__ = ["Bucket", "MinuteRing", "Sampler", "api_state_of", "sinks_health"]

MINUTES = 60
DONE_OUTCOMES = frozenset({"success", "duplicate"})
FAILED_OUTCOMES = frozenset({"failed", "rejected"})


@dataclass
class Bucket:
    """One minute's figures (its start is a Unix time, a multiple of 60)."""

    start: int
    done: int = 0
    failed: int = 0
    api_requests: int = 0
    api_seconds: float = 0.0
    rate_limited: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "done": self.done,
            "failed": self.failed,
            "api_requests": self.api_requests,
            "api_mean_s": round(self.api_seconds / self.api_requests, 4)
            if self.api_requests
            else None,
            "rate_limited": self.rate_limited,
        }


class MinuteRing:
    """The last `size` minutes, oldest first; minutes nothing happened in are zeros."""

    def __init__(self, size: int = MINUTES, *, clock: Callable[[], float] = time.time) -> None:
        self.size = size
        self._clock = clock
        self._buckets: deque[Bucket] = deque(maxlen=size)

    def add(self, **deltas: float) -> None:
        """Add to the current minute's bucket."""
        start = int(self._clock() // 60 * 60)
        if not self._buckets or self._buckets[-1].start != start:
            self._buckets.append(Bucket(start))
        bucket = self._buckets[-1]
        for name, value in deltas.items():
            setattr(bucket, name, getattr(bucket, name) + value)

    def minutes(self) -> list[dict[str, Any]]:
        """Every minute of the window, oldest first, the current one last."""
        now = int(self._clock() // 60 * 60)
        kept = {b.start: b for b in self._buckets}
        starts = range(now - (self.size - 1) * 60, now + 60, 60)
        return [kept.get(start, Bucket(start)).as_json() for start in starts]


def _samples(metric: Any) -> Iterable[Any]:
    for family in metric.collect():
        yield from family.samples


@dataclass
class _Totals:
    done: float = 0.0
    failed: float = 0.0
    api_requests: float = 0.0
    api_seconds: float = 0.0
    rate_limited: float = 0.0
    sink_failures: dict[tuple[str, str], float] = field(default_factory=dict)


class Sampler:
    """Reads the metrics' running totals and adds what changed since the last read to the ring;
    also notes when each sink last saw a failed delivery."""

    def __init__(self, metrics: Metrics, ring: MinuteRing, *, clock: Callable[[], float]) -> None:
        self.metrics = metrics
        self.ring = ring
        self._clock = clock
        self._last = _Totals()
        self.sink_failed_at: dict[tuple[str, str], float] = {}

    def _totals(self) -> _Totals:
        totals = _Totals()
        for sample in _samples(self.metrics.documents):
            if sample.name.endswith("_total"):
                outcome = sample.labels.get("outcome")
                if outcome in DONE_OUTCOMES:
                    totals.done += sample.value
                elif outcome in FAILED_OUTCOMES:
                    totals.failed += sample.value
        for sample in _samples(self.metrics.api_latency):
            if sample.name.endswith("_count"):
                totals.api_requests += sample.value
            elif sample.name.endswith("_sum"):
                totals.api_seconds += sample.value
        for sample in _samples(self.metrics.rate_limited):
            if sample.name.endswith("_total"):
                totals.rate_limited += sample.value
        for sample in _samples(self.metrics.delivery_failures):
            if sample.name.endswith("_total"):
                key = (sample.labels["pipeline"], sample.labels["sink"])
                totals.sink_failures[key] = sample.value
        return totals

    def sample(self) -> None:
        """One read; call it every few seconds."""
        now, last = self._totals(), self._last
        self.ring.add(
            done=int(now.done - last.done),
            failed=int(now.failed - last.failed),
            api_requests=int(now.api_requests - last.api_requests),
            api_seconds=now.api_seconds - last.api_seconds,
            rate_limited=int(now.rate_limited - last.rate_limited),
        )
        for key, value in now.sink_failures.items():
            if value > last.sink_failures.get(key, 0.0):
                self.sink_failed_at[key] = self._clock()
        self._last = now


def api_state_of(engine: Engine, *, now: float | None = None) -> dict[str, Any]:
    """`{"state": "ok" | "paused" | "key_refused" | "unreachable", "paused_for_s": …,
    "reasons": […]}` from the engine's API gate and rate limiter.

    `paused`: a 429 answer's Retry-After holds every request; `key_refused`: the API refused the
    key (401) and work waits for it; `unreachable`: the API cannot be reached. `reasons` also
    names pipelines paused because the API refused their step. Readers must accept other states
    later.
    """
    moment = time.monotonic() if now is None else now
    gate = engine.api_gate
    paused_for = max(0.0, engine.limiter.paused_until - moment, gate.throttled_until - moment)
    return {
        "state": engine.api_state(),
        "paused_for_s": round(paused_for, 1),
        "paused_total_s": round(engine.limiter.paused_total, 1),
        "in_flight": engine.in_flight,
        "reasons": gate.reasons(),
    }


def sinks_health(
    config: Config, metrics: Metrics, failed_at: dict[tuple[str, str], float]
) -> list[dict[str, Any]]:
    """Each configured sink: deliveries and failed attempts since the daemon started, the time
    of its last success, and `ok` / `failing` (a failed attempt since the last success) /
    `idle` (nothing delivered or failed yet)."""
    delivered = {
        (s.labels["pipeline"], s.labels["sink"]): s.value
        for s in _samples(metrics.deliveries)
        if s.name.endswith("_total")
    }
    failures = {
        (s.labels["pipeline"], s.labels["sink"]): s.value
        for s in _samples(metrics.delivery_failures)
        if s.name.endswith("_total")
    }
    last_ok = {
        (s.labels["pipeline"], s.labels["sink"]): s.value for s in _samples(metrics.last_delivery)
    }
    result = []
    for pipeline in config.pipelines:
        for sink in pipeline.sinks:
            key = (pipeline.name, str(sink.id))
            ok_at, failed = last_ok.get(key), failed_at.get(key)
            if failed is not None and (ok_at is None or failed > ok_at):
                state = "failing"
            elif ok_at is not None:
                state = "ok"
            else:
                state = "idle"
            result.append(
                {
                    "pipeline": pipeline.name,
                    "sink": str(sink.id),
                    "type": sink.type,
                    "state": state,
                    "delivered": int(delivered.get(key, 0)),
                    "failed_attempts": int(failures.get(key, 0)),
                    "last_success": ok_at,
                }
            )
    return result
