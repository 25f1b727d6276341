"""The chat page shows where a long chat's running summary stands in for older messages."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
from playwright.sync_api import Page, expect

from tests.e2e.conftest import store_messages

MESSAGES = "[data-testid=messages] > *"


def store_summary(pg_url: str, conversation_id: str, covers_seq: int) -> None:
    """A running summary as the compactor stores it (chatapp.chat.summaries)."""
    from chatapp.chat import summaries
    from chatapp.config import DatabaseSettings
    from chatapp.db.engine import make_engine, make_sessionmaker

    async def write() -> None:
        engine = make_engine(DatabaseSettings(url=pg_url))
        try:
            async with make_sessionmaker(engine)() as session:
                stored = await summaries.add_summary(
                    session=session,
                    conversation_id=uuid.UUID(conversation_id),
                    content="The user asked about roses and tulips.",
                    covers_seq=covers_seq,
                    model="smollm2-135m-instruct",
                )
            assert stored is not None
        finally:
            await engine.dispose()

    # Playwright's loop is current on this thread: run ours on another.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, write()).result()


def test_the_page_marks_where_the_summary_stands_in(
    page: Page, chat_app: str, api: httpx.Client, pg_url: str
) -> None:
    conv = api.post("/api/conversations", json={"title": "Garden"}).json()["id"]
    turns = [("user", "roses?"), ("assistant", "water them"), ("user", "tulips?")]
    store_messages(pg_url, conv, [*turns, ("assistant", "in spring")])
    store_summary(pg_url, conv, covers_seq=1)
    page.goto(f"{chat_app}/?c={conv}")
    note = page.get_by_test_id("summary-note")
    expect(note).to_have_text("Earlier messages summarised")
    # In the log: the two summarised messages, the note, then the messages read in full.
    items = page.locator(MESSAGES)
    expect(items).to_have_count(5)
    kinds = [items.nth(i).get_attribute("data-testid") for i in range(5)]
    assert kinds == [
        "message-user",
        "message-assistant",
        "summary-note",
        "message-user",
        "message-assistant",
    ]
    expect(items.nth(3)).to_contain_text("tulips?")
