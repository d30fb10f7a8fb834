"""An S3 pipeline end to end: `process` takes the objects of a bucket prefix through the emulator
(moto's server as the bucket), delivers the results to a filesystem sink and moves each object
to the done or failed prefix; overwritten objects are taken again, never moved or deleted
unprocessed; a move cut short completes at the next run; `submit_as: url` sends a presigned URL
the emulator fetches from moto."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pluggy
import pytest

from docutray_watch.config import Config, parse_config
from docutray_watch.emulator import EmulatorServer
from docutray_watch.emulator._markers import ERROR_MARKER
from docutray_watch.engine import Engine
from docutray_watch.hookspecs import hookimpl
from docutray_watch.journal import DocumentState, Journal
from docutray_watch.plugins import config_sink_types, get_plugin_manager
from docutray_watch.records import Document
from docutray_watch.runner import process_once
from docutray_watch.samples import make_pdf
from docutray_watch.sources.base import SourceDocument
from docutray_watch.sources.s3 import S3Source
from tests.s3kit import MotoServer
from tests.sources.conftest import s3_source


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(name="pm")
def pm_fixture() -> pluggy.PluginManager:
    """The built-in plugins (the s3 source among them), no entry points."""
    return get_plugin_manager(load_entrypoints=False)


def s3_config(
    tmp_path: Path,
    emulator: EmulatorServer,
    pm: pluggy.PluginManager,
    moto: MotoServer,
    bucket: str,
    source: dict[str, Any] | None = None,
    **overrides: Any,
) -> Config:
    """One pipeline taking s3://bucket/in/, moving to done/ or failed/, results on disk."""
    pipeline = {
        "name": "scans",
        "source": s3_source(moto, bucket, **{"prefix": "in/", **(source or {})}),
        "steps": ["stp_one"],
        "poll": {"initial": 0.05, "max": 0.2, "timeout": 30},
        "on_success": {"action": "move", "to": f"s3://{bucket}/done/"},
        "on_failure": {"action": "move", "to": f"s3://{bucket}/failed/"},
        "sinks": [{"type": "filesystem", "path": str(tmp_path / "results")}],
        **overrides,
    }
    if "routes" in overrides:
        del pipeline["steps"]  # a pipeline that identifies runs its route's steps
    data = {
        "api": {
            "base_url": emulator.base_url,
            "api_key": emulator.api_key,
            "max_in_flight": 8,
            "requests_per_second": 1000,
            "max_retries": 2,
        },
        "state_dir": str(tmp_path / "state"),
        "shutdown_grace": 2,
        "pipelines": [pipeline],
    }
    return parse_config(data, config_dir=tmp_path, sink_types=config_sink_types(pm), environ={})


def run(config: Config, pm: pluggy.PluginManager) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = asyncio.run(process_once(config, plugin_manager=pm, echo=lines.append))
    return code, lines


def keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    found = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return sorted(o["Key"].removeprefix(prefix) for o in found)


def body(s3: Any, bucket: str, key: str) -> bytes:
    data: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return data


def results(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "results").rglob("*.json"))]


def test_process_takes_a_prefix_of_twenty_objects_to_done_and_failed(
    tmp_path: Path,
    s3: Any,
    bucket: str,
    moto: MotoServer,
    emulator: EmulatorServer,
    pm: pluggy.PluginManager,
) -> None:
    """19 good objects are processed once each (the service received their bytes), their
    results land in the filesystem sink and they move to done/; the one whose result is an
    ERROR moves to failed/ with its `.error.json` object; in/ is empty; the journal shows the
    documents as s3:// identities."""
    objects = {f"doc{i:02d}.pdf": make_pdf([f"page {i}"]) for i in range(19)}
    objects["sub/bad.pdf"] = make_pdf(["bad"]) + ERROR_MARKER
    for name, data in objects.items():
        s3.put_object(Bucket=bucket, Key=f"in/{name}", Body=data)
    config = s3_config(tmp_path, emulator, pm, moto, bucket)
    code, lines = run(config, pm)
    assert code == 1, lines  # the one failure
    assert keys(s3, bucket, "in/") == []
    good = sorted(n for n in objects if n != "sub/bad.pdf")
    assert keys(s3, bucket, "done/") == good
    for name in good:
        assert body(s3, bucket, f"done/{name}") == objects[name]
    assert keys(s3, bucket, "failed/") == ["sub/bad.pdf", "sub/bad.pdf.error.json"]
    sidecar = json.loads(body(s3, bucket, "failed/sub/bad.pdf.error.json"))
    assert sidecar["stage"] == "result"
    assert sidecar["source_path"] == f"s3://{bucket}/in/sub/bad.pdf"
    assert sidecar["moved_to"] == f"s3://{bucket}/failed/sub/bad.pdf"
    records = results(tmp_path)
    assert sorted(r["document"]["name"] for r in records) == [f"{n}" for n in good]
    for record in records:
        data = objects[record["document"]["name"]]
        assert record["data"]["sha256"] == record["document"]["sha256"] == sha(data)
        assert record["document"]["path"].startswith(f"s3://{bucket}/in/")
    assert emulator.stats().executions_created == 20
    with Journal(config.journal_path) as journal:
        rows = journal.conn.execute("SELECT path, source_version FROM documents").fetchall()
    assert sorted(path for path, _ in rows) == sorted(f"s3://{bucket}/in/{n}" for n in objects)
    assert all(version.startswith('"') for _, version in rows)  # the ETags taken at intake
    assert any("failed [scans] s3://" in line for line in lines)


def test_a_second_process_takes_nothing_again(
    tmp_path: Path,
    s3: Any,
    bucket: str,
    moto: MotoServer,
    emulator: EmulatorServer,
    pm: pluggy.PluginManager,
) -> None:
    """With `on_success: keep`, an object processed by a first run stays in in/ and is not
    processed again by a second run (its key + ETag is remembered from the journal)."""
    s3.put_object(Bucket=bucket, Key="in/k.pdf", Body=make_pdf(["kept"]))
    config = s3_config(tmp_path, emulator, pm, moto, bucket, on_success={"action": "keep"})
    assert run(config, pm)[0] == 0
    assert run(config, pm)[0] == 0
    assert emulator.stats().executions_created == 1
    assert keys(s3, bucket, "in/") == ["k.pdf"]


class Overwriter:
    """Overwrites an object once, right after its first version was journaled `queued`
    (before it can be submitted): the upload's conditional read finds another version."""

    def __init__(self, s3: Any, bucket: str, key: str, data: bytes) -> None:
        self.s3, self.bucket, self.key, self.data = s3, bucket, key, data
        self.done = False

    @hookimpl
    def document_discovered(self, pipeline: str, document: Document) -> None:
        if not self.done and document.path.endswith(self.key):
            self.done = True
            self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=self.data)


def test_an_object_overwritten_before_its_upload_is_taken_again(
    tmp_path: Path,
    s3: Any,
    bucket: str,
    moto: MotoServer,
    emulator: EmulatorServer,
    pm: pluggy.PluginManager,
) -> None:
    """The first version is never submitted, moved or deleted; the new version is taken as a
    document of its own, processed and moved to done/; the first ends `superseded`."""
    first, second = make_pdf(["first"]), make_pdf(["second version"])
    s3.put_object(Bucket=bucket, Key="in/o.pdf", Body=first)
    pm.register(Overwriter(s3, bucket, "in/o.pdf", second), name="overwriter")
    config = s3_config(tmp_path, emulator, pm, moto, bucket)
    code, lines = run(config, pm)
    assert code == 0, lines
    assert keys(s3, bucket, "in/") == []
    assert keys(s3, bucket, "done/") == ["o.pdf"]
    assert body(s3, bucket, "done/o.pdf") == second
    assert [r["data"]["sha256"] for r in results(tmp_path)] == [sha(second)]
    assert emulator.stats().executions_created == 1  # the first version was never sent
    with Journal(config.journal_path) as journal:
        rows = journal.conn.execute("SELECT state, source_version FROM documents ORDER BY id")
        (old_state, old_version), (new_state, new_version) = rows.fetchall()
    assert (old_state, new_state) == (DocumentState.SUPERSEDED, DocumentState.ARCHIVED)
    assert old_version != new_version
    assert any("superseded 1" in line for line in lines), lines


def test_submit_as_url_sends_a_presigned_url_the_emulator_fetches(
    tmp_path: Path,
    s3: Any,
    bucket: str,
    moto: MotoServer,
    emulator: EmulatorServer,
    pm: pluggy.PluginManager,
) -> None:
    """The service receives the object's bytes through the URL (same sha256 in the result),
    and the object moves to done/."""
    data = make_pdf(["by url"])
    s3.put_object(Bucket=bucket, Key="in/u.pdf", Body=data)
    config = s3_config(
        tmp_path, emulator, pm, moto, bucket, {"submit_as": "url", "url_expiry": 300}
    )
    code, lines = run(config, pm)
    assert code == 0, lines
    (record,) = results(tmp_path)
    assert record["data"]["sha256"] == sha(data)
    assert keys(s3, bucket, "done/") == ["u.pdf"]


def test_a_move_cut_short_is_completed_by_the_next_run(
    tmp_path: Path,
    s3: Any,
    bucket: str,
    moto: MotoServer,
    emulator: EmulatorServer,
    pm: pluggy.PluginManager,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A first run journals the move's destination, copies the object and stops before the
    delete (as a kill would); the next run completes that same move: one object in done/,
    none left in in/, and the document processed once."""
    data = make_pdf(["moved"])
    s3.put_object(Bucket=bucket, Key="in/m.pdf", Body=data)
    config = s3_config(tmp_path, emulator, pm, moto, bucket)
    real_move = S3Source.move

    async def copy_then_die(self: S3Source, doc: SourceDocument, destination: str) -> str:
        dest_bucket, key = self._split(destination)
        await self._copy(doc, dest_bucket, key, await self._require_version(doc))
        raise RuntimeError("killed between copy and delete")

    monkeypatch.setattr(S3Source, "move", copy_then_die)
    code, lines = run(config, pm)
    assert code == 1, lines  # not finished
    assert keys(s3, bucket, "in/") == ["m.pdf"]
    assert keys(s3, bucket, "done/") == ["m.pdf"]
    with Journal(config.journal_path) as journal:
        (doc,) = journal.unfinished_documents()
        assert doc.archive_to == f"s3://{bucket}/done/m.pdf"
    monkeypatch.setattr(S3Source, "move", real_move)
    code, lines = run(config, pm)
    assert code == 0, lines
    assert keys(s3, bucket, "in/") == []
    assert keys(s3, bucket, "done/") == ["m.pdf"]
    assert body(s3, bucket, "done/m.pdf") == data
    assert emulator.stats().executions_created == 1


def test_an_s3_pipeline_that_identifies_routes_each_object(
    tmp_path: Path,
    s3: Any,
    bucket: str,
    moto: MotoServer,
    emulator: EmulatorServer,
    pm: pluggy.PluginManager,
) -> None:
    """The identification streams the object from the bucket too: an invoice runs its route's
    step and moves to done/."""
    marker = ["DOCUTRAY-EMULATOR:TYPE=invoice", "DOCUTRAY-EMULATOR:CONFIDENCE=0.9"]
    data = make_pdf(["inv", *marker])
    s3.put_object(Bucket=bucket, Key="in/inv.pdf", Body=data)
    config = s3_config(
        tmp_path,
        emulator,
        pm,
        moto,
        bucket,
        identify={"options": ["invoice", "receipt"], "min_confidence": 0.6},
        routes={"invoice": ["stp_inv"], "receipt": ["stp_rec"]},
    )
    code, lines = run(config, pm)
    assert code == 0, lines
    (record,) = results(tmp_path)
    assert (record["step_id"], record["data"]["sha256"]) == ("stp_inv", sha(data))
    assert keys(s3, bucket, "done/") == ["inv.pdf"]


async def test_a_reload_keeps_an_unchanged_source_and_replaces_a_changed_one(
    tmp_path: Path,
    s3: Any,
    bucket: str,
    moto: MotoServer,
    emulator: EmulatorServer,
    pm: pluggy.PluginManager,
) -> None:
    """Changing only the steps keeps the started source; changing its prefix replaces it, and
    the new one takes the objects under the new prefix."""
    config = s3_config(tmp_path, emulator, pm, moto, bucket)
    engine = Engine(config, plugin_manager=pm)
    await engine.start()
    try:
        first = engine.ctx.pipelines["scans"].source
        assert first is not None
        await engine.reload(s3_config(tmp_path, emulator, pm, moto, bucket, steps=["stp_two"]))
        assert engine.ctx.pipelines["scans"].source is first
        moved = s3_config(
            tmp_path, emulator, pm, moto, bucket, {"prefix": "new/"}, steps=["stp_two"]
        )
        await engine.reload(moved)
        second = engine.ctx.pipelines["scans"].source
        assert second is not None
        assert second is not first
        s3.put_object(Bucket=bucket, Key="new/r.pdf", Body=make_pdf(["reloaded"]))
        await engine.scan("scans")  # (or the new source's own first look) nominates it
        await asyncio.wait_for(engine.wait_idle(), 30)
    finally:
        await engine.stop(grace=0)
    assert keys(s3, bucket, "done/") == ["r.pdf"]
    assert [r["step_id"] for r in results(tmp_path)] == ["stp_two"]


def test_an_unrouted_object_is_kept_and_not_taken_again(
    tmp_path: Path,
    s3: Any,
    bucket: str,
    moto: MotoServer,
    emulator: EmulatorServer,
    pm: pluggy.PluginManager,
) -> None:
    """`otherwise: keep`: an object of a type no route takes stays in in/, and a second run
    neither identifies nor processes it again."""
    marker = ["DOCUTRAY-EMULATOR:TYPE=receipt", "DOCUTRAY-EMULATOR:CONFIDENCE=0.9"]
    s3.put_object(Bucket=bucket, Key="in/rec.pdf", Body=make_pdf(["rec", *marker]))
    config = s3_config(
        tmp_path,
        emulator,
        pm,
        moto,
        bucket,
        identify={"options": ["invoice", "receipt"], "min_confidence": 0.6},
        routes={"invoice": ["stp_inv"], "otherwise": "keep"},
    )
    run(config, pm)
    run(config, pm)
    assert keys(s3, bucket, "in/") == ["rec.pdf"]
    assert emulator.stats().identifications_created == 1
    assert results(tmp_path) == []
