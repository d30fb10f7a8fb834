"""The status page's HTTP server (aiohttp), on its own address (`web.listen`).

Reads: `GET /` (the page), `GET /static/…` (its script and style, a fixed list: never a path
from the request), `GET /api/status` (the `status --json` document, `?failures=N` like
`--failures`), `GET /api/live` (the in-memory figures only the daemon has) and
`GET /api/documents/{id}/sidecar` (a failed document's `.error.json`, found by its journal id).

The one action, `POST /api/documents/{id}/retry`, is off unless `web.actions` is true; it needs
`Authorization: Bearer <token>` (compared in constant time) and an `Origin` that is the page's
own, and answers 403 otherwise. Every JSON answer passes through `scrub`: registered secrets (the
API key, the token) become `***` and the query of a signed URL is cut off.

In cluster mode (`report` given) `/api/status` is the cluster's `status --json` document (its
`cluster` part lists the nodes, which the page draws), no local journal is opened, and the
action and the sidecars (on the disk of the node holding a file) are not offered.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import threading
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from docutray_watch import archive
from docutray_watch.config import Config, WebConfig, api_key_of
from docutray_watch.journal import Journal
from docutray_watch.log import hide_signed_urls, mask_secrets, register_secret
from docutray_watch.metrics import Metrics
from docutray_watch.runner import retry_document_ids, status_report
from docutray_watch.web.live import MinuteRing, Sampler, sinks_health

__all__ = ["SAMPLE_EVERY", "StatusPage", "scrub"]

SAMPLE_EVERY = 5.0  # seconds between two reads of the metrics into the minute ring
MAX_FAILURES = 500
MAX_SIDECAR_BYTES = 1 << 20

_STATIC = {
    "app.js": "text/javascript",
    "style.css": "text/css",
}
_SECURITY_HEADERS = {
    # Everything comes from the daemon itself; nothing inline, nothing from elsewhere.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

ApiState = Callable[[], dict[str, Any]]
StatusReport = Callable[[int], Awaitable[dict[str, Any]]]
"""Cluster mode: the `status --json` document for `failures` latest failures."""
_CLUSTER_NO_ACTIONS = "actions are not available in cluster mode (use `docutray-watch retry`)"


def scrub(value: Any) -> Any:
    """`value` (JSON data) with secrets masked and signed URLs' queries removed."""
    if isinstance(value, str):
        return hide_signed_urls(mask_secrets(value))
    if isinstance(value, dict):
        return {key: scrub(item) for key, item in value.items()}
    if isinstance(value, list):
        return [scrub(item) for item in value]
    return value


def _static_text(name: str) -> str:
    return resources.files("docutray_watch.web").joinpath("static", name).read_text("utf-8")


class StatusPage:
    """Serves the page and its JSON endpoints; samples the metrics into the minute ring."""

    def __init__(
        self,
        config: Callable[[], Config],
        metrics: Metrics,
        *,
        api_state: ApiState,
        clock: Callable[[], float] = time.time,
        report: StatusReport | None = None,
    ) -> None:
        self._config = config
        web_config = config().web
        assert web_config is not None, "the status page needs a web: block"
        self.host = web_config.host
        self.port = web_config.port
        self.metrics = metrics
        self._api_state = api_state
        self._report = report  # cluster mode: the cluster's status instead of a local journal
        self.ring = MinuteRing(clock=clock)
        self.sampler = Sampler(metrics, self.ring, clock=clock)
        self.started_at = clock()
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self._journal: Journal | None = None
        self._journal_lock = threading.Lock()  # one reader at a time on the page's connection
        self._stop = asyncio.Event()
        self._sampling: asyncio.Task[None] | None = None
        self._files = {name: _static_text(name) for name in (*_STATIC, "index.html")}
        # Never shown: masked wherever they might appear in a reason or a sidecar.
        register_secret(api_key_of(config()))
        register_secret(web_config.token)

    # -- life --------------------------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application (tests may serve it themselves)."""
        app = web.Application()
        app.on_response_prepare.append(_security_headers)
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/api/status", self._status)
        app.router.add_get("/api/live", self._live)
        app.router.add_get(r"/api/documents/{id:\d+}/sidecar", self._sidecar)
        app.router.add_post(r"/api/documents/{id:\d+}/retry", self._retry)
        return app

    async def start(self) -> None:
        """Open the page's own read connection to the journal, bind, start sampling."""
        if self._report is None:
            self._journal = await asyncio.to_thread(Journal(self._config().journal_path).open)
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError:
            await self.stop()
            raise
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        self._sampling = asyncio.ensure_future(self._sample_loop())

    async def stop(self) -> None:
        """Stop serving and sampling; close the journal connection."""
        self._stop.set()
        if self._sampling is not None:
            self._sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampling
            self._sampling = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._journal is not None:
            journal, self._journal = self._journal, None
            await asyncio.to_thread(journal.close)

    async def _sample_loop(self) -> None:
        while not self._stop.is_set():
            self.sampler.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=SAMPLE_EVERY)

    # -- reads -------------------------------------------------------------------------------

    def _web(self) -> WebConfig:
        """The current `web:` block (a reload that removed it leaves the defaults: no actions)."""
        return self._config().web or WebConfig()

    async def _index(self, _request: web.Request) -> web.Response:
        settings = self._web()
        page = (
            self._files["index.html"]
            .replace("{{refresh_ms}}", str(int(settings.refresh_seconds * 1000)))
            .replace("{{actions}}", "on" if settings.actions and not self._report else "off")
        )
        return web.Response(text=page, content_type="text/html", charset="utf-8")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound()
        return web.Response(text=self._files[name], content_type=_STATIC[name], charset="utf-8")

    def _read(self, fn: Callable[[Journal], Any]) -> Any:
        with self._journal_lock:
            if self._journal is None:
                raise web.HTTPServiceUnavailable(text="stopping")
            return fn(self._journal)

    async def _status(self, request: web.Request) -> web.Response:
        try:
            failures = int(request.query.get("failures", "10"))
        except ValueError:
            raise web.HTTPBadRequest(text="failures: expected a whole number") from None
        failures = max(0, min(failures, MAX_FAILURES))
        config = self._config()
        if self._report is not None:
            try:
                return _json(await self._report(failures))
            except Exception as exc:  # noqa: BLE001 - the cluster database away: say so
                reason = f"cannot read the cluster's status: {type(exc).__name__}: {exc}"
                return _json({"error": reason.splitlines()[0]}, status=503)
        report = await asyncio.to_thread(
            self._read, lambda journal: status_report(config, failures=failures, journal=journal)
        )
        return _json(report)

    async def _live(self, _request: web.Request) -> web.Response:
        self.sampler.sample()  # the current minute is up to date when asked
        config = self._config()
        return _json(
            {
                "generated_at": self._clock(),
                "started_at": self.started_at,
                "actions": self._web().actions,
                "api": self._api_state(),
                "sinks": sinks_health(config, self.metrics, self.sampler.sink_failed_at),
                "minutes": self.ring.minutes(),
            }
        )

    async def _sidecar(self, request: web.Request) -> web.Response:
        doc_id = int(request.match_info["id"])
        if self._report is not None:
            raise web.HTTPNotFound(text="cluster mode: the sidecar is on the node holding the file")
        text = await asyncio.to_thread(self._read, lambda journal: _sidecar_text(journal, doc_id))
        if text is None:
            raise web.HTTPNotFound(text=f"document {doc_id} has no error sidecar")
        try:
            content = json.loads(text)
        except ValueError:
            content = {"unreadable_sidecar": text[:4096]}
        return _json(content)

    # -- actions -----------------------------------------------------------------------------

    async def _retry(self, request: web.Request) -> web.Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return _json({"error": refusal}, status=403)
        doc_id = int(request.match_info["id"])
        requeued, problems = await asyncio.to_thread(retry_document_ids, self._config(), [doc_id])
        return _json({"requeued": requeued, "problems": problems}, status=200 if requeued else 409)

    def _refusal(self, request: web.Request) -> str | None:
        """Why an action is refused, or None."""
        settings = self._web()
        token = settings.token
        if self._report is not None:
            return _CLUSTER_NO_ACTIONS
        if not settings.actions or not token:
            return "actions are off (web.actions)"
        origin = request.headers.get("Origin")
        if not origin or urlsplit(origin).netloc.lower() != request.host.lower():
            return "actions must come from the status page itself (Origin)"
        scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            offered.strip().encode(), token.encode()
        ):
            return "a valid token is needed (Authorization: Bearer)"
        return None


def _sidecar_text(journal: Journal, doc_id: int) -> str | None:
    """The sidecar of a failed or rejected document, found from its journal row (never from a
    path in the request)."""
    try:
        doc = journal.document(doc_id)
    except KeyError:
        return None
    if doc.state not in ("failed", "rejected"):
        return None
    for location in dict.fromkeys(filter(None, [doc.archived_to, doc.path])):
        sidecar = archive.sidecar_path(Path(location))
        try:
            with sidecar.open("rb") as handle:
                return handle.read(MAX_SIDECAR_BYTES).decode("utf-8", "replace")
        except OSError:
            continue
    return None


def _json(data: Any, *, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(scrub(data), ensure_ascii=False),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def _security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(_SECURITY_HEADERS)
