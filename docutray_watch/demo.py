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
EXCERPT_LINES = 24


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


LABEL = 13  # the width of "demo folder: ": every value starts in that column


def run_demo(
    directory: Path | None = None, *, latency: float = 0.5, echo: Callable[[str], None] = print
) -> int:
    """Run the demo in `directory`, kept afterwards, or in a temporary folder that is removed at
    the end; returns the exit code."""
    if directory is not None:
        return _run_in(Path(directory), latency=latency, echo=echo, keep=True)
    with tempfile.TemporaryDirectory(prefix="docutray-watch-demo-") as temporary:
        return _run_in(Path(temporary), latency=latency, echo=echo, keep=False)


def _labelled(label: str, value: str) -> str:
    return f"{label + ':' if label else '':<{LABEL}}{value}"


def _run_in(root: Path, *, latency: float, echo: Callable[[str], None], keep: bool) -> int:
    root.mkdir(parents=True, exist_ok=True)
    _write_samples(root / "inbox")
    echo(_labelled("demo folder", f"{root}{'' if keep else ' (temporary)'}"))
    with EmulatorServer(EmulatorConfig(latency=latency, latency_jitter=0.2, seed=7)) as emulator:
        echo(_labelled("emulator", f"{emulator.base_url} (local stand-in for the DocuTray API)"))
        config_data = _config_data(root, emulator.base_url, emulator.api_key)
        (root / "config.yaml").write_text(_as_yaml(config_data))
        config = parse_config(config_data, source=str(root / "config.yaml"), config_dir=root)
        summary: list[str] = []
        code = asyncio.run(process_once(config, echo=summary.append))
        stats = emulator.stats(include_executions=False)
    # The pass's summary under its own label; its detail lines (one per failure) line up below.
    for number, line in enumerate(summary):
        echo(_labelled("summary" if number == 0 else "", line.strip()))
    echo("")
    _print_table(root, config.journal_path, echo)
    echo("")
    echo(
        _labelled(
            "API calls", f"{stats.executions_created} executions, {stats.status_gets} status reads"
        )
    )
    if keep:
        echo(_labelled("results", f"{root / 'results'}  (one JSON file per document and step)"))
        echo(_labelled("done", str(root / "done")))
        echo(_labelled("failed", f"{root / 'failed'}  (with <name>.error.json saying why)"))
        echo(_labelled("journal", str(config.journal_path)))
        echo(_labelled("config", str(root / "config.yaml")))
        echo(_labelled("try", f"docutray-watch status -c {root / 'config.yaml'}"))
    else:
        echo(_labelled("removed", f"{root} (keep the files: docutray-watch demo --dir DIR)"))
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
        echo("")
        echo(f"{results[0].relative_to(root)}:")
        lines = json.dumps(sample, indent=2).splitlines()
        for line in lines[:EXCERPT_LINES]:
            echo(f"  {line}")
        if len(lines) > EXCERPT_LINES:
            echo(f"  … ({len(lines) - EXCERPT_LINES} more lines in the file)")
