"""Documentation meta-tests: a new option, command or doc page cannot go undocumented."""

from __future__ import annotations

import re
from pathlib import Path

import click
from pydantic import BaseModel

from docutray_watch.cli import cli
from docutray_watch.config import (
    ActionConfig,
    ApiConfig,
    ClusterConfig,
    Config,
    IdentifyConfig,
    LogConfig,
    MetricsConfig,
    PipelineConfig,
    PollConfig,
    TimeoutConfig,
    WatchConfig,
    WebConfig,
)
from docutray_watch.sinks.base import SinkConfig, SinkRetry

ROOT = Path(__file__).resolve().parent.parent
MODELS: list[type[BaseModel]] = [
    Config,
    ApiConfig,
    TimeoutConfig,
    PipelineConfig,
    IdentifyConfig,
    WatchConfig,
    PollConfig,
    ActionConfig,
    MetricsConfig,
    WebConfig,
    ClusterConfig,
    LogConfig,
    SinkConfig,
    SinkRetry,
]


class TestDocs:
    def test_every_config_option_is_in_configuration_md(self) -> None:
        """Each field of each config model is named (as `name`) in docs/configuration.md."""
        text = (ROOT / "docs" / "configuration.md").read_text()
        missing = [
            f"{model.__name__}.{name}"
            for model in MODELS
            for name in model.model_fields
            if f"`{name}`" not in text
        ]
        assert missing == []

    def test_every_command_is_in_the_readme_and_operations(self) -> None:
        """Each CLI command appears in the README's command table and in docs/operations.md."""
        readme = (ROOT / "README.md").read_text()
        operations = (ROOT / "docs" / "operations.md").read_text()
        with click.Context(cli) as ctx:
            names = cli.list_commands(ctx)
        assert "emulator" in names
        for name in names:
            assert f"docutray-watch {name}" in readme, name
        for name in ("run", "status", "retry", "validate"):
            assert f"docutray-watch {name}" in operations, name

    def test_readme_links_point_to_existing_files(self) -> None:
        """Every relative link in the README and in docs/ resolves to a file."""
        pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
        broken = []
        for page in pages:
            for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
                if "://" in target:
                    continue
                if not (page.parent / target).exists():
                    broken.append(f"{page.name} → {target}")
        assert broken == []

    def test_readme_starts_with_the_demo_and_test_commands(self) -> None:
        """The README opens with the install+demo command, then the test command CI runs."""
        readme = (ROOT / "README.md").read_text()
        blocks = re.findall(r"```sh\n(.*?)\n```", readme, flags=re.S)
        assert "docutray-watch demo" in blocks[0]
        test_command = blocks[1].split("&&")[-1].strip()
        assert test_command.startswith("python -m pytest")
        assert test_command in (ROOT / ".ci" / "run").read_text()

    def test_readme_says_how_long_the_tests_take_and_what_the_figure_lines_are(self) -> None:
        """Right after the test command, the README gives its duration and explains the
        `[reliability:ci]` lines the suite prints among the dots."""
        readme = (ROOT / "README.md").read_text()
        after_command = readme.split("plugins/docutray-watch-webhook/tests\n```\n", 1)[1]
        paragraph = after_command.strip().split("\n\n", 1)[0]
        assert re.search(r"about \d+( to \d+)? minutes", paragraph)
        assert "`[reliability:ci] <scenario>: key=value …`" in paragraph
        harness = (ROOT / "tests" / "reliability" / "conftest.py").read_text()
        assert 'f"[reliability:{sizes.label}] {scenario}: "' in harness
