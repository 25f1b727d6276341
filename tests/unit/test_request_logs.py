"""Request ids, request log lines and the model's share of a request's time
(chatapp/logs.py, chatapp/overhead.py), without Ray or HTTP."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator, Sequence

import pytest

from chatapp.config import LogSettings
from chatapp.llm.base import ChatMessage, Chunk, Finish, SamplingParams, TextDelta
from chatapp.logs import (
    accepted_request_id,
    bind_user,
    log_request,
    make_handler,
    request_scope,
)
from chatapp.overhead import TimedModelRouter, overhead_ms


@pytest.mark.parametrize(
    "value",
    ["7abd2f11-5e1b-4c09-985a-477d0b051f29", "a1b2c3", "req:42.retry-1", "dGVzdA==", "x" * 128],
)
def test_sane_request_ids_are_kept(value: str) -> None:
    assert accepted_request_id(value) == value


@pytest.mark.parametrize(
    "value",
    [None, "", "x" * 129, "two words", 'quo"te', "new\nline", "ünïcode", "-leading", "{json}"],
)
def test_other_request_ids_are_refused(value: str | None) -> None:
    assert accepted_request_id(value) is None


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = make_handler(LogSettings(format="json"), environment="development", stream=out)
    logger = logging.getLogger("tests.request_logs")
    access = logging.getLogger("chatapp.access")
    for lg in (logger, access):
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    yield out
    for lg in (logger, access):
        lg.removeHandler(handler)
        lg.setLevel(logging.NOTSET)


def _records(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_every_line_written_during_a_request_carries_its_id_and_user(lines: io.StringIO) -> None:
    logger = logging.getLogger("tests.request_logs")
    logger.info("before")
    with request_scope("req-1") as context:
        logger.info("anonymous so far")
        bind_user("user-7")
        logger.warning("known now")
        log_request(context, method="GET", route="/api/me", status=200, completed=True)
    logger.info("after")
    before, anonymous, known, access, after = _records(lines)
    assert "request_id" not in before and "request_id" not in after
    assert anonymous["request_id"] == "req-1" and "user_id" not in anonymous
    assert known["request_id"] == "req-1" and known["user_id"] == "user-7"
    assert known["level"] == "WARNING" and known["logger"] == "tests.request_logs"
    assert access["logger"] == "chatapp.access" and access["message"].startswith("GET /api/me 200")
    assert access["method"] == "GET" and access["route"] == "/api/me" and access["status"] == 200
    assert isinstance(access["duration_ms"], float) and "time" in access


def test_text_lines_show_the_request_id(lines: io.StringIO) -> None:
    out = io.StringIO()
    handler = make_handler(LogSettings(format="text"), environment="production", stream=out)
    logger = logging.getLogger("tests.request_logs")
    logger.addHandler(handler)
    try:
        logger.info("outside")
        with request_scope("req-2"):
            logger.info("inside")
    finally:
        logger.removeHandler(handler)
    outside, inside = out.getvalue().splitlines()
    assert "[-] outside" in outside and "[req-2] inside" in inside


def test_json_is_the_production_default() -> None:
    assert LogSettings().format_for("production") == "json"
    assert LogSettings().format_for("development") == "text"
    assert LogSettings(format="text").format_for("production") == "text"


class SlowRouter:
    """A model router whose first chunk takes 0.2 s and the rest 0.05 s each."""

    def __init__(self) -> None:
        self.closed = False

    def stream(
        self, messages: Sequence[ChatMessage], params: SamplingParams, **_: object
    ) -> AsyncIterator[Chunk]:
        async def chunks() -> AsyncIterator[Chunk]:
            try:
                await asyncio.sleep(0.2)
                yield TextDelta("Hello")
                await asyncio.sleep(0.05)
                yield TextDelta(" there")
                await asyncio.sleep(0.05)
                yield Finish("stop", 3, 2)
            finally:
                self.closed = True

        return chunks()


async def test_the_wait_on_the_model_is_not_chatapp_overhead() -> None:
    inner = SlowRouter()
    router = TimedModelRouter(inner)
    with request_scope("req-3") as context:
        await asyncio.sleep(0.1)  # ChatApp's own work before the model is called
        stream = router.stream([ChatMessage("user", "hi")], SamplingParams(max_tokens=4))
        first = await anext(stream)
        assert first == TextDelta("Hello")
        assert 0.19 <= context.model_wait_s < 0.3
        at_first_token = overhead_ms(context)
        assert 90 <= at_first_token < 190  # the 0.1 s of own work, not the 0.2 s wait
        rest = [chunk async for chunk in stream]
        assert isinstance(rest[-1], Finish) and context.model_wait_s >= 0.29
    assert inner.closed


async def test_closing_the_timed_stream_closes_the_model_stream() -> None:
    inner = SlowRouter()
    with request_scope("req-4"):
        stream = TimedModelRouter(inner).stream([], SamplingParams(max_tokens=4))
        await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined]
    assert inner.closed
