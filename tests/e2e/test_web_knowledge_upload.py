"""A person's own knowledge bases in the browser (issue 14): log in, create one, upload a
Markdown file, watch the indexing progress reach done, choose it in the picker and ask;
the answer cites the uploaded file. Shared read-only with a second user, it is in their
picker and panel, without the owner's controls; a file of the wrong kind is refused with
the server's reason."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, FilePayload, Page, expect

from tests.e2e.conftest import Account, new_context, register, screenshot_path

PREFIX = "/kbupload"
ASSISTANT = "[data-testid=message-assistant]"
FACT_MD = b"""# Lighthouse log

## Paint

The Quillfeather lighthouse was painted teal in 1923 by the keeper Ottoline Marsh,
who mixed the paint from copper filings and linseed oil.
"""


@pytest.fixture(scope="module")
def kb_app(chat_app: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """ChatApp with no shared knowledge base and the simulated engine, at <base>/kbupload/,
    on a database of its own: index jobs are claimed from the database, and another app's
    indexer (other folders) must not take this one's."""
    from ray import serve

    from actors.client import kill_shards
    from chatapp.config import Settings
    from deployments.app import build_app
    from tests.conftest import fresh_database, run_app

    root = tmp_path_factory.mktemp("kbupload")
    rag = {
        "index_dir": str(root / "indexes"),
        "upload_dir": str(root / "uploads"),
        "chunk_tokens": 64,
        "chunk_overlap": 8,
        "indexer_poll_s": 0.2,
        "min_replicas": 1,
        "max_replicas": 1,
    }
    # Playwright's loop is current on this thread: the database (asyncio.run) and the app
    # are set up, and the database dropped, on another.
    database = fresh_database()
    with ThreadPoolExecutor(1) as pool:
        pg_url = pool.submit(database.__enter__).result()
        overrides = {
            "database": {"url": pg_url},
            "llm": {"engine": "simulated", "simulated_reply_tokens": 4},
            "shards": {"count": 1, "name_prefix": f"kbupload-{uuid.uuid4().hex[:6]}"},
            "rag": rag,
        }
        try:
            yield pool.submit(
                lambda: run_app(
                    build_app(overrides), name="kbupload", route_prefix=PREFIX, base_url=chat_app
                )
            ).result()
            serve.delete("kbupload")
            kill_shards(Settings.from_overrides(overrides))
        finally:
            pool.submit(database.__exit__, None, None, None).result()


@pytest.fixture
def browser_page(browser: Browser) -> Iterator[Page]:
    """A page with no session (the test logs in); fails on any uncaught script error."""
    context = new_context(browser, None)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"script errors on the page: {errors}"


def log_in(page: Page, base: str, account: Account) -> None:
    page.goto(f"{base}/")
    expect(page.get_by_test_id("login-form")).to_be_visible()
    page.get_by_label("Email").fill(account.email)
    page.get_by_label("Password").fill(account.password)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("composer")).to_be_visible()


def open_panel(page: Page) -> None:
    page.get_by_test_id("knowledge-open").click()
    expect(page.get_by_test_id("knowledge-panel")).to_be_visible()


def create(page: Page, name: str) -> str:
    """Create a knowledge base in the open panel; its id."""
    page.get_by_label("New knowledge base").fill(name)
    page.get_by_test_id("kb-create").click()
    expect(page.get_by_test_id("kb-title")).to_have_text(name)
    item = page.get_by_test_id("kb-list").locator("li.active")
    expect(item).to_contain_text(name)
    kb_id = item.get_attribute("data-id")
    assert kb_id and kb_id.startswith("kb-"), kb_id
    return kb_id


def test_upload_index_and_chat_with_a_citation_screenshots(
    browser_page: Page, kb_app: str, tmp_path: Path
) -> None:
    page = browser_page
    log_in(page, kb_app, register(kb_app))
    expect(page.get_by_test_id("knowledge-open")).to_be_visible()
    open_panel(page)
    kb_id = create(page, "Lighthouse notes")
    expect(page.get_by_test_id("kb-use")).to_be_disabled()  # nothing indexed yet

    fact = FilePayload(name="lighthouse.md", mimeType="text/markdown", buffer=FACT_MD)
    page.get_by_test_id("kb-upload").set_input_files([fact])
    progress = page.get_by_role("progressbar", name="Indexing progress")
    expect(progress).to_be_visible()
    expect(progress).to_have_attribute("aria-valuenow", "100", timeout=120_000)
    expect(page.get_by_test_id("kb-progress-text")).to_contain_text("1 of 1 files")
    file_row = page.get_by_test_id("kb-file")
    expect(file_row).to_contain_text("lighthouse.md")
    expect(file_row.get_by_test_id("kb-file-status")).to_have_text("indexed")
    expect(page.get_by_test_id("kb-use")).to_be_enabled()
    expect(page.get_by_test_id("kb-summary")).to_contain_text("1 document")
    page.screenshot(path=screenshot_path(tmp_path, "knowledge-upload.png"))

    page.get_by_test_id("kb-use").click()
    expect(page.get_by_test_id("knowledge-panel")).to_be_hidden()
    expect(page.get_by_test_id("kb-picker")).to_have_value(kb_id)
    page.get_by_test_id("composer").fill("What colour was the Quillfeather lighthouse painted?")
    page.get_by_test_id("composer").press("Enter")
    answer = page.locator(ASSISTANT).first
    expect(answer.get_by_test_id("usage")).to_be_visible(timeout=90_000)
    sources = answer.get_by_test_id("sources")
    sources.locator("summary").click()
    cited = sources.get_by_test_id("source").first
    expect(cited).to_contain_text("lighthouse.md")
    expect(cited).to_contain_text("teal in 1923")
    page.screenshot(path=screenshot_path(tmp_path, "knowledge-upload-chat.png"))


def test_shared_read_only_and_a_refused_file(browser: Browser, kb_app: str) -> None:
    alice, bob = register(kb_app), register(kb_app)
    with httpx.Client(base_url=kb_app, headers=alice.headers, timeout=60) as api:
        made = api.post("/api/knowledge-bases", json={"name": "Alice's recipes"})
        assert made.status_code == 201, made.text
        kb_id = made.json()["id"]
        sent = api.post(
            f"/api/knowledge-bases/{kb_id}/files",
            files=[("files", ("bread.md", b"# Bread\n\nRye rests a night.", "text/markdown"))],
        )
        assert sent.status_code == 202, sent.text

    context = new_context(browser, None)
    page = context.new_page()
    log_in(page, kb_app, alice)
    open_panel(page)
    page.get_by_role("button", name=re.compile("Alice's recipes")).click()
    exe = FilePayload(name="tool.exe", mimeType="application/octet-stream", buffer=b"MZ\x90\x00")
    page.get_by_test_id("kb-upload").set_input_files([exe])
    expect(page.get_by_test_id("kb-upload-error")).to_contain_text("tool.exe")
    page.get_by_label("Share read-only with").fill(bob.email)
    page.get_by_test_id("kb-share").click()
    expect(page.get_by_test_id("kb-reader")).to_contain_text(bob.email)
    context.close()

    context = new_context(browser, None)
    page = context.new_page()
    log_in(page, kb_app, bob)
    offered = page.get_by_test_id("kb-picker").locator(f"option[value='{kb_id}']")
    expect(offered).to_contain_text(f"Alice's recipes ({alice.email})")
    open_panel(page)
    page.get_by_role("button", name=re.compile("Alice's recipes")).click()
    expect(page.get_by_test_id("kb-summary")).to_contain_text(f"Shared with you by {alice.email}")
    expect(page.get_by_test_id("kb-file")).to_contain_text("bread.md")
    expect(page.get_by_test_id("kb-upload")).to_have_count(0)  # no owner's controls
    expect(page.get_by_test_id("kb-file-delete")).to_have_count(0)
    expect(page.get_by_test_id("kb-delete")).to_have_count(0)
    context.close()
