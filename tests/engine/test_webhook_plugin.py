"""The third-party webhook plugin, installed through its entry point, driven by the engine."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from docutray_watch.config import parse_config
from docutray_watch.emulator import EmulatorServer
from docutray_watch.plugins import (
    collect_sink_types,
    config_sink_types,
    get_plugin_manager,
)
from docutray_watch.runner import process_once
from docutray_watch.samples import make_pdf
from tests.engine.conftest import pipeline_data

webhook = pytest.importorskip("docutray_watch_webhook")
from docutray_watch_webhook.testing import WebhookReceiver  # noqa: E402


class TestWebhookPipeline:
    def test_a_pipeline_with_type_webhook_delivers_to_a_local_receiver(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """The entry-point plugin's sink receives each result, signed, through the engine."""
        pm = get_plugin_manager()  # with entry points: finds the installed plugin
        assert collect_sink_types(pm)["webhook"].plugin == "webhook"
        with WebhookReceiver() as receiver:
            spec = pipeline_data(tmp_path, steps=["stp_a", "stp_b"])
            spec["sinks"] = [{"type": "webhook", "url": receiver.url, "secret": "s3cret"}]
            config = parse_config(
                {
                    "api": {"base_url": emulator.base_url, "api_key": emulator.api_key},
                    "state_dir": str(tmp_path / "state"),
                    "pipelines": [spec],
                },
                sink_types=config_sink_types(pm),
            )
            (tmp_path / "invoices" / "inbox" / "w.pdf").write_bytes(make_pdf(["w"]))
            lines: list[str] = []
            code = asyncio.run(process_once(config, plugin_manager=pm, echo=lines.append))
            assert code == 0, lines
            assert len(receiver.requests) == 2
            steps = set()
            for request in receiver.requests:
                body = json.loads(request.body)
                steps.add(body["step_id"])
                assert body["document"]["name"] == "w.pdf"
                header = request.headers["X-DocuTray-Signature"]
                assert webhook.verify_signature(request.body, header, "s3cret")
            assert steps == {"stp_a", "stp_b"}
        assert (tmp_path / "invoices" / "done" / "w.pdf").exists()
