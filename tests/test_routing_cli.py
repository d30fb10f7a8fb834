"""The commands around routing by document type: `status` per type, `retry` of unrouted
documents, `validate`'s check of route keys against the account, `process --dry-run`."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from docutray_watch.cli import cli
from docutray_watch.emulator import EmulatorServer
from docutray_watch.journal import IDENTIFY_STEP, Journal
from docutray_watch.records import Identification
from docutray_watch.runner import retry_document_ids

ID_CARD = Identification(code="id_card", name="Identity card", confidence=0.93)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def write_config(tmp_path: Path, emulator: EmulatorServer | None = None, **pipeline: Any) -> Path:
    spec: dict[str, Any] = {
        "name": "mixed",
        "watch": {"path": str(tmp_path / "inbox"), "settle": 0},
        "identify": {"min_confidence": 0.6},
        "routes": {"invoice": ["stp_inv"], "receipt": ["stp_rec"], "otherwise": "keep"},
        "sinks": [{"type": "filesystem", "path": str(tmp_path / "out")}],
    }
    spec.update(pipeline)
    data: dict[str, Any] = {"state_dir": str(tmp_path / "state"), "pipelines": [spec]}
    if emulator is not None:
        data["api"] = {"base_url": emulator.base_url, "api_key": emulator.api_key}
    (tmp_path / "inbox").mkdir(exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"DOCUTRAY_API_KEY": ""})


def journal_identified(
    tmp_path: Path, name: str, identification: Identification, *, unrouted: bool
) -> int:
    """Journal one document of `mixed` whose identification succeeded; `unrouted` ends it so
    (file kept in the inbox), else it stays waiting for its route."""
    path = tmp_path / "inbox" / name
    path.write_bytes(b"%PDF-1.4 test")
    with Journal(tmp_path / "state" / "journal.sqlite3") as journal:
        doc, (step,) = journal.add_queued(
            "mixed",
            str(path),
            name,
            sha256=f"{abs(hash(name)):064d}"[:64],
            content_type="application/pdf",
            size=13,
            mtime_ns=1,
            steps=[IDENTIFY_STEP],
        )
        journal.step_submitting(step.id)
        journal.step_accepted(step.id, f"idn_{name}", "ENQUEUED")
        journal.step_finished(step.id, state="success", status="SUCCESS", result={})
        journal.set_identification(doc.id, identification.model_dump_json(), identification.code)
        if unrouted:
            journal.mark_unrouted(doc.id, "identified as `id_card` (0.93), no route for this type")
            journal.finish(doc.id, str(path))
        return doc.id


def doc_state(tmp_path: Path, doc_id: int) -> str:
    with Journal(tmp_path / "state" / "journal.sqlite3") as journal:
        return str(journal.document(doc_id).state)


class TestStatus:
    def test_status_counts_documents_per_identified_type(self, tmp_path: Path) -> None:
        """`status` lists the identified types of a pipeline and counts unrouted documents;
        --json has them under identified_types (and today's unrouted)."""
        config = write_config(tmp_path)
        journal_identified(tmp_path, "a.pdf", ID_CARD, unrouted=True)
        invoice = Identification(code="invoice", name="Invoice", confidence=0.9)
        journal_identified(tmp_path, "b.pdf", invoice, unrouted=False)
        journal_identified(tmp_path, "c.pdf", invoice, unrouted=False)
        text = invoke("status", "-c", str(config))
        assert text.exit_code == 0, text.output
        assert "mixed: 3 document(s): polling 2, unrouted 1" in text.output
        assert "  identified: id_card 1, invoice 2" in text.output
        report = json.loads(invoke("status", "-c", str(config), "--json").output)
        assert report["identified_types"] == {"mixed": {"id_card": 1, "invoice": 2}}
        assert report["today"]["mixed"]["unrouted"] == 1

    def test_status_of_a_pipeline_without_identify_has_no_types(self, tmp_path: Path) -> None:
        """identified_types is empty when no pipeline identifies."""
        config = write_config(tmp_path)
        report = json.loads(invoke("status", "-c", str(config), "--json").output)
        assert report["identified_types"] == {}


class TestRetryUnrouted:
    def test_retry_path_refuses_while_there_is_no_route(self, tmp_path: Path) -> None:
        """retry PATH of an unrouted document says there is still no route and exits 1."""
        config = write_config(tmp_path)
        doc_id = journal_identified(tmp_path, "a.pdf", ID_CARD, unrouted=True)
        result = invoke("retry", "-c", str(config), str(tmp_path / "inbox" / "a.pdf"))
        assert result.exit_code == 1
        assert "still no route: identified as `id_card` (0.93), no route for this type" in (
            result.output
        )
        assert doc_state(tmp_path, doc_id) == "unrouted"

    def test_retry_failed_leaves_unrouted_documents_without_a_route(self, tmp_path: Path) -> None:
        """retry --failed takes what can run: an unrouted document without a route stays."""
        config = write_config(tmp_path)
        doc_id = journal_identified(tmp_path, "a.pdf", ID_CARD, unrouted=True)
        result = invoke("retry", "-c", str(config), "--failed")
        assert result.exit_code == 0, result.output
        assert "0 document(s) requeued" in result.output
        assert doc_state(tmp_path, doc_id) == "unrouted"

    def test_retry_releases_it_once_a_route_exists(self, tmp_path: Path) -> None:
        """With a route for its type added to the config, retry --failed requeues it (keeping
        the identification, so it is routed, not identified again)."""
        routes = {"invoice": ["stp_inv"], "id_card": ["stp_id"], "otherwise": "keep"}
        config = write_config(tmp_path, routes=routes)
        doc_id = journal_identified(tmp_path, "a.pdf", ID_CARD, unrouted=True)
        result = invoke("retry", "-c", str(config), "--failed")
        assert result.exit_code == 0, result.output
        assert "1 document(s) requeued" in result.output
        with Journal(tmp_path / "state" / "journal.sqlite3") as journal:
            doc = journal.document(doc_id)
            assert (doc.state, doc.identified_type) == ("queued", "id_card")
            assert [s.step_id for s in journal.steps_of(doc_id)] == [IDENTIFY_STEP]

    def test_otherwise_steps_release_it_too(self, tmp_path: Path) -> None:
        """otherwise: [steps] now catches its type: it can be released."""
        config = write_config(tmp_path, routes={"invoice": ["a"], "otherwise": ["stp_generic"]})
        journal_identified(tmp_path, "a.pdf", ID_CARD, unrouted=True)
        result = invoke("retry", "-c", str(config), str(tmp_path / "inbox" / "a.pdf"))
        assert result.exit_code == 0, result.output
        assert "1 document(s) requeued" in result.output

    def test_the_status_page_retry_applies_the_same_rule(self, tmp_path: Path) -> None:
        """Retry by id (the status page's button) refuses an unrouted document without a route."""
        from docutray_watch.config import load_config

        config = load_config(write_config(tmp_path), need_secrets=False)
        doc_id = journal_identified(tmp_path, "a.pdf", ID_CARD, unrouted=True)
        requeued, problems = retry_document_ids(config, [doc_id])
        assert requeued == 0
        assert problems == [
            f"document {doc_id}: still no route: identified as `id_card` (0.93), no route for "
            "this type; routes: invoice, receipt"
        ]


class TestValidateRoutes:
    def test_known_route_keys_pass(self, tmp_path: Path, emulator: EmulatorServer) -> None:
        """Route keys that are the account's type codes validate."""
        config = write_config(tmp_path, emulator)
        result = invoke("validate", "-c", str(config))
        assert result.exit_code == 0, result.output
        assert "routes: every document type code is known to the account" in result.output

    def test_an_unknown_route_key_is_named_with_its_path(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """A route key the account does not have fails validate (78) at its YAML path."""
        config = write_config(tmp_path, emulator, routes={"invoice": ["a"], "foo": ["b"]})
        result = invoke("validate", "-c", str(config))
        assert result.exit_code == 78, result.output
        assert "pipelines[0].routes.foo: no document type 'foo' in the account (known: " in (
            result.output
        )
        assert "pipelines[0].routes.invoice" not in result.output

    def test_every_page_of_types_is_read(self, tmp_path: Path, emulator: EmulatorServer) -> None:
        """A code on a later page of the listing counts as known (all pages are read)."""
        from docutray_watch.emulator.config import DocumentTypeSpec

        many = tuple(DocumentTypeSpec(code=f"t{n:03d}", name=f"T{n}") for n in range(150))
        emulator.configure(document_types=many)
        config = write_config(tmp_path, emulator, routes={"t000": ["a"], "t149": ["b"]})
        result = invoke("validate", "-c", str(config))
        assert result.exit_code == 0, result.output

    def test_an_unknown_option_is_named(self, tmp_path: Path, emulator: EmulatorServer) -> None:
        """identify.options are checked too, by position."""
        config = write_config(
            tmp_path, emulator, identify={"options": ["invoice", "receipt", "nope"]}
        )
        result = invoke("validate", "-c", str(config))
        assert result.exit_code == 78, result.output
        assert "pipelines[0].identify.options[2]: no document type 'nope'" in result.output


class TestDryRun:
    def test_dry_run_says_routing_happens_after_upload(self, tmp_path: Path) -> None:
        """process --dry-run cannot tell the route; it says so and lists the routes."""
        config = write_config(tmp_path)
        result = invoke("process", "-c", str(config), "--dry-run")
        assert result.exit_code == 0, result.output
        assert "routing: each document is identified after upload (one submission)" in (
            result.output
        )
        assert "invoice → stp_inv; receipt → stp_rec; otherwise → keep" in result.output


class TestShow:
    def test_show_tells_the_identified_type(self, tmp_path: Path) -> None:
        """`show` gives a routed document's identification (text and --json)."""
        config = write_config(tmp_path)
        journal_identified(tmp_path, "a.pdf", ID_CARD, unrouted=True)
        path = str(tmp_path / "inbox" / "a.pdf")
        text = invoke("show", "-c", str(config), path)
        assert text.exit_code == 0, text.output
        assert "identified:  id_card (Identity card, confidence 0.93)" in text.output
        assert "[route] identified as `id_card` (0.93), no route for this type" in text.output
        (story,) = json.loads(invoke("show", "-c", str(config), "--json", path).output)["documents"]
        assert story["identification"]["code"] == "id_card"
