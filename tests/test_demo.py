"""`docutray-watch demo`: readable output, piped or not, and nothing left behind."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from docutray_watch.cli import cli
from docutray_watch.demo import run_demo

LABEL = 13  # the column every value of the demo's output starts in


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(name="temp_root")
def temp_root_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder the demo's temporary folder is made in."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


class TestDemo:
    def test_piped_output_has_no_json_log_lines_and_no_leftovers(self, temp_root: Path) -> None:
        """Piped (not a terminal), the demo's output is text only, and its temporary folder goes."""
        result = CliRunner().invoke(cli, ["demo", "--latency", "0.02"])
        assert result.exit_code == 0, result.output
        assert "document_failed" in result.stderr  # the expected rejection, logged as text
        assert not [line for line in result.stderr.splitlines() if line.startswith("{")]
        assert "doc_sha256=5574270d0a90 " in result.stderr  # 12 hex digits on a console
        assert list(temp_root.iterdir()) == []
        assert "removed:" in result.output

    def test_summary_lines_up_and_names_where_failed_files_are(self, temp_root: Path) -> None:
        """The pass's summary sits under a label like every other line; failures show failed/."""
        lines: list[str] = []
        assert run_demo(latency=0.02, echo=lines.append) == 0
        start = next(i for i, line in enumerate(lines) if line.startswith("summary:"))
        summary = "processed 6 document(s): rejected 1, success 5"
        assert lines[start] == f"{'summary:':<{LABEL}}{summary}"
        failure = lines[start + 1]
        assert failure.startswith(" " * LABEL + "failed [demo] ")
        assert "/failed/notes.pdf: unsupported file type" in failure
        assert "/inbox/" not in failure

    def test_json_excerpt_says_it_was_cut(self, tmp_path: Path) -> None:
        """The result excerpt ends with an ellipsis line when the file is longer than shown."""
        lines: list[str] = []
        assert run_demo(tmp_path / "demo", latency=0.02, echo=lines.append) == 0
        start = next(i for i, line in enumerate(lines) if line.startswith("results/"))
        excerpt = lines[start + 1 : lines.index("", start)]
        assert excerpt[0] == "  {"
        assert excerpt[-1].startswith("  … (")
        assert excerpt[-1].endswith("more lines in the file)")

    def test_a_given_folder_is_kept(self, tmp_path: Path) -> None:
        """With --dir, everything stays, and the demo says where and what to try next."""
        folder = tmp_path / "demo"
        lines: list[str] = []
        assert run_demo(folder, latency=0.02, echo=lines.append) == 0
        assert (folder / "failed" / "notes.pdf").exists()
        assert (folder / "config.yaml").exists()
        assert f"{'try:':<{LABEL}}docutray-watch status -c {folder / 'config.yaml'}" in lines
