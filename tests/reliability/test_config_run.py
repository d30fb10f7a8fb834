"""Config fuzz through `docutray-watch run`: every broken config exits 78, one line, no traceback.

`tests/test_config.py` generates the 100 broken configs and checks them with `validate`; here the
same configs go through `run` (which needs the API key and must not start on any of them), plus
configs that only `run` can find unusable: a state folder or journal it cannot open, a watched
folder that is a file, a metrics address another program holds.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from click.testing import CliRunner

from docutray_watch.cli import cli
from docutray_watch.config import EX_CONFIG
from tests.reliability.conftest import Report, Sizes, elapsed_since
from tests.test_config import CANARY_KEY, FuzzCase, _check_output, _fuzz_cases

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "docutray_watch.cli"]
UNSET = ("FUZZ_UNSET_0", "FUZZ_UNSET_1", "FUZZ_UNSET_STEP", "DOCUTRAY_WATCH_CONFIG")


@pytest.fixture(name="restore_logging")
def restore_logging_fixture() -> Iterator[None]:
    """The CLI configures logging globally: put the root logger and structlog back after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def process_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env["DOCUTRAY_API_KEY"] = CANARY_KEY
    return env


def run_process(path: Path, timeout: float = 60) -> tuple[int, str]:
    """`docutray-watch run -c path` as a real process (killed if it does not stop by itself)."""
    try:
        done = subprocess.run(
            [*CLI, "--log-format", "json", "run", "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=process_env(),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        return -1, f"still running after {timeout} s: the config was accepted\n{exc.stderr!r}"
    return done.returncode, done.stdout + done.stderr


def run_only_cases(tmp: Path, taken_port: int) -> list[tuple[str, dict[str, Any], str, Any]]:
    """(label, config, YAML path the error must name, setup) for problems only `run` sees."""

    def config(**changes: Any) -> dict[str, Any]:
        data: dict[str, Any] = {
            "api": {"base_url": "http://127.0.0.1:9", "api_key": "${DOCUTRAY_API_KEY}"},
            "state_dir": str(tmp / "run-state"),
            "pipelines": [
                {
                    "name": "first",
                    "watch": {"path": str(tmp / "run-in-1")},
                    "steps": ["stp_a"],
                    "sinks": [{"type": "filesystem", "path": str(tmp / "run-out")}],
                },
                {
                    "name": "second",
                    "watch": {"path": str(tmp / "run-in-2")},
                    "steps": ["stp_b"],
                    "sinks": [{"type": "filesystem", "path": str(tmp / "run-out")}],
                },
            ],
        }
        for key, value in changes.items():
            if key == "second_watch":
                data["pipelines"][1]["watch"]["path"] = value
            else:
                data[key] = value
        return data

    a_file = tmp / "a-file"
    garbage = tmp / "garbage-state"

    def make_file() -> None:
        a_file.write_text("not a folder")

    def make_garbage_journal() -> None:
        garbage.mkdir(exist_ok=True)
        (garbage / "journal.sqlite3").write_bytes(b"this is not a SQLite database" * 100)

    return [
        ("state_dir below a file", config(state_dir=str(a_file / "state")), "state_dir", make_file),
        (
            "journal is not a database",
            config(state_dir=str(garbage)),
            "state_dir",
            make_garbage_journal,
        ),
        (
            "watched folder is a file",
            config(second_watch=str(a_file)),
            "pipelines[1].watch.path",
            make_file,
        ),
        (
            "metrics address taken by another program",
            config(metrics={"listen": f"127.0.0.1:{taken_port}"}),
            "metrics.listen",
            None,
        ),
        (
            "status page address taken by another program",
            config(web={"listen": f"127.0.0.1:{taken_port}"}),
            "web.listen",
            None,
        ),
    ]


def check_run_only(label: str, expected_path: str, code: int, output: str) -> None:
    where = f"case {label!r}:\n{output}"
    assert code == EX_CONFIG, where
    assert "Traceback" not in output, where
    assert '"exception"' not in output, where
    errors = []
    for line in output.splitlines():
        entry = json.loads(line)  # every line is one JSON log entry
        if entry.get("level") == "error":
            errors.append(entry)
    assert len(errors) == 1, where
    (problem,) = errors[0]["problems"]
    assert problem.startswith(f"{expected_path}: "), where


class TestConfigFuzzThroughRun:
    def test_broken_configs_stop_run_with_exit_78(
        self,
        tmp_path: Path,
        restore_logging: None,
        sizes: Sizes,
        report: Report,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The 100 broken configs make `run` exit 78 with one line naming the YAML path."""
        started = time.monotonic()
        cases: list[FuzzCase] = _fuzz_cases(tmp_path)
        files = []
        for index, case in enumerate(cases):
            path = tmp_path / f"fuzz-{index:03d}.yaml"
            path.write_text(case.text)
            if case.setup is not None:
                case.setup(tmp_path)
            files.append(path)

        def must_not_start(*args: Any, **kwargs: Any) -> int:
            raise AssertionError("run accepted a broken config and started the daemon")

        monkeypatch.setattr("docutray_watch.daemon.run_daemon", must_not_start)
        # Full size: every case as a real process; CI: every tenth, the rest in-process.
        as_process = [i for i in range(len(cases)) if sizes.full or i % 10 == 0]
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = {i: pool.submit(run_process, files[i]) for i in as_process}
            runner = CliRunner()
            env: dict[str, str | None] = {name: None for name in UNSET}
            env["DOCUTRAY_API_KEY"] = CANARY_KEY
            for index, case in enumerate(cases):
                if index in futures:
                    continue
                result = runner.invoke(cli, ["run", "-c", str(files[index])], env=env)
                output = result.stdout + result.stderr
                if result.exception is not None and not isinstance(result.exception, SystemExit):
                    output += f"\nTraceback: {result.exception!r}"
                _check_output(case, result.exit_code, output)
            for index, future in futures.items():
                code, output = future.result()
                _check_output(cases[index], code, output)
        report(
            "config-fuzz-run",
            configs=len(cases),
            real_processes=len(as_process),
            in_process=len(cases) - len(as_process),
            exit_78=len(cases),
            tracebacks=0,
            seconds=elapsed_since(started),
        )

    def test_configs_only_run_can_find_unusable_exit_78(
        self, tmp_path: Path, report: Report
    ) -> None:
        """Unusable state folder, journal, watched folder or metrics address: 78, one line."""
        started = time.monotonic()
        with socket.create_server(("127.0.0.1", 0)) as taken:
            cases = run_only_cases(tmp_path, taken.getsockname()[1])
            for label, data, expected_path, setup in cases:
                if setup is not None:
                    setup()
                path = tmp_path / "run-only.yaml"
                path.write_text(yaml.safe_dump(data))
                code, output = run_process(path)
                check_run_only(label, expected_path, code, output)
        report(
            "config-run-only",
            configs=len(cases),
            exit_78=len(cases),
            tracebacks=0,
            seconds=elapsed_since(started),
        )
