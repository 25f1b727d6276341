"""Usage API schemas."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class ModelUsage(BaseModel):
    model: str
    provider: str | None = None
    replies: int = Field(0, description="Model calls: chat replies and /v1 completions.")
    cached_replies: int = Field(0, description="Calls served from the response cache.")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class BudgetPublic(BaseModel):
    monthly_tokens: int = Field(description="Tokens allowed per calendar month (UTC).")
    used_tokens: int = Field(
        description="Tokens counted against it (cache hits are free; replies in progress "
        "count their max_tokens until they end)."
    )
    remaining_tokens: int
    resets_at: datetime


class UsageTotals(BaseModel):
    since: datetime
    replies: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    by_model: list[ModelUsage] = Field(default_factory=list)

    @classmethod
    def from_models(cls, *, since: datetime, by_model: list[ModelUsage]) -> UsageTotals:
        prompt = sum(m.prompt_tokens for m in by_model)
        completion = sum(m.completion_tokens for m in by_model)
        return cls(
            since=since,
            replies=sum(m.replies for m in by_model),
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            cost_usd=round(sum(m.cost_usd for m in by_model), 8),
            by_model=by_model,
        )


class UsagePublic(UsageTotals):
    budget: BudgetPublic | None = Field(None, description="Set when a monthly budget applies.")
