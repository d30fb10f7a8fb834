"""Routing by document type through the real engine and the emulator: each document is
identified once, runs only its route's steps, and one no route takes ends with its reason."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pluggy

from docutray_watch.config import Config
from docutray_watch.emulator import EmulatorServer
from docutray_watch.journal import Journal
from docutray_watch.runner import process_once
from docutray_watch.samples import make_pdf
from docutray_watch.testing import HookRecorder
from tests.engine.conftest import ConfigFactory, pipeline_data

ROUTES = {"invoice": ["stp_inv"], "receipt": ["stp_rec", "stp_tot"]}


def routed_pipeline(root: Path, **overrides: object) -> dict[str, object]:
    # The candidates include a type no route takes (the API only answers among the options).
    identify = {"options": ["invoice", "receipt", "id_card"], "min_confidence": 0.6}
    data = pipeline_data(root, "mixed", identify=identify, routes=ROUTES)
    del data["steps"]
    data.update(overrides)
    return data


def drop(root: Path, name: str, doc_type: str, confidence: float = 0.9) -> None:
    markers = [f"DOCUTRAY-EMULATOR:TYPE={doc_type}", f"DOCUTRAY-EMULATOR:CONFIDENCE={confidence}"]
    (root / "mixed" / "inbox" / name).write_bytes(make_pdf([name, *markers]))


def run(config: Config, pm: pluggy.PluginManager) -> int:
    return asyncio.run(process_once(config, plugin_manager=pm, echo=lambda _line: None))


def results_by_document(root: Path) -> dict[str, set[str]]:
    """Which step ids' results the filesystem sink holds, per document name."""
    found: dict[str, set[str]] = {}
    for path in (root / "mixed" / "results").rglob("*.json"):
        record = json.loads(path.read_text())
        found.setdefault(record["document"]["name"], set()).add(record["step_id"])
    return found


def test_a_mixed_inbox_runs_each_document_through_its_route_only(
    tmp_path: Path, make_config: ConfigFactory, pm: pluggy.PluginManager, emulator: EmulatorServer
) -> None:
    """60 documents of 3 types, one with low confidence: invoices run stp_inv, receipts
    stp_rec and stp_tot, the id cards and the unsure one go to failed/ with the reason; every
    document is identified exactly once and its records carry the identification."""
    config = make_config(routed_pipeline(tmp_path))
    for n in range(20):
        drop(tmp_path, f"inv{n:02}.pdf", "invoice")
        drop(tmp_path, f"rec{n:02}.pdf", "receipt")
    for n in range(19):
        drop(tmp_path, f"id{n:02}.pdf", "id_card")
    drop(tmp_path, "unsure.pdf", "invoice", confidence=0.41)
    recorder = HookRecorder()
    pm.register(recorder, name="recorder")
    code = run(config, pm)
    assert code == 1  # documents failed: the id cards and the unsure one

    results = results_by_document(tmp_path)
    for n in range(20):
        assert results[f"inv{n:02}.pdf"] == {"stp_inv"}
        assert results[f"rec{n:02}.pdf"] == {"stp_rec", "stp_tot"}
    assert not any(name.startswith(("id", "unsure")) for name in results)
    stats = emulator.stats()
    assert stats.executions_created == 20 * 1 + 20 * 2
    assert stats.identifications_created == 60
    identified = recorder.calls("after_document_identified")
    assert len(identified) == 60
    assert len({call.kwargs["document"].name for call in identified}) == 60

    failed = tmp_path / "mixed" / "failed"
    assert len(list(failed.glob("*.pdf"))) == 20
    sidecar = json.loads((failed / "unsure.pdf.error.json").read_text())
    assert sidecar["stage"] == "route"
    assert "identified as `invoice` (0.41), below min_confidence 0.6" in sidecar["reason"]
    assert sidecar["identification"]["code"] == "invoice"
    id_sidecar = json.loads((failed / "id00.pdf.error.json").read_text())
    assert "no route for this type; routes: invoice, receipt" in id_sidecar["reason"]

    record = json.loads(next((tmp_path / "mixed" / "results").rglob("inv00*.json")).read_text())
    assert record["identification"]["code"] == "invoice"
    assert record["identification"]["confidence"] == 0.9


def test_otherwise_keep_leaves_the_document_unrouted_and_takes_it_once(
    tmp_path: Path, make_config: ConfigFactory, pm: pluggy.PluginManager, emulator: EmulatorServer
) -> None:
    """`otherwise: keep`: an id card stays in the inbox, ends `unrouted` (process exits 1),
    and a second run does not identify it again."""
    routes = {**ROUTES, "otherwise": "keep"}
    config = make_config(routed_pipeline(tmp_path, routes=routes))
    drop(tmp_path, "card.pdf", "id_card")
    drop(tmp_path, "inv.pdf", "invoice")
    assert run(config, pm) == 1
    assert (tmp_path / "mixed" / "inbox" / "card.pdf").exists()
    assert (tmp_path / "mixed" / "done" / "inv.pdf").exists()
    first = emulator.stats()
    assert (first.identifications_created, first.executions_created) == (2, 1)
    assert run(config, pm) == 0
    again = emulator.stats()
    assert (again.posts, again.status_gets) == (first.posts, first.status_gets)  # nothing asked


def test_a_released_unrouted_document_is_routed_without_a_second_identification(
    tmp_path: Path, make_config: ConfigFactory, pm: pluggy.PluginManager, emulator: EmulatorServer
) -> None:
    """Unrouted, then a route for its type is added and `retry` requeues it: the next run runs
    the new route's step on the stored identification (no identify request) and archives it."""
    keep = {**ROUTES, "otherwise": "keep"}
    kept = make_config(routed_pipeline(tmp_path, routes=keep))
    drop(tmp_path, "card.pdf", "id_card")
    assert run(kept, pm) == 1
    with Journal(kept.journal_path) as journal:
        (doc,) = [d for d in journal.documents_in("unrouted")]
        journal.requeue(doc.id)
    before = emulator.stats()
    routed = make_config(routed_pipeline(tmp_path, routes={**keep, "id_card": ["stp_id"]}))
    assert run(routed, pm) == 0
    after = emulator.stats()
    assert after.identifications_created == before.identifications_created
    assert after.executions_created == before.executions_created + 1
    assert (tmp_path / "mixed" / "done" / "card.pdf").exists()
    assert results_by_document(tmp_path) == {"card.pdf": {"stp_id"}}
