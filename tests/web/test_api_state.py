"""The API state the page and the `docutray_watch_api_state` gauge show: ok, paused, key_refused."""

from __future__ import annotations

from pathlib import Path

import httpx

from docutray_watch.daemon import _api_state
from docutray_watch.engine import Engine
from docutray_watch.metrics import Metrics
from docutray_watch.plugins import load_plugins
from docutray_watch.testing import build_config
from docutray_watch.web.live import api_state_of


async def test_a_refused_key_then_a_429_pause_then_ok(tmp_path: Path) -> None:
    """A 401 answer marks the key refused until a request succeeds; a 429 pauses (Retry-After)."""
    answers = iter([401, 200, 429])

    def answer(_request: httpx.Request) -> httpx.Response:
        status = next(answers)
        return httpx.Response(status, headers={"Retry-After": "30"} if status == 429 else {})

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
        http = engine._http
        assert http is not None
        assert api_state_of(engine)["state"] == "ok"
        await http.get("http://127.0.0.1:9/v1/x")
        assert api_state_of(engine)["state"] == _api_state(engine) == "key_refused"
        await http.get("http://127.0.0.1:9/v1/x")
        assert api_state_of(engine)["state"] == "ok"
        await http.get("http://127.0.0.1:9/v1/x")
        state = api_state_of(engine)
        assert state["state"] == _api_state(engine) == "paused"
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
