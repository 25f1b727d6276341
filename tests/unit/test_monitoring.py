"""The monitoring files ops load: the alert and recording rules pass `promtool check
rules`, their unit tests fire each alert on the series that should fire it, and the
dashboard only queries series ChatApp or Ray Serve export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from chatapp.observability.metrics import (
    AuthMetrics,
    HttpMetrics,
    PrometheusInstruments,
    ProviderMetrics,
    ShardMetrics,
    TurnMetrics,
)

MONITORING = Path(__file__).resolve().parents[2] / "cluster/monitoring"


def promtool(*args: str) -> str:
    binary = shutil.which("promtool")
    assert binary, "promtool comes with Debian's `prometheus` package (.ci/run installs it)"
    done = subprocess.run([binary, *args], cwd=MONITORING, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_rules_are_valid_and_their_alerts_fire() -> None:
    assert "SUCCESS: 9 rules found" in promtool("check", "rules", "alerts.yaml")
    assert "SUCCESS" in promtool("test", "rules", "alerts.test.yaml")


def chatapp_series() -> set[str]:
    """Every series name ChatApp exports, as Prometheus sees it through Ray (`ray_`)."""
    instruments = PrometheusInstruments()
    for group in (ProviderMetrics, HttpMetrics, TurnMetrics, ShardMetrics, AuthMetrics):
        group(instruments)
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    return {
        f"ray_{family.name}{suffix}"
        for family in instruments.registry.collect()
        for suffix in suffixes[family.type]
    }


def test_dashboard_and_rules_query_only_series_chatapp_exports() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs.append((MONITORING / "alerts.yaml").read_text())
    used = {m for e in exprs for m in re.findall(r"\bray_chatapp_[a-z_]+", e)}
    assert len(used) > 10
    assert used <= chatapp_series(), used - chatapp_series()
    assert all(p["targets"] for p in dashboard["panels"])
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
