"""Chat API schemas: separate Create / Update / Public models; internal models forbid
unknown fields."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from chatapp.chat.summaries import SummaryPublic
from chatapp.llm.base import Role
from chatapp.rag.schemas import RagMode, SourcePublic


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters (U+0000): they cannot be stored")
    return value


# Text that is stored: PostgreSQL's text cannot hold U+0000.
StoredText = Annotated[str, AfterValidator(_storable)]
# Message sequence numbers are 32-bit integers in the database.
MAX_SEQ = 2**31 - 1


class ConversationCreate(_Strict):
    title: StoredText = Field(
        "",
        max_length=200,
        description="Shown in the sidebar; set from the first message when empty.",
    )


class ConversationUpdate(_Strict):
    title: StoredText = Field(..., min_length=1, max_length=200)


class ConversationPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    title: str
    created_at: datetime
    updated_at: datetime


class ConversationPage(BaseModel):
    items: list[ConversationPublic]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class MessagePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    seq: int
    role: Role
    content: str
    status: str = Field(description="'complete', or 'incomplete' for a reply cut short.")
    finish_reason: str | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    provider: str | None = Field(None, description="Who answered: openai, anthropic, ...")
    cost_usd: float = Field(0.0, description="Price of the reply by the model catalog.")
    cached: bool = Field(False, description="Replayed from the response cache.")
    fallback_from: str | None = Field(
        None, description="The model that failed before `model` answered (a fallback)."
    )
    sources: list[SourcePublic] = Field(
        default_factory=list, description="Knowledge-base chunks the reply was grounded in."
    )
    created_at: datetime
    # The Idempotency-Key the user message was posted with: kept with the message (an
    # edit's undo puts it back), never shown.
    idempotency_key: str | None = Field(None, exclude=True)

    @field_validator("sources", mode="before")
    @classmethod
    def _no_sources(cls, value: object) -> object:
        return [] if value is None else value


class ConversationDetail(ConversationPublic):
    messages: list[MessagePublic]
    has_more: bool = Field(description="Older messages exist: pass `before=<first seq>`.")
    summary: SummaryPublic | None = Field(
        None,
        description="A long chat's running summary: the model's prompt holds it instead of "
        "the messages up to `summary.covers_seq` (they are still stored and listed here).",
    )


class TurnOptions(_Strict):
    """How a turn is answered."""

    stream: bool = Field(True, description="Server-sent events (default) or one JSON reply.")
    max_tokens: int | None = Field(None, ge=1, le=8192, description="Longest reply.")
    temperature: float | None = Field(None, ge=0, le=2)
    model: str | None = Field(
        None, max_length=200, description="A model from GET /v1/models, or 'auto' (default)."
    )
    knowledge_base_id: str | None = Field(
        None,
        max_length=64,
        description="Knowledge base to ground the answer in (GET /api/knowledge-bases); "
        "unset: the default one (RAG_DEFAULT_KB), when it exists.",
    )
    rag: RagMode | None = Field(
        None,
        description="RAG mode for this turn: 'always', 'auto' (only when a source scores "
        "well enough) or 'off'. Unset: the knowledge base's mode.",
    )


class RegenerateRequest(TurnOptions):
    """Answer the last user message again: its reply (and anything after) is replaced."""


class MessageCreate(TurnOptions):
    content: StoredText = Field(..., min_length=1, description="The user's message.")
    replace_from_seq: int | None = Field(
        None,
        ge=0,
        le=MAX_SEQ,
        description="Edit and resend: user message `replace_from_seq` and every later "
        "message are replaced by this one.",
    )

    @field_validator("content")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the message is empty")
        return value


class TurnResult(BaseModel):
    """A finished turn: the stored user message and reply."""

    user_message: MessagePublic
    message: MessagePublic
    fallback_from: str | None = Field(
        None, description="The model that failed before the one that answered, if any."
    )
