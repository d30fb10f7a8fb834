"""The optional local HTTP listener: `/metrics` (Prometheus), `/healthz` and `/readyz`.

`/healthz` answers 200 while the event loop runs (it is served by it). `/readyz` answers 200 when
the journal accepts a write transaction and every watcher's observer thread is alive, otherwise
503 with the reasons as JSON — a load balancer or a monitoring check can tell "up" from "working".
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from docutray_watch.metrics import Metrics

__all__ = ["HealthServer"]

ReadinessCheck = Callable[[], Awaitable[list[str]]]
"""Returns the reasons the daemon is not ready (empty when ready)."""


class HealthServer:
    """Serves metrics and health endpoints on one address (loopback by default)."""

    def __init__(
        self,
        metrics: Metrics,
        readiness: ReadinessCheck,
        *,
        host: str,
        port: int,
        before_scrape: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.metrics = metrics
        self.readiness = readiness
        self.host = host
        self.port = port
        self._before_scrape = before_scrape
        self._runner: web.AppRunner | None = None
        self.started_at = time.time()

    async def start(self) -> None:
        """Bind and serve (the port is known in `self.port` afterwards, also for port 0)."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        # aiohttp does not expose the bound port; read it from the server's socket (port 0).
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, _request: web.Request) -> web.Response:
        if self._before_scrape is not None:
            await self._before_scrape()
        return web.Response(
            body=self.metrics.render(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "alive", "uptime_s": round(time.time() - self.started_at, 1)}
        )

    async def _readyz(self, _request: web.Request) -> web.Response:
        problems = await self.readiness()
        if problems:
            return web.json_response({"status": "not ready", "problems": problems}, status=503)
        return web.json_response({"status": "ready"})
