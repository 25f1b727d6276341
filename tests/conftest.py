"""Shared fixtures: the real PostgreSQL server, one local Ray per test session, and the
ChatApp Serve application with the real SmolLM2 model."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from deployments.serve_env import use_serve_fast_path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# The same Serve fast path `chatapp run` uses, HAProxy included; HAProxy's fixed ports
# moved to free ones, so test sessions side by side on one machine do not collide.
use_serve_fast_path()
for _port in ("RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_HAPROXY_STATS_PORT"):
    if _port not in os.environ:
        with socket.socket() as _s:
            _s.bind(("127.0.0.1", 0))
            os.environ[_port] = str(_s.getsockname()[1])
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN_EMAIL = "admin@example.com"
PG_ADMIN_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        help="also run the long forms: tests marked `long` (make cluster) and the whole "
        "schema fuzz (make fuzz); without it those are skipped and the fuzz is shortened",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `long` skipped unless --long. Browser tests last: Playwright's sync
    API holds an event loop on the main thread while it runs, which asyncio tests and
    asyncio.run() cannot share."""
    if not config.getoption("--long"):
        skip = pytest.mark.skip(reason="long form: run with --long (make cluster, make test-long)")
        for item in items:
            if item.get_closest_marker("long"):
                item.add_marker(skip)
    items.sort(key=lambda item: "tests/e2e/" in str(item.path).replace("\\", "/"))


def _asyncpg_dsn(url: str) -> str:
    return "postgresql://" + url.split("://", 1)[1]


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new database on the real PostgreSQL server (its URL), dropped at the end."""
    import asyncpg

    name = f"chatapp_test_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(_asyncpg_dsn(PG_ADMIN_URL))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh database on the real PostgreSQL server, dropped at the end."""
    with fresh_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Database settings for each backend, migrated to head."""
    from chatapp.config import DatabaseSettings
    from chatapp.db.engine import migrate

    if request.param == "sqlite":
        settings = DatabaseSettings(url=None, var_dir=tmp_path / "var")
    else:
        settings = DatabaseSettings(url=request.getfixturevalue("pg_url"), var_dir=tmp_path)
    migrate(settings)
    return settings


@pytest.fixture
async def sessionmaker(db_settings: Any) -> AsyncIterator[Any]:
    from chatapp.db.engine import make_engine, make_sessionmaker

    engine = make_engine(db_settings)
    yield make_sessionmaker(engine)
    await engine.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray for the whole test session (Redis keeps its 6379)."""
    import ray

    # address="local": a new instance even while another cluster on this machine (the
    # multi-node scenario's, or a `ray start`) is the "current" one ray.init() would join
    ray.init(
        address="local",
        num_cpus=8,  # logical: every test app's self-hosted model reserves one
        include_dashboard=False,
        namespace="chatapp-tests",
        log_to_driver=False,
        # Workers report metrics to their node's agent every second (Ray's default is 10 s),
        # so tests see a recorded metric soon.
        _system_config={"metrics_report_interval_ms": 1000},
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def oidc_issuer() -> Iterator[Any]:
    """A local OpenID Connect provider (no network)."""
    from tests.fakes.oidc_issuer import start_issuer

    issuer, server = start_issuer()
    yield issuer
    server.__exit__()


@pytest.fixture(scope="session")
def serve_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def app_overrides(
    pg_url: str, serve_port: int, oidc_issuer: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    from tests.fakes.oidc_issuer import CLIENT_ID, CLIENT_SECRET

    return {
        # an empty index folder: no knowledge base unless a test builds one
        "rag": {"index_dir": str(tmp_path_factory.mktemp("indexes"))},
        "database": {"url": pg_url},
        "redis": {"url": REDIS_URL, "key_prefix": f"chatapp-test-{uuid.uuid4().hex[:8]}:"},
        "llm": {"engine": "llamacpp", "default_max_tokens": 24, "context_window": 2048},
        "shards": {"count": 2, "name_prefix": f"test-shard-{uuid.uuid4().hex[:6]}"},
        "serve": {"max_body_bytes": 64 * 1024},
        "auth": {
            "public_url": f"http://127.0.0.1:{serve_port}",
            "access_token_ttl_s": 3600,
            "chat_request_limit": "10000/minute",
            "register_ip_limit": "10000/hour",
            "login_ip_limit": "10000/15minutes",
            "admin_emails": [ADMIN_EMAIL],
            "oidc_providers": [
                {
                    "name": "testidp",
                    "display_name": "Test IdP",
                    "issuer": oidc_issuer.url,
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                }
            ],
        },
    }


@pytest.fixture(scope="session")
def chat_app(ray_session: None, app_overrides: dict[str, Any], serve_port: int) -> Iterator[str]:
    """ChatApp running on Ray Serve with the real SmolLM2 (llama.cpp); yields its URL."""
    from ray import serve

    from actors.client import kill_shards
    from chatapp.config import Settings
    from deployments.app import build_app

    port = serve_port
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield run_app(
        build_app(app_overrides),
        name="chatapp",
        route_prefix="/",
        base_url=f"http://127.0.0.1:{port}",
    )
    serve.shutdown()
    kill_shards(Settings.from_overrides(app_overrides))


def run_app(app: Any, *, name: str, route_prefix: str, base_url: str) -> str:
    """`serve.run`, then wait until the application's route answers; returns its URL.

    Behind HAProxy, `serve.run` returns once the replicas run, but until HAProxy's health
    check passes them requests go to Serve's fallback proxy, whose route table may not
    have the new prefix yet (a 404). This waits as a load balancer's readiness probe
    would: for `GET <prefix>/healthz` to answer 200."""
    import time

    import httpx
    from ray import serve

    serve.run(app, name=name, route_prefix=route_prefix)
    url = base_url.rstrip("/") + ("" if route_prefix == "/" else route_prefix)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=10).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} was not routed within 60 s"
        time.sleep(0.2)


def expect_error(response: Any, status: int) -> dict[str, Any]:
    """The error envelope of `response`, after checking its status and that it says
    what went wrong (a message and a code)."""
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["message"] and error["code"], error
    return error


def register_and_login(
    base_url: str, *, email: str | None = None, password: str = "correct horse battery staple"
) -> dict[str, str]:
    """A new account on the running app; returns its Authorization header."""
    import httpx

    email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
    with httpx.Client(base_url=base_url, timeout=60) as client:
        created = client.post("/api/auth/register", json={"email": email, "password": password})
        assert created.status_code == 201, created.text
        token = client.post("/api/auth/token", data={"username": email, "password": password})
        assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


@pytest.fixture(scope="session")
def auth_headers(chat_app: str) -> dict[str, str]:
    """A logged-in user of the running app (one per test session)."""
    return register_and_login(chat_app)
