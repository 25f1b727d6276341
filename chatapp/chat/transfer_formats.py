"""Conversation files, without storage: ChatApp's conversations format (JSON), its
Markdown rendering, and the reading of imports (ChatApp JSON or ChatGPT's
`conversations.json`).

ChatApp's conversations format, version 1 (`GET /api/conversations/{id}/export`,
`GET /api/me/conversations/export`, read back by `POST /api/conversations/import`):

    {"format": "chatapp-conversations", "version": 1, "exported_at": "<ISO 8601>",
     "conversations": [
       {"id", "title", "created_at", "updated_at",
        "messages": [{"id", "role", "content", "status", "finish_reason", "model",
                      "provider", "prompt_tokens", "completion_tokens", "cost_usd",
                      "cached", "fallback_from", "sources": [...], "created_at"}, ...]},
       ...]}

Messages are oldest first. Ids are informative: an import makes new conversations with
new ids. The account export (`chatapp-export`) holds its conversations in the same shape
and imports too.

ChatGPT's `conversations.json` is a list of conversations, each a tree of messages
(`mapping`: node id → {message, parent, children}); the branch shown last, from the
root to `current_node`, is imported: its user and assistant text, without system, tool,
hidden or empty messages.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from chatapp.chat.schemas import MAX_SEQ, StoredText
from chatapp.errors import InvalidRequest, PayloadTooLarge
from chatapp.llm.base import Role
from chatapp.rag.schemas import SourcePublic

FORMAT = "chatapp-conversations"
VERSION = 1
ACCOUNT_FORMAT = "chatapp-export"  # chatapp/export.py: its conversations import too

ExportFormat = Literal["json", "markdown"]


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("the time is out of range in UTC") from exc


# A time with its offset, stored in UTC (as every time ChatApp keeps).
UtcTime = Annotated[AwareDatetime, AfterValidator(_in_utc)]


@dataclass(frozen=True, slots=True)
class ImportLimits:
    """What one import may hold (CHAT_IMPORT_MAX_*): more is refused with 413."""

    max_bytes: int
    max_conversations: int
    max_messages: int


class MessageRecord(BaseModel):
    """One message of a conversation file."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    id: uuid.UUID | None = Field(None, description="In exports; an import makes new ids.")
    # The account export numbers its messages; an import numbers them anew.
    seq: int | None = Field(None, ge=0, le=MAX_SEQ, exclude=True)
    role: Role
    content: StoredText
    status: Literal["complete", "incomplete"] = "complete"
    finish_reason: StoredText | None = Field(None, max_length=32)
    model: StoredText | None = Field(None, max_length=200)
    provider: StoredText | None = Field(None, max_length=64)
    prompt_tokens: int = Field(0, ge=0, le=MAX_SEQ)
    completion_tokens: int = Field(0, ge=0, le=MAX_SEQ)
    cost_usd: float = Field(0.0, ge=0, lt=1_000_000)
    cached: bool = False
    fallback_from: StoredText | None = Field(None, max_length=200)
    sources: list[SourcePublic] = Field(default_factory=list)
    created_at: UtcTime

    @field_validator("sources", mode="before")
    @classmethod
    def _no_sources(cls, value: object) -> object:
        return [] if value is None else value  # stored as NULL when there are none


class ConversationRecord(BaseModel):
    """One conversation of a conversation file, its messages oldest first."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    id: uuid.UUID | None = Field(None, description="In exports; an import makes a new id.")
    title: StoredText = Field("", max_length=200)
    created_at: UtcTime
    updated_at: UtcTime
    messages: list[MessageRecord] = Field(default_factory=list)


class ConversationsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["chatapp-conversations"]
    version: Literal[1]
    exported_at: UtcTime | None = None
    conversations: list[ConversationRecord]


_CONVERSATIONS = TypeAdapter(list[ConversationRecord])


# -- reading an import --------------------------------------------------------------------


def _where(loc: Iterable[int | str]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path or "the file"


def _invalid(exc: ValidationError, *, prefix: str = "") -> InvalidRequest:
    problems = [
        f"{_where([prefix, *e['loc']] if prefix else e['loc'])}: {e['msg']}" for e in exc.errors()
    ]
    more = f" (and {len(problems) - 3} more problems)" if len(problems) > 3 else ""
    return InvalidRequest("the file is not a valid import: " + "; ".join(problems[:3]) + more)


def _check_counts(conversations: int, messages: int | None, limits: ImportLimits) -> None:
    if conversations > limits.max_conversations:
        raise PayloadTooLarge(
            f"the file holds {conversations} conversations; one import may hold at most "
            f"{limits.max_conversations} (CHAT_IMPORT_MAX_CONVERSATIONS)"
        )
    if messages is not None and messages > limits.max_messages:
        raise PayloadTooLarge(
            f"the file holds {messages} messages; one import may hold at most "
            f"{limits.max_messages} (CHAT_IMPORT_MAX_MESSAGES)"
        )


def parse_import(
    data: bytes, *, limits: ImportLimits, now: datetime | None = None
) -> list[ConversationRecord]:
    """The conversations of an uploaded file, ChatApp JSON or ChatGPT's
    `conversations.json`; `PayloadTooLarge` over `limits`, `InvalidRequest` naming what
    is wrong otherwise."""
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(
            f"the file is {len(data)} bytes; one import may be at most {limits.max_bytes} "
            "bytes (CHAT_IMPORT_MAX_BYTES)"
        )
    try:
        document = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"the file is not UTF-8 text (byte {exc.start} is not): exports are UTF-8 JSON"
        ) from exc
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"the file is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        raise InvalidRequest("the file nests its JSON too deeply to be an export") from exc
    if isinstance(document, list):
        _check_counts(len(document), None, limits)
        conversations = from_chatgpt(document, now=now)
    elif isinstance(document, dict) and document.get("format") in (FORMAT, ACCOUNT_FORMAT):
        conversations = _from_chatapp(document, limits)
    else:
        raise InvalidRequest(
            "unknown file: expected ChatApp's conversations JSON (an object with "
            f'"format": "{FORMAT}") or ChatGPT\'s conversations.json (a list of conversations)'
        )
    _check_counts(len(conversations), sum(len(c.messages) for c in conversations), limits)
    return conversations


def _from_chatapp(document: dict[str, Any], limits: ImportLimits) -> list[ConversationRecord]:
    items = document.get("conversations")
    if isinstance(items, list):
        _check_counts(len(items), None, limits)
    if document.get("format") == ACCOUNT_FORMAT:
        if document.get("version") != 1:
            raise InvalidRequest("version: only version 1 of the account export is known")
        try:
            return _CONVERSATIONS.validate_python(items)
        except ValidationError as exc:
            raise _invalid(exc, prefix="conversations") from exc
    try:
        return ConversationsFile.model_validate(document).conversations
    except ValidationError as exc:
        raise _invalid(exc) from exc


# ChatGPT's export: only the fields read; the rest of its (changing) shape is ignored.


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _GptAuthor(_Lenient):
    role: str


class _GptContent(_Lenient):
    content_type: str
    parts: list[Any] | None = None


class _GptMessage(_Lenient):
    author: _GptAuthor
    content: _GptContent
    create_time: float | None = None
    metadata: dict[str, Any] | None = None


class _GptNode(_Lenient):
    message: _GptMessage | None = None
    parent: str | None = None


class _GptConversation(_Lenient):
    title: str | None = None
    create_time: float | None = None
    update_time: float | None = None
    mapping: dict[str, _GptNode]
    current_node: str


_GPT = TypeAdapter(list[_GptConversation])
_GPT_TEXT = ("text", "multimodal_text")  # multimodal: its text parts, not its images


def _when(stamp: float | None) -> datetime | None:
    try:
        return datetime.fromtimestamp(stamp, UTC) if stamp is not None else None
    except (OverflowError, OSError, ValueError):
        return None


def _branch(conversation: _GptConversation, index: int) -> list[_GptNode]:
    """The nodes from the root to `current_node`."""
    path: list[_GptNode] = []
    seen: set[str] = set()
    node_id: str | None = conversation.current_node
    while node_id is not None:
        if node_id in seen:
            raise InvalidRequest(f"[{index}].mapping: the messages' parents form a cycle")
        node = conversation.mapping.get(node_id)
        if node is None:
            raise InvalidRequest(
                f"[{index}].mapping: node {node_id[:64]!r} (current_node or a parent) is missing"
            )
        seen.add(node_id)
        path.append(node)
        node_id = node.parent
    return list(reversed(path))


def _gpt_message(message: _GptMessage, fallback: datetime) -> dict[str, Any] | None:
    metadata = message.metadata or {}
    if message.author.role not in ("user", "assistant"):
        return None
    if metadata.get("is_visually_hidden_from_conversation"):
        return None
    if message.content.content_type not in _GPT_TEXT:
        return None
    text = "\n".join(p for p in message.content.parts or [] if isinstance(p, str))
    if not text.strip():
        return None
    model = metadata.get("model_slug")
    return {
        "role": message.author.role,
        "content": text,
        "model": model if isinstance(model, str) and message.author.role == "assistant" else None,
        "created_at": _when(message.create_time) or fallback,
    }


def from_chatgpt(document: list[Any], *, now: datetime | None = None) -> list[ConversationRecord]:
    """ChatGPT's `conversations.json` as conversations: the branch to each one's
    `current_node`."""
    try:
        conversations = _GPT.validate_python(document)
    except ValidationError as exc:
        raise _invalid(exc) from exc
    now = now or datetime.now(UTC)
    records: list[dict[str, Any]] = []
    for index, conversation in enumerate(conversations):
        created = _when(conversation.create_time) or now
        messages = [
            m
            for node in _branch(conversation, index)
            if node.message is not None and (m := _gpt_message(node.message, created)) is not None
        ]
        records.append(
            {
                "title": " ".join((conversation.title or "").split())[:200],
                "created_at": created,
                "updated_at": _when(conversation.update_time) or created,
                "messages": messages,
            }
        )
    try:
        return _CONVERSATIONS.validate_python(records)
    except ValidationError as exc:
        raise _invalid(exc) from exc


# -- writing exports ----------------------------------------------------------------------


def json_head(exported_at: datetime) -> str:
    """The start of a conversations file, up to its first conversation."""
    head = {"format": FORMAT, "version": VERSION, "exported_at": exported_at.isoformat()}
    return json.dumps(head)[:-1] + ',"conversations":['


def json_conversation_open(conversation: ConversationRecord) -> str:
    """A conversation's JSON up to its first message (`messages` is its last field)."""
    text = conversation.model_copy(update={"messages": []}).model_dump_json()
    assert text.endswith('"messages":[]}')
    return text[:-2]


def json_messages(messages: Iterable[MessageRecord]) -> str:
    return ",".join(m.model_dump_json() for m in messages)


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def markdown_conversation_open(conversation: ConversationRecord) -> str:
    """A conversation's `#` heading and dates."""
    title = " ".join(conversation.title.split()) or "Untitled conversation"
    return f"# {title}\n\n_Created {_stamp(conversation.created_at)}, last message " + (
        f"{_stamp(conversation.updated_at)}._\n\n"
    )


_ROLE_NAMES = {"user": "User", "assistant": "Assistant", "system": "System", "tool": "Tool"}


def markdown_message(message: MessageRecord) -> str:
    """One message: who wrote it (and which model), when, the text, its sources."""
    marks = [f"**{_ROLE_NAMES[message.role]}**"]
    if message.model:
        marks.append(f"({message.model})")
    marks.append(f"· {_stamp(message.created_at)}")
    if message.status != "complete":
        marks.append("· _incomplete_")
    text = f"{' '.join(marks)}\n\n{message.content.rstrip()}\n\n"
    if message.sources:
        text += "Sources:\n\n"
        for source in message.sources:
            where = source.source + (f" § {source.section}" if source.section else "")
            link = f" <{source.url}>" if source.url else ""
            text += f"- [{source.index}] {source.title} ({where}){link}\n"
        text += "\n"
    return text


def markdown_document(conversations: Iterable[ConversationRecord]) -> str:
    """Whole conversations as Markdown (the export streams the same pieces)."""
    return "".join(
        markdown_conversation_open(c) + "".join(markdown_message(m) for m in c.messages)
        for c in conversations
    )
