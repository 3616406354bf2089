"""The Grafana dashboard only queries metrics that llmserve.runtime.metrics defines, with their
labels, and every panel uses the dashboard's datasource variable."""

from __future__ import annotations

import json
import re

from llmserve.runtime.metrics import ServiceMetrics

from .conftest import REPO

DASHBOARD = REPO / "deploy" / "grafana" / "llmserve-dashboard.json"


def _defined() -> dict[str, set[str]]:
    """Exported sample name -> its label names (histograms add le)."""
    metrics = ServiceMetrics.create("test")
    out: dict[str, set[str]] = {}
    for collector in (getattr(metrics, field) for field in metrics.__dataclass_fields__ if field not in ("registry", "service")):
        labels = set(collector._labelnames)  # prometheus_client keeps label names here (no public getter)
        name = collector._name
        kind = collector._type
        if kind == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                out[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
        elif kind == "counter":
            out[name + "_total"] = labels
        else:
            out[name] = labels
    return out


def _targets() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_dashboard_queries_defined_metrics_and_labels() -> None:
    defined = _defined()
    exprs = _targets()
    assert len(exprs) >= 10
    used = set()
    for expr in exprs:
        names = set(re.findall(r"\bllmserve_[a-z0-9_]+\b", expr))
        assert names, expr
        for name in names:
            assert name in defined, f"{name} is not a metric of llmserve.runtime.metrics"
            used.add(name)
        grouping = {label.strip() for group in re.findall(r"by \(([^)]*)\)", expr) for label in group.split(",")}
        allowed = set().union(*(defined[n] for n in names))
        assert grouping <= allowed, f"{expr}: labels {grouping - allowed} are not on {names}"
    # Every family the brief names is on the dashboard.
    for family in ("ttft_seconds", "tpot_seconds", "e2e_latency_seconds", "slo_attained_total", "slo_total", "queue_length",
                   "running_batch_size", "tokens_per_step", "kv_blocks_used", "preemptions_total", "step_seconds",
                   "checkpoint_bytes_total", "restores_total", "expired_leases_total"):
        assert any(name.startswith(f"llmserve_{family}") for name in used), family


def test_panels_use_the_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert [v["name"] for v in dashboard["templating"]["list"] if v["type"] == "datasource"] == ["datasource"]
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
