"""Sink outage: PostgreSQL unreachable, the S3 endpoint down, a sink raising on every call."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from docutray_watch.samples import make_pdf
from tests.daemon.conftest import free_port
from tests.reliability.conftest import (
    PG_URL,
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    DaemonFactory,
    MotoServer,
    Report,
    Sizes,
    TcpProxy,
    base_config,
    elapsed_since,
    pipeline_config,
    s3_client,
    sink_row_keys,
    wait_for,
)
from tests.sinks.conftest import PG_HOST, PG_PORT

# Full size runs for many minutes (pytest's default timeout is 300 s).
pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(3600)]

STEP = "stp_one"
RETRY = {"initial": 0.5, "max": 2.0, "timeout": 3600}


def healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
        return int(answer.status)


def fs_keys(folder: Path) -> list[tuple[str, str]]:
    keys = []
    for path in folder.rglob("*.json"):
        record = json.loads(path.read_text())
        keys.append((record["document"]["sha256"], record["step_id"]))
    return keys


class TestSinkOutage:
    def test_outages_delay_delivery_but_lose_nothing(
        self,
        tmp_path: Path,
        emulator_factory: Any,
        reliable_daemon: DaemonFactory,
        pg_table: str,
        s3_server: MotoServer,
        sizes: Sizes,
        report: Report,
    ) -> None:
        """Healthy sinks deliver during an outage; afterwards every sink has each record once."""
        started = time.monotonic()
        per_phase = sizes.pick(10, 100)
        outage_seconds = sizes.pick(8.0, 60.0)
        emulator = emulator_factory(latency=0.2)
        proxy = TcpProxy((PG_HOST, PG_PORT))
        proxy.up()
        bucket = "reliability-outage"
        s3 = s3_client(s3_server)
        s3.create_bucket(Bucket=bucket)
        flag = tmp_path / "probe-down"
        port = free_port()
        outage = pipeline_config(
            tmp_path,
            "outage",
            sinks=[
                {"type": "filesystem", "path": str(tmp_path / "outage" / "out")},
                {
                    "type": "database",
                    "url": PG_URL.replace(f":{PG_PORT}/", f":{proxy.port}/"),
                    "table": pg_table,
                    "connect_timeout": 2,
                    "retry": RETRY,
                },
                {
                    "type": "s3",
                    "bucket": bucket,
                    "prefix": "r/",
                    "endpoint_url": s3_server.endpoint_url,
                    "region": "us-east-1",
                    "aws_access_key_id": S3_ACCESS_KEY,
                    "aws_secret_access_key": S3_SECRET_KEY,
                    "addressing_style": "path",
                    "max_attempts": 1,
                    "connect_timeout": 2,
                    "read_timeout": 5,
                    "retry": RETRY,
                },
                {
                    "type": "probe",
                    "path": str(tmp_path / "outage" / "probe"),
                    "fail_while": str(flag),
                    "retry": RETRY,
                },
            ],
        )
        # A sink that never works: its documents fail with the reason; the other sink delivers.
        broken = pipeline_config(
            tmp_path,
            "broken",
            sinks=[
                {"type": "filesystem", "path": str(tmp_path / "broken" / "out")},
                {
                    "type": "probe",
                    "path": str(tmp_path / "broken" / "probe"),
                    "always_fail": True,
                    "retry": {"initial": 0.2, "max": 0.5, "timeout": 3},
                },
            ],
        )
        config = base_config(
            tmp_path, emulator, outage, broken, metrics={"listen": f"127.0.0.1:{port}"}
        )
        daemon = reliable_daemon(config).start()
        inbox = tmp_path / "outage" / "in"

        def drop(phase: str) -> dict[str, str]:
            shas = {}
            for i in range(per_phase):
                data = make_pdf([f"outage {phase} {i}"])
                name = f"{phase}-{i:03d}.pdf"
                (inbox / name).write_bytes(data)
                shas[name] = hashlib.sha256(data).hexdigest()
            return shas

        def archived(names: dict[str, str]) -> bool:
            return all((tmp_path / "outage" / "done" / n).exists() for n in names)

        # Phase 1: everything up.
        before = drop("before")
        wait_for(lambda: archived(before), timeout=120)

        # Phase 2: PostgreSQL unreachable, S3 endpoint down, the probe sink raising.
        proxy.down()
        s3_server.stop()
        flag.write_text("down")
        outage_started = time.monotonic()
        during = drop("during")
        (tmp_path / "broken" / "in" / "never.pdf").write_bytes(make_pdf(["never"]))
        wanted = {(sha, STEP) for sha in during.values()}
        wait_for(
            lambda: wanted <= set(fs_keys(tmp_path / "outage" / "out")), timeout=120, interval=0.2
        )
        fs_during_outage = len(wanted)
        health_checks = 0
        while time.monotonic() - outage_started < outage_seconds:
            assert daemon.alive
            assert healthz(port) == 200
            health_checks += 1
            time.sleep(1.0)
        assert daemon.alive
        still_waiting = [n for n in during if (inbox / n).exists()]
        assert len(still_waiting) == per_phase  # held back, not failed, while sinks are down
        assert not list((tmp_path / "outage" / "failed").glob("*.pdf"))
        pg_direct = {sha for _, sha, _ in sink_row_keys(PG_URL, pg_table)}
        assert not set(during.values()) & pg_direct

        # Phase 3: recovery.
        proxy.up()
        s3_server.start()
        flag.unlink()
        recovered_at = time.monotonic()
        wait_for(lambda: archived(during), timeout=sizes.pick(120, 600), interval=0.2)
        recovery_seconds = round(time.monotonic() - recovered_at, 1)
        after = drop("after")
        wait_for(lambda: archived(after), timeout=120)
        wait_for(lambda: list((tmp_path / "broken" / "failed").glob("*.pdf")), timeout=60)
        assert daemon.alive
        assert healthz(port) == 200
        assert daemon.stop() == 0
        proxy.down()

        everything = {**before, **during, **after}
        expected = sorted((sha, STEP) for sha in everything.values())
        fs = sorted(fs_keys(tmp_path / "outage" / "out"))
        pg = sorted((sha, step) for _, sha, step in sink_row_keys(PG_URL, pg_table))
        objects = s3.list_objects_v2(Bucket=bucket, Prefix="r/").get("Contents", [])
        s3_keys = sorted(
            (record["document"]["sha256"], record["step_id"])
            for record in (
                json.loads(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read())
                for o in objects
            )
        )
        probe = sorted(
            (name.split(".", 1)[0], name.split(".", 1)[1])
            for name in (
                p.name.removesuffix(".json") for p in (tmp_path / "outage" / "probe").glob("*.json")
            )
        )
        assert fs == expected
        assert pg == expected
        assert s3_keys == expected
        assert probe == expected
        assert not list((tmp_path / "outage" / "failed").glob("*.pdf"))

        # The pipeline with a sink that never works: failed with the reason, others delivered.
        sidecar = json.loads((tmp_path / "broken" / "failed" / "never.pdf.error.json").read_text())
        assert sidecar["stage"] == "deliver"
        assert "probe" in sidecar["reason"]
        assert len(fs_keys(tmp_path / "broken" / "out")) == 1
        assert daemon.tracebacks() == []
        report(
            "sink-outage",
            documents=len(everything),
            outage_s=outage_seconds,
            delivered_fs_during_outage=fs_during_outage,
            held_back_during_outage=len(still_waiting),
            health_checks_ok=health_checks,
            recovery_s=recovery_seconds,
            lost=sum(not (tmp_path / "outage" / "done" / n).exists() for n in everything),
            fs=len(fs),
            postgres=len(pg),
            s3=len(s3_keys),
            probe=len(probe),
            broken_sink_failed_with_reason=1,
            seconds=elapsed_since(started),
        )
