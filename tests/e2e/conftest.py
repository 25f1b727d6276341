"""Browser tests: Debian's headless Chromium driven by Playwright (no browser download),
against ChatApp running on Ray Serve. A second app with a simulated engine of fixed
speed is served under /websim/ for answers slow enough to watch and stop."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct horse battery staple"
# Where the README's screenshots are written: CHATAPP_SCREENSHOTS=docs/screenshots.
SCREENSHOTS = os.environ.get("CHATAPP_SCREENSHOTS")


@dataclass
class Account:
    email: str
    password: str
    tokens: dict[str, Any]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens['access_token']}"}


def auth_available(base_url: str) -> bool:
    return httpx.get(f"{base_url}/api/auth/providers", timeout=30).status_code != 404


def register(base_url: str, email: str | None = None) -> Account:
    email = email or f"web-{uuid.uuid4().hex[:10]}@example.com"
    with httpx.Client(base_url=base_url, timeout=60) as client:
        created = client.post(
            "/api/auth/register",
            json={"email": email, "password": PASSWORD, "display_name": "Web Tester"},
        )
        assert created.status_code == 201, created.text
        token = client.post("/api/auth/token", data={"username": email, "password": PASSWORD})
        assert token.status_code == 200, token.text
    return Account(email, PASSWORD, token.json())


@pytest.fixture(scope="package")
def browser(chat_app: str, web_sim: str, pg_url: str) -> Iterator[Any]:
    # Playwright's sync API keeps an event loop running on this thread while it is open:
    # fixtures that use asyncio.run (the database, the app) are set up before it, it is
    # closed when the browser tests end, and those run last (tests/conftest.py).
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set CHROMIUM_PATH)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)  # a busy 2-core machine: wait for conditions
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def account(chat_app: str) -> Account | None:
    """One logged-in user for the browser tests (None while the app has no accounts)."""
    return register(chat_app) if auth_available(chat_app) else None


@pytest.fixture(scope="session")
def web_sim(chat_app: str, pg_url: str) -> Iterator[str]:
    """ChatApp with a simulated engine (25 words/s, 100 words) at <base>/websim/, without
    knowledge bases (RAG_ENABLED=false)."""
    from ray import serve

    from actors.client import kill_shards
    from chatapp.config import Settings
    from deployments.app import build_app
    from tests.conftest import run_app

    overrides = {
        "database": {"url": pg_url},
        "llm": {"engine": "simulated", "simulated_tokens_per_s": 25, "simulated_reply_tokens": 100},
        "shards": {"count": 1, "name_prefix": f"websim-{uuid.uuid4().hex[:6]}"},
        "auth": {"chat_request_limit": "10000/minute"},
        "rag": {"enabled": False},
    }
    run_app(build_app(overrides), name="websim", route_prefix="/websim", base_url=chat_app)
    yield f"{chat_app}/websim"
    serve.delete("websim")
    kill_shards(Settings.from_overrides(overrides))


def new_context(
    browser: Any, account: Account | None, base_url: str | None = None, **options: Any
) -> Any:
    """A browser context; with `account`, logged in as a browser is after a login: a new
    session whose refresh token sits in the HttpOnly cookie (for `base_url`'s app and the
    /websim/ one), which the page trades for an access token when it loads."""
    options.setdefault("viewport", {"width": 1280, "height": 800})
    context = browser.new_context(**options)
    if account is not None:
        assert base_url is not None
        with httpx.Client(base_url=base_url, timeout=60) as client:
            fresh = client.post(
                "/api/auth/token", data={"username": account.email, "password": account.password}
            )
            assert fresh.status_code == 200, fresh.text
        context.add_cookies(
            [
                {
                    "name": "chatapp_refresh",
                    "value": fresh.json()["refresh_token"],
                    # the path the server sets it with: given a `url`, Playwright would
                    # take its folder (/api/auth/), and the browser would then send this
                    # cookie beside each rotated one the server sets, and the server read
                    # this spent one (the session ends 10 s after the page's first refresh)
                    "domain": httpx.URL(base_url).host,
                    "path": f"{prefix}/api/auth/refresh",
                    "httpOnly": True,
                    "sameSite": "Strict",
                }
                for prefix in ("", "/websim", "/kbweb")
            ]
        )
    return context


@pytest.fixture
def page(browser: Any, account: Account | None, chat_app: str) -> Iterator[Any]:
    """A logged-in page; fails the test on any uncaught script error."""
    context = new_context(browser, account, chat_app)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"script errors on the page: {errors}"


@pytest.fixture
def api(chat_app: str, account: Account | None) -> Iterator[httpx.Client]:
    headers = account.headers if account else {}
    with httpx.Client(base_url=chat_app, timeout=60, headers=headers) as client:
        yield client


def store_messages(
    pg_url: str,
    conversation_id: str,
    messages: list[tuple[str, str]],
    *,
    fallback_from: str | None = None,
) -> None:
    """Write messages straight into SQL (a conversation never used by a shard); replies
    answered by a fallback for `fallback_from` when it is given."""
    from chatapp.chat import repository
    from chatapp.chat.ports import ReplyRecord
    from chatapp.config import DatabaseSettings
    from chatapp.db.engine import make_engine, make_sessionmaker

    async def write() -> None:
        engine = make_engine(DatabaseSettings(url=pg_url))
        try:
            async with make_sessionmaker(engine)() as session:
                for seq, (role, content) in enumerate(messages):
                    await repository.append_message(
                        session=session,
                        conversation_id=uuid.UUID(conversation_id),
                        seq=seq,
                        message=content
                        if role == "user"
                        else ReplyRecord(
                            content=content,
                            status="complete",
                            finish_reason="stop",
                            model="smollm2-135m-instruct",
                            prompt_tokens=42,
                            completion_tokens=57,
                            fallback_from=fallback_from,
                        ),
                    )
        finally:
            await engine.dispose()

    # Playwright's loop is current on this thread: run ours on another.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, write()).result()


def screenshot_path(tmp_path: Path, name: str) -> Path:
    folder = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name
