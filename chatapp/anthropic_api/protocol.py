"""Wire models of Anthropic's Messages API (`POST /v1/messages`): the request and the
whole answer (the streamed events are `chatapp.anthropic_api.stream`'s).

Requests accept and log unknown fields, through the same lenient base as the OpenAI models
(`chatapp.openai_api.protocol._Wire`); fields whose silent ignoring would change the answer
are refused by `chatapp.anthropic_api.convert`. Content blocks are read loosely (a `type`
and the fields of the types ChatApp serves) so that a block it does not serve gets a 400
that names it, not a schema error."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from chatapp.openai_api.protocol import _Wire

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"]


class BlockSource(_Wire):
    """Where an image block's image is: `base64` (`media_type`, `data`) or `url`."""

    type: str
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class ContentBlock(_Wire):
    """One block of a message's (or the system prompt's) content, read loosely: the fields
    of `text`, `image`, `tool_use` and `tool_result` blocks; the conversion checks each
    block has what its type needs and refuses the types ChatApp does not serve."""

    type: str = Field(..., min_length=1)
    text: str | None = None
    source: BlockSource | None = None  # image
    id: str | None = None  # tool_use
    name: str | None = None  # tool_use
    input: dict[str, Any] | None = None  # tool_use
    tool_use_id: str | None = None  # tool_result
    content: str | list[ContentBlock] | None = None  # tool_result
    is_error: bool = False  # tool_result


class InputMessage(_Wire):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class Metadata(_Wire):
    user_id: str | None = Field(None, max_length=256)


class Tool(_Wire):
    """A tool the model may call (a client tool: `name`, `description`, `input_schema`);
    Anthropic's server tools carry a `type` and are refused by the conversion."""

    name: str = Field(..., pattern=r"^[a-zA-Z0-9_-]{1,128}$")
    type: str | None = None
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    strict: bool | None = None


class ToolChoice(_Wire):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False

    @model_validator(mode="after")
    def _named(self) -> ToolChoice:
        if self.type == "tool" and not self.name:
            raise ValueError('"type": "tool" needs the tool\'s "name"')
        return self


class MessagesRequest(_Wire):
    """The body of `POST /v1/messages`. `max_tokens` is required, as Anthropic requires."""

    model: str = Field(..., min_length=1, description="A model of ChatApp's catalog, or `auto`.")
    messages: list[InputMessage] = Field(..., min_length=1)
    max_tokens: int = Field(..., ge=1, description="The most tokens the answer may have.")
    system: str | list[ContentBlock] | None = None
    stop_sequences: list[Annotated[str, Field(min_length=1)]] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    metadata: Metadata | None = None
    stream: bool = False


def message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


class TextContent(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ToolUseContent(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


class Usage(BaseModel):
    """Anthropic's usage, plus who answered, its cost and whether it was cached (as on
    /v1/chat/completions; the SDKs keep unknown fields)."""

    input_tokens: int
    output_tokens: int
    provider: str | None = None
    cost_usd: float = 0.0
    cached: bool = False
    fallback_from: str | None = None


class MessageObject(BaseModel):
    """A whole answer: the body of a non-streamed response."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[TextContent | ToolUseContent]
    model: str
    stop_reason: StopReason | None
    stop_sequence: str | None = None
    usage: Usage
