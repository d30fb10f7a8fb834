"""The request rate kept in the journal for the next start (`engine.rate_memory`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from docutray_watch.engine.rate_memory import RateMemory
from docutray_watch.engine.ratelimit import INITIAL_RATE, RateLimiter
from docutray_watch.journal import REQUEST_RATE_KEY
from docutray_watch.journal.sqlite.store import SqliteStore

API = "http://127.0.0.1:9/api"


@pytest.fixture(name="store")
async def store_fixture(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = SqliteStore(tmp_path / "journal.db")
    await store.open()
    yield store
    await store.close()


def learned_limiter(rate: float) -> RateLimiter:
    limiter = RateLimiter.adaptive_rate()
    limiter.resume(rate, slow_start=False)
    return limiter


async def test_a_recorded_rate_is_resumed_by_the_next_start(store: SqliteStore) -> None:
    """What one run records, a new limiter on the same API starts from."""
    await RateMemory(learned_limiter(4.5), API).record(store)
    fresh = RateLimiter.adaptive_rate()
    await RateMemory(fresh, API).resume(store)
    assert fresh.rate == pytest.approx(4.5)
    assert not fresh.slow_start


async def test_a_rate_learned_of_another_api_is_not_resumed(store: SqliteStore) -> None:
    """A rate learned of one service says nothing of another: slow start as on a first run."""
    await RateMemory(learned_limiter(4.5), API).record(store)
    fresh = RateLimiter.adaptive_rate()
    await RateMemory(fresh, "http://127.0.0.1:10/api").resume(store)
    assert fresh.rate == INITIAL_RATE
    assert fresh.slow_start


async def test_a_fixed_rate_record_or_garbage_is_not_resumed(store: SqliteStore) -> None:
    """A record of a fixed rate, or one this version cannot read, leaves slow start alone."""
    await RateMemory(RateLimiter(50.0), API).record(store)
    fresh = RateLimiter.adaptive_rate()
    await RateMemory(fresh, API).resume(store)
    assert (fresh.rate, fresh.slow_start) == (INITIAL_RATE, True)
    await store.set_meta(REQUEST_RATE_KEY, "{not json")
    await RateMemory(fresh, API).resume(store)
    assert (fresh.rate, fresh.slow_start) == (INITIAL_RATE, True)


async def test_the_record_names_the_api_and_is_written_only_when_it_changed(
    store: SqliteStore,
) -> None:
    """The stored record carries the API's URL (for `status` and the check above); an
    unchanged rate is not written again."""
    memory = RateMemory(learned_limiter(4.5), API)
    await memory.record(store)
    stored = await store.get_meta(REQUEST_RATE_KEY)
    assert stored is not None
    assert json.loads(stored[0])["base_url"] == API
    await store.set_meta(REQUEST_RATE_KEY, "overwritten")
    await memory.record(store)  # the limiter did not change: nothing written
    assert (await store.get_meta(REQUEST_RATE_KEY) or ("",))[0] == "overwritten"
