"""OpenAI Responses API wire models for /v1/responses: the request, its input items read
into ChatApp's messages, the `response` object, and the streamed events in OpenAI's order
(`ResponseEvents`). Unknown request fields are accepted and logged, like the rest of /v1.

Ids on the wire: a response is `resp_<32 hex>` (the row of the `responses` table), its
one output message `msg_<the same hex>`."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from chatapp.errors import InvalidRequest, NotFound, Unsupported
from chatapp.llm.base import ChatMessage
from chatapp.openai_api.protocol import _Wire

RESPONSE_PREFIX = "resp_"
_ROLES = ("user", "assistant", "system", "developer")
_PARTS = ("input_text", "output_text")
_MAX_METADATA_KEYS, _MAX_KEY_CHARS, _MAX_VALUE_CHARS = 16, 64, 512


class ResponseRequest(_Wire):
    model: str = Field("auto", min_length=1, max_length=200)
    input: str | list[dict[str, Any]] = Field(
        ..., description="The user's message, or a list of message items."
    )
    instructions: str | None = Field(
        None, description="System message of this turn (not carried to the next one)."
    )
    max_output_tokens: int | None = Field(None, ge=1, le=8192)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stream: bool = False
    previous_response_id: str | None = Field(
        None, max_length=100, description="Continue the conversation of this response."
    )
    store: bool = Field(True, description="Keep the turn in a conversation (false: nothing).")
    metadata: dict[str, str] | None = None
    tools: list[dict[str, Any]] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if len(value) > _MAX_METADATA_KEYS:
            raise ValueError(f"at most {_MAX_METADATA_KEYS} keys")
        for key, text in value.items():
            if "\x00" in key or "\x00" in text:
                raise ValueError("must not contain NUL characters (U+0000)")
            if len(key) > _MAX_KEY_CHARS:
                raise ValueError(f"key {key[:20]!r}...: longer than {_MAX_KEY_CHARS} characters")
            if len(text) > _MAX_VALUE_CHARS:
                raise ValueError(f"value of {key!r}: longer than {_MAX_VALUE_CHARS} characters")
        return value


@dataclass(frozen=True, slots=True)
class ResponseInput:
    """A request's input as ChatApp's messages: `instructions` (the request's, then its
    system and developer items), the turns before the question, and the question."""

    instructions: str | None
    earlier: list[ChatMessage]
    question: str


def _text(item: dict[str, Any], where: str) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}.content: a string or a list of input_text parts")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _PARTS or not isinstance(part.get("text"), str):
            raise Unsupported(
                f"{where}.content[{j}]: only input_text and output_text parts with a `text` "
                f"are supported (got {kind!r})"
            )
        texts.append(part["text"])
    return "".join(texts)


def read_input(request: ResponseRequest, *, max_chars: int) -> ResponseInput:
    """The request's input items as messages; `InvalidRequest` saying which item is wrong.

    The last message item must be the user's question; system and developer items join
    `instructions`. Items and parts ChatApp cannot take (images, tool calls, tools) are
    `Unsupported` (400), never dropped silently."""
    items: list[dict[str, Any]] = (
        [{"type": "message", "role": "user", "content": request.input}]
        if isinstance(request.input, str)
        else request.input
    )
    if request.tools:
        raise Unsupported(
            "tools: not supported on /v1/responses yet; use /v1/chat/completions for tools"
        )
    if not items:
        raise InvalidRequest("input: at least one message is required")
    if request.instructions and "\x00" in request.instructions:
        raise InvalidRequest("instructions: must not contain NUL characters (U+0000)")
    system = [request.instructions] if request.instructions else []
    turns: list[ChatMessage] = []
    for i, item in enumerate(items):
        where = f"input[{i}]"
        kind = item.get("type", "message")
        role = item.get("role")
        if kind != "message" or role not in _ROLES:
            raise Unsupported(
                f"{where}: only message items with role user, assistant, system or developer "
                f"are supported (got type {kind!r}, role {role!r})"
            )
        text = _text(item, where)
        if "\x00" in text:
            raise InvalidRequest(f"{where}: must not contain NUL characters (U+0000)")
        if len(text) > max_chars:
            raise InvalidRequest(f"{where}: longer than {max_chars} characters")
        if role in ("system", "developer"):
            system.append(text)
        else:
            turns.append(ChatMessage(role, text))
    if not turns or turns[-1].role != "user" or not turns[-1].content.strip():
        raise InvalidRequest("input: the last message must be a non-empty user message")
    return ResponseInput(
        instructions="\n\n".join(system) or None, earlier=turns[:-1], question=turns[-1].content
    )


def response_id(ident: uuid.UUID) -> str:
    return f"{RESPONSE_PREFIX}{ident.hex}"


def parse_response_id(text: str) -> uuid.UUID:
    """The row id of `resp_<hex>`; anything else is a response that does not exist."""
    try:
        if not text.startswith(RESPONSE_PREFIX):
            raise ValueError(text)
        return uuid.UUID(hex=text.removeprefix(RESPONSE_PREFIX))
    except ValueError:
        raise NotFound(f"response {text[:100]!r} not found") from None


ResponseStatus = Literal["in_progress", "completed", "incomplete", "failed", "cancelled"]


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[dict[str, Any]] = Field(default_factory=list)


class OutputMessage(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: Literal["in_progress", "completed", "incomplete"]
    content: list[OutputText]


class ResponseUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: dict[str, int] = Field(default_factory=lambda: {"cached_tokens": 0})
    output_tokens_details: dict[str, int] = Field(default_factory=lambda: {"reasoning_tokens": 0})

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> ResponseUsage:
        return cls(
            input_tokens=prompt_tokens,
            output_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


class ResponseObject(BaseModel):
    """OpenAI's `response` object; `conversation_id` (ChatApp's) is an extension."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: ResponseStatus
    model: str
    output: list[OutputMessage] = Field(default_factory=list)
    usage: ResponseUsage | None = None
    error: dict[str, str] | None = None
    incomplete_details: dict[str, str] | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    store: bool = True
    parallel_tool_calls: bool = False
    tool_choice: str = "none"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    truncation: str = "disabled"
    conversation_id: str | None = None


def outcome(status: str, finish_reason: str | None) -> tuple[ResponseStatus, dict[str, str] | None]:
    """A reply's status and finish reason as a response status (and why it is incomplete)."""
    if status == "complete":
        if finish_reason == "length":
            return "incomplete", {"reason": "max_output_tokens"}
        return "completed", None
    if finish_reason == "cancelled":
        return "cancelled", None
    return "failed", None


def finished(
    head: ResponseObject,
    *,
    text: str,
    status: ResponseStatus,
    usage: ResponseUsage | None,
    model: str | None,
    incomplete: dict[str, str] | None = None,
    error: dict[str, str] | None = None,
) -> ResponseObject:
    """`head` (the response as it started) with its answer."""
    item_status: Literal["completed", "incomplete"] = (
        "completed" if status == "completed" else "incomplete"
    )
    message = OutputMessage(
        id=message_id(head.id), status=item_status, content=[OutputText(text=text)]
    )
    return head.model_copy(
        update={
            "status": status,
            "output": [message],
            "usage": usage,
            "model": model or head.model,
            "incomplete_details": incomplete,
            "error": error,
        }
    )


def message_id(ident: str) -> str:
    return "msg_" + ident.removeprefix(RESPONSE_PREFIX)


def now() -> int:
    return int(time.time())


@dataclass
class ResponseEvents:
    """The streamed events of one response, numbered by `sequence_number`, in OpenAI's
    order: created, in_progress, output_item.added, content_part.added, output_text.delta...
    then output_text.done, content_part.done, output_item.done and completed (or
    incomplete, or failed)."""

    head: ResponseObject
    _seq: int = field(default=0, init=False)

    def _event(self, kind: str, **payload: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._seq, **payload}
        self._seq += 1
        return event

    def _where(self) -> dict[str, Any]:
        return {"item_id": message_id(self.head.id), "output_index": 0, "content_index": 0}

    def opening(self) -> list[dict[str, Any]]:
        response = self.head.model_dump(mode="json")
        item = OutputMessage(id=message_id(self.head.id), status="in_progress", content=[])
        return [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
            self._event(
                "response.output_item.added", output_index=0, item=item.model_dump(mode="json")
            ),
            self._event(
                "response.content_part.added",
                **self._where(),
                part=OutputText(text="").model_dump(mode="json"),
            ),
        ]

    def delta(self, text: str) -> dict[str, Any]:
        return self._event("response.output_text.delta", **self._where(), delta=text, logprobs=[])

    def closing(self, final: ResponseObject) -> list[dict[str, Any]]:
        message = final.output[0]
        part = message.content[0]
        last = {"completed": "response.completed", "incomplete": "response.incomplete"}.get(
            final.status, "response.failed"
        )
        return [
            self._event("response.output_text.done", **self._where(), text=part.text, logprobs=[]),
            self._event(
                "response.content_part.done", **self._where(), part=part.model_dump(mode="json")
            ),
            self._event(
                "response.output_item.done", output_index=0, item=message.model_dump(mode="json")
            ),
            self._event(last, response=final.model_dump(mode="json")),
        ]
