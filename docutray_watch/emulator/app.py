"""The aiohttp application that emulates the DocuTray API (steps, identify, document types), plus
its control endpoints.

An API request goes through, in order: drop (``drop_rate``), 5xx (``server_error_rate``, status
drawn from ``server_error_statuses``), authentication, step lookup, reading the document (POST),
the Retry-After check, rate limits (limiter, then ``rate_limit_rate``), the work itself, then
``drop_after_accept_rate`` (POST).
"""

from __future__ import annotations

import asyncio
import hmac
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from docutray_watch.emulator._catalogue import (
    DEFAULT_PAGE_LIMIT,
    MAX_PAGE_LIMIT,
    document_types_page,
)
from docutray_watch.emulator._documents import Document, read_document
from docutray_watch.emulator._errors import ApiError, DropConnection
from docutray_watch.emulator._timestamps import iso_utc
from docutray_watch.emulator.config import EmulatorConfig
from docutray_watch.emulator.state import EmulatorState
from docutray_watch.emulator.stats import FaultKind

STATE_KEY = web.AppKey("docutray_emulator_state", EmulatorState)
"""Where `create_app` keeps the `EmulatorState` of the application."""

CLIENT_MAX_SIZE = 1024**3
"""Body size aiohttp allows for buffered reads; documents are streamed and checked by us."""

_API_PREFIX = "/api/"
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(
    config: EmulatorConfig | None = None, *, state: EmulatorState | None = None
) -> web.Application:
    """Build the emulator application from `config`, or around an existing `state`."""
    if config is not None and state is not None:
        raise ValueError("pass either config or state, not both")
    app = web.Application(middlewares=[_envelope], client_max_size=CLIENT_MAX_SIZE)
    app[STATE_KEY] = state if state is not None else EmulatorState(config)
    app.add_routes(
        [
            web.post("/api/steps-async/{step_id}", _submit),
            web.get("/api/steps-async/status/{execution_id}", _status),
            web.post("/api/identify-async", _identify_async),
            web.get("/api/identify-async/status/{identification_id}", _identify_status),
            web.post("/api/identify", _identify),
            web.get("/api/document-types", _document_types),
            web.get("/_emulator/stats", _get_stats),
            web.get("/_emulator/config", _get_config),
            web.post("/_emulator/config", _post_config),
            web.post("/_emulator/reset", _post_reset),
        ]
    )
    return app


@web.middleware
async def _envelope(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Render errors as JSON, drop connections on demand, tag and count every answer."""
    try:
        response = await handler(request)
    except DropConnection:
        return _closed_without_answer(request)
    except ConnectionError:
        # The client went away mid-request (a timeout, a cancelled upload): nobody to answer.
        request.app[STATE_KEY].count_client_disconnect()
        return _closed_without_answer(request)
    except ApiError as exc:
        response = exc.to_response()
    except web.HTTPException as exc:
        response = ApiError(exc.status, exc.reason, headers=_allow_header(exc)).to_response()
    response.headers["X-Request-ID"] = f"req_{uuid.uuid4().hex}"
    if request.path.startswith(_API_PREFIX):
        request.app[STATE_KEY].count_response(response.status)
    return response


def _closed_without_answer(request: web.Request) -> web.StreamResponse:
    if request.transport is not None:
        request.transport.close()
    # aiohttp fails to write this to the closed transport and treats it as a disconnect.
    return web.Response(status=204)


def _allow_header(exc: web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}


# -- API ---------------------------------------------------------------------------------------


async def _receive_document(request: web.Request, target: str, *, is_step: bool) -> Document:
    """The checks every document POST goes through, in order, up to the work itself; `target`
    is the step id (checked against `step_ids` when `is_step`) or the identify endpoint."""
    state = request.app[STATE_KEY]
    config = state.config
    arrived_at = state.now()
    state.count_post()
    _inject_early_faults(state, config)
    _authenticate(request, config)
    if is_step and config.step_ids is not None and target not in config.step_ids:
        raise ApiError(404, f"Step {target!r} not found")
    limiter_wait = state.take_token(arrived_at)
    # Read the document even when the answer will be 429: its hash identifies the request.
    document = await read_document(request, max_size=config.max_file_size)
    identity = f"POST {target} {document.sha256}"
    state.check_retry_after(identity, arrived_at)
    _enforce_rate_limits(state, config, identity, limiter_wait)
    return document


def _maybe_drop_after_accept(state: EmulatorState) -> None:
    if state.roll(state.config.drop_after_accept_rate):
        state.count_fault(FaultKind.DROP_AFTER_ACCEPT)
        raise DropConnection


def _check_read(request: web.Request, identity: str) -> None:
    """The checks every API GET goes through, in order, up to the work itself."""
    state = request.app[STATE_KEY]
    config = state.config
    arrived_at = state.now()
    state.count_status_get()
    _inject_early_faults(state, config)
    _authenticate(request, config)
    state.check_retry_after(identity, arrived_at)
    _enforce_rate_limits(state, config, identity, state.take_token(arrived_at))


async def _submit(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    step_id = request.match_info["step_id"]
    document = await _receive_document(request, step_id, is_step=True)
    execution = state.create_execution(step_id, document)
    _maybe_drop_after_accept(state)
    return web.json_response(execution.accepted_body())


async def _identify_async(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    document = await _receive_document(request, "identify-async", is_step=False)
    identification = state.create_identification(document)
    _maybe_drop_after_accept(state)
    return web.json_response(identification.accepted_body(state.config.identify_id_field))


async def _identify_status(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    identification_id = request.match_info["identification_id"]
    _check_read(request, f"GET {identification_id}")
    found = state.read_identification(identification_id, state.now())
    if found is None:
        raise ApiError(404, f"Identification {identification_id!r} not found")
    identification, status = found
    return web.json_response(identification.status_body(status, state.config.identify_id_field))


async def _identify(request: web.Request) -> web.Response:
    """The synchronous identification: waits out the latency, then answers the result (an
    identification that fails is a 422)."""
    state = request.app[STATE_KEY]
    document = await _receive_document(request, "identify", is_step=False)
    identification = state.create_identification(document)
    if identification.latency > 0.0:
        await asyncio.sleep(identification.latency)
    _maybe_drop_after_accept(state)
    if identification.outcome == "ERROR":
        raise ApiError(422, identification.error_message or "Identification failed")
    return web.json_response(identification.result)


async def _document_types(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    _check_read(request, f"GET document-types {request.query_string}")
    page = _positive_int(request, "page", 1)
    limit = min(_positive_int(request, "limit", DEFAULT_PAGE_LIMIT), MAX_PAGE_LIMIT)
    return web.json_response(
        document_types_page(
            state.config, page=page, limit=limit, search=request.query.get("search")
        )
    )


def _positive_int(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer") from None
    if value < 1:
        raise ApiError(400, f"{name} must be >= 1")
    return value


async def _status(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    execution_id = request.match_info["execution_id"]
    _check_read(request, f"GET {execution_id}")
    found = state.read_status(execution_id, state.now())
    if found is None:
        raise ApiError(404, f"Execution {execution_id!r} not found")
    execution, status = found
    return web.json_response(execution.status_body(status))


def _inject_early_faults(state: EmulatorState, config: EmulatorConfig) -> None:
    if state.roll(config.drop_rate):
        state.count_fault(FaultKind.DROP)
        raise DropConnection
    status = state.roll_server_error(config)
    if status is not None:
        state.count_fault(FaultKind.SERVER_ERROR)
        raise ApiError(status, f"Emulated server error ({status})")


def _authenticate(request: web.Request, config: EmulatorConfig) -> None:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    challenge = {"WWW-Authenticate": "Bearer"}
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(
            401, "Missing API key: send 'Authorization: Bearer <key>'", headers=challenge
        )
    if not hmac.compare_digest(key.strip().encode(), config.api_key.encode()):
        raise ApiError(401, "Invalid API key", headers=challenge)


def _enforce_rate_limits(
    state: EmulatorState, config: EmulatorConfig, identity: str, limiter_wait: float
) -> None:
    if limiter_wait > 0.0:
        state.count_fault(FaultKind.RATE_LIMITER)
        raise _too_many_requests(
            state,
            config,
            identity,
            wait=limiter_wait,
            limit_type="requests_per_second",
            limit=config.rate_limit_rps or 0.0,
        )
    if state.roll(config.rate_limit_rate):
        state.count_fault(FaultKind.RATE_LIMIT)
        raise _too_many_requests(
            state, config, identity, wait=config.retry_after, limit_type="emulated", limit=0.0
        )


def _too_many_requests(
    state: EmulatorState,
    config: EmulatorConfig,
    identity: str,
    *,
    wait: float,
    limit_type: str,
    limit: float,
) -> ApiError:
    # Round up so a client that obeys the header is never early: to the millisecond when
    # fractions are on, else to whole seconds (at least 1 when there is anything to wait).
    header_seconds: float
    if config.fractional_retry_after:
        header_seconds = math.ceil(wait * 1000) / 1000
        header = f"{header_seconds:.3f}"
    else:
        header_seconds = math.ceil(wait)
        if wait > 0.0:
            header_seconds = max(1, header_seconds)
        header = str(header_seconds)
    state.note_retry_after(identity, header_seconds)
    extra: dict[str, Any] = {
        "retryAfter": round(wait, 3),
        "limitType": limit_type,
        "limit": limit,
        "remaining": 0,
        "resetTime": iso_utc(time.time() + wait),
    }
    if config.hide_rate_limit:
        del extra["limit"]
    return ApiError(
        429,
        "Rate limit exceeded, retry later",
        headers={"Retry-After": header},
        extra=extra,
        flat=True,
    )


# -- control endpoints -------------------------------------------------------------------------


async def _get_stats(request: web.Request) -> web.Response:
    include = request.query.get("executions", "").lower() in ("1", "true", "yes")
    stats = request.app[STATE_KEY].stats(include_executions=include)
    return web.json_response(stats.model_dump(mode="json"))


def _public_config(config: EmulatorConfig) -> dict[str, Any]:
    return config.model_dump(mode="json", exclude={"api_key"})


async def _get_config(request: web.Request) -> web.Response:
    return web.json_response(_public_config(request.app[STATE_KEY].config))


async def _post_config(request: web.Request) -> web.Response:
    try:
        changes = await request.json()
    except ValueError as exc:
        raise ApiError(400, f"The body is not valid JSON: {exc}") from exc
    if not isinstance(changes, dict):
        raise ApiError(400, "The body must be a JSON object of configuration fields")
    try:
        config = request.app[STATE_KEY].configure(**changes)
    except ValidationError as exc:
        raise ApiError(400, f"Invalid configuration: {exc}") from exc
    return web.json_response(_public_config(config))


async def _post_reset(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset()
    return web.json_response({"reset": True})
