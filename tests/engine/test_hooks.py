"""Every hook fires, with its documented arguments, in the documented order (engine docstring)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pluggy

from docutray_watch import Document, hookimpl
from docutray_watch.config import Config
from docutray_watch.emulator import EmulatorServer
from docutray_watch.runner import process_once
from docutray_watch.samples import make_pdf
from docutray_watch.testing import HookRecorder
from tests.engine.conftest import ConfigFactory, pipeline_data


class Recorder(HookRecorder):
    """Records every hook call, vetoes files named veto*, and adds metadata to submissions."""

    @hookimpl
    def ignore_document(  # type: ignore[override]
        self, pipeline: str, path: Path, location: str
    ) -> str | None:
        super().ignore_document(pipeline, path, location)
        return "vetoed by the test plugin" if path.name.startswith("veto") else None

    @hookimpl
    def before_document_submit(  # type: ignore[override]
        self, pipeline: str, document: Document, step_id: str, metadata: dict[str, Any]
    ) -> dict[str, Any]:
        super().before_document_submit(pipeline, document, step_id, metadata)
        return {"added_by_plugin": document.name}

    def kwargs(self, name: str) -> dict[str, Any]:
        """The arguments of the last call of hook `name`."""
        return self.calls(name)[-1].kwargs


class Exploding:
    """An observer whose every hook raises."""

    @hookimpl
    def document_discovered(self, pipeline: str, document: Document) -> None:
        raise RuntimeError("observer bug")

    @hookimpl
    def after_document_archived(self, pipeline: str, outcome: str) -> None:
        raise RuntimeError("observer bug")


def run_with(config: Config, pm: pluggy.PluginManager) -> int:
    return asyncio.run(process_once(config, plugin_manager=pm, echo=lambda _line: None))


class TestHookOrder:
    def test_a_successful_document_fires_the_hooks_in_the_documented_order(
        self, tmp_path: Path, make_config: ConfigFactory, pm: pluggy.PluginManager
    ) -> None:
        """startup, ignore_document, document_discovered, before_document_submit,
        after_document_result, after_document_delivered, after_document_archived, shutdown."""
        recorder = Recorder()
        pm.register(recorder, name="recorder")
        config = make_config(pipeline_data(tmp_path))
        (tmp_path / "invoices" / "inbox" / "ok.pdf").write_bytes(make_pdf(["ok"]))
        assert run_with(config, pm) == 0
        assert recorder.names() == [
            "startup",
            "ignore_document",
            "document_discovered",
            "before_document_submit",
            "after_document_result",
            "after_document_delivered",
            "after_document_archived",
            "shutdown",
        ]
        calls = {call.name: call.kwargs for call in recorder.history}
        assert calls["startup"]["config"] is config
        assert calls["document_discovered"]["document"].name == "ok.pdf"
        assert calls["before_document_submit"]["step_id"] == "stp_one"
        record = calls["after_document_delivered"]["record"]
        assert record.status == "SUCCESS"
        assert calls["after_document_delivered"]["sink"] == "filesystem"
        assert Path(calls["after_document_delivered"]["receipt"]).exists()
        archived = calls["after_document_archived"]
        assert archived["outcome"] == "success"
        assert archived["destination"] == tmp_path / "invoices" / "done" / "ok.pdf"

    def test_an_error_result_fires_on_document_error_before_archiving(
        self, tmp_path: Path, make_config: ConfigFactory, pm: pluggy.PluginManager
    ) -> None:
        """An ERROR result: after_document_result, on_document_error, after_document_archived."""
        recorder = Recorder()
        pm.register(recorder, name="recorder")
        config = make_config(pipeline_data(tmp_path))
        (tmp_path / "invoices" / "inbox" / "e.pdf").write_bytes(
            make_pdf(["e"]) + b"DOCUTRAY-EMULATOR:ERROR"
        )
        assert run_with(config, pm) == 1
        assert recorder.names(document="e.pdf") == [
            "ignore_document",
            "document_discovered",
            "before_document_submit",
            "after_document_result",
            "on_document_error",
            "after_document_archived",
        ]
        error = recorder.kwargs("on_document_error")
        assert error["stage"] == "result"
        assert "ERROR" in error["error"]
        assert recorder.kwargs("after_document_archived")["outcome"] == "failed"

    def test_a_rejected_file_fires_on_document_error_without_submission(
        self, tmp_path: Path, make_config: ConfigFactory, pm: pluggy.PluginManager
    ) -> None:
        """A file rejected at intake reaches on_document_error (stage intake) and is archived."""
        recorder = Recorder()
        pm.register(recorder, name="recorder")
        config = make_config(pipeline_data(tmp_path))
        (tmp_path / "invoices" / "inbox" / "t.pdf").write_text("text")
        assert run_with(config, pm) == 1
        assert recorder.names(document="t.pdf") == [
            "ignore_document",
            "on_document_error",
            "after_document_archived",
        ]
        assert recorder.kwargs("on_document_error")["stage"] == "intake"
        assert recorder.kwargs("after_document_archived")["outcome"] == "rejected"


class TestHookEffects:
    def test_ignore_document_leaves_the_file_alone(
        self,
        tmp_path: Path,
        make_config: ConfigFactory,
        pm: pluggy.PluginManager,
        emulator: EmulatorServer,
    ) -> None:
        """A reason from ignore_document keeps the file in the inbox, unsubmitted."""
        pm.register(Recorder(), name="recorder")
        config = make_config(pipeline_data(tmp_path))
        (tmp_path / "invoices" / "inbox" / "veto.pdf").write_bytes(make_pdf(["v"]))
        assert run_with(config, pm) == 0
        assert (tmp_path / "invoices" / "inbox" / "veto.pdf").exists()
        assert emulator.stats().posts == 0

    def test_before_document_submit_adds_metadata(
        self, tmp_path: Path, make_config: ConfigFactory, pm: pluggy.PluginManager
    ) -> None:
        """Metadata returned by before_document_submit reaches the service with the document."""
        pm.register(Recorder(), name="recorder")
        config = make_config(pipeline_data(tmp_path, document_metadata={"source": "test"}))
        (tmp_path / "invoices" / "inbox" / "m.pdf").write_bytes(make_pdf(["m"]))
        assert run_with(config, pm) == 0
        (result,) = (tmp_path / "invoices" / "results").rglob("*.json")
        metadata = json.loads(result.read_text())["data"]["document_metadata"]
        assert metadata == {"source": "test", "added_by_plugin": "m.pdf"}

    def test_a_raising_observer_is_isolated(
        self, tmp_path: Path, make_config: ConfigFactory, pm: pluggy.PluginManager
    ) -> None:
        """An observer that raises is logged; the document and the other observers go on."""
        recorder = Recorder()
        pm.register(Exploding(), name="exploding")
        pm.register(recorder, name="recorder")
        config = make_config(pipeline_data(tmp_path))
        (tmp_path / "invoices" / "inbox" / "x.pdf").write_bytes(make_pdf(["x"]))
        assert run_with(config, pm) == 0
        assert "document_discovered" in recorder.names()
        assert "after_document_archived" in recorder.names()
        assert (tmp_path / "invoices" / "done" / "x.pdf").exists()

    def test_a_duplicate_skips_submission_hooks(
        self, tmp_path: Path, make_config: ConfigFactory, pm: pluggy.PluginManager
    ) -> None:
        """A duplicate goes from document_discovered straight to after_document_archived."""
        recorder = Recorder()
        pm.register(recorder, name="recorder")
        config = make_config(pipeline_data(tmp_path))
        data = make_pdf(["same"])
        (tmp_path / "invoices" / "inbox" / "first.pdf").write_bytes(data)
        assert run_with(config, pm) == 0
        (tmp_path / "invoices" / "inbox" / "second.pdf").write_bytes(data)
        assert run_with(config, pm) == 0
        assert recorder.names(document="second.pdf") == [
            "ignore_document",
            "document_discovered",
            "after_document_archived",
        ]
        assert recorder.kwargs("after_document_archived")["outcome"] == "duplicate"
