"""Tests of the plugin as docutray-watch sees it: registration, config validation, entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pluggy
import pytest
from docutray_watch.config import ConfigError, config_json_schema, parse_config
from docutray_watch.plugins import (
    collect_sink_types,
    config_sink_types,
    get_plugin_manager,
)

import docutray_watch_webhook
from docutray_watch_webhook import WebhookConfig, WebhookSink


@pytest.fixture(name="pm")
def fixture_pm() -> pluggy.PluginManager:
    """A plugin manager with the built-ins and this plugin, without installed entry points."""
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(docutray_watch_webhook)
    return pm


@pytest.fixture(name="config_data")
def fixture_config_data(tmp_path: Path) -> dict[str, Any]:
    """A valid config dict with one webhook sink (a fresh copy per test)."""
    return {
        "state_dir": str(tmp_path / "state"),
        "pipelines": [
            {
                "name": "invoices",
                "watch": {"path": str(tmp_path / "inbox")},
                "steps": ["stp_invoice_fields"],
                "sinks": [
                    {
                        "type": "webhook",
                        "url": "https://erp.example.com/hooks/docutray",
                        "secret": "${WEBHOOK_SECRET}",
                    }
                ],
            }
        ],
    }


def _issue_paths(error: ConfigError) -> list[str]:
    return [issue.path for issue in error.issues]


class TestRegistration:
    def test_registers_webhook_sink_type(self, pm: pluggy.PluginManager) -> None:
        """With the module registered, `collect_sink_types` offers `webhook` → WebhookSink."""
        sink_types = collect_sink_types(pm)
        assert sink_types["webhook"].sink_class is WebhookSink
        assert sink_types["webhook"].config_model is WebhookConfig

    def test_builtins_are_unaffected(self, pm: pluggy.PluginManager) -> None:
        """The plugin adds its type next to the built-in ones, without a clash."""
        assert {"filesystem", "webhook"} <= set(collect_sink_types(pm))

    def test_entry_point_is_found_once_installed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The installed distribution is found through the `docutray_watch` entry-point group."""
        monkeypatch.delenv("DOCUTRAY_WATCH_DISABLE_PLUGINS", raising=False)
        sink_types = collect_sink_types(get_plugin_manager())
        assert "webhook" in sink_types, "is docutray-watch-webhook installed (pip install -e .)?"
        assert sink_types["webhook"].plugin == "webhook"

    def test_facade_exports_exist(self) -> None:
        """Every name in `__all__` is importable from the package."""
        missing = [
            n for n in docutray_watch_webhook.__all__ if not hasattr(docutray_watch_webhook, n)
        ]
        assert missing == []


class TestConfigValidation:
    def test_valid_config_expands_secret(
        self, pm: pluggy.PluginManager, config_data: dict[str, Any]
    ) -> None:
        """`${WEBHOOK_SECRET}` is expanded into the sink's SecretStr, hidden in the repr."""
        config = parse_config(
            config_data, sink_types=config_sink_types(pm), environ={"WEBHOOK_SECRET": "s3cr3t"}
        )
        [sink] = config.pipelines[0].sinks
        assert isinstance(sink, WebhookConfig)
        assert sink.secret is not None
        assert sink.secret.get_secret_value() == "s3cr3t"
        assert sink.id == "webhook"
        assert "s3cr3t" not in repr(config)

    def test_missing_url_names_its_path(
        self, pm: pluggy.PluginManager, config_data: dict[str, Any]
    ) -> None:
        """A webhook sink without `url` gives an error naming `pipelines[0].sinks[0].url`."""
        del config_data["pipelines"][0]["sinks"][0]["url"]
        with pytest.raises(ConfigError) as info:
            parse_config(
                config_data, sink_types=config_sink_types(pm), environ={"WEBHOOK_SECRET": "s3cr3t"}
            )
        assert _issue_paths(info.value) == ["pipelines[0].sinks[0].url"]

    def test_missing_secret_names_its_path(
        self, pm: pluggy.PluginManager, config_data: dict[str, Any]
    ) -> None:
        """Without `secret` (and without allow_unsigned) the error names the `secret` path."""
        del config_data["pipelines"][0]["sinks"][0]["secret"]
        with pytest.raises(ConfigError) as info:
            parse_config(config_data, sink_types=config_sink_types(pm), environ={})
        assert _issue_paths(info.value) == ["pipelines[0].sinks[0].secret"]
        assert "allow_unsigned" in str(info.value)

    def test_bad_url_names_its_path(
        self, pm: pluggy.PluginManager, config_data: dict[str, Any]
    ) -> None:
        """An ftp:// URL is rejected at `pipelines[0].sinks[0].url`."""
        config_data["pipelines"][0]["sinks"][0]["url"] = "ftp://example.com/x"
        with pytest.raises(ConfigError) as info:
            parse_config(
                config_data, sink_types=config_sink_types(pm), environ={"WEBHOOK_SECRET": "s3cr3t"}
            )
        assert _issue_paths(info.value) == ["pipelines[0].sinks[0].url"]

    def test_unknown_option_is_rejected(
        self, pm: pluggy.PluginManager, config_data: dict[str, Any]
    ) -> None:
        """A misspelt option is an error, like for every docutray-watch sink."""
        config_data["pipelines"][0]["sinks"][0]["verify_ssl"] = False
        with pytest.raises(ConfigError) as info:
            parse_config(
                config_data, sink_types=config_sink_types(pm), environ={"WEBHOOK_SECRET": "s3cr3t"}
            )
        assert _issue_paths(info.value) == ["pipelines[0].sinks[0].verify_ssl"]

    def test_json_schema_documents_the_options(self, pm: pluggy.PluginManager) -> None:
        """The config JSON Schema carries the webhook options with their descriptions."""
        schema = config_json_schema(config_sink_types(pm))
        [webhook] = [d for name, d in schema["$defs"].items() if name.endswith("_webhook")]
        assert {"url", "secret", "allow_unsigned", "headers", "verify_tls"} <= set(
            webhook["properties"]
        )
        assert all(p.get("description") for p in webhook["properties"].values())
