"""Packaging as a release: the version, the sdist and wheel contents, CI testing the wheel."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from docutray_watch import __version__

ROOT = Path(__file__).resolve().parent.parent


class TestRelease:
    def test_version_is_a_release(self) -> None:
        """The version is a final release, not a development or pre-release one."""
        version = Version(__version__)
        assert not version.is_devrelease
        assert not version.is_prerelease
        assert str(version) == __version__

    def test_dev_extra_has_the_build_tools(self) -> None:
        """`pip install -e '.[dev]'` brings build, twine and the build backend .ci/run uses."""
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        names = {Requirement(r).name for r in project["optional-dependencies"]["dev"]}
        assert {"build", "twine", "hatchling"} <= names

    def test_ci_runs_the_demo_from_the_built_wheel(self) -> None:
        """.ci/run builds sdist and wheel, twine-checks them, installs the wheel in a fresh venv
        and runs the demo from it, before ending with the README's test command."""
        lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
        commands = [line for line in lines if line and not line.startswith("#")]

        def index_of(fragment: str) -> int:
            (index,) = [i for i, line in enumerate(commands) if fragment in line]
            return index

        build = index_of("python -m build")
        check = index_of("twine check --strict")
        venv = index_of('python3 -m venv "$DIST/venv"')
        install = index_of('"$DIST/venv/bin/python" -m pip install -q "$DIST"/dist/docutray_watch-')
        demo = index_of('"$DIST/venv/bin/docutray-watch" demo')
        assert index_of("mypy plugins/") < build < check < venv < install < demo
        assert commands[install].endswith(".whl")
        assert "-e" not in commands[install].split()
        assert commands[-1] == "python -m pytest -q tests plugins/docutray-watch-webhook/tests"


@pytest.mark.slow
def test_sdist_and_wheel_hold_what_a_user_needs(tmp_path: Path) -> None:
    """The wheel has the emulator, the sample writer and the console script; the sdist holds
    the project's own files and none of the plugin's."""
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--quiet", "--outdir", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob(f"docutray_watch-{__version__}-py3-none-any.whl")
    (sdist,) = tmp_path.glob(f"docutray_watch-{__version__}.tar.gz")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = archive.read(
            f"docutray_watch-{__version__}.dist-info/entry_points.txt"
        ).decode()
    for needed in (
        "docutray_watch/demo.py",
        "docutray_watch/samples.py",
        "docutray_watch/emulator/server.py",
        "docutray_watch/py.typed",
        # the status page is served from package data: no build step, nothing from a CDN
        "docutray_watch/web/static/index.html",
        "docutray_watch/web/static/app.js",
        "docutray_watch/web/static/style.css",
    ):
        assert needed in names
    assert "docutray-watch = docutray_watch.cli:main" in entry_points
    with tarfile.open(sdist) as archive:
        members = [name.split("/", 1)[1] for name in archive.getnames() if "/" in name]
    assert not [name for name in members if name.startswith("plugins/")]
    for needed in (
        "CHANGELOG.md",
        "LICENSE",
        "README.md",
        "systemd/docutray-watch.service",
        "deploy/grafana/docutray-watch.json",
        "deploy/prometheus/alerts.yml",
    ):
        assert needed in members
