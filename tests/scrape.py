"""Reading Prometheus text in tests: the summed value of a series by a subset of labels."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families


def value(text: str, name: str, **labels: str) -> float | None:
    """Sum of the samples named `name` whose labels include `labels` (None: no sample);
    label values ending in `*` match by prefix."""
    found = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != name:
                continue
            if all(
                (
                    sample.labels.get(k, "").startswith(v[:-1])
                    if v.endswith("*")
                    else sample.labels.get(k) == v
                )
                for k, v in labels.items()
            ):
                found = (found or 0.0) + sample.value
    return found


def scrape_until(
    client: httpx.Client,
    ready: Callable[[str], bool],
    *,
    path: str = "/metrics",
    within_s: float = 30,
) -> str:
    """GET `path` until `ready(text)` (metrics reach the node's agent each second in
    tests); the last text either way."""
    deadline = time.monotonic() + within_s
    while True:
        response = client.get(path)
        assert response.status_code == 200, response.text
        if ready(response.text) or time.monotonic() > deadline:
            return response.text
        time.sleep(0.5)
