"""The Grafana dashboard's panels drawn from a live Prometheus with matplotlib: what ops
will see, as a PNG for the README (`docs/dashboard.png`).

    CHATAPP_DASHBOARD_PNG=docs/dashboard.png pytest tests/integration/test_prometheus.py

Each panel's queries over the last minutes (`query_range`), one line per series, titled
and laid out as in `cluster/monitoring/grafana-dashboard.json`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import matplotlib

matplotlib.use("Agg")  # no display
import matplotlib.pyplot as plt


def _legend(template: str, labels: dict[str, str]) -> str:
    text = template
    for key, value in labels.items():
        text = text.replace("{{" + key + "}}", value)
    return text if "{{" not in text else template.split("{{")[0].strip() or "value"


def render(dashboard: Path, prometheus: str, out: Path, *, minutes: float = 5) -> int:
    """Draw every panel into `out`; returns how many series were drawn."""
    panels: list[dict[str, Any]] = json.loads(dashboard.read_text())["panels"]
    end = time.time()
    start = end - minutes * 60
    columns = 3
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 2.8 * rows))
    drawn = 0
    for ax, panel in zip(axes.flat, panels, strict=False):
        ax.set_title(panel["title"], fontsize=9)
        ax.tick_params(labelsize=7)
        for target in panel["targets"]:
            body = httpx.get(
                f"{prometheus}/api/v1/query_range",
                params={"query": target["expr"], "start": start, "end": end, "step": 2},
                timeout=10,
            ).json()
            for series in body["data"]["result"]:
                points = [(float(t) - end, float(v)) for t, v in series["values"]]
                if not points:
                    continue
                xs, ys = zip(*points, strict=True)
                label = _legend(target.get("legendFormat", ""), series["metric"])
                ax.plot(xs, ys, label=label[:40], linewidth=1, marker=".", markersize=3)
                drawn += 1
        ax.set_xlabel("seconds ago", fontsize=7)
        if ax.lines:
            ax.legend(fontsize=6, loc="upper left")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    figure.suptitle("ChatApp (cluster/monitoring/grafana-dashboard.json), from Prometheus")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=80)
    plt.close(figure)
    return drawn
