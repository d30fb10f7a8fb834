"""The request rate kept in the journal: for `status`, and for the next start.

The daemon stores the rate it uses (`REQUEST_RATE_KEY` in the journal's meta facts) whenever it
changed. `status` shows it; a restarted daemon on the same API resumes from it
(`RateLimiter.resume`) instead of learning the service's limit again from slow start: after a
restart, an upgrade or a crash it neither draws the 429s it already learned to avoid nor paces
itself up from 16 requests a second on an API that never throttled it.
"""

from __future__ import annotations

import json
import sqlite3

import structlog

from docutray_watch.engine.ratelimit import RateLimiter
from docutray_watch.journal import REQUEST_RATE_KEY, StateStore

__all__ = ["REQUEST_RATE_KEY", "RateMemory", "request_rate"]

log = structlog.get_logger("docutray_watch.engine")


def request_rate(limiter: RateLimiter) -> dict[str, object]:
    """The shared request rate now: what `status` shows."""
    return {
        "mode": "auto" if limiter.adaptive else "fixed",
        "requests_per_second": round(limiter.rate, 2),
        "slow_start": limiter.slow_start,
        "decreases": limiter.decreases,
        "max_requests_per_second": limiter.max_rate,
    }


class RateMemory:
    """Stores the limiter's rate in the journal (when it changed) and resumes from it."""

    def __init__(self, limiter: RateLimiter, base_url: str) -> None:
        self.limiter = limiter
        self.base_url = base_url  # a rate learned of another API does not apply
        self._recorded: str | None = None

    async def resume(self, journal: StateStore) -> None:
        """Start an adaptive limiter from the rate an earlier run stored for the same API."""
        if not self.limiter.adaptive:
            return
        try:
            stored = await journal.get_meta(REQUEST_RATE_KEY)
        except (sqlite3.Error, RuntimeError) as exc:
            log.warning("request_rate_not_read", error=f"{type(exc).__name__}: {exc}")
            return
        learned = _learned(stored[0] if stored else None, self.base_url)
        if learned is not None:
            rate, slow_start = learned
            self.limiter.resume(rate, slow_start=slow_start)
            log.info(
                "request_rate_resumed",
                learned=rate,
                starts_at=round(self.limiter.rate, 2),
                slow_start=self.limiter.slow_start,
            )

    async def record(self, journal: StateStore) -> None:
        """Store the current rate if it changed since the last time. A failed write is only
        logged: the rate is a hint, never a reason to stop."""
        record = {**request_rate(self.limiter), "base_url": self.base_url}
        value = json.dumps(record, sort_keys=True)
        if value == self._recorded:
            return
        try:
            await journal.set_meta(REQUEST_RATE_KEY, value)
        except (sqlite3.Error, RuntimeError) as exc:
            log.warning("request_rate_not_recorded", error=f"{type(exc).__name__}: {exc}")
            return
        self._recorded = value


def _learned(value: str | None, base_url: str) -> tuple[float, bool] | None:
    """(rate, still in slow start) from a stored record of the same API in auto mode, or None
    (nothing stored, another API, a fixed rate, or a record this version cannot read)."""
    if not value:
        return None
    try:
        record = json.loads(value)
        if record.get("mode") != "auto" or record.get("base_url") != base_url:
            return None
        return float(record["requests_per_second"]), bool(record["slow_start"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
