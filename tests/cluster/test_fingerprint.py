"""The configuration every node must share: what it leaves out, how differences are named, and
that it is stored without any secret."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import psycopg
import pytest

from docutray_watch.cluster.app import libpq_url
from docutray_watch.cluster.errors import ClusterSchemaError, ConfigMismatchError
from docutray_watch.cluster.fingerprint import (
    check_config,
    config_fingerprint,
    differing_keys,
    normalised_config,
)
from docutray_watch.config import Config, parse_config
from tests.cluster.conftest import config_data

URL = "postgresql+psycopg://docutray:db-pass-never-stored@db.example/docutray"
API_KEY = "key-never-stored-0123456789"


def _config(data: dict[str, Any]) -> Config:
    return parse_config(data, environ={})


def _data(tmp_path: Path) -> dict[str, Any]:
    data = config_data(tmp_path, URL)
    data["pipelines"][0]["sinks"].append(
        {"type": "database", "url": "postgresql+psycopg://res:sink-pass-never-stored@db/r"}
    )
    data["pipelines"][0]["sinks"].append(
        {"type": "database", "url": f"sqlite:///{tmp_path / 'results.db'}"}
    )
    return data


def _on_another_node(tmp_path: Path) -> dict[str, Any]:
    """The same cluster config as another host would write it: other local paths and name."""
    other = tmp_path / "elsewhere"
    data = _data(tmp_path)
    data["state_dir"] = str(other / "state")
    data["cluster"]["node"] = "node-b"
    data["cluster"]["node_max_in_flight"] = 4
    data["cluster"]["node_max_connections"] = 7
    data["cluster"]["database"] = "postgresql+psycopg://docutray@10.0.0.5/docutray"
    pipeline = data["pipelines"][0]
    pipeline["watch"]["path"] = str(other / "inbox")
    pipeline["on_success"]["to"] = str(other / "done")
    pipeline["sinks"][0]["path"] = str(other / "out")
    pipeline["sinks"][2]["url"] = f"sqlite:///{other / 'results.db'}"
    data["log"] = {"level": "debug"}
    data["metrics"] = {"listen": "0.0.0.0:9464"}
    data["api"]["api_key"] = "another-key-entirely-000"
    return data


def test_local_paths_and_node_settings_do_not_count(tmp_path: Path) -> None:
    """Two nodes with their own paths, names, caps, log levels and keys share one fingerprint."""
    mine = normalised_config(_config(_data(tmp_path)))
    theirs = normalised_config(_config(_on_another_node(tmp_path)))
    assert differing_keys(mine, theirs) == []
    assert config_fingerprint(mine) == config_fingerprint(theirs)


def test_shared_inbox_path_counts(tmp_path: Path) -> None:
    """A `shared: true` inbox is the same share everywhere: its path is part of the config."""
    a, b = _data(tmp_path), _data(tmp_path)
    for data in (a, b):
        data["pipelines"][0]["watch"]["shared"] = True
    b["pipelines"][0]["watch"]["path"] = str(tmp_path / "other-share")
    keys = differing_keys(normalised_config(_config(a)), normalised_config(_config(b)))
    assert keys == ["pipelines[invoices].watch.path"]


def test_differences_are_named_by_key(tmp_path: Path) -> None:
    """A changed limit, a changed step list and a sink only one side has are each named."""
    a, b = _data(tmp_path), _data(tmp_path)
    b["api"]["max_in_flight"] = 5
    b["pipelines"][0]["steps"] = ["stp_a", "stp_b"]
    b["pipelines"][0]["sinks"].append({"type": "filesystem", "path": str(tmp_path / "x")})
    keys = differing_keys(normalised_config(_config(a)), normalised_config(_config(b)))
    assert keys == [
        "api.max_in_flight",
        "pipelines[invoices].sinks[filesystem-2]",
        "pipelines[invoices].steps",
    ]


def test_order_of_pipelines_does_not_matter(tmp_path: Path) -> None:
    """Pipelines are compared by name, not position."""
    a = _data(tmp_path)
    second = copy.deepcopy(a["pipelines"][0])
    second["name"] = "receipts"
    second["watch"]["path"] = str(tmp_path / "inbox2")
    a["pipelines"].append(second)
    b = copy.deepcopy(a)
    b["pipelines"].reverse()
    assert config_fingerprint(normalised_config(_config(a))) == config_fingerprint(
        normalised_config(_config(b))
    )


def test_no_secret_in_the_normalised_config(tmp_path: Path) -> None:
    """Neither the API key, nor a hash of it, nor any password is in the stored document."""
    text = repr(normalised_config(_config(_data(tmp_path))))
    for secret in (API_KEY, "db-pass-never-stored", "sink-pass-never-stored"):
        assert secret not in text
    assert hashlib.sha256(API_KEY.encode()).hexdigest() not in text
    assert "api_key" not in text


def test_network_sink_url_counts_without_its_password(tmp_path: Path) -> None:
    """A PostgreSQL sink's host and database are shared config; its password is not kept."""
    normalised = normalised_config(_config(_data(tmp_path)))
    sinks = normalised["pipelines"]["invoices"]["sinks"]
    assert sinks["database"]["url"] == "postgresql+psycopg://res@db/r"
    assert "url" not in sinks["database-2"]  # SQLite: a local file


@pytest.mark.postgres
def test_first_check_stores_then_matches(initialised_url: str, tmp_path: Path) -> None:
    """The first config is stored; the same config on another node then matches."""
    data = _data(tmp_path)
    data["cluster"]["database"] = initialised_url
    first = check_config(initialised_url, _config(data), node="node-a")
    assert first.outcome == "stored"
    other = _on_another_node(tmp_path)
    second = check_config(initialised_url, _config(other), node="node-b")
    assert (second.outcome, second.fingerprint) == ("same", first.fingerprint)


@pytest.mark.postgres
def test_mismatch_is_refused_naming_the_keys(initialised_url: str, tmp_path: Path) -> None:
    """A node whose config differs is refused; the error names the differing keys and where
    the stored one came from."""
    check_config(initialised_url, _config(_data(tmp_path)), node="node-a")
    changed = _data(tmp_path)
    changed["api"]["max_in_flight"] = 3
    changed["pipelines"][0]["poll"] = {"timeout": 60}
    with pytest.raises(ConfigMismatchError) as caught:
        check_config(initialised_url, _config(changed), node="node-b")
    assert caught.value.differing == ["api.max_in_flight", "pipelines[invoices].poll.timeout"]
    assert "api.max_in_flight, pipelines[invoices].poll.timeout" in str(caught.value)
    assert "stored by node node-a" in str(caught.value)
    assert "--adopt-config" in str(caught.value)


@pytest.mark.postgres
def test_adopt_replaces_the_stored_config(initialised_url: str, tmp_path: Path) -> None:
    """`adopt=True` makes a different config the cluster's; the old one is then refused."""
    original = _data(tmp_path)
    check_config(initialised_url, _config(original), node="node-a")
    changed = _data(tmp_path)
    changed["api"]["max_in_flight"] = 3
    assert check_config(initialised_url, _config(changed), node="b", adopt=True).outcome == (
        "adopted"
    )
    with pytest.raises(ConfigMismatchError):
        check_config(initialised_url, _config(original), node="node-a")


@pytest.mark.postgres
def test_stored_row_holds_no_secret(initialised_url: str, tmp_path: Path) -> None:
    """Everything the cluster stores about the config is free of the key and passwords."""
    check_config(initialised_url, _config(_data(tmp_path)), node="node-a")
    with psycopg.connect(libpq_url(initialised_url)) as conn:
        row = conn.execute(
            "SELECT cluster_meta::text FROM docutray_cluster.cluster_meta"
        ).fetchone()
    assert row is not None
    stored = row[0]
    assert '"max_in_flight"' in stored  # the document is there…
    for secret in (API_KEY, "db-pass-never-stored", "sink-pass-never-stored"):
        assert secret not in stored  # …without any secret
    assert hashlib.sha256(API_KEY.encode()).hexdigest() not in stored


@pytest.mark.postgres
def test_uninitialised_database(cluster_url: str, tmp_path: Path) -> None:
    """Checking against a database without our schema is a schema error."""
    with psycopg.connect(libpq_url(cluster_url), autocommit=True) as conn:
        conn.execute(
            "CREATE SCHEMA docutray_cluster; CREATE TABLE docutray_cluster.cluster_meta"
            " (config_fingerprint text, config_normalised jsonb, config_stored_by text,"
            " config_stored_at timestamptz)"
        )
    with pytest.raises(ClusterSchemaError, match="not initialised"):
        check_config(cluster_url, _config(_data(tmp_path)), node="node-a")
