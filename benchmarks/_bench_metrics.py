"""Figures of one run, computed from the emulator's statistics and the child's rusage.

Throughput is judged against Little's law: with at most ``C`` executions in flight and a
processing latency ``L``, no client completes more than ``C / L`` documents per second, nor more
than ``rate / 2`` under a request-rate limit (a document needs at least a submission and a status
read). The steady-state throughput is measured the same way, from what the service saw: over the
period in which documents were waiting (first submission → last submission) the mean number of
executions being processed, divided by their latency. A client that reuses each slot the instant
its result is ready keeps ``C`` executions in processing and scores 1.0; every millisecond a slot
spends on detection, bookkeeping or the next upload lowers it. This keeps the partially filled
last round of a finite batch (which no client can avoid) out of the figure; the plain batch rates
(documents ÷ window, documents ÷ wall time) are reported beside it.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

__all__ = ["max_concurrency", "run_metrics", "steady_throughput", "window_metrics"]


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def steady_throughput(executions: list[dict[str, Any]]) -> float | None:
    """Documents per second in processing while documents were waiting (Little's law), or None."""
    if len(executions) < 2:
        return None
    start = float(min(e["created_at_wall"] for e in executions))
    end = float(max(e["created_at_wall"] for e in executions))
    if end - start <= 0:
        return None
    completed = 0.0
    for e in executions:
        begin, finish = e["created_at_wall"], e["completes_at_wall"]
        overlap = min(finish, end) - max(begin, start)
        if overlap > 0 and e["latency"] > 0:
            completed += overlap / e["latency"]
    return completed / (end - start)


def max_concurrency(executions: list[dict[str, Any]]) -> int:
    """Most executions in flight at once (from submission to the read that saw the result)."""
    events: list[tuple[float, int]] = []
    for e in executions:
        events.append((e["created_at_wall"], 1))
        finish = e["first_terminal_read_at_wall"] or e["completes_at_wall"]
        events.append((finish, -1))
    current = best = 0
    for _, delta in sorted(events):
        current += delta
        best = max(best, current)
    return best


def run_metrics(
    *,
    stats: dict[str, Any],
    documents: int,
    results_written: int,
    returncode: int,
    wall_s: float,
    started_wall: float,
    cpu_user_s: float,
    cpu_sys_s: float,
    max_rss_mb: float,
    emulator_cpu_s: float,
    concurrency: int,
    latency: float,
    rate_limit: float | None,
) -> dict[str, Any]:
    """Every figure of one tool's run (times in seconds, CPU in ms per document)."""
    executions = list((stats.get("executions") or {}).values())
    delays = [e["detection_delay"] for e in executions if e["detection_delay"] is not None]
    created = [e["created_at_wall"] for e in executions]
    reads = [
        e["first_terminal_read_at_wall"] for e in executions if e["first_terminal_read_at_wall"]
    ]
    window = (max(reads) - min(created)) if created and reads else None
    bound = concurrency / latency if latency > 0 else float("inf")
    if rate_limit:
        bound = min(bound, rate_limit / 2)
    steady = steady_throughput(executions)
    if rate_limit and window:
        # Under a rate limit the bound is a request rate, not slots: judge the batch rate.
        steady = documents / window
    cpu = cpu_user_s + cpu_sys_s
    per_doc = max(documents, 1)
    by_status = {int(k): v for k, v in stats.get("responses_by_status", {}).items()}
    requests = stats.get("posts", 0) + stats.get("status_gets", 0)
    return {
        "documents": documents,
        "results_written": results_written,
        "documents_failed": documents - results_written,
        "returncode": returncode,
        "wall_s": round(wall_s, 3),
        "docs_per_s_wall": round(documents / wall_s, 2) if wall_s > 0 else None,
        "first_submission_s": round(min(created) - started_wall, 3) if created else None,
        "window_s": round(window, 3) if window else None,
        "docs_per_s_window": round(documents / window, 2) if window else None,
        "requests_per_s_window": round(requests / window, 2) if window else None,
        "steady_docs_per_s": round(steady, 2) if steady is not None else None,
        "bound_docs_per_s": round(bound, 2),
        "fraction_of_bound": round(steady / bound, 3) if steady is not None else None,
        "cpu_s": round(cpu, 3),
        "cpu_user_s": round(cpu_user_s, 3),
        "cpu_sys_s": round(cpu_sys_s, 3),
        "cpu_ms_per_doc": round(1000 * cpu / per_doc, 3),
        "peak_rss_mb": round(max_rss_mb, 1),
        "status_requests_per_doc": round(stats.get("status_gets", 0) / per_doc, 3),
        "posts_per_doc": round(stats.get("posts", 0) / per_doc, 3),
        "detection_delay_mean_s": round(statistics.fmean(delays), 3) if delays else None,
        "detection_delay_p50_s": round(_percentile(delays, 0.5), 3) if delays else None,
        "detection_delay_p95_s": round(_percentile(delays, 0.95), 3) if delays else None,
        "detection_delay_max_s": round(max(delays), 3) if delays else None,
        "results_never_read": len(executions) - len(delays),
        "max_in_flight": max_concurrency(executions),
        "executions": stats.get("executions_created", 0),
        "resubmissions": stats.get("resubmissions", 0),
        "http_429": by_status.get(429, 0),
        "http_errors": sum(v for k, v in by_status.items() if k >= 400),
        "retry_after_violations": stats.get("retry_after_violations", 0),
        "emulator_cpu_ms_per_doc": round(1000 * emulator_cpu_s / per_doc, 3),
    }


def window_metrics(
    stats: dict[str, Any], *, start: float, end: float, rate_limit: float | None
) -> dict[str, Any]:
    """What the service saw between the epoch times ``start`` and ``end`` (a timed run counted
    after its first seconds): accepted requests per second (÷ the limit), the share of requests
    answered 429, and the mean detection delay of the executions completed in that window."""
    first, last = math.ceil(start), math.floor(end)  # whole seconds inside the window
    seconds = max(0, last - first)
    accepted = throttled = 0
    for second, counts in (stats.get("responses_by_second") or {}).items():
        if first <= int(second) < last:
            for status, count in counts.items():
                if int(status) == 429:
                    throttled += count
                else:
                    accepted += count
    delays = [
        e["detection_delay"]
        for e in (stats.get("executions") or {}).values()
        if e["detection_delay"] is not None and start <= e["completes_at_wall"] <= end
    ]
    rate = accepted / seconds if seconds else None
    total = accepted + throttled
    return {
        "window_s": seconds,
        "accepted_per_s": round(rate, 2) if rate is not None else None,
        "accepted_of_limit": (
            round(rate / rate_limit, 3) if rate is not None and rate_limit else None
        ),
        "http_429_in_window": throttled,
        "share_429": round(throttled / total, 4) if total else None,
        "detection_delay_mean_s": round(statistics.fmean(delays), 3) if delays else None,
        "documents_detected": len(delays),
    }
