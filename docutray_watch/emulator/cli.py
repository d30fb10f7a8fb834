"""``docutray-watch emulator``: serve the DocuTray API emulator until SIGINT or SIGTERM."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any, Literal

import click
from pydantic import ValidationError

from docutray_watch.emulator._limits import MAX_FILE_SIZE
from docutray_watch.emulator.config import DEFAULT_API_KEY, EmulatorConfig
from docutray_watch.emulator.server import EmulatorServer

_RATE = click.FloatRange(0.0, 1.0)
_SECONDS = click.FloatRange(min=0.0)


@click.command(name="emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8765,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0 picks a free one).",
)
@click.option("--api-key", default=DEFAULT_API_KEY, show_default=True, help="Bearer key to accept.")
@click.option(
    "--step",
    "steps",
    multiple=True,
    metavar="STEP_ID",
    help="A known step id (repeatable); without any, every step id is accepted.",
)
@click.option(
    "--latency",
    default=0.2,
    show_default=True,
    type=_SECONDS,
    help="Seconds from submission to result.",
)
@click.option(
    "--latency-jitter",
    default=0.0,
    show_default=True,
    type=_RATE,
    help="Uniform jitter as a fraction of the latency.",
)
@click.option(
    "--latency-per-mb",
    default=0.0,
    show_default=True,
    type=_SECONDS,
    help="Extra seconds of latency per MiB.",
)
@click.option(
    "--error-rate",
    default=0.0,
    show_default=True,
    type=_RATE,
    help="Share of executions that end in ERROR.",
)
@click.option(
    "--server-error-rate",
    default=0.0,
    show_default=True,
    type=_RATE,
    help="Share of API requests answered 500/502/503/504.",
)
@click.option(
    "--server-error-status",
    "server_error_statuses",
    multiple=True,
    type=click.IntRange(500, 599),
    metavar="STATUS",
    help="A status injected server errors may use (repeatable; default 500, 502, 503, 504).",
)
@click.option(
    "--rate-limit-rate",
    default=0.0,
    show_default=True,
    type=_RATE,
    help="Share of API requests answered 429.",
)
@click.option(
    "--retry-after",
    default=1.0,
    show_default=True,
    type=_SECONDS,
    help="Seconds announced by injected 429 answers.",
)
@click.option(
    "--hide-rate-limit",
    is_flag=True,
    help="Leave `limit` out of 429 bodies (an API that does not say its rate).",
)
@click.option(
    "--fractional-retry-after",
    is_flag=True,
    help="Send Retry-After in fractions of a second instead of whole seconds.",
)
@click.option(
    "--drop-rate",
    default=0.0,
    show_default=True,
    type=_RATE,
    help="Share of API requests dropped without an answer.",
)
@click.option(
    "--drop-after-accept-rate",
    default=0.0,
    show_default=True,
    type=_RATE,
    help="Share of submissions that start an execution, then drop the connection.",
)
@click.option(
    "--rate-limit-rps",
    default=None,
    type=click.FloatRange(min=0.0, min_open=True),
    help="Token-bucket limit on API requests per second.",
)
@click.option(
    "--max-file-size",
    default=MAX_FILE_SIZE,
    show_default=True,
    type=click.IntRange(min=1),
    help="Largest accepted document, in bytes.",
)
@click.option("--seed", default=None, type=int, help="Seed of the fault dice.")
@click.option(
    "--document-type",
    "document_types",
    multiple=True,
    metavar="CODE=NAME",
    callback=lambda ctx, param, value: _pairs(param, value),
    help="A document type of the account (repeatable); replaces the default catalogue.",
)
@click.option(
    "--identify-type",
    "identify_types",
    multiple=True,
    metavar="CONTENT_TYPE=CODE",
    callback=lambda ctx, param, value: _pairs(param, value),
    help="The type identification answers for a content type (repeatable); replaces the "
    "default rules.",
)
@click.option(
    "--identify-confidence",
    default=0.9,
    show_default=True,
    type=_RATE,
    help="Confidence of identified types, without a CONFIDENCE marker.",
)
@click.option(
    "--identify-id-field",
    default="identification_id",
    show_default=True,
    type=click.Choice(["identification_id", "id"]),
    help="Name of the id in identification answers.",
)
def emulator_command(
    host: str,
    port: int,
    api_key: str,
    steps: tuple[str, ...],
    latency: float,
    latency_jitter: float,
    latency_per_mb: float,
    error_rate: float,
    server_error_rate: float,
    server_error_statuses: tuple[int, ...],
    rate_limit_rate: float,
    retry_after: float,
    hide_rate_limit: bool,
    fractional_retry_after: bool,
    drop_rate: float,
    drop_after_accept_rate: float,
    rate_limit_rps: float | None,
    max_file_size: int,
    seed: int | None,
    document_types: list[tuple[str, str]],
    identify_types: list[tuple[str, str]],
    identify_confidence: float,
    identify_id_field: Literal["identification_id", "id"],
) -> None:
    """Serve a local emulator of the DocuTray API (for tests, demos and benchmarks)."""
    defaults = EmulatorConfig()
    try:
        config = _build_config(
            api_key=api_key,
            server_error_statuses=server_error_statuses or defaults.server_error_statuses,
            step_ids=frozenset(steps) if steps else None,
            latency=latency,
            latency_jitter=latency_jitter,
            latency_per_mb=latency_per_mb,
            error_rate=error_rate,
            server_error_rate=server_error_rate,
            rate_limit_rate=rate_limit_rate,
            retry_after=retry_after,
            hide_rate_limit=hide_rate_limit,
            fractional_retry_after=fractional_retry_after,
            drop_rate=drop_rate,
            drop_after_accept_rate=drop_after_accept_rate,
            rate_limit_rps=rate_limit_rps,
            max_file_size=max_file_size,
            seed=seed,
            document_types=(
                [{"code": code, "name": name} for code, name in document_types]
                if document_types
                else defaults.document_types
            ),
            identify_by_content_type=(
                dict(identify_types) if identify_types else defaults.identify_by_content_type
            ),
            identify_confidence=identify_confidence,
            identify_id_field=identify_id_field,
        )
    except ValidationError as exc:
        raise click.UsageError(str(exc)) from exc
    server = EmulatorServer(config, host=host, port=port)
    try:
        server.start()
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from exc
    try:
        click.echo(f"DocuTray API emulator at {server.base_url} (API key: {api_key})")
        _wait_for_signal()
    finally:
        server.stop()


def _build_config(**fields: Any) -> EmulatorConfig:
    # model_validate takes the options' plain lists and dicts (document types as mappings)
    return EmulatorConfig.model_validate(fields)


def _pairs(param: click.Parameter, values: tuple[str, ...]) -> list[tuple[str, str]]:
    """``KEY=VALUE`` options as pairs."""
    pairs = []
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key or not rest:
            raise click.BadParameter(f"expected KEY=VALUE, got {value!r}", param=param)
        pairs.append((key, rest))
    return pairs


def _wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM arrives."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        # A bounded wait keeps the main thread responsive to signals on every platform.
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
