"""The append-only sample sink of docs/sinks.md does what that page says such a sink must do."""

from __future__ import annotations

import json
import re
import sys
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from docutray_watch.testing import make_record

DOC = Path(__file__).resolve().parents[2] / "docs" / "sinks.md"


@pytest.fixture(name="sample", scope="module")
def sample_fixture() -> Iterator[dict[str, Any]]:
    """The namespace of the sample's code block, run as a module (pydantic looks it up)."""
    text = DOC.read_text(encoding="utf-8")
    match = re.search(r"<!-- sample: append-only ledger -->\n```python\n(.*?)```", text, re.S)
    assert match, "the sample is gone from docs/sinks.md"
    module = types.ModuleType("ledger_sample")
    sys.modules[module.__name__] = module
    try:
        exec(compile(match.group(1), str(DOC), "exec"), module.__dict__)  # noqa: S102 - our docs
        yield module.__dict__
    finally:
        del sys.modules[module.__name__]


def _sink(sample: dict[str, Any], path: Path) -> Any:
    config = sample["LedgerConfig"](type="ledger", id="ledger", path=path)
    sink = sample["LedgerSink"](config, pipeline="invoices", sink_id="ledger")
    sink.open()
    return sink


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_a_repeat_after_a_crash_is_not_appended_twice(
    sample: dict[str, Any], tmp_path: Path
) -> None:
    """The same result again (same execution id) — in the same run or after a restart — is
    appended once and still reported as delivered."""
    path = tmp_path / "ledger.jsonl"
    record = make_record(execution_id="exec_1")
    sink = _sink(sample, path)
    assert sink.deliver(record) == {"appended": True}
    assert sink.deliver(record) == {"appended": False}
    sink.close()
    restarted = _sink(sample, path)  # a new instance, as after a crash
    assert restarted.deliver(record) == {"appended": False}
    restarted.close()
    assert len(_lines(path)) == 1


def test_a_new_execution_for_the_same_key_supersedes(
    sample: dict[str, Any], tmp_path: Path
) -> None:
    """`retry --force` (a new execution id for the same key) appends a new entry, and readers
    take the latest `completed_at` per key whatever the order of arrival."""
    path = tmp_path / "ledger.jsonl"
    newer = make_record(execution_id="exec_2", completed_at=datetime(2026, 2, 1, tzinfo=UTC))
    older = make_record(execution_id="exec_1", completed_at=datetime(2026, 1, 1, tzinfo=UTC))
    sink = _sink(sample, path)
    sink.deliver(newer)
    sink.deliver(older)  # delivered late: a repeat after a restart
    sink.close()
    assert len(_lines(path)) == 2
    [current] = sample["current_results"](path).values()
    assert current["execution_id"] == "exec_2"


def test_concurrent_deliveries_append_whole_lines(sample: dict[str, Any], tmp_path: Path) -> None:
    """Deliveries in `concurrency` threads at once, repeats included, give one whole JSON line
    per distinct result."""
    path = tmp_path / "ledger.jsonl"
    records = [make_record(step_id=f"stp_{n}", execution_id=f"exec_{n}") for n in range(40)]
    sink = _sink(sample, path)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(sink.deliver, records + records))
    sink.close()
    entries = [json.loads(line) for line in _lines(path)]
    assert sorted(e["execution_id"] for e in entries) == sorted(r.execution_id for r in records)


def test_a_torn_last_line_is_ended_and_the_record_appended_again(
    sample: dict[str, Any], tmp_path: Path
) -> None:
    """A crash mid-append leaves a torn line; on restart the record is delivered again and the
    ledger goes on with whole lines."""
    path = tmp_path / "ledger.jsonl"
    first, second = make_record(execution_id="exec_1"), make_record(step_id="stp_2")
    sink = _sink(sample, path)
    sink.deliver(first)
    sink.close()
    with path.open("a", encoding="utf-8") as ledger:
        ledger.write('{"key": ["invoices", "abc", "stp_2"], "execution_id": "ex')  # torn
    restarted = _sink(sample, path)
    assert restarted.deliver(second) == {"appended": True}
    restarted.close()
    lines = _lines(path)
    assert len(lines) == 3
    assert json.loads(lines[-1])["execution_id"] == second.execution_id
    assert len(sample["current_results"](path)) == 2
