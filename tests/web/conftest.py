"""A processed site for the status page's tests: a known set of documents run by `process`,
then the daemon with its `web:` block; and a headless Chromium (Debian's package) to look."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from docutray_watch.config import load_config
from docutray_watch.daemon import Daemon
from docutray_watch.emulator import ERROR_MARKER, EmulatorServer
from docutray_watch.plugins import load_plugins
from docutray_watch.samples import make_pdf
from docutray_watch.testing import EmulatorFactory, config_data, process, running_daemon

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "t0ken-for-the-status-page-tests-0123456789"
CANARY_KEY = "dtw-canary-key-5f1c0c8e-never-shown"


@dataclass
class Site:
    """A daemon serving the status page over a journal with a known history."""

    root: Path
    config_path: Path
    daemon: Daemon
    emulator: EmulatorServer

    @property
    def url(self) -> str:
        assert self.daemon.web is not None
        return f"http://127.0.0.1:{self.daemon.web.port}"

    @property
    def inbox(self) -> Path:
        return self.root / "invoices" / "inbox"


def site_config(root: Path, emulator: EmulatorServer, *, actions: bool = True) -> Path:
    """A one-pipeline config with the status page on a free loopback port."""
    data: dict[str, Any] = config_data(
        root, {"type": "filesystem", "path": str(root / "out")}, emulator=emulator
    )
    token_file = root / "web-token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    data["web"] = {
        "listen": "127.0.0.1:0",
        "actions": actions,
        "token_file": str(token_file),
        "refresh_seconds": 1,
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def known_set(inbox: Path) -> None:
    """Three good invoices, one the service fails (ERROR marker), one empty (rejected)."""
    for name in ("a.pdf", "b.pdf", "c.pdf"):
        (inbox / name).write_bytes(make_pdf([f"invoice {name}"]))
    (inbox / "broken.pdf").write_bytes(make_pdf(["x", ERROR_MARKER.decode()]))
    (inbox / "empty.pdf").write_bytes(b"")


@contextlib.asynccontextmanager
async def processed_site(
    root: Path, emulator_factory: EmulatorFactory, *, actions: bool = True
) -> AsyncIterator[Site]:
    """`process` of the known set, then the daemon (status page included) until the end."""
    emulator = emulator_factory(api_key=CANARY_KEY)
    config_path = site_config(root, emulator, actions=actions)
    plugins = load_plugins()
    config = load_config(config_path, sink_types=plugins.config_sink_types)
    known_set(root / "invoices" / "inbox")
    result = await process(config, plugins=plugins)
    assert result.exit_code == 1, result.output  # two failures, as planned
    async with running_daemon(config_path, plugins=plugins) as daemon:
        yield Site(root, config_path, daemon, emulator)


def browser_problem(chromium: str = CHROMIUM) -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    if not (os.path.exists(chromium) and shutil.which(chromium)):
        return f"{chromium} is missing (apt-get install -y chromium; .ci/run installs it)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    return None


def require_browser(problem: str | None, environ: Mapping[str, str]) -> None:
    """In CI (CI=true) a missing browser fails the test; elsewhere it is skipped, saying why."""
    if problem is None:
        return
    if environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(problem)
    pytest.skip(problem)


@pytest.fixture(name="chromium")
def chromium_fixture() -> str:
    """Debian's chromium, driven by Playwright (which never downloads a browser here)."""
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    require_browser(browser_problem(), os.environ)
    return CHROMIUM


ROUTES = {"invoice": ["stp_inv"], "receipt": ["stp_rec"], "otherwise": "keep"}


def routed_set(inbox: Path) -> None:
    """Two invoices (one identified below min_confidence: unrouted), one receipt, one id card
    (no route: unrouted)."""

    def typed(name: str, code: str, confidence: float = 0.9) -> None:
        markers = [f"DOCUTRAY-EMULATOR:TYPE={code}", f"DOCUTRAY-EMULATOR:CONFIDENCE={confidence}"]
        (inbox / name).write_bytes(make_pdf([name, *markers]))

    typed("inv1.pdf", "invoice")
    typed("inv2.pdf", "invoice", 0.3)
    typed("rec1.pdf", "receipt")
    typed("card.pdf", "id_card")


@contextlib.asynccontextmanager
async def routed_site(root: Path, emulator_factory: EmulatorFactory) -> AsyncIterator[Site]:
    """`invoices` (no identify: the known set) and `mixed` (identify + routes, `otherwise:
    keep`: the routed set) processed, then the daemon with its status page."""
    emulator = emulator_factory(api_key=CANARY_KEY)
    config_path = site_config(root, emulator)
    data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    mixed = config_data(
        root,
        {"type": "filesystem", "path": str(root / "out-mixed")},
        emulator=emulator,
        pipeline="mixed",
        # The candidates include a type no route takes (the API answers among the options).
        identify={"options": ["invoice", "receipt", "id_card"], "min_confidence": 0.6},
        routes=ROUTES,
    )["pipelines"][0]
    del mixed["steps"]
    data["pipelines"].append(mixed)
    config_path.write_text(yaml.safe_dump(data), encoding="utf-8")
    plugins = load_plugins()
    config = load_config(config_path, sink_types=plugins.config_sink_types)
    known_set(root / "invoices" / "inbox")
    routed_set(root / "mixed" / "inbox")
    result = await process(config, plugins=plugins)
    assert result.exit_code == 1, result.output  # failures and an unrouted one, as planned
    async with running_daemon(config_path, plugins=plugins) as daemon:
        yield Site(root, config_path, daemon, emulator)
