"""The configuration every node of a cluster must share, as a normalised document and its hash.

Nodes of one cluster must agree on what the work is (pipelines, steps, sinks, limits), but not
on what is local to a machine. So the normalised config leaves out:

- local paths: a local inbox (`watch.path` without `shared: true`) and its `on_success.to` /
  `on_failure.to`, `state_dir`, a filesystem sink's `path` (unless the sink says `shared: true`),
  a SQLite database sink's URL;
- per-node settings: `cluster.node`, `cluster.node_max_in_flight`,
  `cluster.node_max_connections`, `cluster.database` (hosts may reach the database by different
  names), `metrics`, `web`, `log`, `shutdown_grace`;
- secrets: `api.api_key` and `api.api_key_file` are dropped outright (not even a hash of the key
  is stored: a hash of a short key could be guessed), every other secret value (passwords in
  URLs, tokens, headers) is dropped or masked.

It is stored in the cluster database (`docutray_cluster.cluster_meta`) as JSON, so a node whose
config differs can say which keys differ. Pipelines are keyed by name and sinks by id, so order
in the file does not matter: `pipelines[invoices].sinks[s3].bucket`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from psycopg.types.json import Jsonb
from pydantic import SecretStr

from docutray_watch.cluster._db import CONFIG_LOCK, connect, take_lock
from docutray_watch.cluster.errors import ClusterSchemaError, ConfigMismatchError
from docutray_watch.config import Config, PipelineConfig

__all__ = [
    "ConfigCheck",
    "check_config",
    "config_fingerprint",
    "differing_keys",
    "normalised_config",
]

_NODE_LOCAL_TOP = ("state_dir", "metrics", "web", "log", "shutdown_grace")
_NODE_LOCAL_CLUSTER = ("node", "node_max_in_flight", "node_max_connections", "database")
_API_SECRETS = ("api_key", "api_key_file")
# Keys whose values are secrets wherever they appear (plugin sinks included).
_SECRET_KEYS = frozenset(
    {
        "password",
        "secret",
        "secret_access_key",
        "aws_secret_access_key",
        "aws_session_token",
        "token",
        "token_file",
        "headers",
        "api_key",
        "api_key_file",
    }
)
_MASKED = "**********"  # how pydantic renders a SecretStr in JSON mode


def normalised_config(config: Config) -> dict[str, Any]:
    """The config as JSON-ready data, without local paths, per-node settings or secrets."""
    data = config.model_dump(mode="json", by_alias=True)
    for key in _NODE_LOCAL_TOP:
        data.pop(key, None)
    for key in _API_SECRETS:
        data["api"].pop(key, None)
    if data.get("cluster") is not None:
        for key in _NODE_LOCAL_CLUSTER:
            data["cluster"].pop(key, None)
    pipelines: dict[str, Any] = {}
    for model, dumped in zip(config.pipelines, data.pop("pipelines"), strict=True):
        pipelines[model.name] = _normalised_pipeline(model, dumped)
    data["pipelines"] = pipelines
    return cast("dict[str, Any]", _without_secrets(data))


def _normalised_pipeline(model: PipelineConfig, data: dict[str, Any]) -> dict[str, Any]:
    if model.watch is not None and not model.watch.shared:  # a bucket is shared by nature
        data["watch"].pop("path", None)
        for action in ("on_success", "on_failure"):
            data[action].pop("to", None)
    sinks: dict[str, Any] = {}
    for sink_model, sink in zip(model.sinks, data.pop("sinks"), strict=True):
        shared = bool(sink.get("shared", False))
        if sink.get("type") == "filesystem" and not shared:
            sink.pop("path", None)
        url = getattr(sink_model, "url", None)
        if isinstance(url, SecretStr):
            sink["url"] = _shareable_url(url.get_secret_value(), shared=shared)
            if sink["url"] is None:
                sink.pop("url")
        sinks[str(sink.pop("id"))] = sink
    data["sinks"] = sinks
    return data


def _shareable_url(raw: str, *, shared: bool) -> str | None:
    """A database URL without its password; None for a local one (SQLite) or one unparsable."""
    from sqlalchemy.engine import URL, make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        return None
    if url.get_backend_name() == "sqlite" and not shared:
        return None
    # `URL.set(password=None)` would keep the password (None means "unchanged" there).
    without = URL.create(
        url.drivername, url.username, None, url.host, url.port, url.database, url.query
    )
    return without.render_as_string(hide_password=False)


def _without_secrets(data: Any) -> Any:
    if isinstance(data, dict):
        return {
            key: _without_secrets(value)
            for key, value in data.items()
            if key not in _SECRET_KEYS and value != _MASKED
        }
    if isinstance(data, list):
        return [_without_secrets(value) for value in data]
    return data


def config_fingerprint(normalised: Mapping[str, Any]) -> str:
    """The SHA-256 of the normalised config's canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(normalised, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def differing_keys(stored: Mapping[str, Any], mine: Mapping[str, Any]) -> list[str]:
    """The key paths whose values differ, or that only one side has (`api.max_in_flight`,
    `pipelines[invoices].steps`), sorted."""
    return sorted(set(_diff(stored, mine, ())))


def _diff(a: Any, b: Any, path: tuple[str, ...]) -> Iterator[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in a.keys() | b.keys():
            if key not in a or key not in b:
                yield _format((*path, key))
            else:
                yield from _diff(a[key], b[key], (*path, key))
    elif a != b:
        yield _format(path)


def _format(path: tuple[str, ...]) -> str:
    out = ""
    for index, part in enumerate(path):
        # Pipelines are keyed by name, a pipeline's sinks by id: names, not keys.
        if path[0] == "pipelines" and (index == 1 or (index == 3 and path[2] == "sinks")):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "<root>"


# --- stored in the cluster ----------------------------------------------------------------------

_ADOPT_HINT = (
    "make this file agree with the other nodes' or, to make it the cluster's configuration once "
    "every node has it, run `docutray-watch cluster init --adopt-config -c FILE`"
)


@dataclass(frozen=True)
class ConfigCheck:
    """The outcome of `check_config`."""

    outcome: Literal["stored", "same", "adopted"]
    """`stored`: the cluster had none, this one is now its configuration; `same`: it matches;
    `adopted`: it replaced a different one (`adopt=True`)."""
    fingerprint: str


def check_config(url: str, config: Config, *, node: str, adopt: bool = False) -> ConfigCheck:
    """Compare this config with the cluster's, storing it when the cluster has none (or when
    `adopt`); `ConfigMismatchError` (exit 78) names the keys that differ."""
    normalised = normalised_config(config)
    fingerprint = config_fingerprint(normalised)
    with connect(url) as conn, conn.transaction():
        take_lock(conn, CONFIG_LOCK)
        row = conn.execute(
            "SELECT config_fingerprint, config_normalised, config_stored_by,"
            " to_char(config_stored_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
            " FROM docutray_cluster.cluster_meta FOR UPDATE"
        ).fetchone()
        if row is None:
            raise ClusterSchemaError(
                "the cluster database is not initialised: run `docutray-watch cluster init "
                "-c FILE` (from any one node)"
            )
        stored, stored_normalised, stored_by, stored_at = row
        if stored == fingerprint:
            return ConfigCheck("same", fingerprint)
        if stored is not None and not adopt:
            keys = differing_keys(stored_normalised, normalised)
            raise ConfigMismatchError(
                f"this node's configuration differs from the cluster's (stored by node "
                f"{stored_by} at {stored_at} UTC) in {len(keys)} key(s): {', '.join(keys)}; "
                f"{_ADOPT_HINT}",
                keys,
            )
        conn.execute(
            "UPDATE docutray_cluster.cluster_meta SET config_fingerprint = %s,"
            " config_normalised = %s, config_stored_at = now(), config_stored_by = %s",
            (fingerprint, Jsonb(normalised), node),
        )
    return ConfigCheck("stored" if stored is None else "adopted", fingerprint)
