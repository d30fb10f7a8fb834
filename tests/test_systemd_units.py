"""Checks of the files under `systemd/`: settings the daemon relies on, and systemd's own tools.

`systemd-analyze verify` and `systemd-analyze security --offline=true` run against a throw-away
root directory (`--root=`) that holds the units, executable stubs at their Exec paths and a copy of
the host's stock units (for `sysinit.target` and friends), so the checks need neither PID 1 nor an
installed daemon. Without systemd's tools these tests are skipped, except under `CI=true` where a
missing tool is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from docutray_watch.config import DEFAULT_SHUTDOWN_GRACE, Config, load_config
from docutray_watch.stoptimeout import PERSIST_MARGIN, SHIPPED_STOP_TIMEOUT

SYSTEMD_DIR = Path(__file__).resolve().parent.parent / "systemd"
EXAMPLE = SYSTEMD_DIR.parent / "config.example.yaml"
SERVICE = "docutray-watch.service"
TEMPLATE = "docutray-watch@.service"
UNITS = (SERVICE, TEMPLATE)
# What `systemctl start` would load for each file (a template only loads as an instance).
LOADED_NAME = {SERVICE: SERVICE, TEMPLATE: "docutray-watch@example.service"}
EXEC_PATHS = ("/usr/bin/docutray-watch", "/bin/kill")
MAX_EXPOSURE = 2.0
# Settings that differ on purpose between the single unit and the template.
PER_INSTANCE_KEYS = {"Description", "ExecStart", "StateDirectory", "Environment", "LoadCredential"}

_STOCK_UNIT_DIRS = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
_TOOL_ENV = {"SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "SYSTEMD_LOG_COLOR": "0"}
_TIMEOUT_S = 60


def _parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections of a unit file → key → every value assigned, in file order."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: setting outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a key=value line: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _service(unit: str) -> dict[str, list[str]]:
    return _parse_unit(SYSTEMD_DIR / unit)["Service"]


def _environment(unit: str) -> dict[str, str]:
    pairs = (
        item.partition("=")
        for value in _service(unit).get("Environment", [])
        for item in value.split()
    )
    return {key: value for key, _, value in pairs}


def _seconds(value: str) -> int:
    """A systemd time span in plain seconds (`40` or `40s`); other forms are not used here."""
    match = re.fullmatch(r"(\d+)s?", value)
    assert match, f"unexpected time span {value!r}"
    return int(match.group(1))


def _require_tool(name: str) -> str:
    """The tool's path; skip without it, unless CI=true, where its absence is a failure."""
    path = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/bin") / name, Path("/bin") / name) if p.exists()), None
    )
    if path is None:
        message = f"{name} is not installed (Debian package: systemd)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_S,
        check=False,
        env={**os.environ, **_TOOL_ENV},
    )


def _write_stub(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)


@pytest.fixture(name="analyze", scope="module")
def fixture_analyze() -> str:
    """Path of systemd-analyze."""
    return _require_tool("systemd-analyze")


@pytest.fixture(name="unit_root", scope="module")
def fixture_unit_root(analyze: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root directory where our units load as they would on an installed host."""
    stock = next((d for d in _STOCK_UNIT_DIRS if (d / "sysinit.target").exists()), None)
    if stock is None:
        pytest.fail(f"{analyze} is installed but systemd's stock units are missing")
    root = tmp_path_factory.mktemp("root")
    shutil.copytree(stock, root / "usr/lib/systemd/system", symlinks=True)
    installed = root / "etc/systemd/system"
    installed.mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(SYSTEMD_DIR / unit, installed / unit)
    for exec_path in EXEC_PATHS:
        _write_stub(root / exec_path.lstrip("/"))
    return root


class TestUnitSettings:
    """The settings the daemon and docs/operations.md rely on, read from the unit files."""

    @pytest.mark.parametrize("unit", UNITS)
    @pytest.mark.parametrize(
        ("key", "expected"),
        [
            ("Type", "notify"),
            ("NotifyAccess", "main"),
            ("RestartPreventExitStatus", "78"),
            ("Restart", "on-failure"),
            ("WatchdogSec", "60"),
            ("ExecReload", "/bin/kill -HUP $MAINPID"),
            ("User", "docutray-watch"),
            ("Group", "docutray-watch"),
            ("StateDirectoryMode", "0700"),
            ("MemoryDenyWriteExecute", "yes"),
            ("CapabilityBoundingSet", ""),
        ],
    )
    def test_setting(self, unit: str, key: str, expected: str) -> None:
        """Each unit sets the key to exactly the expected value, once."""
        assert _service(unit).get(key) == [expected]

    @pytest.mark.parametrize("unit", UNITS)
    def test_api_key_from_credential(self, unit: str) -> None:
        """The API key reaches the daemon as the `api-key` credential."""
        (value,) = _service(unit)["LoadCredential"]
        name, _, source = value.partition(":")
        assert name == "api-key"
        assert source.startswith("/etc/docutray-watch/")

    @pytest.mark.parametrize("unit", UNITS)
    def test_shutdown_grace_below_stop_timeout(self, unit: str) -> None:
        """The daemon's grace period is TimeoutStopSec minus 10 s, so the journal gets written."""
        timeout = _seconds(_service(unit)["TimeoutStopSec"][0])
        assert int(_environment(unit)["DOCUTRAY_WATCH_SHUTDOWN_GRACE"]) == timeout - 10

    @pytest.mark.parametrize("unit", UNITS)
    def test_exec_start_runs_daemon(self, unit: str) -> None:
        """ExecStart runs `docutray-watch run` with a config from /etc/docutray-watch."""
        (exec_start,) = _service(unit)["ExecStart"]
        assert re.fullmatch(
            r"/usr/bin/docutray-watch run --config /etc/docutray-watch/[%\w.-]+\.yaml", exec_start
        )

    def test_template_separates_instances(self) -> None:
        """Each template instance has its own config, state directory and API key."""
        service = _service(TEMPLATE)
        assert service["ExecStart"][0].endswith("/etc/docutray-watch/%i.yaml")
        assert service["StateDirectory"] == ["docutray-watch/%i"]
        assert service["LoadCredential"] == ["api-key:/etc/docutray-watch/%i.api-key"]
        assert _environment(TEMPLATE)["DOCUTRAY_WATCH_STATE_DIR"] == "%S/docutray-watch/%i"

    def test_units_share_everything_else(self) -> None:
        """Apart from per-instance settings the two units are identical (no hardening drift)."""
        single, template = _parse_unit(SYSTEMD_DIR / SERVICE), _parse_unit(SYSTEMD_DIR / TEMPLATE)
        assert single.keys() == template.keys()
        for section in single:
            keys = set(single[section]) | set(template[section])
            differing = {k for k in keys if single[section].get(k) != template[section].get(k)}
            assert differing <= PER_INSTANCE_KEYS, f"[{section}] differs in {sorted(differing)}"


class TestSystemdAnalyze:
    """systemd's own checks, run offline against a throw-away root."""

    @pytest.mark.parametrize("unit", UNITS)
    def test_verify_clean(self, analyze: str, unit_root: Path, unit: str) -> None:
        """`systemd-analyze verify` accepts the unit and prints nothing about it."""
        result = _run(
            [
                analyze,
                "verify",
                f"--root={unit_root}",
                "--man=no",
                "--generators=no",
                LOADED_NAME[unit],
            ]
        )
        output = result.stdout + result.stderr
        about_us = [line for line in output.splitlines() if "docutray-watch" in line]
        assert about_us == []
        assert result.returncode == 0, output

    def test_verify_detects_problems(self, analyze: str, unit_root: Path, tmp_path: Path) -> None:
        """The verify setup is not blind: an unknown key and a missing binary are reported."""
        root = tmp_path / "root"
        shutil.copytree(unit_root, root, symlinks=True)
        unit = root / "etc/systemd/system" / SERVICE
        unit.write_text(
            unit.read_text()
            .replace("UMask=0027", "UMask=0027\nNoSuchSetting=1")
            .replace("/usr/bin/docutray-watch", "/usr/bin/docutray-watch-missing")
        )
        result = _run([analyze, "verify", f"--root={root}", "--man=no", "--generators=no", SERVICE])
        output = result.stdout + result.stderr
        assert result.returncode != 0
        assert "NoSuchSetting" in output
        assert "docutray-watch-missing" in output

    @pytest.mark.parametrize("unit", UNITS)
    def test_security_exposure(self, analyze: str, unit_root: Path, unit: str) -> None:
        """`systemd-analyze security --offline=true` rates the unit's exposure at most 2.0."""
        name = LOADED_NAME[unit]
        result = _run(
            [analyze, "security", "--no-pager", "--offline=true", f"--root={unit_root}", name]
        )
        assert result.returncode == 0, result.stdout + result.stderr
        match = re.search(
            rf"Overall exposure level for {re.escape(name)}: (\d+\.\d+)", result.stdout
        )
        assert match, result.stdout + result.stderr
        assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


class TestSysusersAndTmpfiles:
    """The account and directories the units expect, created in a throw-away root."""

    @pytest.fixture(name="accounts_root")
    def fixture_accounts_root(self, tmp_path: Path) -> Path:
        """A root where systemd-sysusers has created the docutray-watch account."""
        sysusers = _require_tool("systemd-sysusers")
        (tmp_path / "etc").mkdir()
        result = _run(
            [sysusers, f"--root={tmp_path}", str(SYSTEMD_DIR / "docutray-watch.sysusers")]
        )
        assert result.returncode == 0, result.stderr
        return tmp_path

    def test_sysusers_creates_system_account(self, accounts_root: Path) -> None:
        """The sysusers file creates a system user and group `docutray-watch` with no shell."""
        passwd = (accounts_root / "etc/passwd").read_text().splitlines()
        group = (accounts_root / "etc/group").read_text().splitlines()
        (user,) = (line.split(":") for line in passwd if line.startswith("docutray-watch:"))
        assert any(line.startswith("docutray-watch:") for line in group)
        assert 0 < int(user[2]) < 1000
        assert user[6].endswith("nologin")

    def test_tmpfiles_creates_directories(self, accounts_root: Path) -> None:
        """The tmpfiles file creates the config and data directories with mode 0750."""
        tmpfiles = _require_tool("systemd-tmpfiles")
        result = _run(
            [
                tmpfiles,
                f"--root={accounts_root}",
                "--create",
                str(SYSTEMD_DIR / "docutray-watch.tmpfiles"),
            ]
        )
        problems = result.stderr.splitlines()
        if os.geteuid() != 0:
            # Without root only the chown fails; everything else must still be clean.
            problems = [p for p in problems if not re.search(r"fchownat\(\).*not permitted", p)]
        assert problems == []
        for directory in ("etc/docutray-watch", "srv/docutray"):
            mode = (accounts_root / directory).stat().st_mode
            assert stat.S_ISDIR(mode)
            assert stat.S_IMODE(mode) == 0o750
        if os.geteuid() == 0:
            assert result.returncode == 0
            (gid,) = (
                int(line.split(":")[2])
                for line in (accounts_root / "etc/group").read_text().splitlines()
                if line.startswith("docutray-watch:")
            )
            config_dir = (accounts_root / "etc/docutray-watch").stat()
            assert (config_dir.st_uid, config_dir.st_gid) == (0, gid)
            assert (accounts_root / "srv/docutray").stat().st_gid == gid


class TestExampleConfigFitsTheUnits:
    """config.example.yaml, copied to /etc/docutray-watch, works under the shipped units."""

    @staticmethod
    def _load_under(unit: str, monkeypatch: pytest.MonkeyPatch) -> Config:
        """The example as the unit's daemon loads it: with the unit's Environment= settings."""
        for key, value in _environment(unit).items():
            monkeypatch.setenv(key, value.replace("%S", "/var/lib").replace("%i", "example"))
        return load_config(EXAMPLE, environ={"DOCUTRAY_API_KEY": "k"})

    def test_default_grace_is_the_units(self) -> None:
        """One source of truth: the built-in default grace is the units' (TimeoutStopSec - 10)."""
        for unit in UNITS:
            timeout = _seconds(_service(unit)["TimeoutStopSec"][0])
            assert timeout == SHIPPED_STOP_TIMEOUT
            assert float(_environment(unit)["DOCUTRAY_WATCH_SHUTDOWN_GRACE"]) == (
                DEFAULT_SHUTDOWN_GRACE
            )
            assert timeout - PERSIST_MARGIN == DEFAULT_SHUTDOWN_GRACE

    @pytest.mark.parametrize("unit", UNITS)
    @pytest.mark.parametrize("with_unit_environment", [True, False])
    def test_example_grace_below_the_stop_timeout(
        self, unit: str, with_unit_environment: bool, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The example's grace leaves the daemon 10 s before systemd's SIGKILL."""
        monkeypatch.delenv("DOCUTRAY_WATCH_SHUTDOWN_GRACE", raising=False)
        if with_unit_environment:
            config = self._load_under(unit, monkeypatch)
        else:
            config = load_config(EXAMPLE, environ={"DOCUTRAY_API_KEY": "k"})
        timeout = _seconds(_service(unit)["TimeoutStopSec"][0])
        assert config.shutdown_grace + PERSIST_MARGIN <= timeout

    @pytest.mark.parametrize("unit", UNITS)
    def test_example_paths_writable_under_the_unit(
        self, unit: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Every folder the example writes to is under ReadWritePaths= or the state directory."""
        config = self._load_under(unit, monkeypatch)
        service = _service(unit)
        writable = [Path(p.lstrip("-")) for v in service["ReadWritePaths"] for p in v.split()]
        state = Path("/var/lib") / service["StateDirectory"][0].replace("%i", "example")
        written = {"state_dir": Path(config.state_dir)}
        for pipeline in config.pipelines:
            where = f"pipelines[{pipeline.name}]"
            written[f"{where}.watch.path"] = Path(pipeline.watch.path)
            for label, action in (
                ("on_success", pipeline.on_success),
                ("on_failure", pipeline.on_failure),
            ):
                if action.to is not None:
                    written[f"{where}.{label}.to"] = Path(action.to)
            for sink in pipeline.sinks:
                if sink.type == "filesystem":
                    written[f"{where}.sinks[{sink.id}].path"] = Path(sink.path)  # type: ignore[attr-defined]
                if sink.type == "database":
                    url = sink.url.get_secret_value()  # type: ignore[attr-defined]
                    if url.startswith("sqlite:///"):
                        file = Path(url.removeprefix("sqlite:///"))
                        written[f"{where}.sinks[{sink.id}].url"] = file.parent
        if unit == TEMPLATE:
            # The example names the single unit's state directory; its comment tells a template
            # instance's config to name /var/lib/docutray-watch/NAME instead.
            assert written.pop("state_dir") == Path("/var/lib/docutray-watch")
        assert len(written) > 5
        outside = {
            key: str(path)
            for key, path in written.items()
            if not any(path == root or root in path.parents for root in [*writable, state])
        }
        assert outside == {}, f"not writable under {unit}"
