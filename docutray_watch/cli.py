"""The `docutray-watch` command line.

Exit codes: 0 success; 1 some documents failed (`process`), or `plugins` lists a plugin that
failed to load; 2 usage error; 69 (EX_UNAVAILABLE) the API could not be reached (`process`,
after --api-wait); 77 (EX_NOPERM) the API refused the key (`process`, `validate`); 78
(EX_CONFIG) the configuration cannot be used — the message names the YAML path; 70
(EX_SOFTWARE) an internal error. Logging is configured here and only here.

The plugins are loaded once per command (`_plugins()`) and handed to the config loader and the
engine; a plugin that fails to load is reported with one line on stderr and left out.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
import structlog

from docutray_watch._version import __version__
from docutray_watch.config import (
    EX_CONFIG,
    Config,
    ConfigError,
    api_key_of,
    config_json_schema,
    load_config,
)
from docutray_watch.log import configure_logging, mask_secrets, register_secret

if TYPE_CHECKING:
    from docutray_watch.plugins import Plugins

log = structlog.get_logger(__name__)

EX_SOFTWARE = 70
EX_TEMPFAIL = 75
EX_BROKEN_PLUGIN = 1  # `plugins` lists a plugin that failed to load
CONFIG_ENV = "DOCUTRAY_WATCH_CONFIG"


def _plugins(*, report: bool = True) -> Plugins:
    """The plugins of this command, loaded once; each one left out is reported on stderr
    (unless `report` is false: `plugins` lists them itself)."""
    from docutray_watch.plugins import load_plugins

    meta = click.get_current_context().find_root().meta
    if "docutray_watch.plugins" not in meta:
        plugins = load_plugins()
        for broken in plugins.broken if report else ():
            click.echo(f"docutray-watch: {broken.line()}", err=True)
        meta["docutray_watch.plugins"] = plugins
    return meta["docutray_watch.plugins"]  # type: ignore[no-any-return]


def _fail_config(error: ConfigError) -> NoReturn:
    for line in error.lines():
        click.echo(f"docutray-watch: config error: {line}", err=True)
    sys.exit(EX_CONFIG)


def _load(path: str | None, *, need_secrets: bool = True, report_held_back: bool = True) -> Config:
    if not path:
        click.echo(
            f"docutray-watch: config error: no config file: pass -c FILE or set ${CONFIG_ENV}",
            err=True,
        )
        sys.exit(EX_CONFIG)
    try:
        config = load_config(
            path, sink_types=_plugins().config_sink_types, need_secrets=need_secrets
        )
    except ConfigError as error:
        _fail_config(error)
    register_secret(api_key_of(config))
    if report_held_back:
        for held in config.held_back:
            click.echo(f"docutray-watch: {held.line()}", err=True)
    return config


def _config_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-c",
        "--config",
        "config_path",
        envvar=CONFIG_ENV,
        type=click.Path(dir_okay=False),
        help=f"YAML configuration file (default: ${CONFIG_ENV}).",
    )(function)


class _LazyGroup(click.Group):
    """A group whose heavy sub-commands are imported only when used (start-up costs CPU)."""

    lazy: dict[str, str] = {
        # The emulator's web server is only needed by `docutray-watch emulator`.
        "emulator": "docutray_watch.emulator.cli:emulator_command",
        # Multi-node mode's commands need the `cluster` extra (procrastinate, psycopg).
        "cluster": "docutray_watch.cluster.cli:cluster_group",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module_name, _, attribute = self.lazy[cmd_name].partition(":")
            command = getattr(importlib.import_module(module_name), attribute)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="docutray-watch")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Minimum log level (default: the config's log.level, else info).",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "console"]),
    default=None,
    help="auto: JSON lines unless stderr is a terminal.",
)
@click.pass_context
def cli(ctx: click.Context, log_level: str | None, log_format: str | None) -> None:
    """Watch folders, run documents through DocuTray steps, deliver the results."""
    ctx.ensure_object(dict)
    ctx.obj["log_level"] = log_level
    ctx.obj["log_format"] = log_format
    configure_logging(log_level or "info", log_format or "auto")


def _configure_from(ctx: click.Context, config: Config) -> None:
    configure_logging(
        ctx.obj.get("log_level") or config.log.level, ctx.obj.get("log_format") or config.log.format
    )


# -- run ---------------------------------------------------------------------------------------


@cli.command()
@_config_option
@click.pass_context
def run(ctx: click.Context, config_path: str | None) -> None:
    """Run the daemon: watch every pipeline's folder until SIGTERM (systemd's ExecStart)."""
    from docutray_watch.daemon import run_daemon

    # The daemon logs the plugins and pipelines left out (plugin_load_failed, pipeline_left_out).
    plugins = _plugins(report=False)
    config = _load(config_path, report_held_back=False)
    _configure_from(ctx, config)
    assert config_path is not None
    sys.exit(
        run_daemon(
            config,
            Path(config_path),
            plugins=plugins,
            log_level=ctx.obj.get("log_level"),
            log_format=ctx.obj.get("log_format"),
        )
    )


# -- process -----------------------------------------------------------------------------------


@cli.command()
@_config_option
@click.option("--dry-run", is_flag=True, help="List what each pipeline would take; submit nothing.")
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar (default: on a terminal)."
)
@click.option(
    "--api-wait",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds to wait for an unreachable API before giving up (exit 69).",
)
@click.pass_context
def process(
    ctx: click.Context,
    config_path: str | None,
    dry_run: bool,
    progress: bool | None,
    api_wait: float,
) -> None:
    """One pass over every pipeline's folder; wait until every document is done.

    Exits 0 when every document was delivered, 1 when some failed or were rejected, 77 when the
    API refuses the key, 69 when it cannot be reached for --api-wait seconds (documents are then
    left where they were).
    """
    from docutray_watch.runner import dry_run_report, process_once

    config = _load(config_path, need_secrets=not dry_run)
    _configure_from(ctx, config)
    if config.cluster is not None:
        # One pass on this machine's own journal would bypass the cluster's once-ever claims
        # and its shared limits: the same file could be taken here and by a node.
        click.echo(
            "docutray-watch: config error: cluster: `process` is for a single node; in a"
            " cluster every node's `docutray-watch run` takes the files (follow them with"
            " `docutray-watch status`)",
            err=True,
        )
        sys.exit(EX_CONFIG)
    if dry_run:
        sys.exit(dry_run_report(config, echo=click.echo, plugin_manager=_plugins().pm))
    show_progress = sys.stderr.isatty() if progress is None else progress
    code = _run_async(
        process_once(
            config,
            progress=show_progress,
            echo=click.echo,
            plugin_manager=_plugins().pm,
            api_wait=api_wait,
        )
    )
    for held in config.held_back:
        click.echo(f"not processed: {held.line()}")
    # A pipeline that could not run leaves its files unprocessed: not a success.
    sys.exit(1 if code == 0 and config.held_back else code)


def _run_async(coro: Any) -> int:
    from docutray_watch.engine import MissingApiKeyError, StateDirError
    from docutray_watch.runner import ApiKeyRefusedError, ApiUnreachableError, WatchFolderError
    from docutray_watch.statelock import AlreadyRunningError

    try:
        return int(asyncio.run(coro))
    except MissingApiKeyError as exc:
        click.echo(f"docutray-watch: config error: api.api_key: {exc}", err=True)
        return EX_CONFIG
    except WatchFolderError as exc:
        click.echo(f"docutray-watch: config error: {exc}", err=True)
        return EX_CONFIG
    except StateDirError as exc:
        click.echo(f"docutray-watch: config error: state_dir: {exc}", err=True)
        return EX_CONFIG
    except AlreadyRunningError as exc:
        click.echo(f"docutray-watch: {exc}", err=True)
        return EX_TEMPFAIL
    except (ApiKeyRefusedError, ApiUnreachableError) as exc:
        click.echo(f"docutray-watch: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


# -- validate ----------------------------------------------------------------------------------


@cli.command()
@_config_option
@click.option("--offline", is_flag=True, help="Only check the file; no sinks, no network.")
@click.pass_context
def validate(ctx: click.Context, config_path: str | None, offline: bool) -> None:
    """Check the configuration, the sinks' health checks and that the API answers."""
    from docutray_watch.runner import validate_online
    from docutray_watch.stoptimeout import config_grace_warning

    config = _load(config_path, need_secrets=not offline)
    _configure_from(ctx, config)
    if config.held_back:
        click.echo(
            f"{config_path}: {len(config.held_back)} pipeline(s) cannot run (see above), "
            f"{len(config.pipelines)} valid"
        )
    else:
        click.echo(f"{config_path}: configuration is valid ({len(config.pipelines)} pipeline(s))")
    assert config_path is not None
    warning = config_grace_warning(config, config_path)
    if warning:
        click.echo(f"docutray-watch: warning: {warning}", err=True)
    code = (
        0
        if offline
        else _run_async(validate_online(config, echo=click.echo, plugin_manager=_plugins().pm))
    )
    # A pipeline that needs a broken plugin's sink type fails validation (the others were
    # checked above); the line naming the plugin was printed when the file was loaded.
    sys.exit(EX_CONFIG if config.held_back else code)


# -- status / retry ----------------------------------------------------------------------------


@cli.command()
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--failures", default=10, show_default=True, help="How many recent failures to show.")
def status(config_path: str | None, as_json: bool, failures: int) -> None:
    """Documents per pipeline and outcome, and the most recent failures with their reasons."""
    config = _load(config_path, need_secrets=False)
    if config.cluster is not None:
        _cluster_status(config_path, config, as_json=as_json, failures=failures)
        return
    from docutray_watch.status import status_report

    report = status_report(config, failures=failures)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    _print_status(report)


def _print_status(report: dict[str, Any], *, oldest: bool = False) -> None:
    """The text of `status` (`oldest`: also each pipeline's oldest unfinished document)."""
    if report["api_paused"]:
        paused = report["api_paused"]
        click.echo(f"API work paused since {paused['since']}: {paused['reasons']}")
    if not report["pipelines"]:
        click.echo("The journal is empty: no document has been seen yet.")
    for name, states in report["pipelines"].items():
        total = sum(states.values())
        parts = ", ".join(f"{state} {count}" for state, count in sorted(states.items()))
        click.echo(f"{name}: {total} document(s): {parts}")
        queue, today = report["queue"].get(name), report["today"].get(name)
        if queue is not None and today is not None:
            click.echo(
                f"  waiting {queue['waiting']}, in flight {queue['in_flight']}; "
                f"today ({today['date']} UTC): done {today['done']}, failed {today['failed']}"
            )
        age = report["oldest_pending_age_s"].get(name)
        if oldest and age is not None:
            from docutray_watch.cluster.exits import node_age

            click.echo(f"  oldest unfinished document: found {node_age(age)}")
        types = report.get("identified_types", {}).get(name)
        if types:
            shown = ", ".join(f"{code} {n}" for code, n in sorted(types.items()))
            click.echo(f"  identified: {shown}")
        superseded = report.get("superseded_results", {}).get(name)
        if superseded:
            click.echo(
                f"  {superseded} delivered result(s) superseded: their file changed before its "
                "final action and was taken again"
            )
    if report["request_rate"]:
        click.echo(_rate_line(report["request_rate"]))
    if report["failures"]:
        click.echo("\nRecent failures:")
        for item in report["failures"]:
            click.echo(f"  [{item['pipeline']}] {item['path']}: {item['stage']}: {item['reason']}")


def _cluster_status(
    config_path: str | None, config: Config, *, as_json: bool, failures: int
) -> None:
    """`status` of a cluster: its nodes, then every node's documents, from PostgreSQL."""
    from docutray_watch.cluster.exits import cluster_errors, node_age

    with cluster_errors(config_path):
        from docutray_watch.cluster.operations import cluster_status_report

        report = cluster_status_report(config, failures=failures)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    cluster = report["cluster"]
    click.echo(
        f"Cluster {cluster['database']} (this node: {cluster['this_node']}): the whole "
        "cluster's documents, from its PostgreSQL journal"
    )
    if not cluster["nodes"]:
        click.echo("No node has joined the cluster yet.")
    for node in cluster["nodes"]:
        click.echo(
            f"  node {node['name']}: {node['state']}, last heartbeat "
            f"{node_age(node['heartbeat_age_s'])}, {node['unfinished_documents']} unfinished "
            "document(s) of its own folders"
        )
    if cluster["shared_unfinished"]:
        click.echo(f"  shared folders: {cluster['shared_unfinished']} unfinished document(s)")
    rate = cluster["rate"]
    if rate and rate["paused_until"]:
        click.echo(f"  every node's API requests paused until {rate['paused_until']} (a 429)")
    _print_status(report, oldest=True)


def _rate_line(rate: dict[str, Any]) -> str:
    """`API request rate: 19.0/s (auto, lowered 3 time(s) by a 429), recorded 4 s ago`."""
    if rate["mode"] == "fixed":
        how = "fixed"
    elif rate["slow_start"]:
        how = "auto, slow start: no 429 yet"
    else:
        how = f"auto, lowered {rate['decreases']} time(s) by a 429"
    if rate.get("max_requests_per_second"):
        how += f", at most {rate['max_requests_per_second']:g}/s"
    age = rate["recorded_age_s"]
    return f"API request rate: {rate['requests_per_second']:g}/s ({how}), recorded {age:.0f} s ago"


@cli.command()
@_config_option
@click.option("--failed", "include_failed", is_flag=True, help="Requeue every failed document.")
@click.option("--force", is_flag=True, help="Also run documents that succeeded again.")
@click.argument("paths", nargs=-1, type=click.Path())
def retry(
    config_path: str | None, include_failed: bool, force: bool, paths: tuple[str, ...]
) -> None:
    """Requeue failed (or, with --force, done) documents; the daemon or `process` runs them.

    Documents left `unrouted` (identified as a type no route takes, `otherwise: keep`) are
    requeued once the configuration has a route for their type; they are not identified again.

    A running daemon takes them up within a second or two; otherwise the next `process` or the
    daemon's next start does. A retried document keeps the results of its successful steps, so
    nothing is paid for twice; only failed steps and undelivered results run again. Exits 1 when
    a PATH matches no finished document or a document cannot be requeued.
    """
    from docutray_watch.runner import retry_documents

    if not include_failed and not paths:
        raise click.UsageError("name documents to retry (PATH…) or pass --failed")
    config = _load(config_path, need_secrets=False)
    if config.cluster is not None:
        _cluster_retry(config_path, config, paths=paths, failed=include_failed, force=force)
        return
    requeued, problems = retry_documents(config, paths=paths, failed=include_failed, force=force)
    for problem in problems:
        click.echo(f"docutray-watch: {problem}", err=True)
    when = (
        ": a running daemon takes them up within a couple of seconds; without one, run "
        "`docutray-watch process` (or start the daemon)"
        if requeued
        else ""
    )
    click.echo(f"{requeued} document(s) requeued{when}")
    if problems:
        sys.exit(1)


def _cluster_retry(
    config_path: str | None, config: Config, *, paths: tuple[str, ...], failed: bool, force: bool
) -> None:
    """`retry` on the cluster's journal: every node sees the requeue."""
    from docutray_watch.cluster.exits import cluster_errors

    with cluster_errors(config_path):
        from docutray_watch.cluster.operations import retry_in_cluster

        result = retry_in_cluster(config, paths=paths, failed=failed, force=force)
    problems = result.problems
    for problem in problems:
        click.echo(f"docutray-watch: {problem}", err=True)
    assert config.cluster is not None
    click.echo(
        f"{result.requeued} document(s) requeued in the cluster's journal"
        + (": the running nodes take them up within a couple of seconds" if result.requeued else "")
    )
    if result.elsewhere:
        click.echo(
            f"{result.elsewhere} of them are files of another node's own folder (not checked "
            "from here): that node takes them up, or rejects one whose file is gone"
        )
    if problems:
        sys.exit(1)


@cli.command()
@_config_option
@click.option(
    "--older-than",
    "days",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Days since a document finished (default: journal.retention_days).",
)
@click.option("--dry-run", is_flag=True, help="Count what would be forgotten; change nothing.")
def prune(config_path: str | None, days: float | None, dry_run: bool) -> None:
    """Forget documents that finished long ago (the engine also does this daily).

    Their steps, stored results and deliveries go, and the duplicate check forgets their content.
    Unfinished documents, and files kept where they were found while they are still there, are
    never forgotten. Safe while the daemon runs.
    """
    from docutray_watch.retention import prune_journal_file

    config = _load(config_path, need_secrets=False)
    days = days if days is not None else config.journal.retention_days
    if days is None:
        raise click.UsageError("pass --older-than DAYS or set journal.retention_days")
    if config.cluster is not None:
        _cluster_prune(config_path, config, days=days, dry_run=dry_run)
        return
    if not config.journal_path.exists():
        click.echo(f"No journal at {config.journal_path} yet: nothing to prune.")
        return
    result = prune_journal_file(config.journal_path, older_than_days=days, dry_run=dry_run)
    before = datetime.fromtimestamp(result.finished_before, UTC).strftime("%Y-%m-%d %H:%M UTC")
    verb = "would forget" if dry_run else "forgot"
    click.echo(
        f"{verb} {result.forgotten} document(s) that finished before {before}; "
        f"{result.kept_in_place} kept file(s) still in their folder are remembered"
    )


def _cluster_prune(config_path: str | None, config: Config, *, days: float, dry_run: bool) -> None:
    """`prune` of the cluster's journal (every node's documents)."""
    from docutray_watch.cluster.exits import cluster_errors

    with cluster_errors(config_path):
        from docutray_watch.cluster.operations import prune_cluster

        result = prune_cluster(config, older_than_days=days, dry_run=dry_run)
    before = datetime.fromtimestamp(result.finished_before, UTC).strftime("%Y-%m-%d %H:%M UTC")
    verb = "would forget" if dry_run else "forgot"
    click.echo(
        f"cluster journal: {verb} {result.forgotten} document(s) that finished before {before}; "
        f"{result.kept_in_place} kept file(s) still in their folder (or on another node's "
        "own folder) are remembered"
    )


# -- show --------------------------------------------------------------------------------------


@cli.command()
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.argument("ref", metavar="PATH|SHA")
def show(config_path: str | None, as_json: bool, ref: str) -> None:
    """One document's whole story: steps, executions, deliveries with receipts and attempts.

    PATH is where the file was found or archived; SHA is its sha256 or its first hex digits (6 at
    least). Every matching document is shown, oldest first (the same content may have been taken
    more than once). Exits 1 when none matches. Safe while the daemon runs.
    """
    from docutray_watch.story import document_stories, render_story

    config = _load(config_path, need_secrets=False)
    stories = document_stories(config, ref)
    if as_json:
        click.echo(json.dumps({"documents": stories}, indent=2, ensure_ascii=False))
    else:
        for number, story in enumerate(stories):
            if number:
                click.echo("")
            for line in render_story(story):
                click.echo(line)
    if not stories:
        click.echo(f"docutray-watch: {ref}: no document with this path or sha256", err=True)
        sys.exit(1)


# -- plugins / schema --------------------------------------------------------------------------


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="Also list the built-in plugins.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(show_all: bool, as_json: bool) -> None:
    """Installed plugins with their versions, hooks, sink and source types.

    Exits 1 when a plugin failed to load (it is listed as broken, with the reason).
    """
    from docutray_watch.plugins import describe_plugins

    entries = describe_plugins(include_builtin=show_all, plugins=_plugins(report=False))
    broken = any(entry["broken"] for entry in entries)
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        sys.exit(EX_BROKEN_PLUGIN if broken else 0)
    if not entries:
        click.echo("No plugins installed (use --all to list the built-in ones).")
    for entry in entries:
        name = entry["name"]
        if entry["distribution"]:
            version = f" {entry['version']}" if entry["version"] else ""
            name += f" ({entry['distribution']}{version})"
        if entry["broken"]:
            click.echo(f"{name}: BROKEN, left out: {entry['error']}")
            continue
        click.echo(name)
        click.echo(f"  hooks: {', '.join(entry['hooks'])}")
        for sink in entry["sink_types"]:
            click.echo(f"  sink type {sink['type']}: {sink['description']}")
        for source in entry.get("source_types", []):
            click.echo(f"  source type {source['type']}: {source['description']}")
    sys.exit(EX_BROKEN_PLUGIN if broken else 0)


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the configuration (for yaml-language-server and editors)."""
    click.echo(json.dumps(config_json_schema(_plugins().config_sink_types), indent=2))


# -- demo / emulator ---------------------------------------------------------------------------


@cli.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for the demo's inbox, results and journal (default: a new temporary folder).",
)
@click.option("--latency", default=0.5, show_default=True, help="Emulated processing time (s).")
@click.pass_context
def demo(ctx: click.Context, directory: str | None, latency: float) -> None:
    """Run a complete pipeline on sample documents against the local emulator (no API key)."""
    from docutray_watch.demo import run_demo

    # Its output is for people, piped or not: log lines as text too, unless asked otherwise.
    configure_logging(ctx.obj.get("log_level") or "warning", ctx.obj.get("log_format") or "console")
    sys.exit(run_demo(Path(directory) if directory else None, latency=latency, echo=click.echo))


def main() -> None:
    """Entry point of the `docutray-watch` console script."""
    from docutray_watch.journal import NewerJournalError

    try:
        cli.main(prog_name="docutray-watch")
    except SystemExit:
        raise
    except NewerJournalError as exc:  # `status`, `retry`, `show`, `prune` open it directly
        click.echo(f"docutray-watch: config error: state_dir: {exc}", err=True)
        sys.exit(EX_CONFIG)
    except Exception as exc:
        log.error("internal_error", error=f"{type(exc).__name__}: {exc}", exc_info=True)
        click.echo(
            mask_secrets(f"docutray-watch: internal error: {type(exc).__name__}: {exc}"), err=True
        )
        sys.exit(EX_SOFTWARE)


if __name__ == "__main__":  # pragma: no cover
    main()
