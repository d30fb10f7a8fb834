"""A refused key, an unreachable API or a refused step pauses work; it never fails a document.

Against the emulator on loopback: it refuses keys on demand (`configure(api_key=...)`), knows
only some step ids (404 for the others), and a port nobody listens on stands for an API down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pluggy
import pytest
from click.testing import CliRunner

from docutray_watch import hookimpl
from docutray_watch.cli import cli
from docutray_watch.config import Config
from docutray_watch.emulator import EmulatorConfig, EmulatorServer
from docutray_watch.engine import Engine
from docutray_watch.runner import (
    KEY_REFUSED,
    ApiKeyRefusedError,
    ApiUnreachableError,
    process_once,
    status_report,
)
from docutray_watch.samples import make_pdf
from tests.engine.conftest import ConfigFactory, pipeline_data

WRONG_KEY = "not-the-emulator-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def drop(inbox: Path, count: int, prefix: str = "doc") -> list[str]:
    names = [f"{prefix}{i}.pdf" for i in range(count)]
    for name in names:
        (inbox / name).write_bytes(make_pdf([name]))
    return names


async def until(engine: Engine, condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait for the engine's API gate to reach `condition` (woken by each pause change)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await engine.api_gate.wait_changed(0.1)  # woken by a change; re-checks the rest


def folder(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


class TestProcess:
    def test_a_refused_key_stops_process_at_once_with_77_and_leaves_every_file(
        self, tmp_path: Path, make_config: ConfigFactory, pm: pluggy.PluginManager
    ) -> None:
        """`process` with a wrong key stops at the first 401: exit 77, files still in the inbox."""
        config = make_config(api={"api_key": WRONG_KEY})
        inbox = tmp_path / "invoices" / "inbox"
        names = drop(inbox, 3)
        started = time.monotonic()
        with pytest.raises(ApiKeyRefusedError, match="refused the API key"):
            asyncio.run(process_once(config, plugin_manager=pm, echo=lambda _l: None))
        assert time.monotonic() - started < 10
        assert folder(inbox) == names
        assert folder(tmp_path / "invoices" / "failed") == []
        assert folder(tmp_path / "invoices" / "done") == []

    def test_the_cli_prints_one_line_and_exits_77(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """`docutray-watch process` with a refused key: exit 77 and one line naming the fix."""
        config = _write_config(tmp_path, emulator.base_url, WRONG_KEY)
        names = drop(tmp_path / "inbox", 2)
        result = CliRunner().invoke(
            cli, ["process", "-c", str(config), "--no-progress"], env={"DOCUTRAY_API_KEY": ""}
        )
        assert result.exit_code == 77, result.output
        assert result.output.count(KEY_REFUSED) == 1
        assert "processed" not in result.output  # no misleading summary
        assert WRONG_KEY not in result.output
        assert folder(tmp_path / "inbox") == names
        assert folder(tmp_path / "failed") == []

    def test_validate_reports_a_refused_key_with_77(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """`validate` (online) says the key was refused, on its own line, and exits 77."""
        config = _write_config(tmp_path, emulator.base_url, WRONG_KEY)
        result = CliRunner().invoke(cli, ["validate", "-c", str(config)], env={})
        assert result.exit_code == 77, result.output
        assert KEY_REFUSED in result.output
        assert WRONG_KEY not in result.output

    def test_an_unreachable_api_makes_process_give_up_after_api_wait_with_69(
        self, tmp_path: Path
    ) -> None:
        """`process` with nothing listening waits --api-wait, exits 69, fails nothing."""
        config = _write_config(tmp_path, f"http://127.0.0.1:{free_port()}", "some-key")
        names = drop(tmp_path / "inbox", 2)
        started = time.monotonic()
        result = CliRunner().invoke(
            cli,
            ["process", "-c", str(config), "--no-progress", "--api-wait", "1"],
            env={"DOCUTRAY_API_KEY": ""},
        )
        elapsed = time.monotonic() - started
        assert result.exit_code == 69, result.output
        assert "could not be reached for 1 s" in result.output
        assert 1 <= elapsed < 20
        assert folder(tmp_path / "inbox") == names
        assert folder(tmp_path / "failed") == []
        # Once `process` has stopped, nothing is paused any more: `status` does not say it is.
        status = CliRunner().invoke(cli, ["status", "-c", str(config), "--json"], env={})
        assert status.exit_code == 0, status.output
        assert json.loads(status.output)["api_paused"] is None

    def test_process_with_an_unreachable_api_raises_after_the_wait(
        self, tmp_path: Path, make_config: ConfigFactory, pm: pluggy.PluginManager
    ) -> None:
        """process_once raises ApiUnreachableError; the documents stay unfinished, not failed."""
        config = make_config(api={"base_url": f"http://127.0.0.1:{free_port()}", "max_retries": 0})
        drop(tmp_path / "invoices" / "inbox", 2)
        with pytest.raises(ApiUnreachableError):
            asyncio.run(process_once(config, plugin_manager=pm, echo=lambda _l: None, api_wait=0.5))
        report = status_report(config)
        assert "failed" not in report["pipelines"].get("invoices", {})
        assert report["failures"] == []


def _write_config(tmp_path: Path, base_url: str, key: str) -> Path:
    import yaml

    data: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "api": {"base_url": base_url, "api_key": key, "max_retries": 1},
        "pipelines": [
            {
                "name": "invoices",
                "watch": {"path": str(tmp_path / "inbox"), "settle": 0},
                "steps": ["stp_one"],
                "poll": {"initial": 0.05, "max": 0.2},
                "on_success": {"action": "move", "to": str(tmp_path / "done")},
                "on_failure": {"action": "move", "to": str(tmp_path / "failed")},
                "sinks": [{"type": "filesystem", "path": str(tmp_path / "out")}],
            }
        ],
    }
    (tmp_path / "inbox").mkdir(exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class TestEngine:
    def test_a_refused_key_pauses_everything_then_the_probe_resumes_it(
        self,
        tmp_path: Path,
        make_config: ConfigFactory,
        pm: pluggy.PluginManager,
        emulator: EmulatorServer,
    ) -> None:
        """Key refused: nothing fails, `status` shows the pause; key accepted: all complete."""
        config = make_config(api={"api_key": WRONG_KEY, "pause_probe_interval": 0.2})
        inbox = tmp_path / "invoices" / "inbox"
        names = drop(inbox, 4)

        async def scenario() -> None:
            engine = Engine(config, plugin_manager=pm)
            await engine.start()
            try:
                await engine.scan()
                await until(engine, lambda: engine.api_gate.credentials is not None)
                assert engine.api_gate.reasons() == [
                    "paused: the DocuTray API refused the API key (401)"
                ]
                assert engine.api_gate.paused  # the watchdog counts it as progress
                await until(engine, lambda: _recorded(config) is not None)
                assert "refused the API key" in str(_recorded(config))
                assert engine.summary.failed == 0
                emulator.configure(api_key=WRONG_KEY)  # the key works now
                async with asyncio.timeout(20):
                    await engine.wait_idle()
                assert engine.summary.outcomes["success"] == len(names)
                await until(engine, lambda: not engine.api_gate.paused)
            finally:
                await engine.stop(grace=0)

        asyncio.run(scenario())
        assert folder(tmp_path / "invoices" / "done") == names
        assert status_report(config)["api_paused"] is None

    def test_a_reload_with_a_new_key_resumes_at_once(
        self,
        tmp_path: Path,
        make_config: ConfigFactory,
        pm: pluggy.PluginManager,
        emulator: EmulatorServer,
    ) -> None:
        """A reload (SIGHUP) with the right key ends the pause without waiting for the probe."""
        config = make_config(api={"api_key": WRONG_KEY, "pause_probe_interval": 3600})
        good = make_config(api={"api_key": emulator.api_key, "pause_probe_interval": 3600})
        names = drop(tmp_path / "invoices" / "inbox", 2)

        async def scenario() -> None:
            engine = Engine(config, plugin_manager=pm)
            await engine.start()
            try:
                await engine.scan()
                await until(engine, lambda: engine.api_gate.credentials is not None)
                await engine.reload(good)
                async with asyncio.timeout(20):
                    await engine.wait_idle()
            finally:
                await engine.stop(grace=0)
            assert engine.summary.outcomes["success"] == len(names)

        asyncio.run(scenario())

    def test_time_paused_does_not_count_towards_poll_timeout(
        self,
        tmp_path: Path,
        make_config: ConfigFactory,
        pm: pluggy.PluginManager,
        emulator: EmulatorServer,
    ) -> None:
        """A key refused while polling, longer than poll.timeout: the document still succeeds."""
        timeout = 2.0
        config = make_config(
            pipeline_data(tmp_path, poll={"initial": 0.05, "max": 0.2, "timeout": timeout}),
            api={"pause_probe_interval": 0.2},
        )
        (tmp_path / "invoices" / "inbox" / "slow.pdf").write_bytes(
            # Still running when the pause ends (~2.7 s), done before poll.timeout + the pause.
            make_pdf(["slow"]) + b"DOCUTRAY-EMULATOR:LATENCY=3.2"
        )

        class RefuseKeyAfterSubmit(httpx.AsyncBaseTransport):
            """Loopback HTTP; right after the service accepts the document, it refuses the key."""

            def __init__(self) -> None:
                self.inner = httpx.AsyncHTTPTransport()
                self.submitted = asyncio.Event()

            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                response = await self.inner.handle_async_request(request)
                if request.method == "POST" and response.status_code == 200:
                    await asyncio.to_thread(emulator.configure, api_key=WRONG_KEY)
                    self.submitted.set()
                return response

            async def aclose(self) -> None:
                await self.inner.aclose()

        async def scenario() -> None:
            transport = RefuseKeyAfterSubmit()
            engine = Engine(config, plugin_manager=pm, transport=transport)
            await engine.start()
            try:
                await engine.scan()
                await until(engine, lambda: engine.api_gate.credentials is not None)
                paused_at = time.monotonic()
                # The pause under test must outlast poll.timeout: this waits for time, not state.
                await asyncio.sleep(timeout + 0.5)
                emulator.configure(api_key=config.api.api_key.get_secret_value())  # type: ignore[union-attr]
                async with asyncio.timeout(20):
                    await engine.wait_idle()
                assert time.monotonic() - paused_at > timeout
            finally:
                await engine.stop(grace=0)
            assert engine.summary.outcomes == {"success": 1}

        asyncio.run(scenario())

    def test_a_step_the_api_does_not_know_pauses_only_its_pipeline(
        self,
        tmp_path: Path,
        make_config: ConfigFactory,
        pm: pluggy.PluginManager,
        emulator: EmulatorServer,
    ) -> None:
        """404 on submit pauses that pipeline (with the reason); the others go on; nothing fails."""
        emulator.configure(step_ids=["stp_one"])
        config = make_config(
            pipeline_data(tmp_path, "good"),
            pipeline_data(tmp_path, "bad", steps=["stp_unknown"]),
            api={"pause_probe_interval": 0.3},
        )
        good = drop(tmp_path / "good" / "inbox", 3, "g")
        bad = drop(tmp_path / "bad" / "inbox", 2, "b")

        async def scenario() -> None:
            good_done = asyncio.Event()
            archived: list[str] = []

            class Watch:
                @hookimpl
                def after_document_archived(self, pipeline: str, path: Path) -> None:
                    archived.append(pipeline)
                    if archived.count("good") == len(good):
                        good_done.set()

            pm.register(Watch(), name="watch-archived")
            engine = Engine(config, plugin_manager=pm)
            await engine.start()
            try:
                await engine.scan()
                await until(engine, lambda: "bad" in engine.api_gate.pipelines)
                reason = engine.api_gate.pipelines["bad"].reason
                assert "404" in reason
                async with asyncio.timeout(20):
                    await good_done.wait()
                assert "bad" not in archived
                assert engine.summary.failed == 0
                assert engine.api_gate.reasons() == [f"pipeline bad paused: {reason}"]
                assert engine.api_gate.credentials is None
                emulator.configure(step_ids=None)  # the step exists now: the next trial passes
                async with asyncio.timeout(20):
                    await engine.wait_idle()
            finally:
                await engine.stop(grace=0)
            assert engine.summary.failed == 0

        asyncio.run(scenario())
        assert folder(tmp_path / "good" / "done") == good
        assert folder(tmp_path / "bad" / "done") == bad


def _recorded(config: Config) -> Any:
    with contextlib.suppress(Exception):
        return status_report(config)["api_paused"]
    return None


class TestUnreachable:
    def test_an_api_down_fails_nothing_and_work_resumes_when_it_is_back(
        self, tmp_path: Path, make_config: ConfigFactory, pm: pluggy.PluginManager
    ) -> None:
        """Nothing listening: everything waits (the reason is reported); back: all complete."""
        port = free_port()
        api = EmulatorServer(EmulatorConfig(latency=0.05), host="127.0.0.1", port=port)
        config = make_config(
            api={
                "base_url": f"http://127.0.0.1:{port}",
                "api_key": api.api_key,
                "pause_probe_interval": 0.2,
                "max_retries": 0,
            }
        )
        names = drop(tmp_path / "invoices" / "inbox", 3)

        async def scenario() -> None:
            engine = Engine(config, plugin_manager=pm)
            await engine.start()
            try:
                await engine.scan()
                await until(engine, lambda: engine.api_gate.unreachable is not None)
                [reason] = engine.api_gate.reasons()
                assert reason.startswith("paused: the DocuTray API cannot be reached")
                assert engine.summary.failed == 0
                await asyncio.to_thread(api.start)
                async with asyncio.timeout(20):
                    await engine.wait_idle()
            finally:
                await engine.stop(grace=0)
                await asyncio.to_thread(api.stop)
            assert engine.summary.outcomes == {"success": len(names)}

        asyncio.run(scenario())
        assert folder(tmp_path / "invoices" / "done") == names
