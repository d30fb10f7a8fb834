"""The command line: exit codes, dry runs, status, retry, validate, plugins."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from docutray_watch.cli import cli
from docutray_watch.emulator import EmulatorServer
from docutray_watch.journal import Journal
from docutray_watch.samples import make_pdf, make_png


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def write_config(tmp_path: Path, emulator: EmulatorServer | None, **pipeline: Any) -> Path:
    spec: dict[str, Any] = {
        "name": "invoices",
        "watch": {"path": str(tmp_path / "inbox"), "settle": 0},
        "steps": ["stp_one"],
        "poll": {"initial": 0.05, "max": 0.2},
        "on_success": {"action": "move", "to": str(tmp_path / "done")},
        "on_failure": {"action": "move", "to": str(tmp_path / "failed")},
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


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env={"DOCUTRAY_API_KEY": "", **(env or {})})


class TestProcess:
    def test_process_exits_0_when_everything_was_delivered(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """`process` prints a summary and exits 0 when all documents were delivered."""
        config = write_config(tmp_path, emulator)
        (tmp_path / "inbox" / "a.pdf").write_bytes(make_pdf(["a"]))
        result = invoke("process", "-c", str(config), "--no-progress")
        assert result.exit_code == 0, result.output
        assert "processed 1 document(s): success 1" in result.output

    def test_process_exits_1_when_a_document_failed(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """`process` exits 1 and names the failed file and its reason."""
        config = write_config(tmp_path, emulator)
        (tmp_path / "inbox" / "bad.pdf").write_text("not a pdf")
        result = invoke("process", "-c", str(config), "--no-progress")
        assert result.exit_code == 1
        assert "bad.pdf" in result.output
        assert "unsupported file type" in result.output

    def test_process_names_failed_files_where_they_are_now(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """The summary names a failed file by its path in the failed folder, not the inbox."""
        config = write_config(tmp_path, emulator)
        (tmp_path / "inbox" / "bad.pdf").write_text("not a pdf")
        result = invoke("process", "-c", str(config), "--no-progress")
        assert f"failed [invoices] {tmp_path / 'failed' / 'bad.pdf'}: " in result.output
        assert str(tmp_path / "inbox") not in result.output

    def test_process_and_status_use_the_same_outcome_words(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """`status` counts finished documents with the words `process` prints (success, …)."""
        config = write_config(tmp_path, emulator)
        (tmp_path / "inbox" / "ok.pdf").write_bytes(make_pdf(["ok"]))
        (tmp_path / "inbox" / "copy.pdf").write_bytes(make_pdf(["ok"]))
        (tmp_path / "inbox" / "bad.pdf").write_text("bad")
        processed = invoke("process", "-c", str(config), "--no-progress")
        assert "processed 3 document(s): duplicate 1, rejected 1, success 1" in processed.output
        status = invoke("status", "-c", str(config))
        assert "invoices: 3 document(s): duplicate 1, rejected 1, success 1" in status.output

    def test_dry_run_names_the_rule_for_every_ignored_file(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """--dry-run lists taken files and, for each ignored one, the rule; nothing is sent."""
        config = write_config(tmp_path, emulator)
        inbox = tmp_path / "inbox"
        (inbox / "good.pdf").write_bytes(make_pdf(["good"]))
        (inbox / "pic.png").write_bytes(make_png())
        (inbox / ".hidden.pdf").write_bytes(make_pdf(["h"]))
        (inbox / "upload.pdf.part").write_bytes(make_pdf(["p"]))
        (inbox / "notes.txt").write_text("x")
        (inbox / "fake.pdf").write_text("text")
        (inbox / "empty.pdf").write_bytes(b"")
        (inbox / "link.pdf").symlink_to(inbox / "good.pdf")
        result = invoke("process", "-c", str(config), "--dry-run")
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()

        def line_for(name: str) -> str:
            (match,) = [line for line in lines if f" {name}" in line]
            return match

        assert line_for("good.pdf").strip().startswith("take")
        assert line_for("pic.png").strip().startswith("take")
        assert "ignore pattern '.*'" in line_for(".hidden.pdf")
        assert "ignore pattern '*.part'" in line_for("upload.pdf.part")
        assert "no include pattern" in line_for("notes.txt")
        assert "unsupported file type" in line_for("fake.pdf")
        assert "empty file" in line_for("empty.pdf")
        assert "symbolic link" in line_for("link.pdf")
        assert "would take 2, reject 2" in result.output
        assert "ignore 4" in result.output
        assert emulator.stats().posts == 0

    def test_dry_run_says_reject_for_files_that_will_be_rejected(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """A file that would end in failed/ is listed as `reject`, not `ignore`."""
        config = write_config(tmp_path, emulator)
        (tmp_path / "inbox" / "fake.pdf").write_text("text")
        (tmp_path / "inbox" / ".hidden.pdf").write_bytes(make_pdf(["h"]))
        lines = invoke("process", "-c", str(config), "--dry-run").output.splitlines()
        assert "  reject  fake.pdf: unsupported file type" in "\n".join(lines)
        assert not [line for line in lines if "would go to failed" in line]
        assert any(line.startswith("  ignore  .hidden.pdf") for line in lines)
        assert (
            f"  → would take 0, reject 1 (on_failure: move to {tmp_path / 'failed'}), ignore 1"
            in lines
        )

    def test_dry_run_reports_duplicates_of_processed_content(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """After a run, a copy of a processed document shows as a duplicate in --dry-run."""
        config = write_config(tmp_path, emulator)
        data = make_pdf(["dup"])
        (tmp_path / "inbox" / "one.pdf").write_bytes(data)
        assert invoke("process", "-c", str(config), "--no-progress").exit_code == 0
        (tmp_path / "inbox" / "copy.pdf").write_bytes(data)
        result = invoke("process", "-c", str(config), "--dry-run")
        assert "duplicate of" in result.output
        assert "one.pdf" in result.output


class TestStatusAndRetry:
    def test_status_counts_and_failures(self, tmp_path: Path, emulator: EmulatorServer) -> None:
        """`status` shows counts per state, what waits and what was done or failed today, and the
        last failures; --json is machine-readable."""
        config = write_config(tmp_path, emulator)
        (tmp_path / "inbox" / "ok.pdf").write_bytes(make_pdf(["ok"]))
        (tmp_path / "inbox" / "bad.pdf").write_text("bad")
        invoke("process", "-c", str(config), "--no-progress")
        text = invoke("status", "-c", str(config))
        assert text.exit_code == 0
        assert "invoices: 2 document(s): rejected 1, success 1" in text.output
        today = datetime.now(UTC).date().isoformat()
        assert f"  waiting 0, in flight 0; today ({today} UTC): done 1, failed 1" in text.output
        assert "bad.pdf" in text.output
        report = json.loads(invoke("status", "-c", str(config), "--json").output)
        assert report["pipelines"] == {"invoices": {"rejected": 1, "success": 1}}
        (failure,) = report["failures"]
        assert failure["path"] == str(tmp_path / "failed" / "bad.pdf")
        assert failure["stage"] == "intake"

    def test_status_json_times_are_iso_and_the_pending_age_key_stays(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """--json gives `when` as ISO 8601 UTC, and oldest_pending_age_s null when none pends."""
        config = write_config(tmp_path, emulator)
        before = invoke("status", "-c", str(config), "--json")
        assert json.loads(before.output)["oldest_pending_age_s"] == {"invoices": None}
        (tmp_path / "inbox" / "bad.pdf").write_text("bad")
        invoke("process", "-c", str(config), "--no-progress")
        report = json.loads(invoke("status", "-c", str(config), "--json").output)
        assert report["oldest_pending_age_s"] == {"invoices": None}
        when = report["failures"][0]["when"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", when), when
        age = datetime.now(UTC) - datetime.fromisoformat(when)
        assert timedelta(0) <= age < timedelta(minutes=5)

    def test_status_counts_superseded_results(self, tmp_path: Path) -> None:
        """`status` says how many delivered results were superseded (their file changed before
        its final action and was taken again); --json has them per pipeline."""
        config = write_config(tmp_path, None)
        with Journal(tmp_path / "state" / "journal.sqlite3") as journal:
            doc, (step,) = journal.add_queued(
                "invoices",
                str(tmp_path / "inbox" / "a.pdf"),
                "a.pdf",
                sha256="0" * 64,
                content_type="application/pdf",
                size=10,
                mtime_ns=1,
                steps=["stp_one"],
            )
            journal.step_submitting(step.id)
            journal.step_accepted(step.id, "exec_1", "PENDING")
            journal.step_finished(
                step.id, state="success", status="SUCCESS", result={}, sinks=["filesystem"]
            )
            (delivery,) = journal.deliveries_of(doc.id)
            journal.delivery_done(delivery.id, None)
            journal.mark_delivered(doc.id)
            journal.supersede(doc.id, "the file changed")
        text = invoke("status", "-c", str(config))
        assert text.exit_code == 0, text.output
        assert "invoices: 1 document(s): superseded 1" in text.output
        assert "1 delivered result(s) superseded" in text.output
        report = json.loads(invoke("status", "-c", str(config), "--json").output)
        assert report["superseded_results"] == {"invoices": 1}

    def test_status_shows_the_request_rate_last_recorded(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """After a run against an API limiting 8 requests/s unannounced, `status` shows the
        learned rate (auto, lowered by a 429) and --json has it with its time."""
        emulator.configure(rate_limit_rps=8.0, hide_rate_limit=True, fractional_retry_after=True)
        config = write_config(tmp_path, emulator)
        for index in range(30):
            (tmp_path / "inbox" / f"{index}.pdf").write_bytes(make_pdf([str(index)]))
        assert invoke("process", "-c", str(config), "--no-progress").exit_code == 0
        text = invoke("status", "-c", str(config)).output
        assert "API request rate: " in text
        assert "(auto, lowered " in text
        rate = json.loads(invoke("status", "-c", str(config), "--json").output)["request_rate"]
        assert rate["mode"] == "auto"
        assert rate["decreases"] >= 1
        assert 0 < rate["requests_per_second"] < 16
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rate["recorded_at"])
        assert 0 <= rate["recorded_age_s"] < 300

    def test_status_works_without_the_api_key_variable(self, tmp_path: Path) -> None:
        """`status` needs no API key, even when the config refers to an unset variable."""
        config = write_config(tmp_path, None)
        data = yaml.safe_load(config.read_text())
        data["api"] = {"api_key_file": "${CREDENTIALS_DIRECTORY}/api-key"}
        config.write_text(yaml.safe_dump(data))
        result = invoke("status", "-c", str(config))
        assert result.exit_code == 0, result.output
        assert "empty" in result.output

    def test_retry_requires_a_selection(self, tmp_path: Path) -> None:
        """`retry` without --failed or paths is a usage error (exit 2)."""
        config = write_config(tmp_path, None)
        assert invoke("retry", "-c", str(config)).exit_code == 2

    def test_retry_failed_moves_nothing_until_processed(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """`retry --failed` requeues a failed document; the next run processes it from failed/."""
        config = write_config(tmp_path, emulator)
        (tmp_path / "inbox" / "flaky.pdf").write_bytes(make_pdf(["f"]) + b"DOCUTRAY-EMULATOR:ERROR")
        assert invoke("process", "-c", str(config), "--no-progress").exit_code == 1
        result = invoke("retry", "-c", str(config), "--failed")
        assert "1 document(s) requeued" in result.output
        report = json.loads(invoke("status", "-c", str(config), "--json").output)
        assert report["pipelines"] == {"invoices": {"queued": 1}}
        assert report["oldest_pending_age_s"]["invoices"] >= 0
        # Still an ERROR (same bytes), but it went round again and is back in failed/.
        assert invoke("process", "-c", str(config), "--no-progress").exit_code == 1
        assert emulator.stats().executions_created == 2
        assert (tmp_path / "failed" / "flaky.pdf").exists()

    def test_retry_of_a_path_that_succeeded_needs_force(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """A delivered document is only re-run with --force."""
        config = write_config(tmp_path, emulator)
        (tmp_path / "inbox" / "ok.pdf").write_bytes(make_pdf(["ok"]))
        invoke("process", "-c", str(config), "--no-progress")
        done = str(tmp_path / "done" / "ok.pdf")
        plain = invoke("retry", "-c", str(config), done)
        assert "0 document(s) requeued" in plain.output
        assert "--force" in plain.output
        assert plain.exit_code == 1
        forced = invoke("retry", "-c", str(config), "--force", done)
        assert "1 document(s) requeued" in forced.output
        assert forced.exit_code == 0

    def test_retry_says_when_it_takes_effect(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """`retry` tells that a running daemon takes the documents up within seconds."""
        config = write_config(tmp_path, emulator)
        (tmp_path / "inbox" / "bad.pdf").write_text("bad")
        invoke("process", "-c", str(config), "--no-progress")
        result = invoke("retry", "-c", str(config), "--failed")
        assert result.exit_code == 0, result.output
        assert (
            "1 document(s) requeued: a running daemon takes them up within a couple of seconds; "
            "without one, run `docutray-watch process`" in result.output
        )

    def test_retry_of_a_path_that_matches_nothing_exits_1(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """A mistyped PATH is reported and `retry` exits 1, even when other paths were requeued."""
        config = write_config(tmp_path, emulator)
        (tmp_path / "inbox" / "bad.pdf").write_text("bad")
        invoke("process", "-c", str(config), "--no-progress")
        typo = str(tmp_path / "failed" / "bda.pdf")
        alone = invoke("retry", "-c", str(config), typo)
        assert alone.exit_code == 1
        assert f"{typo}: no finished document with this path in the journal" in alone.output
        mixed = invoke("retry", "-c", str(config), str(tmp_path / "failed" / "bad.pdf"), typo)
        assert mixed.exit_code == 1
        assert "1 document(s) requeued" in mixed.output

    def test_retry_without_a_journal_creates_none(self, tmp_path: Path) -> None:
        """Before any run, `retry` says there is no journal (exit 1) instead of creating one."""
        config = write_config(tmp_path, None)
        result = invoke("retry", "-c", str(config), "--failed")
        assert result.exit_code == 1
        assert "no journal at" in result.output
        assert not (tmp_path / "state").exists()


class TestValidate:
    def test_offline_validation_checks_only_the_file(self, tmp_path: Path) -> None:
        """`validate --offline` succeeds without an API key or a reachable API."""
        config = write_config(tmp_path, None)
        result = invoke("validate", "--offline", "-c", str(config))
        assert result.exit_code == 0, result.output
        assert "configuration is valid" in result.output

    def test_online_validation_checks_sinks_and_the_api(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """`validate` runs the sinks' health checks and confirms the API accepts the key."""
        config = write_config(tmp_path, emulator)
        result = invoke("validate", "-c", str(config))
        assert result.exit_code == 0, result.output
        assert "sink filesystem: ok" in result.output
        assert "key accepted" in result.output

    def test_online_validation_with_a_refused_key_exits_77(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """A key the API refuses makes `validate` exit 77 (EX_NOPERM) and say so."""
        config = write_config(tmp_path, emulator)
        data = yaml.safe_load(config.read_text())
        data["api"]["api_key"] = "wrong-key"
        config.write_text(yaml.safe_dump(data))
        result = invoke("validate", "-c", str(config))
        assert result.exit_code == 77
        assert "refused" in result.output
        assert "wrong-key" not in result.output

    def test_missing_api_key_is_a_config_error(self, tmp_path: Path) -> None:
        """`process` without any API key exits 78 naming api.api_key."""
        config = write_config(tmp_path, None)
        result = invoke("process", "-c", str(config), "--no-progress")
        assert result.exit_code == 78
        assert "api.api_key" in result.output

    def test_no_config_file_is_a_config_error(self) -> None:
        """Without -c and $DOCUTRAY_WATCH_CONFIG, commands exit 78."""
        result = invoke("status", env={"DOCUTRAY_WATCH_CONFIG": ""})
        assert result.exit_code == 78


class TestMissingInbox:
    """One rule for a watched folder that does not exist: `run`/`process` create it and say so."""

    @staticmethod
    def _two_pipelines(tmp_path: Path, emulator: EmulatorServer) -> Path:
        config = write_config(tmp_path, emulator)
        data = yaml.safe_load(config.read_text())
        second = {**data["pipelines"][0], "name": "receipts"}
        second["watch"] = {**second["watch"], "path": str(tmp_path / "recieps")}  # a typo
        second["on_success"] = {"action": "keep"}
        second["on_failure"] = {"action": "keep"}
        data["pipelines"].append(second)
        data["pipelines"][0]["watch"]["path"] = str(tmp_path / "invoices-inbox")
        config.write_text(yaml.safe_dump(data))
        return config

    def test_process_creates_and_names_each_missing_inbox(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """`process` creates every missing watched folder and names each pipeline it did so for."""
        config = self._two_pipelines(tmp_path, emulator)
        result = invoke("process", "-c", str(config), "--no-progress")
        assert result.exit_code == 0, result.output
        for name, folder in (("invoices", "invoices-inbox"), ("receipts", "recieps")):
            assert (
                f"pipeline {name}: the folder {tmp_path / folder} did not exist; created it (empty)"
                in result.output
            )
            assert (tmp_path / folder).is_dir()
        again = invoke("process", "-c", str(config), "--no-progress")
        assert "did not exist" not in again.output

    def test_process_exits_78_when_an_inbox_cannot_be_created(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """A watched folder that cannot be created is a config error naming its YAML path."""
        (tmp_path / "a-file").write_text("")
        config = write_config(tmp_path, emulator, watch={"path": str(tmp_path / "a-file" / "in")})
        result = invoke("process", "-c", str(config), "--no-progress")
        assert result.exit_code == 78
        assert "config error: pipelines[0].watch.path: cannot create" in result.output

    def test_validate_says_a_missing_inbox_will_be_created(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """`validate` passes, says the folder will be created, and creates nothing."""
        config = self._two_pipelines(tmp_path, emulator)
        result = invoke("validate", "-c", str(config))
        assert result.exit_code == 0, result.output
        assert (
            f"[receipts] watch.path {tmp_path / 'recieps'}: does not exist yet; `run` and "
            "`process` create it (check watch.path for a typo)" in result.output
        )
        assert not (tmp_path / "recieps").exists()

    def test_validate_fails_when_an_inbox_cannot_be_created(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """`validate` exits 78 when a missing folder could not be created."""
        (tmp_path / "a-file").write_text("")
        config = write_config(tmp_path, emulator, watch={"path": str(tmp_path / "a-file" / "in")})
        result = invoke("validate", "-c", str(config))
        assert result.exit_code == 78
        assert "cannot be created" in result.output

    def test_dry_run_says_a_missing_inbox_will_be_created(self, tmp_path: Path) -> None:
        """`process --dry-run` names the missing folder and the rule, and creates nothing."""
        config = write_config(tmp_path, None, watch={"path": str(tmp_path / "nope")})
        result = invoke("process", "-c", str(config), "--dry-run")
        assert result.exit_code == 0, result.output
        assert "does not exist; `run` and `process` create it" in result.output
        assert not (tmp_path / "nope").exists()


class TestValidateDatabase:
    def test_validate_creates_no_sqlite_database(
        self, tmp_path: Path, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A relative SQLite URL is checked next to the config file, and nothing is created."""
        work = tmp_path / "elsewhere"
        work.mkdir()
        monkeypatch.chdir(work)
        config = write_config(
            tmp_path, emulator, sinks=[{"type": "database", "url": "sqlite:///results.db"}]
        )
        result = invoke("validate", "-c", str(config))
        assert result.exit_code == 0, result.output
        assert (
            f"sink database: ok ({tmp_path / 'results.db'} will be created at the first delivery)"
            in result.output
        )
        assert not (tmp_path / "results.db").exists()
        assert list(work.iterdir()) == []


class TestPlugins:
    def test_plugins_lists_the_installed_webhook_plugin(self) -> None:
        """`docutray-watch plugins` lists the entry-point plugin with its version and sink."""
        proc = subprocess.run(
            [sys.executable, "-m", "docutray_watch.cli", "plugins"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert "webhook" in proc.stdout
        assert "sink type webhook" in proc.stdout
        assert "docutray_watch.sinks.filesystem" not in proc.stdout

    def test_plugins_all_includes_the_built_ins(self) -> None:
        """`plugins --all --json` lists the built-in sinks with their hooks."""
        result = invoke("plugins", "--all", "--json")
        entries = {e["name"]: e for e in json.loads(result.output)}
        for name in ("filesystem", "s3", "database"):
            entry = entries[f"docutray_watch.sinks.{name}"]
            assert entry["builtin"] is True
            assert entry["hooks"] == ["register_sink_types"]
            assert [s["type"] for s in entry["sink_types"]] == [name]

    def test_version(self) -> None:
        """--version prints the package version."""
        from docutray_watch import __version__

        assert __version__ in invoke("--version").output


class TestOneEnginePerStateDir:
    def test_a_second_engine_on_the_same_state_dir_exits_75(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """While one process holds the state directory, `process` refuses to start (exit 75)."""
        from docutray_watch.statelock import StateLock

        config = write_config(tmp_path, emulator)
        (tmp_path / "inbox" / "a.pdf").write_bytes(make_pdf(["a"]))
        holder = StateLock(tmp_path / "state")
        holder.acquire()
        try:
            result = invoke("process", "-c", str(config), "--no-progress")
            assert result.exit_code == 75
            assert "another docutray-watch process" in result.output
            assert emulator.stats().posts == 0
        finally:
            holder.release()
        assert invoke("process", "-c", str(config), "--no-progress").exit_code == 0
