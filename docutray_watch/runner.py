"""What the one-shot commands do: `process`, `process --dry-run`, `validate`, `status`, `retry`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import pluggy
import structlog

from docutray_watch import intake
from docutray_watch.client import AsyncClient, AuthenticationError, DocuTrayError, NotFoundError
from docutray_watch.config import EX_CONFIG, Config, api_key_of
from docutray_watch.delivery import SinkRunner, describe
from docutray_watch.engine import Engine, MissingApiKeyError
from docutray_watch.inbox import CREATED_NOTE, ensure_inbox, inbox_check
from docutray_watch.journal import InvalidTransition, Journal
from docutray_watch.plugins import collect_sink_types, get_plugin_manager
from docutray_watch.route_checks import check_routes
from docutray_watch.routing import identification_of, release_problem, routing_summary
from docutray_watch.source_dryrun import dry_run_source
from docutray_watch.sources.base import SourceError
from docutray_watch.sources.registry import build_source, collect_source_types
from docutray_watch.status import status_report

__all__ = [
    "EX_NOPERM",
    "EX_UNAVAILABLE",
    "ApiKeyRefusedError",
    "ApiUnreachableError",
    "WatchFolderError",
    "dry_run_report",
    "process_once",
    "retry_document_ids",
    "retry_documents",
    "status_report",
    "validate_online",
]

log = structlog.get_logger(__name__)

Echo = Callable[[str], None]

EX_UNAVAILABLE = 69  # the API could not be reached within --api-wait
EX_NOPERM = 77  # the API refused the API key
KEY_REFUSED = "the DocuTray API refused the API key (401): check api.api_key / DOCUTRAY_API_KEY"
DEFAULT_API_WAIT = 60.0


class ApiKeyRefusedError(Exception):
    """`process` stopped: the API refused the key (exit 77); no document was failed for it."""

    exit_code = EX_NOPERM


class ApiUnreachableError(Exception):
    """`process` gave up: the API could not be reached for `--api-wait` seconds (exit 69)."""

    exit_code = EX_UNAVAILABLE


# -- process -------------------------------------------------------------------------------------


async def process_once(
    config: Config,
    *,
    progress: bool = False,
    echo: Echo = print,
    plugin_manager: pluggy.PluginManager | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    api_wait: float = DEFAULT_API_WAIT,
) -> int:
    """Take every document waiting in every inbox, wait until all are done; 0 or 1 (failures).

    Raises `ApiKeyRefusedError` at the first 401 and `ApiUnreachableError` when the API cannot be
    reached for `api_wait` seconds; either way every document stays where it was (unfinished in
    the journal, its file in the inbox) and the next run takes it up.
    """
    engine = Engine(
        config, plugin_manager=plugin_manager or get_plugin_manager(), transport=transport
    )
    await engine.start()
    try:
        await _create_missing_inboxes(config, echo)
        await engine.scan()
        done = asyncio.ensure_future(
            _wait_with_progress(engine) if progress else engine.wait_idle()
        )
        try:
            gave_up = await _until_done_or_api_gone(engine, done, api_wait, config)
        finally:
            done.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await done
        if gave_up is not None:
            raise gave_up
        unfinished = await _unfinished(engine)
        await engine.record_request_rate()  # what was learned, for `status`
    finally:
        await engine.stop(grace=0)
    summary = engine.summary
    total = sum(summary.outcomes.values())
    parts = ", ".join(f"{name} {count}" for name, count in sorted(summary.outcomes.items()))
    echo(f"processed {total} document(s){': ' + parts if parts else ''}")
    if summary.ignored:
        echo(f"ignored {len(summary.ignored)} file(s) (see `process --dry-run` for the rules)")
    for pipeline, path, reason in list(summary.failures)[:20]:
        echo(f"  failed [{pipeline}] {path}: {reason}")
    if summary.failed > 20:  # the deque keeps only the latest failures; the counter has them all
        echo(f"  … and {summary.failed - 20} more (see `docutray-watch status`)")
    if unfinished is None:
        echo("cannot read the journal to check that every document was finished (see the log)")
    elif unfinished:
        echo(
            f"{unfinished} document(s) could not be finished (see the log, e.g. a journal that "
            "cannot be written); the next run takes them up where they stopped"
        )
    unrouted = summary.outcomes["unrouted"]  # identified as a type no route takes: kept
    if unrouted:
        echo(
            f"{unrouted} document(s) unrouted: no route for their type (`otherwise: keep`); "
            "add a route, then `docutray-watch retry --failed`"
        )
    return 1 if summary.failed or unrouted or unfinished != 0 else 0


async def _until_done_or_api_gone(
    engine: Engine, done: asyncio.Future[None], api_wait: float, config: Config
) -> Exception | None:
    """Wait for `done`, unless the API refuses the key or stays unreachable for `api_wait` s."""
    gate = engine.api_gate
    while not done.done():
        if gate.credentials is not None:
            return ApiKeyRefusedError(KEY_REFUSED)
        waits = []
        if gate.unreachable is not None:
            left = gate.unreachable.since + api_wait - time.monotonic()
            if left <= 0:
                return ApiUnreachableError(
                    f"the DocuTray API at {config.api.resolved_base_url()} could not be reached "
                    f"for {api_wait:g} s (see --api-wait); every document was left where it was"
                )
            waits.append(left)
        # A pipeline whose step the API refuses (403/404) is waited for as long, then given up.
        for name, pause in sorted(gate.pipelines.items()):
            left = pause.since + api_wait - time.monotonic()
            if left <= 0:
                return ApiUnreachableError(
                    f"pipeline {name}: {pause.reason}, still after {api_wait:g} s (see "
                    "--api-wait); its documents were left where they were"
                )
            waits.append(left)
        changed = asyncio.ensure_future(gate.wait_changed(min(waits) if waits else None))
        await asyncio.wait({done, changed}, return_when=asyncio.FIRST_COMPLETED)
        changed.cancel()
    done.result()
    return None


class WatchFolderError(Exception):
    """A watched folder that cannot be created; the message names its YAML path."""


async def _create_missing_inboxes(config: Config, echo: Echo) -> None:
    """Create missing watched folders, naming each: a mistyped path must not pass in silence."""
    for index, pipeline in enumerate(config.pipelines):
        if pipeline.folder_watch is None:
            continue  # its source is not a folder
        root = Path(pipeline.folder.path)
        try:
            created = await asyncio.to_thread(ensure_inbox, root)
        except OSError as exc:
            raise WatchFolderError(
                f"pipelines[{index}].watch.path: cannot create {root}: {exc.strerror or exc}"
            ) from None
        if created:
            log.info("watch_folder_created", pipeline=pipeline.name, path=str(root))
            echo(f"pipeline {pipeline.name}: the folder {root} did not exist; created it (empty)")


async def _unfinished(engine: Engine) -> int | None:
    """Documents of the configured pipelines the pass left unfinished (an internal failure);
    None when the journal cannot say."""
    try:
        documents = await engine.journal.unfinished_documents()
    except Exception:  # noqa: BLE001 - the journal is what failed; the log already says so
        return None
    return sum(1 for doc in documents if doc.pipeline in engine.pipelines)


async def _wait_with_progress(engine: Engine) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]documents"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("in flight {task.fields[in_flight]}"),
        TimeElapsedColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task("documents", total=None, in_flight=0)
        waiter = asyncio.ensure_future(engine.wait_idle())
        while not waiter.done():
            done = sum(engine.summary.outcomes.values())
            bar.update(
                task, completed=done, total=done + engine.outstanding, in_flight=engine.in_flight
            )
            await asyncio.wait({waiter}, timeout=0.2)
        done = sum(engine.summary.outcomes.values())
        bar.update(task, completed=done, total=done, in_flight=0)


# -- dry run -------------------------------------------------------------------------------------


def dry_run_report(
    config: Config, *, echo: Echo = print, plugin_manager: pluggy.PluginManager | None = None
) -> int:
    """List, per pipeline, every file it would take and why each other file is left alone."""
    journal = Journal(config.journal_path).open() if config.journal_path.exists() else None
    try:
        for pipeline in config.pipelines:
            if pipeline.folder_watch is None:
                pm = plugin_manager or get_plugin_manager()
                asyncio.run(dry_run_source(pipeline, echo, pm))
                continue
            root = Path(os.path.abspath(pipeline.folder.path))
            echo(f"pipeline {pipeline.name} ({root}):")
            if pipeline.identify is not None:
                echo(f"  routing: {routing_summary(pipeline)}")
            if not root.is_dir():
                echo(f"  the folder {root} does not exist; {CREATED_NOTE}")
                continue
            known = journal.latest_by_path(pipeline.name) if journal else {}
            tally = {"take": 0, "reject": 0, "ignore": 0}
            for candidate, st in intake.scan_folder(root, recursive=pipeline.folder.recursive):
                verdict = _dry_run_verdict(pipeline, candidate, st, known, journal)
                if verdict is None:
                    tally["take"] += 1
                    echo(f"  take    {candidate.relative_path} ({st.st_size} bytes)")
                else:
                    verb, reason = verdict
                    tally[verb] += 1
                    echo(f"  {verb:<7} {candidate.relative_path}: {reason}")
            echo(
                f"  → would take {tally['take']}, reject {tally['reject']} "
                f"(on_failure: {_failure_action(pipeline)}), ignore {tally['ignore']}"
            )
    finally:
        if journal is not None:
            journal.close()
    return 0


def _failure_action(pipeline: Any) -> str:
    action = pipeline.on_failure
    return f"move to {action.target}" if action.action == "move" else str(action.action)


def _dry_run_verdict(
    pipeline: Any,
    candidate: intake.Candidate,
    st: os.stat_result,
    known: dict[str, Any],
    journal: Journal | None,
) -> tuple[str, str] | None:
    """None when the file would be taken, else ("ignore" or "reject", why): a rejected file is
    taken, then ends as a failure (on_failure applies); an ignored one stays where it is."""
    rule = intake.rule_for_name(pipeline, candidate.relative_path)
    if rule is not None:
        return "ignore", rule
    rule = intake.rule_for_kind(st.st_mode)
    if rule is not None:
        return "ignore", rule
    previous = known.get(str(candidate.path))
    if previous is not None and not previous.finished:
        return "ignore", f"already in progress ({previous.state})"
    if previous is not None and (previous.size, previous.mtime_ns) == (st.st_size, st.st_mtime_ns):
        return "ignore", f"already processed ({previous.outcome or previous.state})"
    if pipeline.folder.ready_marker and not os.path.lexists(
        str(candidate.path) + pipeline.folder.ready_marker
    ):
        return (
            "ignore",
            f"waiting for its ready marker {candidate.path.name}{pipeline.folder.ready_marker}",
        )
    try:
        facts = intake.inspect_file(candidate.path)
    except OSError as exc:
        return "reject", f"cannot read the file: {exc.strerror or describe(exc)}"
    except intake.FileChangedError:
        return "ignore", "still being written"
    rejection = intake.rejection_for(facts)
    if rejection is not None:
        return "reject", rejection
    if journal is not None and pipeline.duplicates == "skip":
        twin = journal.find_done_by_sha(pipeline.name, facts.sha256, exclude=-1)
        if twin is not None:
            return "ignore", f"duplicate of {twin.path} (same content)"
    return None


# -- validate ------------------------------------------------------------------------------------


async def validate_online(
    config: Config, *, echo: Echo = print, plugin_manager: pluggy.PluginManager | None = None
) -> int:
    """Run every sink's health check and check that the API answers and accepts the key."""
    ok = True
    pm = plugin_manager or get_plugin_manager()
    for pipeline in config.pipelines:
        if pipeline.folder_watch is None:
            ok = await _check_source(pipeline, pm, echo) and ok
            continue
        problem, note = await asyncio.to_thread(inbox_check, Path(pipeline.folder.path))
        if problem or note:
            echo(f"[{pipeline.name}] watch.path {pipeline.folder.path}: {problem or note}")
        ok = ok and problem is None
    sink_types = collect_sink_types(pm)
    for pipeline in config.pipelines:
        for sink_config in pipeline.sinks:
            assert sink_config.id is not None
            sink_type = sink_types[sink_config.type]
            sink = sink_type.sink_class(sink_config, pipeline=pipeline.name, sink_id=sink_config.id)
            runner = SinkRunner(sink, sink_config, pipeline=pipeline.name, plugin=sink_type.plugin)
            try:
                await runner.open()
                note = await runner.check()
            except Exception as exc:  # noqa: BLE001 - reported, then the next sink
                echo(f"[{pipeline.name}] sink {sink_config.id}: FAILED: {runner.explain(exc)}")
                ok = False
            else:
                echo(f"[{pipeline.name}] sink {sink_config.id}: ok{f' ({note})' if note else ''}")
            finally:
                with contextlib.suppress(Exception):
                    await runner.close()
    key = api_key_of(config)
    if not key:
        raise MissingApiKeyError("no API key to check the API with")
    base_url = config.api.resolved_base_url()
    async with AsyncClient(
        api_key=key, base_url=base_url, max_retries=1, timeout=config.api.timeout.as_httpx()
    ) as client:
        try:
            await client.steps.get_status("docutray-watch-validate-probe")
        except NotFoundError:
            echo(f"API {base_url}: reachable, key accepted")
        except AuthenticationError:
            echo(f"API {base_url}: {KEY_REFUSED}")
            return EX_NOPERM
        except DocuTrayError as exc:
            echo(f"API {base_url}: FAILED: {describe(exc)}")
            return EX_CONFIG
        else:
            echo(f"API {base_url}: reachable")
        try:
            ok = await check_routes(client, config, echo) and ok
        except DocuTrayError as exc:
            echo(f"routes: FAILED: cannot list the account's document types: {describe(exc)}")
            ok = False
    return 0 if ok else EX_CONFIG


async def _check_source(pipeline: Any, pm: pluggy.PluginManager, echo: Echo) -> bool:
    """`validate` of a source that is not a folder: one line per thing it checked."""
    source = build_source(pipeline.name, pipeline.source_config(), collect_source_types(pm)[0])
    try:
        lines = await source.check()
    except Exception as exc:  # noqa: BLE001 - reported, then the rest
        said = str(exc) if isinstance(exc, SourceError) else describe(exc)
        echo(f"[{pipeline.name}] source: FAILED: {said}")
        return False
    finally:
        await source.stop()
    for line in lines:
        echo(f"[{pipeline.name}] source: {line}")
    return True


# -- status / retry ------------------------------------------------------------------------------


def retry_documents(
    config: Config, *, paths: Iterable[str], failed: bool, force: bool
) -> tuple[int, list[str]]:
    """Requeue documents in the journal; returns (how many, problems to report)."""
    problems: list[str] = []
    if not config.journal_path.exists():
        # Opening would create it, owned by whoever runs `retry` (root, say), not the daemon.
        return 0, [f"no journal at {config.journal_path}: no document has been seen yet"]
    with Journal(config.journal_path) as journal:
        chosen: dict[int, Any] = {}
        if failed:
            for doc in journal.documents_in("failed", "rejected", "unrouted"):
                # An unrouted document still without a route stays put (no problem: --failed
                # takes what can run).
                if doc.state != "unrouted" or _unrouted_problem(config, doc) is None:
                    chosen[doc.id] = doc
        for raw in paths:
            wanted = os.path.abspath(raw)
            matches = [
                d
                for d in journal.documents_in("failed", "rejected", "archived", "unrouted")
                if wanted in (d.path, d.archived_to)
            ]
            if not matches:
                problems.append(f"{raw}: no finished document with this path in the journal")
                continue
            latest = max(matches, key=lambda d: d.id)
            problem = _unrouted_problem(config, latest) if latest.state == "unrouted" else None
            if problem is not None:
                problems.append(f"{raw}: {problem}")
                continue
            chosen[latest.id] = latest
        requeued = _requeue(journal, chosen.values(), force=force, problems=problems)
    return requeued, problems


def retry_document_ids(config: Config, ids: Iterable[int]) -> tuple[int, list[str]]:
    """`retry` by journal id (the status page's retry button): the same requeue as
    `docutray-watch retry PATH`, for failed or rejected documents only."""
    if not config.journal_path.exists():
        return 0, [f"no journal at {config.journal_path}: no document has been seen yet"]
    problems: list[str] = []
    with Journal(config.journal_path) as journal:
        chosen = []
        for doc_id in ids:
            try:
                doc = journal.document(doc_id)
            except KeyError:
                problems.append(f"document {doc_id}: not in the journal")
                continue
            if doc.state not in ("failed", "rejected", "unrouted"):
                problems.append(f"document {doc_id}: not failed ({doc.state})")
                continue
            problem = _unrouted_problem(config, doc) if doc.state == "unrouted" else None
            if problem is not None:
                problems.append(f"document {doc_id}: {problem}")
                continue
            chosen.append(doc)
        return _requeue(journal, chosen, force=False, problems=problems), problems


def _unrouted_problem(config: Config, doc: Any) -> str | None:
    """Why an `unrouted` document cannot be released yet (None: a route now takes its type)."""
    try:
        pipeline = config.pipeline(doc.pipeline)
    except KeyError:
        return f"its pipeline {doc.pipeline!r} is not in the configuration"
    return release_problem(pipeline, identification_of(doc.identification))


def _requeue(journal: Journal, docs: Iterable[Any], *, force: bool, problems: list[str]) -> int:
    """Requeue each document from where its file is now; returns how many were requeued."""
    requeued = 0
    for doc in docs:
        location = (
            doc.archived_to if doc.archived_to and os.path.exists(doc.archived_to) else doc.path
        )
        if not os.path.exists(location):
            problems.append(f"{doc.path}: the file is gone (was it deleted?)")
            continue
        try:
            journal.requeue(doc.id, force=force)
        except InvalidTransition as exc:
            problems.append(f"{doc.path}: {exc}")
            continue
        if location != doc.path:
            journal.set_path(doc.id, location)
        requeued += 1
    return requeued
