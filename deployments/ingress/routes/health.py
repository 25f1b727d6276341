"""GET /healthz (the process answers: liveness) and GET /readyz (its dependencies answer:
readiness, per dependency; `chatapp.health` decides). Neither needs a login."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from chatapp.health import RETRY_AFTER_S, ReadinessChecker

router = APIRouter(tags=["ops"])


class CheckPublic(BaseModel):
    status: Literal["ok", "failing"]
    required: bool = Field(description="Whether a failure makes the replica not ready (503).")
    duration_ms: float
    reason: str | None = Field(None, description="Why it fails (no internal details).")


class ReadinessPublic(BaseModel):
    status: Literal["ready", "degraded", "not_ready"] = Field(
        description="'degraded': a check that is not required fails; still serving."
    )
    checks: dict[str, CheckPublic]


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Alive: the process answers (checks no dependency)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=ReadinessPublic,
    responses={503: {"model": ReadinessPublic, "description": "A required check fails."}},
)
async def readyz(request: Request) -> JSONResponse:
    """Ready: database, Redis (when configured), the model chain and the knowledge base
    (when RAG is on), each with its status; 503 with Retry-After when a required one
    fails."""
    checker: ReadinessChecker = request.app.state.readiness
    readiness = await checker.check()
    if readiness.ready:
        return JSONResponse(readiness.public())
    return JSONResponse(
        readiness.public(), status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)}
    )
