"""The commands load only what they use: `status` no HTTP client, no database or cloud library,
and `run` none of what it needs only when configured (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from docutray_watch.journal import Journal
from tests.test_cli import write_config

# Run the command line in a fresh interpreter, then report which of `watched` it imported.
_PROBE = """
import json, sys
watched, argv = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sys.argv = ["docutray-watch", *argv]
from docutray_watch.cli import main
try:
    main()
except SystemExit as exit:
    code = exit.code
else:
    code = 0
loaded = sorted(name for name in watched if name in sys.modules)
print(json.dumps({"code": code, "loaded": loaded}), file=sys.stderr)
"""

_HEAVY = [
    "procrastinate",
    "psycopg",
    "sqlalchemy",
    "boto3",
    "botocore",
    "httpx",
    "aiohttp",
    "rich",
    "pygments",
    "prometheus_client",
    "watchdog",
    "docutray_watch.emulator",
    "docutray_watch.cluster",
    "docutray_watch.engine",
    "docutray_watch.client",
]


def _loaded(argv: list[str], watched: list[str]) -> tuple[object, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(watched), json.dumps(argv)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["code"], report["loaded"]


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_status_imports_no_http_client_database_or_cloud_library(
    tmp_path: Path, as_json: bool
) -> None:
    """`status` (with a journal, and the webhook plugin installed) answers without importing
    procrastinate, psycopg, SQLAlchemy, boto3, httpx, aiohttp, rich, prometheus_client,
    watchdog, the emulator, the cluster code, the engine or the API client."""
    config = write_config(tmp_path, None)
    Journal(tmp_path / "state" / "journal.sqlite3").open().close()
    argv = ["status", "-c", str(config), *(["--json"] if as_json else [])]
    code, loaded = _loaded(argv, _HEAVY)
    assert code == 0
    assert loaded == []


def test_version_imports_no_http_client_or_rich() -> None:
    """`--version` answers without the HTTP clients, rich or pygments."""
    code, loaded = _loaded(["--version"], _HEAVY)
    assert code == 0
    assert loaded == []


def test_the_daemon_module_leaves_the_optional_servers_and_backends_out() -> None:
    """Importing the daemon (what `run` does) loads neither aiohttp's server (the metrics and
    status page listeners import it when configured), nor SQLAlchemy, boto3, procrastinate,
    psycopg, rich or pygments."""
    watched = ["aiohttp.web", "sqlalchemy", "boto3", "botocore", "procrastinate", "psycopg",
               "rich", "pygments", "docutray_watch.health", "docutray_watch.web",
               "docutray_watch.emulator", "docutray_watch.cluster"]  # fmt: skip
    probe = (
        "import json, sys\nimport docutray_watch.daemon\n"
        f"print(json.dumps([n for n in {watched!r} if n in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(done.stdout) == []
