"""deploy/: the Grafana dashboard and the Prometheus alert rules name only metrics (and labels)
that docutray_watch/metrics.py exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from docutray_watch.metrics import API_STATES, Metrics

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "docutray-watch.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"

_NAME = re.compile(r"\b((?:docutray_watch|process)_[a-z0-9_]+)\b")
_SELECTOR = re.compile(r"\b((?:docutray_watch|process)_[a-z0-9_]+)\{([^}]*)\}")
TARGET_LABELS = {"instance", "job", "le"}


def exported() -> dict[str, set[str]]:
    """Every sample name the daemon's registry can export, with its label names."""
    metrics = Metrics()
    names: dict[str, set[str]] = {}
    # The names the registry reserves for each collector (counters with _total, histograms with
    # _bucket/_sum/_count), which is what a scrape can show.
    for collector, registered in metrics.registry._collector_to_names.items():
        labels = set(getattr(collector, "_labelnames", ()))
        for name in registered:
            names[name] = labels
    # Collectors that reserve no names (the process collector): what a scrape shows now.
    for line in metrics.render().decode().splitlines():
        if line and not line.startswith("#"):
            names.setdefault(re.split(r"[{ ]", line, maxsplit=1)[0], set())
    return names


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"]]
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def check(expr: str, names: dict[str, set[str]]) -> list[str]:
    problems = [f"{n} (in {expr!r})" for n in _NAME.findall(expr) if n not in names]
    for name, matchers in _SELECTOR.findall(expr):
        for label in re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)", matchers):
            if name in names and label not in names[name] | TARGET_LABELS:
                problems.append(f"{name} has no label {label}")
    return problems


def test_every_metric_the_dashboard_and_the_alerts_name_exists() -> None:
    """Each metric (and label) in a dashboard query or an alert expression is exported."""
    names = exported()
    assert "docutray_watch_documents_total" in names  # the registry is read as Prometheus does
    exprs = [*dashboard_exprs(), *(rule["expr"] for rule in alert_rules())]
    problems = [problem for expr in exprs for problem in check(expr, names)]
    assert problems == []
    # The check does catch a misspelt metric or label.
    assert check('docutray_watch_document_total{outcome="failed"}', names)
    assert check('docutray_watch_documents_total{sink="x"}', names)
    used = {n for expr in exprs for n in _NAME.findall(expr)}
    assert len(used) >= 12


def test_the_alerts_cover_what_operators_asked_for() -> None:
    """Key refused, a 429 pause over 5 minutes, an old waiting document, failures, sink down;
    each with a severity and a summary."""
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert {
        "DocutrayWatchApiKeyRefused",
        "DocutrayWatchApiPaused",
        "DocutrayWatchOldestWaitingDocument",
        "DocutrayWatchFailures",
        "DocutrayWatchSinkDown",
    } <= set(rules)
    assert 'state="key_refused"' in rules["DocutrayWatchApiKeyRefused"]["expr"]
    assert 'state="paused"' in rules["DocutrayWatchApiPaused"]["expr"]
    assert rules["DocutrayWatchApiPaused"]["for"] == "5m"
    for rule in rules.values():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
    for state in re.findall(r'state="([a-z_]+)"', ALERTS.read_text()):
        assert state in API_STATES


def test_the_dashboard_imports_with_a_datasource_input() -> None:
    """The dashboard asks for its Prometheus data source on import (no hard-wired uid)."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
