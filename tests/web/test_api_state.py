"""The API state the page and the `docutray_watch_api_state` gauge show: ok, paused, key_refused,
unreachable."""

from __future__ import annotations

from pathlib import Path

import httpx

from docutray_watch.engine import Engine
from docutray_watch.engine.errors import Failure
from docutray_watch.metrics import Metrics
from docutray_watch.plugins import load_plugins
from docutray_watch.testing import build_config
from docutray_watch.web.live import api_state_of


async def test_the_state_follows_the_api_gate_and_the_rate_limiter(tmp_path: Path) -> None:
    """A refused key is `key_refused` until an answer comes, an unreachable API `unreachable`,
    and a 429 answer's Retry-After `paused` — for the page and the gauge alike."""
    answers = iter([429])

    def answer(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(answers), headers={"Retry-After": "30"})

    plugins = load_plugins()
    config = build_config(
        tmp_path, {"type": "filesystem", "path": str(tmp_path / "out")}, plugins=plugins
    )
    engine = Engine(
        config,
        plugin_manager=plugins.pm,
        transport=httpx.MockTransport(answer),
        environ={"DOCUTRAY_API_KEY": "k" * 20},
    )
    await engine.start()
    try:
        gate = engine.api_gate
        assert api_state_of(engine)["state"] == engine.api_state() == "ok"
        gate.report(Failure.CREDENTIALS, pipeline="invoices", error="401", retry_after=None)
        state = api_state_of(engine)
        assert state["state"] == engine.api_state() == "key_refused"
        assert state["reasons"] == ["paused: the DocuTray API refused the API key (401)"]
        gate.answered()
        gate.report(Failure.UNREACHABLE, pipeline="invoices", error="refused", retry_after=None)
        assert api_state_of(engine)["state"] == engine.api_state() == "unreachable"
        gate.answered()
        assert api_state_of(engine)["state"] == "ok"
        http = engine._http
        assert http is not None
        await http.get("http://127.0.0.1:9/v1/x")  # a 429: the rate limiter pauses everyone
        state = api_state_of(engine)
        assert state["state"] == engine.api_state() == "paused"
        assert 0 < state["paused_for_s"] <= 30
    finally:
        await engine.stop(grace=0)


def test_the_api_state_gauge_is_one_hot() -> None:
    """docutray_watch_api_state has one series per state, 1 for the current one."""
    metrics = Metrics()
    metrics.set_api_state("key_refused")
    text = metrics.render().decode()
    assert 'docutray_watch_api_state{state="key_refused"} 1.0' in text
    assert 'docutray_watch_api_state{state="ok"} 0.0' in text
    assert 'docutray_watch_api_state{state="paused"} 0.0' in text
