"""The chat page exports a conversation (JSON and Markdown), makes a share link whose
read-only page shows the snapshot to a browser that is not logged in, and imports a
ChatGPT export from the sidebar (issue 14)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from tests.e2e.conftest import new_context, store_messages
from tests.fakes.chatgpt_export import branched_sample


def test_export_and_share_from_the_sidebar(
    page: Page, browser: Any, chat_app: str, api: httpx.Client, pg_url: str
) -> None:
    conv = api.post("/api/conversations", json={"title": "Shared garden"}).json()["id"]
    store_messages(pg_url, conv, [("user", "roses?"), ("assistant", "Water them **daily**.")])
    page.goto(f"{chat_app}/?c={conv}")
    item = page.locator(f"[data-testid=conversation][data-id='{conv}']")
    item.hover()

    with page.expect_download() as got:
        item.get_by_test_id("export-markdown").click()
    markdown = Path(got.value.path()).read_text()
    assert markdown.startswith("# Shared garden\n") and "Water them **daily**." in markdown
    with page.expect_download() as got:
        item.get_by_test_id("export-json").click()
    exported = json.loads(Path(got.value.path()).read_text())
    assert [m["content"] for m in exported["conversations"][0]["messages"]] == [
        "roses?",
        "Water them **daily**.",
    ]

    item.hover()
    item.get_by_test_id("share").click()
    notice = page.get_by_test_id("notice")
    expect(notice).to_contain_text("Read-only link")
    link = re.search(r"https?://\S+#share=\S+", notice.inner_text())
    assert link is not None, notice.inner_text()

    stranger = new_context(browser, None)  # not logged in
    try:
        shared = stranger.new_page()
        shared.goto(link.group(0))
        expect(shared.get_by_test_id("shared-title")).to_have_text("Shared garden")
        messages = shared.get_by_test_id("shared-message")
        expect(messages).to_have_count(2)
        expect(messages.nth(1).locator("strong")).to_have_text("daily")  # Markdown rendered
        # revoked: the same link says so
        (share,) = api.get(f"/api/conversations/{conv}/shares").json()
        assert api.delete(f"/api/shares/{share['id']}").status_code == 204
        shared.reload()
        expect(shared.get_by_test_id("shared-error")).to_contain_text("revoked")
    finally:
        stranger.close()


def test_import_a_chatgpt_export_from_the_sidebar(
    page: Page, chat_app: str, tmp_path: Path
) -> None:
    file = tmp_path / "conversations.json"
    file.write_text(json.dumps(branched_sample()))
    page.goto(chat_app)
    page.get_by_test_id("import-file").set_input_files(str(file))
    expect(page.get_by_test_id("notice")).to_contain_text("Imported 2 chats")
    titles = page.get_by_test_id("conversation-title")
    expect(titles.filter(has_text="Quokka facts")).to_have_count(1)
    titles.filter(has_text="Quokka facts").first.click()
    expect(page.get_by_test_id("messages")).to_contain_text("A quokka, smiling.")
