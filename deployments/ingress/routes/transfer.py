"""Conversation export and import: one conversation or all of the user's as ChatApp JSON
or Markdown, and imports of ChatApp JSON or ChatGPT's `conversations.json`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile

from chatapp.chat.transfer import (
    MEDIA_TYPES,
    ImportResult,
    export_conversations,
    export_filename,
    import_conversations,
)
from chatapp.chat.transfer_formats import ExportFormat, ImportLimits, parse_import
from chatapp.errors import InvalidRequest
from chatapp.export import EXPORT_LIMIT
from deployments.ingress.deps import CurrentUser, SessionDep, StateDep

router = APIRouter(tags=["conversations"])

IMPORT_PATH = "/api/conversations/import"
FormatQuery = Annotated[
    ExportFormat,
    Query(alias="format", description="`json` (ChatApp's conversations format) or `markdown`."),
]
_EXPORT_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "ChatApp's conversations JSON (format `chatapp-conversations`, "
        "version 1) or Markdown, streamed as it is read.",
        "content": {"application/json": {}, "text/markdown": {}},
    }
}


async def _download(
    chunks: AsyncIterator[bytes], fmt: ExportFormat, name: str
) -> StreamingResponse:
    first = await anext(chunks)  # errors before it (404) are ordinary HTTP errors

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for chunk in chunks:
            yield chunk

    return StreamingResponse(
        body(),
        media_type=MEDIA_TYPES[fmt],
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


@router.get(
    "/api/conversations/{conversation_id}/export",
    response_class=StreamingResponse,
    responses=_EXPORT_DOC,
)
async def export_conversation(
    conversation_id: uuid.UUID, user: CurrentUser, state: StateDep, fmt: FormatQuery = "json"
) -> StreamingResponse:
    """Download one of your conversations."""
    chunks = export_conversations(
        sessionmaker=state.sessionmaker,
        user_id=user.id,
        fmt=fmt,
        conversation_id=conversation_id,
    )
    return await _download(chunks, fmt, export_filename(fmt, stem=f"chatapp-{conversation_id}"))


@router.get("/api/me/conversations/export", response_class=StreamingResponse, responses=_EXPORT_DOC)
async def export_all_conversations(
    user: CurrentUser, state: StateDep, fmt: FormatQuery = "json"
) -> StreamingResponse:
    """Download all your conversations (rate-limited together with `GET /api/me/export`:
    each reads every conversation)."""
    await state.limiter.hit(EXPORT_LIMIT, "export", str(user.id), what="exports")
    chunks = export_conversations(sessionmaker=state.sessionmaker, user_id=user.id, fmt=fmt)
    return await _download(chunks, fmt, export_filename(fmt, stem="chatapp-conversations"))


async def _uploaded(request: Request) -> bytes:
    """The file of a multipart upload (field `file`), else the body itself."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await request.body()
    async with request.form(max_files=1, max_fields=4) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("multipart upload: send the file in a field named `file`")
        return await upload.read()


@router.post(
    IMPORT_PATH,
    status_code=201,
    openapi_extra={
        "requestBody": {
            "description": "ChatApp's conversations JSON or ChatGPT's conversations.json, "
            "as the body or as the `file` field of a multipart upload.",
            "content": {
                "application/json": {"schema": {}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                },
            },
        }
    },
)
async def import_file(
    request: Request, user: CurrentUser, state: StateDep, session: SessionDep
) -> ImportResult:
    """Import conversations as new conversations of yours, all or nothing: 413 over
    CHAT_IMPORT_MAX_BYTES / _CONVERSATIONS / _MESSAGES, 422 naming what is wrong."""
    chat = state.settings.chat
    limits = ImportLimits(
        max_bytes=chat.import_max_bytes,
        max_conversations=chat.import_max_conversations,
        max_messages=chat.import_max_messages,
    )
    data = await _uploaded(request)
    # parsing and validating a large file is CPU work: off the event loop
    conversations = await asyncio.to_thread(parse_import, data, limits=limits)
    return await import_conversations(session=session, user_id=user.id, conversations=conversations)
