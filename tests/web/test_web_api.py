"""The status page's HTTP endpoints, without a browser: the status document, the live figures,
sidecars by id, and who may retry."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from docutray_watch.cli import cli
from docutray_watch.config import ConfigError, load_config
from docutray_watch.plugins import load_plugins
from docutray_watch.testing import EmulatorFactory
from docutray_watch.web.live import MinuteRing
from tests.web.conftest import TOKEN, processed_site, routed_site


def _without_clock(document: dict[str, object]) -> dict[str, object]:
    """The status document without its time-dependent keys (and the request rate's age)."""
    kept: dict[str, object] = {
        key: value
        for key, value in document.items()
        if key not in ("generated_at", "oldest_pending_age_s")
    }
    rate = kept.get("request_rate")
    if isinstance(rate, dict):
        kept["request_rate"] = {k: v for k, v in rate.items() if k != "recorded_age_s"}
    return kept


async def test_api_status_is_the_status_json_document(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    """GET /api/status?failures=N is exactly `docutray-watch status --json --failures N`, with
    the queue and today's figures read from the counts the journal keeps."""
    async with processed_site(tmp_path, emulator_factory) as site:
        async with httpx.AsyncClient(base_url=site.url) as client:
            served = (await client.get("/api/status?failures=50")).json()
        result = CliRunner().invoke(
            cli, ["status", "-c", str(site.config_path), "--json", "--failures", "50"]
        )
    assert result.exit_code == 0, result.output
    assert _without_clock(served) == _without_clock(json.loads(result.output))
    assert served["pipelines"] == {"invoices": {"success": 3, "failed": 1, "rejected": 1}}
    assert served["queue"] == {"invoices": {"waiting": 0, "in_flight": 0}}
    assert served["today"]["invoices"]["done"] == 3
    assert served["today"]["invoices"]["failed"] == 2
    assert {f["path"].rsplit("/", 1)[1] for f in served["failures"]} == {"broken.pdf", "empty.pdf"}
    assert all(isinstance(f["id"], int) for f in served["failures"])
    assert served["learned_latency"][0]["step_id"] == "stp_test"


async def test_actions_are_refused_without_token_origin_or_when_off(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    """A retry needs the Bearer token and the page's own Origin (403 otherwise), and nothing is
    requeued by a refused one; with both, the document is requeued (same as `retry`)."""
    async with processed_site(tmp_path, emulator_factory) as site:
        journal = site.daemon.engine.journal
        (failed,) = await journal.documents_in("failed")
        url = f"/api/documents/{failed.id}/retry"
        good = {"Origin": site.url, "Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=site.url) as client:
            for headers in (
                {"Origin": site.url},
                {"Origin": site.url, "Authorization": "Bearer " + TOKEN[:-1] + "x"},
                {"Origin": site.url, "Authorization": TOKEN},
                {"Authorization": f"Bearer {TOKEN}"},
                {"Origin": "http://evil.example", "Authorization": f"Bearer {TOKEN}"},
            ):
                response = await client.post(url, headers=headers)
                assert response.status_code == 403, headers
            before = await journal.requeue_count()
            assert before == 0
            response = await client.post(url, headers=good)
            assert response.status_code == 200, response.text
            assert response.json() == {"requeued": 1, "problems": []}
            assert await journal.requeue_count() == 1
            # Not failed any more (or failed again): a done document cannot be retried here.
            (done, *_) = await journal.documents_in("archived")
            response = await client.post(f"/api/documents/{done.id}/retry", headers=good)
            assert response.status_code == 409
    async with processed_site(tmp_path / "off", emulator_factory, actions=False) as site:
        (failed,) = await site.daemon.engine.journal.documents_in("failed")
        async with httpx.AsyncClient(base_url=site.url) as client:
            response = await client.post(
                f"/api/documents/{failed.id}/retry",
                headers={"Origin": site.url, "Authorization": f"Bearer {TOKEN}"},
            )
            assert response.status_code == 403
            assert "actions are off" in response.json()["error"]
            page = (await client.get("/")).text
            assert 'data-actions="off"' in page


async def test_sidecars_by_document_id_only(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    """A failed document's sidecar is served by its id; a done document, an unknown id or a
    path get 404, and static files are a fixed list."""
    async with processed_site(tmp_path, emulator_factory) as site:
        journal = site.daemon.engine.journal
        (failed,) = await journal.documents_in("failed")
        (done, *_) = await journal.documents_in("archived")
        async with httpx.AsyncClient(base_url=site.url) as client:
            sidecar = await client.get(f"/api/documents/{failed.id}/sidecar")
            assert sidecar.status_code == 200
            assert sidecar.json()["document"] == "broken.pdf"
            assert sidecar.headers["Content-Security-Policy"].startswith("default-src 'none'")
            for path in (
                f"/api/documents/{done.id}/sidecar",
                "/api/documents/424242/sidecar",
                "/api/documents/..%2F..%2Fetc%2Fpasswd/sidecar",
                "/static/..%2F..%2Fconfig.py",
                "/static/index.html",
            ):
                assert (await client.get(path)).status_code == 404, path


async def test_live_figures_count_what_the_daemon_did(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    """/api/live has 60 one-minute buckets, the API state and each sink's health."""
    async with (
        processed_site(tmp_path, emulator_factory) as site,
        httpx.AsyncClient(base_url=site.url) as client,
    ):
        live = (await client.get("/api/live")).json()
    assert len(live["minutes"]) == 60
    assert live["api"]["state"] == "ok"
    assert live["actions"] is True
    assert [(s["pipeline"], s["state"]) for s in live["sinks"]] == [("invoices", "idle")]


def test_the_minute_ring_keeps_the_last_hour() -> None:
    """Figures land in the bucket of their minute; older than an hour they drop out; minutes
    without anything are zeros; the mean latency is per minute."""
    now = [6_000_000.0]
    ring = MinuteRing(clock=lambda: now[0])
    ring.add(done=2, api_requests=4, api_seconds=2.0)
    now[0] += 60
    ring.add(failed=1)
    minutes = ring.minutes()
    assert len(minutes) == 60
    assert minutes[-2]["done"] == 2
    assert minutes[-2]["api_mean_s"] == 0.5
    assert minutes[-1]["failed"] == 1
    assert minutes[-1]["api_mean_s"] is None
    now[0] += 59 * 60
    assert sum(m["done"] for m in ring.minutes()) == 0
    assert sum(m["failed"] for m in ring.minutes()) == 1


def test_actions_need_a_readable_token_file(tmp_path: Path) -> None:
    """actions: true without token_file, an unreadable or a short token file: exit 78 naming
    the YAML path (web.token_file)."""
    from tests.web.conftest import site_config

    class _Emulator:
        base_url = "http://127.0.0.1:9"
        api_key = "k" * 20

    path = site_config(tmp_path, _Emulator())  # type: ignore[arg-type]
    sink_types = load_plugins().config_sink_types
    (tmp_path / "web-token").write_text("short")
    with pytest.raises(ConfigError) as error:
        load_config(path, sink_types=sink_types)
    assert error.value.lines()[0].split(": ", 2)[1] == "web.token_file"
    (tmp_path / "web-token").unlink()
    result = CliRunner().invoke(cli, ["run", "-c", str(path)])
    assert result.exit_code == 78
    assert "web.token_file: cannot read" in result.output
    lines = [line for line in path.read_text().splitlines() if "token_file:" not in line]
    path.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(cli, ["validate", "--offline", "-c", str(path)])
    assert result.exit_code == 78
    assert "web.token_file: actions: true needs a token_file" in result.output


async def test_the_page_loads_nothing_from_elsewhere(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    """The page, its script and style come from the daemon (no CDN): no external URL is
    loaded, and the Content-Security-Policy allows only the page's own origin."""
    async with (
        processed_site(tmp_path, emulator_factory) as site,
        httpx.AsyncClient(base_url=site.url) as client,
    ):
        page = await client.get("/")
        script = (await client.get("/static/app.js")).text
        style = (await client.get("/static/style.css")).text
    assert page.headers["Content-Type"].startswith("text/html")
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "connect-src 'self'" in policy
    for text in (page.text, style):
        assert "http://" not in text
        assert "https://" not in text
    # The only absolute URL in the script is the SVG namespace, which is never fetched.
    assert set(re.findall(r"https?://[^\s\"'`]+", script)) == {"http://www.w3.org/2000/svg"}
    assert "<script>" not in page.text  # nothing inline: the policy would refuse it


async def test_api_status_counts_routed_documents_per_type_and_outcome(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    """For a pipeline with `identify`, /api/status gives documents per identified type and
    outcome (`unrouted` included) under `identified_outcomes`, as `status --json` does; a
    pipeline without `identify` is not listed there."""
    async with routed_site(tmp_path, emulator_factory) as site:
        async with httpx.AsyncClient(base_url=site.url) as client:
            served = (await client.get("/api/status")).json()
        result = CliRunner().invoke(cli, ["status", "-c", str(site.config_path), "--json"])
    assert result.exit_code == 0, result.output
    assert _without_clock(served) == _without_clock(json.loads(result.output))
    assert served["identified_outcomes"] == {
        "mixed": {
            "id_card": {"unrouted": 1},
            "invoice": {"success": 1, "unrouted": 1},
            "receipt": {"success": 1},
        }
    }
    assert served["identified_types"] == {"mixed": {"id_card": 1, "invoice": 2, "receipt": 1}}
    assert served["today"]["mixed"]["unrouted"] == 2
