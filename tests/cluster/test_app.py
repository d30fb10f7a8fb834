"""The procrastinate App factory and queue names."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from docutray_watch.cluster.app import create_app, libpq_url, node_queue
from docutray_watch.config import ClusterConfig


def _cluster(url: str, **fields: object) -> ClusterConfig:
    return ClusterConfig.model_validate({"database": SecretStr(url), "node": "node-a", **fields})


def test_libpq_url_drops_the_sqlalchemy_driver() -> None:
    """`postgresql+psycopg://` becomes `postgresql://`; other URLs are left alone."""
    assert libpq_url("postgresql+psycopg://u:p@h:5/d?sslmode=require") == (
        "postgresql://u:p@h:5/d?sslmode=require"
    )
    assert libpq_url("postgresql://u@h/d") == "postgresql://u@h/d"


def test_node_queue_name() -> None:
    """A node's local queue is `node.<name>`."""
    assert node_queue("scan-01") == "node.scan-01"


def test_workers_use_the_cluster_timings() -> None:
    """The App's workers heartbeat and judge stalled workers with the cluster's figures, and
    leave signals to the daemon."""
    app = create_app(
        _cluster("postgresql+psycopg://u@h/d", heartbeat_interval=2, stalled_timeout=5)
    )
    assert app.worker_defaults["update_heartbeat_interval"] == 2
    assert app.worker_defaults["stalled_worker_timeout"] == 5
    assert app.worker_defaults["install_signal_handlers"] is False


@pytest.mark.postgres
async def test_defers_jobs_to_a_node_queue(initialised_url: str) -> None:
    """An App from the factory reaches the cluster database and defers a job to a queue."""
    app = create_app(_cluster(initialised_url))

    @app.task(name="noop")
    def noop() -> None:
        """A task that is never run here."""

    async with app.open_async():
        job_id = await noop.configure(queue=node_queue("node-a")).defer_async()
        jobs = await app.job_manager.list_jobs_async(id=job_id)
    assert [(job.queue, job.status) for job in jobs] == [("node.node-a", "todo")]
