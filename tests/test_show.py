"""`docutray-watch show PATH|SHA`: one document's whole story from the journal."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from docutray_watch.emulator import EmulatorServer
from docutray_watch.samples import make_pdf
from tests.test_cli import invoke, write_config


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_show_tells_a_processed_documents_steps_executions_and_deliveries(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    """By archived path or sha256 prefix, text and --json: steps with executions, deliveries
    with receipts and attempts."""
    config = write_config(tmp_path, emulator, steps=["stp_a", "stp_b"])
    data = make_pdf(["shown"])
    (tmp_path / "inbox" / "a.pdf").write_bytes(data)
    assert invoke("process", "-c", str(config), "--no-progress").exit_code == 0
    sha = hashlib.sha256(data).hexdigest()

    result = invoke("show", "-c", str(config), "--json", sha[:10])
    assert result.exit_code == 0, result.output
    (story,) = json.loads(result.output)["documents"]
    assert story["sha256"] == sha
    assert story["state"] == "archived"
    assert story["outcome"] == "success"
    assert story["archived_to"] == str(tmp_path / "done" / "a.pdf")
    assert [s["step_id"] for s in story["steps"]] == ["stp_a", "stp_b"]
    assert all(s["execution_id"] and s["status"] == "SUCCESS" for s in story["steps"])
    # Delivery rows come in the order the steps ended.
    assert sorted(
        (d["step_id"], d["sink"], d["state"], d["attempts"]) for d in story["deliveries"]
    ) == [
        ("stp_a", "filesystem", "delivered", 1),
        ("stp_b", "filesystem", "delivered", 1),
    ]
    receipts = [d["receipt"] for d in story["deliveries"]]
    assert all(receipts)
    assert receipts[0] != receipts[1]

    text = invoke("show", "-c", str(config), str(tmp_path / "done" / "a.pdf"))
    assert text.exit_code == 0, text.output
    assert "[invoices] a.pdf" in text.output
    assert "archived (success)" in text.output
    execution = story["steps"][0]["execution_id"]
    assert f"stp_a: success, 1 submission attempt(s), execution {execution}" in text.output
    assert "stp_b -> filesystem: delivered, 1 attempt(s), receipt " in text.output


def test_show_of_an_unknown_document_exits_1(tmp_path: Path, emulator: EmulatorServer) -> None:
    """Nothing matches: a message on stderr and exit 1 (an empty list with --json)."""
    config = write_config(tmp_path, emulator)
    result = invoke("show", "-c", str(config), "--json", "deadbeef")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"documents": []}
    assert "no document with this path or sha256" in result.stderr
