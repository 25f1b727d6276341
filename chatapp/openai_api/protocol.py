"""OpenAI-compatible wire models for /v1. Unknown fields are accepted and logged (clients
send many optional ones); everything else is validated. The fields whose silent ignoring
would change the answer are refused by `chatapp.openai_api.convert` (400)."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

logger = logging.getLogger(__name__)


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _log_ignored(self) -> _Wire:
        if self.model_extra:
            logger.debug("%s: ignoring fields %s", type(self).__name__, sorted(self.model_extra))
        return self


_TOOL_NAME = r"^[a-zA-Z0-9_-]{1,64}$"  # what OpenAI and Anthropic both accept


class FunctionCall(_Wire):
    name: str = Field(..., pattern=_TOOL_NAME)
    arguments: str = Field("", description="The call's arguments as JSON text.")


class ToolCallWire(_Wire):
    id: str = Field(..., min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatCompletionMessage(_Wire):
    # "function" (the legacy role) is read only to be refused with a clear message
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    # parts are read loosely ({"type", ...}) so an unserved type gets a 400 naming it
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[ToolCallWire] | None = None
    tool_call_id: str | None = Field(None, min_length=1, max_length=256)


class FunctionDefinition(_Wire):
    name: str = Field(..., pattern=_TOOL_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="JSON Schema of the arguments.")
    strict: bool | None = None


class ToolDefinition(_Wire):
    type: str = Field(..., min_length=1)  # "function" is served; others are refused
    function: FunctionDefinition | None = None


class NamedFunction(_Wire):
    name: str = Field(..., pattern=_TOOL_NAME)


class NamedToolChoice(_Wire):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(_Wire):
    include_usage: bool = False


class ChatCompletionRequest(_Wire):
    model: str = Field("auto", min_length=1)
    messages: list[ChatCompletionMessage] = Field(..., min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1, le=1, description="Only one choice is supported.")
    tools: list[ToolDefinition] | None = Field(None, max_length=128)
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "chatapp"
    context_window: int | None = None
    supports_tools: bool | None = None
    supports_images: bool | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
