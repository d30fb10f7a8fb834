"""The engine end to end against the emulator on loopback, through `process_once`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pluggy
import pytest

from docutray_watch._testkit import MemorySink
from docutray_watch.config import Config
from docutray_watch.emulator import EmulatorServer
from docutray_watch.journal import Journal
from docutray_watch.runner import ApiUnreachableError, process_once
from docutray_watch.samples import make_pdf, make_png
from tests.engine.conftest import ConfigFactory, pipeline_data

ERROR_MARKER = b"DOCUTRAY-EMULATOR:ERROR"


def run(config: Config, pm: pluggy.PluginManager) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = asyncio.run(process_once(config, plugin_manager=pm, echo=lines.append))
    return code, lines


def results_of(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.rglob("*.json"))]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class TestHappyPath:
    def test_every_step_of_every_document_is_delivered_once(
        self,
        tmp_path: Path,
        make_config: ConfigFactory,
        pm: pluggy.PluginManager,
        emulator: EmulatorServer,
    ) -> None:
        """Two steps on three documents give six result files, and the originals move to done."""
        config = make_config(pipeline_data(tmp_path, steps=["stp_a", "stp_b"]))
        inbox = tmp_path / "invoices" / "inbox"
        files = {
            "a.pdf": make_pdf(["A"]),
            "b.png": make_png(8, 8),
            "c.pdf": make_pdf(["C"]),
        }
        for name, data in files.items():
            (inbox / name).write_bytes(data)
        code, _ = run(config, pm)
        assert code == 0
        results = results_of(tmp_path / "invoices" / "results")
        keys = sorted((r["document"]["name"], r["step_id"]) for r in results)
        assert keys == sorted((n, s) for n in files for s in ("stp_a", "stp_b"))
        for record in results:
            data = files[record["document"]["name"]]
            assert record["document"]["sha256"] == sha(data)
            assert record["data"]["sha256"] == sha(data)  # what the service received
            assert record["status"] == "SUCCESS"
        assert sorted(p.name for p in (tmp_path / "invoices" / "done").iterdir()) == sorted(files)
        assert list(inbox.iterdir()) == []
        assert emulator.stats().executions_created == 6

    def test_document_metadata_templates_reach_the_service(
        self, tmp_path: Path, make_config: ConfigFactory, pm: pluggy.PluginManager
    ) -> None:
        """document_metadata values are rendered with the file's name and relative folder."""
        pipeline = pipeline_data(
            tmp_path,
            document_metadata={"file": "{name}", "folder": "{relative_dir}", "fixed": 7},
            watch={"path": str(tmp_path / "invoices" / "inbox"), "settle": 0, "recursive": True},
        )
        config = make_config(pipeline)
        sub = tmp_path / "invoices" / "inbox" / "2026" / "jan"
        sub.mkdir(parents=True)
        (sub / "x.pdf").write_bytes(make_pdf(["x"]))
        code, _ = run(config, pm)
        assert code == 0
        (record,) = results_of(tmp_path / "invoices" / "results")
        assert record["data"]["document_metadata"] == {
            "file": "x.pdf",
            "folder": "2026/jan",
            "fixed": 7,
        }
        assert (tmp_path / "invoices" / "done" / "2026" / "jan" / "x.pdf").exists()

    def test_keep_action_does_not_take_the_same_file_twice(
        self,
        tmp_path: Path,
        make_config: ConfigFactory,
        pm: pluggy.PluginManager,
        emulator: EmulatorServer,
    ) -> None:
        """With on_success keep, a second run leaves an already processed file alone."""
        config = make_config(pipeline_data(tmp_path, on_success={"action": "keep"}))
        (tmp_path / "invoices" / "inbox" / "k.pdf").write_bytes(make_pdf(["k"]))
        assert run(config, pm)[0] == 0
        assert run(config, pm)[0] == 0
        assert emulator.stats().executions_created == 1
        assert (tmp_path / "invoices" / "inbox" / "k.pdf").exists()


class TestFailures:
    def test_error_result_goes_to_failed_with_a_sidecar(
        self, tmp_path: Path, make_config: ConfigFactory, pm: pluggy.PluginManager
    ) -> None:
        """An ERROR result moves the document to failed/ with <name>.error.json saying why."""
        config = make_config(pipeline_data(tmp_path))
        (tmp_path / "invoices" / "inbox" / "bad.pdf").write_bytes(make_pdf(["x"]) + ERROR_MARKER)
        code, lines = run(config, pm)
        assert code == 1
        failed = tmp_path / "invoices" / "failed"
        assert (failed / "bad.pdf").exists()
        sidecar = json.loads((failed / "bad.pdf.error.json").read_text())
        assert sidecar["stage"] == "result"
        assert "ERROR" in sidecar["reason"]
        assert sidecar["step_id"] == "stp_one"
        assert sidecar["execution_id"].startswith("exec_")
        assert sidecar["document"] == "bad.pdf"
        assert results_of(tmp_path / "invoices" / "results") == []
        assert any("bad.pdf" in line for line in lines)

    def test_bad_files_are_rejected_before_any_upload(
        self,
        tmp_path: Path,
        make_config: ConfigFactory,
        pm: pluggy.PluginManager,
        emulator: EmulatorServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Empty, unsupported and oversized files go to failed/ with reasons; nothing is sent."""
        monkeypatch.setattr("docutray_watch.intake.MAX_FILE_SIZE", 1000)
        config = make_config(pipeline_data(tmp_path))
        inbox = tmp_path / "invoices" / "inbox"
        (inbox / "empty.pdf").write_bytes(b"")
        (inbox / "text.pdf").write_text("just text")
        (inbox / "program.png").write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 64)
        (inbox / "big.pdf").write_bytes(make_pdf(["big"], padding=2000))
        code, _ = run(config, pm)
        assert code == 1
        failed = tmp_path / "invoices" / "failed"
        reasons = {
            name: json.loads((failed / f"{name}.error.json").read_text())["reason"]
            for name in ("empty.pdf", "text.pdf", "program.png", "big.pdf")
        }
        assert "empty" in reasons["empty.pdf"]
        assert "unsupported" in reasons["text.pdf"]
        assert "unsupported" in reasons["program.png"]
        assert "too large" in reasons["big.pdf"]
        assert emulator.stats().posts == 0

    def test_names_at_the_length_limit_are_archived_with_their_sidecar(
        self, tmp_path: Path, make_config: ConfigFactory, pm: pluggy.PluginManager
    ) -> None:
        """255-byte names: the good one is delivered and moved, the bad one fails with a sidecar."""
        config = make_config(pipeline_data(tmp_path))
        inbox = tmp_path / "invoices" / "inbox"
        good, bad = "g" * 251 + ".png", "b" * 251 + ".pdf"
        (inbox / good).write_bytes(make_png(8, 8))
        (inbox / bad).write_text("just text")
        code, _ = run(config, pm)
        assert code == 1  # one failure, and nothing left unfinished
        assert (tmp_path / "invoices" / "done" / good).exists()
        failed = tmp_path / "invoices" / "failed"
        assert (failed / bad).exists()
        sidecars = list(failed.glob("*.error.json"))
        assert len(sidecars) == 1
        assert "unsupported" in json.loads(sidecars[0].read_text())["reason"]
        assert list(inbox.iterdir()) == []

    def test_an_unknown_step_pauses_its_pipeline_and_the_next_run_submits_only_it(
        self,
        tmp_path: Path,
        pm: pluggy.PluginManager,
        emulator_factory: Any,
        make_config: ConfigFactory,
    ) -> None:
        """A 404 to a step's submission fails nothing: `process` gives up after --api-wait with
        the document left in the inbox, and the next run submits just that step."""
        picky = emulator_factory(step_ids=["stp_a"])
        config = make_config(
            pipeline_data(tmp_path, steps=["stp_a", "stp_b"]),
            api={"base_url": picky.base_url, "api_key": picky.api_key},
        )
        (tmp_path / "invoices" / "inbox" / "r.pdf").write_bytes(make_pdf(["r"]))
        with pytest.raises(ApiUnreachableError, match=r"pipeline invoices: .*404"):
            asyncio.run(process_once(config, plugin_manager=pm, echo=print, api_wait=0.5))
        assert (tmp_path / "invoices" / "inbox" / "r.pdf").exists()
        assert not (tmp_path / "invoices" / "failed").exists()

        picky.configure(step_ids=["stp_a", "stp_b"])
        assert run(config, pm)[0] == 0
        submitted = picky.stats().submissions
        assert sum(sum(v.values()) for k, v in submitted.items() if "stp_a" in k) == 1
        steps = sorted(r["step_id"] for r in results_of(tmp_path / "invoices" / "results"))
        assert steps == ["stp_a", "stp_b"]
        assert (tmp_path / "invoices" / "done" / "r.pdf").exists()

    def test_a_step_that_never_finishes_times_out(
        self, tmp_path: Path, make_config: ConfigFactory, pm: pluggy.PluginManager
    ) -> None:
        """poll.timeout ends the document as failed with 'timed out after N s'."""
        config = make_config(
            pipeline_data(tmp_path, poll={"initial": 0.05, "max": 0.1, "timeout": 0.5})
        )
        (tmp_path / "invoices" / "inbox" / "slow.pdf").write_bytes(
            make_pdf(["s"]) + b"DOCUTRAY-EMULATOR:LATENCY=30"
        )
        assert run(config, pm)[0] == 1
        sidecar = json.loads((tmp_path / "invoices" / "failed" / "slow.pdf.error.json").read_text())
        assert "timed out after 0.5 s" in sidecar["reason"]
        assert sidecar["stage"] == "poll"

    def test_ambiguous_submissions_are_repeated_at_most_once(
        self,
        tmp_path: Path,
        pm: pluggy.PluginManager,
        emulator_factory: Any,
        make_config: ConfigFactory,
    ) -> None:
        """A POST whose outcome is unknown is sent once more, never a third time."""
        dropping = emulator_factory(drop_after_accept_rate=1.0)
        config = make_config(
            pipeline_data(tmp_path),
            api={"base_url": dropping.base_url, "api_key": dropping.api_key},
        )
        data = make_pdf(["u"])
        (tmp_path / "invoices" / "inbox" / "u.pdf").write_bytes(data)
        assert run(config, pm)[0] == 1
        assert dropping.stats().executions_created == 2
        sidecar = json.loads((tmp_path / "invoices" / "failed" / "u.pdf.error.json").read_text())
        assert "two submissions" in sidecar["reason"]
        assert "resubmitted" in sidecar["flags"]


class TestDuplicates:
    def test_same_content_is_submitted_once(
        self,
        tmp_path: Path,
        make_config: ConfigFactory,
        pm: pluggy.PluginManager,
        emulator: EmulatorServer,
    ) -> None:
        """Two files with the same bytes: one submission, the other archived as a duplicate."""
        config = make_config(pipeline_data(tmp_path))
        data = make_pdf(["same"])
        (tmp_path / "invoices" / "inbox" / "one.pdf").write_bytes(data)
        (tmp_path / "invoices" / "inbox" / "two.pdf").write_bytes(data)
        code, lines = run(config, pm)
        assert code == 0
        assert emulator.stats().executions_created == 1
        assert sorted(p.name for p in (tmp_path / "invoices" / "done").iterdir()) == [
            "one.pdf",
            "two.pdf",
        ]
        assert "duplicate 1" in lines[0]
        # Later, the same content again is a duplicate too.
        (tmp_path / "invoices" / "inbox" / "three.pdf").write_bytes(data)
        assert run(config, pm)[0] == 0
        assert emulator.stats().executions_created == 1

    def test_reprocess_submits_duplicates_again(
        self,
        tmp_path: Path,
        make_config: ConfigFactory,
        pm: pluggy.PluginManager,
        emulator: EmulatorServer,
    ) -> None:
        """duplicates: reprocess sends every copy."""
        config = make_config(pipeline_data(tmp_path, duplicates="reprocess"))
        data = make_pdf(["same"])
        (tmp_path / "invoices" / "inbox" / "one.pdf").write_bytes(data)
        assert run(config, pm)[0] == 0
        (tmp_path / "invoices" / "inbox" / "two.pdf").write_bytes(data)
        assert run(config, pm)[0] == 0
        assert emulator.stats().executions_created == 2


class TestSinks:
    def test_a_failing_sink_is_retried_and_does_not_block_the_other(
        self, tmp_path: Path, make_config: ConfigFactory, pm: pluggy.PluginManager
    ) -> None:
        """Deliveries to a flaky sink are retried; the filesystem sink delivers regardless."""
        pipeline = pipeline_data(tmp_path)
        pipeline["sinks"].append(
            {"type": "memory", "fail_times": 2, "retry": {"initial": 0.01, "max": 0.05}}
        )
        config = make_config(pipeline)
        (tmp_path / "invoices" / "inbox" / "f.pdf").write_bytes(make_pdf(["f"]))
        assert run(config, pm)[0] == 0
        (memory,) = MemorySink.instances
        assert memory.deliveries == 3
        assert len(memory.records) == 1
        assert len(results_of(tmp_path / "invoices" / "results")) == 1

    def test_a_sink_that_gives_up_fails_the_document_with_its_reason(
        self, tmp_path: Path, make_config: ConfigFactory, pm: pluggy.PluginManager
    ) -> None:
        """When a sink's retry timeout runs out, the document ends in failed/ naming the sink."""
        pipeline = pipeline_data(tmp_path)
        pipeline["sinks"].append(
            {
                "type": "memory",
                "id": "flaky",
                "fail_times": 1000,
                "retry": {"initial": 0.01, "max": 0.02, "timeout": 0.2},
            }
        )
        config = make_config(pipeline)
        (tmp_path / "invoices" / "inbox" / "g.pdf").write_bytes(make_pdf(["g"]))
        assert run(config, pm)[0] == 1
        sidecar = json.loads((tmp_path / "invoices" / "failed" / "g.pdf.error.json").read_text())
        assert sidecar["stage"] == "deliver"
        assert "flaky" in sidecar["reason"]
        # The healthy sink still got the result.
        assert len(results_of(tmp_path / "invoices" / "results")) == 1


class TestLimits:
    def test_executions_in_flight_never_exceed_the_shared_limit(
        self,
        tmp_path: Path,
        make_config: ConfigFactory,
        pm: pluggy.PluginManager,
        emulator: EmulatorServer,
    ) -> None:
        """max_in_flight holds across two pipelines."""
        emulator.configure(latency=0.2)
        config = make_config(
            pipeline_data(tmp_path, "left"),
            pipeline_data(tmp_path, "right"),
            api={"max_in_flight": 3},
        )
        for side in ("left", "right"):
            for i in range(6):
                (tmp_path / side / "inbox" / f"{i}.pdf").write_bytes(make_pdf([side, str(i)]))
        peak = 0

        async def go() -> int:
            nonlocal peak
            from docutray_watch.engine import Engine

            engine = Engine(config, plugin_manager=pm)
            await engine.start()
            await engine.scan()
            waiter = asyncio.ensure_future(engine.wait_idle())
            while not waiter.done():
                peak = max(peak, engine.in_flight)
                await asyncio.sleep(0.01)
            await engine.stop(grace=0)
            return sum(engine.summary.outcomes.values())

        assert asyncio.run(go()) == 12
        assert 1 <= peak <= 3


class TestScale:
    @pytest.mark.slow
    def test_300_mixed_documents_in_two_pipelines(
        self,
        tmp_path: Path,
        make_config: ConfigFactory,
        pm: pluggy.PluginManager,
        emulator: EmulatorServer,
    ) -> None:
        """Every good document's results land exactly once; every bad one is in failed/."""
        config = make_config(
            pipeline_data(tmp_path, "invoices", steps=["stp_x", "stp_y"]),
            pipeline_data(tmp_path, "receipts"),
            api={"max_in_flight": 32},
        )
        good: dict[str, dict[str, bytes]] = {"invoices": {}, "receipts": {}}
        bad: dict[str, set[str]] = {"invoices": set(), "receipts": set()}
        for index in range(300):
            pipeline = "invoices" if index % 2 else "receipts"
            inbox = tmp_path / pipeline / "inbox"
            kind = index % 10
            if kind == 7:
                name, data = f"doc{index:03d}.pdf", b"not a pdf at all"
                bad[pipeline].add(name)
            elif kind == 8:
                name, data = f"doc{index:03d}.pdf", make_pdf([str(index)]) + ERROR_MARKER
                bad[pipeline].add(name)
            elif kind == 9:
                name, data = f"doc{index:03d}.png", b""
                bad[pipeline].add(name)
            elif kind % 2:
                name, data = (
                    f"doc{index:03d}.png",
                    make_png(4, 4, color=(index % 256, index // 256, 9)),
                )
                good[pipeline][name] = data
            else:
                name, data = f"doc{index:03d}.pdf", make_pdf([f"document {index}"])
                good[pipeline][name] = data
            (inbox / name).write_bytes(data)
        code, _ = run(config, pm)
        assert code == 1
        for pipeline, steps in (("invoices", ["stp_x", "stp_y"]), ("receipts", ["stp_one"])):
            results = results_of(tmp_path / pipeline / "results")
            seen = sorted((r["document"]["sha256"], r["step_id"]) for r in results)
            expected = sorted((sha(d), s) for d in good[pipeline].values() for s in steps)
            assert seen == expected  # exactly once each, checked against the file hashes
            failed = tmp_path / pipeline / "failed"
            assert {p.name for p in failed.iterdir() if not p.name.endswith(".error.json")} == bad[
                pipeline
            ]
            for name in bad[pipeline]:
                assert json.loads((failed / f"{name}.error.json").read_text())["reason"]
        with Journal(config.journal_path) as journal:
            assert journal.integrity_check() == "ok"


class TestChangingFiles:
    def test_files_deleted_or_replaced_while_queued(
        self,
        tmp_path: Path,
        make_config: ConfigFactory,
        pm: pluggy.PluginManager,
        emulator: EmulatorServer,
    ) -> None:
        """A queued file that vanishes is dropped; a replaced one is taken again, new bytes."""
        from docutray_watch.engine import Engine

        config = make_config(pipeline_data(tmp_path), api={"max_in_flight": 1})
        inbox = tmp_path / "invoices" / "inbox"
        blocker = inbox / "blocker.pdf"
        blocker.write_bytes(make_pdf(["b"]) + b"DOCUTRAY-EMULATOR:LATENCY=1.0")
        gone, changed = inbox / "gone.pdf", inbox / "changed.pdf"
        new_bytes = make_pdf(["changed, second version"])

        async def scenario() -> Engine:
            engine = Engine(config, plugin_manager=pm)
            await engine.start()
            engine.nominate("invoices", blocker)
            while emulator.stats().executions_created < 1:
                await asyncio.sleep(0.02)
            gone.write_bytes(make_pdf(["gone"]))
            changed.write_bytes(make_pdf(["changed, first version"]))
            engine.nominate("invoices", gone)
            engine.nominate("invoices", changed)
            # Both hashed and waiting for the only slot.
            while len(await engine.journal.documents_in("queued")) < 2:
                await asyncio.sleep(0.02)
            gone.unlink()
            changed.write_bytes(new_bytes)
            os.utime(changed, ns=(1, 1))  # a different mtime, whatever the clock resolution
            await engine.wait_idle()
            await engine.stop(grace=0)
            return engine

        engine = asyncio.run(scenario())
        assert emulator.stats().executions_created == 2  # blocker + the new version only
        shas = {r["document"]["sha256"] for r in results_of(tmp_path / "invoices" / "results")}
        assert sha(new_bytes) in shas
        assert (tmp_path / "invoices" / "done" / "changed.pdf").read_bytes() == new_bytes
        assert engine.summary.failed == 0
        with Journal(config.journal_path) as journal:
            dropped = [d for d in journal.documents_in("rejected") if d.name == "gone.pdf"]
            assert dropped
            assert "disappeared" in (dropped[0].error or "")
