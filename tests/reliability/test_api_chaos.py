"""API chaos: the emulator answers 503, 429 with Retry-After, drops connections, ends in ERROR."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from docutray_watch.samples import make_pdf
from tests.reliability.conftest import (
    DaemonFactory,
    Report,
    Sizes,
    base_config,
    elapsed_since,
    pipeline_config,
    wait_for,
)

# Full size runs for many minutes (pytest's default timeout is 300 s).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

SEED = 7
KNOWN_STEP = "stp_chaos"
UNKNOWN_STEP = "stp_not_at_the_service"


def sidecar(folder: Path, name: str) -> dict[str, Any]:
    return dict(json.loads((folder / f"{name}.error.json").read_text()))


class TestApiChaos:
    def test_every_document_ends_and_retry_after_is_honoured(
        self,
        tmp_path: Path,
        emulator_factory: Any,
        reliable_daemon: DaemonFactory,
        sizes: Sizes,
        report: Report,
    ) -> None:
        """20 % 503, 10 % 429, 5 % drops, 5 % ERROR: all end, no early retry, no 4xx retried;
        a step the service does not know pauses its pipeline and fails none of its documents."""
        started = time.monotonic()
        count = sizes.pick(60, 1000)
        rejected_count = sizes.pick(6, 50)
        emulator = emulator_factory(
            latency=0.3,
            step_ids=frozenset({KNOWN_STEP}),
            server_error_rate=0.20,
            server_error_statuses=(503,),
            rate_limit_rate=0.10,
            retry_after=1.0,
            drop_rate=0.05,
            error_rate=0.05,
            seed=SEED,
        )
        chaos = pipeline_config(tmp_path, "chaos", steps=[KNOWN_STEP])
        # A step the service does not know: its 404 pauses that pipeline (nothing fails, and a
        # submission tries again only once per api.pause_probe_interval).
        unknown = pipeline_config(tmp_path, "unknown", steps=[UNKNOWN_STEP])
        config = base_config(tmp_path, emulator, chaos, unknown)
        config["api"].update(requests_per_second=200, max_in_flight=32, max_retries=4)
        daemon = reliable_daemon(config)
        docs = {f"c{i:04d}.pdf": make_pdf([f"chaos {i}"]) for i in range(count)}
        others = {f"u{i:03d}.pdf": make_pdf([f"unknown step {i}"]) for i in range(rejected_count)}
        daemon.start()
        for name, data in docs.items():
            (tmp_path / "chaos" / "in" / name).write_bytes(data)
        for name, data in others.items():
            (tmp_path / "unknown" / "in" / name).write_bytes(data)

        def ended(pipeline: str, total: int) -> bool:
            base = tmp_path / pipeline
            return (
                len(list((base / "done").glob("*.pdf")))
                + len(list((base / "failed").glob("*.pdf")))
                == total
            )

        wait_for(
            lambda: ended("chaos", count),
            timeout=sizes.pick(300, 3600),
            interval=0.5,
        )
        assert daemon.alive
        assert daemon.stop() == 0
        stats = emulator.stats(include_executions=True)

        # Every document terminal.
        base = tmp_path / "chaos"
        done = {p.name for p in (base / "done").glob("*.pdf")}
        failed = {p.name for p in (base / "failed").glob("*.pdf")}
        assert done | failed == set(docs)
        assert not list((base / "in").glob("*.pdf"))

        # ERROR results: exactly those documents are in failed/ with a sidecar saying so.
        assert stats.executions is not None
        name_of = {hashlib.sha256(d).hexdigest(): n for n, d in docs.items()}
        errored = {name_of[e.sha256] for e in stats.executions.values() if e.outcome == "ERROR"}
        assert errored <= failed
        failed_reasons = {name: sidecar(base / "failed", name) for name in failed}
        for name in errored:
            assert failed_reasons[name]["stage"] == "result", failed_reasons[name]
            assert "ERROR" in failed_reasons[name]["reason"]
        other_failures = {n: failed_reasons[n]["reason"] for n in failed - errored}

        # Retry-After never undercut.
        assert stats.retry_after_violations == 0, stats.retry_after_violation_details

        # No 4xx other than 429 retried: the unknown step's 404s paused its pipeline. At most
        # one 404 per document already on its way, then one trial per probe interval (60 s);
        # none of its documents failed for it (a cut-off submission is retried, not failed).
        ubase = tmp_path / "unknown"
        assert not (ubase / "failed").exists() or not list((ubase / "failed").glob("*.pdf"))
        assert {p.name for p in (ubase / "in").glob("*.pdf")} == set(others)
        statuses = stats.responses_by_status
        trials = 1 + int(elapsed_since(started) // 60)
        assert 1 <= statuses.get(404, 0) <= rejected_count + trials
        assert set(statuses) <= {200, 404, 429, 503}
        events = [line.get("event") for line in daemon.log_lines()]
        assert "pipeline_paused" in events

        report(
            "api-chaos",
            documents=count,
            unknown_step_documents=rejected_count,
            delivered=len(done),
            failed=len(failed),
            error_results=len(errored),
            failed_other=len(other_failures),
            lost=len(set(docs) - done - failed),
            requests=stats.posts + stats.status_gets,
            posts=stats.posts,
            status_gets=stats.status_gets,
            responses=dict(sorted(statuses.items())),
            faults=dict(sorted(stats.faults.items())),
            retry_after_violations=stats.retry_after_violations,
            http_404=statuses.get(404, 0),
            resubmissions=stats.resubmissions,
            seconds=elapsed_since(started),
        )
        for name, reason in sorted(other_failures.items()):
            print(f"  failed without an ERROR result: {name}: {reason}")
