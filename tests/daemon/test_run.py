"""The daemon as systemd runs it: a real `docutray-watch run` process on temporary folders."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from docutray_watch.cli import cli
from docutray_watch.emulator import EmulatorServer
from docutray_watch.samples import make_pdf
from tests.daemon.conftest import daemon_config, free_port, local_get, pipeline, wait_for

pytestmark = pytest.mark.slow


def results(folder: Path) -> list[dict[str, Any]]:
    return (
        [json.loads(p.read_text()) for p in sorted(folder.rglob("*.json"))]
        if folder.exists()
        else []
    )


class TestWatching:
    def test_files_dropped_while_running_are_processed_once(
        self, tmp_path: Path, emulator: EmulatorServer, daemon_factory: Any
    ) -> None:
        """Documents arriving while the daemon runs are each delivered exactly once."""
        daemon = daemon_factory(daemon_config(tmp_path, emulator, pipeline(tmp_path))).start()
        inbox = tmp_path / "inbox" / "in"
        for i in range(5):
            (inbox / f"d{i}.pdf").write_bytes(make_pdf([f"d{i}"]))
        wait_for(lambda: len(results(tmp_path / "inbox" / "out")) == 5)
        wait_for(lambda: len(list((tmp_path / "inbox" / "done").iterdir())) == 5)
        assert daemon.stop() == 0
        assert emulator.stats().executions_created == 5

    def test_part_file_renamed_is_processed_once(
        self, tmp_path: Path, emulator: EmulatorServer, daemon_factory: Any
    ) -> None:
        """A `.part` file is ignored until renamed, then taken once under its final name."""
        daemon = daemon_factory(daemon_config(tmp_path, emulator, pipeline(tmp_path))).start()
        inbox = tmp_path / "inbox" / "in"
        (inbox / "scan.pdf.part").write_bytes(make_pdf(["scan"]))
        time.sleep(1.0)
        assert emulator.stats().posts == 0
        (inbox / "scan.pdf.part").rename(inbox / "scan.pdf")
        wait_for(lambda: (tmp_path / "inbox" / "done" / "scan.pdf").exists())
        assert daemon.stop() == 0
        (record,) = results(tmp_path / "inbox" / "out")
        assert record["document"]["name"] == "scan.pdf"
        assert emulator.stats().executions_created == 1

    def test_a_slowly_written_large_file_is_submitted_once_after_its_last_byte(
        self, tmp_path: Path, emulator: EmulatorServer, daemon_factory: Any
    ) -> None:
        """A 50 MB file written in small chunks is submitted once, with its final hash."""
        daemon = daemon_factory(daemon_config(tmp_path, emulator, pipeline(tmp_path))).start()
        target = tmp_path / "inbox" / "in" / "big.pdf"
        digest = hashlib.sha256()
        head = make_pdf(["big"])
        with open(target, "wb") as handle:
            handle.write(head)
            digest.update(head)
            chunk = b"0" * 256 * 1024
            for _ in range(200):  # 50 MiB in 256 KiB writes, ~2 s
                handle.write(chunk)
                handle.flush()
                digest.update(chunk)
                time.sleep(0.01)
        wait_for(lambda: (tmp_path / "inbox" / "done" / "big.pdf").exists(), timeout=60)
        assert daemon.stop() == 0
        stats = emulator.stats()
        assert stats.executions_created == 1
        (record,) = results(tmp_path / "inbox" / "out")
        assert record["document"]["sha256"] == digest.hexdigest()
        assert record["data"]["sha256"] == digest.hexdigest()  # the bytes the service received

    def test_a_writer_pausing_longer_than_settle_is_archived_with_its_whole_result(
        self, tmp_path: Path, emulator: EmulatorServer, daemon_factory: Any
    ) -> None:
        """The operator's report (issue 15): half written, a 3 s pause with the file open and
        `settle: 1.0`, then the rest. The delivered result's size and sha256 are the archived
        file's, and the service received those bytes."""
        spec = pipeline(tmp_path)
        spec["watch"]["settle"] = 1.0
        daemon = daemon_factory(daemon_config(tmp_path, emulator, spec)).start()
        target = tmp_path / "inbox" / "in" / "slow.pdf"
        whole = make_pdf(["slow writer"], padding=1000)
        with open(target, "wb") as handle:
            handle.write(whole[: len(whole) // 2])
            handle.flush()
            time.sleep(3.0)  # the writer's pause: the scenario itself, not a wait for a state
            handle.write(whole[len(whole) // 2 :])
        archived = tmp_path / "inbox" / "done" / "slow.pdf"
        wait_for(lambda: archived.exists())
        assert daemon.stop() == 0
        (record,) = results(tmp_path / "inbox" / "out")
        data = archived.read_bytes()
        assert data == whole
        assert record["document"]["size"] == len(data)
        assert record["document"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert record["data"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert emulator.stats().executions_created == 1

    def test_ready_marker_gates_the_document(
        self, tmp_path: Path, emulator: EmulatorServer, daemon_factory: Any
    ) -> None:
        """With ready_marker, x.pdf waits for x.pdf.done; the marker goes with the document."""
        spec = pipeline(tmp_path)
        spec["watch"]["ready_marker"] = ".done"
        daemon = daemon_factory(daemon_config(tmp_path, emulator, spec)).start()
        inbox = tmp_path / "inbox" / "in"
        (inbox / "m.pdf").write_bytes(make_pdf(["m"]))
        time.sleep(1.5)
        assert emulator.stats().posts == 0
        (inbox / "m.pdf.done").write_bytes(b"")
        wait_for(lambda: (tmp_path / "inbox" / "done" / "m.pdf").exists())
        wait_for(lambda: not (inbox / "m.pdf.done").exists())
        assert daemon.stop() == 0


class TestLifecycle:
    def test_sigterm_mid_flight_then_restart_completes_without_resubmission(
        self, tmp_path: Path, emulator: EmulatorServer, daemon_factory: Any
    ) -> None:
        """Stopping with executions in flight persists them; the next start only polls them."""
        emulator.configure(latency=4.0)
        config = daemon_config(tmp_path, emulator, pipeline(tmp_path), shutdown_grace=0.5)
        daemon = daemon_factory(config).start()
        for i in range(4):
            (tmp_path / "inbox" / "in" / f"s{i}.pdf").write_bytes(make_pdf([f"s{i}"]))
        wait_for(lambda: emulator.stats().executions_created == 4)
        started = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - started < 5  # within the grace period (plus start-up slack)
        assert results(tmp_path / "inbox" / "out") == []
        daemon.start()
        wait_for(lambda: len(results(tmp_path / "inbox" / "out")) == 4, timeout=30)
        assert daemon.stop() == 0
        assert emulator.stats().executions_created == 4  # polled, never resubmitted

    def test_sd_notify_messages_arrive_in_order(
        self, tmp_path: Path, emulator: EmulatorServer, daemon_factory: Any
    ) -> None:
        """READY=1, STATUS=…, RELOADING=1 with MONOTONIC_USEC, READY=1, then STOPPING=1."""
        daemon = daemon_factory(daemon_config(tmp_path, emulator, pipeline(tmp_path))).start()
        ready = daemon.wait_message("READY=1")
        status = wait_for(lambda: [m for m in daemon.read_messages() if m.startswith("STATUS=")])
        assert "in flight" in status[0]
        daemon.signal(signal.SIGHUP)
        reloading = daemon.wait_message("RELOADING=1", after=ready)
        assert "MONOTONIC_USEC=" in daemon.messages[reloading - 1]
        ready_again = daemon.wait_message("READY=1", after=reloading)
        assert daemon.stop() == 0
        stopping = daemon.wait_message("STOPPING=1", after=ready_again)
        assert ready < reloading < ready_again < stopping

    def test_sighup_adds_a_pipeline(
        self, tmp_path: Path, emulator: EmulatorServer, daemon_factory: Any
    ) -> None:
        """A pipeline added to the config file starts on SIGHUP, the old one keeps running."""
        first = pipeline(tmp_path, "first")
        daemon = daemon_factory(daemon_config(tmp_path, emulator, first)).start()
        second = pipeline(tmp_path, "second")
        daemon.write_config(daemon_config(tmp_path, emulator, first, second))
        (tmp_path / "second" / "in" / "b.pdf").write_bytes(make_pdf(["b"]))
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: (tmp_path / "second" / "done" / "b.pdf").exists())
        (tmp_path / "first" / "in" / "a.pdf").write_bytes(make_pdf(["a"]))
        wait_for(lambda: (tmp_path / "first" / "done" / "a.pdf").exists())
        assert daemon.stop() == 0

    def test_sighup_changes_the_request_rate(
        self, tmp_path: Path, emulator: EmulatorServer, daemon_factory: Any
    ) -> None:
        """requests_per_second auto -> 7 -> auto with a cap of 3: the rate gauge follows."""
        port = free_port()
        listen = {"listen": f"127.0.0.1:{port}"}
        config = daemon_config(tmp_path, emulator, pipeline(tmp_path), metrics=listen)
        config["api"]["requests_per_second"] = "auto"
        daemon = daemon_factory(config).start()

        def rate() -> str:
            _, text = local_get(port, "/metrics")
            lines = [ln for ln in text.splitlines() if ln.startswith("docutray_watch_api_request_")]
            return next((ln for ln in lines if "rate " in ln), "")

        assert wait_for(rate) == "docutray_watch_api_request_rate 16.0"  # slow start's window
        for api, expected in (
            ({"requests_per_second": 7}, "docutray_watch_api_request_rate 7.0"),
            (
                {"requests_per_second": "auto", "max_requests_per_second": 3},
                "docutray_watch_api_request_rate 3.0",
            ),
        ):
            config["api"].update(api)
            daemon.write_config(config)
            daemon.signal(signal.SIGHUP)
            wait_for(lambda expected=expected: rate() == expected)

        def recorded() -> Any:
            answer = CliRunner().invoke(cli, ["status", "--json", "-c", str(daemon.config_path)])
            return json.loads(answer.output)["request_rate"]

        # The heartbeat stores the rate in the journal (every 5 s, when it changed) for `status`.
        wait_for(lambda: (recorded() or {}).get("max_requests_per_second") == 3, timeout=30)
        assert recorded()["requests_per_second"] == 3.0
        assert daemon.stop() == 0

    def test_a_bad_config_on_sighup_keeps_the_old_one(
        self, tmp_path: Path, emulator: EmulatorServer, daemon_factory: Any
    ) -> None:
        """A broken config file on reload is logged with its YAML path; processing goes on."""
        config = daemon_config(tmp_path, emulator, pipeline(tmp_path))
        daemon = daemon_factory(config).start()
        daemon.config_path.write_text("pipelines: [{name: x, steps: 5}]\n")
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: "config_reload_failed" in daemon.log())
        assert "pipelines[0]" in daemon.log()
        (tmp_path / "inbox" / "in" / "c.pdf").write_bytes(make_pdf(["c"]))
        wait_for(lambda: (tmp_path / "inbox" / "done" / "c.pdf").exists())
        assert daemon.stop() == 0

    def test_bad_config_exits_78(self, tmp_path: Path, daemon_factory: Any) -> None:
        """`run` with an invalid config exits 78 (EX_CONFIG) and names the YAML path."""
        import subprocess
        import sys

        path = tmp_path / "bad.yaml"
        path.write_text("state_dir: /tmp/x\npipelines: [{name: a, watch: {path: /tmp/a}}]\n")
        proc = subprocess.run(
            [sys.executable, "-m", "docutray_watch.cli", "run", "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 78
        assert "pipelines[0].steps" in proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout


class TestObservability:
    def test_metrics_healthz_and_readyz_answer(
        self, tmp_path: Path, emulator: EmulatorServer, daemon_factory: Any
    ) -> None:
        """/metrics has the documented series; /healthz and /readyz answer 200."""
        port = free_port()
        config = daemon_config(
            tmp_path, emulator, pipeline(tmp_path), metrics={"listen": f"127.0.0.1:{port}"}
        )
        daemon = daemon_factory(config).start()
        (tmp_path / "inbox" / "in" / "m.pdf").write_bytes(make_pdf(["m"]))
        wait_for(lambda: (tmp_path / "inbox" / "done" / "m.pdf").exists())
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:  # noqa: S310
            assert response.status == 200
        with urllib.request.urlopen(f"{base}/readyz", timeout=5) as response:  # noqa: S310
            assert json.loads(response.read())["status"] == "ready"
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:  # noqa: S310
            text = response.read().decode()
        for series in (
            'docutray_watch_documents_total{outcome="success",pipeline="inbox"} 1.0',
            "docutray_watch_executions_in_flight",
            "docutray_watch_queue_depth",
            "docutray_watch_api_request_duration_seconds_bucket",
            "docutray_watch_sink_deliveries_total",
            "docutray_watch_last_successful_delivery_timestamp_seconds",
            "docutray_watch_oldest_pending_document_age_seconds",
            "docutray_watch_journal_writable 1.0",
        ):
            assert series in text, series
        assert daemon.stop() == 0


class TestRescan:
    def test_rescan_picks_up_files_the_watcher_missed(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """With the observer stopped (as if inotify overflowed), the periodic rescan finds files."""
        import asyncio

        from docutray_watch.config import parse_config
        from docutray_watch.daemon import Daemon
        from docutray_watch.sdnotify import Notifier

        spec = pipeline(tmp_path)
        spec["watch"]["rescan_interval"] = 0.5
        config = parse_config(daemon_config(tmp_path, emulator, spec), environ={})

        async def scenario() -> bool:
            daemon = Daemon(config, tmp_path / "unused.yaml", notifier=Notifier(None))
            runner = asyncio.ensure_future(daemon.run())
            while "inbox" not in daemon.watchers:
                await asyncio.sleep(0.02)
            daemon.watchers["inbox"].stop()  # events are lost from now on
            await asyncio.sleep(0.1)
            (tmp_path / "inbox" / "in" / "missed.pdf").write_bytes(make_pdf(["missed"]))
            done = tmp_path / "inbox" / "done" / "missed.pdf"
            for _ in range(200):
                if done.exists():
                    break
                await asyncio.sleep(0.05)
            daemon._on_stop_signal("SIGTERM")
            assert await runner == 0
            return done.exists()

        assert asyncio.run(scenario())


class TestWatchedFolderGone:
    def test_a_vanished_folder_is_reported_and_watched_again_when_back(
        self, tmp_path: Path, emulator: EmulatorServer, daemon_factory: Any
    ) -> None:
        """A deleted inbox makes /readyz 503 with the reason; once recreated, new files are
        processed and /readyz is 200 again."""
        port = free_port()
        spec = pipeline(tmp_path)
        spec["watch"]["rescan_interval"] = 1
        config = daemon_config(tmp_path, emulator, spec, metrics={"listen": f"127.0.0.1:{port}"})
        daemon = daemon_factory(config).start()
        inbox = tmp_path / "inbox" / "in"

        def readiness() -> tuple[int, str]:
            return local_get(port, "/readyz")

        inbox.rmdir()
        wait_for(lambda: readiness()[0] == 503, timeout=15)
        assert "watched folder of pipeline inbox is missing" in readiness()[1]
        assert "watch_folder_missing" in daemon.log()
        inbox.mkdir()
        wait_for(lambda: readiness()[0] == 200, timeout=15)
        (inbox / "back.pdf").write_bytes(make_pdf(["back"]))
        wait_for(lambda: (tmp_path / "inbox" / "done" / "back.pdf").exists(), timeout=30)
        assert daemon.stop() == 0


class TestRetryWhileRunning:
    def test_a_running_daemon_takes_up_a_retry_within_seconds(
        self, tmp_path: Path, emulator: EmulatorServer, daemon_factory: Any
    ) -> None:
        """`retry` from another process is picked up in a second or two, not at the next rescan."""
        spec = pipeline(tmp_path)
        spec["watch"]["rescan_interval"] = 3600  # a rescan cannot be what picks it up
        daemon = daemon_factory(daemon_config(tmp_path, emulator, spec)).start()
        flaky = tmp_path / "inbox" / "in" / "flaky.pdf"
        flaky.write_bytes(make_pdf(["f"]) + b"DOCUTRAY-EMULATOR:ERROR")
        failed = tmp_path / "inbox" / "failed" / "flaky.pdf"
        wait_for(failed.exists)
        wait_for(lambda: emulator.stats().executions_created == 1)
        command = [sys.executable, "-m", "docutray_watch.cli", "retry", "--failed"]
        retry = subprocess.run(
            [*command, "-c", str(daemon.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert retry.returncode == 0, retry.stderr
        assert "1 document(s) requeued: a running daemon takes them up" in retry.stdout
        requeued_at = time.monotonic()
        wait_for(lambda: emulator.stats().executions_created == 2, timeout=10)
        assert time.monotonic() - requeued_at < 5
        assert '"event": "requeued_documents_taken"' in daemon.log()
        assert daemon.stop() == 0


class TestMissingInbox:
    def test_run_creates_a_missing_inbox_and_logs_it(
        self, tmp_path: Path, emulator: EmulatorServer, daemon_factory: Any
    ) -> None:
        """`run` creates a missing watched folder and logs `watch_folder_created`."""
        spec = pipeline(tmp_path)
        inbox = tmp_path / "inbox" / "in"
        inbox.rmdir()
        daemon = daemon_factory(daemon_config(tmp_path, emulator, spec)).start()
        assert inbox.is_dir()
        (created,) = [
            json.loads(line)
            for line in daemon.log().splitlines()
            if '"watch_folder_created"' in line
        ]
        assert (created["pipeline"], created["path"]) == ("inbox", str(inbox))
        (inbox / "a.pdf").write_bytes(make_pdf(["a"]))
        wait_for(lambda: len(results(tmp_path / "inbox" / "out")) == 1)
        assert daemon.stop() == 0
