"""A person chatting in the browser: log in, stream, stop, rename, delete, search, edit,
regenerate; nothing in a model's answer can run script."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import (
    PASSWORD,
    Account,
    auth_available,
    new_context,
    register,
    screenshot_path,
    store_messages,
)

ASSISTANT = "[data-testid=message-assistant]"
USER = "[data-testid=message-user]"

RECORD_LENGTHS = """() => {
  window.__lengths = [];
  const log = document.querySelector('[data-testid=messages]');
  new MutationObserver(() => {
    const bodies = log.querySelectorAll(
      '[data-testid=message-assistant] [data-testid=message-body]');
    const last = bodies[bodies.length - 1];
    if (last) window.__lengths.push(last.textContent.length);
  }).observe(log, {subtree: true, childList: true, characterData: true});
}"""


def open_app(page: Page, base: str, query: str = "") -> None:
    page.goto(f"{base}/{query}")
    expect(page.get_by_test_id("composer")).to_be_visible()


def send(page: Page, text: str) -> None:
    page.get_by_test_id("composer").fill(text)
    page.get_by_test_id("composer").press("Enter")


def wait_answer(page: Page, count: int = 1) -> Any:
    """The `count`-th answer, once finished (its token usage is shown)."""
    answer = page.locator(ASSISTANT).nth(count - 1)
    expect(answer.get_by_test_id("usage")).to_be_visible(timeout=90_000)
    return answer


def stored(api: httpx.Client, base: str, conv: str) -> list[dict[str, Any]]:
    prefix = base.removeprefix(str(api.base_url).rstrip("/"))
    return api.get(f"{prefix}/api/conversations/{conv}").json()["messages"]  # type: ignore[no-any-return]


def current_conversation(page: Page) -> str:
    match = re.search(r"[?&]c=([0-9a-f-]{36})", page.url)
    assert match, page.url
    return match.group(1)


# -- accounts ------------------------------------------------------------------------


def needs_auth(base: str, endpoint: str) -> None:
    if not auth_available(base):
        pytest.skip(f"{endpoint} does not exist yet (accounts not built): the page skips login")


def test_register_then_log_out(browser: Any, chat_app: str) -> None:
    needs_auth(chat_app, "POST /api/auth/register")
    context = new_context(browser, None)
    page = context.new_page()
    page.goto(chat_app + "/")
    expect(page.get_by_test_id("login-form")).to_be_visible()
    page.get_by_test_id("login-toggle").click()
    email = f"new-{uuid.uuid4().hex[:8]}@example.com"
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Name").fill("Ada")
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("who")).to_have_text("Ada")
    expect(page.get_by_test_id("composer")).to_be_visible()

    page.reload()  # the session survives a reload
    expect(page.get_by_test_id("who")).to_have_text("Ada")
    page.get_by_test_id("logout").click()
    expect(page.get_by_test_id("login-form")).to_be_visible()
    page.reload()
    expect(page.get_by_test_id("login-form")).to_be_visible()
    context.close()


def test_log_in_with_a_password(browser: Any, chat_app: str) -> None:
    needs_auth(chat_app, "POST /api/auth/token")
    user = register(chat_app)
    context = new_context(browser, None)
    page = context.new_page()
    page.goto(chat_app + "/")
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill("not the password")
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("login-error")).to_contain_text(re.compile(r"\S"))
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("who")).to_have_text("Web Tester")
    context.close()


def test_log_in_with_an_oidc_provider(browser: Any, chat_app: str, oidc_issuer: Any) -> None:
    needs_auth(chat_app, "GET /api/auth/providers")
    oidc_issuer.reset()  # a well-behaved provider and its default (verified) user
    providers = httpx.get(f"{chat_app}/api/auth/providers").json()
    if not providers:
        pytest.skip("no OIDC provider configured")
    context = new_context(browser, None)
    page = context.new_page()
    page.goto(chat_app + "/")
    page.get_by_test_id(f"provider-{providers[0]['name']}").click()
    expect(page.get_by_test_id("composer")).to_be_visible()
    expect(page.get_by_test_id("logout")).to_be_visible()
    assert "token" not in page.url  # nothing was handed over in the URL
    # the refresh token is a cookie scripts cannot read; nothing is kept in localStorage
    assert "chatapp_refresh" not in page.evaluate("document.cookie")
    assert "token" not in page.evaluate("JSON.stringify(localStorage)")
    context.close()


def test_a_link_with_planted_tokens_does_not_switch_the_account(
    browser: Any, chat_app: str, account: Account | None
) -> None:
    """Login CSRF (issue 9, item 6): the page used to take tokens from any
    `#access_token=…` link and replace the session with the attacker's account, whose
    conversations the victim would then fill."""
    needs_auth(chat_app, "POST /api/auth/token")
    assert account is not None
    address = f"attacker-{uuid.uuid4().hex[:8]}@example.com"
    with httpx.Client(base_url=chat_app, timeout=60) as client:
        client.post(
            "/api/auth/register",
            json={"email": address, "password": PASSWORD, "display_name": "Attacker"},
        )
        attacker = client.post("/api/auth/token", data={"username": address, "password": PASSWORD})
    planted = urlencode({**attacker.json(), "expires_in": 3600})
    context = new_context(browser, account, chat_app)
    page = context.new_page()
    page.goto(f"{chat_app}/#{planted}")
    expect(page.get_by_test_id("composer")).to_be_visible()
    expect(page.get_by_test_id("who")).to_have_text("Web Tester")  # still the victim
    context.close()


# -- chatting ------------------------------------------------------------------------


def test_answer_streams_in_and_survives_a_reload(page: Page, web_sim: str) -> None:
    open_app(page, web_sim)
    page.evaluate(RECORD_LENGTHS)
    send(page, "hello streaming world")
    expect(page.locator(USER).first.get_by_test_id("message-body")).to_have_text(
        "hello streaming world"
    )
    answer = wait_answer(page)
    lengths = page.evaluate("window.__lengths")
    grew = sorted(set(n for n in lengths if n > 0))
    assert len(grew) >= 5, f"the answer should appear piece by piece, saw lengths {grew}"
    assert lengths[lengths.index(grew[0]) :] == sorted(lengths[lengths.index(grew[0]) :])
    text = answer.get_by_test_id("message-body").inner_text()
    assert text.startswith("w0 w1 w2") and "w99" in text
    expect(answer.get_by_test_id("usage")).to_contain_text("100 tokens")
    expect(page.get_by_test_id("composer")).to_have_value("")
    # this server runs without knowledge bases: the page offers none (the list has long
    # loaded by now)
    expect(page.get_by_test_id("knowledge-open")).to_be_hidden()
    expect(page.get_by_test_id("kb-picker")).to_be_hidden()

    conv = current_conversation(page)
    page.reload()
    expect(page.locator(ASSISTANT)).to_have_count(1)
    page.get_by_test_id("new-chat").click()
    expect(page.locator(ASSISTANT)).to_have_count(0)
    item = page.locator(f"[data-testid=conversation][data-id='{conv}']")
    expect(item).to_contain_text("hello streaming world")
    item.locator("button.open").click()
    expect(page.locator(ASSISTANT)).to_contain_text("w99")
    expect(page.get_by_test_id("chat-title")).to_have_text("hello streaming world")


def test_stop_keeps_what_arrived(page: Page, web_sim: str, api: httpx.Client) -> None:
    open_app(page, web_sim)
    send(page, "a long answer please")
    body = page.locator(ASSISTANT).last.get_by_test_id("message-body")
    expect(body).to_contain_text("w3")
    page.get_by_test_id("stop").click()
    expect(page.locator(ASSISTANT).last.get_by_test_id("incomplete")).to_have_text("Stopped")
    expect(page.get_by_test_id("send")).to_be_visible()
    shown = body.inner_text()
    assert "w99" not in shown

    conv = current_conversation(page)
    deadline = time.monotonic() + 30
    while len(messages := stored(api, web_sim, conv)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)  # the server stores the stopped reply right after the disconnect
    assert messages[1]["status"] == "incomplete" and messages[1]["finish_reason"] == "cancelled"
    assert messages[1]["content"].startswith(shown.strip())
    assert "w99" not in messages[1]["content"]

    send(page, "and now a short one")  # the conversation is free again
    wait_answer(page, 2)
    expect(page.locator(USER)).to_have_count(2)


def test_edit_and_resend_and_regenerate(page: Page, web_sim: str, api: httpx.Client) -> None:
    open_app(page, web_sim)
    send(page, "first question")
    wait_answer(page)
    page.locator(ASSISTANT).last.get_by_test_id("regenerate").click()
    wait_answer(page)
    expect(page.locator(ASSISTANT)).to_have_count(1)

    page.locator(USER).first.get_by_test_id("edit").click()
    page.get_by_test_id("edit-input").fill("edited question")
    page.get_by_test_id("edit-send").click()
    wait_answer(page)
    expect(page.locator(USER)).to_have_count(1)
    expect(page.locator(USER).first.get_by_test_id("message-body")).to_have_text("edited question")

    conv = current_conversation(page)
    messages = stored(api, web_sim, conv)
    assert [(m["seq"], m["role"]) for m in messages] == [(0, "user"), (1, "assistant")]
    assert messages[0]["content"] == "edited question" and messages[1]["status"] == "complete"


def test_rename_and_delete(page: Page, web_sim: str) -> None:
    open_app(page, web_sim)
    send(page, "conversation to rename")
    wait_answer(page)
    conv = current_conversation(page)
    item = page.locator(f"[data-testid=conversation][data-id='{conv}']")
    item.hover()
    item.get_by_test_id("rename").click()
    page.get_by_test_id("rename-input").fill("Renamed in the browser")
    page.get_by_test_id("rename-input").press("Enter")
    expect(item).to_contain_text("Renamed in the browser")
    expect(page.get_by_test_id("chat-title")).to_have_text("Renamed in the browser")

    page.reload()
    expect(item).to_contain_text("Renamed in the browser")
    # the browser sends one refresh cookie, the one the last refresh set (two, and the
    # server read the spent one: the session ended on a reload 10 s after the first)
    sent = page.context.cookies(f"{web_sim}/api/auth/refresh")
    assert [c["name"] for c in sent] == ["chatapp_refresh"], sent
    item.hover()
    item.get_by_test_id("delete").click()
    item.get_by_test_id("confirm-delete").click()
    expect(item).to_have_count(0)
    expect(page.locator(ASSISTANT)).to_have_count(0)  # it was open: back to a new chat
    page.reload()
    expect(page.get_by_test_id("conversation-list")).to_be_visible()
    expect(item).to_have_count(0)


def test_a_stored_fallback_answer_keeps_its_badge(
    page: Page, chat_app: str, api: httpx.Client, pg_url: str
) -> None:
    """The fallback badge is stored with the reply, so it is there on a page that was
    not watching the answer arrive (a reload, another device)."""
    conv = api.post("/api/conversations", json={"title": "Fell back"}).json()["id"]
    store_messages(pg_url, conv, [("user", "hello"), ("assistant", "hi")], fallback_from="gpt-x")
    open_app(page, chat_app, f"?c={conv}")
    badge = page.locator(ASSISTANT).first.get_by_test_id("fallback")
    expect(badge).to_have_text(
        "Answered by fallback model smollm2-135m-instruct (instead of gpt-x)"
    )


def test_search_by_title_and_content(page: Page, web_sim: str, api: httpx.Client) -> None:
    prefix = "/websim"
    word = f"pangolin{uuid.uuid4().hex[:6]}"
    titled = api.post(f"{prefix}/api/conversations", json={"title": f"All about {word}"}).json()
    talked = api.post(f"{prefix}/api/conversations", json={}).json()
    reply = api.post(
        f"{prefix}/api/conversations/{talked['id']}/messages",
        json={"content": f"do you know the {word.upper()}?", "stream": False, "max_tokens": 2},
    )
    assert reply.status_code == 200, reply.text

    open_app(page, web_sim)
    page.get_by_test_id("search").fill(word)
    items = page.get_by_test_id("conversation")
    expect(items).to_have_count(2)
    expect(items.nth(0)).to_have_attribute("data-id", talked["id"])
    expect(items.nth(1)).to_have_attribute("data-id", titled["id"])
    page.get_by_test_id("search").fill(f"all about {word}")
    expect(items).to_have_count(1)
    expect(items.first).to_have_attribute("data-id", titled["id"])
    page.get_by_test_id("search").fill(f"nothing-{word}")
    expect(items).to_have_count(0)
    page.get_by_test_id("search").fill("")
    expect(items.first).to_be_visible()


HOSTILE = """Here is some HTML:

<script>window.__pwned = 'script'</script>
<img src="x" onerror="window.__pwned = 'img'">
[click me](javascript:window.__pwned='link') and <a href="javascript:window.__pwned='a'">this</a>

```python
def greet(name: str) -> str:
    return f"Hello, {name}!"  # a comment
```

**Bold**, `inline code` and a table:

| a | b |
|---|---|
| 1 | 2 |
"""


def test_an_answer_with_markup_is_inert(
    page: Page, chat_app: str, api: httpx.Client, pg_url: str
) -> None:
    conv = api.post("/api/conversations", json={"title": "Markup"}).json()["id"]
    store_messages(pg_url, conv, [("user", "show me <b>html</b>"), ("assistant", HOSTILE)])
    open_app(page, chat_app, f"?c={conv}")
    answer = page.locator(ASSISTANT).first
    expect(answer).to_contain_text("<script>window.__pwned = 'script'</script>")
    expect(answer).to_contain_text('<img src="x" onerror=')
    expect(page.locator(USER).first.get_by_test_id("message-body")).to_have_text(
        "show me <b>html</b>"
    )
    assert answer.locator("script, img, iframe").count() == 0
    assert page.locator("[data-testid=messages] a[href^='javascript']").count() == 0
    assert answer.locator("[onerror], [onclick]").count() == 0
    for link in answer.locator("a").all():
        link.click(modifiers=["Control"])  # even clicked, nothing runs
    assert page.evaluate("window.__pwned") is None
    # Markdown still renders, code highlighted
    expect(answer.locator("pre code .hljs-keyword").first).to_have_text("def")
    expect(answer.locator("strong")).to_have_text("Bold")
    expect(answer.locator("table td").first).to_have_text("1")
    expect(answer.get_by_test_id("usage")).to_contain_text("57 tokens")


CODE_ANSWER = """Here is a small function:

```python
def greet(name: str) -> str:
    \"\"\"Say hello.\"\"\"
    return f"Hello, {name}!"  # an f-string


print(greet("Ada"))
```

Call it with any **name**; it returns a `str`.
"""


# -- screenshots of the main views ---------------------------------------------------


def test_screenshots_of_the_main_views(
    browser: Any,
    chat_app: str,
    account: Account | None,
    api: httpx.Client,
    pg_url: str,
    tmp_path: Path,
) -> None:
    # Log in (the real login screen once accounts exist).
    context = new_context(browser, None)
    login = context.new_page()
    login.goto(chat_app + "/")
    if account is not None:
        expect(login.get_by_test_id("login-form")).to_be_visible()
        login.screenshot(path=screenshot_path(tmp_path, "login.png"))
    context.close()

    # A streamed answer from the real SmolLM2 model.
    context = new_context(browser, account, chat_app)
    page = context.new_page()
    open_app(page, chat_app)
    send(page, "What is the capital of France?")
    wait_answer(page)
    page.screenshot(path=screenshot_path(tmp_path, "chat.png"))
    context.close()

    # Phone width, conversations drawer open, and dark mode with Markdown and code.
    conv = api.post("/api/conversations", json={"title": "Greeting function in Python"}).json()
    store_messages(
        pg_url,
        conv["id"],
        [("user", "Write a Python function that greets someone."), ("assistant", CODE_ANSWER)],
    )
    context = new_context(
        browser,
        account,
        chat_app,
        viewport={"width": 390, "height": 844},
        color_scheme="dark",
        is_mobile=True,
        has_touch=True,
    )
    phone = context.new_page()
    open_app(phone, chat_app, f"?c={conv['id']}")
    expect(phone.locator("pre code .hljs-keyword").first).to_be_visible()
    phone.screenshot(path=screenshot_path(tmp_path, "phone-dark.png"))
    phone.get_by_test_id("menu").click()
    expect(phone.get_by_test_id("new-chat")).to_be_in_viewport()
    phone.screenshot(path=screenshot_path(tmp_path, "phone-sidebar.png"))
    context.close()

    context = new_context(browser, account, chat_app, color_scheme="dark")
    dark = context.new_page()
    open_app(dark, chat_app, f"?c={conv['id']}")
    expect(dark.locator("pre code .hljs-keyword").first).to_be_visible()
    dark.screenshot(path=screenshot_path(tmp_path, "dark.png"))
    context.close()
