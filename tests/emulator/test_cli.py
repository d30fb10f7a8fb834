"""Tests of the ``emulator`` CLI command."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from click.testing import CliRunner

from docutray_watch.emulator import DEFAULT_API_KEY
from docutray_watch.emulator.cli import emulator_command

_LAUNCH = "from docutray_watch.emulator.cli import emulator_command; emulator_command()"
_URL = re.compile(r"(http://127\.0\.0\.1:(\d+))")


def _read_line_matching(process: subprocess.Popen[str], pattern: re.Pattern[str]) -> str:
    """Read the process's stdout until a line matches, within a deadline."""
    assert process.stdout is not None
    deadline = time.monotonic() + 20.0
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=deadline - time.monotonic()):
                line = process.stdout.readline()
                if not line:
                    break
                if pattern.search(line):
                    return line
    raise AssertionError("the emulator never printed its URL")


@pytest.fixture(name="cli_process")
def cli_process_fixture() -> Iterator[subprocess.Popen[str]]:
    """The emulator command running in a subprocess on a free port, killed if still alive."""
    process = subprocess.Popen(
        [sys.executable, "-c", _LAUNCH, "--port", "0", "--latency", "0", "--step", "step_a"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


class TestEmulatorCommand:
    @pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
    def test_prints_url_serves_and_exits_cleanly(
        self, cli_process: subprocess.Popen[str], sig: signal.Signals
    ) -> None:
        """With --port 0 it prints the real URL and the key, serves, and exits 0 on a signal."""
        line = _read_line_matching(cli_process, _URL)
        match = _URL.search(line)
        assert match is not None
        assert int(match.group(2)) > 0
        assert DEFAULT_API_KEY in line
        url = match.group(1)
        headers = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
        known = httpx.post(
            f"{url}/api/steps-async/step_a", headers=headers, json={"image_url": "https://e/a.pdf"}
        )
        unknown = httpx.post(
            f"{url}/api/steps-async/step_b", headers=headers, json={"image_url": "https://e/a.pdf"}
        )
        assert (known.status_code, unknown.status_code) == (200, 404)
        cli_process.send_signal(sig)
        assert cli_process.wait(timeout=10) == 0

    def test_help_lists_the_options(self) -> None:
        """--help documents every option."""
        result = CliRunner().invoke(emulator_command, ["--help"])
        assert result.exit_code == 0
        for option in (
            "--host",
            "--port",
            "--api-key",
            "--step",
            "--latency",
            "--latency-jitter",
            "--latency-per-mb",
            "--error-rate",
            "--server-error-rate",
            "--server-error-status",
            "--rate-limit-rate",
            "--retry-after",
            "--hide-rate-limit",
            "--fractional-retry-after",
            "--drop-rate",
            "--drop-after-accept-rate",
            "--rate-limit-rps",
            "--max-file-size",
            "--seed",
            "--document-type",
            "--identify-type",
            "--identify-confidence",
            "--identify-id-field",
        ):
            assert option in result.output

    def test_rejects_a_rate_above_one(self) -> None:
        """A rate outside 0..1 is a usage error."""
        result = CliRunner().invoke(emulator_command, ["--error-rate", "1.5"])
        assert result.exit_code == 2

    @pytest.mark.parametrize(
        "args",
        [
            ["--document-type", "memo"],
            ["--identify-type", "application/pdf="],
            ["--document-type", "a b=Spaced"],
            ["--identify-id-field", "uuid"],
        ],
    )
    def test_rejects_bad_identify_options(self, args: list[str]) -> None:
        """A pair without ``=``, an invalid type code or an unknown id name is a usage error."""
        result = CliRunner().invoke(emulator_command, args)
        assert result.exit_code == 2

    def test_identify_options_shape_the_answers(self) -> None:
        """The catalogue, the rules, the confidence and the id name come from the options."""
        options = [
            *("--document-type", "memo=Memo", "--document-type", "letter=Letter"),
            *("--identify-type", "application/pdf=letter", "--identify-confidence", "0.5"),
            *("--identify-id-field", "id"),
        ]
        process = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, "--port", "0", "--latency", "0", *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            match = _URL.search(_read_line_matching(process, _URL))
            assert match is not None
            headers = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
            with httpx.Client(base_url=match.group(1), headers=headers) as client:
                types = client.get("/api/document-types").json()
                started = client.post(
                    "/api/identify-async", json={"image_url": "https://e/a.pdf"}
                ).json()
                status = client.get(f"/api/identify-async/status/{started['id']}").json()
            assert [item["codeType"] for item in types["data"]] == ["memo", "letter"]
            assert status["document_type"] == {
                "code": "letter",
                "name": "Letter",
                "confidence": 0.5,
            }
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=10)
