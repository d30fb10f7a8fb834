"""`api.requests_per_second: auto` end to end: the engine against an emulator that enforces a
request rate without saying it (no `limit` in its 429 bodies, Retry-After in fractions)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pluggy
import pytest

from docutray_watch.config import Config
from docutray_watch.emulator import EmulatorServer
from docutray_watch.engine import Engine
from docutray_watch.samples import make_png
from tests.engine.conftest import ConfigFactory, pipeline_data

RATE = 20.0  # requests per second the emulator accepts
DOCUMENTS = 60


async def _process(config: Config, pm: pluggy.PluginManager) -> tuple[int, Engine]:
    engine = Engine(config, plugin_manager=pm)
    await engine.start()
    try:
        await engine.scan()
        await engine.wait_idle()
    finally:
        await engine.stop(grace=0)
    return sum(engine.summary.outcomes.values()), engine


def _fill(inbox: Path) -> None:
    for index in range(DOCUMENTS):
        (inbox / f"{index:03}.png").write_bytes(make_png(8, 8, color=(index, 90, 160)))


class TestUnannouncedRateLimit:
    def test_the_rate_is_learned_with_few_429s(
        self,
        tmp_path: Path,
        make_config: ConfigFactory,
        pm: pluggy.PluginManager,
        emulator: EmulatorServer,
    ) -> None:
        """Every document is processed, with at most a fifth of the documents' worth of 429s
        (a fixed rate of twice the limit draws 76), and the learned rate is near the limit.

        The 60 files reach the limiter at once (intake takes a backlog in batches); slow start
        paces its slots at the current rate, so that backlog is no burst beyond the limit."""
        emulator.configure(
            rate_limit_rps=RATE, hide_rate_limit=True, fractional_retry_after=True, latency=0.2
        )
        config = make_config(
            pipeline_data(tmp_path), api={"requests_per_second": "auto", "max_in_flight": 32}
        )
        _fill(tmp_path / "invoices" / "inbox")
        done, engine = asyncio.run(_process(config, pm))
        assert done == DOCUMENTS
        assert engine.summary.outcomes["success"] == DOCUMENTS
        stats = emulator.stats()
        assert stats.retry_after_violations == 0
        # Typically 3; 11 once in a full CI run (the timing of answers on a busy box). A
        # limiter that does not adapt draws 76: a fifth of the documents still tells them apart.
        assert stats.responses_by_status.get(429, 0) <= DOCUMENTS // 5
        assert engine.limiter.decreases >= 1
        assert 0.5 * RATE <= engine.limiter.rate <= 1.5 * RATE
        scraped = engine.metrics.render().decode()
        assert f"docutray_watch_api_request_rate {engine.limiter.rate}" in scraped


class TestRestart:
    def test_a_restarted_engine_resumes_the_rate_it_learned(
        self,
        tmp_path: Path,
        make_config: ConfigFactory,
        pm: pluggy.PluginManager,
        emulator: EmulatorServer,
    ) -> None:
        """After a run that met the service's limit, the next start on the same journal and API
        begins at the learned rate, past slow start, instead of learning it again from 16/s."""
        emulator.configure(
            rate_limit_rps=RATE, hide_rate_limit=True, fractional_retry_after=True, latency=0.2
        )
        config = make_config(
            pipeline_data(tmp_path), api={"requests_per_second": "auto", "max_in_flight": 32}
        )
        _fill(tmp_path / "invoices" / "inbox")
        _, first = asyncio.run(_process(config, pm))
        learned = round(first.limiter.rate, 2)
        assert not first.limiter.slow_start

        async def start_again() -> Engine:
            engine = Engine(config, plugin_manager=pm)
            await engine.start(resume=False)
            await engine.stop(grace=0)
            return engine

        second = asyncio.run(start_again())
        assert second.limiter.rate == pytest.approx(learned)
        assert not second.limiter.slow_start
