"""The `cluster:` block of the configuration: defaults, cross-checks, errors naming the key."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from docutray_watch.cli import cli
from docutray_watch.config import ConfigError, parse_config
from tests.cluster.conftest import config_data

URL = "postgresql+psycopg://docutray:s3cret-pw@db.example/docutray"


def _parse(data: dict[str, Any]) -> Any:
    return parse_config(data, environ={})


def _error_paths(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        _parse(data)
    return [issue.path for issue in caught.value.issues]


def test_defaults(tmp_path: Path) -> None:
    """Heartbeat every 10 s, stalled after 30 s, no per-node caps, no shared folder."""
    config = _parse(config_data(tmp_path, URL))
    assert config.cluster.heartbeat_interval == 10
    assert config.cluster.stalled_timeout == 30
    assert config.cluster.node_max_in_flight is None
    assert config.cluster.node_max_connections is None
    assert config.pipelines[0].watch.shared is False


def test_no_cluster_block_is_single_node(tmp_path: Path) -> None:
    """Without `cluster:` the config is a single node's, as before."""
    data = config_data(tmp_path, URL)
    del data["cluster"]
    assert _parse(data).cluster is None


def test_database_is_required(tmp_path: Path) -> None:
    """A cluster block without `database` names `cluster.database`."""
    data = config_data(tmp_path, URL)
    del data["cluster"]["database"]
    assert _error_paths(data) == ["cluster.database"]


def test_database_must_be_postgresql_and_is_not_echoed(tmp_path: Path) -> None:
    """A MySQL URL is refused at `cluster.database`, without its password in the message."""
    data = config_data(tmp_path, "mysql://docutray:s3cret-pw@db/x")
    with pytest.raises(ConfigError) as caught:
        _parse(data)
    assert [issue.path for issue in caught.value.issues] == ["cluster.database"]
    assert "s3cret-pw" not in str(caught.value)


def test_database_password_is_a_secret(tmp_path: Path) -> None:
    """The URL is kept as a secret: its repr does not show the password."""
    config = _parse(config_data(tmp_path, URL))
    assert "s3cret-pw" not in repr(config.cluster)
    assert config.cluster.database.get_secret_value() == URL


def test_node_required_with_a_local_inbox(tmp_path: Path) -> None:
    """A pipeline watching a folder that is not shared needs an explicit `cluster.node`."""
    data = config_data(tmp_path, URL)
    del data["cluster"]["node"]
    with pytest.raises(ConfigError) as caught:
        _parse(data)
    assert [issue.path for issue in caught.value.issues] == ["cluster.node"]
    assert "invoices" in str(caught.value)


def test_node_defaults_to_the_host_name_when_every_inbox_is_shared(tmp_path: Path) -> None:
    """With only `shared: true` folders the node is named after the host."""
    data = config_data(tmp_path, URL)
    del data["cluster"]["node"]
    data["pipelines"][0]["watch"]["shared"] = True
    config = _parse(data)
    expected = socket.gethostname()[:64]
    assert config.cluster.node_name == expected


def test_node_name_pattern(tmp_path: Path) -> None:
    """A node name with a space or a slash is refused at `cluster.node`."""
    data = config_data(tmp_path, URL, node="scan 01/a")
    assert _error_paths(data) == ["cluster.node"]


def test_node_max_in_flight_at_most_the_cluster_cap(tmp_path: Path) -> None:
    """`node_max_in_flight` above `api.max_in_flight` is refused at its own key."""
    data = config_data(tmp_path, URL, node_max_in_flight=8)
    data["api"]["max_in_flight"] = 4
    assert _error_paths(data) == ["cluster.node_max_in_flight"]
    data["api"]["max_in_flight"] = 8
    assert _parse(data).cluster.node_max_in_flight == 8


def test_node_max_connections_at_least_one_per_pool(tmp_path: Path) -> None:
    """`node_max_connections` below 5 (a connection for each pool, the listener and the
    heartbeat) is refused at its own key, saying why; 5 is taken."""
    data = config_data(tmp_path, URL, node_max_connections=4)
    with pytest.raises(ConfigError) as caught:
        _parse(data)
    assert [issue.path for issue in caught.value.issues] == ["cluster.node_max_connections"]
    assert "at least 5" in str(caught.value)
    data["cluster"]["node_max_connections"] = 5
    assert _parse(data).cluster.node_max_connections == 5


def test_stalled_timeout_more_than_two_heartbeats(tmp_path: Path) -> None:
    """A stalled timeout of two heartbeats or less is refused at `cluster.stalled_timeout`."""
    data = config_data(tmp_path, URL, heartbeat_interval=5, stalled_timeout=10)
    assert _error_paths(data) == ["cluster.stalled_timeout"]
    data["cluster"]["stalled_timeout"] = 10.5
    assert _parse(data).cluster.stalled_timeout == 10.5


def test_unknown_cluster_key(tmp_path: Path) -> None:
    """A misspelt key in the block is an error naming it."""
    data = config_data(tmp_path, URL, heartbeat=5)
    assert _error_paths(data) == ["cluster.heartbeat"]


@pytest.mark.parametrize(
    ("cluster", "path"),
    [
        ({"stalled_timeout": 1}, "cluster.stalled_timeout"),
        ({"node_max_in_flight": 0}, "cluster.node_max_in_flight"),
        ({"node_max_connections": 4}, "cluster.node_max_connections"),
        ({"node_max_connections": "many"}, "cluster.node_max_connections"),
        ({"database": "sqlite:///x.db"}, "cluster.database"),
    ],
)
def test_cli_exits_78_naming_the_key(
    tmp_path: Path, cluster: dict[str, Any], path: str, write_config: Any
) -> None:
    """`validate --offline` on a bad cluster block exits 78 with the key path in the message."""
    config = write_config(URL, **{f"cluster__{key}": value for key, value in cluster.items()})
    result = CliRunner().invoke(cli, ["validate", "--offline", "-c", str(config)])
    assert result.exit_code == 78
    assert f": {path}: " in result.stderr
