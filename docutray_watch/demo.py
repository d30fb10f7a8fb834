"""`docutray-watch demo`: the whole flow on sample documents, against the local emulator.

Starts the emulator in-process (no API key, no network), writes a handful of real PDF and PNG
files plus one that is not a document, runs a two-step pipeline to a filesystem sink with a SQLite
journal, and prints what happened and where everything is.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from docutray_watch.config import parse_config
from docutray_watch.emulator import EmulatorConfig, EmulatorServer
from docutray_watch.journal import Journal
from docutray_watch.runner import process_once
from docutray_watch.samples import write_pdf, write_png

__all__ = ["run_demo"]

STEPS = ["stp_demo_invoice_fields", "stp_demo_summary"]


def _write_samples(inbox: Path) -> None:
    inbox.mkdir(parents=True, exist_ok=True)
    for number in (1, 2, 3):
        write_pdf(
            inbox / f"invoice-{number:04d}.pdf",
            [
                f"INVOICE INV-2026-{number:04d}",
                "ACME Supplies Ltd.",
                f"Total: {number * 120}.00 EUR",
            ],
        )
    write_png(inbox / "receipt-scan.png", 48, 32, color=(200, 180, 120))
    write_png(inbox / "delivery-note.png", 32, 48)
    (inbox / "notes.pdf").write_text("This is a text file with a .pdf name.\n")


def _config_data(root: Path, base_url: str, api_key: str) -> dict[str, object]:
    return {
        "api": {
            "base_url": base_url,
            "api_key": api_key,
            "max_in_flight": 8,
            "requests_per_second": 50,
        },
        "state_dir": str(root / "state"),
        "shutdown_grace": 5,
        "pipelines": [
            {
                "name": "demo",
                "watch": {"path": str(root / "inbox"), "settle": 0},
                "steps": STEPS,
                "document_metadata": {"source": "docutray-watch demo", "file": "{name}"},
                "poll": {"initial": 0.5, "max": 2, "timeout": 120},
                "on_success": {"action": "move", "to": str(root / "done")},
                "on_failure": {"action": "move", "to": str(root / "failed")},
                "sinks": [{"type": "filesystem", "path": str(root / "results")}],
            }
        ],
    }


def run_demo(
    directory: Path | None = None, *, latency: float = 0.5, echo: Callable[[str], None] = print
) -> int:
    """Run the demo in `directory` (a new temporary folder by default); returns the exit code."""
    root = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="docutray-watch-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    _write_samples(root / "inbox")
    echo(f"demo folder: {root}")
    with EmulatorServer(EmulatorConfig(latency=latency, latency_jitter=0.2, seed=7)) as emulator:
        echo(f"emulator:    {emulator.base_url} (local stand-in for the DocuTray API)")
        config_data = _config_data(root, emulator.base_url, emulator.api_key)
        (root / "config.yaml").write_text(_as_yaml(config_data))
        config = parse_config(config_data, source=str(root / "config.yaml"), config_dir=root)
        code = asyncio.run(process_once(config, echo=lambda line: echo(f"             {line}")))
        stats = emulator.stats(include_executions=False)
    _print_table(root, config.journal_path, echo)
    echo("")
    echo(f"results:     {root / 'results'}  (one JSON file per document and step)")
    echo(f"done:        {root / 'done'}")
    echo(f"failed:      {root / 'failed'}  (with <name>.error.json saying why)")
    echo(f"journal:     {config.journal_path}")
    echo(f"config:      {root / 'config.yaml'}")
    echo(f"API calls:   {stats.executions_created} executions, {stats.status_gets} status reads")
    echo("try:         docutray-watch status -c " + str(root / "config.yaml"))
    # The bad sample is expected to fail: the demo succeeds when exactly that happened.
    return 0 if code == 1 and (root / "failed" / "notes.pdf").exists() else (code or 1)


def _as_yaml(data: dict[str, object]) -> str:
    import yaml

    return "# written by `docutray-watch demo`\n" + yaml.safe_dump(data, sort_keys=False)


def _print_table(root: Path, journal_path: Path, echo: Callable[[str], None]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="docutray-watch demo", show_lines=False)
    for column in ("document", "outcome", "steps", "where it is now", "reason"):
        table.add_column(column)
    with Journal(journal_path) as journal:
        for doc in journal.documents_in(*("archived", "failed", "rejected")):
            steps = journal.steps_of(doc.id)
            done = sum(1 for s in steps if s.state == "success")
            where = Path(doc.archived_to).relative_to(root) if doc.archived_to else "-"
            table.add_row(
                doc.name,
                doc.outcome or doc.state,
                f"{done}/{len(steps)}",
                str(where),
                doc.error or "",
            )
    console = Console(width=120)
    with console.capture() as capture:
        console.print(table)
    for line in capture.get().rstrip("\n").splitlines():
        echo(line)
    results = sorted((root / "results").rglob("*.json"))
    if results:
        sample = json.loads(results[0].read_text())
        echo(f"\n{results[0].relative_to(root)}:")
        for line in json.dumps(sample, indent=2).splitlines()[:24]:
            echo(f"  {line}")
