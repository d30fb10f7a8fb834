"""What a sink's exceptions lead to: a bug fails its delivery after a few attempts with the
traceback logged once, an outage keeps the long retry, a receipt must be JSON, and the sidecar
names the step, the sink and the real attempt count."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any, ClassVar

import pluggy
import pytest
from structlog.testing import capture_logs

from docutray_watch._testkit import make_record
from docutray_watch.config import Config
from docutray_watch.delivery import DeliveryGaveUp, SinkRunner
from docutray_watch.hookspecs import hookimpl
from docutray_watch.journal import Journal
from docutray_watch.records import ResultRecord
from docutray_watch.runner import process_once, validate_online
from docutray_watch.samples import make_pdf
from docutray_watch.sinks.base import BUG_ATTEMPTS, Receipt, Sink, SinkConfig
from tests.engine.conftest import ConfigFactory, pipeline_data

PLUGIN = "acme-sinks"
# Retry fast, but give up on outages only after an hour: a test that ends did not wait for it.
LONG_RETRY = {"initial": 0.01, "max": 0.02, "timeout": 3600}


class _Counting(Sink[SinkConfig]):
    calls: ClassVar[int] = 0

    def count(self) -> int:
        type(self).calls += 1
        return type(self).calls


class BuggySink(_Counting):
    """A plugin author's typo: `Document` has `name`, not `filename`."""

    type = "buggy"

    def deliver(self, record: ResultRecord) -> Receipt:
        self.count()
        return str(record.document.filename)  # type: ignore[attr-defined]


class OutageSink(_Counting):
    """The target is down for five attempts, then up."""

    type = "outage"

    def deliver(self, record: ResultRecord) -> Receipt:
        if self.count() <= 5:
            raise ConnectionRefusedError(111, "Connection refused")
        return "stored"


class LookupSink(_Counting):
    """A sink whose client raises KeyError for a record the target does not show yet."""

    type = "lookup"
    bug_exceptions = ()

    def deliver(self, record: ResultRecord) -> Receipt:
        if self.count() <= BUG_ATTEMPTS + 1:
            raise KeyError("not visible yet")
        return "found"


class ObjectReceiptSink(_Counting):
    """Returns something the journal cannot store as JSON."""

    type = "objreceipt"

    def deliver(self, record: ResultRecord) -> Receipt:
        self.count()
        return {"where": object()}


class BrokenOpenSink(_Counting):
    """`open` has a bug; `deliver` would work."""

    type = "brokenopen"

    def open(self) -> None:
        self.count()
        self.client = self.config.endpoint  # type: ignore[attr-defined]

    def deliver(self, record: ResultRecord) -> Receipt:
        return "never"


class BrokenCheckSink(Sink[SinkConfig]):
    """`check` has a bug."""

    type = "brokencheck"

    def check(self) -> None:
        len(None)  # type: ignore[arg-type]


SINKS: list[type[_Counting] | type[Sink[SinkConfig]]] = [
    BuggySink,
    OutageSink,
    LookupSink,
    ObjectReceiptSink,
    BrokenOpenSink,
    BrokenCheckSink,
]


class AcmePlugin:
    @hookimpl
    def register_sink_types(self, register: Callable[[type[Sink[Any]]], None]) -> None:
        for sink in SINKS:
            register(sink)


@pytest.fixture(name="acme")
def acme_fixture(pm: pluggy.PluginManager) -> pluggy.PluginManager:
    for sink in SINKS:
        if issubclass(sink, _Counting):
            sink.calls = 0
    pm.register(AcmePlugin(), name=PLUGIN)
    return pm


def _config(tmp_path: Path, make_config: ConfigFactory, sink_type: str) -> Config:
    pipeline = pipeline_data(tmp_path)
    pipeline["sinks"].append({"type": sink_type, "id": "acme", "retry": LONG_RETRY})
    config = make_config(pipeline)
    (tmp_path / "invoices" / "inbox" / "a.pdf").write_bytes(make_pdf(["a"]))
    return config


def _process(
    config: Config, pm: pluggy.PluginManager
) -> tuple[int, list[MutableMapping[str, Any]]]:
    with capture_logs() as logs:
        code = asyncio.run(process_once(config, plugin_manager=pm, echo=lambda _line: None))
    return code, logs


def _acme_delivery(config: Config) -> tuple[str, int, str | None, str | None]:
    with Journal(config.journal_path) as journal:
        (doc,) = journal.documents_in("archived", "failed")
        (row,) = [d for d in journal.deliveries_of(doc.id) if d.sink == "acme"]
    return row.state, row.attempts, row.receipt, row.error


def _sidecar(tmp_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (tmp_path / "invoices" / "failed" / "a.pdf.error.json").read_text()
    )
    return data


def test_a_bug_in_deliver_fails_the_delivery_after_a_few_attempts_with_its_traceback_once(
    tmp_path: Path, make_config: ConfigFactory, acme: pluggy.PluginManager
) -> None:
    """AttributeError in deliver: failed after BUG_ATTEMPTS (not retry.timeout), one traceback
    naming the plugin, and a sidecar naming the step, the sink and the real attempt count."""
    config = _config(tmp_path, make_config, "buggy")
    code, logs = _process(config, acme)
    assert code == 1
    assert BuggySink.calls == BUG_ATTEMPTS
    tracebacks = [e for e in logs if e["event"] == "sink_exception"]
    assert len(tracebacks) == 1
    (entry,) = tracebacks
    assert entry["plugin"] == PLUGIN
    assert entry["method"] == "deliver"
    assert entry["bug"] is True
    assert entry["log_level"] == "error"
    assert isinstance(entry["exc_info"], AttributeError)
    failed = [e for e in logs if e["event"] == "delivery_failed"]
    assert [e["attempt"] for e in failed] == list(range(1, BUG_ATTEMPTS + 1))
    assert all(e["bug"] and e["plugin"] == PLUGIN for e in failed)

    state, attempts, _receipt, error = _acme_delivery(config)
    assert (state, attempts) == ("failed", BUG_ATTEMPTS)
    assert error is not None
    assert "AttributeError" in error
    assert PLUGIN in error
    sidecar = _sidecar(tmp_path)
    assert sidecar["stage"] == "deliver"
    assert sidecar["step_id"] == "stp_one"
    assert sidecar["sink"] == "acme"
    assert sidecar["attempts"] == BUG_ATTEMPTS
    assert sidecar["execution_id"]
    assert "filename" in sidecar["reason"]
    assert "a bug in plugin 'acme-sinks'" in sidecar["reason"]
    acme_row = next(d for d in sidecar["deliveries"] if d["sink"] == "acme")
    assert acme_row == {
        "sink": "acme",
        "step_id": "stp_one",
        "state": "failed",
        "attempts": BUG_ATTEMPTS,
        "error": error,
    }


def test_an_io_error_keeps_the_long_retry(
    tmp_path: Path, make_config: ConfigFactory, acme: pluggy.PluginManager
) -> None:
    """A connection error is an outage: retried past BUG_ATTEMPTS until it succeeds."""
    config = _config(tmp_path, make_config, "outage")
    code, logs = _process(config, acme)
    assert code == 0
    assert OutageSink.calls == 6
    assert _acme_delivery(config)[:3] == ("delivered", 6, "stored")
    # Its traceback is logged once too, as a warning: it is not a bug.
    (entry,) = [e for e in logs if e["event"] == "sink_exception"]
    assert (entry["log_level"], entry["bug"]) == ("warning", False)


def test_a_sink_can_declare_that_a_bug_exception_is_not_a_bug(
    tmp_path: Path, make_config: ConfigFactory, acme: pluggy.PluginManager
) -> None:
    """A sink with `bug_exceptions = ()` gets its KeyErrors retried like an outage."""
    config = _config(tmp_path, make_config, "lookup")
    code, _logs = _process(config, acme)
    assert code == 0
    assert _acme_delivery(config)[:3] == ("delivered", BUG_ATTEMPTS + 2, "found")


def test_a_receipt_that_is_not_json_fails_the_delivery_with_a_clear_reason(
    tmp_path: Path, make_config: ConfigFactory, acme: pluggy.PluginManager
) -> None:
    """A receipt holding an `object()` is rejected at deliver time, not journaled as its repr."""
    config = _config(tmp_path, make_config, "objreceipt")
    code, _logs = _process(config, acme)
    assert code == 1
    assert ObjectReceiptSink.calls == 1
    state, attempts, receipt, error = _acme_delivery(config)
    assert (state, attempts, receipt) == ("failed", 1, None)
    assert error is not None
    assert "ObjectReceiptSink.deliver returned a receipt that is not JSON" in error
    assert "object at 0x" not in error
    assert "not JSON" in _sidecar(tmp_path)["reason"]


def test_a_bug_in_open_fails_deliveries_fast_with_one_traceback(
    tmp_path: Path, make_config: ConfigFactory, acme: pluggy.PluginManager
) -> None:
    """open() raising AttributeError: logged at start naming the plugin, the delivery (which
    opens again at each attempt) fails after BUG_ATTEMPTS, and the traceback appears once."""
    config = _config(tmp_path, make_config, "brokenopen")
    code, logs = _process(config, acme)
    assert code == 1
    (opened,) = [e for e in logs if e["event"] == "sink_open_failed"]
    assert opened["plugin"] == PLUGIN
    assert "a bug in plugin" in opened["error"]
    (entry,) = [e for e in logs if e["event"] == "sink_exception"]
    assert (entry["method"], entry["plugin"]) == ("open", PLUGIN)
    assert BrokenOpenSink.calls == 1 + BUG_ATTEMPTS  # at start, then once per attempt
    assert _acme_delivery(config)[:2] == ("failed", BUG_ATTEMPTS)


def test_a_bug_in_check_is_reported_as_a_bug_by_validate(
    tmp_path: Path, make_config: ConfigFactory, acme: pluggy.PluginManager
) -> None:
    """`validate` names the plugin and says the sink's check has a bug; the log has the trace."""
    pipeline = pipeline_data(tmp_path)
    pipeline["sinks"].append({"type": "brokencheck", "id": "acme"})
    config = make_config(pipeline)
    lines: list[str] = []
    with capture_logs() as logs:
        code = asyncio.run(validate_online(config, echo=lines.append, plugin_manager=acme))
    assert code != 0
    (line,) = [line for line in lines if "sink acme" in line]
    assert "FAILED: TypeError" in line
    assert "a bug in plugin 'acme-sinks'" in line
    (entry,) = [e for e in logs if e["event"] == "sink_exception"]
    assert (entry["method"], entry["plugin"], entry["bug"]) == ("check", PLUGIN, True)


def test_tracebacks_are_logged_once_per_distinct_error() -> None:
    """The same bug on two deliveries logs one traceback; a different message logs another."""

    class KeyedSink(Sink[SinkConfig]):
        type = "keyed"

        def deliver(self, record: ResultRecord) -> Receipt:
            return {"field": record.data[record.step_id]}

    config = SinkConfig(type="keyed", id="keyed", retry=LONG_RETRY)
    runner = SinkRunner(KeyedSink(config, pipeline="p", sink_id="keyed"), config, pipeline="p")

    async def no_wait(_seconds: float) -> None:
        return None

    async def deliver_all() -> list[int]:
        attempts = []
        for step_id in ("stp_a", "stp_a", "stp_b"):
            with pytest.raises(DeliveryGaveUp) as gave_up:
                await runner.deliver(make_record(step_id=step_id), sleep=no_wait)
            attempts.append(gave_up.value.attempts)
        await runner.close()
        return attempts

    with capture_logs() as logs:
        assert asyncio.run(deliver_all()) == [BUG_ATTEMPTS] * 3
    reported = [e["error"] for e in logs if e["event"] == "sink_exception"]
    assert reported == ["KeyError: 'stp_a'", "KeyError: 'stp_b'"]


def test_delivery_and_finalize_log_lines_carry_the_document_context(
    tmp_path: Path, make_config: ConfigFactory, acme: pluggy.PluginManager
) -> None:
    """The delivery and finalize lines (delivered, gave up, failed, archived) all name the
    document's pipeline and file, from the logger bound once for the document."""
    config = _config(tmp_path, make_config, "buggy")
    code, logs = _process(config, acme)
    assert code == 1
    wanted = {"document_delivered", "delivery_gave_up", "document_failed", "document_archived"}
    lines = [entry for entry in logs if entry["event"] in wanted]
    assert {entry["event"] for entry in lines} == wanted
    for entry in lines:
        assert (entry["pipeline"], entry["doc"]) == ("invoices", "a.pdf"), entry
