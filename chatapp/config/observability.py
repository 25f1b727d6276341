"""Operating ChatApp: request logs and readiness checks."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings

from chatapp.config.base import section

LogFormat = Literal["json", "text"]
ReadinessCheck = Literal["database", "redis", "models", "knowledge_base"]


def _required_by_default() -> list[ReadinessCheck]:
    return ["database", "models"]


class LogSettings(BaseSettings):
    """Logs of the ingress replicas: one line per HTTP request, and ChatApp's own lines."""

    model_config = section("LOG_")

    format: LogFormat | None = Field(
        None,
        description="'json': one JSON object per line (for a log pipeline); 'text': one "
        "readable line. Unset: json in production, text in development.",
    )
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Least severe level written (request lines are INFO)."
    )

    def format_for(self, environment: str) -> LogFormat:
        """The format in force for `environment` ('production' or 'development')."""
        if self.format is not None:
            return self.format
        return "json" if environment == "production" else "text"


class ReadinessSettings(BaseSettings):
    """GET /readyz: which dependencies a replica needs to take traffic."""

    model_config = section("READY_")

    timeout_s: float = Field(
        1.5,
        gt=0,
        le=10,
        description="Each check's time limit; the checks run at once, so /readyz answers "
        "within about this long even when a dependency hangs.",
    )
    required: list[ReadinessCheck] = Field(
        default_factory=_required_by_default,
        description="Checks whose failure makes /readyz answer 503 (JSON list). The others "
        "are reported ('degraded', 200): ChatApp keeps answering without them (rate limits "
        "and usage counted per replica without Redis, answers ungrounded without the "
        "knowledge base).",
    )
    cache_s: float = Field(
        1.0,
        ge=0,
        description="A result is reused this long, and concurrent probes share one run: "
        "/readyz needs no login, so a flood of it must not become a flood of database "
        "connections.",
    )
