"""How fast the status page's JSON endpoint answers with a large journal (target: 50 ms).

Builds a journal of `--docs` documents (default 100,000: 30 days of history, mostly archived,
some failed, rejected and superseded, a few waiting and in flight, one step and one delivery
each), serves the status page on a loopback port as the daemon does, and times
`GET /api/status?failures=50` (what the page polls). Prints the median, p95 and maximum and their
ratio to the target; for comparison, how long counting every row (what `status` did before the
journal kept counts) takes on the same journal.

    python benchmarks/web_status.py                 # 100,000 documents
    python benchmarks/web_status.py --docs 2000 --requests 20 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from docutray_watch.config import parse_config
from docutray_watch.journal import Journal
from docutray_watch.metrics import Metrics
from docutray_watch.plugins import load_plugins
from docutray_watch.web import StatusPage

TARGET_MS = 50.0
DAY = 86_400.0


def build_journal(path: Path, docs: int, *, seed: int = 1) -> None:
    """A journal with `docs` documents spread over 30 days (bulk inserts, triggers on)."""
    rng = random.Random(seed)
    now = time.time()
    with Journal(path) as journal:
        conn = journal.conn
        conn.execute("BEGIN")
        rows = []
        for n in range(docs):
            created = now - rng.uniform(0, 30 * DAY)
            roll = rng.random()
            state, outcome, error = "archived", "success", None
            if roll < 0.02:
                state, outcome, error = "failed", "failed", f"step stp_a: ERROR #{n}"
            elif roll < 0.03:
                state, outcome, error = "rejected", "rejected", "empty file (0 bytes)"
            elif roll < 0.035:
                state, outcome = "superseded", "superseded"
            finished: float | None = created + rng.uniform(1, 60)
            if n >= docs - 40:  # the current backlog
                state, outcome, finished = rng.choice(["queued", "polling"]), None, None
            rows.append(
                (
                    "invoices" if n % 3 else "receipts",
                    f"/srv/in/{n}.pdf",
                    f"{n}.pdf",
                    1000 + n,
                    n,
                    f"{n:064x}",
                    state,
                    outcome,
                    error,
                    "result" if error else None,
                    created,
                    finished or created,
                    finished,
                )
            )
        conn.executemany(
            "INSERT INTO documents (pipeline, path, relative_path, size, mtime_ns, sha256, state,"
            " outcome, error, error_stage, created_at, updated_at, finished_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute(
            "INSERT INTO steps (document_id, step_id, state, execution_id)"
            " SELECT id, 'stp_a', 'success', 'exec_' || id FROM documents"
        )
        conn.execute(
            "INSERT INTO deliveries (step_row, document_id, sink, state)"
            " SELECT s.id, s.document_id, 'out', CASE d.state WHEN 'superseded'"
            " THEN 'superseded' ELSE 'delivered' END FROM steps s"
            " JOIN documents d ON d.id = s.document_id"
        )
        conn.execute(
            "INSERT OR REPLACE INTO step_latency VALUES ('stp_a', 0, 500, 4.2, 1.1),"
            " ('stp_a', 1, 40, 9.5, 4.0)"
        )
        conn.execute("COMMIT")


def full_count_ms(path: Path, repeat: int = 5) -> float:
    """Median time of counting every row per pipeline and outcome (the old `status`)."""
    with Journal(path) as journal:
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            journal.outcome_counts()
            journal.recent_failures(50)
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def time_endpoint(root: Path, requests: int) -> list[float]:
    plugins = load_plugins()
    config = parse_config(
        {
            "state_dir": str(root / "state"),
            "api": {"api_key": "bench-key-not-used"},
            "web": {"listen": "127.0.0.1:0"},
            "pipelines": [
                {
                    "name": name,
                    "watch": {"path": str(root / name)},
                    "steps": ["stp_a"],
                    "sinks": [{"type": "filesystem", "path": str(root / "out")}],
                }
                for name in ("invoices", "receipts")
            ],
        },
        config_dir=root,
        sink_types=plugins.config_sink_types,
        environ={},
    )
    page = StatusPage(lambda: config, Metrics(), api_state=lambda: {"state": "ok"})
    await page.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{page.port}") as client:
            await client.get("/api/status?failures=50")  # warm: connection, page cache
            times = []
            for _ in range(requests):
                started = time.perf_counter()
                response = await client.get("/api/status?failures=50")
                times.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200
            assert len(response.json()["failures"]) == 50
    finally:
        await page.stop()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="web-status-") as tmp:
        root = Path(tmp)
        journal = root / "state" / "journal.sqlite3"
        started = time.perf_counter()
        build_journal(journal, args.docs)
        built_s = time.perf_counter() - started
        times = asyncio.run(time_endpoint(root, args.requests))
        full_ms = full_count_ms(journal)
    ordered = sorted(times)
    figures: dict[str, Any] = {
        "documents": args.docs,
        "requests": args.requests,
        "median_ms": round(statistics.median(times), 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
        "max_ms": round(ordered[-1], 2),
        "target_ms": TARGET_MS,
        "full_count_ms": round(full_ms, 2),
        "journal_built_s": round(built_s, 1),
    }
    figures["median_to_target"] = round(figures["median_ms"] / TARGET_MS, 3)
    figures["p95_to_target"] = round(figures["p95_ms"] / TARGET_MS, 3)
    print(f"GET /api/status?failures=50 with {args.docs:,} documents ({args.requests} requests):")
    print(
        f"  median {figures['median_ms']} ms, p95 {figures['p95_ms']} ms, max "
        f"{figures['max_ms']} ms; target {TARGET_MS:g} ms: median is "
        f"{figures['median_to_target']:.2f} x the target, p95 {figures['p95_to_target']:.2f} x"
    )
    print(f"  for comparison, counting every row (the old status): {figures['full_count_ms']} ms")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
