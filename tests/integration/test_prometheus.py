"""A real Prometheus (Debian's `prometheus`) scrapes ChatApp on Ray while a user chats:
every query of the Grafana dashboard returns data, and the recording rules evaluate.

ChatApp's replicas and shards record through Ray's metrics API; Prometheus scrapes the
node's metrics agent, exactly as the PodMonitor does on KubeRay (cluster/monitoring/)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
from ray import serve

from actors.client import kill_shards
from chatapp.config import Settings
from deployments.app import build_app
from tests.conftest import REDIS_URL, free_port, register_and_login, run_app
from tests.dashboard_png import render
from tests.fakes.providers import FakeOpenAI, Reply, Status

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "cluster/monitoring"


def dashboard_queries() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server  # type: ignore[misc]
    server.stop()


@pytest.fixture(scope="module")
def observed(
    chat_app: str, app_overrides: dict[str, Any], fake_openai: FakeOpenAI
) -> Iterator[str]:
    """An app whose primary model is the fake OpenAI (it can be made to fail) with the
    simulated engine behind it."""
    overrides = {
        **app_overrides,
        "shards": {"count": 1, "name_prefix": f"observed-{uuid.uuid4().hex[:6]}"},
        "redis": {"url": REDIS_URL, "key_prefix": f"chatapp-test-{uuid.uuid4().hex[:8]}:"},
        "llm": {"engine": "simulated", "simulated_reply_tokens": 8},
        "providers": {
            "openai_api_key": "sk-test",
            "openai_base_url": fake_openai.base_url,
            "models": [
                {
                    "name": "gpt-fake",
                    "provider": "openai",
                    "provider_model": "gpt-x",
                    "context_window": 16000,
                }
            ],
            "primary": "gpt-fake",
            "retry_attempts": 2,
            "retry_initial_s": 0.05,
            "breaker_threshold": 1000,
        },
    }
    yield run_app(
        build_app(overrides), name="observed", route_prefix="/observed", base_url=chat_app
    )
    serve.delete("observed")
    kill_shards(Settings.from_overrides(overrides))


@pytest.fixture(scope="module")
def prometheus(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus scraping this Ray node's metrics agent every 2 s, with ChatApp's rules
    loaded; yields its URL."""
    binary = shutil.which("prometheus")
    assert binary, "Debian's `prometheus` package is needed (.ci/run installs it)"
    node = next(n for n in ray.nodes() if n["Alive"])
    target = f"{node['NodeManagerAddress']}:{node['MetricsExportPort']}"
    folder = tmp_path_factory.mktemp("prometheus")
    config = folder / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {
                    "scrape_interval": "2s",
                    "scrape_timeout": "2s",  # the agent's text is large; a busy box is slow
                    "evaluation_interval": "2s",
                },
                "rule_files": [str(MONITORING / "alerts.yaml")],
                "scrape_configs": [{"job_name": "ray", "static_configs": [{"targets": [target]}]}],
            }
        )
    )
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, "prometheus exited"
            assert time.monotonic() < deadline, "prometheus did not get ready in 60 s"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def chat_a_little(base: str, provider: FakeOpenAI) -> None:
    """What a user and a failing provider do: a login, streamed and whole turns, a /v1
    completion asked twice (the second from the cache), an unauthenticated call, and the
    primary failing twice (retried, then the self-hosted model answers)."""
    provider.reset()
    provider.enqueue(Status(503), Status(503), Reply("Paris."), Reply("Rome."), Reply("Oslo."))
    headers = register_and_login(base)
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        conv = client.post("/api/conversations", json={}).json()["id"]
        url = f"/api/conversations/{conv}/messages"
        assert client.post(url, json={"content": "Capital of France?", "stream": False}).is_success
        with client.stream("POST", url, json={"content": "And of Italy?"}) as response:
            assert response.status_code == 200
            response.read()
        for _ in range(2):
            answer = client.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "Norway?"}], "temperature": 0},
            )
            assert answer.status_code == 200, answer.text
    assert httpx.get(f"{base}/api/me").status_code == 401


def query(prometheus: str, expr: str) -> list[Any]:
    body = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", (expr, body)
    result: list[Any] = body["data"]["result"]
    return result


def wait_for_data(prometheus: str) -> list[str]:
    """Every dashboard query and two recording rules until all return data; those still
    empty after a minute. (Replicas report each second, Prometheus scrapes every 2 s and
    rates need two scrapes: bounded by a minute of a loaded machine.)"""
    wanted = [
        *dashboard_queries(),
        "chatapp:http_requests:rate5m",
        "chatapp:turn_time_to_first_token_seconds:p50_5m",
    ]
    deadline = time.monotonic() + 60
    while True:
        # A query counts once it answered: a scrape that fails on a loaded machine marks
        # the node's series stale until the next one, so they need not all answer at once.
        wanted = [e for e in wanted if not query(prometheus, e)]
        if not wanted or time.monotonic() > deadline:
            return wanted
        time.sleep(1)


def test_every_dashboard_query_and_recording_rule_returns_data(
    observed: str, prometheus: str, fake_openai: FakeOpenAI
) -> None:
    chat_a_little(observed, fake_openai)
    empty = wait_for_data(prometheus)
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
    # what a person on call reads there: the fallback and the user's 401 are visible
    # (this app's series: the node's agent also exports those of the session's other apps)
    fallbacks = query(
        prometheus,
        'sum by (from_model) (ray_chatapp_llm_fallbacks_total{application="observed"})',
    )
    assert {r["metric"]["from_model"] for r in fallbacks} == {"gpt-fake"}
    me = 'application="observed",route="/api/me"'
    statuses = query(prometheus, f"sum by (status) (ray_chatapp_http_requests_total{{{me}}})")
    assert "401" in {r["metric"]["status"] for r in statuses}


def test_the_dashboard_renders_from_real_data(
    observed: str, prometheus: str, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    """The panels drawn from Prometheus (docs/dashboard.png is made this way: set
    CHATAPP_DASHBOARD_PNG to keep the picture)."""
    chat_a_little(observed, fake_openai)
    assert not wait_for_data(prometheus)
    out = Path(os.environ.get("CHATAPP_DASHBOARD_PNG") or tmp_path / "dashboard.png")
    drawn = render(MONITORING / "grafana-dashboard.json", prometheus, out)
    assert drawn >= len(dashboard_queries())  # every query drew at least one line
    assert out.stat().st_size > 20_000
