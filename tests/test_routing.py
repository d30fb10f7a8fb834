"""Routing by document type: the `identify`/`routes` configuration and `choose_route`."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from docutray_watch.client._models import IdentificationResult, IdentificationStatus
from docutray_watch.config import ConfigError, PipelineConfig, load_config, parse_config
from docutray_watch.records import Identification, TypeMatch
from docutray_watch.routing import (
    IDENTIFY_STEP,
    Route,
    choose_route,
    identification_from,
    identification_of,
    release_problem,
    routed_steps_pending,
    routing_summary,
)


def routed(**pipeline: Any) -> dict[str, Any]:
    """A config as data: one pipeline that identifies (invoice and receipt routes)."""
    block: dict[str, Any] = {
        "name": "mixed",
        "watch": {"path": "/srv/inbox/mixed"},
        "identify": {"min_confidence": 0.6},
        "routes": {"invoice": ["stp_inv"], "receipt": ["stp_rec", "stp_tot"]},
        "sinks": [{"type": "filesystem", "path": "/srv/out"}],
    }
    block.update(pipeline)
    return {"state_dir": "/var/lib/docutray-watch", "pipelines": [block]}


def pipeline_of(data: dict[str, Any]) -> PipelineConfig:
    return parse_config(data, environ={}, need_secrets=False).pipelines[0]


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, environ={}, need_secrets=False)
    return info.value.lines()


def ident(code: str, confidence: float) -> Identification:
    return Identification(code=code, name=code.title(), confidence=confidence)


# --- configuration -------------------------------------------------------------------------------


class TestRoutedConfig:
    def test_options_default_to_the_route_keys(self) -> None:
        """Without identify.options the candidates are the route keys, otherwise left out."""
        pipeline = pipeline_of(
            routed(routes={"invoice": ["a"], "receipt": ["b"], "otherwise": "keep"})
        )
        assert pipeline.identify is not None
        assert pipeline.identify.options == ["invoice", "receipt"]
        assert pipeline.route_codes == ["invoice", "receipt"]

    def test_explicit_options_are_kept(self) -> None:
        """Options may list more types than the routes (those fall to otherwise)."""
        data = routed(identify={"options": ["invoice", "receipt", "id_card"]})
        pipeline = pipeline_of(data)
        assert pipeline.identify is not None
        assert pipeline.identify.options == ["invoice", "receipt", "id_card"]

    def test_min_confidence_defaults_to_0_6(self) -> None:
        """identify: {} asks for 0.6 confidence."""
        pipeline = pipeline_of(routed(identify={}))
        assert pipeline.identify is not None
        assert pipeline.identify.min_confidence == 0.6

    def test_initial_steps_of_a_routed_pipeline_is_the_identification(self) -> None:
        """A routed document is queued with only its @identify row; a plain one with its steps."""
        assert pipeline_of(routed()).initial_steps == [IDENTIFY_STEP]
        plain = routed(steps=["stp_a"])
        del plain["pipelines"][0]["identify"], plain["pipelines"][0]["routes"]
        assert pipeline_of(plain).initial_steps == ["stp_a"]

    def test_steps_with_identify_is_an_error_at_steps(self) -> None:
        """routes replace steps: both together is named at pipelines[0].steps."""
        (line,) = problems(routed(steps=["stp_a"]))
        assert line.startswith("<config>: pipelines[0].steps: routes replace steps")

    def test_routes_without_identify_is_an_error_at_routes(self) -> None:
        """routes alone are named at pipelines[0].routes."""
        data = routed(steps=["stp_a"])
        del data["pipelines"][0]["identify"]
        (line,) = problems(data)
        assert line.startswith("<config>: pipelines[0].routes: routes need identify")

    def test_identify_without_routes_is_an_error_at_routes(self) -> None:
        """identify alone says routes are required."""
        data = routed()
        del data["pipelines"][0]["routes"]
        (line,) = problems(data)
        assert line.startswith("<config>: pipelines[0].routes: Field required")

    def test_neither_steps_nor_identify_says_steps_is_required(self) -> None:
        """A plain pipeline without steps still reads `steps: Field required`."""
        data = routed()
        del data["pipelines"][0]["identify"], data["pipelines"][0]["routes"]
        assert problems(data) == ["<config>: pipelines[0].steps: Field required"]

    def test_empty_steps_without_identify_keeps_its_message(self) -> None:
        """steps: [] in a plain pipeline is still `at least 1 item`, with no odd value shown."""
        data = routed(steps=[])
        del data["pipelines"][0]["identify"], data["pipelines"][0]["routes"]
        assert problems(data) == [
            "<config>: pipelines[0].steps: List should have at least 1 item after validation, not 0"
        ]

    def test_empty_route_is_named_by_its_key(self) -> None:
        """A type with no steps is an error at routes.<code>."""
        (line,) = problems(routed(routes={"invoice": [], "receipt": ["b"]}))
        assert line == "<config>: pipelines[0].routes.invoice: a route needs at least one step ID"

    @pytest.mark.parametrize("value", ["skip", [], 3, {"a": 1}])
    def test_invalid_otherwise_is_named(self, value: Any) -> None:
        """otherwise takes fail, keep or a list of step IDs, nothing else."""
        (line,) = problems(routed(routes={"invoice": ["a"], "otherwise": value}))
        assert line.startswith("<config>: pipelines[0].routes.otherwise: otherwise must be")

    @pytest.mark.parametrize("value", ["fail", "keep", "stp_a"])
    def test_a_type_route_is_a_list(self, value: str) -> None:
        """fail/keep (or a bare string) under a type code is an error at that code."""
        (line,) = problems(routed(routes={"invoice": value}))
        assert line.startswith("<config>: pipelines[0].routes.invoice: a route is a list")

    def test_routes_need_a_type_besides_otherwise(self) -> None:
        """routes: {otherwise: [...]} alone routes nothing by type."""
        (line,) = problems(routed(routes={"otherwise": ["a"]}))
        assert line.startswith("<config>: pipelines[0].routes: routes needs at least one")

    def test_route_key_outside_options_is_named(self) -> None:
        """A route for a type the service is not asked about can never be taken."""
        (line,) = problems(routed(identify={"options": ["invoice"]}))
        assert line.startswith("<config>: pipelines[0].routes.receipt: 'receipt' is not in")

    def test_duplicate_steps_in_a_route(self) -> None:
        """A route lists each step once."""
        (line,) = problems(routed(routes={"invoice": ["a", "a"]}))
        assert line == "<config>: pipelines[0].routes.invoice: step IDs must be unique in a route"

    def test_reserved_step_id_is_refused(self) -> None:
        """@identify cannot be configured as a step."""
        (line,) = problems(routed(routes={"invoice": [IDENTIFY_STEP]}))
        assert "routes.invoice" in line
        assert "reserved" in line

    @pytest.mark.parametrize("value", [-0.1, 1.5])
    def test_min_confidence_is_a_probability(self, value: float) -> None:
        """min_confidence lies between 0 and 1."""
        (line,) = problems(routed(identify={"min_confidence": value}))
        assert line.startswith("<config>: pipelines[0].identify.min_confidence: ")

    def test_errors_name_the_line_in_the_file(self, tmp_path: Path) -> None:
        """A routing error in a file carries its line and column."""
        path = tmp_path / "c.yaml"
        path.write_text(
            textwrap.dedent(
                """\
                state_dir: /var/lib/dw
                pipelines:
                  - name: mixed
                    watch: {path: /srv/in}
                    identify: {}
                    routes:
                      invoice: []
                    sinks: [{type: filesystem, path: /srv/out}]
                """
            )
        )
        with pytest.raises(ConfigError) as info:
            load_config(path, environ={}, need_secrets=False)
        assert info.value.lines() == [
            f"{path}:7:16: pipelines[0].routes.invoice: a route needs at least one step ID"
        ]


# --- choosing a route ----------------------------------------------------------------------------


class TestChooseRoute:
    def test_confident_known_type_runs_its_route(self) -> None:
        """A receipt at 0.9 runs exactly the receipt route's steps."""
        route = choose_route(pipeline_of(routed()), ident("receipt", 0.9))
        assert route == Route("run", "receipt", ("stp_rec", "stp_tot"))
        assert route.outcome is None

    def test_exactly_min_confidence_is_enough(self) -> None:
        """The threshold is inclusive."""
        assert choose_route(pipeline_of(routed()), ident("invoice", 0.6)).action == "run"

    def test_low_confidence_fails_with_the_reason(self) -> None:
        """Below min_confidence, with otherwise absent, the document fails and says why."""
        route = choose_route(pipeline_of(routed()), ident("id_card", 0.41))
        assert route.action == "fail"
        assert route.outcome == "failed"
        assert route.reason == (
            "identified as `id_card` (0.41), below min_confidence 0.6; routes: invoice, receipt"
        )

    def test_low_confidence_of_a_routed_type_does_not_run_it(self) -> None:
        """An unsure `invoice` is not treated as an invoice."""
        route = choose_route(pipeline_of(routed()), ident("invoice", 0.2))
        assert route.action == "fail"
        assert route.reason is not None
        assert "below min_confidence" in route.reason

    def test_type_without_route_fails_with_the_reason(self) -> None:
        """A confident type that has no route is named in the reason."""
        route = choose_route(pipeline_of(routed()), ident("id_card", 0.93))
        assert route == Route(
            "fail",
            "otherwise",
            (),
            "identified as `id_card` (0.93), no route for this type; routes: invoice, receipt",
        )

    def test_otherwise_keep_leaves_it_unrouted(self) -> None:
        """otherwise: keep gives the outcome unrouted, with the same reason text."""
        data = routed(routes={"invoice": ["a"], "receipt": ["b"], "otherwise": "keep"})
        route = choose_route(pipeline_of(data), ident("id_card", 0.93))
        assert (route.action, route.outcome) == ("keep", "unrouted")
        assert route.reason is not None
        assert route.reason.startswith("identified as `id_card`")

    def test_otherwise_steps_run_for_the_rest(self) -> None:
        """otherwise: [steps] runs those for an unrouted or unsure type, keeping the reason."""
        data = routed(routes={"invoice": ["a"], "otherwise": ["stp_generic"]})
        route = choose_route(pipeline_of(data), ident("statement", 0.3))
        assert (route.action, route.route, route.steps) == ("run", "otherwise", ("stp_generic",))
        assert route.reason is not None
        assert "below min_confidence" in route.reason

    def test_a_type_called_otherwise_is_not_a_route(self) -> None:
        """The service answering the code `otherwise` does not select the fallback as a type."""
        data = routed(routes={"invoice": ["a"], "otherwise": "keep"})
        route = choose_route(pipeline_of(data), ident("otherwise", 0.99))
        assert route.action == "keep"
        assert route.reason is not None
        assert "no route for this type" in route.reason

    def test_pipeline_without_identify_is_refused(self) -> None:
        """choose_route is only for pipelines that identify."""
        data = routed(steps=["a"])
        del data["pipelines"][0]["identify"], data["pipelines"][0]["routes"]
        with pytest.raises(ValueError, match="does not identify"):
            choose_route(pipeline_of(data), ident("invoice", 1.0))


# --- from the client's answers -------------------------------------------------------------------


class TestIdentificationFrom:
    ANSWER: dict[str, Any] = {
        "document_type": {"code": "invoice", "name": "Invoice", "confidence": 0.87},
        "alternatives": [{"code": "receipt", "name": "Receipt", "confidence": 0.1}],
    }

    def test_from_a_finished_status(self) -> None:
        """A SUCCESS IdentificationStatus gives the type and its alternatives."""
        status = IdentificationStatus.model_validate(
            {"identification_id": "i1", "status": "SUCCESS", **self.ANSWER}
        )
        assert identification_from(status) == Identification(
            code="invoice",
            name="Invoice",
            confidence=0.87,
            alternatives=[TypeMatch(code="receipt", name="Receipt", confidence=0.1)],
        )

    def test_from_a_synchronous_result(self) -> None:
        """identify.run's IdentificationResult gives the same."""
        result = IdentificationResult.model_validate(self.ANSWER)
        assert identification_from(result).code == "invoice"

    def test_status_without_a_type_is_refused(self) -> None:
        """An ENQUEUED (or ERROR) status has nothing to route on."""
        status = IdentificationStatus.model_validate({"id": "i1", "status": "ENQUEUED"})
        with pytest.raises(ValueError, match="no document type"):
            identification_from(status)

    def test_missing_alternatives_are_an_empty_list(self) -> None:
        """An answer without alternatives has none."""
        status = IdentificationStatus.model_validate(
            {"id": "i1", "status": "SUCCESS", "document_type": self.ANSWER["document_type"]}
        )
        assert identification_from(status).alternatives == []

    def test_round_trips_through_json(self) -> None:
        """What the journal stores (JSON text) reads back equal."""
        value = identification_from(IdentificationResult.model_validate(self.ANSWER))
        assert Identification.model_validate_json(value.model_dump_json()) == value


class TestIdentificationOf:
    def test_a_journal_row_reads_back(self) -> None:
        """DocumentRow.identification (JSON data) gives the Identification; None stays None."""
        value = ident("receipt", 0.7)
        assert identification_of(value.model_dump(mode="json")) == value
        assert identification_of(None) is None


class TestRoutedStepsPending:
    def test_only_the_identification_means_routing_is_due(self) -> None:
        """A document with only its @identify row waits for its route."""
        assert routed_steps_pending([IDENTIFY_STEP])

    def test_routed_or_plain_documents_are_not_waiting(self) -> None:
        """Once routed steps exist (or for a plain pipeline) nothing is due."""
        assert not routed_steps_pending([IDENTIFY_STEP, "stp_a"])
        assert not routed_steps_pending(["stp_a"])
        assert not routed_steps_pending([])


class TestIdentifiedHook:
    def test_a_plugin_receives_the_identification(self) -> None:
        """after_document_identified is a hookspec a plugin implements with its three named
        arguments (or a subset), called as the engine calls observers."""
        from docutray_watch._testkit import make_document
        from docutray_watch.hookspecs import hookimpl
        from docutray_watch.plugins import call_observers, get_plugin_manager

        seen: list[tuple[str, str, str]] = []

        class Sorter:
            @hookimpl
            def after_document_identified(
                self, pipeline: str, document: Any, identification: Identification
            ) -> None:
                seen.append((pipeline, document.name, identification.code))

        class Partial:
            @hookimpl
            def after_document_identified(self, identification: Identification) -> None:
                seen.append(("-", "-", identification.name))

        pm = get_plugin_manager(load_entrypoints=False)
        pm.register(Sorter())
        pm.register(Partial())
        call_observers(
            pm,
            "after_document_identified",
            pipeline="mixed",
            document=make_document("a.pdf"),
            identification=ident("receipt", 0.8),
        )
        assert sorted(seen) == [("-", "-", "Receipt"), ("mixed", "a.pdf", "receipt")]


class TestReleaseProblem:
    def test_no_route_yet_says_why(self) -> None:
        """An unrouted type still without a route is not released, with the route's reason."""
        problem = release_problem(pipeline_of(routed()), ident("id_card", 0.9))
        assert problem == (
            "still no route: identified as `id_card` (0.90), no route for this type; "
            "routes: invoice, receipt"
        )

    def test_a_new_route_releases_it(self) -> None:
        """Once routes has its type, it can run."""
        data = routed(routes={"invoice": ["a"], "id_card": ["b"]})
        assert release_problem(pipeline_of(data), ident("id_card", 0.9)) is None

    def test_a_pipeline_that_stopped_identifying_releases_it(self) -> None:
        """Without identify its plain steps run for every document."""
        data = routed(steps=["a"])
        del data["pipelines"][0]["identify"], data["pipelines"][0]["routes"]
        assert release_problem(pipeline_of(data), None) is None

    def test_a_missing_identification_is_a_problem(self) -> None:
        """Nothing to route on: it stays."""
        assert release_problem(pipeline_of(routed()), None) is not None


def test_routing_summary_lists_routes_with_otherwise_last() -> None:
    """The dry-run line names every route and the default `otherwise: fail`."""
    line = routing_summary(pipeline_of(routed()))
    assert line.startswith("each document is identified after upload (one submission)")
    assert line.endswith("invoice → stp_inv; receipt → stp_rec, stp_tot; otherwise → fail")
