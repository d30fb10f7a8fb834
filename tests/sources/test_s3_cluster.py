"""An S3 source in multi-node mode: two cluster nodes (in one process, real PostgreSQL, moto's
server as the bucket, the emulator as the API) share one bucket prefix; the periodic job lists
it (one node per period), each object version is recorded once ever, and its jobs run on the
shared queue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from docutray_watch.cluster import periodic
from docutray_watch.config import Config, ConfigError, parse_config
from docutray_watch.emulator import EmulatorServer
from docutray_watch.journal.postgres import PostgresStore
from docutray_watch.plugins import load_plugins
from docutray_watch.samples import make_pdf
from docutray_watch.sources.base import SourceDocument
from docutray_watch.sources.s3 import S3Source
from docutray_watch.testing import EmulatorFactory
from tests.cluster.conftest import cluster_url_fixture, initialised_url_fixture
from tests.cluster.test_runtime import running, wait_until
from tests.s3kit import MotoServer
from tests.sources.conftest import s3_source

__all__ = ["cluster_url_fixture", "initialised_url_fixture"]  # the cluster's fixtures, used here

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

OBJECTS = 12


def node_data(
    root: Path, url: str, emulator: EmulatorServer, moto: MotoServer, bucket: str, node: str
) -> dict[str, Any]:
    """A node of a cluster whose one pipeline takes s3://bucket/in/ (the same for every node)."""
    return {
        "state_dir": str(root / f"state-{node}"),
        "shutdown_grace": 5,
        "api": {
            "base_url": emulator.base_url,
            "api_key": emulator.api_key,
            "requests_per_second": 1000,
            "max_retries": 2,
            "max_in_flight": 4,
        },
        "cluster": {"database": url, "node": node, "heartbeat_interval": 1, "stalled_timeout": 3},
        "pipelines": [
            {
                "name": "scans",
                "source": s3_source(moto, bucket, prefix="in/", rescan_interval=1),
                "steps": ["stp_test"],
                "poll": {"initial": 0.2, "max": 0.5, "timeout": 60},
                "on_success": {"action": "move", "to": f"s3://{bucket}/done/"},
                "on_failure": {"action": "move", "to": f"s3://{bucket}/failed/"},
                "sinks": [{"type": "filesystem", "path": str(root / "out")}],
            }
        ],
    }


def node_config(data: dict[str, Any], root: Path) -> Config:
    return parse_config(
        data, config_dir=root, sink_types=load_plugins().config_sink_types, environ={}
    )


def keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    found = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return sorted(item["Key"].removeprefix(prefix) for item in found)


async def test_two_nodes_take_each_object_of_one_bucket_once(
    tmp_path: Path,
    initialised_url: str,
    emulator_factory: EmulatorFactory,
    moto: MotoServer,
    s3: Any,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two nodes on one bucket prefix: every object is submitted once, has one result in the
    sink and ends in done/; the prefix is listed only by the periodic job, by one node per
    period, never by a node on its own."""
    listings: list[int] = []
    scans: list[tuple[str, int]] = []
    real_listing, real_scan = S3Source.listing, periodic.scan_sources

    async def counted_listing(self: S3Source) -> dict[str, tuple[str, int]]:
        listings.append(1)
        return await real_listing(self)

    async def recorded_scan(jobs: Any, timestamp: int) -> None:
        scans.append((jobs.svc.node, timestamp))
        await real_scan(jobs, timestamp)

    monkeypatch.setattr(S3Source, "listing", counted_listing)
    monkeypatch.setattr(periodic, "scan_sources", recorded_scan)
    emulator = emulator_factory(latency=0.3)
    for i in range(OBJECTS):
        s3.put_object(Bucket=bucket, Key=f"in/doc-{i:02}.pdf", Body=make_pdf(f"object {i}"))
    configs = [
        node_config(node_data(tmp_path, initialised_url, emulator, moto, bucket, n), tmp_path)
        for n in ("n1", "n2")
    ]
    async with running(configs[0]), running(configs[1]):
        await wait_until(lambda: len(keys(s3, bucket, "done/")) == OBJECTS, timeout=90)
    assert keys(s3, bucket, "in/") == []
    assert keys(s3, bucket, "failed/") == []
    stats = emulator.stats()
    assert stats.resubmissions == 0
    assert sum(len(per_doc) for per_doc in stats.submissions.values()) == OBJECTS
    results = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(results) == OBJECTS
    periods = [timestamp for _node, timestamp in scans]
    assert scans
    assert len(periods) == len(set(periods))  # one node per period
    # Every listing was the periodic job's (the last one may be cut short by the stop).
    assert 0 < len(listings) <= len(scans)
    store = PostgresStore(initialised_url, migrate=False)
    await store.open()
    try:
        counts = await store.outcome_counts()
    finally:
        await store.close()
    assert counts["scans"].get("success") == OBJECTS


async def test_an_object_overwritten_while_in_progress_is_taken_again(
    tmp_path: Path,
    initialised_url: str,
    emulator_factory: EmulatorFactory,
    moto: MotoServer,
    s3: Any,
    bucket: str,
) -> None:
    """An object overwritten while its first version is at the service: the first ends
    superseded (nothing moved), the second is listed, waits for the first to end, and is
    processed and moved to done/."""
    emulator = emulator_factory(latency=2.0)
    first, second = make_pdf("version one"), make_pdf("version two")
    s3.put_object(Bucket=bucket, Key="in/a.pdf", Body=first)
    data = node_data(tmp_path, initialised_url, emulator, moto, bucket, "n1")
    async with running(node_config(data, tmp_path)):
        await wait_until(lambda: emulator.stats().executions_created == 1, timeout=60)
        s3.put_object(Bucket=bucket, Key="in/a.pdf", Body=second)
        await wait_until(lambda: keys(s3, bucket, "done/") == ["a.pdf"], timeout=90)
        await wait_until(lambda: keys(s3, bucket, "in/") == [], timeout=30)
    done = s3.get_object(Bucket=bucket, Key="done/a.pdf")["Body"].read()
    assert done == second
    assert emulator.stats().executions_created == 2
    store = PostgresStore(initialised_url, migrate=False)
    await store.open()
    try:
        counts = await store.outcome_counts()
    finally:
        await store.close()
    assert counts["scans"] == {"superseded": 1, "success": 1}


async def test_an_object_version_is_recorded_once_and_deferred_once(
    tmp_path: Path,
    initialised_url: str,
    emulator_factory: EmulatorFactory,
    moto: MotoServer,
    bucket: str,
) -> None:
    """The same listing recorded twice defers one intake per object version; a new version of
    a key (another ETag) is new."""
    from docutray_watch.cluster.intake_jobs import identity_key
    from docutray_watch.journal.postgres import claims

    store = PostgresStore(initialised_url, migrate=False)
    await store.open()
    first = [
        SourceDocument(
            f"s3://{bucket}/in/{n}.pdf", f"{n}.pdf", f"{n}.pdf", 10, '"e1"', modified_ns=5
        )
        for n in ("a", "b")
    ]
    changed = SourceDocument(f"s3://{bucket}/in/a.pdf", "a.pdf", "a.pdf", 10, '"e2"', modified_ns=6)
    try:
        async with store.transaction() as conn:
            keys_now = [identity_key(doc) for doc in first]
            assert await claims.record_sources(conn, keys_now, pipeline="scans", now=1.0) == set(
                keys_now
            )
            assert await claims.record_sources(conn, keys_now, pipeline="scans", now=2.0) == set()
            again = [identity_key(changed), *keys_now]
            assert await claims.record_sources(conn, again, pipeline="scans", now=3.0) == {
                identity_key(changed)
            }
    finally:
        await store.close()


def test_sqs_events_are_refused_in_multi_node_mode(
    tmp_path: Path, emulator_factory: EmulatorFactory, moto: MotoServer, bucket: str
) -> None:
    """`source.events` with a `cluster:` block is a configuration error naming the key."""
    emulator = emulator_factory()
    data = node_data(tmp_path, "postgresql+psycopg://u@127.0.0.1/x", emulator, moto, bucket, "n1")
    data["pipelines"][0]["source"]["events"] = {
        "sqs_queue_url": f"{moto.endpoint_url}/123456789012/q"
    }
    with pytest.raises(ConfigError) as caught:
        node_config(data, tmp_path)
    assert "pipelines[0].source.events" in str(caught.value)
    assert "multi-node" in str(caught.value)


def test_a_source_is_listed_once_per_rescan_interval() -> None:
    """With a 1 s period and a 10 s interval one tick in ten lists; with an interval shorter
    than the period, every tick does."""
    assert sum(periodic.listing_due(t, 1, 10) for t in range(100, 200)) == 10
    assert all(periodic.listing_due(t, 2, 1) for t in range(0, 40, 2))
    assert sum(periodic.listing_due(t, 2, 5) for t in range(0, 100, 2)) == 20
