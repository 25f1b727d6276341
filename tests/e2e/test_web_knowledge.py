"""The page's knowledge-base picker shows what a turn uses (issue 14): on a fresh page the
server's default knowledge base, whose sources the answer cites; "No knowledge base" is
remembered and answers without sources."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.fakes.corpus import write_corpus

PREFIX = "/kbweb"
ASSISTANT = "[data-testid=message-assistant]"


@pytest.fixture(scope="module")
def kb_web(chat_app: str, pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """ChatApp whose default knowledge base is the garden corpus, at <base>/kbweb/."""
    from ray import serve

    from actors.client import kill_shards
    from chatapp.config import RagSettings, Settings
    from deployments.app import build_app
    from pipelines.build_index import build_index
    from tests.conftest import run_app

    root = tmp_path_factory.mktemp("kbweb")
    rag = {
        "index_dir": str(root / "indexes"),
        "default_kb": "garden",
        "chunk_tokens": 64,
        "chunk_overlap": 8,
        "min_replicas": 1,
        "max_replicas": 1,
    }
    overrides = {
        "database": {"url": pg_url},
        "llm": {"engine": "simulated", "simulated_reply_tokens": 4},
        "shards": {"count": 1, "name_prefix": f"kbweb-{uuid.uuid4().hex[:6]}"},
        "rag": rag,
    }

    def start() -> None:
        build_index([str(write_corpus(root / "corpus"))], kb="garden", rag=RagSettings(**rag))
        run_app(build_app(overrides), name="kbweb", route_prefix=PREFIX, base_url=chat_app)

    # Playwright's loop is current on this thread: set the app up on another.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(start).result()
    yield f"{chat_app}{PREFIX}"
    serve.delete("kbweb")
    kill_shards(Settings.from_overrides(overrides))


def ask(page: Page, text: str, count: int) -> Any:
    page.get_by_test_id("composer").fill(text)
    page.get_by_test_id("composer").press("Enter")
    answer = page.locator(ASSISTANT).nth(count - 1)
    expect(answer.get_by_test_id("usage")).to_be_visible(timeout=90_000)
    return answer


def test_the_picker_shows_the_knowledge_base_in_use(page: Page, kb_web: str) -> None:
    page.goto(f"{kb_web}/")
    picker = page.get_by_test_id("kb-picker")
    expect(picker).to_have_value("garden")  # not "No knowledge base" while grounded in it
    answer = ask(page, "When should I prune my roses?", 1)
    expect(answer.get_by_test_id("sources")).to_contain_text("Pruning roses")

    picker.select_option("")
    page.reload()
    expect(page.get_by_test_id("kb-picker")).to_have_value("")  # the choice is remembered
    page.get_by_test_id("new-chat").click()
    answer = ask(page, "When should I prune my roses?", 1)
    expect(answer.get_by_test_id("sources")).to_have_count(0)


def test_a_message_sent_before_the_list_loads_keeps_the_remembered_choice(
    page: Page, kb_web: str
) -> None:
    """The picker is filled when the knowledge-base list arrives; a message sent before
    that must still carry the remembered "No knowledge base" (as `rag: off`): sent without
    it, the server grounds the answer in its default knowledge base."""
    page.goto(f"{kb_web}/")
    expect(page.get_by_test_id("kb-picker")).to_have_value("garden")
    page.get_by_test_id("kb-picker").select_option("")  # remembered in this browser

    held: list[Any] = []  # the next page's list request, answered only when released
    page.route("**/api/knowledge-bases", lambda route: held.append(route))
    with page.expect_request("**/api/knowledge-bases"):
        page.goto(f"{kb_web}/")
    page.get_by_test_id("composer").fill("When should I prune my roses?")
    is_turn = lambda r: r.method == "POST" and r.url.endswith("/messages")  # noqa: E731
    with page.expect_request(is_turn) as posted:
        page.get_by_test_id("composer").press("Enter")
        expect(page.locator(ASSISTANT)).to_have_count(1)  # the turn is shown at once...
        assert held, "the list request was not held"
        held[0].continue_()  # ...and sent once the list is there
        page.unroute("**/api/knowledge-bases")
    assert posted.value.post_data_json.get("rag") == "off", posted.value.post_data
    answer = page.locator(ASSISTANT).first
    expect(answer.get_by_test_id("usage")).to_be_visible(timeout=90_000)
    expect(answer.get_by_test_id("sources")).to_have_count(0)
    expect(page.get_by_test_id("kb-picker")).to_have_value("")
