"""The provider router through Ray Serve: an external provider (a fake OpenAI server
speaking the real wire format) as primary, the self-hosted SmolLM2 as the fallback,
the Redis response cache, usage and cost per user, the monthly budget and /metrics."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from ray import serve

from actors.client import kill_shards
from chatapp.config import Settings
from deployments.app import build_app
from tests.conftest import REDIS_URL, register_and_login, run_app
from tests.fakes.providers import FakeOpenAI, Reply, Status
from tests.integration.sse import iter_events
from tests.scrape import scrape_until, value

SELF_HOSTED = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server  # type: ignore[misc]
    server.stop()


def _deploy(
    base_url: str, name: str, base: dict[str, Any], extra: dict[str, Any]
) -> dict[str, Any]:
    overrides = copy.deepcopy(base)
    overrides["shards"] = {"count": 1, "name_prefix": f"{name}-{uuid.uuid4().hex[:6]}"}
    overrides["redis"] = {"url": REDIS_URL, "key_prefix": f"chatapp-test-{uuid.uuid4().hex[:8]}:"}
    overrides.update(extra)
    run_app(build_app(overrides), name=name, route_prefix=f"/{name}", base_url=base_url)
    return overrides


@pytest.fixture(scope="module")
def apps(chat_app: str, app_overrides: dict[str, Any], fake_openai: FakeOpenAI) -> Iterator[str]:
    """'routed': OpenAI (fake) primary, SmolLM2 fallback. 'timeouts': the same primary with
    a short whole-answer timeout and the simulated engine as fallback (fast however busy
    the machine is). 'budget': a tiny monthly budget."""
    providers = {
        "openai_api_key": "sk-test",
        "openai_base_url": fake_openai.base_url,
        "models": [
            {
                "name": "gpt-fake",
                "provider": "openai",
                "provider_model": "gpt-x",
                "context_window": 16000,
                "input_price_per_mtok": 2.5,
                "output_price_per_mtok": 10.0,
            }
        ],
        "primary": "gpt-fake",
        "retry_attempts": 2,
        "retry_initial_s": 0.05,
        "first_token_timeout_s": 20,
        "breaker_threshold": 1000,
    }
    short = {**providers, "total_timeout_s": 3}  # the slow answers below take 20 s
    deployed = {
        "routed": _deploy(chat_app, "routed", app_overrides, {"providers": providers}),
        "timeouts": _deploy(
            chat_app,
            "timeouts",
            app_overrides,
            {
                "providers": short,
                "llm": {"engine": "simulated", "simulated_reply_tokens": 8},
            },
        ),
        "budget": _deploy(
            chat_app,
            "budget",
            app_overrides,
            {
                "llm": {"engine": "simulated", "simulated_reply_tokens": 8},
                "usage": {"monthly_token_budget": 25},
            },
        ),
    }
    yield chat_app
    for name, overrides in deployed.items():
        serve.delete(name)
        kill_shards(Settings.from_overrides(overrides))


@pytest.fixture(scope="module")
def routed(apps: str) -> str:
    return f"{apps}/routed"


@pytest.fixture(scope="module")
def headers(routed: str) -> dict[str, str]:
    return register_and_login(routed)


@pytest.fixture
def provider(fake_openai: FakeOpenAI) -> FakeOpenAI:
    fake_openai.reset()
    return fake_openai


def ask(client: httpx.Client, content: str, **options: Any) -> httpx.Response:
    conv = client.post("/api/conversations", json={}).json()["id"]
    return client.post(
        f"/api/conversations/{conv}/messages",
        json={"content": content, "stream": False, **options},
    )


def test_primary_down_the_answer_comes_from_self_hosted_smollm2(
    routed: str, headers: dict[str, str], provider: FakeOpenAI
) -> None:
    provider.enqueue(Status(503), Status(503))  # down, retried once, still down
    with httpx.Client(base_url=routed, headers=headers, timeout=120) as client:
        reply = ask(client, "What is the capital of France?")
        assert reply.status_code == 200, reply.text
        message = reply.json()["message"]
        assert message["model"] == SELF_HOSTED and message["status"] == "complete"
        assert message["content"].strip() and message["completion_tokens"] > 0
        assert len(provider.requests) == 2  # the primary was tried (and retried) first
        assert reply.json()["fallback_from"] == "gpt-fake"  # the page shows a fallback badge
        # stored with the reply: the badge is still there after a reload
        assert message["fallback_from"] == "gpt-fake"
        (listed, *_) = client.get("/api/conversations").json()["items"]  # the newest
        history = client.get(f"/api/conversations/{listed['id']}").json()  # as a reload reads it
        assert [m["fallback_from"] for m in history["messages"]] == [None, "gpt-fake"]

        usage = client.get("/api/usage").json()
        by_model = {m["model"]: m for m in usage["by_model"]}
        assert by_model[SELF_HOSTED]["provider"] == "self-hosted"
        assert by_model[SELF_HOSTED]["cost_usd"] == 0


def test_the_primary_answers_and_its_cost_is_accounted(routed: str, provider: FakeOpenAI) -> None:
    headers = register_and_login(routed)  # a fresh user: totals start at zero
    provider.enqueue(Reply("Paris is the capital of France."))
    with httpx.Client(base_url=routed, headers=headers, timeout=60) as client:
        reply = ask(client, "Capital of France?")
        assert reply.status_code == 200, reply.text
        message = reply.json()["message"]
        assert message["model"] == "gpt-fake"
        assert message["content"] == "Paris is the capital of France."
        assert reply.json()["fallback_from"] is None and message["fallback_from"] is None
        usage = client.get("/api/usage").json()
    assert usage["replies"] == 1 and usage["budget"] is None
    assert usage["completion_tokens"] == 6 and usage["prompt_tokens"] > 0
    expected = (usage["prompt_tokens"] * 2.5 + 6 * 10.0) / 1_000_000
    assert usage["cost_usd"] == pytest.approx(expected)
    assert usage["by_model"][0]["provider"] == "openai"


def test_a_provider_failing_mid_answer_leaves_the_partial_reply_incomplete(
    routed: str, headers: dict[str, str], provider: FakeOpenAI
) -> None:
    provider.enqueue(Reply("one two three four five six seven", cut_after=3))
    with httpx.Client(base_url=routed, headers=headers, timeout=60) as client:
        conv = client.post("/api/conversations", json={}).json()["id"]
        with client.stream(
            "POST", f"/api/conversations/{conv}/messages", json={"content": "count"}
        ) as response:
            assert response.status_code == 200
            events = list(iter_events(response))
        text = "".join(e.json()["text"] for e in events if e.event == "token")
        assert text == "one two three "
        assert events[-1].event == "error" and events[-1].json()["status"] == "incomplete"
        stored = client.get(f"/api/conversations/{conv}").json()["messages"]
    assert stored[-1]["status"] == "incomplete" and stored[-1]["content"] == text
    assert len(provider.requests) == 1  # no fallback once the answer had started


def test_a_provider_timeout_mid_answer_is_the_same_error_on_api_and_v1(
    apps: str, provider: FakeOpenAI
) -> None:
    """The router gives up on an answer that outlives `total_timeout_s` after its first
    tokens: a 504 `provider_timeout` on every streamed surface (it was 502 on /api, 500 on
    /v1). A non-streamed request asks the provider for the whole answer at once, so its
    timeout comes before any token: the self-hosted fallback answers it."""
    slow = Reply(" ".join(f"w{i}" for i in range(40)), token_delay_s=0.5)
    base = f"{apps}/timeouts"
    with httpx.Client(base_url=base, headers=register_and_login(base), timeout=60) as client:
        conv = client.post("/api/conversations", json={}).json()["id"]
        url = f"/api/conversations/{conv}/messages"

        provider.enqueue(slow)
        with client.stream("POST", url, json={"content": "count slowly"}) as response:
            assert response.status_code == 200
            events = list(iter_events(response))
        assert any(e.event == "token" for e in events)
        assert events[-1].event == "error"
        assert events[-1].json()["error"]["code"] == "provider_timeout"
        assert events[-1].json()["status"] == "incomplete"

        provider.enqueue(slow, slow)  # the attempt and its retry both time out
        reply = client.post(url, json={"content": "count slowly", "stream": False})
        assert reply.status_code == 200, reply.text
        assert reply.json()["fallback_from"] == "gpt-fake"
        assert reply.json()["message"]["status"] == "complete"
        assert not provider.requests[-1].body.get("stream")  # one call for the whole answer

        body = {"model": "gpt-fake", "messages": [{"role": "user", "content": "count slowly"}]}
        provider.enqueue(slow)
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
            assert r.status_code == 200
            frames = [e.data for e in iter_events(r)]
        assert frames[-1] == "[DONE]"
        assert json.loads(frames[-2])["error"]["code"] == "provider_timeout"
        assert any("w0" in frame for frame in frames)

        provider.enqueue(slow, slow)
        reply = client.post("/v1/chat/completions", json=body)
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["fallback_from"] == "gpt-fake"


def test_a_repeated_greedy_request_is_served_from_the_cache(
    routed: str, headers: dict[str, str], provider: FakeOpenAI
) -> None:
    sdk = openai.OpenAI(
        base_url=f"{routed}/v1",
        api_key=headers["Authorization"].removeprefix("Bearer "),
        max_retries=0,
    )
    question = [{"role": "user", "content": f"Say something about {uuid.uuid4().hex}"}]
    provider.enqueue(Reply("A fresh answer."))
    first = sdk.chat.completions.create(model="gpt-fake", messages=question, temperature=0)
    second = sdk.chat.completions.create(model="gpt-fake", messages=question, temperature=0)
    assert second.choices[0].message.content == first.choices[0].message.content
    assert first.usage is not None and second.usage is not None
    assert first.usage.model_extra is not None and second.usage.model_extra is not None
    assert first.usage.model_extra["cached"] is False
    assert first.usage.model_extra["provider"] == "openai"
    assert first.usage.model_extra["cost_usd"] > 0 == second.usage.model_extra["cost_usd"]
    assert second.usage.model_extra["cached"] is True
    assert second.usage.completion_tokens == first.usage.completion_tokens
    assert len(provider.requests) == 1  # the provider answered once

    streamed = sdk.chat.completions.create(
        model="gpt-fake", messages=question, temperature=0, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == (
        first.choices[0].message.content
    )
    assert len(provider.requests) == 1

    sdk.chat.completions.create(
        model="gpt-fake",
        messages=question,
        temperature=0,
        extra_headers={"X-ChatApp-Cache": "no"},
    )
    assert len(provider.requests) == 2  # the header opted out


def test_models_and_metrics(routed: str, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=routed, headers=headers, timeout=30) as client:
        models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
        assert models["gpt-fake"]["owned_by"] == "openai"
        assert models["gpt-fake"]["context_window"] == 16000
        assert SELF_HOSTED in models
        wanted: list[tuple[str, dict[str, str]]] = [
            ("ray_chatapp_llm_requests_total", {"model": "gpt-fake", "outcome": "ok"}),
            ("ray_chatapp_llm_fallbacks_total", {"from_model": "gpt-fake", "to_model": "smollm2*"}),
            ("ray_chatapp_llm_cache_total", {"result": "hit"}),
            ("ray_chatapp_llm_time_to_first_token_seconds_count", {"deployment": "ChatRouter"}),
        ]
        text = scrape_until(client, lambda t: all(value(t, n, **ls) for n, ls in wanted))
    missing = [(n, ls) for n, ls in wanted if not value(text, n, **ls)]
    assert not missing, missing


def test_the_monthly_budget_is_enforced_with_a_429_that_says_so(apps: str) -> None:
    base = f"{apps}/budget"
    headers = register_and_login(base)
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        first = ask(client, "hello there")
        assert first.status_code == 200, first.text  # this turn spends ~30 tokens
        second = ask(client, "and again")
        assert second.status_code == 429
        error = second.json()["error"]
        assert "monthly token budget" in error["message"] and error["code"] == "rate_limited"
        assert int(second.headers["retry-after"]) > 0
        v1 = client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
        )
        assert v1.status_code == 429
        usage = client.get("/api/usage").json()
        assert usage["budget"]["monthly_tokens"] == 25
        assert usage["budget"]["remaining_tokens"] == 0
        # the rejected turn stored nothing
        convs = client.get("/api/conversations").json()["items"]
        detail = client.get(f"/api/conversations/{convs[0]['id']}").json()
        assert len(detail["messages"]) == 0
