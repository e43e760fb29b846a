"""The alert rules load and pass their unit tests in promtool, the PrometheusRule carries the
same rules, every alert links its runbook, and the rules and the Grafana dashboard query only
metrics the services export (the metrics contract of issue #13) or Prometheus' own `up`."""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from meshkit import metrics
from tests.k8s.manifests import OBSERVABILITY, ROOT

RULES = OBSERVABILITY / "alert-rules.yaml"
DASHBOARD = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
OPERATIONS = ROOT / "docs" / "operations.md"
ALERTS = {
    "ContextmeshDeadLetters",
    "ContextmeshConsumerLagGrowing",
    "ContextmeshJobsFailing",
    "ContextmeshJobStuck",
    "ContextmeshGithubBudgetLow",
    "ContextmeshTrainingFailing",
    "ContextmeshServiceDown",
}


# The metrics the services export, read from where they are defined. Histograms are queried
# through their _bucket, _sum and _count series.
def _exported() -> dict[str, str]:
    """Every metric meshkit.metrics defines: the name a scrape shows -> its type."""
    found = {}
    for attribute in metrics.__all__:
        metric = getattr(metrics, attribute)
        if isinstance(metric, MetricWrapperBase):
            suffix = "_total" if metric._type == "counter" else ""
            found[metric._name + suffix] = metric._type
    return found


EXPORTED_METRICS = _exported()
PROMETHEUS_OWN = {"up"}
QUERYABLE = PROMETHEUS_OWN | {
    name + suffix
    for name, kind in EXPORTED_METRICS.items()
    for suffix in (("_bucket", "_sum", "_count") if kind == "histogram" else ("",))
}

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPINGS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$:])[A-Za-z_:][\w:]*(?![\w:]|\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    keywords, label names, durations or strings."""
    expr = _STRINGS.sub('""', expr)
    expr = _MATCHERS.sub(" ", expr)
    expr = _RANGES.sub(" ", expr)
    expr = _GROUPINGS.sub(" ", expr)
    return {name for name in _IDENTIFIER.findall(expr) if name.lower() not in _KEYWORDS}


def _promtool(*args: str | pathlib.Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool not found: install Debian's prometheus package"
    return subprocess.run(
        [binary, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=OBSERVABILITY,
    )


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _dashboard_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _dashboard_panels(panel.get("panels", []))


def _dashboard_queries() -> Iterator[tuple[str, str]]:
    for panel in _dashboard_panels(DASHBOARD["panels"]):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def _heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors for a document's headings."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_promtool_accepts_the_rules() -> None:
    result = _promtool("check", "rules", RULES.name)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_the_rules_pass_their_promtool_unit_tests() -> None:
    result = _promtool("test", "rules", "alert-rules.test.yaml")

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_unit_tests_exercise_every_alert() -> None:
    tests = yaml.safe_load((OBSERVABILITY / "alert-rules.test.yaml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }

    assert fired == ALERTS


def test_the_plain_prometheus_config_is_valid(tmp_path: pathlib.Path) -> None:
    # Debian's Prometheus is built without Kubernetes discovery: check the rest of the config
    # with the discovery swapped for a static target.
    config = yaml.safe_load((OBSERVABILITY / "prometheus.yaml").read_text())
    for job in config["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs")
        job["static_configs"] = [{"targets": ["127.0.0.1:9464"]}]
    (tmp_path / "prometheus.yaml").write_text(yaml.safe_dump(config))
    shutil.copy(RULES, tmp_path / RULES.name)

    result = _promtool("check", "config", tmp_path / "prometheus.yaml")

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_are_the_seven_of_the_contract() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = {rule["alert"]: rule for rule in _rules()}

    assert set(rules) == ALERTS
    assert all("interval" not in group for group in groups)
    dead_letters = rules["ContextmeshDeadLetters"]
    assert dead_letters["expr"] == (
        'max by (stream) (contextmesh_stream_messages{stream="DEADLETTER"}) > 0'
    )
    assert "for" not in dead_letters
    assert all("for" in rule for name, rule in rules.items() if name != "ContextmeshDeadLetters")


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_every_alert_explains_itself_and_links_its_runbook(name: str) -> None:
    rule = next(rule for rule in _rules() if rule["alert"] == name)
    annotations = rule["annotations"]

    assert annotations["summary"] and annotations["description"]
    assert rule["labels"]["severity"] in ("warning", "critical")
    path, _, anchor = annotations["runbook_url"].partition("#")
    assert path == "docs/operations.md"
    assert anchor == name.lower()
    assert anchor in _heading_anchors(OPERATIONS.read_text())


def test_the_prometheus_rule_is_fresh_and_carries_the_same_groups() -> None:
    result = subprocess.run(
        [sys.executable, ROOT / "tools" / "gen_prometheus_rule.py", "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    rule = yaml.safe_load((OBSERVABILITY / "prometheus-rule.yaml").read_text())

    assert result.returncode == 0, result.stderr
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_metric_names_finds_selectors_and_nothing_else() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, method) (rate(contextmesh_rpc_duration_seconds_bucket"
        '{code!="OK", method=~"a|b"}[$__rate_interval]))) / on (method) group_left '
        "sum without (instance) (foo_total offset 5m) and bool up > 4 * 3600"
    )

    assert metric_names(expr) == {"contextmesh_rpc_duration_seconds_bucket", "foo_total", "up"}


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_rules_query_only_exported_metrics(name: str) -> None:
    expr = next(rule["expr"] for rule in _rules() if rule["alert"] == name)
    names = metric_names(expr)

    assert names, expr
    assert names <= QUERYABLE, names - QUERYABLE


def test_the_dashboard_queries_only_exported_metrics() -> None:
    unknown = {
        (title, name)
        for title, expr in _dashboard_queries()
        for name in metric_names(expr)
        if name not in QUERYABLE
    }

    assert not unknown


def test_the_dashboard_shows_every_exported_metric() -> None:
    shown = {name for _, expr in _dashboard_queries() for name in metric_names(expr)}
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in shown}

    assert set(EXPORTED_METRICS) <= families, set(EXPORTED_METRICS) - families


def test_the_dashboard_asks_for_its_prometheus_data_source() -> None:
    (variable,) = DASHBOARD["templating"]["list"]
    data_source = {"type": "prometheus", "uid": "${datasource}"}

    assert DASHBOARD["schemaVersion"] >= 39
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    for panel in _dashboard_panels(DASHBOARD["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == data_source, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(t["datasource"] == data_source for t in panel["targets"]), panel["title"]


def test_the_dashboard_panels_have_unique_ids_and_fit_the_grid() -> None:
    panels = list(_dashboard_panels(DASHBOARD["panels"]))
    cells: set[tuple[int, int]] = set()

    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        covered = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
