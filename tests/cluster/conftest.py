"""Fixtures for the cluster's tests: a PostgreSQL database of each test's own, and configs.

The database fixture skips when the server at 127.0.0.1:5432 is unreachable, except under
`CI=true` where it fails, so a broken CI database never passes silently.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
PG_TEMPLATE = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"

WriteConfig = Callable[..., Path]


def _admin() -> Any:
    import psycopg

    return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)


@pytest.fixture(name="cluster_url")
def cluster_url_fixture() -> Iterator[str]:
    """A new, empty database for this test (dropped afterwards); its SQLAlchemy-style URL."""
    import psycopg

    try:
        admin = _admin()
    except psycopg.Error as exc:
        problem = f"PostgreSQL at 127.0.0.1:5432 is unreachable: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    name = f"dtw_cluster_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield PG_TEMPLATE.format(name=name)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(name="initialised_url")
def initialised_url_fixture(cluster_url: str) -> str:
    """`cluster_url`, prepared by `init_schema`."""
    from docutray_watch.cluster.schema import init_schema

    init_schema(cluster_url)
    return cluster_url


def config_data(tmp_path: Path, url: str, **cluster: Any) -> dict[str, Any]:
    """A valid config with a cluster block (node `node-a`, a local inbox, a filesystem sink)."""
    return {
        "api": {"base_url": "http://127.0.0.1:9", "api_key": "key-never-stored-0123456789"},
        "state_dir": str(tmp_path / "state"),
        "cluster": {"database": url, "node": "node-a", **cluster},
        "pipelines": [
            {
                "name": "invoices",
                "watch": {"path": str(tmp_path / "inbox")},
                "steps": ["stp_a"],
                "on_success": {"action": "move", "to": str(tmp_path / "done")},
                "sinks": [{"type": "filesystem", "path": str(tmp_path / "out")}],
            }
        ],
    }


@pytest.fixture(name="write_config")
def write_config_fixture(tmp_path: Path) -> WriteConfig:
    """Write a config file (from `config_data`, then `changes` applied) and return its path."""

    def write(url: str, name: str = "config.yaml", **changes: Any) -> Path:
        data = config_data(tmp_path, url)
        for dotted, value in changes.items():
            node = data
            *parents, last = dotted.split("__")
            for part in parents:
                node = node[int(part)] if part.isdigit() else node[part]
            node[last] = value
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data))
        return path

    return write
