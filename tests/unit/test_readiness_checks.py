"""Readiness aggregation (chatapp/health.py), with probes that pass, fail and hang."""

from __future__ import annotations

import asyncio
import time

from chatapp.config import RagSettings
from chatapp.errors import ServiceUnavailable
from chatapp.health import NotReady, ReadinessChecker, knowledge_base_probe
from chatapp.rag.schemas import KnowledgeBasePublic


async def ok() -> None:
    return None


async def refused() -> None:
    raise OSError("connect to 10.1.2.3:5432 as chatapp:hunter2 failed")


async def hangs() -> None:
    await asyncio.sleep(3600)


async def test_every_check_passing_is_ready() -> None:
    checker = ReadinessChecker({"database": ok, "models": ok}, required=["database"], timeout_s=1)
    readiness = await checker.check()
    assert readiness.ready and readiness.status == "ready"
    body = readiness.public()
    assert body["status"] == "ready"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["database"]["required"] is True
    assert body["checks"]["models"]["required"] is False


async def test_an_optional_check_failing_is_degraded_and_still_ready() -> None:
    checker = ReadinessChecker(
        {"database": ok, "redis": refused}, required=["database"], timeout_s=1
    )
    readiness = await checker.check()
    assert readiness.ready and readiness.status == "degraded"
    assert readiness.public()["checks"]["redis"]["status"] == "failing"


async def test_a_required_check_failing_is_not_ready_without_leaking_its_error() -> None:
    checker = ReadinessChecker({"database": refused}, required=["database"], timeout_s=1)
    readiness = await checker.check()
    assert not readiness.ready and readiness.status == "not_ready"
    reason = readiness.public()["checks"]["database"]["reason"]
    assert reason == "failed (OSError)"  # the address and the password stay in the logs


async def test_chatapp_messages_are_shown_as_they_are() -> None:
    async def router_down() -> None:
        raise ServiceUnavailable("the model router is unavailable; retry in a moment")

    async def not_loaded() -> None:
        raise NotReady("the default knowledge base 'docs' is not loaded")

    checker = ReadinessChecker(
        {"models": router_down, "knowledge_base": not_loaded}, required=["models"], timeout_s=1
    )
    checks = (await checker.check()).public()["checks"]
    assert checks["models"]["reason"] == "the model router is unavailable; retry in a moment"
    assert checks["knowledge_base"]["reason"] == "the default knowledge base 'docs' is not loaded"


async def test_a_hanging_dependency_is_cut_at_its_timeout_and_the_others_still_answer() -> None:
    checker = ReadinessChecker(
        {"database": hangs, "redis": hangs, "models": ok}, required=["database"], timeout_s=0.2
    )
    started = time.perf_counter()
    readiness = await checker.check()
    assert time.perf_counter() - started < 1.0  # the checks run at once
    checks = readiness.public()["checks"]
    assert checks["database"]["reason"] == "no answer within 0.2 s"
    assert checks["redis"]["status"] == "failing" and checks["models"]["status"] == "ok"
    assert readiness.status == "not_ready"


async def test_concurrent_probes_share_one_run_and_results_are_reused() -> None:
    runs = 0

    async def counted() -> None:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.05)

    now = [0.0]
    checker = ReadinessChecker(
        {"database": counted}, required=["database"], timeout_s=1, cache_s=1, clock=lambda: now[0]
    )
    await asyncio.gather(*(checker.check() for _ in range(20)))
    await checker.check()
    assert runs == 1
    now[0] = 1.5
    await checker.check()
    assert runs == 2


def _kb(name: str) -> KnowledgeBasePublic:
    return KnowledgeBasePublic.model_validate(
        {
            "id": name,
            "name": name,
            "version": 1,
            "documents": 1,
            "chunks": 1,
            "model": "m",
            "index_kind": "flat",
            "mode": "auto",
            "created_at": "2026-01-01T00:00:00Z",
        }
    )


class Served:
    def __init__(self, *names: str) -> None:
        self.names = names

    async def search(self, *args: object, **kwargs: object) -> list[object]:
        return []

    async def knowledge_bases(self) -> list[KnowledgeBasePublic]:
        return [_kb(n) for n in self.names]


async def test_the_knowledge_base_check_wants_the_default_one_unless_its_rag_is_off() -> None:
    rag = RagSettings(default_kb="docs")
    await knowledge_base_probe(Served("docs", "hr"), rag)()  # type: ignore[arg-type]
    checker = ReadinessChecker(
        {"knowledge_base": knowledge_base_probe(Served("hr"), rag)},  # type: ignore[arg-type]
        required=[],
        timeout_s=1,
    )
    reason = (await checker.check()).public()["checks"]["knowledge_base"]["reason"]
    assert reason == "the default knowledge base 'docs' is not loaded"
    off = RagSettings(default_kb="docs", mode="off")
    await knowledge_base_probe(Served(), off)()  # type: ignore[arg-type]
