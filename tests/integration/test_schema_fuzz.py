"""Schema fuzzing (issue 9): schemathesis over the whole OpenAPI of a running ChatApp,
logged in as an ordinary user, positive and negative inputs. No response may be a 5xx,
and every 4xx must carry the one error envelope
``{"error": {"message", "type", "param", "code"}}``.

The app is its own Serve application (the simulated engine, so a fuzzed `max_tokens`
costs no model time, and a small knowledge base) over the session's PostgreSQL and
Redis. Examples are bounded and derandomized: the same cases on every run. The default
run sends 10 examples per operation, mode and path (about 1,000 requests, under a minute on
two cores: every operation reached with valid and invalid input); `--long` (`make fuzz`)
sends 40 (about 4,100 requests, two to three minutes).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any, get_args

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from ray import serve
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from actors.client import kill_shards
from chatapp.anthropic_api.errors import ErrorType
from chatapp.config import RagSettings, Settings
from deployments.app import build_app
from pipelines.build_index import build_index
from tests.conftest import REDIS_URL, register_and_login, run_app
from tests.fakes.corpus import write_corpus

PREFIX = "/fuzz"
KB = "garden"
# Routes that would end the fuzzing user's own session: fuzzed separately would need a
# fresh login per case; their error paths are covered by the auth tests.
SESSION_ENDING = ["/api/auth/logout"]
# HAProxy (Serve's proxy) answers a request line over its buffer itself, before the app
# sees it: a 400 HTML page. URLs that long are outside what the app can shape.
PROXY_MAX_URL = 8192
EXAMPLES = 10  # per operation, mode and path: ~1,000 requests
LONG_EXAMPLES = 40  # with --long (make fuzz): ~4,100 requests


@pytest.fixture(scope="module")
def fuzz_app(chat_app: str, pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # a small knowledge base, so its routes and grounded turns are reached too
    root = tmp_path_factory.mktemp("fuzz-rag")
    rag = {"index_dir": str(root / "indexes"), "default_kb": KB, "chunk_tokens": 64}
    build_index([str(write_corpus(root / "corpus"))], kb=KB, rag=RagSettings(**rag))
    overrides: dict[str, Any] = {
        "database": {"url": pg_url},
        "redis": {"url": REDIS_URL, "key_prefix": f"chatapp-fuzz-{uuid.uuid4().hex[:8]}:"},
        "llm": {
            "engine": "simulated",
            "simulated_reply_tokens": 4,
            "simulated_tokens_per_s": 100_000,
        },
        "rag": rag,
        "shards": {"count": 1, "name_prefix": f"fuzz-{uuid.uuid4().hex[:6]}"},
        "serve": {"max_body_bytes": 64 * 1024},
        "auth": {
            "chat_request_limit": "100000/minute",
            "register_ip_limit": "100000/hour",
            "login_ip_limit": "100000/15minutes",
        },
    }
    yield run_app(build_app(overrides), name="fuzzapp", route_prefix=PREFIX, base_url=chat_app)
    serve.delete("fuzzapp")
    kill_shards(Settings.from_overrides(overrides))


@pytest.fixture(scope="module")
def examples(pytestconfig: pytest.Config) -> int:
    return LONG_EXAMPLES if pytestconfig.getoption("--long") else EXAMPLES


@pytest.fixture(scope="module")
def fuzz_headers(fuzz_app: str) -> dict[str, str]:
    return register_and_login(fuzz_app)


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_app: str) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_app}/openapi.json").exclude(path=SESSION_ENDING)


def error_envelope(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx is the OpenAI error envelope (Anthropic's on Anthropic's /v1/messages)."""
    if not 400 <= response.status_code < 500:
        return None
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(
            f"{response.status_code} is not JSON: {response.headers.get('content-type')} "
            f"{response.content[:200]!r}"
        ) from None
    if case.path == "/v1/messages":
        assert isinstance(body, dict) and body.get("type") == "error", body
        assert set(body) <= {"type", "error", "request_id"}, body
        assert body["error"]["type"] in get_args(ErrorType) and body["error"]["message"], body
        return True
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert {"message", "type", "param", "code"} <= set(error), error
    assert isinstance(error["message"], str) and error["message"], error
    assert error["type"] == "invalid_request_error" and isinstance(error["code"], str), error
    return True


def _fuzz(
    operation: Any,
    mode: GenerationMode,
    call: Any,
    path: dict[str, str] | None = None,
    *,
    examples: int,
) -> str | None:
    """Run `call` on `examples` of `operation`'s generated cases (with `path` parameters
    fixed, if given); the first failure, described."""

    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path))
    @settings(
        max_examples=examples,
        derandomize=True,  # the same cases on every run: never a flake
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the first failure is enough
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        call(case)

    try:
        run()
    except Unsatisfiable:
        return None  # no input to break (negative mode on an operation without any)
    except (Exception, BaseExceptionGroup) as exc:  # failed checks, with the request
        fixed = f" with {path}" if path else ""
        return f"{operation.label}{fixed} ({mode.value}): {type(exc).__name__}: {exc}"
    return None


def _conversation(fuzz_app: str, headers: dict[str, str]) -> str:
    """A conversation of the fuzzing user with one answered message."""
    with httpx.Client(base_url=fuzz_app, headers=headers, timeout=60) as http:
        conv = str(http.post("/api/conversations", json={"title": "fuzz"}).json()["id"])
        sent = http.post(
            f"/api/conversations/{conv}/messages", json={"content": "hi", "stream": False}
        )
        assert sent.status_code == 200, sent.text
    return conv


def test_no_5xx_and_every_4xx_in_the_envelope(
    fuzz_schema: Any, fuzz_app: str, fuzz_headers: dict[str, str], examples: int
) -> None:
    def call(case: Any) -> None:
        headers = dict(case.headers or {})
        if "authorization" not in {h.lower() for h in headers}:
            headers.update(fuzz_headers)  # logged in, unless the case fuzzes the credential
        response = case.call(base_url=fuzz_app, headers=headers, allow_redirects=False, timeout=60)
        statuses[response.status_code // 100] += 1
        if response.status_code == 400 and len(response.request.url) > PROXY_MAX_URL:
            return  # refused by HAProxy in front of the app, with its own page
        case.validate_response(response, checks=[not_a_server_error, error_envelope])

    statuses: Counter[int] = Counter()
    failures = []
    operations = [result.ok() for result in fuzz_schema.get_all_operations()]
    assert len(operations) > 20
    for operation in operations:
        # random ids reach the 404 path; the user's own conversation reaches the rest
        paths: list[dict[str, str] | None] = [None]
        if "{conversation_id}" in operation.path:
            paths.append({"conversation_id": _conversation(fuzz_app, fuzz_headers)})
        if "{kb_id}" in operation.path:
            paths.append({"kb_id": KB})
        for path in paths:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                failure = _fuzz(operation, mode, call, path, examples=examples)
                if failure is not None:
                    failures.append(failure)
    print(f"schema fuzzing: {sum(statuses.values())} requests by status class {dict(statuses)}")
    assert not failures, "\n\n".join(failures)
    assert statuses[2] > 0 and statuses[4] > 0  # both accepted and refused inputs were sent


def test_the_fuzzed_user_still_works(fuzz_app: str, fuzz_headers: dict[str, str]) -> None:
    """The fuzzing ran as a logged-in user the whole time (its routes saw real data)."""
    with httpx.Client(base_url=fuzz_app, headers=fuzz_headers, timeout=60) as http:
        assert http.get("/api/me").status_code == 200
