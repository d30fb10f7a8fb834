"""The cluster node's systemd drop-in example loads cleanly on top of docutray-watch.service.

Like tests/test_systemd_units.py: `systemd-analyze verify` in a throw-away root; skipped without
systemd's tools, except under `CI=true` where their absence is a failure.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.test_systemd_units import (
    _STOCK_UNIT_DIRS,
    EXEC_PATHS,
    SERVICE,
    SYSTEMD_DIR,
    _require_tool,
    _run,
    _write_stub,
)

DROP_IN = SYSTEMD_DIR / "docutray-watch.service.d-cluster.conf.example"


def _root_with_drop_in(tmp_path: Path, text: str) -> Path:
    stock = next((d for d in _STOCK_UNIT_DIRS if (d / "sysinit.target").exists()), None)
    if stock is None:
        pytest.fail("systemd-analyze is installed but systemd's stock units are missing")
    root = tmp_path / "root"
    shutil.copytree(stock, root / "usr/lib/systemd/system", symlinks=True)
    installed = root / "etc/systemd/system"
    (installed / f"{SERVICE}.d").mkdir(parents=True)
    shutil.copy(SYSTEMD_DIR / SERVICE, installed / SERVICE)
    (installed / f"{SERVICE}.d" / "cluster.conf").write_text(text)
    for exec_path in EXEC_PATHS:
        _write_stub(root / exec_path.lstrip("/"))
    return root


def _verify(tmp_path: Path, text: str) -> list[str]:
    analyze = _require_tool("systemd-analyze")
    root = _root_with_drop_in(tmp_path, text)
    result = _run([analyze, "verify", f"--root={root}", "--man=no", "--generators=no", SERVICE])
    assert result.returncode == 0, result.stdout + result.stderr
    return [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "docutray-watch" in line or "cluster.conf" in line
    ]


def test_drop_in_verifies_clean(tmp_path: Path) -> None:
    """`systemd-analyze verify` loads the service with the drop-in and reports nothing."""
    assert _verify(tmp_path, DROP_IN.read_text()) == []


def test_verify_sees_the_drop_in(tmp_path: Path) -> None:
    """The check is not blind: an unknown key in the drop-in is reported."""
    problems = _verify(tmp_path, DROP_IN.read_text() + "NoSuchKey=1\n")
    assert any("NoSuchKey" in line for line in problems)


def test_database_password_comes_from_a_credential() -> None:
    """The drop-in hands libpq its password file as a credential, never in the environment."""
    text = DROP_IN.read_text()
    assert "LoadCredential=pgpass:/etc/docutray-watch/pgpass" in text
    assert "Environment=PGPASSFILE=%d/pgpass" in text
    assert "PGPASSWORD=" not in text
