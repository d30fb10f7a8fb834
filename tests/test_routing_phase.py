"""`docutray_watch.routing_phase`: the identification phase against the emulator, journaled in a
`MemoryStore` exactly as the engine will (submit, poll, finish_step, route)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from docutray_watch._memstore import MemoryStore
from docutray_watch.client import AsyncClient
from docutray_watch.client._models import IdentificationStatus
from docutray_watch.config import PipelineConfig, parse_config
from docutray_watch.emulator import EmulatorServer
from docutray_watch.journal import IDENTIFY_STEP
from docutray_watch.journal.rows import DocumentRow, StepRow
from docutray_watch.routing_phase import (
    ROUTE_STAGE,
    identification_in_step,
    identification_outcome,
    read_identification,
    route_identified,
    submit_identification,
)
from docutray_watch.samples import make_pdf


def pipeline_of(**overrides: Any) -> PipelineConfig:
    block: dict[str, Any] = {
        "name": "mixed",
        "watch": {"path": "/srv/inbox/mixed"},
        "identify": {"min_confidence": 0.6},
        "routes": {"invoice": ["stp_inv"], "receipt": ["stp_rec", "stp_tot"]},
        "sinks": [{"type": "filesystem", "path": "/srv/out"}],
    }
    block.update(overrides)
    config = parse_config(
        {"state_dir": "/var/lib/dw", "pipelines": [block]}, environ={}, need_secrets=False
    )
    return config.pipelines[0]


@pytest.fixture(name="store")
async def store_fixture() -> AsyncIterator[MemoryStore]:
    store = MemoryStore()
    await store.open()
    yield store
    await store.close()
    store.discard()


@pytest.fixture(name="client")
async def client_fixture(emulator: EmulatorServer) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(api_key=emulator.api_key, base_url=emulator.base_url) as client:
        yield client


async def queued(store: MemoryStore, path: Path) -> tuple[DocumentRow, StepRow]:
    """A document of `mixed` queued with its `@identify` row, as the engine queues it."""
    doc, (step,) = await store.add_queued(
        "mixed",
        str(path),
        path.name,
        sha256="c" * 64,
        content_type="application/pdf",
        size=path.stat().st_size,
        mtime_ns=1,
        steps=pipeline_of().initial_steps,
    )
    return doc, step


async def identify(
    store: MemoryStore, client: AsyncClient, pipeline: PipelineConfig, path: Path
) -> tuple[DocumentRow, StepRow]:
    """Run the `@identify` row through submit, poll and finish_step; the finished row."""
    doc, step = await queued(store, path)
    await store.step_submitting(step.id)
    started = await submit_identification(client, pipeline, doc)
    await store.step_accepted(step.id, started.identification_id, started.status)
    final = await started.wait(timeout=30, poll_interval=0.05)
    again = await read_identification(client, started.identification_id)
    assert again.status == final.status
    outcome = identification_outcome(final)
    view = await store.finish_step(
        step.id,
        state=outcome.state,
        status=final.status,
        result=outcome.result,
        error=outcome.error,
    )
    step = next(s for s in view.steps if s.id == step.id)
    # Only an ERROR completes the document; a SUCCESS leaves it waiting for its route.
    assert (view.document.state == "completed") == (outcome.state == "error")
    return await store.document(doc.id), step


def pdf(tmp_path: Path, *markers: str) -> Path:
    path = tmp_path / "doc.pdf"
    path.write_bytes(make_pdf(["a document", *markers]))
    return path


class TestRouteIdentified:
    async def test_a_confident_type_gets_its_route_steps(
        self, store: MemoryStore, client: AsyncClient, tmp_path: Path
    ) -> None:
        """An invoice: the identification is journaled (new), the invoice route's step added."""
        pipeline = pipeline_of()
        doc, step = await identify(store, client, pipeline, pdf(tmp_path))
        routed = await route_identified(store, pipeline, doc, step)
        assert routed.newly_identified
        assert routed.identification.code == "invoice"
        assert (routed.route.action, routed.route.steps) == ("run", ("stp_inv",))
        assert [(s.step_id, s.state) for s in routed.steps] == [
            (IDENTIFY_STEP, "success"),
            ("stp_inv", "pending"),
        ]
        assert routed.document.identified_type == "invoice"
        assert await store.counts_by_type() == {"mixed": {"invoice": 1}}

    async def test_routing_again_after_a_restart_does_not_identify_again(
        self, store: MemoryStore, client: AsyncClient, tmp_path: Path
    ) -> None:
        """A document whose identification is journaled is routed from it: not new, no second
        set_identification, the same steps."""
        pipeline = pipeline_of()
        doc, step = await identify(store, client, pipeline, pdf(tmp_path))
        await route_identified(store, pipeline, doc, step)
        again = await route_identified(store, pipeline, await store.document(doc.id), step)
        assert not again.newly_identified
        assert [s.step_id for s in again.steps] == [IDENTIFY_STEP, "stp_inv"]
        assert len(store.calls_of("set_identification")) == 1

    async def test_the_options_limit_the_candidates(
        self, store: MemoryStore, client: AsyncClient, tmp_path: Path
    ) -> None:
        """identify.options is sent: a PDF the emulator calls an invoice can only be a receipt
        when the options are [receipt]."""
        pipeline = pipeline_of(routes={"receipt": ["stp_rec"]})
        doc, step = await identify(store, client, pipeline, pdf(tmp_path))
        routed = await route_identified(store, pipeline, doc, step)
        assert routed.identification.code == "receipt"

    async def test_low_confidence_fails_with_the_sidecar_reason(
        self, store: MemoryStore, client: AsyncClient, tmp_path: Path
    ) -> None:
        """Below min_confidence (otherwise absent: fail) the document fails at stage `route`
        with the reason text and the identification's facts as details."""
        pipeline = pipeline_of(identify={"options": ["invoice", "receipt", "id_card"]})
        path = pdf(tmp_path, "DOCUTRAY-EMULATOR:TYPE=id_card", "DOCUTRAY-EMULATOR:CONFIDENCE=0.41")
        doc, step = await identify(store, client, pipeline, path)
        routed = await route_identified(store, pipeline, doc, step)
        failed = routed.document
        assert (failed.state, failed.error_stage) == ("failed", ROUTE_STAGE)
        assert failed.error == (
            "identified as `id_card` (0.41), below min_confidence 0.6; routes: invoice, receipt"
        )
        assert failed.error_detail is not None
        assert failed.error_detail["identified_type"] == "id_card"
        assert failed.error_detail["execution_id"] == step.execution_id

    async def test_otherwise_keep_leaves_it_unrouted(
        self, store: MemoryStore, client: AsyncClient, tmp_path: Path
    ) -> None:
        """A confident type without a route, otherwise: keep — outcome unrouted."""
        pipeline = pipeline_of(
            identify={"options": ["invoice", "receipt", "contract"]},
            routes={"invoice": ["a"], "receipt": ["b"], "otherwise": "keep"},
        )
        path = pdf(tmp_path, "DOCUTRAY-EMULATOR:TYPE=contract", "DOCUTRAY-EMULATOR:CONFIDENCE=0.9")
        doc, step = await identify(store, client, pipeline, path)
        routed = await route_identified(store, pipeline, doc, step)
        assert (routed.document.state, routed.document.outcome) == ("unrouted", "unrouted")
        assert routed.document.error is not None
        assert "no route for this type" in routed.document.error

    async def test_an_error_identification_completes_the_document(
        self, store: MemoryStore, client: AsyncClient, tmp_path: Path
    ) -> None:
        """An identification that ends in ERROR is journaled as an errored step: the document
        completes (the engine fails it like a step error) and there is nothing to route."""
        pipeline = pipeline_of()
        doc, step = await identify(
            store, client, pipeline, pdf(tmp_path, "DOCUTRAY-EMULATOR:ERROR")
        )
        assert step.state == "error"
        assert step.error is not None
        assert step.error.startswith("the identification ended in ERROR")
        assert doc.state == "completed"
        assert identification_in_step(step) is None
        with pytest.raises(ValueError, match="did not succeed"):
            await route_identified(store, pipeline, doc, step)


class TestOutcome:
    def test_success_without_a_type_is_an_error(self) -> None:
        """A SUCCESS naming no type cannot be routed: journaled as an error."""
        status = IdentificationStatus.model_validate({"id": "i", "status": "SUCCESS"})
        outcome = identification_outcome(status)
        assert (outcome.state, outcome.error) == (
            "error",
            "the identification succeeded without a document type",
        )

    def test_the_whole_answer_is_the_result(self) -> None:
        """The journaled result reads back into the same identification."""
        status = IdentificationStatus.model_validate(
            {
                "identification_id": "i",
                "status": "SUCCESS",
                "document_type": {"code": "invoice", "name": "Invoice", "confidence": 0.8},
                "alternatives": [{"code": "receipt", "name": "Receipt", "confidence": 0.1}],
            }
        )
        outcome = identification_outcome(status)
        assert outcome.state == "success"
        assert outcome.result["identification_id"] == "i"
        again = IdentificationStatus.model_validate(outcome.result)
        assert again.document_type is not None
        assert again.document_type.code == "invoice"

    async def test_a_pipeline_without_identify_is_refused(self, client: AsyncClient) -> None:
        """submit_identification is only for pipelines that identify."""
        plain = pipeline_of(steps=["a"], identify=None, routes=None)
        doc = DocumentRow(
            id=1,
            pipeline="mixed",
            path="/x.pdf",
            relative_path="x.pdf",
            size=1,
            mtime_ns=1,
            sha256="c" * 64,
            content_type="application/pdf",
            state="queued",  # type: ignore[arg-type]
            outcome=None,
            attempts=1,
            error=None,
            error_stage=None,
            error_detail=None,
            flags=frozenset(),
            duplicate_of=None,
            archive_to=None,
            archived_to=None,
            created_at=0,
            updated_at=0,
            finished_at=None,
        )
        with pytest.raises(ValueError, match="does not identify"):
            await submit_identification(client, plain, doc)
