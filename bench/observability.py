"""CPU that observability adds to one HTTP request in the ingress (issue 13): the request
log and id (`deployments/ingress/access.py`), the HTTP metrics (`measure.py`, recording
into Ray's metrics API as in a replica) and a turn's own metric calls, measured in one run
against the same FastAPI app without them (the baseline).

    python -m bench.observability [--requests 3000]

The app has one route (`GET /api/items/{item_id}` answering a small JSON body), driven in
process through httpx's ASGI transport, so only the middlewares differ between the rows.
Prints CPU per request for each row and the ratio to the baseline. The metrics rows run in
a Ray worker's process (`ray.init`), where Ray's metrics API records.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import httpx
import ray
from fastapi import FastAPI

from chatapp.config.observability import LogSettings
from chatapp.logs import make_handler
from chatapp.observability.metrics import HttpMetrics, TurnMetrics
from deployments.ingress.access import RequestLog
from deployments.ingress.measure import MeasureRequests
from deployments.observe import RayInstruments


def app(*, metrics: bool, logs: bool) -> FastAPI:
    api = FastAPI()

    @api.get("/api/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"id": item_id, "name": "bench"}

    if metrics:
        api.add_middleware(MeasureRequests, metrics=HttpMetrics(RayInstruments()))
    if logs:
        api.add_middleware(RequestLog)
    return api


async def cpu_per_request(api: FastAPI, n: int) -> float:
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for i in range(200):  # warm up
            await client.get(f"/api/items/{i}")
        started = time.process_time()
        for i in range(n):
            response = await client.get(f"/api/items/{i}")
            assert response.status_code == 200
        return (time.process_time() - started) / n


def turn_metric_calls(n: int) -> float:
    """CPU of the metric calls one chat turn makes (TTFT, duration, tokens x2, retrieval
    latency and hits), through Ray's metrics API."""
    m = TurnMetrics(RayInstruments())
    started = time.process_time()
    for _ in range(n):
        m.ttft.labels("chat").observe(0.2)
        m.duration.labels("chat", "complete").observe(1.2)
        m.tokens.labels("chat", "prompt").inc(40)
        m.tokens.labels("chat", "completion").inc(60)
        m.retrieval.labels("ok").observe(0.01)
        m.retrieval_hits.labels().inc(2)
    return (time.process_time() - started) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    root = logging.getLogger()
    sink = io.StringIO()  # the lines are formatted as in production, then kept here
    root.handlers = [
        make_handler(LogSettings(format="json"), environment="production", stream=sink)
    ]
    root.setLevel(logging.INFO)
    rows = {
        "baseline (no request log, no metrics)": app(metrics=False, logs=False),
        "request log + id": app(metrics=False, logs=True),
        "HTTP metrics (Ray)": app(metrics=True, logs=False),
        "both (as in the ingress)": app(metrics=True, logs=True),
    }
    results = {name: asyncio.run(cpu_per_request(api, args.requests)) for name, api in rows.items()}
    base = results["baseline (no request log, no metrics)"]
    print(f"{'row':40} {'CPU us/request':>15} {'added us':>9} {'ratio':>6}")
    for name, cpu in results.items():
        print(f"{name:40} {cpu * 1e6:15.1f} {(cpu - base) * 1e6:9.1f} {cpu / base:6.2f}")
    print(f"a turn's own metric calls (6, Ray): {turn_metric_calls(args.requests) * 1e6:.1f} us")
    ray.shutdown()


if __name__ == "__main__":
    main()
